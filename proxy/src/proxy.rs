//! The per-connection pipeline shared by both directions:
//!
//! ```text
//! accept (capped) ─► orig dst ─► detect ─┬─ http1/http2 ─► http::server
//!                                        └─ opaque ──────► tcp::splice
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::{Config, DirectionConfig};
use crate::control::discovery::{Resolution, Resolver};
use crate::drain;
use crate::http::service::{ProxyService, Shared};
use crate::http::{self, Version};
use crate::metrics::{Direction, Metrics, ProtocolLabel};
use crate::transport::counted::CountedIo;
use crate::transport::detect::{self, Outcome, Protocol};
use crate::transport::orig_dst::orig_dst;
use crate::transport::prefixed::PrefixedIo;
use crate::{inbound, outbound, tcp};

/// Everything a connection needs, built once at start.
#[derive(Debug)]
pub struct Ctx {
    pub config: Config,
    pub metrics: Arc<Metrics>,
    pub http: Arc<Shared>,
    /// Caps concurrent downstream connections across both listeners.
    pub limit: Arc<Semaphore>,
    /// Outbound destinations → endpoints, through the control plane.
    pub resolver: Arc<Resolver>,
}

impl Ctx {
    fn direction(&self, dir: Direction) -> &DirectionConfig {
        match dir {
            Direction::Inbound => &self.config.inbound,
            Direction::Outbound => &self.config.outbound,
        }
    }
}

/// Accepts connections until draining starts, then drops the listener so
/// that new connections are refused.
pub async fn accept_loop(listener: TcpListener, dir: Direction, ctx: Arc<Ctx>, drain: drain::Watch) {
    loop {
        // Waiting for a permit before accepting leaves excess connections in
        // the kernel's backlog instead of in our memory.
        let permit = tokio::select! {
            p = ctx.limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = drain.signaled() => break,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = drain.signaled() => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                tokio::spawn(serve_connection(stream, peer, dir, ctx.clone(), drain.clone(), permit));
            }
            Err(e) => {
                // EMFILE and friends: back off briefly rather than spin.
                tracing::warn!(direction = dir.as_str(), error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    tracing::info!(direction = dir.as_str(), "listener closed");
}

async fn serve_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    dir: Direction,
    ctx: Arc<Ctx>,
    drain: drain::Watch,
    _permit: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let orig = match orig_dst(&stream) {
        Ok(orig) => orig,
        Err(e) => {
            ctx.metrics.orig_dst_errors[dir as usize].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(direction = dir.as_str(), %peer, error = %e, "refusing connection");
            return;
        }
    };
    let dcfg = ctx.direction(dir);
    let (outcome, prefix) = if dcfg.opaque_ports.contains(orig.0.port()) {
        (Outcome::OpaquePort, Bytes::new())
    } else {
        match detect::detect(&mut stream, dcfg.detect_timeout).await {
            Ok((outcome, buf)) => (outcome, buf.freeze()),
            Err(e) => {
                tracing::debug!(direction = dir.as_str(), %peer, error = %e, "connection failed during detection");
                return;
            }
        }
    };
    ctx.metrics.detected(dir, outcome);
    let protocol = outcome.protocol();
    let label = match protocol {
        Protocol::Http1 => ProtocolLabel::Http1,
        Protocol::Http2 => ProtocolLabel::Http2,
        Protocol::Opaque => ProtocolLabel::Opaque,
    };
    let counters = ctx.metrics.tcp(dir, label);
    counters.open_connection();
    counters.read_bytes.fetch_add(prefix.len() as u64, std::sync::atomic::Ordering::Relaxed);
    tracing::debug!(direction = dir.as_str(), %peer, %orig, outcome = outcome.as_str(), "accepted");

    let upstream = match dir {
        Direction::Inbound => inbound::upstream(orig),
        Direction::Outbound => outbound::upstream(&ctx.resolver, orig).await,
    };
    let io = PrefixedIo::new(prefix, CountedIo::new(stream, ctx.metrics.clone(), dir, label));
    match protocol {
        Protocol::Http1 | Protocol::Http2 => {
            let version = if protocol == Protocol::Http1 { Version::Http1 } else { Version::Http2 };
            let svc = ProxyService { shared: ctx.http.clone(), upstream, version, direction: dir, drain };
            http::server::serve(io, svc, &ctx.config.http).await;
        }
        Protocol::Opaque => forward_opaque(io, &upstream, dir, &ctx).await,
    }
    ctx.metrics.tcp(dir, label).close_connection();
}

/// Opaque TCP is balanced per connection: the endpoint stays "pending"
/// while the connection is open, and its connect time feeds the EWMA.
async fn forward_opaque<I>(io: I, upstream: &Resolution, dir: Direction, ctx: &Ctx)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (addr, pick) = match upstream {
        Resolution::Forward(addr) => (*addr, None),
        Resolution::Service(target) => match target.balancer.pick() {
            Some(pick) => (pick.addr(), Some(pick)),
            None => {
                tracing::info!(direction = dir.as_str(), "opaque connection to a service with no ready endpoints");
                return;
            }
        },
    };
    let up = match crate::transport::connect::connect(addr, ctx.config.connect_timeout).await {
        Ok(up) => up,
        Err(e) => {
            // Opaque TCP has no way to say why: the client sees the close.
            tracing::info!(direction = dir.as_str(), error = %e, "opaque connection failed");
            return;
        }
    };
    if let Some(pick) = &pick {
        pick.observe();
    }
    match tcp::splice(io, up, ctx.config.tcp_idle_timeout).await {
        Ok(t) => tracing::debug!(direction = dir.as_str(), ?t, "opaque connection closed"),
        Err(e) => tracing::debug!(direction = dir.as_str(), error = %e, "opaque connection ended"),
    }
}
