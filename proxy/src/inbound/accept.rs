//! One inbound connection, from accept to the stage that serves it: mesh
//! TLS terminated (the peer's identity) or plaintext (the mTLS mode
//! decides), authorization set up, then HTTP or an opaque splice to the
//! app.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use bytes::{Bytes, BytesMut};
use http::HeaderValue;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;

use super::admit::{self, Slot};
use super::authorize::ConnAuthz;
use super::http::InboundService;
use super::{Inbound, app_addr};
use crate::drain;
use crate::http::Version;
use crate::http::server::{self, Conn};
use crate::http::stack::stack;
use crate::identity::{ALPN_OPAQUE, Peer, SpiffeId};
use crate::metrics::Direction;
use crate::metrics::counted;
use crate::tap::TapConn;
use crate::transport::Serving;
use crate::transport::detect::{self, Outcome, Protocol};
use crate::transport::orig_dst::{OrigDstAddr, orig_dst};
use crate::transport::prefixed::PrefixedIo;
use crate::transport::splice::splice;
use crate::transport::tls::{self, Hello};

const DIR: Direction = Direction::Inbound;
/// A ClientHello larger than this is not a mesh client's.
const MAX_CLIENT_HELLO: usize = 16 * 1024;

/// Sets up one connection accepted by the inbound listener: detection, the
/// mesh handshake, authorization. Returns the stage that serves it, for
/// the caller to run in a task of its own, or `None` when the connection
/// ended here. `slot` is its place in admission (`admit.rs`), taken by the
/// accept loop.
pub async fn serve(
    mut stream: TcpStream,
    peer: SocketAddr,
    slot: Slot,
    inbound: Arc<Inbound>,
    drain: drain::Watch,
) -> Option<Serving> {
    let _ = stream.set_nodelay(true);
    let metrics = &inbound.http.metrics;
    let orig = match orig_dst(&stream) {
        Ok(orig) => orig,
        // Not redirected: forwarding it would loop.
        Err(e) => {
            metrics.orig_dst_errors[DIR as usize].fetch_add(1, Relaxed);
            tracing::warn!(direction = DIR.as_str(), %peer, error = %e, "refusing connection");
            return None;
        }
    };
    let dcfg = &inbound.config.inbound;
    // One deadline for detection and the ClientHello together: a silent
    // client is let go (or forwarded) after one detection timeout, not two.
    let deadline = tokio::time::Instant::now() + dcfg.detect_timeout;
    let opaque_port = dcfg.opaque_ports.contains(orig.0.port());
    let mesh_server = inbound.http.identity.as_ref().and_then(|i| i.configs()).map(|c| c.server.clone());
    // With mTLS on, inbound always reads the first bytes: meshed clients
    // speak first (a ClientHello), even on opaque ports.
    let skip = opaque_port && mesh_server.is_none();
    let (outcome, prefix) = match detect::detect_unless(&mut stream, skip, dcfg.detect_timeout).await {
        Ok(detected) => detected,
        Err(e) => {
            tracing::debug!(direction = DIR.as_str(), %peer, error = %e, "connection failed during detection");
            return None;
        }
    };
    if outcome == Outcome::Closed {
        metrics.detected(DIR, outcome);
        return None;
    }
    let Some(server) = mesh_server else {
        drop(slot);
        tracing::debug!(direction = DIR.as_str(), %peer, %orig, outcome = outcome.as_str(), "accepted");
        let peer = Accepted::new(&inbound, peer, orig, Peer::Unauthenticated).await;
        return Some(Box::pin(serve_detected(stream, prefix.freeze(), outcome, peer, inbound, drain)));
    };
    match complete_hello(&mut stream, prefix, deadline).await {
        Ok((Hello::Mesh(alpn), prefix)) => {
            let io = PrefixedIo::new(prefix, stream);
            serve_mesh(io, server, alpn, orig, peer, inbound, drain, slot).await
        }
        Ok((_, prefix)) => {
            drop(slot);
            let outcome = if opaque_port { Outcome::OpaquePort } else { outcome };
            let peer = Accepted::new(&inbound, peer, orig, Peer::Unauthenticated).await;
            Some(Box::pin(serve_detected(stream, prefix, outcome, peer, inbound, drain)))
        }
        Err(e) => {
            tracing::debug!(%peer, error = %e, "connection failed while reading a TLS hello");
            None
        }
    }
}

/// Who a connection is from and where it goes, with its authorization.
struct Accepted {
    /// The client's address, for tap.
    source: SocketAddr,
    orig: OrigDstAddr,
    /// The verified mesh identity, for `weft-client-id`.
    client_id: Option<HeaderValue>,
    peer_id: Option<SpiffeId>,
    /// `None` when this workload has no inbound policies.
    authz: Option<Arc<ConnAuthz>>,
}

impl Accepted {
    async fn new(inbound: &Inbound, source: SocketAddr, orig: OrigDstAddr, peer: Peer) -> Self {
        let peer_id = peer.identity().cloned();
        let client_id = peer_id.as_ref().and_then(|id| HeaderValue::from_str(id.as_str()).ok());
        let authz = match inbound.policies.clone() {
            Some(policies) => {
                let (ns, metrics) = (inbound.namespace.clone(), inbound.http.metrics.clone());
                // Boxed while it waits for the policy: connection tasks
                // are not sized for it for their whole life.
                Some(Arc::new(Box::pin(ConnAuthz::new(policies, orig.0.port(), peer, ns, metrics)).await))
            }
            None => None,
        };
        Self { source, orig, client_id, peer_id, authz }
    }
}

