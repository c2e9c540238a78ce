//! Opaque TCP: a bidirectional splice with half-close, buffers that exist
//! only while bytes are in flight, and an idle timeout.
//!
//! One future drives both directions over the two streams themselves (no
//! `split`: no Arc, no lock per poll). Each direction reads into a buffer
//! on the stack (256 bytes) and writes straight from it; only what the writer does not
//! take at once, or a read that filled the stack buffer (a bulk transfer),
//! moves to a heap buffer, which grows fourfold on each read that fills it,
//! up to 64 KiB. When a read finds nothing and nothing is left to write,
//! the heap buffer is released: an idle connection holds no copy buffer at
//! all (issue #14: memory per idle connection; before, each direction kept
//! its grown buffer for the connection's life). When one side sends EOF,
//! the other side's write half is shut down (FIN forwarded) and the
//! opposite direction keeps flowing: half-close is preserved.

use std::future::{Future as _, poll_fn};
use std::io;
use std::mem::MaybeUninit;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// The stack buffer of a read, and so the largest message relayed with no
/// heap buffer at all. Small: a debug build initialises it on every poll
/// (most polls find nothing to read), and at 4 KiB that cost 17 % more
/// instructions per echo than the split-based splice before it (the
/// callgrind bar, bench/tests/callgrind.rs); at 256 bytes the count is 7–11 %
/// below that. Larger messages take the heap path, which starts at 1 KiB.
const STACK_BUFFER: usize = 256;
const LARGE_BUFFER: usize = 64 * 1024;
/// Factor by which a heap buffer that a read filled grows.
const GROWTH: usize = 4;

/// Bytes moved in each direction.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Transferred {
    pub downstream_to_upstream: u64,
    pub upstream_to_downstream: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SpliceError {
    #[error("no bytes in either direction for {0:?}")]
    Idle(Duration),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Copies both ways until both sides have closed, either fails, or nothing
/// moves for `idle`.
pub async fn splice<D, U>(mut downstream: D, mut upstream: U, idle: Duration) -> Result<Transferred, SpliceError>
where
    D: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (mut d2u, mut u2d) = (Half::default(), Half::default());
    let mut last = Instant::now();
    let mut sleep = pin!(tokio::time::sleep(idle));
    poll_fn(|cx| {
        let mut moved = false;
        let down = d2u.poll(cx, &mut downstream, &mut upstream, &mut moved)?;
        let up = u2d.poll(cx, &mut upstream, &mut downstream, &mut moved)?;
        if down.is_ready() && up.is_ready() {
            return Poll::Ready(Ok(Transferred {
                downstream_to_upstream: d2u.total,
                upstream_to_downstream: u2d.total,
            }));
        }
        if moved {
            last = Instant::now();
        }
        // The timer is re-armed only when it fires early, not per byte.
        while sleep.as_mut().poll(cx).is_ready() {
            let deadline = last + idle;
            if Instant::now() >= deadline {
                return Poll::Ready(Err(SpliceError::Idle(idle)));
            }
            sleep.as_mut().reset(deadline);
        }
        Poll::Pending
    })
    .await
}

/// One direction of a splice.
#[derive(Debug, Default)]
struct Half {
    /// Bytes read and not yet all written (`written..len`); empty, with no
    /// capacity, whenever nothing is in flight between reads.
    buf: BytesMut,
    written: usize,
    /// The last heap read filled `buf`: give the next one more room.
    grow: bool,
    /// Written and not yet flushed.
    flush: bool,
    /// The reader sent EOF.
    eof: bool,
    /// EOF forwarded: this direction is over.
    done: bool,
    total: u64,
}

impl Half {
    /// Moves what `r` has to `w`; ready once `r` has sent EOF and it was
    /// forwarded to `w`. Sets `moved` when a byte was read.
    fn poll<R, W>(&mut self, cx: &mut Context<'_>, r: &mut R, w: &mut W, moved: &mut bool) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        loop {
            // What is buffered goes out first.
            while self.written < self.buf.len() {
                let n = ready!(Pin::new(&mut *w).poll_write(cx, &self.buf[self.written..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.written += n;
            }
            if self.flush {
                ready!(Pin::new(&mut *w).poll_flush(cx))?;
                self.flush = false;
            }
            if self.eof {
                // Forward the FIN; the other direction may still be
                // talking. A peer already gone makes this fail harmlessly.
                let _ = ready!(Pin::new(&mut *w).poll_shutdown(cx));
                self.done = true;
                return Poll::Ready(Ok(()));
            }
            if self.buf.capacity() == 0 {
                ready!(self.poll_relay_small(cx, r, w, moved))?;
            } else {
                ready!(self.poll_read_heap(cx, r, moved))?;
            }
        }
    }

    /// Reads into the stack and writes from it; keeps on the heap only
    /// what the writer did not take, or makes room there when the read
    /// filled the stack buffer.
    fn poll_relay_small<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        r: &mut R,
        w: &mut W,
        moved: &mut bool,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        // Uninitialised: tokio's ReadBuf tracks what the read filled.
        let mut stack = [MaybeUninit::<u8>::uninit(); STACK_BUFFER];
        let mut read = ReadBuf::uninit(&mut stack);
        ready!(Pin::new(&mut *r).poll_read(cx, &mut read))?;
        let stack = read.filled();
        let n = stack.len();
        if n == 0 {
            self.eof = true;
            return Poll::Ready(Ok(()));
        }
        *moved = true;
        self.total += n as u64;
        self.flush = true;
        let mut off = 0;
        while off < n {
            match Pin::new(&mut *w).poll_write(cx, &stack[off..n]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(k)) => off += k,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => break,
            }
        }
        let full = n == STACK_BUFFER;
        if off < n || full {
            let room = if full { STACK_BUFFER * GROWTH } else { n - off };
            self.buf.reserve(room.max(n - off));
            self.buf.extend_from_slice(&stack[off..n]);
            self.written = 0;
        }
        Poll::Ready(Ok(()))
    }

