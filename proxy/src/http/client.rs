//! Upstream HTTP connections, pooled per endpoint address.
//!
//! HTTP/1: a stack of idle connections per address. A connection is taken
//! for one request and returns to the stack once hyper says it can carry the
//! next one (the response body has been fully read). HTTP/2: one shared,
//! multiplexed connection per address, replaced when it closes, and let go
//! once no request has taken it for the idle timeout (it closes when its
//! last stream ends). Either way the pool lets a connection go before the
//! peer proxy's keep-alive timeout would close it under a new request.
//!
//! The pool is keyed by what a connection *is*, not by the request's
//! authority: the endpoint's socket address, and the server identity it was
//! verified as (`None`: plaintext), with one map per HTTP version. A
//! plaintext connection opened while discovery had not answered is thus
//! never reused for a request that must be mTLS to the same address, nor a
//! connection verified as one identity after discovery names another.
//!
//! A request the connection hands back unwritten goes again on a new one;
//! an idempotent bodiless request written on a connection that then closed
//! before any response byte goes once more too ([`reused`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::time::Instant;

use http_body::Body as _;

use super::respond::ProxyError;
use super::{RequestBody, Version};
use crate::identity::SpiffeId;
use crate::policy::reused;
use crate::transport::tls::{TlsTarget, connect_upstream};

/// Idle HTTP/1 connections kept per address; more are closed when released.
const MAX_IDLE_PER_ENDPOINT: usize = 64;

#[derive(Clone, Debug)]
pub struct Pool {
    inner: Arc<Inner>,
}

/// A request that failed, and the request itself when it was never
/// written (no connection, or one that closed before taking it): that one
/// can go again, on any method, with its body untouched.
#[derive(Debug)]
pub struct SendError {
    pub error: ProxyError,
    pub unsent: Option<Request<RequestBody>>,
}

impl SendError {
    /// A failure after the request was (or may have been) written.
    fn sent(error: ProxyError) -> Self {
        Self { error, unsent: None }
    }
}

/// What a pooled connection is: where it goes and whom it verified there.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    addr: SocketAddr,
    /// The server identity checked in the TLS handshake; `None`: plaintext.
    identity: Option<SpiffeId>,
}

impl Key {
    fn new(addr: SocketAddr, tls: Option<&TlsTarget>) -> Self {
        Self { addr, identity: tls.map(|t| t.expected.clone()) }
    }
}

#[derive(Debug)]
struct Inner {
    connect_timeout: Duration,
    idle_timeout: Duration,
    h1: Mutex<HashMap<Key, Vec<Idle>>>,
    h2: Mutex<HashMap<Key, Shared>>,
}

/// A pooled HTTP/2 connection.
#[derive(Debug)]
struct Shared {
    tx: http2::SendRequest<RequestBody>,
    /// When a request last took it.
    used: Instant,
}

#[derive(Debug)]
struct Idle {
    tx: http1::SendRequest<RequestBody>,
    since: Instant,
}

impl Pool {
    /// Creates the pool and its idle sweeper (which ends with the pool).
    pub fn new(connect_timeout: Duration, idle_timeout: Duration) -> Self {
        let inner = Arc::new(Inner { connect_timeout, idle_timeout, h1: Mutex::default(), h2: Mutex::default() });
        tokio::spawn(sweep(Arc::downgrade(&inner), idle_timeout));
        Self { inner }
    }

    /// Sends `req` to `addr` over a pooled connection of `version` and
    /// returns the response head; its body streams from the upstream.
    pub async fn send(
        &self,
        addr: SocketAddr,
        version: Version,
        req: Request<RequestBody>,
        tls: Option<TlsTarget>,
    ) -> Result<Response<Incoming>, ProxyError> {
        self.try_send(addr, version, req, tls, None).await.map_err(|e| e.error)
    }

    /// [`Pool::send`], a new connection (if one is needed) given
    /// `connect_timeout` instead of the pool's (a policy's
    /// `timeouts.connect`); a request that was never written comes back
    /// with the error, whole, for another try.
    pub async fn try_send(
        &self,
        addr: SocketAddr,
        version: Version,
        req: Request<RequestBody>,
        tls: Option<TlsTarget>,
        connect_timeout: Option<Duration>,
    ) -> Result<Response<Incoming>, SendError> {
        let tls = tls.as_ref();
        let timeout = connect_timeout.unwrap_or(self.inner.connect_timeout);
        match version {
            Version::Http1 => self.send_h1(addr, req, tls, timeout).await,
            Version::Http2 => self.send_h2(addr, req, tls, timeout).await,
        }
    }