/// Reads on until `prefix` holds a whole ClientHello (when it starts one),
/// bounded in bytes and time.
async fn complete_hello(
    stream: &mut TcpStream,
    mut prefix: BytesMut,
    deadline: tokio::time::Instant,
) -> std::io::Result<(Hello, Bytes)> {
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

/// Terminates mesh TLS; returns the stage that serves the decrypted stream
/// to the app with the client's verified identity. The admission `slot` is
/// held until the handshake ends, which [`admit::HANDSHAKE_TIMEOUT`] bounds.
#[allow(clippy::too_many_arguments)]
async fn serve_mesh(
    io: PrefixedIo<TcpStream>,
    server: Arc<rustls::ServerConfig>,
    alpn: &'static [u8],
    orig: OrigDstAddr,
    peer: SocketAddr,
    inbound: Arc<Inbound>,
    drain: drain::Watch,
    slot: Slot,
) -> Option<Serving> {
    let handshake = tokio::time::timeout(admit::HANDSHAKE_TIMEOUT, tls::accept(io, server)).await;
    drop(slot);
    let (mut tls, verified) = match handshake {
        Ok(Ok(accepted)) => accepted,
        Ok(Err(e)) => {
            tracing::info!(%peer, error = %e, "mesh TLS handshake failed");
            return None;
        }
        Err(_) => {
            // A ClientHello and then silence: expected of a flood, so
            // counted rather than logged per connection.
            inbound.http.metrics.inbound_handshake_timeouts.fetch_add(1, Relaxed);
            tracing::debug!(%peer, timeout = ?admit::HANDSHAKE_TIMEOUT, "mesh TLS handshake timed out");
            return None;
        }
    };
    tracing::debug!(%peer, %orig, client = %verified.id(), "mesh TLS accepted");
    let accepted = Accepted::new(&inbound, peer, orig, Peer::Authenticated(verified)).await;
    if alpn == ALPN_OPAQUE {
        return Some(Box::pin(serve_detected(tls, Bytes::new(), Outcome::OpaquePort, accepted, inbound, drain)));
    }
    match detect::detect(&mut tls, inbound.config.inbound.detect_timeout).await {
        // The peer proxy promised HTTP (ALPN): never fall back to splicing,
        // which would skip header stripping and HTTP authorization.
        Ok((outcome @ (Outcome::Http1 | Outcome::Http2), prefix)) => {
            Some(Box::pin(serve_detected(tls, prefix.freeze(), outcome, accepted, inbound, drain)))
        }
        Ok((outcome, _)) => {
            inbound.http.metrics.detected(DIR, outcome);
            tracing::info!(%peer, outcome = outcome.as_str(), "mesh connection announced HTTP but sent none; closing");
            None
        }
        Err(e) => {
            tracing::debug!(%peer, error = %e, "mesh connection failed during detection");
            None
        }
    }
}

/// Everything after detection: counts the connection, then serves it as
/// HTTP or, once authorized, splices it with the app.
async fn serve_detected<I>(
    io: I,
    prefix: Bytes,
    outcome: Outcome,
    accepted: Accepted,
    inbound: Arc<Inbound>,
    drain: drain::Watch,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let metrics = &inbound.http.metrics;
    metrics.detected(DIR, outcome);
    let protocol = outcome.protocol();
    let (io, _open) = counted::open(io, prefix, metrics, DIR, protocol);
    let Accepted { source, orig, client_id, peer_id, authz } = accepted;
    let app = app_addr(orig);
    match protocol {
        Protocol::Http1 | Protocol::Http2 => {
            let version = if protocol == Protocol::Http1 { Version::Http1 } else { Version::Http2 };
            let conn = Conn { version, drain: drain.clone(), metrics: metrics.clone(), direction: DIR };
            let stack = stack(
                &inbound.http,
                DIR,
                InboundService {
                    inbound: inbound.clone(),
                    app,
                    version,
                    drain,
                    client_id,
                    peer_id: peer_id.clone(),
                    authz,
                },
            )
            .tapped(
                inbound.http.taps.clone(),
                TapConn { source: Some(source), destination: Some(orig.0), client_id: peer_id },
            );
            Box::pin(server::serve(io, conn, stack, &inbound.config.http)).await;
        }
        Protocol::Opaque => {
            // Decided before any byte reaches the app: a denied opaque
            // connection is closed unanswered.
            if let Some(decided) = authz.map(|a| a.decide()) {
                decided.count();
                if !decided.decision.allowed {
                    return;
                }
            }
            // Boxed: its connect and splice are not paid for by the
            // HTTP connections' tasks, nor HTTP's by these.
            Box::pin(forward_opaque(io, app, &inbound)).await
        }
    }
}

/// Splices an authorized opaque connection with the app.
async fn forward_opaque<I>(io: I, app: SocketAddr, inbound: &Inbound)
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let up = match tls::connect_upstream(app, inbound.config.connect_timeout, None).await {
        Ok(up) => up,
        Err(e) => {
            // Opaque TCP has no way to say why: the client sees the close.
            tracing::info!(direction = DIR.as_str(), error = %e, "opaque connection failed");
            return;
        }
    };
    match splice(io, up, inbound.config.tcp_idle_timeout).await {
        Ok(t) => tracing::debug!(direction = DIR.as_str(), ?t, "opaque connection closed"),
        Err(e) => {
            inbound.http.metrics.spliced(&e);
            tracing::debug!(direction = DIR.as_str(), error = %e, "opaque connection ended");
        }
    }
}
