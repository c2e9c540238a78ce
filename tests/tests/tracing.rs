//! Tracing end to end, against peers we did not write: spans go to an
//! OTLP/gRPC receiver built on Python `grpcio` and the official
//! `opentelemetry-proto` stubs (`tests/otlp/receiver.py`), and requests
//! come from the OpenTelemetry Python SDK (`tests/otlp/client.py`), which
//! injects W3C or B3 context as any instrumented app would.
//!
//! ```text
//! cp:     weft-control --trace-collector CP:4317 ─ ProxyConfig.Watch ─► both proxies
//!         receiver.py :4317 ◄── OTLP/gRPC ── both proxies
//! client: client.py (SDK span) ─► proxy (outbound server span, client span per attempt)
//!           ══ mTLS ══► web: proxy (inbound server span) ─► testkit app (echoes the head it got)
//! ```
//!
//! The Python packages live in a venv outside the clone (`.ci/run` makes
//! it): `/var/cache/weft/py`, or `WEFT_PY_VENV`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use weft_tests::{ControlPlane, Mesh, Pod, Proc, Proxy, Signal, eventually};

const WEB: &str = "198.18.0.200:80";
const SERVICES: &str = weft_tests::WEB_SERVICE;
const RETRIES: &str = "apiVersion: policy.weft.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: retries, namespace: default}
spec:
  targetRef: {kind: Service, name: web}
  retries: {attempts: 2, retryOn: [5xx], backoff: {base: 1ms, max: 5ms}}
";
const ID_CLIENT: &str = "spiffe://cluster.local/ns/default/sa/client";
const ID_WEB: &str = "spiffe://cluster.local/ns/default/sa/web";
const OTLP_PORT: u16 = 4317;
const SERVER: i64 = 2;
const CLIENT: i64 = 3;

/// The venv's Python, with the packages the receiver and client import;
/// fails saying how to make it when it is missing.
fn python() -> PathBuf {
    let venv = std::env::var_os("WEFT_PY_VENV").map_or_else(|| PathBuf::from("/var/cache/weft/py"), PathBuf::from);
    let python = venv.join("bin/python");
    let imports = "import grpc, opentelemetry.sdk, opentelemetry.proto, opentelemetry.propagators.b3";
    let ok = std::process::Command::new(&python).args(["-c", imports]).output().is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "{} cannot import grpcio and the OpenTelemetry packages; make the venv (as .ci/run does):\n  \
         apt-get install python3-venv && python3 -m venv {v} && {v}/bin/pip install grpcio==1.85.1 \
         opentelemetry-api==1.45.2 opentelemetry-sdk==1.45.2 opentelemetry-proto==1.45.2 \
         opentelemetry-propagator-b3==1.45.1",
        python.display(),
        v = venv.display(),
    );
    python
}

fn otlp_script(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("otlp").join(name).to_string_lossy().into_owned()
}

/// A mesh with tracing on: the receiver, a control plane naming it, the
/// web replica (its app failing every `fail_every`th request, 0 never)
/// and a client, both meshed (mTLS), with retries on 5xx towards web.
struct Traced {
    _mesh: Mesh,
    cp: ControlPlane,
    _receiver: Proc,
    spans: PathBuf,
    client: Pod,
    client_proxy: Proxy,
    web: Pod,
    web_proxy: Proxy,
    _app: Proc,
    python: PathBuf,
}

fn traced(sampling: &str, fail_every: &str) -> Traced {
    let python = python();
    let mesh = Mesh::new();
    let cp_pod = mesh.pod("cp");
    let collector = format!("{}:{OTLP_PORT}", cp_pod.ip());
    let spans = cp_pod.dir().join("spans.jsonl");
    let out = spans.to_string_lossy().into_owned();
    let mut receiver = cp_pod.spawn(
        "otlp-receiver",
        &python,
        &[otlp_script("receiver.py").as_str(), "--listen", &collector, "--out", &out],
    );
    receiver.wait_stdout("listening", Duration::from_secs(20));
    let cp = cp_pod.run_control_with_ca(SERVICES, &["--trace-collector", &collector, "--trace-sampling", sampling]);
    std::fs::write(cp.policy_dir.join("retries.yaml"), RETRIES).expect("writing the retry policy");

    let web = mesh.pod("web");
    let app = web.spawn_testkit(
        "app",
        &["http-server", "--listen", "0.0.0.0:8080", "--name", "web-0", "--fail-every", fail_every],
    );
    web.wait_listening(8080);
    let web_proxy = web.run_meshed_proxy(&cp, "web", Some(("web-0", "app=web", "8080")), &[]);
    let client = mesh.pod("client");
    let client_proxy = client.run_meshed_proxy(&cp, "client", None, &[]);

    // Both proxies follow the control plane's tracing settings, and the
    // client runs the retry policy. The last request here succeeded, so
    // with `--fail-every 2` the app's next request is a failure.
    eventually(Duration::from_secs(15), "tracing settings and the retry policy in force", || {
        let run = client
            .exec("curl", &["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2", "http://198.18.0.200/"]);
        let collectors: Vec<Value> =
            [&client_proxy, &web_proxy].iter().map(|p| p.config_json()["tracing"]["collector"].clone()).collect();
        let sources = client_proxy.policy_sources(WEB);
        let ready = run.stdout == "200"
            && collectors.iter().all(|c| c.as_str() == Some(collector.as_str()))
            && sources.iter().any(|s| s == "TrafficPolicy/default/retries");
        if ready { Ok(()) } else { Err(format!("GET {}, collectors {collectors:?}, policy {sources:?}", run.stdout)) }
    });
    Traced { _mesh: mesh, cp, _receiver: receiver, spans, client, client_proxy, web, web_proxy, _app: app, python }
}

