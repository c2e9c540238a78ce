//! `weft-testkit`: the small, real workloads and clients that the end-to-end
//! tests run inside their pods.
//!
//! Servers print one line per accepted connection and per request on stdout
//! (the harness keeps it in a log file), so a test can wait for "the request
//! reached the app" without sleeping. Clients print `key=value` lines that the
//! tests parse, and exit non-zero with a message on stderr when the exchange
//! went wrong.
//!
//! | subcommand      | what it is                                                 |
//! | --------------- | ---------------------------------------------------------- |
//! | `http-server`   | HTTP/1.1 + h2c (prior knowledge) server, see [`http`]      |
//! | `ws-server`     | WebSocket echo server                                      |
//! | `ws-client`     | WebSocket client: sends messages, checks the echoes        |
//! | `tcp-server`    | TCP echo server, optionally speaking first (a banner)      |
//! | `banner-client` | waits for the server's banner, then checks an echo         |
//! | `slow-client`   | sends a prefix, then trickles bytes; reports when closed   |
//! | `raw`           | sends raw bytes, prints (escaped) what comes back          |
//! | `forward`       | listens inside a network namespace, connects from this one |
//! | `flood`         | garbage, half-open TLS and silent connections at a rate    |
//! | `idle-conns`    | opens N connections, says nothing, holds them               |

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use weft_tests::hostile;
use weft_tests::workload::{escape, unescape};

