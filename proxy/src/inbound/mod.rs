//! The inbound stack: connections from other pods, redirected by iptables
//! PREROUTING, to this pod's app. They go to the app on loopback at the
//! port they were addressed to, so the app sees them coming from the proxy
//! (127.0.0.1), never redirected again (OUTPUT rules skip loopback). One
//! file per stage, top-down:
//!
//! ```text
//! admit.rs      a bounded number of connections in detection and handshake, one deadline
//! accept.rs     orig dst ─► detect ─┬─ mesh ClientHello ─► TLS terminated (the peer's identity)
//!                                   └─ plaintext (mTLS mode decides) ─► the unauthenticated peer
//!               ─► authorize.rs (the port's policy, or the proxy's default until it arrives)
//!               ─┬─ HTTP ─► http.rs: per request: authorization (route-scoped) ─► rate limit
//!                │          ─► weft-client-id ─► the app (an upgrade on a connection of its own)
//!                └─ opaque ─► decided once ─► the app, spliced
//! error.rs      InboundError: every way a request fails here, with its status and reason word
//! ```
//!
//! No byte reaches the app before authorization decided.

pub mod accept;
pub mod admit;
pub mod authorize;
pub mod error;
pub mod http;

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

pub use error::InboundError;

use crate::config::Config;
use crate::control::inbound_policy::InboundPolicies;
use crate::http::shared::Shared;
use crate::transport::orig_dst::OrigDstAddr;

/// What the inbound side of a proxy holds, built once at start.
#[derive(Debug)]
pub struct Inbound {
    pub config: Config,
    pub http: Arc<Shared>,
    /// This workload's inbound policies, when it is registered.
    pub policies: Option<Arc<InboundPolicies>>,
    /// This workload's namespace (same-namespace decisions).
    pub namespace: String,
    /// Bounds the connections not yet past detection and the handshake.
    pub admission: admit::Admission,
}

/// The app, on loopback, in the address family the client used.
pub fn app_addr(orig: OrigDstAddr) -> SocketAddr {
    let ip = if orig.0.is_ipv4() { Ipv4Addr::LOCALHOST.into() } else { Ipv6Addr::LOCALHOST.into() };
    SocketAddr::new(ip, orig.0.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbound_goes_to_loopback_at_the_original_port() {
        let v4 = OrigDstAddr("198.18.0.12:8080".parse().expect("addr"));
        assert_eq!(app_addr(v4), "127.0.0.1:8080".parse().expect("addr"));
        let v6 = OrigDstAddr("[2001:db8::2]:80".parse().expect("addr"));
        assert_eq!(app_addr(v6), "[::1]:80".parse().expect("addr"));
    }
}
