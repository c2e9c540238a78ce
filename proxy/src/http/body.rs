//! Bodies of requests sent upstream: the downstream's, streamed once; a
//! buffered copy a retry can send again; or a streamed body teed frame by
//! frame to a `RequestMirror`, and the mirror's copy.
//!
//! The tee never slows the real request: it hands each frame to the copy
//! without waiting, and gives the copy up (the mirror request then fails)
//! when more than [`MAX_MIRROR_QUEUED`] bytes wait for a mirror that is
//! slower than the backend, or when the real body fails. So a mirror of a
//! large upload holds a bounded amount of memory, whatever the shadow
//! service does.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::sync::mpsc;

/// Bytes the tee holds for one mirror copy at most before giving it up.
pub const MAX_MIRROR_QUEUED: usize = 256 * 1024;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body on its way upstream.
#[derive(Debug)]
pub enum RequestBody {
    /// The downstream's body, streamed once.
    Streamed(Incoming),
    /// A body the proxy holds whole.
    Buffered(Full<Bytes>),
    /// The downstream's body, copied to a mirror as it streams.
    Teed(Tee<Incoming>),
    /// A mirror's copy of a teed body.
    Mirrored(MirrorCopy),
}

impl RequestBody {
    pub fn buffered(bytes: Bytes) -> Self {
        Self::Buffered(Full::new(bytes))
    }
}

