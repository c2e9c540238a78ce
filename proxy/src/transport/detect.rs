//! Protocol detection: HTTP/2 prior knowledge, HTTP/1.x, or opaque TCP.
//!
//! One bounded read ([`DETECT_BUFFER`] bytes at most) with a deadline. The
//! bytes read are handed back so they can be replayed
//! ([`super::prefixed::PrefixedIo`]). A client that says nothing within the
//! deadline is treated as opaque: it may be waiting for a server that speaks
//! first (SMTP, MySQL), and stalling it longer would break that protocol.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Upper bound of bytes read before deciding. An HTTP/1 request line longer
/// than this is treated as opaque rather than buffered further.
pub const DETECT_BUFFER: usize = 1024;

/// RFC 9113 §3.4: the client connection preface.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
    Opaque,
}

/// How detection ended; each outcome is counted in `weft_detect_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Http1,
    Http2,
    /// The first bytes are not HTTP.
    Opaque,
    /// Nothing conclusive arrived before the deadline.
    Timeout,
    /// The port is configured opaque; nothing was read.
    OpaquePort,
    /// The client closed before sending a byte: nothing to forward.
    Closed,
}

impl Outcome {
    pub fn protocol(self) -> Protocol {
        match self {
            Outcome::Http1 => Protocol::Http1,
            Outcome::Http2 => Protocol::Http2,
            Outcome::Opaque | Outcome::Timeout | Outcome::OpaquePort | Outcome::Closed => Protocol::Opaque,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Http1 => "http1",
            Outcome::Http2 => "http2",
            Outcome::Opaque => "opaque",
            Outcome::Timeout => "timeout",
            Outcome::OpaquePort => "opaque_port",
            Outcome::Closed => "closed",
        }
    }
}

/// Reads the connection's first bytes until the protocol is known, the buffer
/// is full, the peer closes, or `timeout` passes. Returns the outcome and the
/// bytes read (to be replayed). I/O errors are returned as is.
/// [`detect`], unless `skip` (an opaque port, whose first bytes need not be
/// read: server-speaks-first protocols would stall): then
/// [`Outcome::OpaquePort`] with nothing read.
pub async fn detect_unless<I: AsyncRead + Unpin>(
    io: &mut I,
    skip: bool,
    timeout: Duration,
) -> std::io::Result<(Outcome, BytesMut)> {
    if skip { Ok((Outcome::OpaquePort, BytesMut::new())) } else { detect(io, timeout).await }
}

pub async fn detect<I: AsyncRead + Unpin>(io: &mut I, timeout: Duration) -> std::io::Result<(Outcome, BytesMut)> {
    let mut buf = BytesMut::with_capacity(DETECT_BUFFER);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        // `read_buf` on a BytesMut never grows it past its capacity here
        // because we stop once it is full.
        let read = tokio::time::timeout_at(deadline, io.read_buf(&mut buf)).await;
        match read {
            Err(_elapsed) => return Ok((Outcome::Timeout, buf)),
            Ok(Err(e)) => return Err(e),
            Ok(Ok(0)) if buf.is_empty() => return Ok((Outcome::Closed, buf)),
            Ok(Ok(0)) => {
                let outcome = classify(&buf).unwrap_or(Outcome::Opaque);
                return Ok((outcome, buf));
            }
            Ok(Ok(_)) => {
                if let Some(outcome) = classify(&buf) {
                    return Ok((outcome, buf));
                }
                if buf.len() >= DETECT_BUFFER {
                    return Ok((Outcome::Opaque, buf));
                }
            }
        }
    }
}

/// Decides from a connection's first bytes; `None` means "need more bytes".
pub fn classify(buf: &[u8]) -> Option<Outcome> {
    if buf.is_empty() {
        return None;
    }
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] == H2_PREFACE[..n] {
        return if n == H2_PREFACE.len() { Some(Outcome::Http2) } else { None };
    }
    classify_http1(buf)
}

/// A method this long or longer is not HTTP (the longest registered one,
/// `UPDATEREDIRECTREF`, has 17 bytes): opaque without waiting for more.
const MAX_METHOD: usize = 32;

/// RFC 9112 §3: `method SP request-target SP HTTP-version CRLF`.
fn classify_http1(buf: &[u8]) -> Option<Outcome> {
    // The method is a token; a non-token byte before the first space means
    // this is not HTTP, and we can say so without waiting for the whole line.
    let method_end = match buf.iter().position(|&b| b == b' ') {
        Some(i) => i,
        None => {
            return if buf.iter().all(|&b| is_tchar(b)) && buf.len() < MAX_METHOD {
                None
            } else {
                Some(Outcome::Opaque)
            };
        }
    };
    // The length bound applies here too, or the outcome would depend on
    // whether the space came in the same read as the method's 32nd byte.
    if method_end == 0 || method_end >= MAX_METHOD || !buf[..method_end].iter().all(|&b| is_tchar(b)) {
        return Some(Outcome::Opaque);
    }
    let line_end = buf.iter().position(|&b| b == b'\n')?;
    let line = buf[..line_end].strip_suffix(b"\r").unwrap_or(&buf[..line_end]);
    let rest = &line[method_end + 1..];
    let Some(version_start) = rest.iter().rposition(|&b| b == b' ') else {
        return Some(Outcome::Opaque);
    };
    let target = &rest[..version_start];
    let version = &rest[version_start + 1..];
    let is_version = version.len() == 8 && version.starts_with(b"HTTP/1.") && version[7].is_ascii_digit();
    if target.is_empty() || !is_version {
        return Some(Outcome::Opaque);
    }
    Some(Outcome::Http1)
}