impl Traced {
    /// Runs the SDK client in the client pod; returns its JSON line.
    fn request(&self, url: &str, args: &[&str]) -> Value {
        let script = otlp_script("client.py");
        let mut argv = vec![script.as_str(), url];
        argv.extend_from_slice(args);
        let run = self.client.exec(&self.python, &argv);
        assert!(run.status.success(), "the OpenTelemetry client failed: {run}");
        serde_json::from_str(run.stdout.trim()).unwrap_or_else(|e| panic!("client output is not JSON ({e}): {run}"))
    }

    /// Every span the receiver got so far.
    fn all_spans(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.spans).unwrap_or_default();
        text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad span line ({e}): {l}"))).collect()
    }

    /// Waits until the receiver holds `n` spans of `trace_id`, then returns them.
    fn spans(&self, trace_id: &str, n: usize) -> Vec<Value> {
        eventually(Duration::from_secs(15), &format!("{n} spans of trace {trace_id} exported"), || {
            let spans: Vec<Value> = self.all_spans().into_iter().filter(|s| s["trace_id"] == trace_id).collect();
            if spans.len() >= n { Ok(spans) } else { Err(format!("{} so far: {spans:#?}", spans.len())) }
        })
    }
}

fn attr<'a>(span: &'a Value, key: &str) -> &'a Value {
    &span["attributes"][key]
}

/// The spans of `kind` on the `direction` side.
fn side<'a>(spans: &'a [Value], kind: i64, direction: Option<&str>) -> Vec<&'a Value> {
    spans.iter().filter(|s| s["kind"] == kind && direction.is_none_or(|d| attr(s, "weft.direction") == d)).collect()
}

/// The value of header `name` in the testkit's echo of the request head.
fn echoed<'a>(body: &'a str, name: &str) -> Option<&'a str> {
    body.lines().find_map(|l| l.strip_prefix("header ")?.strip_prefix(name)?.strip_prefix(": "))
}

