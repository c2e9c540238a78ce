//! The dashboard in a real browser: Debian's headless Chromium (driven by
//! playwright-core, `tests/src/browser.rs`) against the control plane of a
//! real `weft up` in network namespaces, with mTLS:
//!
//! - `echo` (one pod) gets exactly [`REQUESTS`] requests from `client`'s pod
//!   through both proxies; the services view then shows that count, 100 %
//!   success and the p50/p99 that the proxies' own histograms give, read by
//!   the test from each proxy's `/metrics`;
//! - the topology shows `client → echo` and `load → web-v1/web-v2` secured;
//! - `load` calls `web` at 50 requests per second while `weft rollout` moves
//!   web-v2 from 0 to 50 then 100: the canary view, left open, shows each
//!   step's weight as the rollout writes it;
//! - the tap view streams `client`'s requests to a path made for it.
//!
//! Screenshots of every view are kept in `target/dashboard-shots/` (the
//! test prints where). Needs root, iproute2, iptables, util-linux's setpriv,
//! curl, chromium and node with playwright-core (`.ci/run` installs them);
//! never skips.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use weft_tests::browser::Browser;
use weft_tests::weft::{WeftProcess, pod_metrics};
use weft_tests::{Metrics, eventually, preflight, testkit_bin, tool, weft_bin};

/// Requests `client` sends to `echo`.
const REQUESTS: u32 = 120;

const MESH: &str = r#"
apiVersion: weft.dev/v1alpha1
kind: LocalMesh
metadata: {name: dashboard}
spec:
  policies: [./policy]
  services:
    - {name: web, selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}
    - {name: web-v1, selector: {app: web, version: v1}, ports: [{port: 80, targetPort: 8080}]}
    - {name: web-v2, selector: {app: web, version: v2}, ports: [{port: 80, targetPort: 8080}]}
    - {name: echo, selector: {app: echo}, ports: [{port: 80, targetPort: 8080}]}
  workloads:
    - name: web-v1
      replicas: 2
      labels: {app: web, version: v1}
      serviceAccount: web
      command: [TESTKIT, http-server, --listen, "0.0.0.0:8080", --name, v1]
      ports: [8080]
    - name: web-v2
      labels: {app: web, version: v2}
      serviceAccount: web
      command: [TESTKIT, http-server, --listen, "0.0.0.0:8080", --name, v2]
      ports: [8080]
    - name: echo
      labels: {app: echo}
      serviceAccount: echo
      command: [TESTKIT, http-server, --listen, "0.0.0.0:8080", --name, echo]
      ports: [8080]
    - name: load
      labels: {app: load}
      serviceAccount: load
      command: [weft, example, load, --target, "http://web/", --rate, "50", --timeout, "1s"]
    - name: client
      labels: {app: client}
      serviceAccount: client
      command: [sleep, "3600"]
"#;

/// A scratch directory with the mesh file and its (empty) policy directory.
struct Dir(PathBuf);

