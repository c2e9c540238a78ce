//! Counts downstream connections and the bytes read from and written to
//! them into the TCP metrics. One relaxed atomic add per I/O call.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{Direction, Metrics, ProtocolLabel};
use crate::transport::detect::Protocol;
use crate::transport::prefixed::PrefixedIo;

pin_project_lite::pin_project! {
    pub struct CountedIo<T> {
        #[pin]
        io: T,
        metrics: Arc<Metrics>,
        direction: Direction,
        protocol: ProtocolLabel,
    }
}

impl<T> CountedIo<T> {
    pub fn new(io: T, metrics: Arc<Metrics>, direction: Direction, protocol: ProtocolLabel) -> Self {
        Self { io, metrics, direction, protocol }
    }
}

impl<T: AsyncRead> AsyncRead for CountedIo<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let res = this.io.poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            this.metrics.tcp(*this.direction, *this.protocol).read_bytes.fetch_add(n as u64, Relaxed);
        }
        res
    }
}

impl<T: AsyncWrite> AsyncWrite for CountedIo<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.project();
        let res = this.io.poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = res {
            this.metrics.tcp(*this.direction, *this.protocol).write_bytes.fetch_add(n as u64, Relaxed);
        }
        res
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let res = this.io.poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = res {
            this.metrics.tcp(*this.direction, *this.protocol).write_bytes.fetch_add(n as u64, Relaxed);
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}

/// A detected downstream connection as the metrics see it: opened (with
/// the bytes detection already read) when made, closed when dropped, so
/// that every way out of a connection's task closes it exactly once.
#[derive(Debug)]
pub struct OpenConnection {
    metrics: Arc<Metrics>,
    direction: Direction,
    protocol: ProtocolLabel,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.metrics.tcp(self.direction, self.protocol).close_connection();
    }
}

/// Counts a connection to be served as `protocol` and wraps `io` so that
/// the `prefix` detection read is replayed and every later byte is counted.
pub fn open<I>(
    io: I,
    prefix: bytes::Bytes,
    metrics: &Arc<Metrics>,
    direction: Direction,
    protocol: Protocol,
) -> (PrefixedIo<CountedIo<I>>, OpenConnection) {
    let label = match protocol {
        Protocol::Http1 => ProtocolLabel::Http1,
        Protocol::Http2 => ProtocolLabel::Http2,
        Protocol::Opaque => ProtocolLabel::Opaque,
    };
    let counters = metrics.tcp(direction, label);
    counters.open_connection();
    counters.read_bytes.fetch_add(prefix.len() as u64, Relaxed);
    let io = PrefixedIo::new(prefix, CountedIo::new(io, metrics.clone(), direction, label));
    (io, OpenConnection { metrics: metrics.clone(), direction, protocol: label })
}
