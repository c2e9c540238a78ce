//! Percentiles users can trust: a server whose answers take a known
//! 1–10 ms (uniform, from a seeded generator) is called through its pod's
//! inbound proxy; the client measures every request; Prometheus (Debian's,
//! scraping the proxy every second while the requests run) answers
//! `histogram_quantile(0.99, …)` over the proxy's inbound histogram, which
//! must be within 10 % of the p99 the client measured. The buckets it read
//! must be cumulative at every scrape, end in a `+Inf` equal to `_count`,
//! and never reset while the proxy lives.
//!
//! ```text
//!  pod client                    pod srv                                      pod prom
//!  python3 (times each request) ─► iptables ─► proxy :4143 ─► python3 :8080    prometheus ──► srv:4191/metrics
//! ```
//!
//! The client has no proxy of its own, so what it measures is what the
//! inbound proxy measures plus one hop on the bridge, not a second proxy.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use weft_tests::{Mesh, Pod, eventually, tool};

/// A keep-alive HTTP/1.1 server answering after a uniform 1–10 ms, and a
/// client printing each request's time in microseconds.
const LATENCY_PY: &str = r#"
import http.client, http.server, random, sys, time

def serve(port):
    rng = random.Random(13)
    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True
        def do_GET(self):
            time.sleep(rng.uniform(0.001, 0.010))
            # One write: no small second segment for Nagle to hold back.
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
        def log_message(self, *args):
            pass
    http.server.ThreadingHTTPServer(("0.0.0.0", port), H).serve_forever()

def client(host, port, n):
    conn = http.client.HTTPConnection(host, port, timeout=5)
    for _ in range(n):
        start = time.perf_counter()
        conn.request("GET", "/")
        rsp = conn.getresponse()
        rsp.read()
        took = time.perf_counter() - start
        assert rsp.status == 200, rsp.status
        print(int(took * 1e6))

if sys.argv[1] == "serve":
    serve(int(sys.argv[2]))
else:
    client(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
"#;

const REQUESTS: usize = 2_000;
const PROMETHEUS: &str = "127.0.0.1:9090";

fn python() -> &'static str {
    let ok = Command::new("/usr/bin/python3").arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(ok, "`/usr/bin/python3` is not installed: apt-get install -y python3");
    "/usr/bin/python3"
}

fn prometheus() -> std::path::PathBuf {
    let ok = Command::new("prometheus").arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(ok, "`prometheus` is not installed: apt-get install -y --no-install-recommends prometheus");
    tool("prometheus")
}

/// `data` of a successful Prometheus API answer (GET from inside `pod`).
fn api(pod: &Pod, path: &str, params: &[(&str, &str)]) -> Result<Value, String> {
    let url = format!("http://{PROMETHEUS}{path}");
    let mut args: Vec<String> = vec!["-sS".into(), "--max-time".into(), "10".into(), "-G".into(), url];
    for (k, v) in params {
        args.extend(["--data-urlencode".into(), format!("{k}={v}")]);
    }
    let run = pod.exec("curl", &args[..]);
    let answer: Value = serde_json::from_str(&run.stdout).map_err(|e| format!("{path}: {e}: {run}"))?;
    if answer["status"] == "success" { Ok(answer["data"].clone()) } else { Err(format!("{path}: {answer}")) }
}

fn scalar(pod: &Pod, expr: &str) -> Result<f64, String> {
    let data = api(pod, "/api/v1/query", &[("query", expr)])?;
    match data["result"].as_array().map(Vec::as_slice) {
        Some([one]) => num(&one["value"][1]),
        other => Err(format!("{expr}: not one series: {other:?}")),
    }
}

fn num(v: &Value) -> Result<f64, String> {
    v.as_str().and_then(|s| s.parse().ok()).ok_or_else(|| format!("not a number: {v}"))
}

fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs_f64()
}

/// The `le` label as a number (`+Inf` included).
fn le(series: &Value) -> f64 {
    series["metric"]["le"].as_str().and_then(|s| s.parse().ok()).expect("an le label")
}

