//! `weft-bench app`: the workload behind every setup. An HTTP server that
//! answers any request with 1 KiB (HTTP/1.1 and HTTP/2 prior knowledge on
//! one port, as hyper-util's auto server detects them) and a TCP echo.
//!
//! It runs on one thread, like a small service, so that it costs the same
//! in every setup.
//!
//! `GET /whoami` answers with the request's `weft-client-id` header instead
//! (the client identity an inbound weft proxy verified over mTLS): how the
//! start-up of `weft-mtls` checks that the pair really speaks mTLS.
//! `GET /header/NAME` answers with the request's header `NAME` (empty if
//! absent): how the start-up of `weft-policy` checks that the route's
//! header filter applied.

use std::convert::Infallible;
use std::net::SocketAddr;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use crate::workload::RESPONSE_BYTES;

static BODY: [u8; RESPONSE_BYTES] = [b'w'; RESPONSE_BYTES];

/// The path that echoes the verified client identity.
pub const WHOAMI_PATH: &str = "/whoami";
/// The header an inbound weft proxy sets to the client's verified identity.
pub const CLIENT_ID_HEADER: &str = "weft-client-id";
/// `HEADER_PATH` + a header name: answers with that request header's value.
pub const HEADER_PATH: &str = "/header/";

/// Flags of `weft-bench app`.
#[derive(clap::Args, Debug, Clone)]
pub struct AppArgs {
    /// HTTP listener (HTTP/1.1 and HTTP/2 prior knowledge).
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub http: SocketAddr,
    /// TCP echo listener.
    #[arg(long, default_value = "0.0.0.0:7000")]
    pub echo: SocketAddr,
}

pub fn run(args: &AppArgs) -> anyhow::Result<()> {
    crate::limits::raise_nofile();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(serve(args))
}

async fn serve(args: &AppArgs) -> anyhow::Result<()> {
    let http = TcpListener::bind(args.http).await.with_context(|| format!("binding {}", args.http))?;
    let echo = TcpListener::bind(args.echo).await.with_context(|| format!("binding {}", args.echo))?;
    // Accept errors (EMFILE under a connection flood) are survivable: the
    // connection stays in the backlog and is retried.
    loop {
        tokio::select! {
            accepted = http.accept() => if let Ok((stream, _)) = accepted {
                tokio::spawn(serve_http(stream));
            },
            accepted = echo.accept() => if let Ok((stream, _)) = accepted {
                tokio::spawn(serve_echo(stream));
            },
        }
    }
}

async fn serve_http(stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let service = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
        if req.uri().path() == WHOAMI_PATH {
            let id = req.headers().get(CLIENT_ID_HEADER).map(|v| Bytes::copy_from_slice(v.as_bytes()));
            return Ok::<_, Infallible>(Response::new(Full::new(id.unwrap_or_default())));
        }
        if let Some(name) = req.uri().path().strip_prefix(HEADER_PATH) {
            let value = req.headers().get(name).map(|v| Bytes::copy_from_slice(v.as_bytes()));
            return Ok(Response::new(Full::new(value.unwrap_or_default())));
        }
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(&BODY))))
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let _ = builder.serve_connection(TokioIo::new(stream), service).await;
}

async fn serve_echo(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}
