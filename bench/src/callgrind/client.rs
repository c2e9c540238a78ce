//! `weft-bench callgrind-client`, run in the client pod: sequential
//! requests on one kept-alive connection, in two phases the orchestrator
//! brackets with `callgrind_control -z` and `-d`:
//!
//! ```text
//!  connect ─► warm-up requests ─► "warm" on stdout ─► waits for "go" on stdin
//!    ─► measured requests ─► {"requests":…,"elapsed_us":…} on stdout
//!    ─► waits for "close" on stdin (the connection stays open until the dump) ─► exit
//! ```
//!
//! Plain blocking sockets and a hand-written HTTP/1.1 exchange: the same
//! bytes every run, nothing in the client that varies what the proxy does.

use std::io::{BufRead as _, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use crate::workload::{ECHO_BYTES, RESPONSE_BYTES, USER_AGENT, echo_payload};

/// What the client sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Exchange {
    /// HTTP/1.1 `GET /`, a 1 KiB response.
    Http1,
    /// Opaque TCP: 64 bytes echoed back.
    Tcp,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ClientArgs {
    #[arg(long)]
    pub target: SocketAddr,
    #[arg(long, value_enum)]
    pub exchange: Exchange,
    #[arg(long)]
    pub warmup: u32,
    #[arg(long)]
    pub requests: u32,
    /// Longest wait for one response (the proxy runs under valgrind).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// The measured phase, printed as JSON.
#[derive(Debug, Serialize, Deserialize)]
pub struct Measured {
    pub requests: u32,
    pub elapsed_us: u64,
}

pub fn run(args: &ClientArgs) -> anyhow::Result<()> {
    let mut conn = Conn::open(args)?;
    for i in 0..args.warmup {
        conn.exchange().with_context(|| format!("warm-up request {} of {}", i + 1, args.warmup))?;
    }
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "warm")?;
    stdout.flush()?;
    expect_line("go")?;
    let started = Instant::now();
    for i in 0..args.requests {
        conn.exchange().with_context(|| format!("measured request {} of {}", i + 1, args.requests))?;
    }
    let measured = Measured { requests: args.requests, elapsed_us: started.elapsed().as_micros() as u64 };
    writeln!(stdout, "{}", serde_json::to_string(&measured)?)?;
    stdout.flush()?;
    expect_line("close")?;
    Ok(())
}

fn expect_line(want: &str) -> anyhow::Result<()> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    anyhow::ensure!(line.trim() == want, "expected {want:?} on stdin, read {line:?}");
    Ok(())
}

struct Conn {
    stream: TcpStream,
    exchange: Exchange,
    request: Vec<u8>,
    buf: Vec<u8>,
}

impl Conn {
    fn open(args: &ClientArgs) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect_timeout(&args.target, args.timeout)
            .with_context(|| format!("connecting to {}", args.target))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(args.timeout))?;
        stream.set_write_timeout(Some(args.timeout))?;
        let request = match args.exchange {
            Exchange::Http1 => {
                format!("GET / HTTP/1.1\r\nhost: {}\r\nuser-agent: {USER_AGENT}\r\n\r\n", args.target).into_bytes()
            }
            Exchange::Tcp => echo_payload().to_vec(),
        };
        Ok(Conn { stream, exchange: args.exchange, request, buf: Vec::with_capacity(4096) })
    }

    /// One request and its whole response.
    fn exchange(&mut self) -> anyhow::Result<()> {
        self.stream.write_all(&self.request)?;
        match self.exchange {
            Exchange::Tcp => {
                let mut echo = [0u8; ECHO_BYTES];
                self.stream.read_exact(&mut echo)?;
                anyhow::ensure!(echo[..] == self.request[..], "the echo differs from what was sent");
            }
            Exchange::Http1 => {
                self.buf.clear();
                let mut chunk = [0u8; 4096];
                let len = loop {
                    if let Some(len) = response_len(&self.buf)? {
                        break len;
                    }
                    let n = self.stream.read(&mut chunk)?;
                    if n == 0 {
                        bail!("the connection closed mid-response after {} bytes", self.buf.len());
                    }
                    self.buf.extend_from_slice(&chunk[..n]);
                };
                anyhow::ensure!(len == self.buf.len(), "{} bytes after the response", self.buf.len() - len);
            }
        }
        Ok(())
    }
}