    async fn send_h1(
        &self,
        addr: SocketAddr,
        req: Request<RequestBody>,
        tls: Option<&TlsTarget>,
        timeout: Duration,
    ) -> Result<Response<Incoming>, SendError> {
        let key = Key::new(addr, tls);
        let mut copy = copy_for_resend(&req);
        let mut req = match self.checkout_h1(&key) {
            Some(mut tx) => match tx.try_send_request(req).await {
                Ok(rsp) => return Ok(self.release_after(key, tx, rsp)),
                // The upstream closed this idle connection just as we took it
                // (its keep-alive timeout, or it is draining). The request
                // was never written, so sending it on a new connection is
                // safe for any method.
                Err(mut e) => match e.take_message() {
                    Some(req) => {
                        tracing::debug!(%addr, error = %e.error(), "pooled connection was closed; reconnecting");
                        req
                    }
                    None => resend_or_fail(addr, e.into_error(), copy.take()).map_err(SendError::sent)?,
                },
            },
            None => req,
        };
        // At most twice: the copy goes with the first resend.
        loop {
            let mut tx = match self.connect_h1(addr, false, tls, timeout).await {
                Ok(tx) => tx,
                Err(error) => return Err(SendError { error, unsent: Some(req) }),
            };
            match tx.try_send_request(req).await {
                Ok(rsp) => return Ok(self.release_after(key, tx, rsp)),
                Err(mut e) => match e.take_message() {
                    Some(unsent) => {
                        return Err(SendError { unsent: Some(unsent), error: ProxyError::from_send(e.into_error()) });
                    }
                    None => req = resend_or_fail(addr, e.into_error(), copy.take()).map_err(SendError::sent)?,
                },
            }
        }
    }

    /// Returns the connection to the pool once `rsp`'s body has been
    /// consumed; until then HTTP/1 cannot carry another request on it.
    fn release_after(
        &self,
        key: Key,
        mut tx: http1::SendRequest<RequestBody>,
        rsp: Response<Incoming>,
    ) -> Response<Incoming> {
        let pool = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            if tx.ready().await.is_ok()
                && let Some(pool) = pool.upgrade()
            {
                pool.release_h1(key, tx);
            }
        });
        rsp
    }

    /// A fresh, unpooled HTTP/1 connection that supports protocol upgrades
    /// (WebSocket, CONNECT): it is consumed by the upgrade.
    pub async fn connect_for_upgrade(
        &self,
        addr: SocketAddr,
        tls: Option<&TlsTarget>,
    ) -> Result<http1::SendRequest<RequestBody>, ProxyError> {
        self.connect_h1(addr, true, tls, self.inner.connect_timeout).await
    }

    fn checkout_h1(&self, key: &Key) -> Option<http1::SendRequest<RequestBody>> {
        let mut pool = self.inner.h1.lock().unwrap_or_else(|p| p.into_inner());
        let idle = pool.get_mut(key)?;
        // Most recently used first: it is the least likely to have been
        // closed by the upstream's own idle timeout.
        while let Some(entry) = idle.pop() {
            if entry.tx.is_ready() && entry.since.elapsed() < self.inner.idle_timeout {
                return Some(entry.tx);
            }
        }
        None
    }

    async fn connect_h1(
        &self,
        addr: SocketAddr,
        upgrades: bool,
        tls: Option<&TlsTarget>,
        timeout: Duration,
    ) -> Result<http1::SendRequest<RequestBody>, ProxyError> {
        let io = connect_upstream(addr, timeout, tls).await?;
        let (tx, conn) = http1::Builder::new()
            .handshake(TokioIo::new(io))
            .await
            .map_err(|source| ProxyError::Handshake { addr, source })?;
        tokio::spawn(async move {
            let res = if upgrades { conn.with_upgrades().await } else { conn.await };
            if let Err(e) = res {
                tracing::debug!(%addr, error = %e, "upstream HTTP/1 connection ended");
            }
        });
        Ok(tx)
    }

    async fn send_h2(
        &self,
        addr: SocketAddr,
        req: Request<RequestBody>,
        tls: Option<&TlsTarget>,
        timeout: Duration,
    ) -> Result<Response<Incoming>, SendError> {
        let key = Key::new(addr, tls);
        let mut copy = copy_for_resend(&req);
        let cached = {
            let mut pool = self.inner.h2.lock().unwrap_or_else(|p| p.into_inner());
            pool.get_mut(&key).filter(|h2| !h2.tx.is_closed()).map(|h2| {
                h2.used = Instant::now();
                h2.tx.clone()
            })
        };
        let mut req = match cached {
            Some(mut tx) => match tx.try_send_request(req).await {
                Ok(rsp) => return Ok(rsp),
                // The shared connection went away (GOAWAY, reset) before this
                // request was sent: one more try on a fresh connection.
                Err(mut e) => match e.take_message() {
                    Some(req) => {
                        tracing::debug!(%addr, error = %e.error(), "HTTP/2 connection was closed; reconnecting");
                        req
                    }
                    None => resend_or_fail(addr, e.into_error(), copy.take()).map_err(SendError::sent)?,
                },
            },
            None => req,
        };
        // At most twice: the copy goes with the first resend.
        loop {
            let mut tx = match self.connect_h2(addr, tls, timeout).await {
                Ok(tx) => tx,
                Err(error) => return Err(SendError { error, unsent: Some(req) }),
            };
            let shared = Shared { tx: tx.clone(), used: Instant::now() };
            self.inner.h2.lock().unwrap_or_else(|p| p.into_inner()).insert(key.clone(), shared);
            match tx.try_send_request(req).await {
                Ok(rsp) => return Ok(rsp),
                Err(mut e) => match e.take_message() {
                    Some(unsent) => {
                        return Err(SendError { unsent: Some(unsent), error: ProxyError::from_send(e.into_error()) });
                    }
                    None => req = resend_or_fail(addr, e.into_error(), copy.take()).map_err(SendError::sent)?,
                },
            }
        }
    }

    async fn connect_h2(
        &self,
        addr: SocketAddr,
        tls: Option<&TlsTarget>,
        timeout: Duration,
    ) -> Result<http2::SendRequest<RequestBody>, ProxyError> {
        let io = connect_upstream(addr, timeout, tls).await?;
        let (tx, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(TokioIo::new(io))
            .await
            .map_err(|source| ProxyError::Handshake { addr, source })?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%addr, error = %e, "upstream HTTP/2 connection ended");
            }
        });
        Ok(tx)
    }

    /// Idle HTTP/1 connections currently pooled for `addr`, whatever their
    /// identity (for tests).
    pub fn idle_h1(&self, addr: SocketAddr) -> usize {
        let pool = self.inner.h1.lock().unwrap_or_else(|p| p.into_inner());
        pool.iter().filter(|(k, _)| k.addr == addr).map(|(_, idle)| idle.len()).sum()
    }
}

