//! When a downstream connection is closed for doing nothing: after
//! `keep_alive_timeout` with no request in flight, or (HTTP/1 only)
//! `header_read_timeout` after the first byte of a request head that never
//! completes (slow loris).
//!
//! HTTP/2 uses [`Tracked`] and [`Watch`] without [`ActivityIo`]: its
//! client sends frames between requests too (SETTINGS, PING), so bytes
//! arriving say nothing about a request, and hyper's HTTP/2 server has no
//! idle timeout at all: a connection with no stream was held for ever.
//!
//! hyper has only the second, and starts its clock whenever the connection
//! is ready for the next head, idle or not, so an idle kept-alive
//! connection was closed after the header read timeout (10 s). A client
//! pool that keeps connections longer (the peer proxy's, 90 s; Go's, 90 s)
//! then reuses one the proxy is closing: a new connection and handshake for
//! the next request, or, for a request that may not be sent twice, an error.
//! Here the two clocks are apart, and the keep-alive one is longer than the
//! proxies' own pool idle timeout, so of two proxies the client side closes
//! first.
//!
//! Three parties share an [`Activity`], all in the connection's task:
//! [`ActivityIo`] marks a head as started when bytes arrive while no
//! request is in flight; [`Tracked`] marks each request's arrival and, by a
//! guard in its response body, its end; [`Watch`] reads the phase after each
//! poll of the connection and keeps one timer for the phase's deadline.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// What a connection is doing, as far as its timeouts go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// No request in flight, no byte of the next one read.
    Idle,
    /// No request in flight, part of the next head read.
    Head,
    /// At least one request whose response has not ended.
    Busy,
}

/// Which clock ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// Idle for the keep-alive timeout: close gracefully.
    Idle,
    /// A head not complete within the header read timeout: close now.
    Head,
}

/// The two timeouts.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read: Duration,
    pub keep_alive: Duration,
}

/// When the phase entered at `since` times out, and how; `None`: never
/// (a request in flight is the request timeouts' business).
pub fn deadline(phase: Phase, since: Instant, limits: Limits) -> Option<(Instant, Expired)> {
    match phase {
        Phase::Idle => Some((since + limits.keep_alive, Expired::Idle)),
        Phase::Head => Some((since + limits.header_read, Expired::Head)),
        Phase::Busy => None,
    }
}

/// The connection's activity, written by [`ActivityIo`] and [`Tracked`].
#[derive(Debug, Default)]
pub struct Activity {
    /// Requests received so far: tells [`Watch`] that an idle phase it
    /// sees is a new one.
    requests: AtomicU64,
    /// Requests whose response body has not been dropped.
    busy: AtomicU32,
    /// Bytes arrived while idle.
    head: AtomicBool,
}

impl Activity {
    fn phase(&self) -> Phase {
        if self.busy.load(Relaxed) > 0 {
            Phase::Busy
        } else if self.head.load(Relaxed) {
            Phase::Head
        } else {
            Phase::Idle
        }
    }

    fn read_some(&self) {
        if self.busy.load(Relaxed) == 0 && !self.head.load(Relaxed) {
            self.head.store(true, Relaxed);
        }
    }

    fn request(&self) {
        self.requests.fetch_add(1, Relaxed);
        self.busy.fetch_add(1, Relaxed);
        self.head.store(false, Relaxed);
    }

    fn response_done(&self) {
        self.busy.fetch_sub(1, Relaxed);
    }
}

/// The downstream IO, marking when the bytes of a new head arrive.
#[derive(Debug)]
pub struct ActivityIo<I> {
    io: I,
    activity: Arc<Activity>,
}

