//! The control plane's telemetry end to end: a real `weft up` in network
//! namespaces, with mTLS, `web` served by two versions (`web-v1` ×2,
//! `web-v2` ×1, the testkit HTTP server) behind a 75/25 HTTPRoute, and the
//! example load generator calling `http://web/` at a known 40 requests per
//! second from its own pod (`load`, which serves nothing and so is not
//! registered: the runtime names it to the control plane to scrape).
//!
//! The control plane scrapes every proxy's `/metrics` at its pod address
//! every 5 s (the default `--telemetry-interval`); the test reads a 20 s
//! window once one has passed with traffic. Then, inside the hub namespace where the
//! dashboard listens (198.18.0.1:8084), as `curl` and as `weft stat`:
//!
//! - `/api/stat` and `weft stat -o json`: the right services, versions and
//!   meshed counts, success 1.0, rps near the load's rate;
//! - `/api/routes`: the route, its backends and weights;
//! - `/api/edges` and `weft edges`: load → web-v1 and web-v2 over mTLS with
//!   both identities;
//! - `/api/prometheus/sd`: one target per pod;
//! - `/api/tap` and `weft tap`: live events from web-v1's proxies (the
//!   relay's error paths are tested in `control/tests/tap.rs`).
//!
//! And with `--source kubernetes`: the demo's manifests applied to the
//! tests' real API server (injected, run by the test kubelet, as in
//! `kube_demo.rs`); the control plane finds the Pods' IPs in the API and
//! `/api/stat` groups them by Deployment (`pod-template-hash`) and version.
//!
//! Needs root, iproute2, iptables, util-linux's setpriv and curl (and for
//! the Kubernetes test what `kube_demo.rs` needs); never skips.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use weft_tests::injector::Injector;
use weft_tests::kubelet::{Kubelet, demo_images};
use weft_tests::weft::WeftProcess;
use weft_tests::{KubeCluster, Mesh, eventually, manifests_dir, preflight, testkit_bin, tool, weft_bin};

/// The load generator's rate, requests per second.
const RATE: f64 = 40.0;
const WINDOW: &str = "20s";
const DASHBOARD: &str = "http://198.18.0.1:8084";

const MESH: &str = r#"
apiVersion: weft.dev/v1alpha1
kind: LocalMesh
metadata: {name: views}
spec:
  policies: [./policy]
  services:
    - {name: web, selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}
    - {name: web-v1, selector: {version: v1}, ports: [{port: 80, targetPort: 8080}]}
    - {name: web-v2, selector: {version: v2}, ports: [{port: 80, targetPort: 8080}]}
  workloads:
    - name: web-v1
      replicas: 2
      serviceAccount: web
      labels: {app: web, version: v1}
      command: [TESTKIT, http-server, --listen, "0.0.0.0:8080", --name, v1]
      ports: [8080]
    - name: web-v2
      serviceAccount: web
      labels: {app: web, version: v2}
      command: [TESTKIT, http-server, --listen, "0.0.0.0:8080", --name, v2]
      ports: [8080]
    - name: load
      serviceAccount: load
      command: [weft, example, load, --target, "http://web/", --rate, "RATE", --timeout, "2s"]
"#;