/// A copy of `req` (its head; its body is empty) to send once more if the
/// connection it is about to take closes under it: see [`reused`]. `None`
/// for requests that may not go twice.
fn copy_for_resend(req: &Request<RequestBody>) -> Option<Request<RequestBody>> {
    if !reused::keeps_copy(req.method(), req.body().size_hint().exact()) {
        return None;
    }
    let mut copy = Request::new(RequestBody::buffered(bytes::Bytes::new()));
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    Some(copy)
}

/// After a written request failed: its copy, to send on a new connection
/// when [`reused::resend_on_new_connection`] allows (once: the caller
/// hands the copy over only the first time), else the failure.
fn resend_or_fail(
    addr: SocketAddr,
    error: hyper::Error,
    copy: Option<Request<RequestBody>>,
) -> Result<Request<RequestBody>, ProxyError> {
    let failure = failure_of(&error);
    match copy {
        Some(copy) if reused::resend_on_new_connection(copy.method(), Some(0), failure) => {
            tracing::debug!(%addr, %error, "connection closed under an idempotent request; sending it again");
            Ok(copy)
        }
        _ => Err(ProxyError::from_send(error)),
    }
}

/// Whether `error` is the peer closing the connection (EOF, reset) or
/// something else.
fn failure_of(error: &hyper::Error) -> reused::Failure {
    if error.is_incomplete_message() || error.is_closed() {
        return reused::Failure::Closed;
    }
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && reused::is_closed_by_peer(io.kind())
        {
            return reused::Failure::Closed;
        }
        // A draining peer's GOAWAY, its REFUSED_STREAM, or the connection
        // under the stream breaking.
        if let Some(h2) = e.downcast_ref::<h2::Error>()
            && (h2.is_go_away() || h2.is_io() || h2.reason() == Some(h2::Reason::REFUSED_STREAM))
        {
            return reused::Failure::Closed;
        }
        source = e.source();
    }
    reused::Failure::Other
}

