//! `Discovery.Watch`.

use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use weft_api::discovery::discovery_server::Discovery;
use weft_api::discovery::{EndpointSet, WatchRequest};

use super::watch::Streams;
use crate::index::Target;
use crate::metrics::StreamKind;

#[derive(Debug)]
pub struct DiscoveryService {
    pub streams: Streams,
}

#[tonic::async_trait]
impl Discovery for DiscoveryService {
    type WatchStream = ReceiverStream<Result<EndpointSet, Status>>;

    async fn watch(&self, req: Request<WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let proxy = super::proxy_name(&req, &req.get_ref().proxy_id);
        let WatchRequest { target, namespace, .. } = req.into_inner();
        let target: Target =
            target.parse().map_err(|e: crate::index::TargetError| Status::invalid_argument(e.to_string()))?;
        tracing::debug!(%proxy, %target, "discovery watch");
        let (t, ns) = (target.clone(), namespace.clone());
        let stream = self.streams.spawn(
            StreamKind::Discovery,
            proxy,
            move |state| state.resolve_stamp(&t, &ns),
            move |state| state.resolve(&target, &namespace),
        );
        Ok(Response::new(stream))
    }
}
