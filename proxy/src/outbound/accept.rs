//! One outbound connection, from accept to the stage that serves it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use tokio::net::TcpStream;

use super::Outbound;
use super::http::OutboundService;
use crate::drain;
use crate::http::Version;
use crate::http::server::{self, Conn};
use crate::http::stack::stack;
use crate::metrics::Direction;
use crate::metrics::counted;
use crate::tap::TapConn;
use crate::transport::Serving;
use crate::transport::detect::{self, Outcome, Protocol};
use crate::transport::orig_dst::orig_dst;

const DIR: Direction = Direction::Outbound;

/// Sets up one connection accepted by the outbound listener (detection,
/// the destination's resolution) and returns the stage that serves it, for
/// the caller to run in a task of its own ([`Serving`]), or `None` when the
/// connection ended here.
pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    outbound: Arc<Outbound>,
    drain: drain::Watch,
) -> Option<Serving> {
    let _ = stream.set_nodelay(true);
    let metrics = &outbound.http.metrics;
    let orig = match orig_dst(&stream) {
        Ok(orig) => orig,
        // Nothing redirected it (no iptables, or it targets the listener
        // itself): the app chose this proxy, as HTTP_PROXY clients do.
        Err(e) if outbound.config.explicit_proxy => {
            tracing::debug!(%peer, reason = %e, "serving as an explicit proxy");
            return Some(Box::pin(super::explicit::serve(stream, peer, outbound, drain)));
        }
        Err(e) => {
            metrics.orig_dst_errors[DIR as usize].fetch_add(1, Relaxed);
            tracing::warn!(direction = DIR.as_str(), %peer, error = %e, "refusing connection");
            return None;
        }
    };
    let mut stream = stream;
    let dcfg = &outbound.config.outbound;
    let skip = dcfg.opaque_ports.contains(orig.0.port());
    let (outcome, prefix) = match detect::detect_unless(&mut stream, skip, dcfg.detect_timeout).await {
        Ok(detected) => detected,
        Err(e) => {
            tracing::debug!(direction = DIR.as_str(), %peer, error = %e, "connection failed during detection");
            return None;
        }
    };
    metrics.detected(DIR, outcome);
    if outcome == Outcome::Closed {
        return None;
    }
    tracing::debug!(direction = DIR.as_str(), %peer, %orig, outcome = outcome.as_str(), "accepted");
    let upstream = outbound.resolver.resolve(orig.0).await;
    Some(Box::pin(async move {
        let metrics = &outbound.http.metrics;
        let protocol = outcome.protocol();
        let (io, _open) = counted::open(stream, prefix.freeze(), metrics, DIR, protocol);
        match protocol {
            Protocol::Http1 | Protocol::Http2 => {
                let version = if protocol == Protocol::Http1 { Version::Http1 } else { Version::Http2 };
                let conn = Conn { version, drain: drain.clone(), metrics: metrics.clone(), direction: DIR };
                let stack = stack(
                    &outbound.http,
                    DIR,
                    OutboundService { outbound: outbound.clone(), upstream, version, drain },
                )
                .tapped(
                    outbound.http.taps.clone(),
                    TapConn { source: Some(peer), destination: Some(orig.0), client_id: None },
                );
                server::serve(io, conn, stack, &outbound.config.http).await;
            }
            Protocol::Opaque => super::tcp::forward(io, &upstream, &outbound).await,
        }
    }))
}
