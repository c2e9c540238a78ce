//! The outbound stack's glue, in-process on 127.0.0.1: the retry loop and
//! the pool's unsent return, upgrades, and the explicit proxy's dispatch,
//! each driven through a real listener by a real HTTP client against real
//! upstream servers. (The end-to-end tests in `tests/` run the same code
//! through network namespaces and iptables.)

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser as _;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use weft_api::policy as api;

use super::Outbound;
use super::http::OutboundService;
use crate::balance::{Balancer, Endpoint};
use crate::config::{Config, RunArgs};
use crate::control::discovery::{Resolution, Resolver, ServiceTarget};
use crate::drain;
use crate::http::Version;
use crate::http::client::Pool;
use crate::http::respond::PROXY_ERROR_HEADER;
use crate::http::server::{self, Conn};
use crate::http::shared::Shared;
use crate::http::stack::stack;
use crate::inbound::Inbound;
use crate::listen::{Stacks, accept_loop};
use crate::metrics::{Direction, Metrics};
use crate::policy::compiled::CompiledPolicy;
use crate::tap::TapConn;
use crate::tap::filter::Filter;
use weft_api::tap::tap_event::Event;

#[derive(clap::Parser)]
struct Cli {
    #[command(flatten)]
    run: RunArgs,
}

/// The proxy's configuration from flags, as `weft-proxy run` parses them.
fn config(args: &[&str]) -> Config {
    let mut argv = vec!["weft-proxy"];
    argv.extend_from_slice(args);
    Cli::try_parse_from(argv).expect("flags").run.into_config().expect("valid flags")
}

/// The outbound side of a proxy with no control plane; `listener` is the
/// outbound listener's address (never a destination).
fn outbound(config: Config, listener: SocketAddr) -> Arc<Outbound> {
    let metrics = Metrics::new();
    let http = Arc::new(Shared {
        pool: Pool::new(config.connect_timeout, config.http.pool_idle_timeout),
        taps: crate::tap::Taps::new(None, metrics.clone()),
        metrics,
        request_timeout: config.http.request_timeout,
        tcp_idle_timeout: config.tcp_idle_timeout,
        identity: None,
        trace: Default::default(),
    });
    Arc::new(Outbound {
        resolver: Resolver::new(None, Duration::from_secs(1)),
        listener,
        fallback_policy: Arc::new(CompiledPolicy::fallback(config.http.request_timeout)),
        policy_timeout: Duration::from_secs(3),
        mirrors: Arc::new(Semaphore::new(super::mirror::MAX_MIRRORS_IN_FLIGHT)),
        http,
        config,
    })
}

/// A mesh service over `endpoints` under `policy`, as discovery would
/// hand it over (the sender halves are returned to keep it alive).
fn service(endpoints: &[SocketAddr], policy: api::OutboundPolicy) -> (Resolution, impl Sized + use<>) {
    let eps: Vec<Arc<Endpoint>> = endpoints.iter().map(|a| Arc::new(Endpoint::new(*a, String::new(), 1))).collect();
    let (eps_tx, eps_rx) = watch::channel(Arc::new(eps));
    let (policy_tx, policy_rx) = watch::channel(Some(Arc::new(CompiledPolicy::compile(&policy))));
    let target = ServiceTarget { balancer: Balancer::new(eps_rx), policy: policy_rx };
    (Resolution::Service(Arc::new(target)), (eps_tx, policy_tx))
}

/// Serves the outbound stack for `upstream` on 127.0.0.1 (one
/// `OutboundService` per connection, as `outbound::accept` does after
/// resolving); returns its address and the drain signal keeping it up.
async fn serve_stack(outbound: Arc<Outbound>, upstream: Resolution) -> (SocketAddr, drain::Signal) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (signal, watch) = drain::channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (outbound, upstream, drain) = (outbound.clone(), upstream.clone(), watch.clone());
            tokio::spawn(async move {
                let metrics = outbound.http.metrics.clone();
                let conn = Conn {
                    version: Version::Http1,
                    drain: drain.clone(),
                    metrics: metrics.clone(),
                    direction: Direction::Outbound,
                };
                let svc = OutboundService { outbound: outbound.clone(), upstream, version: Version::Http1, drain };
                let taps = outbound.http.taps.clone();
                let stack = stack(&outbound.http, Direction::Outbound, svc).tapped(taps, TapConn::default());
                server::serve(stream, conn, stack, &outbound.config.http).await;
            });
        }
    });
    (addr, signal)
}