const ROUTE: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web-split, namespace: default}
spec:
  parentRefs: [{group: \"\", kind: Service, name: web, port: 80}]
  rules:
    - backendRefs:
        - {name: web-v1, port: 80, weight: 75}
        - {name: web-v2, port: 80, weight: 25}
";

const LOAD_ID: &str = "spiffe://cluster.local/ns/default/sa/load";
const WEB_ID: &str = "spiffe://cluster.local/ns/default/sa/web";

struct Dir(PathBuf);

impl Dir {
    fn new() -> Dir {
        let dir = std::env::temp_dir().join(format!("weft-views-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("policy")).unwrap();
        let mesh = MESH.replace("TESTKIT", &testkit_bin().to_string_lossy()).replace("RATE", &RATE.to_string());
        std::fs::write(dir.join("mesh.yaml"), mesh).unwrap();
        std::fs::write(dir.join("policy/web-split.yaml"), ROUTE).unwrap();
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

/// A command inside the run's hub namespace, where the control plane runs.
fn in_hub(run: u32, program: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(tool("ip"));
    cmd.args(["netns", "exec", &format!("weft-{run}-hub")]).arg(program).args(args);
    cmd
}

/// `curl` of a dashboard path: status and body.
fn curl(run: u32, path: &str, max_time: &str) -> (u16, String) {
    let url = format!("{DASHBOARD}{path}");
    let out = in_hub(run, &tool("curl"), &["-sS", "-N", "-m", max_time, "-w", "\n%{http_code}", &url])
        .output()
        .expect("running curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

fn api(run: u32, path: &str) -> Result<Value, String> {
    let (status, body) = curl(run, path, "10");
    if status != 200 {
        return Err(format!("GET {path}: {status} {body}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("GET {path}: {e}: {body}"))
}

/// `weft ARGS --control DASHBOARD` in the hub: status code, stdout, stderr.
fn weft(run: u32, args: &[&str]) -> (Option<i32>, String, String) {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--control", DASHBOARD]);
    let out = in_hub(run, weft_bin(), &all).output().expect("running weft");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn row<'a>(rows: &'a Value, want: &[(&str, &str)]) -> Option<&'a Value> {
    rows.as_array()?.iter().find(|r| want.iter().all(|(k, v)| r[*k].as_str() == Some(*v)))
}

fn up(dir: &Path) -> WeftProcess {
    let mut cmd = Command::new(weft_bin());
    cmd.args(["up", "-f", "mesh.yaml"]).current_dir(dir);
    let proc = WeftProcess::spawn(cmd, dir, "up");
    let logs = PathBuf::from(format!("/run/weft/{}/logs", proc.pid()));
    proc.with_logs(logs)
}

fn stop(mut up: WeftProcess) {
    let status = up.interrupt(Duration::from_secs(30));
    assert!(status.success(), "weft up after SIGINT: {status}\n{}", up.output());
}

#[test]
fn stat_routes_edges_and_tap_from_the_control_plane() {
    preflight();
    let dir = Dir::new();
    let began = Instant::now();
    let up = up(&dir.0);
    let run = up.pid();

    // Traffic reaches both versions, as the control plane sees it.
    let first = eventually(Duration::from_secs(90), "web's traffic in /api/stat", || {
        if !Path::new(&format!("/proc/{run}")).exists() {
            return Err(format!("weft up exited\n{}", up.output()));
        }
        let stat = api(run, "/api/stat?by=service&window=20s")?;
        let flowing = ["v1", "v2"].iter().all(|v| {
            row(&stat["rows"], &[("name", "web"), ("version", v)]).is_some_and(|r| r["rps"].as_f64() > Some(0.0))
        });
        if flowing { Ok(Instant::now()) } else { Err(format!("{stat}")) }
    });
    eprintln!("traffic seen by the control plane after {:.1?}", began.elapsed());
    // A whole window of steady traffic.
    eventually(Duration::from_secs(40), "a full window of traffic", || {
        if first.elapsed() > Duration::from_secs(22) { Ok(()) } else { Err("waiting".into()) }
    });

    let stat = api(run, &format!("/api/stat?by=service&window={WINDOW}")).unwrap();
    let web = row(&stat["rows"], &[("name", "web"), ("version", "")]).unwrap_or_else(|| panic!("no web row: {stat:#}"));
    assert_eq!((web["kind"].as_str(), web["meshed"].as_str()), (Some("service"), Some("3/3")), "{web}");
    assert_eq!(web["success"].as_f64(), Some(1.0), "{web}");
    let rps = web["rps"].as_f64().unwrap();
    assert!((RATE * 0.75..=RATE * 1.25).contains(&rps), "web at {rps} rps, the load sends {RATE}: {web}");
    assert!(web["p50_ms"].as_f64().is_some_and(|p| p > 0.0 && p < 100.0), "{web}");
    let v1 = row(&stat["rows"], &[("name", "web"), ("version", "v1")]).expect("a v1 row");
    let v2 = row(&stat["rows"], &[("name", "web"), ("version", "v2")]).expect("a v2 row");
    assert_eq!((v1["meshed"].as_str(), v2["meshed"].as_str()), (Some("2/2"), Some("1/1")));
    let share = v2["rps"].as_f64().unwrap() / rps;
    assert!((0.1..=0.4).contains(&share), "v2 takes {share:.2} of web, the route says 0.25: {stat:#}");
    for name in ["web-v1", "web-v2"] {
        assert!(row(&stat["rows"], &[("name", name)]).is_some(), "no {name} row: {stat:#}");
    }

    // The same through `weft stat`.
    let (code, out, err) = weft(run, &["stat", "services", "-n", "default", "--window", WINDOW, "-o", "json"]);
    assert_eq!(code, Some(0), "{err}");
    let rows: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let web = row(&rows, &[("name", "web"), ("version", "")]).unwrap_or_else(|| panic!("{out}"));
    assert_eq!((web["meshed"].as_str(), web["success"].as_f64()), (Some("3/3"), Some(1.0)), "{web}");
    assert!((RATE * 0.75..=RATE * 1.25).contains(&web["rps"].as_f64().unwrap()), "{web}");
    let (code, out, err) = weft(run, &["stat", "-n", "default"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("NAME "), "{out}");
    for want in ["LATENCY_P99", "TCP_CONN", "web-v1 ", "web-v2 ", "load "] {
        assert!(out.contains(want), "no {want:?} in\n{out}");
    }
    let load = out.lines().find(|l| l.starts_with("load ")).unwrap();
    assert!(load.contains(" 1/1 "), "the load pod is meshed and scraped: {load}");

    // Routes: the route, its backends, their weights, both answered.
    let routes = api(run, &format!("/api/routes?service=default/web&window={WINDOW}")).unwrap();
    for (backend, weight) in [("web-v1.default", 75), ("web-v2.default", 25)] {
        let r = row(&routes["rows"], &[("route", "default/web-split#0"), ("backend", backend)])
            .unwrap_or_else(|| panic!("no {backend} row: {routes:#}"));
        assert_eq!((r["weight"].as_u64(), r["service"].as_str()), (Some(weight), Some("web.default")), "{r}");
        assert_eq!(r["success"].as_f64(), Some(1.0), "{r}");
        assert!(r["rps"].as_f64() > Some(0.0), "{r}");
    }
    let (code, out, err) = weft(run, &["routes", "--service", "web", "--window", WINDOW]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("ROUTE ") && out.contains("default/web-split#0") && out.contains(" 75 "), "{out}");

    // Edges: from the proxies' edge metrics (both sides), identities and mTLS.
    let edges = api(run, &format!("/api/edges?window={WINDOW}")).unwrap();
    for dst in ["web-v1", "web-v2"] {
        let e = row(&edges["rows"], &[("src", "load"), ("dst", dst)]).unwrap_or_else(|| panic!("{edges:#}"));
        assert_eq!(
            (e["client_id"].as_str(), e["server_id"].as_str(), e["secured"].as_bool()),
            (Some(LOAD_ID), Some(WEB_ID), Some(true)),
            "{e}"
        );
    }
    let (code, out, err) = weft(run, &["edges", "-n", "default"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("load.default") && out.contains("web.default") && out.contains('√'), "{out}");

    // Prometheus service discovery: one target per pod, at its address.
    let sd = api(run, "/api/prometheus/sd").unwrap();
    let mut pods: Vec<(String, String)> = sd
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["labels"]["pod"].as_str().unwrap().to_owned(), t["targets"][0].as_str().unwrap().to_owned()))
        .collect();
    pods.sort();
    let names: Vec<&str> = pods.iter().map(|p| p.0.as_str()).collect();
    assert_eq!(names, ["load-0", "web-v1-0", "web-v1-1", "web-v2-0"], "{sd:#}");
    assert!(pods.iter().all(|(_, t)| t.starts_with("198.18.") && t.ends_with(":4191")), "{pods:?}");
    let workloads = api(run, "/api/workloads").unwrap();
    assert!(
        workloads["workloads"].as_array().unwrap().iter().all(|w| w["error"].is_null() && w["last_scrape"].is_number()),
        "every pod scraped without error: {workloads:#}"
    );

    // Tap: live events from web-v1's proxies, relayed as Server-Sent Events.
    let (status, body) = curl(run, "/api/tap?namespace=default&workload=web-v1&max_rps=10", "15");
    assert_eq!(status, 200, "{body}");
    let first = body.split("\n\n").find(|e| e.starts_with("data:") || e.starts_with("event:")).unwrap_or_default();
    assert!(first.starts_with("data:"), "the first event is a tap event, not an error: {body}");
    let event: Value =
        serde_json::from_str(first.trim_start_matches("data: ")).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!((event["workload"].as_str(), event["namespace"].as_str()), (Some("web-v1"), Some("default")), "{event}");
    let (code, out, err) = weft(run, &["tap", "--workload", "web-v1", "--max", "3"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(
        out.lines().all(|l| l.starts_with("req id=") || l.starts_with("rsp id=") || l.starts_with("end id=")),
        "{out}"
    );
    stop(up);
}

#[test]
fn stat_from_a_kubernetes_source() {
    let started = Instant::now();
    let step = |what: &str| eprintln!("views (kubernetes): {what} after {:.1?}", started.elapsed());
    let cluster = KubeCluster::shared();
    let mesh = Mesh::new();
    let cp = mesh.pod("cp").run_kube_control(cluster, &["--telemetry-interval", "1s"]);
    let anchors = cp.ca.as_ref().expect("the CA is on").anchors();
    let ns = cluster.namespace("views");
    cluster.kubectl(&["label", "namespace", &ns, "weft.dev/inject=enabled"]);
    let injector = Injector::start(
        cluster,
        &[
            "--control-plane",
            &cp.url,
            "--trust-anchors",
            &anchors.display().to_string(),
            "--proxy-image",
            "ghcr.io/weft-mesh/weft-proxy:0.1.0",
        ],
    );
    let webhook = format!("weft-injector-{ns}");
    cluster.apply(
        "default",
        &injector.webhook(
            &webhook,
            &format!("{{matchLabels: {{kubernetes.io/metadata.name: {ns}, weft.dev/inject: enabled}}}}"),
        ),
    );
    let kubelet = Kubelet::start(cluster, &mesh, &format!("node-{ns}"), std::slice::from_ref(&ns), demo_images());
    cluster.kubectl(&["apply", "-n", &ns, "-f", &manifests_dir().join("examples").display().to_string()]);
    let wait = cluster.try_kubectl(
        &["wait", "-n", &ns, "--for=condition=Available", "deployment", "--all", "--timeout=180s"],
        Duration::from_secs(200),
    );
    assert!(
        wait.status.success(),
        "the demo's Deployments are not available:\n{wait}\nkubelet: {:?}",
        kubelet.errors()
    );
    step("the Deployments are available");

    // The dashboard listens on the control plane pod's loopback (the default).
    let get = |path: &str| -> Result<Value, String> {
        let run = cp.pod.exec("curl", &["-sS", "-f", "-m", "10", &format!("http://127.0.0.1:8084{path}")]);
        if !run.status.success() {
            return Err(format!("{path}: {run}"));
        }
        serde_json::from_str(&run.stdout).map_err(|e| format!("{path}: {e}: {}", run.stdout))
    };
    // Right after the Deployments are available, web may still answer 5xx
    // while its first connections to the store are made: wait for a whole
    // window of traffic that succeeded.
    let stat = eventually(Duration::from_secs(90), "a 10 s window of successful traffic in /api/stat", || {
        let stat = get(&format!("/api/stat?by=workload&namespace={ns}&window=10s"))?;
        let flowing = ["web-v1", "web-v2"].iter().all(|w| {
            row(&stat["rows"], &[("name", w)])
                .is_some_and(|r| r["rps"].as_f64() > Some(0.0) && r["success"].as_f64() == Some(1.0))
        });
        if flowing { Ok(stat) } else { Err(stat.to_string()) }
    });
    step("traffic seen by the control plane");
    for (name, version, meshed) in
        [("web-v1", "v1", "2/2"), ("web-v2", "v2", "1/1"), ("store", "", "1/1"), ("load", "", "1/1")]
    {
        let r = row(&stat["rows"], &[("name", name)]).unwrap_or_else(|| panic!("no {name} row: {stat:#}"));
        assert_eq!(
            (r["version"].as_str(), r["meshed"].as_str(), r["namespace"].as_str()),
            (Some(version), Some(meshed), Some(ns.as_str())),
            "{r}"
        );
    }
    for name in ["web-v1", "web-v2"] {
        let r = row(&stat["rows"], &[("name", name)]).unwrap();
        assert_eq!(r["success"].as_f64(), Some(1.0), "{r}");
    }
    let services = get(&format!("/api/stat?by=service&namespace={ns}&window=10s")).unwrap();
    let web = row(&services["rows"], &[("name", "web"), ("version", "")]).unwrap_or_else(|| panic!("{services:#}"));
    assert_eq!(web["meshed"].as_str(), Some("3/3"), "{web}");
    for v in ["v1", "v2"] {
        assert!(row(&services["rows"], &[("name", "web"), ("version", v)]).is_some(), "no web {v} row: {services:#}");
    }
    let sd = get("/api/prometheus/sd").unwrap();
    let ours: Vec<&Value> = sd.as_array().unwrap().iter().filter(|t| t["labels"]["namespace"] == ns.as_str()).collect();
    assert_eq!(ours.len(), 5, "web-v1 ×2, web-v2, store, load: {sd:#}");

    drop(kubelet);
    cluster.kubectl(&["delete", "mutatingwebhookconfiguration", &webhook]);
    drop(injector);
}
