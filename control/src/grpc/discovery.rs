//! `Discovery.Watch`.

use tonic::{Request, Response, Status};
use weft_api::discovery::discovery_server::Discovery;
use weft_api::discovery::{EndpointSet, WatchRequest};

use super::answers::Answers;
use super::watch::{Streams, Updates};
use crate::index::Target;
use crate::metrics::StreamKind;

#[derive(Debug)]
pub struct DiscoveryService {
    pub streams: Streams,
    /// Answers by target and asking namespace, shared by the streams that
    /// ask the same.
    pub answers: Answers<(Target, String), EndpointSet>,
}

impl DiscoveryService {
    pub fn new(streams: Streams) -> Self {
        Self { streams, answers: Answers::default() }
    }
}

#[tonic::async_trait]
impl Discovery for DiscoveryService {
    type WatchStream = Updates<EndpointSet>;

    async fn watch(&self, req: Request<WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let proxy = super::proxy_name(&req, &req.get_ref().proxy_id);
        let WatchRequest { target, namespace, .. } = req.into_inner();
        let target: Target =
            target.parse().map_err(|e: crate::index::TargetError| Status::invalid_argument(e.to_string()))?;
        tracing::debug!(%proxy, %target, "discovery watch");
        let (t, ns) = (target.clone(), namespace.clone());
        let asker = self.answers.ask((target.clone(), namespace.clone()));
        let stream = self.streams.open_shared(
            StreamKind::Discovery,
            proxy,
            asker,
            move |state| state.resolve_stamp(&t, &ns),
            move |state| state.resolve(&target, &namespace),
        );
        Ok(Response::new(stream))
    }
}
