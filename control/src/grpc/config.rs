//! `ProxyConfig.Watch`: the proxy settings that change without restarts
//! (today: tracing), streamed from a `watch` channel the control plane's
//! flags fill at start.

use std::sync::Arc;

use tokio::sync::watch;
use tonic::{Request, Response, Status};
use weft_api::config::proxy_config_server::ProxyConfig;
use weft_api::config::{ConfigRequest, ProxyConfigUpdate, Tracing};

use super::watch::{Snapshot, Streams, Updates};
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
    type WatchStream = Updates<ProxyConfigUpdate>;

    async fn watch(&self, req: Request<ConfigRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let proxy = super::proxy_name(&req, &req.get_ref().proxy_id);
        tracing::debug!(%proxy, "proxy config watch");
        let stream = self.streams.open_on(
            self.settings.clone(),
            |_| None,
            StreamKind::ProxyConfig,
            proxy,
            |_| None::<()>,
            |s| update(s),
        );
        Ok(Response::new(stream))
    }
}

#[cfg(test)]
mod tests {
    use tokio_stream::StreamExt;

    use super::*;
    use crate::index::{Index, MeshConfig};
    use crate::metrics::Metrics;

    #[tokio::test]
    async fn a_new_setting_reaches_a_watching_proxy() {
        let (tx, rx) = watch::channel(Arc::new(TraceSettings {
            version: 1,
            collector: Some("otel:4317".into()),
            sampling_ratio: 0.0,
            service_name: String::new(),
        }));
        let (trigger, shutdown) = crate::shutdown::channel();
        let metrics = Arc::new(Metrics::default());
        let streams = Streams { index: Index::new(MeshConfig::default()), metrics: metrics.clone(), shutdown };
        let service = ConfigService { streams, settings: rx };
        let req = Request::new(ConfigRequest { proxy_id: "web-0.default".into(), ..Default::default() });
        let mut stream = service.watch(req).await.expect("stream").into_inner();

        let first = stream.next().await.expect("snapshot").expect("ok");
        let tracing = first.tracing.expect("tracing");
        assert_eq!((first.version, tracing.collector.as_str(), tracing.sampling_ratio), (1, "otel:4317", 0.0));
        assert_eq!(metrics.streams(StreamKind::ProxyConfig), 1);

        // Off, then a ratio: each arrives as a whole update.
        tx.send_replace(Arc::new(TraceSettings { version: 2, ..Default::default() }));
        let off = stream.next().await.expect("update").expect("ok");
        assert_eq!((off.version, off.tracing.expect("tracing").collector.as_str()), (2, ""));
        tx.send_replace(Arc::new(TraceSettings {
            version: 3,
            collector: Some("otel:4317".into()),
            sampling_ratio: 0.25,
            service_name: "mesh".into(),
        }));
        let on = stream.next().await.expect("update").expect("ok");
        let tracing = on.tracing.expect("tracing");
        assert_eq!((tracing.sampling_ratio, tracing.service_name.as_str()), (0.25, "mesh"));

        trigger.fire();
        let last = stream.next().await.expect("status");
        assert_eq!(last.expect_err("unavailable").code(), tonic::Code::Unavailable);
    }
}
