//! The per-connection pipeline shared by both directions:
//!
//! ```text
//! accept (capped) ─► orig dst ─► detect ─┬─ http1/http2 ─► http::server
//!                     │                  └─ opaque ──────► tcp::splice
//!                     └─ outbound, not redirected, --explicit-proxy ─► explicit::serve
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::Ordering::Relaxed;

use ::http::HeaderValue;
use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::balance::Pick;
use crate::config::{Config, DirectionConfig};
use crate::control::discovery::{Resolution, Resolver};
use crate::control::inbound_policy::InboundPolicies;
use crate::drain;
use crate::http::respond::ProxyError;
use crate::http::service::{ProxyService, Shared};
use crate::http::{self, Version};
use crate::identity::ALPN_OPAQUE;
use crate::identity::Peer;
use crate::inbound::ConnAuthz;
use crate::metrics::{Direction, Metrics, ProtocolLabel};
use crate::transport::counted::CountedIo;
use crate::transport::detect::{self, Outcome, Protocol};
use crate::transport::orig_dst::orig_dst;
use crate::transport::prefixed::PrefixedIo;
use crate::transport::tls::{self, Hello, UpstreamIo};
use crate::{inbound, outbound, tcp};

/// A ClientHello larger than this is not a mesh client's.
const MAX_CLIENT_HELLO: usize = 16 * 1024;

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
    /// This workload's inbound policies, when it is registered.
    pub inbound_policies: Option<Arc<InboundPolicies>>,
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
        // Nothing redirected it (no iptables, or it targets the listener
        // itself): the app chose this proxy, as HTTP_PROXY clients do.
        Err(e) if dir == Direction::Outbound && ctx.config.explicit_proxy => {
            tracing::debug!(%peer, reason = %e, "serving as an explicit proxy");
            return crate::explicit::serve(stream, peer, ctx, drain).await;
        }
        Err(e) => {
            ctx.metrics.orig_dst_errors[dir as usize].fetch_add(1, Relaxed);
            tracing::warn!(direction = dir.as_str(), %peer, error = %e, "refusing connection");
            return;
        }
    };
    let dcfg = ctx.direction(dir);
    let mesh_server = match dir {
        Direction::Inbound => ctx.http.identity.as_ref().and_then(|i| i.configs()).map(|c| c.server.clone()),
        Direction::Outbound => None,
    };
    // With mTLS on, inbound always reads the first bytes: meshed clients
    // speak first (a ClientHello), even on opaque ports.
    let (outcome, prefix) = if dcfg.opaque_ports.contains(orig.0.port()) && mesh_server.is_none() {
        (Outcome::OpaquePort, BytesMut::new())
    } else {
        match detect::detect(&mut stream, dcfg.detect_timeout).await {
            Ok((outcome, buf)) => (outcome, buf),
            Err(e) => {
                tracing::debug!(direction = dir.as_str(), %peer, error = %e, "connection failed during detection");
                return;
            }
        }
    };
    if outcome == Outcome::Closed {
        ctx.metrics.detected(dir, outcome);
        return;
    }
    if let Some(server) = mesh_server {
        match complete_hello(&mut stream, prefix, dcfg.detect_timeout).await {
            Ok((Hello::Mesh(alpn), prefix)) => {
                let io = PrefixedIo::new(prefix, stream);
                return serve_mesh_inbound(io, server, alpn, orig, peer, &ctx, drain).await;
            }
            Ok((_, prefix)) => {
                let outcome = if dcfg.opaque_ports.contains(orig.0.port()) { Outcome::OpaquePort } else { outcome };
                let upstream = inbound::upstream(orig);
                let authz = authorize(&ctx, orig.0.port(), &Peer::Unauthenticated).await;
                serve_detected(stream, prefix, outcome, dir, &ctx, upstream, drain, None, authz).await;
            }
            Err(e) => tracing::debug!(%peer, error = %e, "connection failed while reading a TLS hello"),
        }
        return;
    }
    tracing::debug!(direction = dir.as_str(), %peer, %orig, outcome = outcome.as_str(), "accepted");
    let upstream = match dir {
        Direction::Inbound => inbound::upstream(orig),
        Direction::Outbound => outbound::upstream(&ctx.resolver, orig).await,
    };
    let authz = match dir {
        Direction::Inbound => authorize(&ctx, orig.0.port(), &Peer::Unauthenticated).await,
        Direction::Outbound => None,
    };
    serve_detected(stream, prefix.freeze(), outcome, dir, &ctx, upstream, drain, None, authz).await;
}

