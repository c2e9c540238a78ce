//! One request of each workload, with the connection handling a real client
//! would have: HTTP/1.1 and opaque TCP take a kept-alive connection from a
//! pool that grows on demand (one request at a time per connection, no
//! pipelining); HTTP/2 spreads streams over a fixed set of connections;
//! `conn` opens a connection for every request.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::client::conn::{http1, http2};
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::workload::{ECHO_BYTES, RESPONSE_BYTES, USER_AGENT, Workload, echo_payload};

/// Why one request failed. These happen in normal operation under
/// overload, so they are cheap values; the generator keeps the first one's
/// text as a sample.
#[derive(Debug)]
pub enum RequestError {
    Connect(std::io::Error),
    Handshake(hyper::Error),
    Http(hyper::Error),
    Status(StatusCode),
    BodyLength(usize),
    Io(std::io::Error),
    EchoMismatch,
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::Connect(e) => write!(f, "connect: {e}"),
            RequestError::Handshake(e) => write!(f, "HTTP handshake: {e}"),
            RequestError::Http(e) => write!(f, "HTTP: {e}"),
            RequestError::Status(s) => write!(f, "unexpected status {s}"),
            RequestError::BodyLength(n) => write!(f, "response body of {n} bytes, expected {RESPONSE_BYTES}"),
            RequestError::Io(e) => write!(f, "I/O: {e}"),
            RequestError::EchoMismatch => write!(f, "the echo differs from the request"),
        }
    }
}

type H1 = http1::SendRequest<Empty<Bytes>>;
type H2 = http2::SendRequest<Empty<Bytes>>;

/// A load generator's client for one workload and target.
pub struct Client {
    target: SocketAddr,
    kind: Kind,
    /// Bounds the connections (pooled kinds) or in-flight requests (`conn`).
    permits: Semaphore,
    opened: AtomicU64,
    /// HTTP/1.1 requests sent again after a kept-alive connection closed
    /// before answering.
    stale_retries: AtomicU64,
}

enum Kind {
    Http1 { idle: Mutex<Vec<H1>> },
    Http2 { conns: Vec<H2>, next: AtomicUsize },
    Tcp { idle: Mutex<Vec<TcpStream>> },
    Conn,
}

impl Client {
    /// A client for `workload`; HTTP/2 connects its `h2_conns` connections
    /// now, the others connect on demand, at most `max_conns` at once.
    pub async fn new(
        workload: Workload,
        target: SocketAddr,
        max_conns: usize,
        h2_conns: usize,
    ) -> Result<Client, RequestError> {
        let mut client = Client {
            target,
            kind: Kind::Conn,
            permits: Semaphore::new(max_conns),
            opened: AtomicU64::new(0),
            stale_retries: AtomicU64::new(0),
        };
        client.kind = match workload {
            Workload::Http1 => Kind::Http1 { idle: Mutex::new(Vec::new()) },
            Workload::Tcp => Kind::Tcp { idle: Mutex::new(Vec::new()) },
            Workload::Conn => Kind::Conn,
            Workload::Http2 => {
                let mut conns = Vec::with_capacity(h2_conns);
                for _ in 0..h2_conns.max(1) {
                    let io = client.connect().await?;
                    let (send, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(io))
                        .await
                        .map_err(RequestError::Handshake)?;
                    tokio::spawn(conn);
                    conns.push(send);
                }
                Kind::Http2 { conns, next: AtomicUsize::new(0) }
            }
        };
        Ok(client)
    }

    /// Connections opened so far.
    pub fn opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// HTTP/1.1 requests sent again on a new connection after a kept-alive
    /// one closed before answering.
    pub fn stale_retries(&self) -> u64 {
        self.stale_retries.load(Ordering::Relaxed)
    }

    async fn connect(&self) -> Result<TcpStream, RequestError> {
        let stream = TcpStream::connect(self.target).await.map_err(RequestError::Connect)?;
        // Request/response traffic: never wait for Nagle.
        let _ = stream.set_nodelay(true);
        self.opened.fetch_add(1, Ordering::Relaxed);
        Ok(stream)
    }

