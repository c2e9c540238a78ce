//! The dashboard's JSON API in-process: a control plane on 127.0.0.1:0
//! with a services file and the demo's canary route, three workloads whose
//! "proxies" are small `/metrics` servers on their own loopback addresses
//! (counters growing with each scrape), and real HTTP GETs to the API.
//! Every wait has a deadline; nothing sleeps for a fixed time.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use weft_control::index::{Event, NsName, Workload};
use weft_control::{Config, Control};

const DEADLINE: Duration = Duration::from_secs(20);

const SERVICES: &str = "services:
  - {name: web, namespace: default, selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}
  - {name: web-v1, namespace: default, selector: {app: web, version: v1}, ports: [{port: 80, targetPort: 8080}]}
  - {name: web-v2, namespace: default, selector: {app: web, version: v2}, ports: [{port: 80, targetPort: 8080}]}
";

const ROUTE: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web-canary, namespace: default}
spec:
  parentRefs: [{group: \"\", kind: Service, name: web, port: 80}]
  rules:
    - backendRefs:
        - {name: web-v1, port: 80, weight: 90}
        - {name: web-v2, port: 80, weight: 10}
";

const WEB_ID: &str = "spiffe://cluster.local/ns/default/sa/web";
const LOAD_ID: &str = "spiffe://cluster.local/ns/default/sa/load";

/// A web pod's metrics after `n` scrapes: 10 successful inbound requests
/// per scrape, all from `load` over mTLS, within 5 ms.
fn web_metrics(n: u64) -> String {
    let k = 10 * n;
    format!(
        "weft_responses_total{{direction=\"inbound\",authority=\"web\",status_code=\"200\",classification=\"success\"}} {k}\n\
         weft_response_latency_seconds_bucket{{direction=\"inbound\",le=\"0.001\"}} 0\n\
         weft_response_latency_seconds_bucket{{direction=\"inbound\",le=\"0.005\"}} {k}\n\
         weft_response_latency_seconds_bucket{{direction=\"inbound\",le=\"+Inf\"}} {k}\n\
         weft_edge_responses_total{{direction=\"inbound\",peer=\"\",peer_id=\"{LOAD_ID}\",tls=\"true\",classification=\"success\"}} {k}\n\
         weft_edge_response_latency_seconds_bucket{{direction=\"inbound\",peer=\"\",peer_id=\"{LOAD_ID}\",tls=\"true\",le=\"0.005\"}} {k}\n\
         weft_edge_response_latency_seconds_bucket{{direction=\"inbound\",peer=\"\",peer_id=\"{LOAD_ID}\",tls=\"true\",le=\"+Inf\"}} {k}\n\
         weft_tcp_open_connections{{direction=\"inbound\",protocol=\"http1\"}} 2\n"
    )
}

/// The load pod's: 9 requests per scrape to web-v1, 1 to web-v2, by the
/// canary route.
fn load_metrics(n: u64) -> String {
    let route = "default/web-canary#0";
    let mut out = String::new();
    for (backend, k) in [("web-v1.default", 9 * n), ("web-v2.default", n)] {
        out += &format!(
            "weft_route_requests_total{{route=\"{route}\",backend=\"{backend}\",classification=\"success\"}} {k}\n\
             weft_route_response_latency_seconds_bucket{{route=\"{route}\",backend=\"{backend}\",classification=\"success\",le=\"0.005\"}} {k}\n\
             weft_route_response_latency_seconds_bucket{{route=\"{route}\",backend=\"{backend}\",classification=\"success\",le=\"+Inf\"}} {k}\n"
        );
    }
    out += &format!(
        "weft_edge_responses_total{{direction=\"outbound\",peer=\"web.default\",peer_id=\"{WEB_ID}\",tls=\"true\",classification=\"success\"}} {}\n",
        10 * n
    );
    out
}

/// Serves `metrics(n)` on `ip:port`, `n` counting the scrapes.
async fn proxy(ip: &str, port: u16, metrics: fn(u64) -> String) -> u16 {
    let listener = tokio::net::TcpListener::bind((ip.parse::<IpAddr>().unwrap(), port)).await.expect("bind");
    let port = listener.local_addr().unwrap().port();
    let scrapes = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let scrapes = scrapes.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| {
                    let n = scrapes.fetch_add(1, Ordering::Relaxed) + 1;
                    async move { Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(metrics(n))))) }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    port
}

async fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect to the dashboard");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(conn);
    let req = http::Request::get(path).header("host", addr.to_string()).body(Empty::<Bytes>::new()).unwrap();
    let rsp = tokio::time::timeout(DEADLINE, sender.send_request(req)).await.expect("an answer in time").expect("GET");
    let status = rsp.status().as_u16();
    let ctype = rsp.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let body = rsp.into_body().collect().await.expect("body").to_bytes();
    (status, ctype, String::from_utf8_lossy(&body).into_owned())
}

async fn api(addr: SocketAddr, path: &str) -> Value {
    let (status, ctype, body) = get(addr, path).await;
    assert_eq!((status, ctype.as_str()), (200, "application/json"), "GET {path}: {body}");
    serde_json::from_str(&body).expect("JSON")
}

fn workload(name: &str, ip: &str, sa: &str, labels: &[(&str, &str)]) -> Event {
    Event::WorkloadApplied(Workload {
        name: NsName::new("default", name),
        service_account: sa.into(),
        labels: labels.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
        address: ip.parse().unwrap(),
        ports: vec![8080],
        meshed: true,
        ready: true,
        zone: String::new(),
        opaque_ports: Vec::new(),
    })
}

async fn start(dir: &Path, admin_port: u16) -> Control {
    std::fs::write(dir.join("services.yaml"), SERVICES).unwrap();
    std::fs::create_dir_all(dir.join("policy")).unwrap();
    std::fs::write(dir.join("policy/web-canary.yaml"), ROUTE).unwrap();
    let config = Config {
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        admin_addr: "127.0.0.1:0".parse().unwrap(),
        dashboard_addr: Some("127.0.0.1:0".parse().unwrap()),
        services: Some(dir.join("services.yaml")),
        policy_paths: vec![dir.join("policy")],
        telemetry: weft_control::telemetry::Settings {
            interval: Duration::from_millis(200),
            admin_port,
            extra: vec!["default/load-0/load=127.0.7.4".parse().unwrap()],
            ..Default::default()
        },
        ..Config::default()
    };
    weft_control::start(config).await.expect("control plane starts")
}

/// The first of `rows` whose `key` fields equal `values`.
fn row<'a>(rows: &'a Value, want: &[(&str, &str)]) -> &'a Value {
    rows.as_array()
        .expect("rows")
        .iter()
        .find(|r| want.iter().all(|(k, v)| r[*k].as_str() == Some(*v)))
        .unwrap_or_else(|| panic!("no row with {want:?} in {rows:#}"))
}

