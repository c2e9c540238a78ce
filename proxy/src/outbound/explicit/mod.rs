//! The outbound listener as an explicit HTTP/1.1 forward proxy, for apps
//! that cannot be intercepted (the local mesh's loopback mode, where apps
//! get `HTTP_PROXY=http://<pod ip>:4140`). Enabled by `--explicit-proxy`; it
//! serves only connections that iptables did not redirect, which would
//! otherwise be refused.
//!
//! ```text
//! app ─ GET http://web/x ─► outbound listener ─► target::parse ─► resolve ─┬─ mesh service: P2C/EWMA per request
//!       CONNECT web:6379                         (400 if not               ├─ IP literal / meshed pod
//!                                                 absolute form)           └─ else the system resolver (502 if it fails)
//!   forward: GET /x, Host: web ─► the transparent path's stage (super::http: policy, pool, timeouts)
//!   tunnel:  200, then opaque splice to the chosen endpoint
//! ```
//!
//! Supported: HTTP/1.1 (and 1.0) requests in absolute form with `http://`,
//! `CONNECT host:port` (for TLS or any TCP protocol), protocol upgrades
//! (WebSocket) in absolute form. Not supported: HTTP/2 with prior knowledge
//! (the connection is closed: HTTP clients speak HTTP/1.1 to a proxy), and
//! `https://` in absolute form (400: use CONNECT).

pub mod service;
pub mod target;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;

use super::Outbound;
use crate::drain;
use crate::http::Version;
use crate::http::server::{self, Conn};
use crate::http::stack::stack;
use crate::metrics::Direction;
use crate::metrics::counted;
use crate::transport::detect::{self, Outcome, Protocol};

/// Serves one unredirected connection to the outbound listener.
pub async fn serve(mut stream: TcpStream, peer: SocketAddr, outbound: Arc<Outbound>, drain: drain::Watch) {
    let dir = Direction::Outbound;
    let metrics = &outbound.http.metrics;
    let stream_local = stream.local_addr().ok();
    // One bounded, deadlined read, only to turn away HTTP/2 prior knowledge:
    // everything else is HTTP/1 or nothing, and hyper bounds the head
    // (--max-header-bytes → 431, --header-read-timeout) and answers garbage
    // with 400. (Detection's 1 KiB verdict would close a request whose
    // absolute-form request line is merely long.)
    let (outcome, prefix) = match detect::detect(&mut stream, outbound.config.outbound.detect_timeout).await {
        Ok(detected) => detected,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "explicit proxy connection failed during detection");
            return;
        }
    };
    metrics.detected(dir, outcome);
    match outcome {
        Outcome::Closed => return,
        Outcome::Http2 => {
            tracing::info!(
                %peer,
                "closing an HTTP/2 prior-knowledge connection to the explicit proxy: it serves HTTP/1.1 (absolute \
                 form, CONNECT)"
            );
            return;
        }
        Outcome::Http1 | Outcome::Opaque | Outcome::Timeout | Outcome::OpaquePort => {}
    }
    // Served as HTTP/1 whatever detection said: hyper answers what is not.
    let (io, _open) = counted::open(stream, prefix.freeze(), metrics, dir, Protocol::Http1);
    let conn = Conn { version: Version::Http1, drain: drain.clone(), metrics: metrics.clone(), direction: dir };
    let stack = stack(&outbound.http, dir, service::ExplicitService { outbound: outbound.clone(), drain }).tapped(
        outbound.http.taps.clone(),
        crate::tap::TapConn { source: Some(peer), destination: stream_local, client_id: None },
    );
    server::serve(io, conn, stack, &outbound.config.http).await;
}
