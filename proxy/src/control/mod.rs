//! The proxy's side of the control plane: discovery (what stands behind a
//! destination), outbound policy, and workload registration.
//!
//! One lazily connected gRPC channel (HTTP/2, multiplexed) carries every
//! stream. Each stream reconnects with jittered exponential backoff; while
//! the control plane is away the proxy keeps serving from the last snapshot
//! it received, and a destination it has never seen is forwarded as is.

pub mod backoff;
pub mod discovery;
pub mod inbound_policy;
pub mod registry;
pub mod target;

use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// A handle to the control plane, cheap to clone.
#[derive(Clone, Debug)]
pub struct ControlPlane {
    pub channel: Channel,
    pub url: String,
    /// Identifies this proxy in the control plane's logs and metrics.
    pub proxy_id: String,
    /// The workload's namespace: bare service names resolve in it.
    pub namespace: String,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid control plane address {url:?}: {source}")]
pub struct InvalidAddress {
    url: String,
    #[source]
    source: tonic::transport::Error,
}

/// TLS to the control plane: the pinned trust anchors and the name its
/// certificate must carry.
#[derive(Clone, Debug)]
pub struct ControlTls {
    pub anchors_pem: String,
    pub server_name: String,
}

impl ControlPlane {
    /// Prepares the channel; nothing is connected until the first stream.
    pub fn new(
        url: &str,
        proxy_id: String,
        namespace: String,
        tls: Option<ControlTls>,
    ) -> Result<Self, InvalidAddress> {
        let invalid = |source| InvalidAddress { url: url.to_string(), source };
        let mut endpoint = Endpoint::from_shared(url.to_string()).map_err(invalid)?;
        if let Some(tls) = tls {
            let config = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(tls.anchors_pem))
                .domain_name(tls.server_name);
            endpoint = endpoint.tls_config(config).map_err(invalid)?;
        }
        let channel = endpoint
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .connect_lazy();
        Ok(Self { channel, url: url.to_string(), proxy_id, namespace })
    }
}
