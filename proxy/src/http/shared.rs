//! What every HTTP exchange of both stacks shares: the upstream pool, the
//! metrics, the proxy's default timeouts and its mesh identity.

use std::sync::Arc;
use std::time::Duration;

use super::client::Pool;
use crate::balance::Endpoint;
use crate::identity::IdentityHandle;
use crate::metrics::Metrics;
use crate::transport::tls::TlsTarget;

/// Built once at start; every connection holds an `Arc` of it.
#[derive(Debug)]
pub struct Shared {
    pub pool: Pool,
    pub metrics: Arc<Metrics>,
    /// Upstream response-header deadline; `None` waits without limit.
    pub request_timeout: Option<Duration>,
    /// Idle timeout of upgraded (WebSocket, CONNECT) and opaque streams.
    pub tcp_idle_timeout: Duration,
    /// The proxy's mesh identity; `None` runs without mTLS.
    pub identity: Option<IdentityHandle>,
    /// Open taps (`crate::tap`).
    pub taps: Arc<crate::tap::Taps>,
    /// Spans of both stacks (off without a collector).
    pub trace: crate::trace::Tracer,
}

impl Shared {
    /// Mesh TLS parameters for a meshed endpoint, when this proxy has an
    /// identity; `None` means plaintext (documented: unmeshed destinations).
    pub fn tls_target(&self, endpoint: &Endpoint, opaque: bool) -> Option<TlsTarget> {
        let expected = endpoint.spiffe.clone()?;
        let configs = self.identity.as_ref()?.configs()?;
        let config = if opaque { configs.client_opaque.clone() } else { configs.client_http.clone() };
        Some(TlsTarget { config, expected })
    }
}
