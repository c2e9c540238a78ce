//! Opaque TCP: a bidirectional splice with half-close, adaptive buffers and
//! an idle timeout.
//!
//! Each direction copies with its own buffer that starts empty (an idle
//! connection holds no copy buffer) and grows fourfold whenever a read fills
//! it, up to 64 KiB for bulk transfers — ztunnel's `copy.rs` idea, taken
//! further after the benchmark measured ~20 KB per idle connection. When one side
//! sends EOF, the other side's write half is shut down (FIN forwarded) and
//! the opposite direction keeps flowing: half-close is preserved.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

const LARGE_BUFFER: usize = 64 * 1024;
/// Factor by which a buffer that a read filled grows.
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
pub async fn splice<D, U>(downstream: D, upstream: U, idle: Duration) -> Result<Transferred, SpliceError>
where
    D: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (mut dr, mut dw) = tokio::io::split(downstream);
    let (mut ur, mut uw) = tokio::io::split(upstream);
    let activity = Activity::new();
    let copy =
        async { tokio::try_join!(copy_half(&mut dr, &mut uw, &activity), copy_half(&mut ur, &mut dw, &activity)) };
    tokio::select! {
        res = copy => {
            let (d2u, u2d) = res?;
            Ok(Transferred { downstream_to_upstream: d2u, upstream_to_downstream: u2d })
        }
        _ = activity.idle(idle) => Err(SpliceError::Idle(idle)),
    }
}

async fn copy_half<R, W>(r: &mut R, w: &mut W, activity: &Activity) -> io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // Empty until the first read asks for room (64 bytes): an idle
    // connection costs almost nothing; each read that fills the buffer
    // quadruples it, up to LARGE_BUFFER for bulk transfers.
    let mut buf = BytesMut::new();
    let mut total = 0u64;
    loop {
        let n = r.read_buf(&mut buf).await?;
        if n == 0 {
            // Forward the FIN; the other direction may still be talking.
            // A peer that already went away makes shutdown fail harmlessly.
            let _ = w.shutdown().await;
            return Ok(total);
        }
        w.write_all(&buf[..n]).await?;
        w.flush().await?;
        total += n as u64;
        activity.touch();
        let filled = buf.capacity();
        buf.clear();
        if n == filled && filled < LARGE_BUFFER {
            buf.reserve((filled * GROWTH).min(LARGE_BUFFER));
        }
    }
}

/// The time of the last byte moved, shared by both directions.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self { start: Instant::now(), last_ms: AtomicU64::new(0) }
    }

    fn touch(&self) {
        self.last_ms.store(self.start.elapsed().as_millis() as u64, Relaxed);
    }

    /// Resolves once nothing has moved for `idle`.
    async fn idle(&self, idle: Duration) {
        loop {
            let deadline = self.start + Duration::from_millis(self.last_ms.load(Relaxed)) + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

#[cfg(test)]
mod tests {
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