#[tokio::test]
async fn the_api_aggregates_the_proxies_metrics() {
    let port = proxy("127.0.7.2", 0, web_metrics).await;
    proxy("127.0.7.3", port, web_metrics).await;
    proxy("127.0.7.4", port, load_metrics).await;
    let dir = tempfile::tempdir().unwrap();
    let control = start(dir.path(), port).await;
    control.index().apply([
        workload("web-v1-0", "127.0.7.2", "web", &[("app", "web"), ("version", "v1")]),
        workload("web-v2-0", "127.0.7.3", "web", &[("app", "web"), ("version", "v2")]),
    ]);
    let addr = control.dashboard_addr().expect("the dashboard is on");

    // Wait for a window with traffic in it: three scrapes of each pod.
    let deadline = Instant::now() + DEADLINE;
    let services = loop {
        let stat = api(addr, "/api/stat?by=service&window=1m").await;
        let ready = stat["rows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "web" && r["version"] == "v2" && r["rps"].as_f64() > Some(0.0));
        let routed = api(addr, "/api/workloads").await["workloads"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w["last_scrape"].is_number());
        if ready && routed {
            break stat;
        }
        assert!(Instant::now() < deadline, "no traffic in /api/stat within {DEADLINE:?}: {stat:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(services["window_seconds"], 60.0);
    let web = row(&services["rows"], &[("name", "web"), ("version", "")]);
    assert_eq!(
        (web["kind"].as_str(), web["meshed"].as_str(), web["success"].as_f64()),
        (Some("service"), Some("2/2"), Some(1.0))
    );
    assert_eq!(web["tcp_conn"], 4.0);
    // 10 requests per 200 ms scrape per pod: 50/s each (scrape timing makes it approximate).
    let rps = web["rps"].as_f64().unwrap();
    assert!((40.0..=130.0).contains(&rps), "web rps {rps}");
    let p99 = web["p99_ms"].as_f64().unwrap();
    assert!((1.0..=5.0).contains(&p99), "p99 {p99} within the (1 ms, 5 ms] bucket");
    for v in ["v1", "v2"] {
        let r = row(&services["rows"], &[("name", "web"), ("version", v)]);
        assert_eq!((r["meshed"].as_str(), r["success"].as_f64()), (Some("1/1"), Some(1.0)), "{v}");
    }
    row(&services["rows"], &[("name", "web-v1"), ("version", "")]);

    let workloads = api(addr, "/api/stat?by=workload").await;
    let v1 = row(&workloads["rows"], &[("name", "web-v1")]);
    assert_eq!(
        (v1["kind"].as_str(), v1["version"].as_str(), v1["meshed"].as_str()),
        (Some("workload"), Some("v1"), Some("1/1"))
    );
    let load = row(&workloads["rows"], &[("name", "load")]);
    assert!(load["success"].is_null(), "load answers nothing: {load}");

    let routes = api(addr, "/api/routes?service=default/web").await;
    let brief: Vec<(String, String, u64)> = routes["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (r["route"].as_str().unwrap().into(), r["backend"].as_str().unwrap().into(), r["weight"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(
        brief,
        [
            ("default/web-canary#0".into(), "web-v1.default".into(), 90),
            ("default/web-canary#0".into(), "web-v2.default".into(), 10)
        ]
    );
    let r1 = &routes["rows"][0];
    assert_eq!((r1["service"].as_str(), r1["success"].as_f64()), (Some("web.default"), Some(1.0)));
    assert!(r1["rps"].as_f64().unwrap() > routes["rows"][1]["rps"].as_f64().unwrap(), "{routes:#}");

    let edges = api(addr, "/api/edges").await;
    for dst in ["web-v1", "web-v2"] {
        let e = row(&edges["rows"], &[("src", "load"), ("dst", dst)]);
        assert_eq!(
            (e["client_id"].as_str(), e["server_id"].as_str(), e["secured"].as_bool(), e["src_ns"].as_str()),
            (Some(LOAD_ID), Some(WEB_ID), Some(true), Some("default"))
        );
    }
    assert_eq!(edges["rows"].as_array().unwrap().len(), 2, "{edges:#}");

    let series = api(addr, "/api/series?service=default/web&window=1m").await;
    assert_eq!(series["step_seconds"], 0.2);
    let n = series["t"].as_array().unwrap().len();
    assert_eq!(n, 300);
    for line in ["all", "v1", "v2"] {
        let rps = series["series"][line]["rps"].as_array().unwrap();
        assert_eq!(rps.len(), n);
        assert!(rps.iter().any(|v| v.as_f64() > Some(0.0)), "{line}: {rps:?}");
    }

    let sd = api(addr, "/api/prometheus/sd").await;
    let targets: Vec<(&str, &str, &str)> = sd
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["targets"][0].as_str().unwrap(),
                t["labels"]["pod"].as_str().unwrap(),
                t["labels"]["service"].as_str().unwrap_or(""),
            )
        })
        .collect();
    let at = |ip: &str| format!("{ip}:{port}");
    assert_eq!(
        targets,
        [
            (&*at("127.0.7.4"), "load-0", ""),
            (&*at("127.0.7.2"), "web-v1-0", "web"),
            (&*at("127.0.7.3"), "web-v2-0", "web")
        ]
    );

    // Errors are JSON with a status; the page is HTML.
    for (path, status) in [
        ("/api/nope", 404),
        ("/api/stat?window=soon", 400),
        ("/api/routes", 400),
        ("/api/routes?service=x/nope", 404),
        ("/api/stat?by=pods", 400),
    ] {
        let (got, ctype, body) = get(addr, path).await;
        assert_eq!((got, ctype.as_str()), (status, "application/json"), "{path}: {body}");
        assert!(serde_json::from_str::<Value>(&body).unwrap()["error"].is_string(), "{path}: {body}");
    }
    let (status, _, body) = get(addr, "/api/tap?workload=web-v1").await;
    assert_eq!(status, 503, "no CA, no tap: {body}");
    assert!(body.contains("CA is off"), "{body}");
    let (status, ctype, body) = get(addr, "/").await;
    assert_eq!((status, ctype.as_str()), (200, "text/html; charset=utf-8"));
    assert!(body.contains("/assets/app.js"));
    for asset in
        ["/assets/app.js", "/assets/style.css", "/assets/vendor/uPlot.iife.min.js", "/assets/vendor/uPlot.min.css"]
    {
        assert_eq!(get(addr, asset).await.0, 200, "{asset}");
    }
    control.shutdown().await;
}
