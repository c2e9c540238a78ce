//! HTTP proxying: a hyper server per downstream connection whose service
//! forwards each request over a pooled upstream connection.
//!
//! ```text
//! downstream conn ─► server (h1 | h2) ─► ProxyService ─► Pool ─► upstream conn
//!                                        │ hop-by-hop headers, upgrades,
//!                                        │ timeouts, metrics
//!                                        └ errors ─► respond (one mapping)
//! ```

pub mod body;
pub mod client;
pub mod headers;
pub mod idle;
pub mod mirror;
pub mod outbound;
pub mod respond;
pub mod server;
pub mod service;
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