#[derive(Parser, Debug)]
#[command(name = "weft-testkit", about = "Workloads and clients for Weft's end-to-end tests")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// HTTP/1.1 and h2c server that echoes what it receives.
    HttpServer {
        #[arg(long, required = true)]
        listen: Vec<SocketAddr>,
        /// Delay every response by this many milliseconds (a slow replica).
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
        /// Sent as `x-weft-server` on every response (default: the first
        /// listen address), so a test can tell replicas apart.
        #[arg(long)]
        name: Option<String>,
        /// Answer every Nth request 503 (0: never); changed at runtime with
        /// `GET /control/fail-every?n=N`.
        #[arg(long, default_value_t = 0)]
        fail_every: u64,
    },
    /// WebSocket echo server.
    WsServer {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// WebSocket client: sends `messages` text and binary messages and checks
    /// that each comes back unchanged.
    WsClient {
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 10)]
        messages: usize,
    },
    /// TCP echo server; with `--banner` it writes `BANNER\r\n` on accept
    /// before echoing (a server-speaks-first protocol such as SMTP).
    TcpServer {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        banner: Option<String>,
    },
    /// Connects, sends nothing, waits for the banner line; prints
    /// `banner_ms=` (time from connect to the full line) and `banner=`, then
    /// checks that a line sent back is echoed.
    BannerClient {
        #[arg(long)]
        connect: SocketAddr,
        #[arg(long, default_value_t = 10_000)]
        timeout_ms: u64,
    },
    /// Sends `--send` (escaped: \r \n \\ \xNN), then one byte of `--trickle`
    /// every `--interval-ms`, until the peer closes or `--max-ms` passes.
    /// Prints `closed_after_ms=` (from connect) or `still_open_after_ms=`
    /// (exit code 3), and `received=` (escaped).
    SlowClient {
        #[arg(long)]
        connect: SocketAddr,
        #[arg(long, default_value = "")]
        send: String,
        #[arg(long, default_value = "")]
        trickle: String,
        #[arg(long, default_value_t = 100)]
        interval_ms: u64,
        #[arg(long, default_value_t = 20_000)]
        max_ms: u64,
    },
    /// An HTTP/2 (h2c) client that sends one GET for `--path`, reads the
    /// response, then keeps the connection open and idle, answering the
    /// server's frames (PING, GOAWAY) as any HTTP/2 client does, until the
    /// server closes it or `--max-ms` passes. Prints `status=`, then
    /// `closed_after_ms=` (from the response's end) or `still_open_after_ms=`
    /// (exit code 3).
    H2Idle {
        #[arg(long)]
        connect: SocketAddr,
        #[arg(long, default_value = "/")]
        path: String,
        #[arg(long, default_value_t = 20_000)]
        max_ms: u64,
    },
    /// Sends raw bytes (`--send`, escaped, or `--send-file`), then prints on
    /// stdout, escaped on one line, every byte received until the peer
    /// closes, `--read-bytes` have arrived, or `--timeout-ms` passes; how it
    /// ended goes to stderr (`end=eof|read-bytes|timeout|error: ...`).
    Raw {
        #[arg(long)]
        connect: SocketAddr,
        #[arg(long, conflicts_with = "send_file")]
        send: Option<String>,
        #[arg(long)]
        send_file: Option<PathBuf>,
        #[arg(long)]
        read_bytes: Option<usize>,
        #[arg(long, default_value_t = 10_000)]
        timeout_ms: u64,
    },
    /// Listens on `--listen` inside the network namespace `--netns` (a name
    /// under /var/run/netns) and forwards each connection to `--to` in the
    /// namespace it was started in. Lets a pod reach a server on the host's
    /// loopback (the tests' Kubernetes API server) at the pod's own
    /// 127.0.0.1, without routing anything between them. Prints
    /// `listening` once bound.
    Forward {
        #[arg(long)]
        netns: String,
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        to: SocketAddr,
    },
    /// A misbehaving client ([`weft_tests::hostile`]): opens `--rate`
    /// connections per second for `--duration-ms`, taking `--kinds` in turn
    /// (`garbage`: 256 bytes neither HTTP nor TLS; `hello`: a mesh
    /// ClientHello, then silence; `silent`: nothing), and waits up to
    /// `--hold-ms` for the server to close each. Prints `rate=` and, per
    /// kind, `KIND_opened=`, `KIND_connect_failed=`, `KIND_closed_by_peer=`,
    /// `KIND_held=` (still open after the hold), `KIND_close_ms_p50=`,
    /// `KIND_close_ms_max=`.
    Flood {
        #[arg(long)]
        connect: SocketAddr,
        #[arg(long, default_value_t = 1000.0)]
        rate: f64,
        #[arg(long, default_value_t = 10_000)]
        duration_ms: u64,
        #[arg(long, value_delimiter = ',', default_value = "garbage,hello,silent")]
        kinds: Vec<String>,
        #[arg(long, default_value_t = 10_000)]
        hold_ms: u64,
    },
    /// Opens `--count` connections at `--rate` per second and sends
    /// nothing; prints `opened=` and `connect_failed=` once all are tried,
    /// then holds them for `--hold-ms` and prints `closed_by_peer=`,
    /// `held=` (still open at the end) and `close_ms_p50=`/`close_ms_max=`
    /// (from the first connect).
    IdleConns {
        #[arg(long)]
        connect: SocketAddr,
        #[arg(long, default_value_t = 10_000)]
        count: u64,
        #[arg(long, default_value_t = 2000.0)]
        rate: f64,
        #[arg(long, default_value_t = 30_000)]
        hold_ms: u64,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Forward { netns, listen, to } => forward(&netns, listen, to).await,
        Command::Flood { connect, rate, duration_ms, kinds, hold_ms } => {
            anyhow::ensure!(rate > 0.0 && rate.is_finite(), "--rate must be a positive number");
            let kinds = kinds
                .iter()
                .map(|k| hostile::Kind::parse(k))
                .collect::<Result<Vec<_>, _>>()
                .map_err(anyhow::Error::msg)?;
            anyhow::ensure!(!kinds.is_empty(), "--kinds needs at least one kind");
            hostile::raise_nofile().context("raising RLIMIT_NOFILE")?;
            let flood = hostile::Flood {
                connect,
                rate,
                duration: Duration::from_millis(duration_ms),
                kinds,
                hold: Duration::from_millis(hold_ms),
            };
            print!("{}", hostile::flood(&flood).await);
            Ok(())
        }
        Command::IdleConns { connect, count, rate, hold_ms } => {
            anyhow::ensure!(rate > 0.0 && rate.is_finite(), "--rate must be a positive number");
            let limit = hostile::raise_nofile().context("raising RLIMIT_NOFILE")?;
            anyhow::ensure!(
                limit > count + 64,
                "RLIMIT_NOFILE's hard limit {limit} is too low for {count} connections"
            );
            let idle = hostile::Idle { connect, count, rate, hold: Duration::from_millis(hold_ms) };
            let tally = hostile::idle(&idle, |opened| {
                println!("opened={}\nconnect_failed={}", opened.opened, opened.connect_failed);
            })
            .await;
            println!(
                "closed_by_peer={}\nheld={}\nclose_ms_p50={}\nclose_ms_max={}",
                tally.closed_by_peer,
                tally.held,
                tally.close_ms_quantile(0.5),
                tally.close_ms_quantile(1.0)
            );
            Ok(())
        }
        Command::HttpServer { listen, delay_ms, name, fail_every } => {
            let name = name.unwrap_or_else(|| listen.first().map(ToString::to_string).unwrap_or_default());
            http::serve(listen, Duration::from_millis(delay_ms), http::Server::new(name, fail_every)).await
        }
        Command::WsServer { listen } => ws_server(listen).await,
        Command::WsClient { url, messages } => ws_client(&url, messages).await,
        Command::TcpServer { listen, banner } => tcp_server(listen, banner).await,
        Command::BannerClient { connect, timeout_ms } => {
            banner_client(connect, Duration::from_millis(timeout_ms)).await
        }
        Command::SlowClient { connect, send, trickle, interval_ms, max_ms } => {
            let send = unescape(&send).map_err(anyhow::Error::msg).context("--send")?;
            let trickle = unescape(&trickle).map_err(anyhow::Error::msg).context("--trickle")?;
            slow_client(connect, &send, &trickle, Duration::from_millis(interval_ms), Duration::from_millis(max_ms))
                .await
        }
        Command::H2Idle { connect, path, max_ms } => h2_idle(connect, &path, Duration::from_millis(max_ms)).await,
        Command::Raw { connect, send, send_file, read_bytes, timeout_ms } => {
            let bytes = match (send, send_file) {
                (Some(s), None) => unescape(&s).map_err(anyhow::Error::msg).context("--send")?,
                (None, Some(path)) => std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
                _ => bail!("give exactly one of --send and --send-file"),
            };
            raw(connect, &bytes, read_bytes, Duration::from_millis(timeout_ms)).await
        }
    }
}

