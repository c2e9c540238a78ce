//! An I/O stream that first replays bytes already read from it.
//!
//! Protocol detection reads the first bytes of a connection; the protocol
//! that then takes over must see them again, so they are served from the
//! prefix before reading from the socket resumes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pin_project_lite::pin_project! {
    #[derive(Debug)]
    pub struct PrefixedIo<T> {
        prefix: Bytes,
        #[pin]
        io: T,
    }
}

impl<T> PrefixedIo<T> {
    pub fn new(prefix: Bytes, io: T) -> Self {
        Self { prefix, io }
    }

    pub fn get_ref(&self) -> &T {
        &self.io
    }
}

impl<T: AsyncRead> AsyncRead for PrefixedIo<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        if this.prefix.has_remaining() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            if !this.prefix.has_remaining() {
                // Release the detection buffer: a long-lived connection
                // should not keep it.
                *this.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        this.io.poll_read(cx, buf)
    }
}

impl<T: AsyncWrite> AsyncWrite for PrefixedIo<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn prefix_is_replayed_before_the_stream() {
        let (mut a, b) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut a, b" world").await.expect("write");
        drop(a);
        let mut io = PrefixedIo::new(Bytes::from_static(b"hello"), b);
        let mut out = String::new();
        io.read_to_string(&mut out).await.expect("read");
        assert_eq!(out, "hello world");
    }
}