/// Authorization for an inbound connection, when this workload has inbound
/// policies.
async fn authorize(ctx: &Ctx, port: u16, peer: &Peer) -> Option<Arc<ConnAuthz>> {
    let policies = ctx.inbound_policies.clone()?;
    let ns = ctx.config.control.as_ref().map_or("default", |c| c.namespace.as_str()).to_string();
    Some(Arc::new(ConnAuthz::new(policies, port, peer.clone(), ns, ctx.metrics.clone()).await))
}

/// Reads on until `prefix` holds a whole ClientHello (when it starts one),
/// bounded in bytes and time.
async fn complete_hello(
    stream: &mut TcpStream,
    mut prefix: BytesMut,
    timeout: Duration,
) -> std::io::Result<(Hello, Bytes)> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let hello = tls::inspect(&prefix);
        if hello != Hello::Incomplete || prefix.len() >= MAX_CLIENT_HELLO {
            return Ok((hello, prefix.freeze()));
        }
        match tokio::time::timeout_at(deadline, stream.read_buf(&mut prefix)).await {
            Ok(Ok(0)) | Err(_) => return Ok((Hello::Foreign, prefix.freeze())),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
        }
    }
}

/// Terminates mesh TLS, then serves the decrypted stream to the app with
/// the client's verified identity.
async fn serve_mesh_inbound(
    io: PrefixedIo<TcpStream>,
    server: Arc<rustls::ServerConfig>,
    alpn: &'static [u8],
    orig: crate::transport::orig_dst::OrigDstAddr,
    peer: SocketAddr,
    ctx: &Arc<Ctx>,
    drain: drain::Watch,
) {
    let dir = Direction::Inbound;
    let (mut tls, verified) = match tls::accept(io, server).await {
        Ok(accepted) => accepted,
        Err(e) => {
            tracing::info!(%peer, error = %e, "mesh TLS handshake failed");
            return;
        }
    };
    let client_id = HeaderValue::from_str(verified.id().as_str()).ok();
    tracing::debug!(%peer, %orig, client = %verified.id(), "mesh TLS accepted");
    let upstream = inbound::upstream(orig);
    let authz = authorize(ctx, orig.0.port(), &Peer::Authenticated(verified)).await;
    if alpn == ALPN_OPAQUE {
        return serve_detected(tls, Bytes::new(), Outcome::OpaquePort, dir, ctx, upstream, drain, client_id, authz)
            .await;
    }
    match detect::detect(&mut tls, ctx.config.inbound.detect_timeout).await {
        // The peer proxy promised HTTP (ALPN): never fall back to splicing,
        // which would skip header stripping and HTTP authorization.
        Ok((outcome @ (Outcome::Http1 | Outcome::Http2), prefix)) => {
            serve_detected(tls, prefix.freeze(), outcome, dir, ctx, upstream, drain, client_id, authz).await
        }
        Ok((outcome, _)) => {
            ctx.metrics.detected(dir, outcome);
            tracing::info!(%peer, outcome = outcome.as_str(), "mesh connection announced HTTP but sent none; closing");
        }
        Err(e) => tracing::debug!(%peer, error = %e, "mesh connection failed during detection"),
    }
}