impl Dir {
    fn new() -> Dir {
        let dir = std::env::temp_dir().join(format!("weft-dashboard-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("policy")).unwrap();
        std::fs::write(dir.join("mesh.yaml"), MESH.replace("TESTKIT", &testkit_bin().to_string_lossy())).unwrap();
        Dir(dir)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// `q` of the inbound latency histogram in `m`, interpolated inside its
/// bucket as Prometheus' `histogram_quantile` does; milliseconds.
fn inbound_quantile(m: &Metrics, q: f64) -> f64 {
    let mut buckets: Vec<(f64, f64)> = m
        .matching("weft_response_latency_seconds_bucket", &[("direction", "inbound")])
        .fold(std::collections::BTreeMap::<String, (f64, f64)>::new(), |mut acc, s| {
            let le = &s.labels["le"];
            let bound = if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap() };
            acc.entry(le.clone()).or_insert((bound, 0.0)).1 += s.value;
            acc
        })
        .into_values()
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last().expect("an inbound histogram").1;
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(bound, count) in &buckets {
        if count >= rank {
            if bound.is_infinite() {
                return lower.0 * 1000.0;
            }
            let within = if count == lower.1 { 0.0 } else { (rank - lower.1) / (count - lower.1) };
            return (lower.0 + (bound - lower.0) * within) * 1000.0;
        }
        lower = (bound, count);
    }
    unreachable!("the +Inf bucket holds every observation")
}

fn num(v: &serde_json::Value) -> f64 {
    v.as_str().and_then(|s| s.parse().ok()).or_else(|| v.as_f64()).unwrap_or(f64::NAN)
}

/// Sends `n` requests from `client` to `url`, each answered 200.
fn curl_from_client(run: u32, url: &str, n: u32) {
    let script = format!(
        "for i in $(seq 1 {n}); do {curl} -sS -f -o /dev/null -m 5 {url} || exit 1; done",
        curl = tool("curl").display()
    );
    let status = Command::new(tool("ip"))
        .args(["netns", "exec", &format!("weft-{run}-client-0")])
        .args([tool("timeout").to_str().unwrap(), "60", "sh", "-c", &script])
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "{n} requests from client to {url}: {status}");
}

#[test]
fn the_dashboard_shows_what_the_proxies_counted_and_follows_a_rollout() {
    preflight();
    let began = Instant::now();
    let step = |what: &str| eprintln!("dashboard: {what} after {:.1?}", began.elapsed());
    let dir = Dir::new();
    let mut cmd = Command::new(weft_bin());
    cmd.args(["up", "-f", "mesh.yaml"]).current_dir(&dir.0);
    let up = WeftProcess::spawn(cmd, &dir.0, "up");
    let run = up.pid();
    let up = up.with_logs(PathBuf::from(format!("/run/weft/{run}/logs")));
    // `weft up` prints where the dashboard is (8084 on the host's loopback,
    // or another port when that one is taken).
    let dashboard = eventually(Duration::from_secs(90), "weft up printing the dashboard's address", || {
        let out = up.stdout();
        out.lines()
            .find_map(|l| l.strip_prefix("Dashboard: "))
            .and_then(|rest| rest.split_whitespace().next())
            .map(|url| url.trim_end_matches('/').to_owned())
            .ok_or_else(|| up.output())
    });
    eprintln!("dashboard: {dashboard}");

    // Every pod scraped at least once before any counted request, so the
    // window's first sample of echo is its zero.
    let workloads = eventually(Duration::from_secs(60), "the control plane scraping all 6 pods", || {
        let body = http_get(&format!("{dashboard}/api/workloads")).map_err(|e| format!("{e}\n{}", up.output()))?;
        let json: serde_json::Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        let rows = json["workloads"].as_array().cloned().unwrap_or_default();
        let scraped = rows.iter().filter(|w| !w["last_scrape"].is_null() && w["error"].is_null()).count();
        if scraped == 6 { Ok(json) } else { Err(format!("{scraped} of 6 scraped: {body}")) }
    });
    step("the control plane scrapes every pod");
    eprintln!("{workloads:#}");

    let shots = weft_tests::profile_dir().join("dashboard-shots");
    let mut browser = Browser::start(&shots);
    eprintln!("dashboard: screenshots in {}", shots.display());

    // Exactly REQUESTS requests to echo, then the services view.
    curl_from_client(run, "http://echo/hello", REQUESTS);
    step("the client's requests");
    let echo = pod_metrics(run, "echo-0").unwrap();
    let counted = echo.sum("weft_responses_total", &[("direction", "inbound")]);
    assert_eq!(counted, f64::from(REQUESTS), "echo's proxy counted every request:\n{}", echo.text);
    let page = eventually(Duration::from_secs(20), "the services view showing echo's requests", || {
        let page = browser.goto(&format!("{dashboard}/#/"), "services");
        let row = &page["rows"]["default/echo"];
        if num(&row["requests"]) == f64::from(REQUESTS) { Ok(page) } else { Err(format!("{row}")) }
    });
    let row = &page["rows"]["default/echo"];
    assert_eq!(row["meshed"], "1/1", "{row}");
    assert_eq!(num(&row["success"]), 1.0, "{row}");
    for (col, q) in [("p50_ms", 0.5), ("p99_ms", 0.99)] {
        let (shown, ours) = (num(&row[col]), inbound_quantile(&echo, q));
        assert!((shown - ours).abs() <= ours * 0.01 + 1e-9, "{col}: page {shown} ms, proxy histogram {ours} ms: {row}");
    }
    let web = &page["rows"]["default/web"];
    assert_eq!(web["meshed"], "3/3", "{web}");
    assert!(num(&web["rps"]) > 20.0 && num(&web["rps"]) < 80.0, "load sends 50/s: {web}");
    step("the services view");

    // The service page's charts and the topology.
    let svc = browser.goto(&format!("{dashboard}/#/service/default/echo"), "service-echo");
    assert_eq!(num(&svc["charts"]["Success rate"]["success"]), 1.0, "{svc:#}");
    let topo = browser.goto(&format!("{dashboard}/#/topology"), "topology");
    let edges = topo["edges"].as_array().unwrap();
    for (src, dst) in [("default/client", "default/echo"), ("default/load", "default/web-v1")] {
        let edge = edges.iter().find(|e| e["src"] == src && e["dst"] == dst);
        let edge = edge.unwrap_or_else(|| panic!("no edge {src} → {dst}: {topo:#}"));
        assert_eq!(edge["secured"], "true", "{edge}");
    }
    step("the service and topology views");

    // Tap: client's requests to a path of their own, streamed live.
    let mut tap = std::thread::scope(|s| {
        let curl = s.spawn(|| {
            // Started before the page opens its stream; the page waits for 6 events.
            for _ in 0..20 {
                curl_from_client(run, "http://echo/tapped", 3);
                std::thread::sleep(Duration::from_millis(300));
            }
        });
        let page = browser.send(serde_json::json!({
            "op": "goto", "url": format!("{dashboard}/#/tap?workload=echo&path=/tapped&max=6"),
            "wait_tap": 6, "timeout_ms": 20_000, "shot": "tap",
        }));
        curl.join().unwrap();
        page
    });
    let lines: Vec<String> = serde_json::from_value(tap["tap"]["lines"].take()).expect("tap lines");
    assert!(lines.len() >= 6, "{lines:?}");
    assert!(lines.iter().all(|l| l.contains("/tapped") || !l.starts_with("req")), "{lines:?}");
    assert!(
        lines.iter().any(|l| l.starts_with("req") && l.contains(":path=/tapped") && l.contains("tls=true")),
        "{lines:?}"
    );
    step("the tap view");

    // The canary view follows a rollout: open it, then step web-v2 to 50.
    let before = browser.goto(&format!("{dashboard}/#/canary/default/web"), "canary-before");
    eprintln!("canary before: {before:#}");
    let mut rollout = Command::new(weft_bin())
        .args(["rollout", "--service", "web", "--stable", "web-v1", "--canary", "web-v2", "--run"])
        .arg(run.to_string())
        .args(["--strategy", "canary", "--steps", "50,100", "--interval", "15s"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let at50 = browser.wait_attr(
        "[data-backend='web-v2.default'] [data-col=weight]",
        "data-value",
        "50",
        Duration::from_secs(14),
        "canary-step-50",
    );
    assert_eq!(num(&at50["cards"]["web-v1.default"]["weight"]), 50.0, "{at50:#}");
    step("the canary view at 50");
    let at100 = browser.wait_attr(
        "[data-backend='web-v2.default'] [data-col=weight]",
        "data-value",
        "100",
        Duration::from_secs(40),
        "canary-step-100",
    );
    assert_eq!(num(&at100["cards"]["web-v1.default"]["weight"]), 0.0, "{at100:#}");
    step("the canary view at 100");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = rollout.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "weft rollout did not end");
        std::thread::sleep(Duration::from_millis(200));
    };
    let out = rollout.wait_with_output().unwrap();
    assert!(status.success(), "weft rollout: {status}\n{}", String::from_utf8_lossy(&out.stdout));
    drop(browser);
    let mut up = up;
    let stopped = up.interrupt(Duration::from_secs(30));
    assert!(stopped.success(), "weft up did not stop cleanly: {stopped}\n{}", up.output());
}

/// GET `url` with curl (a real client); the body, or why not.
fn http_get(url: &str) -> Result<String, String> {
    let out = Command::new(tool("curl")).args(["-sS", "-f", "-m", "3", url]).output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The vendored chart library is byte for byte the npm package's (which
/// `.ci/run` fetches into the cache with `npm pack`).
#[test]
fn the_vendored_chart_library_is_the_npm_package() {
    let tarball = Path::new("/var/cache/weft/node/uplot-1.6.32.tgz");
    assert!(
        tarball.is_file(),
        "{} is missing: run .ci/run, or (cd /var/cache/weft/node && npm pack uplot@1.6.32)",
        tarball.display()
    );
    let out = std::env::temp_dir().join(format!("weft-uplot-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let status = Command::new(tool("tar")).arg("xzf").arg(tarball).arg("-C").arg(&out).status().unwrap();
    assert!(status.success(), "unpacking {}", tarball.display());
    let vendor = Path::new(env!("CARGO_MANIFEST_DIR")).join("../control/src/dashboard/assets/vendor");
    for file in ["uPlot.iife.min.js", "uPlot.min.css"] {
        let ours = std::fs::read(vendor.join(file)).unwrap();
        let theirs = std::fs::read(out.join("package/dist").join(file)).unwrap();
        assert!(ours == theirs, "{file} differs from uplot 1.6.32's package");
    }
    let package: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("package/package.json")).unwrap()).unwrap();
    assert_eq!(package["version"], "1.6.32");
    assert_eq!(package["license"], "MIT");
    let _ = std::fs::remove_dir_all(&out);
}