/// The length of the complete `200` response at the start of `buf` with a
/// 1 KiB body (`content-length` or chunked), `None` while incomplete.
pub fn response_len(buf: &[u8]) -> anyhow::Result<Option<usize>> {
    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4) else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..head_end]).context("a response head that is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    anyhow::ensure!(status.starts_with("HTTP/1.1 200 "), "response {status:?}, expected 200");
    let (mut length, mut chunked) = (None, false);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.trim().parse::<usize>().context("content-length")?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.trim().eq_ignore_ascii_case("chunked");
        }
    }
    let body = &buf[head_end..];
    let body_len = match (length, chunked) {
        (_, true) => match chunked_len(body)? {
            Some((wire, data)) => {
                anyhow::ensure!(data == RESPONSE_BYTES, "a {data}-byte body, expected {RESPONSE_BYTES}");
                wire
            }
            None => return Ok(None),
        },
        (Some(n), false) => {
            anyhow::ensure!(n == RESPONSE_BYTES, "a {n}-byte body, expected {RESPONSE_BYTES}");
            if body.len() < n {
                return Ok(None);
            }
            n
        }
        (None, false) => bail!("a response with neither content-length nor chunked encoding"),
    };
    Ok(Some(head_end + body_len))
}

/// A complete chunked body at the start of `body`: (its bytes on the wire,
/// its data bytes); `None` while incomplete. Trailers are not expected.
fn chunked_len(body: &[u8]) -> anyhow::Result<Option<(usize, usize)>> {
    let (mut at, mut data) = (0, 0);
    loop {
        let Some(line_end) = body[at..].windows(2).position(|w| w == b"\r\n") else { return Ok(None) };
        let line = std::str::from_utf8(&body[at..at + line_end]).context("a chunk size that is not UTF-8")?;
        let size = usize::from_str_radix(line.split(';').next().unwrap_or_default().trim(), 16)
            .with_context(|| format!("chunk size {line:?}"))?;
        at += line_end + 2;
        if body.len() < at + size + 2 {
            return Ok(None);
        }
        anyhow::ensure!(&body[at + size..at + size + 2] == b"\r\n", "a chunk not ended by CRLF");
        at += size + 2;
        data += size;
        if size == 0 {
            return Ok(Some((at, data)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_framing() {
        let body = "x".repeat(RESPONSE_BYTES);
        let cl = format!("HTTP/1.1 200 OK\r\ncontent-length: 1024\r\n\r\n{body}");
        let chunked = format!("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n400\r\n{body}\r\n0\r\n\r\n");
        let split = format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n200\r\n{0}\r\n200;x=y\r\n{0}\r\n0\r\n\r\n",
            &body[..512]
        );
        let cases: Vec<(String, Result<Option<usize>, &str>)> = vec![
            (cl.clone(), Ok(Some(cl.len()))),
            (cl[..cl.len() - 1].to_owned(), Ok(None)),
            ("HTTP/1.1 200 OK\r\ncontent-le".to_owned(), Ok(None)),
            (chunked.clone(), Ok(Some(chunked.len()))),
            (chunked[..chunked.len() - 2].to_owned(), Ok(None)),
            (split.clone(), Ok(Some(split.len()))),
            (format!("{cl}HTTP/1.1"), Ok(Some(cl.len()))),
            ("HTTP/1.1 503 Service Unavailable\r\n\r\n".to_owned(), Err("expected 200")),
            ("HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nabc".to_owned(), Err("a 3-byte body")),
            ("HTTP/1.1 200 OK\r\n\r\n".to_owned(), Err("neither content-length nor chunked")),
            ("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n".to_owned(), Err("chunk size")),
        ];
        for (response, want) in cases {
            let got = response_len(response.as_bytes());
            match want {
                Ok(want) => assert_eq!(got.unwrap(), want, "{response:.60?}"),
                Err(msg) => {
                    let e = format!("{:#}", got.unwrap_err());
                    assert!(e.contains(msg), "{response:.60?}: {e}");
                }
            }
        }
    }
}
