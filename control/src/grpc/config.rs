//! `ProxyConfig.Watch`: the proxy settings that change without restarts
//! (today: tracing), streamed from a `watch` channel the control plane's
//! flags fill at start.

use std::sync::Arc;

use tokio::sync::watch;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use weft_api::config::proxy_config_server::ProxyConfig;
use weft_api::config::{ConfigRequest, ProxyConfigUpdate, Tracing};

use super::watch::{Snapshot, Streams};
use crate::metrics::StreamKind;

impl Snapshot for ProxyConfigUpdate {
    fn version_mut(&mut self) -> &mut u64 {
        &mut self.version
    }
}

/// The tracing settings every proxy follows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TraceSettings {
    /// Bumped on every change (the update's `version`).
    pub version: u64,
    /// `host:port` of the OTLP/gRPC collector; `None`: off.
    pub collector: Option<String>,
    pub sampling_ratio: f64,
    pub service_name: String,
}

#[derive(Debug)]
pub struct ConfigService {
    pub streams: Streams,
    pub settings: watch::Receiver<Arc<TraceSettings>>,
}

/// The update a proxy is sent for `settings`.
pub fn update(settings: &TraceSettings) -> ProxyConfigUpdate {
    ProxyConfigUpdate {
        version: settings.version,
        tracing: Some(Tracing {
            collector: settings.collector.clone().unwrap_or_default(),
            sampling_ratio: settings.sampling_ratio,
            service_name: settings.service_name.clone(),
        }),
    }
}

#[tonic::async_trait]
impl ProxyConfig for ConfigService {
    type WatchStream = ReceiverStream<Result<ProxyConfigUpdate, Status>>;

    async fn watch(&self, req: Request<ConfigRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let proxy = super::proxy_name(&req, &req.get_ref().proxy_id);
        tracing::debug!(%proxy, "proxy config watch");
        let stream =
            self.streams.spawn_on(self.settings.clone(), |_| None, StreamKind::ProxyConfig, proxy, |s| update(s));
        Ok(Response::new(stream))
    }
}