impl Inner {
    fn release_h1(&self, key: Key, tx: http1::SendRequest<RequestBody>) {
        let mut pool = self.h1.lock().unwrap_or_else(|p| p.into_inner());
        let idle = pool.entry(key).or_default();
        if idle.len() < MAX_IDLE_PER_ENDPOINT {
            idle.push(Idle { tx, since: Instant::now() });
        }
    }
}

/// Closes connections idle for longer than `idle_timeout`, so that a burst
/// does not keep sockets open forever, and lets go of HTTP/2 connections
/// no request took for as long. Ends when the pool is dropped.
async fn sweep(pool: Weak<Inner>, idle_timeout: Duration) {
    let period = (idle_timeout / 2).max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(period).await;
        let Some(pool) = pool.upgrade() else { return };
        {
            let mut h1 = pool.h1.lock().unwrap_or_else(|p| p.into_inner());
            for idle in h1.values_mut() {
                idle.retain(|e| e.since.elapsed() < idle_timeout && !e.tx.is_closed());
            }
            h1.retain(|_, idle| !idle.is_empty());
        }
        pool.h2
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, h2| h2.used.elapsed() < idle_timeout && !h2.tx.is_closed());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::net::TcpListener;

    use super::*;

    /// An h2c server on loopback answering 200; counts the connections it
    /// accepted, and those that have ended.
    async fn h2_server() -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (accepted, ended) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let counts = (accepted.clone(), ended.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                counts.0.fetch_add(1, Ordering::SeqCst);
                let ended = counts.1.clone();
                tokio::spawn(async move {
                    // `/slow`: ten 1-byte chunks 100 ms apart, a stream that
                    // outlasts the pool's idle timeout.
                    let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                        let chunks = if req.uri().path() == "/slow" { 10 } else { 0 };
                        let body = futures_util::stream::unfold(0, move |i| async move {
                            if i == chunks {
                                return None;
                            }
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            Some((
                                Ok::<_, std::convert::Infallible>(http_body::Frame::data(bytes::Bytes::from_static(
                                    b"x",
                                ))),
                                i + 1,
                            ))
                        });
                        Ok::<_, std::convert::Infallible>(Response::new(http_body_util::StreamBody::new(body)))
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                    ended.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        (addr, accepted, ended)
    }

    /// GET `path` through `pool` over HTTP/2: the status and the body.
    async fn get_path(pool: &Pool, addr: SocketAddr, path: &str) -> (u16, bytes::Bytes) {
        use http_body_util::BodyExt as _;
        let req = Request::get(path).body(RequestBody::buffered(bytes::Bytes::new())).expect("req");
        let rsp = pool.send(addr, Version::Http2, req, None).await.expect("response");
        let status = rsp.status().as_u16();
        (status, rsp.into_body().collect().await.expect("body").to_bytes())
    }

    async fn get(pool: &Pool, addr: SocketAddr) -> u16 {
        get_path(pool, addr, "/").await.0
    }

    #[tokio::test]
    async fn an_http2_connection_no_request_takes_is_let_go_after_the_idle_timeout() {
        let (addr, accepted, ended) = h2_server().await;
        let pool = Pool::new(Duration::from_secs(1), Duration::from_millis(300));
        assert_eq!((get(&pool, addr).await, get(&pool, addr).await), (200, 200));
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "two requests, one shared connection");
        // Before, the pool held it for ever (until the peer closed it).
        let idle_since = Instant::now();
        while ended.load(Ordering::SeqCst) == 0 {
            assert!(idle_since.elapsed() < Duration::from_secs(5), "the idle HTTP/2 connection was open after 5 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let idle_for = idle_since.elapsed();
        eprintln!("measured: let go after {idle_for:?} idle");
        assert!(idle_for >= Duration::from_millis(300), "let go after {idle_for:?}, before the idle timeout");
        assert_eq!(get(&pool, addr).await, 200);
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "the next request opens a new connection");
    }

    #[tokio::test]
    async fn a_stream_outlasting_the_idle_timeout_is_not_cut() {
        let (addr, accepted, _) = h2_server().await;
        let pool = Pool::new(Duration::from_secs(1), Duration::from_millis(300));
        // The pool lets go of the connection while the response streams (1 s
        // against 300 ms): the stream still ends whole.
        let (status, body) = get_path(&pool, addr, "/slow").await;
        assert_eq!((status, &body[..]), (200, &b"xxxxxxxxxx"[..]));
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }
}
