//! The outbound stack: connections from this pod's app (redirected by
//! iptables OUTPUT, or sent to the explicit proxy) to the rest of the mesh.
//! One file per stage, top-down:
//!
//! ```text
//! accept.rs   orig dst ─┬─ not redirected + --explicit-proxy ─► explicit/ (HTTP_PROXY)
//!                       └─ discovery (Resolver) ─► detect ─┬─ HTTP ─► http.rs
//!                                                          └─ opaque ─► tcp.rs
//! http.rs     per request: policy (waited for on a first request) ─► route ─► filters ─► fault
//!             ─► backend ─┬─ upgrade: endpoint.rs ─► dedicated connection (http::upgrade)
//!                         └─ attempts.rs: request timeout ─► attempt (endpoint.rs, per-try timeout,
//!                            pool) ─► retry while the policy and its budget allow
//! tcp.rs      endpoint.rs (the service policy's balancer and circuit breaker) ─► connect (mTLS
//!             when meshed) ─► splice
//! endpoint.rs the one place every protocol picks an endpoint
//! error.rs    OutboundError: every way a request fails here, with its status and reason word
//! ```
//!
//! The decisions themselves are pure functions in [`crate::policy`] and
//! [`crate::balance`]; these files only wire them.

pub mod accept;
pub mod attempts;
pub mod endpoint;
pub mod error;
pub mod explicit;
pub mod http;
pub mod mirror;
pub mod tcp;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

pub use error::OutboundError;

use crate::config::Config;
use crate::control::discovery::Resolver;
use crate::http::shared::Shared;
use crate::policy::compiled::CompiledPolicy;

/// What the outbound side of a proxy holds, built once at start.
#[derive(Debug)]
pub struct Outbound {
    pub config: Config,
    pub http: Arc<Shared>,
    /// Destinations → endpoints and policy, through the control plane.
    pub resolver: Arc<Resolver>,
    /// The outbound listener's address: never a destination (see
    /// [`endpoint::choose`]).
    pub listener: SocketAddr,
    /// The policy of destinations outside the mesh (or with no control
    /// plane): the proxy's safe defaults.
    pub fallback_policy: Arc<CompiledPolicy>,
    /// How long a mesh service's first request waits for its policy.
    pub policy_timeout: Duration,
    /// Bounds the RequestMirror copies in flight.
    pub mirrors: Arc<Semaphore>,
}