impl From<Incoming> for RequestBody {
    fn from(body: Incoming) -> Self {
        Self::Streamed(body)
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Streamed(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Self::Buffered(b) => Pin::new(b).poll_frame(cx).map_err(|never| match never {}),
            Self::Teed(b) => Pin::new(b).poll_frame(cx),
            Self::Mirrored(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Streamed(b) => b.is_end_stream(),
            Self::Buffered(b) => b.is_end_stream(),
            Self::Teed(b) => b.is_end_stream(),
            Self::Mirrored(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Streamed(b) => b.size_hint(),
            Self::Buffered(b) => b.size_hint(),
            Self::Teed(b) => b.size_hint(),
            Self::Mirrored(b) => b.size_hint(),
        }
    }
}

/// What the tee and the copy share.
#[derive(Debug)]
struct Shared {
    /// Bytes sent to the copy and not yet read by it.
    queued: AtomicUsize,
    /// The original body ended normally: the copy is whole.
    complete: AtomicBool,
    /// The original body's size hint, for the copy's.
    size: SizeHint,
}

/// `B`, each frame also handed to a [`MirrorCopy`].
#[derive(Debug)]
pub struct Tee<B> {
    inner: B,
    /// `None` once the copy is given up or finished.
    tx: Option<mpsc::UnboundedSender<Frame<Bytes>>>,
    shared: Arc<Shared>,
}

/// Splits `body` into itself (sent as usual) and a copy for a mirror.
pub fn tee<B: Body>(body: B) -> (Tee<B>, MirrorCopy) {
    let (tx, rx) = mpsc::unbounded_channel();
    let shared =
        Arc::new(Shared { queued: AtomicUsize::new(0), complete: AtomicBool::new(false), size: body.size_hint() });
    let mut tee = Tee { inner: body, tx: Some(tx), shared: shared.clone() };
    // An empty body may never be polled at all.
    if tee.inner.is_end_stream() {
        tee.finish();
    }
    (tee, MirrorCopy { rx, shared, size_read: 0 })
}

impl<B> Tee<B> {
    /// The original ended: the copy is whole, unless it was given up on
    /// the way. (`complete` is set before the sender goes: the copy reads
    /// it once its channel has closed.)
    fn finish(&mut self) {
        if self.tx.take().is_some() {
            self.shared.complete.store(true, Ordering::Release);
        }
    }

    /// Hands a copy of `frame` to the mirror, or gives the mirror up when
    /// it has fallen too far behind (or went away).
    fn copy(&mut self, frame: &Frame<Bytes>) {
        let Some(tx) = &self.tx else { return };
        let (copy, len) = match (frame.data_ref(), frame.trailers_ref()) {
            (Some(data), _) => (Frame::data(data.clone()), data.len()),
            (None, Some(trailers)) => (Frame::trailers(trailers.clone()), 0),
            (None, None) => return,
        };
        let queued = self.shared.queued.fetch_add(len, Ordering::AcqRel) + len;
        if queued > MAX_MIRROR_QUEUED || tx.send(copy).is_err() {
            tracing::debug!(queued, "mirror copy given up: it fell behind the request or went away");
            self.tx = None;
        }
    }
}

impl<B> Body for Tee<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &polled {
            Some(Ok(frame)) => {
                this.copy(frame);
                // A body of known length ends with its last frame: hyper
                // does not poll it again for the end.
                if this.inner.is_end_stream() {
                    this.finish();
                }
            }
            Some(Err(_)) => this.tx = None,
            None => this.finish(),
        }
        Poll::Ready(polled.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A mirror's copy of a teed body: the same frames, or an error when the
/// original did not end normally or the copy fell behind.
#[derive(Debug)]
pub struct MirrorCopy {
    rx: mpsc::UnboundedReceiver<Frame<Bytes>>,
    shared: Arc<Shared>,
    size_read: u64,
}

/// Why a mirror's copy of a streamed body is incomplete.
#[derive(Debug, thiserror::Error)]
#[error("the mirrored request's body is incomplete: the original failed, or the mirror fell behind it")]
pub struct CopyIncomplete;

impl Body for MirrorCopy {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match std::task::ready!(this.rx.poll_recv(cx)) {
            Some(frame) => {
                let len = frame.data_ref().map_or(0, Bytes::len);
                this.shared.queued.fetch_sub(len, Ordering::AcqRel);
                this.size_read += len as u64;
                Poll::Ready(Some(Ok(frame)))
            }
            None if this.shared.complete.load(Ordering::Acquire) => Poll::Ready(None),
            None => Poll::Ready(Some(Err(CopyIncomplete.into()))),
        }
    }

    fn size_hint(&self) -> SizeHint {
        // The original's length, less what this copy has already read.
        let mut hint = SizeHint::new();
        hint.set_lower(self.shared.size.lower().saturating_sub(self.size_read));
        if let Some(upper) = self.shared.size.upper() {
            hint.set_upper(upper.saturating_sub(self.size_read));
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt as _, StreamBody};

    type Frames = futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, BoxError>>>;

    /// A body of these chunks (dropping it before its end leaves the copy
    /// incomplete, as a failed request does).
    fn chunks(parts: &[&'static [u8]]) -> StreamBody<Frames> {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> =
            parts.iter().map(|p| Ok(Frame::data(Bytes::from_static(p)))).collect();
        StreamBody::new(futures_util::stream::iter(frames))
    }

    #[tokio::test]
    async fn the_copy_gets_every_frame_of_a_body_that_ends() {
        let (tee, copy) = tee(chunks(&[b"hello ", b"mirrored ", b"world"]));
        let original = tee.collect().await.expect("the original").to_bytes();
        assert_eq!(original, Bytes::from_static(b"hello mirrored world"));
        let copied = copy.collect().await.expect("the copy is complete").to_bytes();
        assert_eq!(copied, original);
    }

    #[tokio::test]
    async fn a_body_of_known_length_is_whole_after_its_last_frame() {
        // hyper stops polling a body once `is_end_stream` says so.
        let (mut original, copy) = tee(Full::new(Bytes::from_static(b"known length")));
        let frame = original.frame().await.expect("a frame").expect("data");
        assert_eq!(frame.into_data().unwrap(), Bytes::from_static(b"known length"));
        assert!(original.is_end_stream());
        drop(original);
        let copied = copy.collect().await.expect("the copy is complete").to_bytes();
        assert_eq!(copied, Bytes::from_static(b"known length"));

        // An empty body (a GET) may never be polled at all.
        let (original, copy) = tee(Full::new(Bytes::new()));
        drop(original);
        assert!(copy.collect().await.expect("an empty copy is complete").to_bytes().is_empty());
    }

    #[tokio::test]
    async fn the_copy_fails_when_the_original_is_dropped_before_its_end() {
        let (mut tee, copy) = tee(chunks(&[b"first", b"second"]));
        let first = tee.frame().await.expect("a frame").expect("data");
        assert_eq!(first.into_data().unwrap(), Bytes::from_static(b"first"));
        drop(tee);
        let err = copy.collect().await.expect_err("an incomplete copy is an error");
        assert!(err.to_string().contains("incomplete"), "{err}");
    }

    #[tokio::test]
    async fn a_copy_that_falls_behind_is_given_up_and_the_original_goes_on() {
        static CHUNK: [u8; 64 * 1024] = [7; 64 * 1024];
        let parts: Vec<&'static [u8]> = vec![&CHUNK; 8];
        let (tee, copy) = tee(chunks(&parts));
        // Nobody reads the copy while the original streams 512 KiB.
        let original = tee.collect().await.expect("the original").to_bytes();
        assert_eq!(original.len(), 8 * 64 * 1024);
        let err = copy.collect().await.expect_err("the copy was given up");
        assert!(err.to_string().contains("fell behind"), "{err}");
    }
}
