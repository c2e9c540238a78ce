//! `Policy.WatchOutbound` and `Policy.WatchInbound`.

use tonic::{Request, Response, Status};
use weft_api::policy::policy_server::Policy;
use weft_api::policy::{InboundPolicy, InboundRequest, OutboundPolicy, OutboundRequest};

use super::answers::Answers;
use super::watch::{Streams, Updates};
use crate::index::{NsName, Target};
use crate::metrics::StreamKind;

#[derive(Debug)]
pub struct PolicyService {
    pub streams: Streams,
    /// Outbound answers by target and asking namespace, shared by the
    /// streams that ask the same.
    pub outbound: Answers<(Target, String), OutboundPolicy>,
}

impl PolicyService {
    pub fn new(streams: Streams) -> Self {
        Self { streams, outbound: Answers::default() }
    }
}

#[tonic::async_trait]
impl Policy for PolicyService {
    type WatchOutboundStream = Updates<OutboundPolicy>;
    type WatchInboundStream = Updates<InboundPolicy>;

    async fn watch_outbound(
        &self,
        req: Request<OutboundRequest>,
    ) -> Result<Response<Self::WatchOutboundStream>, Status> {
        let proxy = super::proxy_name(&req, &req.get_ref().proxy_id);
        let OutboundRequest { target, namespace, .. } = req.into_inner();
        let target: Target =
            target.parse().map_err(|e: crate::index::TargetError| Status::invalid_argument(e.to_string()))?;
        tracing::debug!(%proxy, %target, "outbound policy watch");
        let asker = self.outbound.ask((target.clone(), namespace.clone()));
        let stream = self.streams.open_shared(
            StreamKind::Outbound,
            proxy,
            asker,
            |state| state.outbound_stamp(),
            move |state| state.outbound(&target, &namespace),
        );
        Ok(Response::new(stream))
    }

    async fn watch_inbound(&self, req: Request<InboundRequest>) -> Result<Response<Self::WatchInboundStream>, Status> {
        let proxy = super::proxy_name(&req, &req.get_ref().proxy_id);
        let InboundRequest { workload, port, .. } = req.into_inner();
        let name = NsName::parse_dotted(&workload).ok_or_else(|| {
            Status::invalid_argument(format!("workload `{workload}` must be NAME.NAMESPACE (e.g. web-v1-0.default)"))
        })?;
        let port = u16::try_from(port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| Status::invalid_argument(format!("port {port} is not 1..=65535")))?;
        tracing::debug!(%proxy, workload = %name, port, "inbound policy watch");
        let own = name.clone();
        let stream = self.streams.open(
            StreamKind::Inbound,
            proxy,
            move |state| state.inbound_stamp(&own),
            move |state| state.inbound(&name, port),
        );
        Ok(Response::new(stream))
    }
}