async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
    println!("listening on {addr}");
    Ok(listener)
}

async fn ws_server(listen: SocketAddr) -> anyhow::Result<()> {
    let listener = bind(listen).await?;
    let mut next_id = 0u64;
    loop {
        let (stream, peer) = listener.accept().await?;
        next_id += 1;
        let id = next_id;
        println!("connection {id} from {peer}");
        tokio::spawn(async move {
            let result = async {
                let mut ws = tokio_tungstenite::accept_async(stream).await?;
                while let Some(msg) = ws.next().await {
                    match msg? {
                        m @ (Message::Text(_) | Message::Binary(_)) => ws.send(m).await?,
                        Message::Close(_) => break,
                        _ => {}
                    }
                }
                anyhow::Ok(())
            }
            .await;
            if let Err(e) = result {
                eprintln!("ws connection {id}: {e:#}");
            }
        });
    }
}

async fn ws_client(url: &str, messages: usize) -> anyhow::Result<()> {
    let (mut ws, response) =
        tokio_tungstenite::connect_async(url).await.with_context(|| format!("WebSocket handshake with {url}"))?;
    println!("handshake_status={}", response.status().as_u16());
    for i in 0..messages {
        // Alternate text and binary frames, with a binary payload large
        // enough to span several TCP segments.
        let sent = if i % 2 == 0 {
            Message::text(format!("weft-ws-{i}"))
        } else {
            Message::binary((0..100_000u32).map(|b| (b % 251) as u8 ^ i as u8).collect::<Vec<_>>())
        };
        ws.send(sent.clone()).await.context("sending")?;
        let got = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .context("timed out waiting for an echo")?
            .context("server closed the WebSocket")??;
        if got != sent {
            bail!("message {i}: echo differs from what was sent");
        }
    }
    ws.close(None).await.context("closing")?;
    println!("echoed={messages}");
    Ok(())
}