/// An upstream app: answers 503 when `fail`, else echoes the request body,
/// naming itself in `x-server`.
async fn app(name: &'static str, fail: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| async move {
                    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                    let mut rsp = Response::new(Full::new(if fail { Bytes::new() } else { body }));
                    if fail {
                        *rsp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                    }
                    rsp.headers_mut().insert("x-server", http::HeaderValue::from_static(name));
                    Ok::<_, std::convert::Infallible>(rsp)
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    addr
}

/// An address on which nothing listens (connections are refused).
async fn refusing() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr")
}

/// Sends `req` over a new HTTP/1 connection to `proxy`; the response head,
/// its body still streaming.
async fn request<B>(proxy: SocketAddr, req: Request<B>) -> Response<Incoming>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(proxy).await.expect("connect to the proxy");
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(conn);
    tx.send_request(req).await.expect("response")
}

/// [`request`], read whole: the status, the answering server and the body.
async fn send<B>(proxy: SocketAddr, req: Request<B>) -> (StatusCode, String, Bytes)
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let rsp = request(proxy, req).await;
    let status = rsp.status();
    let server = rsp.headers().get("x-server").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let body = rsp.into_body().collect().await.expect("body").to_bytes();
    (status, server, body)
}

fn retry(attempts: u32, on: &[&str]) -> api::Retry {
    api::Retry {
        attempts,
        retry_on: on.iter().map(|c| (*c).to_owned()).collect(),
        max_body_bytes: 64 * 1024,
        budget: Some(api::RetryBudget { ratio: 1.0, window_ms: 10_000, min_retries_per_second: 100 }),
        ..Default::default()
    }
}

fn round_robin() -> Option<api::LoadBalancer> {
    Some(api::LoadBalancer { kind: api::load_balancer::Kind::RoundRobin as i32, ..Default::default() })
}

/// A streamed (chunked, unknown length) body of `n` chunks of 4 KiB.
fn streamed(n: usize) -> (StreamBody<impl futures_util::Stream<Item = Result<Frame<Bytes>, std::io::Error>>>, Bytes) {
    let chunk = |i: usize| Bytes::from(vec![b'a' + (i % 26) as u8; 4096]);
    let whole: Vec<u8> = (0..n).flat_map(|i| chunk(i).to_vec()).collect();
    let frames = futures_util::stream::iter((0..n).map(move |i| Ok(Frame::data(chunk(i)))));
    (StreamBody::new(frames), Bytes::from(whole))
}

#[tokio::test]
async fn a_request_never_written_is_retried_on_another_endpoint_whole_without_a_copy() {
    let (dead, good) = (refusing().await, app("good", false).await);
    let policy = api::OutboundPolicy {
        service: "web.default".into(),
        port: 80,
        retry: Some(retry(1, &["connect-failure"])),
        load_balancer: round_robin(),
        ..Default::default()
    };
    let (upstream, _keep) = service(&[dead, good], policy);
    let outbound = outbound(config(&[]), refusing().await);
    let (proxy, _signal) = serve_stack(outbound.clone(), upstream).await;
    // POST with a streamed body: neither replayable nor idempotent, so only
    // the pool's unsent return can make its retry possible.
    for i in 0..6 {
        let (body, whole) = streamed(32);
        let req = Request::post(format!("http://web/post-{i}")).body(body).expect("request");
        let (status, server, echoed) = send(proxy, req).await;
        assert_eq!(status, StatusCode::OK, "request {i}");
        assert_eq!(server, "good", "request {i}");
        assert_eq!(echoed, whole, "request {i}: the body did not arrive whole");
    }
    // Round robin counts the retry's pick too, so every first attempt landed
    // on the dead endpoint: six requests, six retries.
    assert_eq!(outbound.http.metrics.policy.retries.load(Relaxed), 6);
}

