//! RESP2, the Redis serialization protocol, as far as the demo needs it: the
//! store parses commands and writes replies with it, the web app's client
//! writes commands and parses replies.
//!
//! Parsing is incremental: [`parse_frame`] and [`parse_command`] look at the
//! front of a buffer and either consume one whole frame or leave the buffer
//! untouched and return `Ok(None)` ("read more"), which is the normal case on
//! a socket and therefore costs no allocation. Every length is bounded before
//! anything is allocated, so a hostile peer cannot make us reserve memory it
//! has not sent. Spec: <https://redis.io/docs/latest/develop/reference/protocol-spec/>.

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};

/// Largest bulk string accepted (Redis allows 512 MiB; the demo needs bytes).
pub const MAX_BULK: usize = 64 << 20;
/// Largest number of elements in one array.
pub const MAX_ARRAY: usize = 1 << 20;
/// Longest line (simple string, error, integer, inline command) accepted.
pub const MAX_LINE: usize = 64 << 10;
/// Deepest array nesting accepted.
pub const MAX_DEPTH: usize = 8;

/// One RESP2 value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// `+OK`
    Simple(String),
    /// `-ERR message`
    Error(String),
    /// `:42`
    Integer(i64),
    /// `$3\r\nfoo`
    Bulk(Bytes),
    /// `$-1` (a missing key) or `*-1`.
    Null,
    /// `*2\r\n…`
    Array(Vec<Frame>),
}

/// Bytes that are not RESP. The connection cannot continue after one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("unknown frame type byte {0:#04x}")]
    UnknownType(u8),
    #[error("invalid length")]
    BadLength,
    #[error("invalid integer")]
    BadInteger,
    #[error("a bulk string is not followed by CRLF")]
    MissingCrlf,
    #[error("a line is longer than {MAX_LINE} bytes")]
    LineTooLong,
    #[error("a bulk string is longer than {MAX_BULK} bytes")]
    BulkTooLong,
    #[error("an array has more than {MAX_ARRAY} elements")]
    ArrayTooLong,
    #[error("arrays are nested deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("a simple string or error is not UTF-8")]
    NotUtf8,
    #[error("a command must be an array of bulk strings")]
    NotACommand,
    #[error("unbalanced quotes in an inline command")]
    UnbalancedQuotes,
}

/// Why a parse stopped: not enough bytes yet (normal), or bytes that are not RESP.
enum Stop {
    Incomplete,
    Invalid(ProtocolError),
}

impl From<ProtocolError> for Stop {
    fn from(e: ProtocolError) -> Self {
        Stop::Invalid(e)
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn byte(&mut self) -> Result<u8, Stop> {
        let b = *self.buf.get(self.pos).ok_or(Stop::Incomplete)?;
        self.pos += 1;
        Ok(b)
    }

    /// The bytes up to the next CRLF, which is consumed too.
    fn line(&mut self) -> Result<&'a [u8], Stop> {
        let rest = &self.buf[self.pos..];
        match rest.windows(2).position(|w| w == b"\r\n") {
            Some(end) if end > MAX_LINE => Err(ProtocolError::LineTooLong.into()),
            Some(end) => {
                self.pos += end + 2;
                Ok(&rest[..end])
            }
            None if rest.len() > MAX_LINE => Err(ProtocolError::LineTooLong.into()),
            None => Err(Stop::Incomplete),
        }
    }

    fn integer(&mut self) -> Result<i64, Stop> {
        let line = self.line()?;
        Ok(std::str::from_utf8(line).ok().and_then(|s| s.parse().ok()).ok_or(ProtocolError::BadInteger)?)
    }

    /// A length prefix: `None` for -1 (null), an error past `max`.
    fn length(&mut self, max: usize, too_long: ProtocolError) -> Result<Option<usize>, Stop> {
        match self.integer() {
            Ok(-1) => Ok(None),
            Ok(n) => {
                let n = usize::try_from(n).map_err(|_| ProtocolError::BadLength)?;
                if n > max {
                    return Err(too_long.into());
                }
                Ok(Some(n))
            }
            Err(Stop::Invalid(ProtocolError::BadInteger)) => Err(ProtocolError::BadLength.into()),
            Err(e) => Err(e),
        }
    }

    fn text(&mut self) -> Result<String, Stop> {
        let line = self.line()?;
        Ok(std::str::from_utf8(line).map_err(|_| ProtocolError::NotUtf8)?.to_owned())
    }

