//! A response body that ends with an error when its upstream sends nothing
//! for the policy's `timeouts.idle`: a stalled stream frees the client and
//! the connection instead of holding them until the peer gives up.
//!
//! The clock is read once per frame; the timer is armed once and moved only
//! when it fires early (a frame arrived since), so a busy stream costs no
//! timer operations per frame. Without an idle timeout the wrapper passes
//! frames through and allocates nothing.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::metrics::Metrics;

/// The upstream sent nothing for the idle timeout.
#[derive(Debug, thiserror::Error)]
#[error("the upstream's response body sent nothing for {0:?} (the traffic policy's idle timeout)")]
pub struct IdleTimedOut(pub Duration);

/// `B`, cut off after `idle` without a frame.
#[derive(Debug)]
pub struct IdleBody<B> {
    inner: B,
    idle: Option<Idle>,
}

#[derive(Debug)]
struct Idle {
    timeout: Duration,
    last: Instant,
    timer: Pin<Box<Sleep>>,
    /// Counts the cut (`weft_timeouts_total{kind="idle"}`).
    metrics: Arc<Metrics>,
}

impl<B> IdleBody<B> {
    /// Wraps `inner`; `None` never times out.
    pub fn new(inner: B, timeout: Option<(Duration, &Arc<Metrics>)>) -> Self {
        let idle = timeout.map(|(timeout, metrics)| {
            let last = Instant::now();
            let timer = Box::pin(tokio::time::sleep_until(last + timeout));
            Idle { timeout, last, timer, metrics: metrics.clone() }
        });
        Self { inner, idle }
    }
}

impl<B> Body for IdleBody<B>
where
    B: Body + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = B::Data;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            if let Some(idle) = &mut this.idle {
                idle.last = Instant::now();
            }
            return Poll::Ready(frame.map(|r| r.map_err(Into::into)));
        }
        let Some(idle) = &mut this.idle else { return Poll::Pending };
        loop {
            ready!(idle.timer.as_mut().poll(cx));
            let deadline = idle.last + idle.timeout;
            if Instant::now() >= deadline {
                idle.metrics.policy.idle_timeouts.fetch_add(1, Relaxed);
                tracing::debug!(timeout = ?idle.timeout, "response body idle: cut");
                return Poll::Ready(Some(Err(IdleTimedOut(idle.timeout).into())));
            }
            // A frame came since the timer was set: wait from that frame.
            idle.timer.as_mut().reset(deadline);
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::BodyExt as _;
    use tokio::sync::mpsc;

    /// A body fed by a channel: frames arrive when the test sends them.
    struct Chunks(mpsc::Receiver<Bytes>);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
        }
    }

    fn channel() -> (mpsc::Sender<Bytes>, Chunks) {
        let (tx, rx) = mpsc::channel(4);
        (tx, Chunks(rx))
    }

    #[tokio::test(start_paused = true)]
    async fn frames_closer_than_the_timeout_keep_the_body_alive_and_a_stall_ends_it() {
        let (tx, body) = channel();
        let metrics = Metrics::new();
        let mut body = IdleBody::new(body, Some((Duration::from_millis(300), &metrics)));
        tokio::spawn(async move {
            for i in 0..5u8 {
                tokio::time::sleep(Duration::from_millis(200)).await;
                tx.send(Bytes::from(vec![i])).await.unwrap();
            }
            // Then silence, with the sender still open.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop(tx);
        });
        let start = Instant::now();
        for i in 0..5u8 {
            let frame = body.frame().await.expect("a frame").expect("not timed out");
            assert_eq!(frame.into_data().unwrap(), Bytes::from(vec![i]));
        }
        let err = body.frame().await.expect("an error frame").expect_err("the stall is cut");
        assert!(err.to_string().contains("300ms"), "{err}");
        // Five frames 200 ms apart, then 300 ms of silence.
        assert_eq!(start.elapsed(), Duration::from_millis(1300));
        assert_eq!(metrics.policy.idle_timeouts.load(Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_timeout_a_slow_body_is_waited_for() {
        let (tx, body) = channel();
        let mut body = IdleBody::new(body, None);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(600)).await;
            tx.send(Bytes::from_static(b"late")).await.unwrap();
        });
        let frame = body.frame().await.expect("a frame").expect("no timeout");
        assert_eq!(frame.into_data().unwrap(), Bytes::from_static(b"late"));
        assert!(body.frame().await.is_none(), "the body ends when the sender does");
    }
}