#[tokio::test]
async fn a_service_whose_policy_does_not_come_is_refused_503_until_it_does() {
    let good = app("good", false).await;
    // Discovery answered (the endpoints are known), the policy did not.
    let eps = vec![Arc::new(Endpoint::new(good, String::new(), 1))];
    let (_eps_tx, eps_rx) = watch::channel(Arc::new(eps));
    let (policy_tx, policy_rx) = watch::channel(None);
    let target = ServiceTarget { balancer: Balancer::new(eps_rx), policy: policy_rx };
    let upstream = Resolution::Service(Arc::new(target));
    let mut outbound = outbound(config(&[]), refusing().await);
    Arc::get_mut(&mut outbound).expect("not shared yet").policy_timeout = Duration::from_millis(200);
    let (proxy, _signal) = serve_stack(outbound, upstream).await;
    let get = || Request::get("http://web/").body(Full::new(Bytes::new())).expect("request");

    let started = tokio::time::Instant::now();
    let rsp = request(proxy, get()).await;
    assert_eq!(rsp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(rsp.headers()[PROXY_ERROR_HEADER], "policy-unavailable");
    assert!(started.elapsed() >= Duration::from_millis(200), "refused before the policy timeout");
    assert!(rsp.headers().get("x-server").is_none(), "the app saw a request routed without its policy");

    // The policy arrives: the next request is routed under it.
    let policy = api::OutboundPolicy { service: "web.default".into(), port: 80, ..Default::default() };
    policy_tx.send_replace(Some(Arc::new(CompiledPolicy::compile(&policy))));
    let (status, server, _) = send(proxy, get()).await;
    assert_eq!((status, server.as_str()), (StatusCode::OK, "good"));
}

#[tokio::test]
async fn a_5xx_is_retried_elsewhere_with_a_buffered_copy() {
    let (bad, good) = (app("bad", true).await, app("good", false).await);
    let policy = api::OutboundPolicy {
        service: "web.default".into(),
        port: 80,
        retry: Some(retry(1, &["5xx"])),
        load_balancer: round_robin(),
        ..Default::default()
    };
    let (upstream, _keep) = service(&[bad, good], policy);
    let outbound = outbound(config(&[]), refusing().await);
    let (proxy, _signal) = serve_stack(outbound.clone(), upstream).await;
    for i in 0..6 {
        let body = Bytes::from(format!("put {i}"));
        let req = Request::put("http://web/put").body(Full::new(body.clone())).expect("request");
        let (status, server, echoed) = send(proxy, req).await;
        assert_eq!((status, server.as_str()), (StatusCode::OK, "good"), "request {i}");
        assert_eq!(echoed, body, "request {i}: the retried copy differs");
    }
    // (As above: every first attempt went to `bad`.)
    assert_eq!(outbound.http.metrics.policy.retries.load(Relaxed), 6);
    // Without a retry condition for 5xx, the 503 comes back as it is.
    let policy = api::OutboundPolicy { service: "web.default".into(), port: 80, ..Default::default() };
    let (upstream, _keep) = service(&[bad], policy);
    let (proxy, _signal) = serve_stack(outbound.clone(), upstream).await;
    let req = Request::get("http://web/").body(Full::new(Bytes::new())).expect("request");
    let (status, server, _) = send(proxy, req).await;
    assert_eq!((status, server.as_str()), (StatusCode::SERVICE_UNAVAILABLE, "bad"));
}

#[tokio::test]
async fn an_upgrade_switches_and_splices_both_ways() {
    // An upstream that switches to an echo protocol after 101.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let echo = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.expect("accept");
        let svc = hyper::service::service_fn(|mut req: Request<Incoming>| async move {
            tokio::spawn(async move {
                if let Ok(up) = hyper::upgrade::on(&mut req).await {
                    let mut io = TokioIo::new(up);
                    let mut buf = [0u8; 5];
                    if io.read_exact(&mut buf).await.is_ok() {
                        let _ = io.write_all(&buf).await;
                    }
                }
            });
            let mut rsp = Response::new(Full::new(Bytes::new()));
            *rsp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            rsp.headers_mut().insert(http::header::UPGRADE, http::HeaderValue::from_static("echo"));
            rsp.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("upgrade"));
            Ok::<_, std::convert::Infallible>(rsp)
        });
        let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
        let _ = conn.with_upgrades().await;
    });
    let policy = api::OutboundPolicy { service: "ws.default".into(), port: 80, ..Default::default() };
    let (upstream, _keep) = service(&[echo], policy);
    let outbound = outbound(config(&[]), refusing().await);
    let (proxy, _signal) = serve_stack(outbound, upstream).await;

    let mut stream = TcpStream::connect(proxy).await.expect("connect");
    stream
        .write_all(b"GET /ws HTTP/1.1\r\nHost: ws\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
        .await
        .expect("write");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await.expect("read the head");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");
    stream.write_all(b"hello").await.expect("write through the tunnel");
    let mut echoed = [0u8; 5];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut echoed))
        .await
        .expect("the echo came back in time")
        .expect("read through the tunnel");
    assert_eq!(&echoed, b"hello");
}