#[test]
fn a_w3c_trace_crosses_two_proxies_with_retries_as_sibling_attempts() {
    let t = traced("0", "2");
    let sent = t.request(
        "http://198.18.0.200/head?token=SECRET-QUERY",
        &["--header", "authorization: Bearer SECRET-TOKEN", "--header", "cookie: session=SECRET-COOKIE"],
    );
    assert_eq!(sent["status"], 200, "the retry should have answered: {sent:#}");
    let trace_id = sent["trace_id"].as_str().expect("trace id");
    let client_span = sent["span_id"].as_str().expect("span id");

    // One outbound server span, two attempts (503, then 200), and an
    // inbound server span for each attempt that reached web.
    let spans = t.spans(trace_id, 5);
    assert_eq!(spans.len(), 5, "{spans:#?}");
    let outbound = side(&spans, SERVER, Some("outbound"));
    let attempts = side(&spans, CLIENT, None);
    let inbound = side(&spans, SERVER, Some("inbound"));
    assert_eq!((outbound.len(), attempts.len(), inbound.len()), (1, 2, 2), "{spans:#?}");

    // client.py's span ─► outbound server span
    let server = outbound[0];
    assert_eq!(server["parent_span_id"], client_span, "{server:#}");
    for (key, want) in [
        ("http.request.method", Value::from("GET")),
        ("url.path", "/head".into()),
        ("url.scheme", "http".into()),
        ("server.address", "198.18.0.200".into()),
        ("network.protocol.version", "1.1".into()),
        ("http.response.status_code", 200.into()),
        ("weft.backend", "web.default".into()),
        ("weft.retry_count", 1.into()),
    ] {
        assert_eq!(*attr(server, key), want, "outbound server span {key}: {server:#}");
    }
    assert!(attr(server, "weft.route").is_string(), "{server:#}");
    assert!(server["resource"]["service.name"].is_string(), "{server:#}");

    // ─► the attempts: siblings under it, the first failed, the retry won.
    let mut attempts = attempts;
    attempts.sort_by_key(|s| attr(s, "weft.retry_count").as_i64());
    let web_addr = t.web.ip().to_string();
    for (i, (attempt, status)) in attempts.iter().zip([503, 200]).enumerate() {
        assert_eq!(attempt["parent_span_id"], server["span_id"], "attempt {i}: {attempt:#}");
        assert_eq!(*attr(attempt, "weft.retry_count"), i, "{attempt:#}");
        assert_eq!(*attr(attempt, "http.response.status_code"), status, "{attempt:#}");
        assert_eq!(*attr(attempt, "server.address"), web_addr.as_str(), "{attempt:#}");
        assert_eq!(*attr(attempt, "server.port"), 8080, "{attempt:#}");
        assert_eq!(*attr(attempt, "weft.peer_id"), ID_WEB, "the verified server identity: {attempt:#}");
        assert_eq!(*attr(attempt, "weft.backend"), "web.default", "{attempt:#}");
        assert!(attempt["start"].as_u64() >= server["start"].as_u64(), "{attempt:#}");
        assert!(attempt["end"].as_u64() <= server["end"].as_u64(), "{attempt:#}");
    }
    assert_eq!(attempts[0]["status"], 2, "a 503 attempt is an error: {:#}", attempts[0]);
    assert!(attempts[0]["end"].as_u64() <= attempts[1]["start"].as_u64(), "attempts overlap: {attempts:#?}");

    // ─► each attempt's inbound server span on web, with the client's
    // verified identity; web's resource is its workload.
    for (attempt, status) in attempts.iter().zip([503, 200]) {
        let child: Vec<_> = inbound.iter().filter(|s| s["parent_span_id"] == attempt["span_id"]).collect();
        assert_eq!(child.len(), 1, "one inbound span under attempt {attempt:#}: {inbound:#?}");
        let child = child[0];
        assert_eq!(*attr(child, "http.response.status_code"), status, "{child:#}");
        assert_eq!(*attr(child, "weft.peer_id"), ID_CLIENT, "{child:#}");
        assert_eq!(*attr(child, "url.path"), "/head", "{child:#}");
        assert_eq!(child["resource"]["service.name"], "web-0", "{child:#}");
    }

    // The app got the successful inbound span as its parent, W3C, sampled.
    let body = sent["body"].as_str().expect("body");
    let winner = inbound.iter().find(|s| *attr(s, "http.response.status_code") == 200).expect("a 200 inbound span");
    // Trace flags as sent (the SDK sets W3C Level 2's random bit too).
    let flags = sent["sent"]["traceparent"].as_str().and_then(|tp| tp.rsplit('-').next()).expect("sent flags");
    let want = format!("00-{trace_id}-{}-{flags}", winner["span_id"].as_str().expect("span id"));
    assert_eq!(echoed(body, "traceparent"), Some(want.as_str()), "the app's head:\n{body}");

    // No credential reached a span.
    for s in t.all_spans() {
        assert!(!s.to_string().contains("SECRET"), "a credential leaked into a span: {s:#}");
    }
    // Counted as exported, nothing dropped.
    for proxy in [&t.client_proxy, &t.web_proxy] {
        let m = proxy.metrics();
        assert!(m.sum("weft_trace_spans_exported_total", &[]) >= 2.0, "{}", proxy.metrics_text());
        assert_eq!(m.sum("weft_trace_spans_dropped_total", &[]), 0.0, "{}", proxy.metrics_text());
    }
}