    async fn h1_connect(&self) -> Result<H1, RequestError> {
        let io = self.connect().await?;
        let (send, conn) = http1::handshake(TokioIo::new(io)).await.map_err(RequestError::Handshake)?;
        tokio::spawn(conn);
        Ok(send)
    }

    fn get(&self, absolute: bool) -> Request<Empty<Bytes>> {
        // HTTP/2 needs :scheme and :authority, so an absolute URI;
        // HTTP/1.1 sends origin-form and a Host header.
        let uri = if absolute { format!("http://{}/", self.target) } else { "/".to_owned() };
        let mut req = Request::get(uri).header(http::header::USER_AGENT, USER_AGENT);
        if !absolute {
            req = req.header(http::header::HOST, self.target.to_string());
        }
        req.body(Empty::new()).expect("a valid request")
    }

    /// One request and its whole response.
    pub async fn request(&self) -> Result<(), RequestError> {
        match &self.kind {
            Kind::Http1 { idle } => {
                let _permit = self.permits.acquire().await.expect("the semaphore is never closed");
                let pooled = {
                    let mut idle = idle.lock().unwrap_or_else(|e| e.into_inner());
                    std::iter::from_fn(|| idle.pop()).find(|s| !s.is_closed())
                };
                let reused = pooled.is_some();
                let mut send = match pooled {
                    Some(send) => send,
                    None => self.h1_connect().await?,
                };
                let mut sent = match send.ready().await {
                    Ok(()) => send.send_request(self.get(false)).await,
                    Err(e) => Err(e),
                };
                // A kept-alive connection the server closed as it was taken
                // (its idle timeout): like browsers, curl and Go (RFC 9112
                // §9.3.1), send the GET once more on a new connection, and
                // count it.
                if sent.is_err() && reused {
                    self.stale_retries.fetch_add(1, Ordering::Relaxed);
                    send = self.h1_connect().await?;
                    send.ready().await.map_err(RequestError::Http)?;
                    sent = send.send_request(self.get(false)).await;
                }
                let response = sent.map_err(RequestError::Http)?;
                read_response(response).await?;
                idle.lock().unwrap_or_else(|e| e.into_inner()).push(send);
                Ok(())
            }
            Kind::Http2 { conns, next } => {
                let mut send = conns[next.fetch_add(1, Ordering::Relaxed) % conns.len()].clone();
                send.ready().await.map_err(RequestError::Http)?;
                let response = send.send_request(self.get(true)).await.map_err(RequestError::Http)?;
                read_response(response).await
            }
            Kind::Tcp { idle } => {
                let _permit = self.permits.acquire().await.expect("the semaphore is never closed");
                let pooled = idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
                let mut stream = match pooled {
                    Some(stream) => stream,
                    None => self.connect().await?,
                };
                echo(&mut stream).await?;
                idle.lock().unwrap_or_else(|e| e.into_inner()).push(stream);
                Ok(())
            }
            Kind::Conn => {
                let _permit = self.permits.acquire().await.expect("the semaphore is never closed");
                let mut send = self.h1_connect().await?;
                let mut req = self.get(false);
                req.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
                let response = send.send_request(req).await.map_err(RequestError::Http)?;
                read_response(response).await
            }
        }
    }
}

async fn read_response(response: hyper::Response<hyper::body::Incoming>) -> Result<(), RequestError> {
    let status = response.status();
    let body = response.into_body().collect().await.map_err(RequestError::Http)?.to_bytes();
    if status != StatusCode::OK {
        return Err(RequestError::Status(status));
    }
    if body.len() != RESPONSE_BYTES {
        return Err(RequestError::BodyLength(body.len()));
    }
    Ok(())
}

/// Writes the payload and reads its echo back on `stream`.
pub async fn echo(stream: &mut TcpStream) -> Result<(), RequestError> {
    let payload = echo_payload();
    stream.write_all(&payload).await.map_err(RequestError::Io)?;
    let mut back = [0u8; ECHO_BYTES];
    stream.read_exact(&mut back).await.map_err(RequestError::Io)?;
    if back != payload {
        return Err(RequestError::EchoMismatch);
    }
    Ok(())
}
