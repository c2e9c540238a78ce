//! HTTP plumbing both stacks share: the hyper server per downstream
//! connection, the per-request middleware, the upstream pool, bodies,
//! hop-by-hop headers, upgrades and the answers the proxy writes itself.
//! What a request *means* (routes, authorization) is decided in
//! [`crate::outbound`] and [`crate::inbound`].
//!
//! ```text
//! downstream conn ─► server (h1 | h2) ─► record (metrics) ─► inbound / outbound stack ─► client::Pool ─► upstream conn
//!                                                              errors ─► respond (status + weft-proxy-error)
//! ```

pub mod body;
pub mod client;
pub mod headers;
pub mod idle;
pub mod keep_alive;
pub mod record;
pub mod respond;
pub mod server;
pub mod shared;
pub mod stack;
pub mod upgrade;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use idle::IdleBody;

use crate::metrics::Metrics;

/// Body of responses sent downstream: the upstream's streamed body (cut
/// off by the traffic policy's idle timeout, if any), or a small body the
/// proxy wrote itself (errors).
pub type ResponseBody = Either<IdleBody<Incoming>, Full<Bytes>>;

/// The upstream's body as sent downstream; `idle`: the policy's
/// `timeouts.idle`, and where to count a cut.
pub fn streamed(body: Incoming, idle: Option<(Duration, &Arc<Metrics>)>) -> ResponseBody {
    Either::Left(IdleBody::new(body, idle))
}

pub use body::RequestBody;

/// Which HTTP version a connection speaks on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Version {
    Http1,
    Http2,
}