async fn tcp_server(listen: SocketAddr, banner: Option<String>) -> anyhow::Result<()> {
    let listener = bind(listen).await?;
    let banner = banner.map(|b| format!("{b}\r\n"));
    let mut next_id = 0u64;
    loop {
        let (mut stream, peer) = listener.accept().await?;
        next_id += 1;
        println!("connection {next_id} from {peer}");
        let banner = banner.clone();
        tokio::spawn(async move {
            if let Some(banner) = banner
                && stream.write_all(banner.as_bytes()).await.is_err()
            {
                return;
            }
            let (mut r, mut w) = stream.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
        });
    }
}

async fn banner_client(connect: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    let stream = TcpStream::connect(connect).await.with_context(|| format!("connecting to {connect}"))?;
    let start = Instant::now();
    let mut stream = BufReader::new(stream);
    let mut line = String::new();
    tokio::time::timeout(timeout, stream.read_line(&mut line)).await.context("no banner before the timeout")??;
    println!("banner_ms={}", start.elapsed().as_millis());
    println!("banner={}", escape(line.as_bytes()));
    stream.get_mut().write_all(b"ping\r\n").await?;
    let mut echo = String::new();
    tokio::time::timeout(timeout, stream.read_line(&mut echo)).await.context("no echo before the timeout")??;
    if echo != "ping\r\n" {
        bail!("expected the echo \"ping\\r\\n\", got {:?}", echo);
    }
    println!("echo=ok");
    Ok(())
}

async fn slow_client(
    connect: SocketAddr,
    send: &[u8],
    trickle: &[u8],
    interval: Duration,
    max: Duration,
) -> anyhow::Result<()> {
    let mut stream = TcpStream::connect(connect).await.with_context(|| format!("connecting to {connect}"))?;
    let start = Instant::now();
    stream.write_all(send).await.context("sending the prefix")?;
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    let mut trickle = trickle.iter();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::sleep(max);
    tokio::pin!(deadline);
    let closed = loop {
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => break true,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            },
            _ = ticks.tick() => {
                if let Some(byte) = trickle.next()
                    && stream.write_all(&[*byte]).await.is_err() {
                        break true;
                    }
            }
            () = &mut deadline => break false,
        }
    };
    let elapsed = start.elapsed().as_millis();
    println!("received={}", escape(&received));
    if closed {
        println!("closed_after_ms={elapsed}");
        Ok(())
    } else {
        println!("still_open_after_ms={elapsed}");
        std::process::exit(3);
    }
}