/// RFC 9110 §5.6.2 token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn classify_table() {
        let cases: &[(&[u8], Option<Outcome>)] = &[
            (b"", None),
            (b"G", None),
            (b"GET", None),
            (b"GET / HTTP/1.1\r\n", Some(Outcome::Http1)),
            (b"GET / HTTP/1.0\n", Some(Outcome::Http1)),
            (b"POST /upload?x=1 HTTP/1.1\r\nHost: a\r\n\r\n", Some(Outcome::Http1)),
            (b"CONNECT example:443 HTTP/1.1\r\n", Some(Outcome::Http1)),
            (b"OPTIONS * HTTP/1.1\r\n", Some(Outcome::Http1)),
            (b"GET /partial-line", None),
            (b"GET / HTTP/2.0\r\n", Some(Outcome::Opaque)),
            (b"GET / SMTP/1.1\r\n", Some(Outcome::Opaque)),
            (b"GET  HTTP/1.1\r\n", Some(Outcome::Opaque)),
            (b"GET\r\n", Some(Outcome::Opaque)),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Some(Outcome::Http2)),
            (b"PRI * HTTP/2.0\r\n", None),
            (b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n", Some(Outcome::Opaque)),
            (b"*1\r\n$4\r\nPING\r\n", Some(Outcome::Opaque)),
            (b"\x16\x03\x01\x02\x00", Some(Outcome::Opaque)),
            (b"\x00\x00\x00", Some(Outcome::Opaque)),
            (b" GET / HTTP/1.1\r\n", Some(Outcome::Opaque)),
            (b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", Some(Outcome::Opaque)),
        ];
        for (input, want) in cases {
            assert_eq!(classify(input), *want, "{:?}", String::from_utf8_lossy(input));
        }
    }

    /// Found by `fuzz/` (target `detect`, regression input
    /// `fuzz/regressions/detect/long-method`): a method of 32 bytes or
    /// more was opaque when its first 32 bytes arrived alone but HTTP/1
    /// when the whole line came in one read, so the outcome depended on how
    /// TCP cut the stream. Every prefix must decide as the whole does.
    #[test]
    fn a_long_method_is_opaque_however_the_bytes_arrive() {
        let line = [&[b'A'; 40][..], b" / HTTP/1.1\r\n"].concat();
        for cut in [32, 40, 41, line.len()] {
            assert_eq!(classify(&line[..cut]), Some(Outcome::Opaque), "first {cut} bytes");
        }
        let longest_http1 = [&[b'A'; 31][..], b" / HTTP/1.1\r\n"].concat();
        assert_eq!(classify(&longest_http1), Some(Outcome::Http1));
        assert_eq!(classify(&longest_http1[..31]), None);
    }

    #[tokio::test]
    async fn request_line_split_across_reads_is_http1() {
        let (mut client, mut server) = tokio::io::duplex(4096);
        let task = tokio::spawn(async move {
            client.write_all(b"GET /a ").await.expect("write");
            tokio::task::yield_now().await;
            client.write_all(b"HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("write");
            client
        });
        let (outcome, buf) = detect(&mut server, Duration::from_secs(5)).await.expect("detect");
        assert_eq!(outcome, Outcome::Http1);
        assert!(buf.starts_with(b"GET /a HTTP/1.1\r\n"));
        drop(task.await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_times_out_as_opaque() {
        let (_client, mut server) = tokio::io::duplex(64);
        let (outcome, buf) = detect(&mut server, Duration::from_secs(1)).await.expect("detect");
        assert_eq!(outcome, Outcome::Timeout);
        assert!(buf.is_empty());
    }

    #[tokio::test]
    async fn detection_reads_at_most_the_buffer() {
        let (mut client, mut server) = tokio::io::duplex(8192);
        // A token-only stream with no space or newline: undecidable until the
        // bound, then opaque with everything read replayable.
        client.write_all(&[b'x'; 4000]).await.expect("write");
        let (outcome, buf) = detect(&mut server, Duration::from_secs(5)).await.expect("detect");
        assert_eq!(outcome, Outcome::Opaque);
        assert!(buf.len() <= DETECT_BUFFER, "{}", buf.len());
    }

    #[tokio::test]
    async fn a_client_that_closes_without_a_byte_is_closed() {
        let (client, mut server) = tokio::io::duplex(64);
        drop(client);
        let (outcome, buf) = detect(&mut server, Duration::from_secs(5)).await.expect("detect");
        assert_eq!(outcome, Outcome::Closed);
        assert!(buf.is_empty());
    }

    #[tokio::test]
    async fn eof_before_a_decision_is_opaque() {
        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(b"GE").await.expect("write");
        drop(client);
        let (outcome, buf) = detect(&mut server, Duration::from_secs(5)).await.expect("detect");
        assert_eq!(outcome, Outcome::Opaque);
        assert_eq!(&buf[..], b"GE");
    }
}