#[tokio::test]
async fn the_explicit_proxy_forwards_absolute_form_and_answers_the_rest_itself() {
    let good = app("good", false).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let proxy = listener.local_addr().expect("addr");
    let config = config(&["--explicit-proxy"]);
    let outbound = outbound(config.clone(), proxy);
    let inbound = inbound(config, &outbound);
    let stacks = Arc::new(Stacks { inbound, outbound, limit: Arc::new(Semaphore::new(16)) });
    let (_signal, watch) = drain::channel();
    // Nothing redirects these connections: they are the explicit proxy's.
    tokio::spawn(accept_loop(listener, Direction::Outbound, stacks, watch));

    let get = |uri: String| Request::get(uri).body(Full::new(Bytes::new())).expect("request");
    let (status, server, _) = send(proxy, get(format!("http://{good}/x"))).await;
    assert_eq!((status, server.as_str()), (StatusCode::OK, "good"));

    let cases = [
        ("/origin-form".to_owned(), StatusCode::BAD_REQUEST, "bad-target"),
        (format!("http://{proxy}/self"), StatusCode::LOOP_DETECTED, "loop"),
        (format!("http://{}/refused", refusing().await), StatusCode::BAD_GATEWAY, "connect-refused"),
    ];
    for (uri, want, reason) in cases {
        let rsp = request(proxy, get(uri.clone())).await;
        assert_eq!(rsp.status(), want, "{uri}");
        assert_eq!(rsp.headers()[PROXY_ERROR_HEADER], reason, "{uri}");
    }
}

/// The inbound side of the same proxy: no policies, sharing `outbound`'s
/// HTTP state.
fn inbound(config: Config, outbound: &Outbound) -> Arc<Inbound> {
    Arc::new(Inbound {
        admission: crate::inbound::admit::Admission::new(config.max_connections),
        config,
        http: outbound.http.clone(),
        policies: None,
        namespace: "default".into(),
    })
}

/// A web.default service over `endpoints`, without routes.
fn web(endpoints: &[SocketAddr]) -> (Resolution, impl Sized + use<>) {
    service(endpoints, api::OutboundPolicy { service: "web.default".into(), port: 80, ..Default::default() })
}

fn path_match(prefix: &str) -> Filter {
    let m = weft_api::tap::Match { path_prefix: prefix.into(), ..Default::default() };
    Filter::from_api(Some(&m)).expect("match")
}

#[tokio::test]
async fn a_tap_sees_what_its_match_selects_and_closes_with_its_caller() {
    let (upstream, _keep) = web(&[app("good", false).await]);
    let outbound = outbound(config(&[]), refusing().await);
    let (proxy, _signal) = serve_stack(outbound.clone(), upstream).await;
    let taps = outbound.http.taps.clone();
    assert!(!taps.is_open());
    let (subscription, mut rx) = taps.subscribe(path_match("/tap"), 0, true);
    assert!(taps.is_open());

    let other = Request::post("http://web/other").body(Full::new(Bytes::from_static(b"no"))).expect("request");
    assert_eq!(send(proxy, other).await.0, StatusCode::OK);
    let req = Request::post("http://web/tap/1")
        .header("authorization", "Bearer SECRET")
        .header("x-visible", "1")
        .body(Full::new(Bytes::from_static(b"hello")))
        .expect("request");
    assert_eq!(send(proxy, req).await.0, StatusCode::OK);

    let mut events = Vec::new();
    while events.len() < 3 {
        let e = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("an event").expect("open");
        events.push(e);
    }
    assert!(events.iter().all(|e| e.id == events[0].id && e.direction == "outbound"), "{events:#?}");
    let Some(Event::Request(req)) = &events[0].event else { panic!("{events:#?}") };
    assert_eq!((req.method.as_str(), req.authority.as_str(), req.path.as_str()), ("POST", "web", "/tap/1"));
    let names: Vec<&str> = req.headers.iter().map(|h| h.name.as_str()).collect();
    assert!(names.contains(&"x-visible") && !names.contains(&"authorization"), "{names:?}");
    let Some(Event::Response(rsp)) = &events[1].event else { panic!("{events:#?}") };
    assert_eq!((rsp.status, rsp.route.as_str(), rsp.backend.as_str()), (200, "default", "web.default:80"));
    let Some(Event::End(end)) = &events[2].event else { panic!("{events:#?}") };
    assert_eq!((end.response_bytes, end.grpc_status, end.reason.as_str()), (5, -1, ""), "{end:?}");
    assert!(end.duration_us >= rsp.latency_us);
    assert!(!events[2].destination.is_empty(), "the upstream's address: {:?}", events[2]);
    assert!(rx.try_recv().is_err(), "more than the one selected request");

    drop(subscription);
    assert!(!taps.is_open(), "the tap stays open after its caller went");
    // Both requests on the edge to web.default, plaintext.
    let text = crate::metrics::render(&outbound.http.metrics);
    let line = "weft_edge_responses_total{direction=\"outbound\",peer=\"web.default\",peer_id=\"\",tls=\"false\",classification=\"success\"} 2";
    assert!(text.lines().any(|l| l == line), "{text}");
}

