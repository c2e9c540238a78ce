//! The per-request middleware around each whole stack, as a tower layer:
//! it counts the request under its authority, and on the response records
//! the status and the time to response headers.
//!
//! ```text
//! hyper server ─► Record (this layer: weft_requests_total, weft_responses_total,
//!                 │        weft_response_latency_seconds)
//!                 └─► the direction's stack (inbound::http / outbound::http / explicit)
//! ```
//!
//! It wraps a stack, never a stage: the stages inside stay plain async code
//! that tests can call. Its future is a named, pinned struct, so the layer
//! adds no allocation per request; the stack below is boxed once per request
//! (one `async` body at the stage boundary). The trace layer opens each
//! request's server span here (`crate::trace`).
//!
//! Tap (`crate::tap`): when no one taps, a request costs one relaxed
//! atomic load more; when someone does, a request their match selects emits
//! RequestInit here, ResponseInit when the stack answers, and ResponseEnd
//! from the body ([`TapBody`]). The stage says who answered (outbound) or
//! asked (inbound) in an [`EdgePeer`] response extension, read here for
//! the edge metrics and tap.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::{Request, Response, header};
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower::{Layer, Service};

use super::ResponseBody;
use crate::metrics::{AuthorityStats, Direction, EdgePeer, Metrics, OTHER_AUTHORITY, UNKNOWN_PEER};
use crate::tap::{TapBody, TapConn, Tapped, Taps};
use crate::trace::{ServerSpan, Tracer};

/// Wraps a stack in [`Record`].
#[derive(Clone, Debug)]
pub struct RecordLayer {
    metrics: Arc<Metrics>,
    direction: Direction,
    trace: Tracer,
}

impl RecordLayer {
    pub fn new(metrics: Arc<Metrics>, direction: Direction, trace: Tracer) -> Self {
        Self { metrics, direction, trace }
    }
}

impl<S> Layer<S> for RecordLayer {
    type Service = Record<S>;

    fn layer(&self, inner: S) -> Record<S> {
        Record { inner, metrics: self.metrics.clone(), direction: self.direction, trace: self.trace.clone(), tap: None }
    }
}

/// A stack whose requests and responses are counted and timed.
#[derive(Clone, Debug)]
pub struct Record<S> {
    inner: S,
    metrics: Arc<Metrics>,
    direction: Direction,
    trace: Tracer,
    tap: Option<Arc<(Arc<Taps>, TapConn)>>,
}

impl<S> Record<S> {
    /// Makes this connection's requests tappable.
    pub fn tapped(mut self, taps: Arc<Taps>, conn: TapConn) -> Self {
        self.tap = Some(Arc::new((taps, conn)));
        self
    }
}

impl<S> Service<Request<Incoming>> for Record<S>
where
    S: Service<Request<Incoming>, Response = Response<ResponseBody>, Error = Infallible>,
{
    type Response = Response<TapBody>;
    type Error = Infallible;
    type Future = RecordFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Incoming>) -> Self::Future {
        let stats = self.metrics.authority(self.direction, authority(&req));
        stats.request();
        // Tap sees the request as the client sent it, before the trace
        // context is rewritten for the next hop.
        let tapped = match &self.tap {
            Some(tap) if tap.0.is_open() => tap.0.request(self.direction, &req, &tap.1),
            _ => None,
        };
        // The server span of this hop; one atomic load when tracing is off.
        let span = self.trace.server_span(self.direction, &mut req);
        RecordFuture {
            span,
            tapped,
            inner: self.inner.call(req),
            stats,
            metrics: self.metrics.clone(),
            direction: self.direction,
            start: Instant::now(),
        }
    }
}

pin_project! {
    /// The stack's future, recording the response when it is ready.
    pub struct RecordFuture<F> {
        #[pin]
        inner: F,
        span: Option<ServerSpan>,
        stats: Arc<AuthorityStats>,
        metrics: Arc<Metrics>,
        direction: Direction,
        start: Instant,
        tapped: Option<Box<Tapped>>,
    }
}

impl<F> Future for RecordFuture<F>
where
    F: Future<Output = Result<Response<ResponseBody>, Infallible>>,
{
    type Output = Result<Response<TapBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(mut rsp) = ready!(this.inner.poll(cx));
        let status = rsp.status().as_u16();
        let latency = this.start.elapsed();
        this.stats.response(status);
        this.metrics.record_latency(*this.direction, status, latency);
        if let Some(span) = this.span.take() {
            span.finish(status);
        }
        let edge = rsp.extensions_mut().remove::<EdgePeer>();
        if let Some(edge) = &edge {
            let peer = match (&edge.peer, *this.direction) {
                (Some(peer), Direction::Outbound) => &**peer,
                (None, Direction::Outbound) => UNKNOWN_PEER,
                (_, Direction::Inbound) => "",
            };
            this.metrics.edge(*this.direction, peer, edge.peer_id(), edge.tls()).response(status, latency);
        }
        let mut tapped = this.tapped.take();
        if let Some(t) = tapped.as_mut() {
            t.response(&rsp, edge.as_ref());
        }
        Poll::Ready(Ok(rsp.map(|body| TapBody::new(body, tapped))))
    }
}

/// The request's authority for metrics: the URI's (HTTP/2, absolute-form)
/// or the Host header's, else "other".
fn authority(req: &Request<Incoming>) -> &str {
    if let Some(a) = req.uri().authority() {
        return a.as_str();
    }
    req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or(OTHER_AUTHORITY)
}