    fn frame(&mut self, depth: usize) -> Result<Frame, Stop> {
        match self.byte()? {
            b'+' => Ok(Frame::Simple(self.text()?)),
            b'-' => Ok(Frame::Error(self.text()?)),
            b':' => Ok(Frame::Integer(self.integer()?)),
            b'$' => {
                let Some(len) = self.length(MAX_BULK, ProtocolError::BulkTooLong)? else {
                    return Ok(Frame::Null);
                };
                let end = self.pos + len;
                if self.buf.len() < end + 2 {
                    return Err(Stop::Incomplete);
                }
                if &self.buf[end..end + 2] != b"\r\n" {
                    return Err(ProtocolError::MissingCrlf.into());
                }
                let bulk = Bytes::copy_from_slice(&self.buf[self.pos..end]);
                self.pos = end + 2;
                Ok(Frame::Bulk(bulk))
            }
            b'*' => {
                if depth >= MAX_DEPTH {
                    return Err(ProtocolError::TooDeep.into());
                }
                let Some(len) = self.length(MAX_ARRAY, ProtocolError::ArrayTooLong)? else {
                    return Ok(Frame::Null);
                };
                // Grow with what actually arrives, not with what the peer claims.
                let mut items = Vec::with_capacity(len.min(64));
                for _ in 0..len {
                    items.push(self.frame(depth + 1)?);
                }
                Ok(Frame::Array(items))
            }
            other => Err(ProtocolError::UnknownType(other).into()),
        }
    }
}

fn finish<T>(buf: &mut BytesMut, parsed: Result<(T, usize), Stop>) -> Result<Option<T>, ProtocolError> {
    match parsed {
        Ok((value, used)) => {
            buf.advance(used);
            Ok(Some(value))
        }
        Err(Stop::Incomplete) => Ok(None),
        Err(Stop::Invalid(e)) => Err(e),
    }
}

/// Takes one whole frame off the front of `buf`; `Ok(None)` if more bytes are needed.
pub fn parse_frame(buf: &mut BytesMut) -> Result<Option<Frame>, ProtocolError> {
    let mut cursor = Cursor { buf, pos: 0 };
    let parsed = cursor.frame(0).map(|f| (f, cursor.pos));
    finish(buf, parsed)
}

/// Takes one command off the front of `buf`: an array of bulk strings, or an
/// inline command (`PING\r\n`, as typed into telnet). Empty inline lines are
/// skipped, as Redis does.
pub fn parse_command(buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    loop {
        let Some(&first) = buf.first() else { return Ok(None) };
        let mut cursor = Cursor { buf, pos: 0 };
        let parsed = if first == b'*' {
            cursor.frame(0).and_then(|frame| {
                let Frame::Array(items) = frame else { return Err(ProtocolError::NotACommand.into()) };
                let args = items
                    .into_iter()
                    .map(|item| match item {
                        Frame::Bulk(b) => Ok(b),
                        _ => Err(Stop::Invalid(ProtocolError::NotACommand)),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((args, cursor.pos))
            })
        } else {
            cursor.line().and_then(|line| Ok((split_inline(line)?, cursor.pos)))
        };
        match finish(buf, parsed)? {
            Some(args) if args.is_empty() => continue,
            other => return Ok(other),
        }
    }
}

/// Splits an inline command on whitespace; double or single quotes group words.
fn split_inline(line: &[u8]) -> Result<Vec<Bytes>, ProtocolError> {
    let mut args = Vec::new();
    let mut current: Option<Vec<u8>> = None;
    let mut quote: Option<u8> = None;
    for &b in line {
        match (quote, b) {
            (Some(q), b) if b == q => quote = None,
            (Some(_), b) => current.get_or_insert_with(Vec::new).push(b),
            (None, b'"' | b'\'') => {
                quote = Some(b);
                current.get_or_insert_with(Vec::new);
            }
            (None, b' ' | b'\t') => {
                if let Some(word) = current.take() {
                    args.push(Bytes::from(word));
                }
            }
            (None, b) => current.get_or_insert_with(Vec::new).push(b),
        }
    }
    if quote.is_some() {
        return Err(ProtocolError::UnbalancedQuotes);
    }
    args.extend(current.map(Bytes::from));
    Ok(args)
}

impl Frame {
    /// Appends the wire form of this frame to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            Frame::Simple(s) => put_line(out, b'+', s.as_bytes()),
            Frame::Error(s) => put_line(out, b'-', s.as_bytes()),
            Frame::Integer(n) => put_line(out, b':', n.to_string().as_bytes()),
            Frame::Bulk(b) => {
                put_line(out, b'$', b.len().to_string().as_bytes());
                out.put_slice(b);
                out.put_slice(b"\r\n");
            }
            Frame::Null => out.put_slice(b"$-1\r\n"),
            Frame::Array(items) => {
                put_line(out, b'*', items.len().to_string().as_bytes());
                for item in items {
                    item.encode(out);
                }
            }
        }
    }

    /// A command as clients send it: an array of bulk strings.
    pub fn command(args: &[&[u8]]) -> Frame {
        Frame::Array(args.iter().map(|a| Frame::Bulk(Bytes::copy_from_slice(a))).collect())
    }

    /// `-ERR message`, the usual error reply.
    pub fn err(message: impl std::fmt::Display) -> Frame {
        Frame::Error(format!("ERR {message}"))
    }

    pub fn ok() -> Frame {
        Frame::Simple("OK".into())
    }
}