async fn h2_idle(connect: SocketAddr, path: &str, max: Duration) -> anyhow::Result<()> {
    use http_body_util::{BodyExt as _, Empty};
    let stream = TcpStream::connect(connect).await.with_context(|| format!("connecting to {connect}"))?;
    let (mut tx, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .context("HTTP/2 handshake")?;
    let mut conn = tokio::spawn(conn);
    let req = hyper::Request::get(format!("http://{connect}{path}")).body(Empty::<bytes::Bytes>::new())?;
    let rsp = tx.send_request(req).await.context("the request")?;
    let status = rsp.status();
    rsp.into_body().collect().await.context("the response body")?;
    println!("status={}", status.as_u16());
    let idle = Instant::now();
    match tokio::time::timeout(max, &mut conn).await {
        Ok(_) => {
            println!("closed_after_ms={}", idle.elapsed().as_millis());
            Ok(())
        }
        Err(_) => {
            println!("still_open_after_ms={}", idle.elapsed().as_millis());
            std::process::exit(3);
        }
    }
}

async fn raw(connect: SocketAddr, bytes: &[u8], read_bytes: Option<usize>, timeout: Duration) -> anyhow::Result<()> {
    let mut stream = TcpStream::connect(connect).await.with_context(|| format!("connecting to {connect}"))?;
    // The peer may answer (e.g. 431) and close before it has read all of a
    // large request; a failed write is fine as long as the answer arrives.
    if let Err(e) = stream.write_all(bytes).await {
        eprintln!("write stopped: {e}");
    }
    let mut received = Vec::new();
    let mut buf = [0u8; 16384];
    let result = tokio::time::timeout(timeout, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => return "eof".to_owned(),
                Ok(n) => {
                    received.extend_from_slice(&buf[..n]);
                    if read_bytes.is_some_and(|want| received.len() >= want) {
                        return "read-bytes".to_owned();
                    }
                }
                Err(e) => return format!("error: {e}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| "timeout".to_owned());
    eprintln!("end={result}");
    println!("{}", escape(&received));
    Ok(())
}

/// The HTTP server. Every response carries:
///
/// - `x-weft-conn`: the id of the connection it came on (1, 2, … in accept
///   order), so a test can count connections;
/// - `x-weft-peer`: the connection's peer address as the app sees it;
/// - `x-weft-version`: the request's HTTP version.
///
/// - `x-weft-server`: the server's `--name`.
///
/// With `--fail-every N`, every Nth request is answered 503 (whatever its
/// path, `/control/…` excepted). Routes: `/status?code=N` answers N;
/// `/control/fail-every?n=N` changes N; `/echo` returns the request body; `/sha256` returns
/// (and prints) `sha256=HEX bytes=N`; `/delay?ms=N` answers after N ms; `/bytes?n=N`
/// streams N bytes of [`weft_tests::workload::pattern_byte`];
/// `/drip?n=N&every=MS&stall=MS` sends the lines `drip 0` … `drip N-1`, one
/// every MS, then (with `stall`) waits that long before a last line
/// `after stall`; `/trailers`
/// answers with a body and the trailers `grpc-status: 0`,
/// `grpc-message: weft-ok`; anything else returns the request head as text.
mod http {
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    use std::time::Duration;

    use bytes::Bytes;
    use http::{HeaderMap, HeaderValue, Request, Response};
    use http_body_util::{BodyExt as _, Full, StreamBody, combinators::BoxBody};
    use hyper::body::{Frame, Incoming};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto;
    use sha2::{Digest as _, Sha256};
    use weft_tests::workload::pattern_byte;

    type BoxError = Box<dyn std::error::Error + Send + Sync>;
    type Body = BoxBody<Bytes, BoxError>;

    /// What every connection of the server shares.
    #[derive(Debug)]
    pub(super) struct Server {
        name: HeaderValue,
        fail_every: AtomicU64,
        requests: AtomicU64,
    }

    impl Server {
        pub(super) fn new(name: String, fail_every: u64) -> Arc<Self> {
            let name = HeaderValue::from_str(&name).unwrap_or_else(|_| HeaderValue::from_static("invalid-name"));
            Arc::new(Self { name, fail_every: AtomicU64::new(fail_every), requests: AtomicU64::new(0) })
        }

        /// Whether this request is one of the injected failures.
        fn fails_now(&self) -> bool {
            let every = self.fail_every.load(Relaxed);
            let n = self.requests.fetch_add(1, Relaxed) + 1;
            every > 0 && n.is_multiple_of(every)
        }
    }

    pub(super) async fn serve(listen: Vec<SocketAddr>, delay: Duration, server: Arc<Server>) -> anyhow::Result<()> {
        let mut tasks = Vec::new();
        for addr in listen {
            let listener = super::bind(addr).await?;
            tasks.push(tokio::spawn(accept_loop(listener, delay, server.clone())));
        }
        for task in tasks {
            task.await??;
        }
        Ok(())
    }

    async fn accept_loop(
        listener: tokio::net::TcpListener,
        delay: Duration,
        server: Arc<Server>,
    ) -> anyhow::Result<()> {
        let mut next_id = 0u64;
        loop {
            let (stream, peer) = listener.accept().await?;
            next_id += 1;
            let id = next_id;
            println!("connection {id} from {peer}");
            let server = server.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let server = server.clone();
                    async move {
                        if !delay.is_zero() {
                            tokio::time::sleep(delay).await;
                        }
                        let mut rsp = if req.uri().path() == "/control/fail-every" {
                            server.fail_every.store(query(&req, "n").unwrap_or(0), Relaxed);
                            status(200, "ok\n")
                        } else if server.fails_now() {
                            status(503, "injected failure\n")
                        } else {
                            handle(req, id, peer).await?
                        };
                        rsp.headers_mut().insert("x-weft-server", server.name.clone());
                        Ok::<_, Infallible>(rsp)
                    }
                });
                let builder = auto::Builder::new(TokioExecutor::new());
                if let Err(e) = builder.serve_connection(TokioIo::new(stream), service).await {
                    eprintln!("connection {id}: {e}");
                }
            });
        }
    }

    fn query(req: &Request<Incoming>, key: &str) -> Option<u64> {
        req.uri().query()?.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            if k == key { v.parse().ok() } else { None }
        })
    }

    fn full(body: impl Into<Bytes>) -> Body {
        Full::new(body.into()).map_err(|never: Infallible| match never {}).boxed()
    }

    async fn handle(req: Request<Incoming>, conn: u64, peer: SocketAddr) -> Result<Response<Body>, Infallible> {
        println!("request conn={conn} {} {} {:?}", req.method(), req.uri(), req.version());
        let version = format!("{:?}", req.version());
        let body = match req.uri().path() {
            "/echo" => req.into_body().map_err(BoxError::from).boxed(),
            "/sha256" => {
                let mut body = req.into_body();
                let mut hasher = Sha256::new();
                let mut n = 0usize;
                while let Some(frame) = body.frame().await {
                    match frame {
                        Ok(frame) => {
                            if let Some(data) = frame.data_ref() {
                                hasher.update(data);
                                n += data.len();
                            }
                        }
                        Err(e) => {
                            eprintln!("reading the request body: {e}");
                            return Ok(status(400, "bad body\n"));
                        }
                    }
                }
                let digest = format!("sha256={:x} bytes={n}\n", hasher.finalize());
                // Also logged: a mirror's answer is thrown away, so a test
                // reads what a shadow received here.
                print!("{digest}");
                full(digest)
            }
            "/delay" => {
                let ms = query(&req, "ms").unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                full(format!("delayed {ms} ms\n"))
            }
            "/bytes" => bytes_body(query(&req, "n").unwrap_or(0)),
            "/drip" => {
                let every = Duration::from_millis(query(&req, "every").unwrap_or(100));
                let stall = Duration::from_millis(query(&req, "stall").unwrap_or(0));
                drip_body(query(&req, "n").unwrap_or(0), every, stall)
            }
            "/status" => {
                let code = query(&req, "code").and_then(|c| u16::try_from(c).ok()).unwrap_or(200);
                let mut rsp = Response::new(full(format!("status {code}\n")));
                *rsp.status_mut() = http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::OK);
                return Ok(rsp);
            }
            "/trailers" => {
                let mut trailers = HeaderMap::new();
                trailers.insert("grpc-status", HeaderValue::from_static("0"));
                trailers.insert("grpc-message", HeaderValue::from_static("weft-ok"));
                let frames = [Ok(Frame::data(Bytes::from_static(b"weft-trailers\n"))), Ok(Frame::trailers(trailers))];
                StreamBody::new(futures_util::stream::iter(frames)).boxed()
            }
            _ => {
                let mut text = format!("method {}\npath {}\nversion {version}\n", req.method(), req.uri());
                for (name, value) in req.headers() {
                    text.push_str(&format!("header {name}: {}\n", String::from_utf8_lossy(value.as_bytes())));
                }
                full(text)
            }
        };
        let mut response = Response::new(body);
        let headers = response.headers_mut();
        headers.insert("x-weft-conn", conn.into());
        headers.insert("x-weft-peer", peer.to_string().parse().expect("a socket address is a valid header"));
        headers.insert("x-weft-version", version.parse().expect("a version is a valid header"));
        Ok(response)
    }

    fn status(code: u16, body: &'static str) -> Response<Body> {
        let mut response = Response::new(full(body));
        *response.status_mut() = http::StatusCode::from_u16(code).expect("a valid status code");
        response
    }

    /// `n` lines, one every `every`; then, after `stall` (if not zero), one
    /// more. No content-length: HTTP/1 sends it chunked, as it comes.
    fn drip_body(n: u64, every: Duration, stall: Duration) -> Body {
        let lines = futures_util::stream::unfold(0u64, move |i| async move {
            let line = match i {
                i if i < n => format!("drip {i}\n"),
                i if i == n && !stall.is_zero() => {
                    tokio::time::sleep(stall).await;
                    return Some((Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"after stall\n"))), i + 1));
                }
                _ => return None,
            };
            tokio::time::sleep(every).await;
            Some((Ok(Frame::data(Bytes::from(line))), i + 1))
        });
        StreamBody::new(lines).boxed()
    }

    /// N bytes of the shared pattern, in 64 KiB chunks and with no
    /// content-length, so HTTP/1 sends them chunked.
    fn bytes_body(n: u64) -> Body {
        const CHUNK: u64 = 64 * 1024;
        let chunks = futures_util::stream::unfold(0u64, move |offset| async move {
            if offset >= n {
                return None;
            }
            let end = (offset + CHUNK).min(n);
            let chunk: Bytes = (offset..end).map(pattern_byte).collect::<Vec<u8>>().into();
            Some((Ok::<_, BoxError>(Frame::data(chunk)), end))
        });
        StreamBody::new(chunks).boxed()
    }
}

/// Binds in `netns` from a thread that enters it and comes back (a socket
/// stays in the namespace it was created in), then splices each
/// connection to `to`, dialled from the original namespace.
async fn forward(netns: &str, listen: SocketAddr, to: SocketAddr) -> anyhow::Result<()> {
    use nix::sched::{CloneFlags, setns};
    let path = format!("/var/run/netns/{netns}");
    let target = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
    let listener = std::thread::scope(|s| {
        s.spawn(|| -> anyhow::Result<std::net::TcpListener> {
            let home = std::fs::File::open("/proc/thread-self/ns/net").context("opening this thread's netns")?;
            setns(&target, CloneFlags::CLONE_NEWNET).with_context(|| format!("entering {netns}"))?;
            let bound = std::net::TcpListener::bind(listen).with_context(|| format!("binding {listen} in {netns}"));
            setns(&home, CloneFlags::CLONE_NEWNET).context("returning to the original netns")?;
            bound
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the binding thread panicked"))?
    })?;
    listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(listener)?;
    println!("listening");
    loop {
        let (mut inbound, _) = listener.accept().await?;
        tokio::spawn(async move {
            if let Ok(mut outbound) = TcpStream::connect(to).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}