#[test]
fn unsampled_contexts_are_not_traced_and_b3_comes_back_as_b3() {
    let mut t = traced("0", "0");

    // The caller decided not to sample: the proxies pass its context on
    // untouched and record nothing.
    let unsampled = t.request("http://198.18.0.200/head", &["--unsampled"]);
    assert_eq!(unsampled["status"], 200, "{unsampled:#}");
    let sent_tp = unsampled["sent"]["traceparent"].as_str().expect("the SDK sent a traceparent");
    let flags = sent_tp.rsplit('-').next().and_then(|f| u8::from_str_radix(f, 16).ok());
    assert_eq!(flags.map(|f| f & 1), Some(0), "the SDK sent a sampled context: {sent_tp}");
    let body = unsampled["body"].as_str().expect("body");
    assert_eq!(echoed(body, "traceparent"), Some(sent_tp), "an unsampled context was changed:\n{body}");
    // No context and a sampling ratio of 0: nothing either.
    let plain = t.client.curl(&["http://198.18.0.200/head"]);
    assert_eq!(plain.status(), 200, "{}", plain.run);
    assert_eq!(echoed(plain.body(), "traceparent"), None, "{}", plain.body());

    // B3 single header in, B3 single header out, this hop's span as parent.
    let single = t.request("http://198.18.0.200/head", &["--propagator", "b3"]);
    let trace_single = single["trace_id"].as_str().expect("trace id");
    let spans = t.spans(trace_single, 3);
    assert_eq!(spans.len(), 3, "{spans:#?}");
    let inbound = side(&spans, SERVER, Some("inbound"));
    let outbound = side(&spans, SERVER, Some("outbound"));
    let attempts = side(&spans, CLIENT, None);
    assert_eq!((inbound.len(), outbound.len(), attempts.len()), (1, 1, 1), "{spans:#?}");
    assert_eq!(outbound[0]["parent_span_id"], single["span_id"]);
    assert_eq!(attempts[0]["parent_span_id"], outbound[0]["span_id"]);
    assert_eq!(inbound[0]["parent_span_id"], attempts[0]["span_id"]);
    let body = single["body"].as_str().expect("body");
    let want = format!("{trace_single}-{}-1", inbound[0]["span_id"].as_str().expect("span id"));
    assert_eq!(echoed(body, "b3"), Some(want.as_str()), "the app's head:\n{body}");
    assert_eq!(echoed(body, "traceparent"), None, "B3 in must not become W3C out:\n{body}");

    // B3 multi header likewise, with the parent span header.
    let multi = t.request("http://198.18.0.200/head", &["--propagator", "b3multi"]);
    let trace_multi = multi["trace_id"].as_str().expect("trace id");
    let spans = t.spans(trace_multi, 3);
    let inbound = side(&spans, SERVER, Some("inbound"));
    let attempts = side(&spans, CLIENT, None);
    assert_eq!((inbound.len(), attempts.len()), (1, 1), "{spans:#?}");
    let body = multi["body"].as_str().expect("body");
    assert_eq!(echoed(body, "x-b3-traceid"), Some(trace_multi), "{body}");
    assert_eq!(echoed(body, "x-b3-spanid"), inbound[0]["span_id"].as_str(), "{body}");
    assert_eq!(echoed(body, "x-b3-parentspanid"), attempts[0]["span_id"].as_str(), "{body}");
    assert_eq!(echoed(body, "x-b3-sampled"), Some("1"), "{body}");

    // The B3 spans were recorded after the unsampled and the plain request
    // on the same proxies and have all arrived: those two left none.
    let all = t.all_spans();
    let unsampled_trace = unsampled["trace_id"].as_str().expect("trace id");
    assert!(
        all.iter().all(|s| s["trace_id"] == trace_single || s["trace_id"] == trace_multi),
        "{unsampled_trace}: {all:#?}"
    );
    assert_eq!(all.len(), 6, "{all:#?}");

    // A new sampling ratio reaches the running proxies: the control plane
    // comes back with --trace-sampling 1, and a request without context
    // now starts a trace at the client's proxy.
    t.cp.proc.signal(Signal::SIGTERM);
    t.cp.proc.wait_exit(Duration::from_secs(10));
    let collector = format!("{}:{OTLP_PORT}", t.cp.pod.ip());
    let cp = t.cp.pod.start_control(
        t.cp.services.clone(),
        t.cp.policy_dir.clone(),
        t.cp.ca.clone(),
        &["--trace-collector", &collector, "--trace-sampling", "1"],
    );
    t.cp = cp;
    eventually(Duration::from_secs(15), "the proxies follow the new ratio", || {
        let ratios: Vec<Value> = [&t.client_proxy, &t.web_proxy]
            .iter()
            .map(|p| p.config_json()["tracing"]["sampling_ratio"].clone())
            .collect();
        if ratios.iter().all(|r| r.as_f64() == Some(1.0)) { Ok(()) } else { Err(format!("ratios {ratios:?}")) }
    });
    let plain = t.client.curl(&["http://198.18.0.200/head"]);
    assert_eq!(plain.status(), 200, "{}", plain.run);
    let tp = echoed(plain.body(), "traceparent").expect("a trace started for a request without context").to_owned();
    let trace_new = tp.split('-').nth(1).expect("trace id");
    let spans = t.spans(trace_new, 3);
    let outbound = side(&spans, SERVER, Some("outbound"));
    assert_eq!(outbound.len(), 1, "{spans:#?}");
    assert_eq!(outbound[0]["parent_span_id"], "", "a trace the proxy started has a root span: {spans:#?}");
}