fn put_line(out: &mut BytesMut, kind: u8, body: &[u8]) {
    out.reserve(body.len() + 3);
    out.put_u8(kind);
    // A simple string or error must not contain CR or LF; replace them rather
    // than let a message break the framing.
    out.extend(body.iter().map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }));
    out.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(bytes: &[u8]) -> Result<Option<Frame>, ProtocolError> {
        parse_frame(&mut BytesMut::from(bytes))
    }

    fn bulk(s: &str) -> Frame {
        Frame::Bulk(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn frames_round_trip() {
        let frames = [
            Frame::Simple("OK".into()),
            Frame::Error("ERR nope".into()),
            Frame::Integer(-42),
            bulk("hello\r\nworld"),
            bulk(""),
            Frame::Null,
            Frame::Array(vec![bulk("a"), Frame::Integer(1), Frame::Array(vec![]), Frame::Null]),
        ];
        for f in frames {
            let mut out = BytesMut::new();
            f.encode(&mut out);
            out.extend_from_slice(b"+next\r\n");
            assert_eq!(parse_frame(&mut out), Ok(Some(f.clone())), "{f:?}");
            assert_eq!(&out[..], b"+next\r\n", "exactly one frame is consumed");
        }
    }

    #[test]
    fn every_prefix_of_a_frame_is_incomplete() {
        let mut wire = BytesMut::new();
        Frame::Array(vec![bulk("SET"), bulk("k"), Frame::Integer(7), Frame::Simple("x".into())]).encode(&mut wire);
        for cut in 0..wire.len() {
            let mut partial = BytesMut::from(&wire[..cut]);
            assert_eq!(parse_frame(&mut partial), Ok(None), "cut at {cut}");
            assert_eq!(partial.len(), cut, "nothing consumed");
        }
    }

    #[test]
    fn invalid_frames() {
        let cases: &[(&[u8], ProtocolError)] = &[
            (b"?x\r\n", ProtocolError::UnknownType(b'?')),
            (b":12a\r\n", ProtocolError::BadInteger),
            (b"$-2\r\n", ProtocolError::BadLength),
            (b"$x\r\n", ProtocolError::BadLength),
            (b"$3\r\nabcXY", ProtocolError::MissingCrlf),
            (b"$999999999999\r\n", ProtocolError::BulkTooLong),
            (b"*99999999\r\n", ProtocolError::ArrayTooLong),
            (b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n", ProtocolError::TooDeep),
            (b"+\xff\r\n", ProtocolError::NotUtf8),
        ];
        for (wire, want) in cases {
            assert_eq!(frame(wire), Err(*want), "{}", String::from_utf8_lossy(wire));
        }
        let long = vec![b'+'; MAX_LINE + 2];
        assert_eq!(frame(&long), Err(ProtocolError::LineTooLong));
    }

    #[test]
    fn commands_from_arrays_and_inline() {
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n\r\nset  k \"a b\"\r\nPING"[..]);
        assert_eq!(parse_command(&mut buf), Ok(Some(vec![Bytes::from("GET"), Bytes::from("k")])));
        // The blank line is skipped.
        assert_eq!(parse_command(&mut buf), Ok(Some(vec![Bytes::from("set"), Bytes::from("k"), Bytes::from("a b")])));
        assert_eq!(parse_command(&mut buf), Ok(None), "no CRLF yet");
        buf.extend_from_slice(b"\r\n");
        assert_eq!(parse_command(&mut buf), Ok(Some(vec![Bytes::from("PING")])));

        assert_eq!(parse_command(&mut BytesMut::from(&b"*1\r\n:1\r\n"[..])), Err(ProtocolError::NotACommand));
        assert_eq!(parse_command(&mut BytesMut::from(&b"GET 'k\r\n"[..])), Err(ProtocolError::UnbalancedQuotes));
    }

    #[test]
    fn replies_cannot_break_framing() {
        let mut out = BytesMut::new();
        Frame::err("bad\r\ninjected").encode(&mut out);
        assert_eq!(&out[..], b"-ERR bad  injected\r\n");
    }
}