    /// Reads into the (drained) heap buffer; releases it when there is
    /// nothing to read.
    fn poll_read_heap<R>(&mut self, cx: &mut Context<'_>, r: &mut R, moved: &mut bool) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin,
    {
        let capacity = self.buf.capacity();
        self.buf.clear();
        self.written = 0;
        if std::mem::take(&mut self.grow) {
            self.buf.reserve((capacity * GROWTH).min(LARGE_BUFFER));
        }
        let room = self.buf.capacity();
        match tokio_util::io::poll_read_buf(Pin::new(&mut *r), cx, &mut self.buf) {
            Poll::Pending => {
                // Nothing in flight: an idle stream holds no buffer.
                self.buf = BytesMut::new();
                Poll::Pending
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Ready(Ok(0)) => {
                self.buf = BytesMut::new();
                self.eof = true;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Ok(n)) => {
                *moved = true;
                self.total += n as u64;
                self.flush = true;
                self.grow = n == room && room < LARGE_BUFFER;
                Poll::Ready(Ok(()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    #[tokio::test]
    async fn copies_both_ways_and_preserves_half_close() {
        let (mut client, down) = tokio::io::duplex(1024);
        let (up, mut server) = tokio::io::duplex(1024);
        let task = tokio::spawn(splice(down, up, Duration::from_secs(10)));

        let big = vec![7u8; 300 * 1024];
        let big2 = big.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&big2).await.expect("write");
            client.shutdown().await.expect("shutdown");
            // After our FIN, the server can still answer.
            let mut answer = Vec::new();
            client.read_to_end(&mut answer).await.expect("read");
            answer
        });
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.expect("server read");
        assert_eq!(got.len(), big.len());
        server.write_all(b"done").await.expect("server write");
        server.shutdown().await.expect("server shutdown");
        assert_eq!(writer.await.expect("writer"), b"done");
        let t = task.await.expect("join").expect("splice");
        assert_eq!(t.downstream_to_upstream, big.len() as u64);
        assert_eq!(t.upstream_to_downstream, 4);
    }

    /// After a request and its answer, with both sides quiet, neither
    /// direction holds a buffer; a bulk transfer grows one, and it goes
    /// once the sender pauses.
    #[tokio::test]
    async fn buffers_exist_only_while_bytes_are_in_flight() {
        let (mut client, mut down) = tokio::io::duplex(256 * 1024);
        let (mut up, mut server) = tokio::io::duplex(256 * 1024);
        let mut half = Half::default();
        let mut moved = false;
        let mut step = |half: &mut Half| {
            let waker = std::task::Waker::noop();
            let mut cx = Context::from_waker(waker);
            half.poll(&mut cx, &mut down, &mut up, &mut moved)
        };

        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.expect("write");
        assert!(step(&mut half).is_pending());
        assert_eq!(half.buf.capacity(), 0, "a small message is relayed from the stack");
        let mut got = vec![0u8; 18];
        server.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"GET / HTTP/1.1\r\n\r\n");

        let bulk = vec![9u8; 40 * 1024];
        client.write_all(&bulk).await.expect("write");
        assert!(step(&mut half).is_pending());
        assert_eq!(half.total, 18 + bulk.len() as u64);
        assert_eq!(half.buf.capacity(), 0, "released once the sender paused");
        let mut got = vec![0u8; bulk.len()];
        server.read_exact(&mut got).await.expect("read");
        assert_eq!(got, bulk);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connections_are_closed() {
        let (_client, down) = tokio::io::duplex(64);
        let (up, _server) = tokio::io::duplex(64);
        let start = Instant::now();
        let err = splice(down, up, Duration::from_secs(30)).await.expect_err("idle");
        assert!(matches!(err, SpliceError::Idle(_)));
        assert_eq!(start.elapsed(), Duration::from_secs(30));
    }
}
