//! The proxy's side of the control plane: discovery (what stands behind a
//! destination), outbound policy, and workload registration.
//!
//! One lazily connected gRPC channel (HTTP/2, multiplexed) carries every
//! stream. Each stream reconnects with jittered exponential backoff; while
//! the control plane is away the proxy keeps serving from the last snapshot
//! it received, and a destination it has never seen is forwarded as is.

pub mod backoff;
pub mod certify;
pub mod discovery;
pub mod inbound_policy;
pub mod registry;

pub mod tls;

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

pub use self::tls::{ControlTls, ControlTlsError};

/// A handle to the control plane, cheap to clone.
#[derive(Clone, Debug)]
pub struct ControlPlane {
    pub channel: Channel,
    pub url: String,
    /// Identifies this proxy in the control plane's logs and metrics.
    pub proxy_id: String,
    /// The workload's namespace: bare service names resolve in it.
    pub namespace: String,
    /// With TLS: the anchors the next connection trusts (they follow the
    /// streamed trust bundle).
    pub tls: Option<ControlTls>,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid control plane address {url:?}: {source}")]
pub struct InvalidAddress {
    url: String,
    #[source]
    source: tonic::transport::Error,
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
        // With TLS the connector does the handshake; tonic's own TLS would
        // pin fixed roots and refuse an https URI without it.
        let dial = match &tls {
            Some(_) => url.replacen("https://", "http://", 1),
            None => url.to_string(),
        };
        let endpoint = Endpoint::from_shared(dial)
            .map_err(invalid)?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5));
        let channel = match &tls {
            Some(tls) => endpoint.connect_with_connector_lazy(tls.connector()),
            None => endpoint.connect_lazy(),
        };
        Ok(Self { channel, url: url.to_string(), proxy_id, namespace, tls })
    }
}