/// What tap costs on the request path: sequential requests over one
/// keep-alive connection through the outbound stack, with no tap, with a
/// tap whose match selects nothing, and with one selecting every request
/// (at the 100/s cap), interleaved in rounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: cargo test --release -p weft-proxy --lib tap_cost -- --ignored --nocapture"]
async fn tap_cost() {
    const PER_ROUND: usize = 5000;
    const ROUNDS: usize = 7;
    let (upstream, _keep) = web(&[app("good", false).await]);
    let outbound = outbound(config(&[]), refusing().await);
    let (proxy, _signal) = serve_stack(outbound.clone(), upstream).await;
    let taps = outbound.http.taps.clone();
    let stream = TcpStream::connect(proxy).await.expect("connect");
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(conn);
    let modes = ["closed", "open, matching nothing", "open, matching all (100/s tapped)"];
    let mut results: Vec<Vec<(f64, u64, u64)>> = vec![Vec::new(); modes.len()];
    for round in 0..=ROUNDS {
        for (m, _) in modes.iter().enumerate() {
            let tap = match m {
                0 => None,
                1 => Some(taps.subscribe(path_match("/nothing"), 100, false)),
                _ => Some(taps.subscribe(Filter::default(), 100, true)),
            };
            let drained =
                tap.map(|(sub, mut rx)| (sub, tokio::spawn(async move { while rx.recv().await.is_some() {} })));
            let mut lat = Vec::with_capacity(PER_ROUND);
            let start = std::time::Instant::now();
            for _ in 0..PER_ROUND {
                let t = std::time::Instant::now();
                tx.ready().await.expect("ready");
                let rsp = tx
                    .send_request(Request::get("http://web/cost").body(Full::new(Bytes::new())).expect("req"))
                    .await
                    .expect("rsp");
                rsp.into_body().collect().await.expect("body");
                lat.push(t.elapsed().as_nanos() as u64);
            }
            let rps = PER_ROUND as f64 / start.elapsed().as_secs_f64();
            drop(drained);
            lat.sort_unstable();
            // Round 0 warms up.
            if round > 0 {
                results[m].push((rps, lat[lat.len() / 2], lat[lat.len() * 99 / 100]));
            }
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!("mode | req/s (median of {ROUNDS} rounds of {PER_ROUND}) | p50 µs | p99 µs");
    for (m, name) in modes.iter().enumerate() {
        let r = &results[m];
        println!(
            "{name} | {:.0} | {:.1} | {:.1}",
            median(r.iter().map(|x| x.0).collect()),
            median(r.iter().map(|x| x.1 as f64 / 1e3).collect()),
            median(r.iter().map(|x| x.2 as f64 / 1e3).collect()),
        );
    }
    println!("tap events dropped: {}", outbound.http.metrics.tap_dropped.load(Relaxed));
}

/// A task is allocated at the size of its whole future for as long as it
/// lives. A connection's set-up task (detection, the handshake) is held by
/// every connection in its first second, a flood's half-open ones
/// included; what only a phase needs (a handshake, a connect, waiting for
/// policy) is boxed for that phase, and serving runs in a task of its own
/// (issue #14: memory per idle connection). The bounds are for this
/// (debug) build, which lays futures out larger than a release build.
#[tokio::test]
async fn connection_tasks_stay_small() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let config = config(&[]);
    let outbound = outbound(config.clone(), addr);
    let inbound = inbound(config, &outbound);
    let (_signal, watch) = drain::channel();
    let stream = || async {
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (stream, peer) = accepted.expect("accept");
        (client.expect("connect"), stream, peer)
    };
    let (_c1, s1, peer) = stream().await;
    let slot = inbound.admission.try_enter(peer.ip()).expect("admitted");
    let inbound_task = crate::inbound::accept::serve(s1, peer, slot, inbound.clone(), watch.clone());
    let (_c2, s2, peer) = stream().await;
    let outbound_task = crate::outbound::accept::serve(s2, peer, outbound, watch);
    let (inbound_size, outbound_size) = (size_of_val(&inbound_task), size_of_val(&outbound_task));
    println!("task sizes: inbound {inbound_size} B, outbound {outbound_size} B");
    assert!(inbound_size <= 2048, "the inbound connection task is {inbound_size} B");
    assert!(outbound_size <= 2048, "the outbound connection task is {outbound_size} B");
}