impl<I> ActivityIo<I> {
    pub fn new(io: I, activity: Arc<Activity>) -> Self {
        Self { io, activity }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for ActivityIo<I> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.read_some();
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for ActivityIo<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A service that marks each request's arrival, and its end when its
/// response body is dropped (written out, or the connection gone).
#[derive(Debug, Clone)]
pub struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Tracked<S> {
    pub fn new(inner: S, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl<S, Req, B> tower::Service<Req> for Tracked<S>
where
    S: tower::Service<Req, Response = http::Response<B>>,
{
    type Response = http::Response<TrackedBody<B>>;
    type Error = S::Error;
    type Future = TrackedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        self.activity.request();
        // Made before the call: the request counts as in flight until its
        // response is done, or until the stack's future is dropped.
        let guard = Some(Guard(self.activity.clone()));
        TrackedFuture { inner: self.inner.call(req), guard }
    }
}

pin_project_lite::pin_project! {
    /// [`Tracked`]'s future: the stack's, with the guard moved into the
    /// response body.
    pub struct TrackedFuture<F> {
        #[pin]
        inner: F,
        guard: Option<Guard>,
    }
}

impl<F, B, E> Future for TrackedFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<TrackedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let rsp = std::task::ready!(this.inner.poll(cx))?;
        let guard = this.guard.take().expect("TrackedFuture polled after it completed");
        Poll::Ready(Ok(rsp.map(|inner| TrackedBody { inner, _guard: guard })))
    }
}

#[derive(Debug)]
struct Guard(Arc<Activity>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.response_done();
    }
}

/// A response body that ends its request's busy phase when dropped.
#[derive(Debug)]
pub struct TrackedBody<B> {
    inner: B,
    _guard: Guard,
}

impl<B: Body + Unpin> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The connection's one timer. Polled after the connection on each wake-up
/// of its task. With HTTP/1 it sees every phase change, because everything
/// that changes the phase happens inside that poll; with HTTP/2 a response
/// ends in the stream's own task, and the busy phase's periodic look (every
/// header read timeout) bounds how late the idle clock starts.
#[derive(Debug)]
pub struct Watch {
    activity: Arc<Activity>,
    limits: Limits,
    /// The phase and request count last seen, and when that phase began.
    seen: (Phase, u64),
    since: Instant,
    /// Armed at or before the current deadline; moved only when it fires
    /// early (the phase changed since), or when a deadline is earlier than
    /// the armed one, so a busy connection costs no timer work per request.
    timer: Pin<Box<Sleep>>,
}

impl Watch {
    pub fn new(activity: Arc<Activity>, limits: Limits) -> Self {
        let now = Instant::now();
        let seen = (activity.phase(), activity.requests.load(Relaxed));
        let first = deadline(seen.0, now, limits).map_or(now + limits.keep_alive, |(at, _)| at);
        Self { activity, limits, seen, since: now, timer: Box::pin(tokio::time::sleep_until(first)) }
    }

    /// Drives `conn` until it ends (`Err`, with its output) or the current
    /// phase times out (`Ok`), whichever comes first.
    pub async fn race<F: Future>(&mut self, mut conn: Pin<&mut F>) -> Result<Expired, F::Output> {
        std::future::poll_fn(|cx| {
            if let Poll::Ready(res) = conn.as_mut().poll(cx) {
                return Poll::Ready(Err(res));
            }
            self.poll_expired(cx).map(Ok)
        })
        .await
    }

