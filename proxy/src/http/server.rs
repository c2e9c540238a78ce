//! Serving one downstream connection with hyper, HTTP/1 or HTTP/2 as
//! detected. The server enforces the downstream limits: header size (431),
//! malformed requests (400), slow headers (closed), idle connections, HTTP/1
//! or HTTP/2 (closed after the keep-alive timeout, [`super::keep_alive`]),
//! and drains gracefully.

use std::convert::Infallible;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Version, keep_alive};
use crate::config::HttpConfig;
use crate::drain;
use crate::metrics::{Direction, Metrics};
use crate::tap::TapBody;

/// What the server needs to know about a downstream connection.
#[derive(Debug)]
pub struct Conn {
    pub version: Version,
    pub drain: drain::Watch,
    /// Where requests hyper refuses to parse are counted.
    pub metrics: Arc<Metrics>,
    pub direction: Direction,
}

/// Serves requests on `io`, each answered by `stack` (a direction's stack
/// wrapped in [`super::record::Record`]), until the client closes or
/// draining finishes.
pub async fn serve<I, S>(io: I, conn: Conn, stack: S, cfg: &HttpConfig)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<Request<Incoming>, Response = Response<TapBody>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    // Boxed: hyper's connection state is several KB, and a future is as
    // large as its largest state, so inline it would be paid by every
    // connection's task, opaque ones included (issue #14: an idle opaque
    // connection cost each proxy ~11 KB of task before this).
    Box::pin(serve_hyper(io, conn, stack, cfg)).await
}

async fn serve_hyper<I, S>(io: I, conn: Conn, stack: S, cfg: &HttpConfig)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<Request<Incoming>, Response = Response<TapBody>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let Conn { version, drain, metrics, direction } = conn;
    // Both versions close a connection idle for the keep-alive timeout.
    let activity = Arc::new(keep_alive::Activity::default());
    let limits = keep_alive::Limits { header_read: cfg.header_read_timeout, keep_alive: cfg.keep_alive_timeout };
    let mut watch = keep_alive::Watch::new(activity.clone(), limits);
    let service = TowerToHyperService::new(keep_alive::Tracked::new(stack, activity.clone()));
    let result = match version {
        Version::Http1 => {
            let io = TokioIo::new(keep_alive::ActivityIo::new(io, activity));
            // hyper's own header read timeout would start on idle
            // connections too: off, `watch` keeps both clocks.
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(None)
                .max_buf_size(cfg.max_header_bytes)
                .serve_connection(io, service)
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                ended = watch.race(conn.as_mut()) => match ended {
                    Err(res) => res,
                    // A slow loris: closed as hyper closed it.
                    Ok(keep_alive::Expired::Head) => {
                        tracing::debug!("request head not complete within the header read timeout; closing");
                        Ok(())
                    }
                    Ok(keep_alive::Expired::Idle) => {
                        conn.as_mut().graceful_shutdown();
                        conn.await
                    }
                },
                _ = drain.signaled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            }
        }
        Version::Http2 => {
            // Only the idle clock (no `ActivityIo`): between requests an
            // HTTP/2 client sends frames too (SETTINGS, PING), so there is
            // no "head" phase.
            let conn = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .max_header_list_size(u32::try_from(cfg.max_header_bytes).unwrap_or(u32::MAX))
                .serve_connection(TokioIo::new(io), service);
            tokio::pin!(conn);
            tokio::select! {
                ended = watch.race(conn.as_mut()) => match ended {
                    Err(res) => res,
                    // No stream for the keep-alive timeout: GOAWAY. hyper
                    // closes once the client has answered the PING that
                    // follows it; one that never answers is dropped after
                    // the header read timeout, the time any client has to
                    // finish what it started.
                    Ok(_) => {
                        conn.as_mut().graceful_shutdown();
                        match tokio::time::timeout(cfg.header_read_timeout, conn).await {
                            Ok(res) => res,
                            Err(_) => {
                                tracing::debug!("idle HTTP/2 client did not answer GOAWAY's PING; closing");
                                Ok(())
                            }
                        }
                    }
                },
                _ = drain.signaled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            }
        }
    };
    if let Err(e) = result {
        // hyper answers unparsable requests itself, before the service sees
        // them; they are responses of this proxy all the same.
        if let Some(status) = hyper_error_status(&e) {
            let stats = metrics.authority(direction, crate::metrics::OTHER_AUTHORITY);
            stats.request();
            stats.response(status);
        }
        tracing::debug!(error = %e, "downstream HTTP connection ended with an error");
    }
}

/// The status hyper's HTTP/1 server wrote for a request it refused to parse:
/// 431 for a head over `max_buf_size`, 400 for anything else malformed.
fn hyper_error_status(e: &hyper::Error) -> Option<u16> {
    if e.is_parse_too_large() {
        Some(431)
    } else if e.is_parse() {
        Some(400)
    } else {
        None
    }
}
