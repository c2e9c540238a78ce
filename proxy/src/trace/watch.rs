//! `ProxyConfig.Watch`: the tracing settings from the control plane,
//! applied to the tracer as they arrive. The stream reconnects with
//! backoff; while the control plane is away the last settings stay.

use weft_api::config::ConfigRequest;
use weft_api::config::proxy_config_client::ProxyConfigClient;

use super::{TraceSettings, Tracer};
use crate::control::ControlPlane;
use crate::control::backoff::Backoff;

/// Follows the control plane's proxy configuration for as long as the
/// proxy runs.
pub async fn run(control: ControlPlane, workload: String, tracer: Tracer) {
    let mut backoff = Backoff::default();
    loop {
        let stream = async {
            let mut client = ProxyConfigClient::new(control.channel.clone());
            let request = ConfigRequest {
                proxy_id: control.proxy_id.clone(),
                namespace: control.namespace.clone(),
                workload: workload.clone(),
            };
            let mut stream = client.watch(request).await?.into_inner();
            while let Some(update) = stream.message().await? {
                backoff.reset();
                let t = update.tracing.unwrap_or_default();
                let settings = TraceSettings {
                    collector: Some(t.collector.trim().to_owned()).filter(|c| !c.is_empty()),
                    sampling_ratio: t.sampling_ratio,
                    service_name: t.service_name,
                };
                tracing::debug!(version = update.version, ?settings, "proxy config update");
                tracer.apply(settings);
            }
            Ok::<_, tonic::Status>(())
        };
        if let Err(e) = stream.await {
            // An older control plane without the service: nothing to follow.
            if e.code() == tonic::Code::Unimplemented {
                tracing::info!("the control plane serves no proxy config; tracing stays off");
                return;
            }
            tracing::debug!(error = %e, "proxy config stream ended; keeping the last settings");
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}