    /// Ready when the current phase has lasted past its timeout.
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<Expired> {
        let now_seen = (self.activity.phase(), self.activity.requests.load(Relaxed));
        // A busy phase has no deadline, so no clock read: one fewer per
        // request (the phase that follows is dated when it is seen).
        if now_seen != self.seen {
            self.seen = now_seen;
            if now_seen.0 != Phase::Busy {
                self.since = Instant::now();
            }
            if let Some((at, _)) = deadline(self.seen.0, self.since, self.limits)
                && at < self.timer.deadline()
            {
                self.timer.as_mut().reset(at);
            }
        }
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let next = deadline(self.seen.0, self.since, self.limits);
            match next {
                Some((at, expired)) if at <= Instant::now() => return Poll::Ready(expired),
                Some((at, _)) => self.timer.as_mut().reset(at),
                // Busy: look again after the shorter timeout; the phase
                // that follows dates from when it was seen, at most that
                // late.
                None => self.timer.as_mut().reset(Instant::now() + self.limits.header_read),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { header_read: Duration::from_secs(10), keep_alive: Duration::from_secs(120) };

    #[test]
    fn each_phase_has_its_clock() {
        let t = Instant::now();
        let cases = [
            (Phase::Idle, Some((t + Duration::from_secs(120), Expired::Idle))),
            (Phase::Head, Some((t + Duration::from_secs(10), Expired::Head))),
            (Phase::Busy, None),
        ];
        for (phase, want) in cases {
            assert_eq!(deadline(phase, t, LIMITS), want, "{phase:?}");
        }
    }

    #[test]
    fn phases_follow_reads_requests_and_responses() {
        let a = Activity::default();
        assert_eq!(a.phase(), Phase::Idle);
        a.read_some();
        assert_eq!(a.phase(), Phase::Head);
        a.request();
        assert_eq!(a.phase(), Phase::Busy);
        // Bytes of the next request while one is in flight: still busy,
        // and idle (not mid-head) once the response is done.
        a.read_some();
        a.request();
        a.response_done();
        assert_eq!(a.phase(), Phase::Busy);
        a.response_done();
        assert_eq!(a.phase(), Phase::Idle);
        assert_eq!(a.requests.load(Relaxed), 2);
    }

    fn poll(w: &mut Watch) -> Poll<Expired> {
        let waker = std::task::Waker::noop();
        w.poll_expired(&mut Context::from_waker(waker))
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_lasts_the_keep_alive_timeout() {
        let a = Arc::new(Activity::default());
        let mut w = Watch::new(a.clone(), LIMITS);
        tokio::time::advance(Duration::from_secs(60)).await;
        // A request and its response: the idle clock starts again.
        a.read_some();
        assert_eq!(poll(&mut w), Poll::Pending);
        a.request();
        assert_eq!(poll(&mut w), Poll::Pending);
        a.response_done();
        assert_eq!(poll(&mut w), Poll::Pending);
        tokio::time::advance(Duration::from_secs(119)).await;
        assert_eq!(poll(&mut w), Poll::Pending, "past the header read timeout, idle");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(poll(&mut w), Poll::Ready(Expired::Idle));
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_must_finish_within_the_header_read_timeout() {
        let a = Arc::new(Activity::default());
        let mut w = Watch::new(a.clone(), LIMITS);
        tokio::time::advance(Duration::from_secs(30)).await;
        a.read_some();
        assert_eq!(poll(&mut w), Poll::Pending);
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(poll(&mut w), Poll::Pending);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(poll(&mut w), Poll::Ready(Expired::Head));
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_connection_never_expires() {
        let a = Arc::new(Activity::default());
        let mut w = Watch::new(a.clone(), LIMITS);
        a.request();
        assert_eq!(poll(&mut w), Poll::Pending);
        tokio::time::advance(Duration::from_secs(600)).await;
        assert_eq!(poll(&mut w), Poll::Pending);
        // Done: idle from when the watch saw it, not from when it began.
        a.response_done();
        assert_eq!(poll(&mut w), Poll::Pending);
        tokio::time::advance(Duration::from_secs(121)).await;
        assert_eq!(poll(&mut w), Poll::Ready(Expired::Idle));
    }

    #[tokio::test(start_paused = true)]
    async fn requests_seen_only_as_a_count_restart_the_idle_clock() {
        let a = Arc::new(Activity::default());
        let mut w = Watch::new(a.clone(), LIMITS);
        tokio::time::advance(Duration::from_secs(100)).await;
        // A whole exchange between two polls: the phase is idle both times.
        a.request();
        a.response_done();
        assert_eq!(poll(&mut w), Poll::Pending);
        tokio::time::advance(Duration::from_secs(100)).await;
        assert_eq!(poll(&mut w), Poll::Pending, "idle for 100 s since the exchange");
    }
}