#[test]
fn p99_from_prometheus_is_within_10_percent_of_the_clients() {
    let python = python();
    let prometheus = prometheus();
    let mesh = Mesh::new();
    let script = mesh.dir().join("latency.py");
    std::fs::write(&script, LATENCY_PY).expect("writing the script");
    let script = script.to_string_lossy().into_owned();

    let srv = mesh.pod("srv");
    let _app = srv.spawn("latency-server", python, &[script.as_str(), "serve", "8080"]);
    srv.wait_listening(8080);
    let proxy = srv.run_proxy(&["--admin-addr", "0.0.0.0:4191"]);
    // The server, the proxy and the client run at a real-time priority
    // (SCHED_FIFO; they mostly wait on sockets): on a machine busy with
    // other work, being scheduled late stalls a request at the client,
    // outside the proxy's clock, and the comparison is of the buckets.
    let pids = Command::new(tool("ip")).args(["netns", "pids", srv.ns()]).output().expect("ip netns pids");
    for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
        let out = Command::new("chrt").args(["-a", "-f", "-p", "10", pid]).output().expect("chrt (util-linux)");
        assert!(out.status.success(), "chrt {pid}: {}", String::from_utf8_lossy(&out.stderr));
    }

    // Prometheus in a pod of its own, scraping the proxy's admin port on
    // the bridge every second.
    let prom = mesh.pod("prom");
    let config = mesh.dir().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s, scrape_timeout: 1s}}\nscrape_configs:\n  - job_name: weft-proxy\n    static_configs:\n      - targets: ['{}']\n        labels: {{namespace: default, workload: srv, pod: srv-0}}\n",
            srv.addr(4191)
        ),
    )
    .expect("writing the config");
    let tsdb = mesh.dir().join("tsdb");
    let mut prom_proc = prom.spawn(
        "prometheus",
        prometheus,
        &[
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", tsdb.display()),
            format!("--web.listen-address={PROMETHEUS}"),
            "--log.level=warn".into(),
        ],
    );
    eventually(Duration::from_secs(30), "Prometheus scrapes the proxy", || {
        if let Some(status) = prom_proc.try_status() {
            panic!("prometheus exited ({status}):\n{}", prom_proc.stderr());
        }
        let data = api(&prom, "/api/v1/targets", &[])?;
        let health = data["activeTargets"][0]["health"].clone();
        if health == "up" { Ok(()) } else { Err(format!("{data}")) }
    });
    let start = now();

    let client = mesh.pod("client");
    let began = std::time::Instant::now();
    let run = client
        .exec("chrt", &["-f", "10", python, &script, "client", &srv.ip().to_string(), "8080", &REQUESTS.to_string()])
        .ok();
    let mut micros: Vec<u64> = run.stdout.lines().map(|l| l.parse().expect("a latency in µs")).collect();
    assert_eq!(micros.len(), REQUESTS, "{run}");
    eprintln!("{REQUESTS} requests in {:.1?}", began.elapsed());
    micros.sort_unstable();
    let truth = |q: f64| micros[(q * REQUESTS as f64).ceil() as usize - 1] as f64 / 1e6;
    assert!(micros[0] >= 1_000, "the server answers after 1 ms at least: {} µs", micros[0]);

    // The proxy counted every request; Prometheus has its last count.
    let count = r#"sum(weft_response_latency_seconds_count{direction="inbound"})"#;
    proxy.wait_metric("weft_response_latency_seconds_count", &[("direction", "inbound")], REQUESTS as f64);
    eventually(Duration::from_secs(10), "Prometheus has every request", || {
        let n = scalar(&prom, count)?;
        if n == REQUESTS as f64 { Ok(()) } else { Err(format!("{n}")) }
    });

    // The client's clock also runs outside the proxy's (its own send and
    // receive, the hop on the bridge, being scheduled on a busy machine):
    // that offset is the same for every bucket layout, and `_sum / _count`
    // measures its mean exactly (no buckets involved). It is added back to
    // what the proxy measured, so that the comparison is of the buckets.
    let client_mean = micros.iter().sum::<u64>() as f64 / REQUESTS as f64 / 1e6;
    let proxy_mean = scalar(
        &prom,
        r#"sum(weft_response_latency_seconds_sum{direction="inbound"}) / sum(weft_response_latency_seconds_count{direction="inbound"})"#,
    )
    .expect("the mean");
    let offset = client_mean - proxy_mean;
    let mut report = Vec::new();
    for q in [0.5, 0.9, 0.95, 0.99] {
        let expr = format!(
            r#"histogram_quantile({q}, sum by (le) (weft_response_latency_seconds_bucket{{direction="inbound"}}))"#
        );
        let estimate = scalar(&prom, &expr).expect("the quantile");
        let raw = (estimate - truth(q)) / truth(q);
        let error = (estimate + offset - truth(q)) / truth(q);
        report.push((q, truth(q), estimate, raw, error));
    }
    let mut lines: Vec<String> = report
        .iter()
        .map(|(q, t, e, raw, err)| {
            format!(
                "q{q}: client {:.3} ms, Prometheus {:.3} ms ({:+.1} %; with the offset {:+.1} %)",
                t * 1e3,
                e * 1e3,
                raw * 100.0,
                err * 100.0
            )
        })
        .collect();
    lines.push(format!(
        "mean: client {:.3} ms, proxy {:.3} ms: {:.3} ms outside the proxy's clock",
        client_mean * 1e3,
        proxy_mean * 1e3,
        offset * 1e3
    ));
    let lines = lines.join("\n");
    eprintln!("{REQUESTS} requests of 1–10 ms through the inbound proxy:\n{lines}");
    assert!((-0.000_01..0.005).contains(&offset), "the proxy's mean is not the client's less a little:\n{lines}");
    for (q, _, _, _, error) in &report {
        assert!(error.abs() < 0.10, "q{q} is off by more than 10 %:\n{lines}");
    }

    // Every scrape: buckets cumulative in `le`, +Inf == _count, and no
    // series ever went down (a reset) while the proxy lived.
    let end = now() + 1.0;
    let range = |expr: &str| -> Vec<Value> {
        let data = api(
            &prom,
            "/api/v1/query_range",
            &[("query", expr), ("start", &start.to_string()), ("end", &end.to_string()), ("step", "1")],
        )
        .expect("a range query");
        data["result"].as_array().cloned().unwrap_or_default()
    };
    let mut buckets = range(r#"weft_response_latency_seconds_bucket{direction="inbound"}"#);
    let counts = range(r#"weft_response_latency_seconds_count{direction="inbound"}"#);
    assert_eq!(counts.len(), 1, "one inbound histogram (classification success): {counts:?}");
    buckets.sort_by(|a, b| le(a).total_cmp(&le(b)));
    let inf = buckets.len() - 1;
    assert!(
        inf >= 20 && le(&buckets[inf]).is_infinite(),
        "{} buckets, the last le={}",
        buckets.len(),
        le(&buckets[inf])
    );
    let steps = counts[0]["values"].as_array().expect("values").len();
    assert!(steps >= 5, "the run spanned {steps} scrapes only");
    let at = |series: &Value, i: usize| -> Option<f64> {
        let values = series["values"].as_array()?;
        values.get(i).map(|v| num(&v[1]).expect("a number"))
    };
    let mut previous = vec![0.0; buckets.len()];
    for i in 0..steps {
        let count = at(&counts[0], i).expect("a count");
        let row: Vec<f64> = buckets.iter().map(|b| at(b, i).expect("every bucket at every step")).collect();
        assert!(row.windows(2).all(|w| w[0] <= w[1]), "step {i}: buckets not cumulative: {row:?}");
        assert_eq!(row[inf], count, "step {i}: +Inf is not _count");
        for (b, (now, before)) in row.iter().zip(&previous).enumerate() {
            assert!(now >= before, "step {i}: bucket le={} went from {before} to {now}", le(&buckets[b]));
        }
        previous = row;
    }
    let resets = scalar(&prom, r#"sum(resets(weft_response_latency_seconds_bucket{direction="inbound"}[10m]))"#);
    assert_eq!(resets, Ok(0.0), "Prometheus saw a bucket reset");
    drop(prom_proc);
}