/// Everything after detection: counts the connection, then serves it as
/// HTTP or splices it.
#[allow(clippy::too_many_arguments)]
async fn serve_detected<I>(
    io: I,
    prefix: Bytes,
    outcome: Outcome,
    dir: Direction,
    ctx: &Arc<Ctx>,
    upstream: Resolution,
    drain: drain::Watch,
    client_id: Option<HeaderValue>,
    authz: Option<Arc<ConnAuthz>>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    ctx.metrics.detected(dir, outcome);
    let protocol = outcome.protocol();
    let label = match protocol {
        Protocol::Http1 => ProtocolLabel::Http1,
        Protocol::Http2 => ProtocolLabel::Http2,
        Protocol::Opaque => ProtocolLabel::Opaque,
    };
    let counters = ctx.metrics.tcp(dir, label);
    counters.open_connection();
    counters.read_bytes.fetch_add(prefix.len() as u64, Relaxed);
    let io = PrefixedIo::new(prefix, CountedIo::new(io, ctx.metrics.clone(), dir, label));
    match protocol {
        Protocol::Http1 | Protocol::Http2 => {
            let version = if protocol == Protocol::Http1 { Version::Http1 } else { Version::Http2 };
            let svc =
                ProxyService { shared: ctx.http.clone(), upstream, version, direction: dir, drain, client_id, authz };
            http::server::serve(io, svc, &ctx.config.http).await;
        }
        Protocol::Opaque => {
            // Decided before any byte reaches the app: a denied opaque
            // connection is closed unanswered.
            if let Some(authz) = authz.as_ref().map(|a| a.decide()) {
                authz.count();
                if !authz.decision.allowed {
                    ctx.metrics.tcp(dir, label).close_connection();
                    return;
                }
            }
            forward_opaque(io, &upstream, dir, ctx).await
        }
    }
    ctx.metrics.tcp(dir, label).close_connection();
}

/// Opaque TCP is balanced per connection: the endpoint stays "pending"
/// while the connection is open, and its connect time feeds the EWMA.
async fn forward_opaque<I>(io: I, upstream: &Resolution, dir: Direction, ctx: &Ctx)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (up, _pick, idle) = match connect_opaque(upstream, ctx).await {
        Ok(connected) => connected,
        Err(e) => {
            // Opaque TCP has no way to say why: the client sees the close.
            tracing::info!(direction = dir.as_str(), error = %e, "opaque connection failed");
            return;
        }
    };
    match tcp::splice(io, up, idle).await {
        Ok(t) => tracing::debug!(direction = dir.as_str(), ?t, "opaque connection closed"),
        Err(e) => {
            ctx.metrics.spliced(&e);
            tracing::debug!(direction = dir.as_str(), error = %e, "opaque connection ended");
        }
    }
}

/// Chooses an endpoint for an opaque stream (a connection, or an explicit
/// proxy's CONNECT tunnel) under the service's policy (its balancer kind
/// and circuit breaker: routes, being HTTP, do not apply) and connects to
/// it, with mesh TLS when it is meshed, under the policy's connect timeout.
/// Keep the returned pick while the stream is open; close the stream after
/// the returned idle time without a byte (the policy's, or
/// `--tcp-idle-timeout`).
pub(crate) async fn connect_opaque(
    upstream: &Resolution,
    ctx: &Ctx,
) -> Result<(UpstreamIo, Option<Pick>, Duration), ProxyError> {
    let policy = ctx.http.policy_for(upstream).await?;
    let timeouts = policy.default.timeouts;
    let no_headers = ::http::HeaderMap::new();
    let (addr, pick) = ctx.http.choose(upstream, &policy, &policy.default.balance, &no_headers, None)?;
    let tls = pick.as_ref().and_then(|p| ctx.http.tls_target(&p.endpoint, true));
    let connect_timeout = timeouts.connect.unwrap_or(ctx.config.connect_timeout);
    let up = tls::connect_upstream(addr, connect_timeout, tls.as_ref()).await?;
    if let Some(pick) = &pick {
        pick.observe();
    }
    Ok((up, pick, timeouts.idle.unwrap_or(ctx.config.tcp_idle_timeout)))
}
