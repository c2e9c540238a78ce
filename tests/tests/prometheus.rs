//! The Grafana dashboards and Prometheus files in `manifests/` proven
//! against Debian's real `prometheus`, not by eye: a LocalMesh (`weft up`,
//! web v1 ×2 and a failing v2 behind a weighted HTTPRoute, a steady load,
//! mTLS) is scraped by Prometheus every second with the scrape job of
//! `manifests/prometheus/prometheus.yml` and the recording rules of
//! `rules.yml`; then every panel query of every dashboard, every template
//! variable and every recording rule runs through the HTTP API and must
//! succeed with a non-empty result.
//!
//! ```text
//!   hub netns: prometheus 127.0.0.1:9090 ──http_sd──► control plane 198.18.0.1:8084 /api/prometheus/sd
//!                 │
//!                 └──scrape──► each pod's address :4191 (proxy admin, bound on 0.0.0.0 in its netns)
//!   test ── ip netns exec HUB curl /api/v1/query ──► prometheus
//! ```
//!
//! The scrape job is shipped `prometheus.yml`'s, HTTP service discovery
//! included; only the discovery URL's host changes, from the local
//! default 127.0.0.1:8084 to where this run's control plane listens in the
//! hub (`weft up` prints a forwarder into the hub on the host's loopback,
//! which Prometheus in the hub cannot reach). Prometheus must discover
//! exactly the run's pods, with the labels the dashboards use.
//!
//! `weft-routes.json`, `weft-edges.json` and the `weft-routes` rule group use
//! metrics new with issue 13 (`PENDING`); they are checked by
//! [`route_and_edge_panels_answer`], which fails naming each metric no
//! target exports, so that it passes exactly when the proxies have them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use weft_tests::weft::WeftProcess;
use weft_tests::{eventually, manifests_dir, preflight, testkit_bin, tool, weft_bin};

const MESH: &str = r#"
apiVersion: weft.dev/v1alpha1
kind: LocalMesh
metadata: {name: prom}
spec:
  policies: [./policy]
  services:
    - {name: web, selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}
    - {name: web-v1, selector: {app: web, version: v1}, ports: [{port: 80, targetPort: 8080}]}
    - {name: web-v2, selector: {app: web, version: v2}, ports: [{port: 80, targetPort: 8080}]}
  workloads:
    - name: web-v1
      replicas: 2
      labels: {app: web, version: v1}
      command: [TESTKIT, http-server, --listen, "0.0.0.0:8080", --name, v1]
      ports: [8080]
    - name: web-v2
      labels: {app: web, version: v2}
      command: [TESTKIT, http-server, --listen, "0.0.0.0:8080", --name, v2, --fail-every, "5"]
      ports: [8080]
    - name: load
      labels: {app: load}
      command: [weft, example, load, --target, "http://web/", --rate, "60", --timeout, "2s"]
"#;

/// web's canary route: v2 takes a third, so that both versions see
/// enough requests for every per-version panel.
const ROUTE: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: default}
spec:
  parentRefs: [{group: \"\", kind: Service, name: web, port: 80}]
  rules:
    - backendRefs:
        - {name: web-v1, port: 80, weight: 2}
        - {name: web-v2, port: 80, weight: 1}
";

/// Dashboards over the metrics the proxy has always exported.
const DASHBOARDS: [&str; 3] = ["weft-mesh.json", "weft-service.json", "weft-canary.json"];
/// Dashboards that use `PENDING` metrics.
const PENDING_DASHBOARDS: [&str; 2] = ["weft-routes.json", "weft-edges.json"];
/// Metrics new with issue 13 (added by the proxy's metrics stream).
const PENDING: [&str; 3] =
    ["weft_route_response_latency_seconds", "weft_edge_responses_total", "weft_edge_response_latency_seconds"];

/// What the template variables become (Grafana substitutes `$x`).
const NAMESPACE: &str = "default";
/// The failing version, so that the failure panels have data too.
const WORKLOAD: &str = "web-v2";
const SERVICE: &str = "web";
/// `$__rate_interval`: wide enough for every query of a run to see traffic.
const RATE_INTERVAL: &str = "1m";

const PROMETHEUS_PORT: u16 = 9090;
const KUBE_PROMETHEUS_PORT: u16 = 9091;
/// The control plane's dashboard listener in `weft up`'s hub namespace
/// (the hub's bridge address and `--dashboard-addr`'s port).
const HUB_DASHBOARD: &str = "198.18.0.1:8084";
/// The discovery URL as shipped in `prometheus.yml`.
const SHIPPED_SD_URL: &str = "http://127.0.0.1:8084/api/prometheus/sd";

/// A process killed when dropped, output kept in files for failures.
struct Bg {
    label: String,
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Bg {
    fn spawn(dir: &Path, label: &str, mut cmd: Command) -> Bg {
        let stdout = dir.join(format!("{label}.stdout"));
        let stderr = dir.join(format!("{label}.stderr"));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).expect("creating a log file"))
            .stderr(std::fs::File::create(&stderr).expect("creating a log file"))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
        Bg { label: label.to_owned(), child, stdout, stderr }
    }

    fn output(&self) -> String {
        format!(
            "--- {} stdout\n{}\n--- {} stderr\n{}",
            self.label,
            std::fs::read_to_string(&self.stdout).unwrap_or_default(),
            self.label,
            tail(&std::fs::read_to_string(&self.stderr).unwrap_or_default(), 40)
        )
    }

    fn alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            _ => Err(format!("{} exited\n{}", self.label, self.output())),
        }
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("{}", self.output());
        }
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `prometheus` and `promtool` (Debian's `prometheus` package), or a
/// failure saying how to get them.
fn prometheus_tools() -> (PathBuf, PathBuf) {
    let find = |name: &str| {
        let out = Command::new(name).arg("--version").output();
        assert!(
            out.is_ok_and(|o| o.status.success()),
            "`{name}` is not installed: apt-get install -y --no-install-recommends prometheus"
        );
        tool(name)
    };
    (find("prometheus"), find("promtool"))
}

#[track_caller]
fn promtool(args: &[&str]) -> String {
    let (_, promtool) = prometheus_tools();
    let out = Command::new(&promtool).args(args).output().expect("running promtool");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {}:\n{text}", args.join(" "));
    text
}

fn read_yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

fn write_yaml(path: &Path, value: &Value) {
    std::fs::write(path, serde_yaml_ng::to_string(value).expect("YAML")).expect("writing a config");
}

fn prometheus_dir() -> PathBuf {
    manifests_dir().join("prometheus")
}

fn grafana_dir() -> PathBuf {
    manifests_dir().join("grafana")
}

/// One pod of the run, as `run.json` describes it, with its scrape address.
struct Target {
    pod: String,
    labels: BTreeMap<String, String>,
    /// The proxy's admin at the pod's address, as the control plane's
    /// discovery lists it (reachable from the hub).
    scrape: String,
}

impl Target {
    /// The workload: the pod's name without its replica number.
    fn workload(&self) -> String {
        self.pod.rsplit_once('-').map_or(self.pod.clone(), |(w, _)| w.to_owned())
    }

    /// The labels the control plane's `/api/prometheus/sd` must give this
    /// pod: `service` is the first by name of the services selecting it
    /// (web, web-v1 and web-v2 select `app: web`; nothing selects load).
    fn sd_labels(&self) -> Value {
        let mut labels = json!({"namespace": NAMESPACE, "workload": self.workload(), "pod": self.pod});
        if let Some(v) = self.labels.get("version") {
            labels["version"] = json!(v);
        }
        if self.labels.get("app").is_some_and(|a| a == "web") {
            labels["service"] = json!(SERVICE);
        }
        labels
    }
}

/// A running mesh scraped by a running Prometheus.
struct Scraped {
    dir: PathBuf,
    hub: String,
    targets: Vec<Target>,
    // Dropped in this order: Prometheus, then the mesh.
    prometheus: Bg,
    up: WeftProcess,
}

impl Drop for Scraped {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// `weft up` on [`MESH`] and, in its hub, Prometheus with the local scrape
/// job (discovering the proxies from the control plane) and the recording
/// rules, every second; returns once exactly the run's pods are discovered
/// with their labels, every target is up and the load shows in a rate.
fn start(name: &str) -> Scraped {
    preflight();
    let (prometheus, _) = prometheus_tools();
    let began = Instant::now();
    let dir = std::env::temp_dir().join(format!("weft-prometheus-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("policy")).expect("creating the test directory");
    std::fs::write(dir.join("mesh.yaml"), MESH.replace("TESTKIT", &testkit_bin().to_string_lossy()))
        .expect("writing mesh.yaml");
    std::fs::write(dir.join("policy/web-route.yaml"), ROUTE).expect("writing the route");

    let mut cmd = Command::new(weft_bin());
    cmd.args(["up", "-f", "mesh.yaml"]).current_dir(&dir);
    let up = WeftProcess::spawn(cmd, &dir, "up");
    let run = up.pid();
    let up = up.with_logs(PathBuf::from(format!("/run/weft/{run}/logs")));
    let record = PathBuf::from(format!("/run/weft/{run}/run.json"));
    let record: Value = eventually(Duration::from_secs(60), "weft up's run record", || {
        if !Path::new(&format!("/proc/{run}")).exists() {
            return Err(format!("weft up exited\n{}", up.output()));
        }
        let text = std::fs::read_to_string(&record).map_err(|e| e.to_string())?;
        serde_json::from_str(&text).map_err(|e| e.to_string())
    });
    assert_eq!(record["mode"], "netns", "{record}");
    let hub = format!("weft-{run}-hub");

    // Once `weft up` prints the dashboard, the control plane serves it.
    eventually(Duration::from_secs(90), "weft up printing the dashboard's address", || {
        if up.stdout().lines().any(|l| l.starts_with("Dashboard: ")) { Ok(()) } else { Err(up.output()) }
    });
    let pods = record["pods"].as_array().expect("pods");
    assert_eq!(pods.len(), 4, "web-v1 ×2, web-v2, load: {record}");
    let mut targets: Vec<Target> = pods
        .iter()
        .map(|pod| {
            assert!(pod["netns"].is_string(), "a netns pod: {pod}");
            Target {
                pod: pod["name"].as_str().expect("pod name").to_owned(),
                labels: serde_json::from_value(pod["labels"].clone()).expect("labels"),
                scrape: String::new(),
            }
        })
        .collect();
    // What Prometheus will discover: one target per pod of the run, no
    // other, each with the labels the dashboards use. The control plane
    // learns the pods' addresses as the proxies register, so wait for all.
    let sd_url = format!("http://{HUB_DASHBOARD}/api/prometheus/sd");
    let sd = eventually(Duration::from_secs(30), "the control plane's discovery listing every pod", || {
        let out = Command::new(tool("ip"))
            .args(["netns", "exec", &hub])
            .arg(tool("curl"))
            .args(["-sS", "-f", "--max-time", "5", &sd_url])
            .output()
            .map_err(|e| format!("running curl: {e}"))?;
        let body = String::from_utf8_lossy(&out.stdout);
        let sd: Vec<Value> = serde_json::from_str(&body)
            .map_err(|e| format!("{sd_url}: {e}: {body}{}", String::from_utf8_lossy(&out.stderr)))?;
        if sd.len() == targets.len() { Ok(sd) } else { Err(format!("{} targets: {body}", sd.len())) }
    });
    for t in &mut targets {
        let group = sd
            .iter()
            .find(|g| g["labels"]["pod"] == t.pod.as_str())
            .unwrap_or_else(|| panic!("{}: not in the discovery document {sd:?}", t.pod));
        let mut labels = group["labels"].clone();
        // Prometheus drops empty labels: the load has no version.
        labels.as_object_mut().expect("labels").retain(|_, v| v != "");
        assert_eq!(labels, t.sd_labels(), "{}: its discovered labels", t.pod);
        let scrape = group["targets"].as_array().map(Vec::as_slice).unwrap_or_default();
        let [scrape] = scrape else { panic!("{}: one address: {group}", t.pod) };
        let scrape = scrape.as_str().expect("an address");
        assert!(scrape.ends_with(":4191"), "{}: the proxy's admin port: {scrape}", t.pod);
        t.scrape = scrape.to_owned();
    }

    // The local scrape job and rules, every second.
    let config = local_config(&dir);
    promtool(&["check", "config", &config.to_string_lossy()]);

    let prometheus = spawn_prometheus(&dir, &hub, &prometheus, &config, PROMETHEUS_PORT, "prometheus");
    let mut scraped = Scraped { dir, hub, targets, prometheus, up };
    scraped.wait_targets_up(PROMETHEUS_PORT, 4);
    scraped.discovered_exactly_the_run();
    // A rate needs two scrapes of a series that already existed.
    eventually(Duration::from_secs(30), "the load's requests in a rate", || {
        let v = scraped.scalar("sum(rate(weft_responses_total{direction=\"inbound\",service=\"web\"}[1m]))")?;
        if v > 5.0 { Ok(()) } else { Err(format!("{v} rps")) }
    });
    eprintln!("mesh up, Prometheus scraping it after {:.1?}", began.elapsed());
    scraped
}

/// `manifests/prometheus/prometheus.yml` as shipped, its discovery URL
/// pointed at this run's control plane in the hub, scrapes and rule
/// evaluations every second; written into `dir`.
fn local_config(dir: &Path) -> PathBuf {
    let mut config = read_yaml(&prometheus_dir().join("prometheus.yml"));
    config["global"] = json!({"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"});
    let mut rules = read_yaml(&prometheus_dir().join("rules.yml"));
    for group in rules["groups"].as_array_mut().expect("rule groups") {
        group["interval"] = json!("1s");
    }
    let rules_file = dir.join("rules.yml");
    write_yaml(&rules_file, &rules);
    assert_eq!(config["rule_files"], json!(["rules.yml"]), "the local config loads the recording rules");
    config["rule_files"] = json!([rules_file]);
    let jobs = config["scrape_configs"].as_array_mut().expect("scrape_configs");
    assert_eq!(jobs.len(), 1, "one job: the proxies");
    let job = jobs[0].as_object_mut().expect("a job");
    let sd = job.get_mut("http_sd_configs").expect("the proxies are found by http_sd_configs");
    assert_eq!(sd.as_array().map(Vec::len), Some(1), "one discovery: {sd}");
    assert_eq!(sd[0]["url"], SHIPPED_SD_URL, "the control plane's discovery URL");
    sd[0]["url"] = json!(SHIPPED_SD_URL.replace("127.0.0.1:8084", HUB_DASHBOARD));
    let path = dir.join("prometheus.yml");
    write_yaml(&path, &config);
    path
}

fn spawn_prometheus(dir: &Path, hub: &str, prometheus: &Path, config: &Path, port: u16, label: &str) -> Bg {
    let tsdb = dir.join(format!("{label}-tsdb"));
    let mut cmd = Command::new(tool("ip"));
    cmd.args(["netns", "exec", hub]).arg(prometheus).args([
        &format!("--config.file={}", config.display()),
        &format!("--storage.tsdb.path={}", tsdb.display()),
        &format!("--web.listen-address=127.0.0.1:{port}"),
        "--log.level=warn",
    ]);
    Bg::spawn(dir, label, cmd)
}

impl Scraped {
    /// A GET to Prometheus (in the hub) with URL-encoded `params`; the
    /// `data` of a successful answer.
    fn api(&self, port: u16, path: &str, params: &[(&str, &str)]) -> Result<Value, String> {
        let url = format!("http://127.0.0.1:{port}{path}");
        let mut cmd = Command::new(tool("ip"));
        cmd.args(["netns", "exec", &self.hub]).arg(tool("curl")).args(["-sS", "--max-time", "10", "-G", &url]);
        for (k, v) in params {
            cmd.args(["--data-urlencode", &format!("{k}={v}")]);
        }
        let out = cmd.output().map_err(|e| format!("running curl: {e}"))?;
        let body = String::from_utf8_lossy(&out.stdout);
        let answer: Value = serde_json::from_str(&body)
            .map_err(|e| format!("GET {path} {params:?}: {e}: {body}{}", String::from_utf8_lossy(&out.stderr)))?;
        if answer["status"] != "success" {
            return Err(format!("GET {path} {params:?}: {answer}"));
        }
        Ok(answer["data"].clone())
    }

    /// An instant query's result vector.
    fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let data = self.api(PROMETHEUS_PORT, "/api/v1/query", &[("query", expr)])?;
        match data["resultType"].as_str() {
            Some("vector") => Ok(data["result"].as_array().cloned().unwrap_or_default()),
            other => Err(format!("{expr}: a {other:?}, not an instant vector")),
        }
    }

    /// A one-element query's value.
    fn scalar(&self, expr: &str) -> Result<f64, String> {
        let result = self.query(expr)?;
        match result.as_slice() {
            [one] => value(one),
            _ => Err(format!("{expr}: {} series, not one: {result:?}", result.len())),
        }
    }

    fn wait_targets_up(&mut self, port: u16, want: usize) {
        eventually(Duration::from_secs(30), "Prometheus is ready", || {
            self.prometheus.alive()?;
            let url = format!("http://127.0.0.1:{port}/-/ready");
            let out = Command::new(tool("ip"))
                .args(["netns", "exec", &self.hub])
                .arg(tool("curl"))
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2", &url])
                .output()
                .map_err(|e| e.to_string())?;
            let code = String::from_utf8_lossy(&out.stdout).into_owned();
            if code == "200" { Ok(()) } else { Err(format!("/-/ready: {code}")) }
        });
        eventually(Duration::from_secs(30), &format!("{want} targets up"), || {
            let data = self.api(port, "/api/v1/targets", &[("state", "active")])?;
            let active = data["activeTargets"].as_array().cloned().unwrap_or_default();
            let up = active.iter().filter(|t| t["health"] == "up").count();
            if active.len() == want && up == want { Ok(()) } else { Err(format!("{up}/{} up: {data}", active.len())) }
        });
    }

    /// Prometheus' active targets are the run's pods, each at the address
    /// and with the labels the control plane gave it (besides `instance`
    /// and `job`).
    fn discovered_exactly_the_run(&self) {
        let data = self.api(PROMETHEUS_PORT, "/api/v1/targets", &[("state", "active")]).expect("targets");
        let mut got: Vec<(String, Value)> = data["activeTargets"]
            .as_array()
            .expect("active")
            .iter()
            .map(|t| {
                let mut l = t["labels"].clone();
                let l = l.as_object_mut().expect("labels");
                assert_eq!(l.remove("job"), Some(json!("weft-proxy")), "{t}");
                let instance = l.remove("instance").and_then(|i| i.as_str().map(str::to_owned)).unwrap_or_default();
                (instance, json!(l))
            })
            .collect();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        let mut want: Vec<(String, Value)> = self.targets.iter().map(|t| (t.scrape.clone(), t.sd_labels())).collect();
        want.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(got, want, "Prometheus' targets are the run's pods");
    }

    /// The proxy's own count of `name{direction="inbound"}` (its `/metrics`
    /// at the pod's address).
    fn direct_inbound(&self, target: &Target) -> f64 {
        let url = format!("http://{}/metrics", target.scrape);
        let out = Command::new(tool("ip"))
            .args(["netns", "exec", &self.hub])
            .arg(tool("curl"))
            .args(["-sS", "-f", "--max-time", "5", &url])
            .output()
            .expect("curl");
        assert!(out.status.success(), "{url}: {}", String::from_utf8_lossy(&out.stderr));
        weft_tests::Metrics::parse(&String::from_utf8_lossy(&out.stdout))
            .sum("weft_responses_total", &[("direction", "inbound")])
    }
}

fn value(sample: &Value) -> Result<f64, String> {
    sample["value"][1].as_str().and_then(|v| v.parse().ok()).ok_or_else(|| format!("no value in {sample}"))
}

/// A dashboard's queries: (panel title, expr) for every target of every
/// panel (rows included), and its query variables' definitions.
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    fn walk(panels: &[Value], out: &mut Vec<(String, String)>) {
        for p in panels {
            for t in p["targets"].as_array().into_iter().flatten() {
                let expr = t["expr"].as_str().expect("every target has an expr");
                out.push((p["title"].as_str().unwrap_or_default().to_owned(), expr.to_owned()));
            }
            walk(p["panels"].as_array().map(Vec::as_slice).unwrap_or_default(), out);
        }
    }
    let mut out = Vec::new();
    walk(dashboard["panels"].as_array().expect("panels"), &mut out);
    out
}

fn substitute(expr: &str, route: &str) -> String {
    expr.replace("$__rate_interval", RATE_INTERVAL)
        .replace("$namespace", NAMESPACE)
        .replace("$workload", WORKLOAD)
        .replace("$service", SERVICE)
        .replace("$route", &regex_escape(route))
}

/// Grafana escapes a single value for `=~` the same way.
fn regex_escape(s: &str) -> String {
    s.chars().fold(String::new(), |mut out, c| {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push_str("\\\\");
        }
        out.push(c);
        out
    })
}

fn mentions_pending(expr: &str) -> Vec<&'static str> {
    PENDING.iter().copied().filter(|m| expr.contains(m)).collect()
}

/// Checks what every dashboard must have, then runs its variables and
/// queries; returns the failures.
fn check_dashboard(p: &Scraped, file: &str, route: &str) -> (usize, Vec<String>) {
    let d = read_json(&grafana_dir().join(file));
    let mut failures = Vec::new();
    assert!(d["schemaVersion"].as_u64().is_some_and(|v| v >= 39), "{file}: schemaVersion {}", d["schemaVersion"]);
    assert!(d["uid"].as_str().is_some_and(|u| u.starts_with("weft-")), "{file}: uid");
    let vars = d["templating"]["list"].as_array().expect("templating");
    assert_eq!(vars[0]["type"], "datasource", "{file}: the first variable picks the data source");
    assert_eq!(vars[0]["query"], "prometheus", "{file}");
    assert!(vars.iter().any(|v| v["name"] == "namespace"), "{file}: a $namespace variable");

    // Template variables: label_values(SELECTOR, LABEL) is what Grafana
    // asks /api/v1/label/LABEL/values?match[]=SELECTOR for.
    for var in vars.iter().filter(|v| v["type"] == "query") {
        let def = var["definition"].as_str().expect("definition");
        assert_eq!(var["query"]["query"].as_str(), Some(def), "{file}: ${} query and definition differ", var["name"]);
        assert_eq!(var["datasource"]["uid"], "${datasource}", "{file}: ${}", var["name"]);
        let inner = def.strip_prefix("label_values(").and_then(|s| s.strip_suffix(')')).expect("label_values(…)");
        let (selector, label) = inner.rsplit_once(',').expect("label_values(SELECTOR, LABEL)");
        let selector = substitute(selector.trim(), route);
        let path = format!("/api/v1/label/{}/values", label.trim());
        match p.api(PROMETHEUS_PORT, &path, &[("match[]", &selector)]) {
            Ok(values) => {
                let values: Vec<String> = serde_json::from_value(values).unwrap_or_default();
                let want = match var["name"].as_str() {
                    Some("namespace") => NAMESPACE,
                    Some("workload") => WORKLOAD,
                    Some("service") => SERVICE,
                    Some("route") => route,
                    other => panic!("{file}: a variable the test does not substitute: {other:?}"),
                };
                if !values.iter().any(|v| v == want) {
                    failures.push(format!("{file}: ${} = {def} gives {values:?}, without {want:?}", var["name"]));
                }
            }
            Err(e) => failures.push(format!("{file}: ${}: {e}", var["name"])),
        }
    }

    let queries = dashboard_queries(&d);
    for panel in d["panels"].as_array().expect("panels") {
        if panel["type"] != "row" {
            assert_eq!(panel["datasource"]["uid"], "${datasource}", "{file}: panel {}", panel["title"]);
        }
    }
    let end = now();
    for (title, expr) in &queries {
        let q = substitute(expr, route);
        assert!(!q.contains('$'), "{file}: {title}: a variable left in {q}");
        match p.query(&q) {
            Ok(r) if r.is_empty() => failures.push(empty(p, file, title, &q)),
            Ok(r) => {
                // Grafana draws timeseries from range queries: the same,
                // over the last 20 s.
                let range = p.api(
                    PROMETHEUS_PORT,
                    "/api/v1/query_range",
                    &[("query", &q), ("start", &(end - 20.0).to_string()), ("end", &end.to_string()), ("step", "2")],
                );
                match range {
                    Ok(data) if data["result"].as_array().is_some_and(|a| !a.is_empty()) => {}
                    other => failures.push(format!("{file}: {title}: range query {q}: {other:?}")),
                }
                if r.iter().all(|s| value(s).is_ok_and(f64::is_nan)) {
                    failures.push(format!("{file}: {title}: only NaN: {q} = {r:?}"));
                }
            }
            Err(e) => failures.push(format!("{file}: {title}: {e}")),
        }
    }
    (queries.len(), failures)
}

fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs_f64()
}

/// Why a query came back empty: names the new metrics no target exports.
fn empty(p: &Scraped, file: &str, title: &str, q: &str) -> String {
    let absent: Vec<&str> = mentions_pending(q)
        .into_iter()
        .filter(|m| {
            let any = format!("count({{__name__=~\"{m}(_bucket|_count|_sum)?\"}})");
            p.query(&any).map_or(true, |r| r.is_empty())
        })
        .collect();
    if absent.is_empty() {
        format!("{file}: {title}: empty result for {q}")
    } else {
        format!(
            "{file}: {title}: {} absent from every target (new with issue 13, from the proxy); {q}",
            absent.join(", ")
        )
    }
}

/// The route the route dashboard's `$route` shows: web's canary rule.
fn web_route(p: &Scraped) -> String {
    let r = p.query("sum by (route) (weft_route_requests_total)").expect("route query");
    let routes: Vec<String> = r.iter().filter_map(|s| s["metric"]["route"].as_str().map(str::to_owned)).collect();
    routes.into_iter().find(|r| r.starts_with("default/web")).unwrap_or_else(|| {
        panic!(
            "no weft_route_requests_total series for web's route: {}",
            p.query("weft_route_requests_total").map(|r| format!("{r:?}")).unwrap_or_default()
        )
    })
}

/// The recording rules: (group, record, expr).
fn rules() -> Vec<(String, String, String)> {
    let rules = read_yaml(&prometheus_dir().join("rules.yml"));
    let mut out = Vec::new();
    for g in rules["groups"].as_array().expect("groups") {
        for r in g["rules"].as_array().expect("rules") {
            out.push((
                g["name"].as_str().expect("group name").to_owned(),
                r["record"].as_str().expect("only recording rules").to_owned(),
                r["expr"].as_str().expect("expr").to_owned(),
            ));
        }
    }
    out
}

fn check_rules(p: &Scraped, pending: bool) -> (usize, Vec<String>) {
    let mut failures = Vec::new();
    let mut n = 0;
    for (group, record, expr) in rules() {
        if mentions_pending(&expr).is_empty() == pending {
            continue;
        }
        n += 1;
        match p.query(&expr) {
            Ok(r) if r.is_empty() => failures.push(empty(p, "rules.yml", &format!("{group}/{record}"), &expr)),
            Ok(_) => {
                // And Prometheus evaluates it: the recorded series exists.
                let recorded = eventually(Duration::from_secs(10), &format!("{record} recorded"), || {
                    p.query(&record).and_then(|r| if r.is_empty() { Err("not yet".into()) } else { Ok(r) })
                });
                assert!(!recorded.is_empty());
            }
            Err(e) => failures.push(format!("rules.yml: {record}: {e}")),
        }
    }
    let data = p.api(PROMETHEUS_PORT, "/api/v1/rules", &[]).expect("rules API");
    for g in data["groups"].as_array().expect("groups") {
        for r in g["rules"].as_array().expect("rules") {
            if r["health"] != "ok" && r["health"] != "unknown" {
                failures.push(format!("rules.yml: {} evaluates badly: {r}", r["name"]));
            }
        }
    }
    (n, failures)
}

#[test]
fn dashboards_and_rules_answer_from_a_real_prometheus() {
    let began = Instant::now();
    // The files as shipped, before anything runs.
    let rules_file = prometheus_dir().join("rules.yml");
    promtool(&["check", "rules", &rules_file.to_string_lossy()]);
    promtool(&["check", "config", &prometheus_dir().join("prometheus.yml").to_string_lossy()]);
    for file in DASHBOARDS {
        let d = read_json(&grafana_dir().join(file));
        for (title, expr) in dashboard_queries(&d) {
            assert!(
                mentions_pending(&expr).is_empty(),
                "{file}: {title} uses a new metric; move it to {PENDING_DASHBOARDS:?}"
            );
        }
    }
    let listed: Vec<String> = std::fs::read_dir(grafana_dir())
        .expect("manifests/grafana")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".json"))
        .collect();
    for name in &listed {
        assert!(
            DASHBOARDS.contains(&name.as_str()) || PENDING_DASHBOARDS.contains(&name.as_str()),
            "{name} is not tested: add it to DASHBOARDS or PENDING_DASHBOARDS"
        );
    }

    // The JSON is what manifests/grafana/generate.py writes.
    let regenerated = std::env::temp_dir().join(format!("weft-grafana-{}", std::process::id()));
    std::fs::create_dir_all(&regenerated).expect("a temp dir");
    let out = Command::new("/usr/bin/python3")
        .arg(grafana_dir().join("generate.py"))
        .arg(&regenerated)
        .output()
        .expect("python3 (apt-get install -y python3)");
    assert!(out.status.success(), "generate.py: {}", String::from_utf8_lossy(&out.stderr));
    for name in &listed {
        let generated = std::fs::read_to_string(regenerated.join(name)).unwrap_or_default();
        let shipped = std::fs::read_to_string(grafana_dir().join(name)).expect("the dashboard");
        assert!(
            generated == shipped,
            "{name} differs from what generate.py writes: run python3 manifests/grafana/generate.py"
        );
    }
    let _ = std::fs::remove_dir_all(&regenerated);

    let mut p = start("current");

    // Prometheus holds exactly what the proxies count: for each pod, the
    // value it scraped lies between the proxy's count just before and
    // just after (the load keeps running).
    for t in &p.targets {
        let before = p.direct_inbound(t);
        let expr = format!("sum(weft_responses_total{{direction=\"inbound\",pod=\"{}\"}})", t.pod);
        let scraped = eventually(Duration::from_secs(10), &format!("{} scraped past {before}", t.pod), || {
            let v = p.scalar(&expr).or_else(|e| if t.workload() == "load" { Ok(0.0) } else { Err(e) })?;
            if v >= before { Ok(v) } else { Err(format!("{v} < {before}")) }
        });
        let after = p.direct_inbound(t);
        assert!(scraped <= after, "{}: Prometheus has {scraped}, more than the proxy's {after}", t.pod);
    }

    // The canary view tells the versions apart: v2 fails one request in 5.
    let by_version = format!(
        "sum by (version) (rate(weft_responses_total{{direction=\"inbound\",service=\"web\",classification=\"success\"}}[{RATE_INTERVAL}])) / sum by (version) (rate(weft_responses_total{{direction=\"inbound\",service=\"web\"}}[{RATE_INTERVAL}]))"
    );
    let success: BTreeMap<String, f64> = p
        .query(&by_version)
        .expect("success by version")
        .iter()
        .map(|s| (s["metric"]["version"].as_str().unwrap_or_default().to_owned(), value(s).expect("value")))
        .collect();
    assert_eq!(success.len(), 2, "{success:?}");
    assert!(success["v1"] > 0.99, "v1 never fails: {success:?}");
    assert!((0.7..0.9).contains(&success["v2"]), "v2 fails one in 5: {success:?}");

    answer_all(&p, &DASHBOARDS, false);

    kubernetes_relabeling(&mut p);
    eprintln!("done in {:.1?}", began.elapsed());
    p.up.interrupt(Duration::from_secs(30));
}

/// Runs every panel query of `dashboards` and the recording rules (the
/// route rules when `pending`), and fails listing every one that did not
/// answer.
fn answer_all(p: &Scraped, dashboards: &[&str], pending: bool) {
    let route = web_route(p);
    let mut failures = Vec::new();
    let mut queries = 0;
    for file in dashboards {
        let (n, f) = check_dashboard(p, file, &route);
        queries += n;
        failures.extend(f);
    }
    let (n, f) = check_rules(p, pending);
    failures.extend(f);
    assert!(
        failures.is_empty(),
        "{} of {queries} panel queries and {n} rules failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("{queries} panel queries and {n} recording rules answered");
}

#[test]
fn route_and_edge_panels_answer() {
    let p = start("pending");
    answer_all(&p, &PENDING_DASHBOARDS, true);
    let mut p = p;
    p.up.interrupt(Duration::from_secs(30));
}

/// `manifests/prometheus/kubernetes.yml`'s relabeling, run by a second
/// Prometheus: Debian's build has no Kubernetes discovery, so its
/// `kubernetes_sd_configs` becomes a file giving the real proxies the
/// `__meta_kubernetes_*` labels the pod role would, plus targets it must
/// drop. The PodMonitor must carry the same relabeling.
fn kubernetes_relabeling(p: &mut Scraped) {
    let (prometheus, _) = prometheus_tools();
    let mut config = read_yaml(&prometheus_dir().join("kubernetes.yml"));
    config["global"] = json!({"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"});
    config["rule_files"] = json!([prometheus_dir().join("rules.yml")]);
    let job = config["scrape_configs"][0].as_object_mut().expect("one job");
    let sd = job.remove("kubernetes_sd_configs").expect("kubernetes_sd_configs");
    assert_eq!(sd, json!([{"role": "pod"}]));
    let file = p.dir.join("kube-targets.json");
    job.insert("file_sd_configs".into(), json!([{"files": [file], "refresh_interval": "1s"}]));
    let relabel = job["relabel_configs"].clone();

    let meta = |pod: &str, port: &str, kind: &str, controller: &str, extra: &[(&str, &str)]| {
        let mut m = json!({
            "__meta_kubernetes_namespace": "shop",
            "__meta_kubernetes_pod_name": pod,
            "__meta_kubernetes_pod_phase": "Running",
            "__meta_kubernetes_pod_container_port_name": port,
            "__meta_kubernetes_pod_controller_kind": kind,
            "__meta_kubernetes_pod_controller_name": controller,
            "__meta_kubernetes_pod_node_name": "node-1",
        });
        for (k, v) in extra {
            m[format!("__meta_kubernetes_pod_{k}")] = json!(v);
        }
        m
    };
    let addr = |i: usize| p.targets[i].scrape.clone();
    let sd = json!([
        // A Deployment's pod (through its ReplicaSet): app and version labels.
        {"targets": [addr(0)], "labels": meta("web-v1-6d9f8b7c5-x2x9k", "weft-admin", "ReplicaSet", "web-v1-6d9f8b7c5",
            &[("label_pod_template_hash", "6d9f8b7c5"), ("label_app", "web"), ("label_version", "v1")])},
        // A StatefulSet's pod, named by app.kubernetes.io/*.
        {"targets": [addr(1)], "labels": meta("store-0", "weft-admin", "StatefulSet", "store",
            &[("label_app_kubernetes_io_name", "store"), ("label_app_kubernetes_io_version", "7.0")])},
        // A bare pod.
        {"targets": [addr(2)], "labels": meta("debug", "weft-admin", "", "", &[])},
        // Dropped: the app's own port, a pod opted out, a finished pod.
        {"targets": [addr(3)], "labels": meta("web-v1-6d9f8b7c5-x2x9k", "http", "ReplicaSet", "web-v1-6d9f8b7c5", &[])},
        {"targets": [addr(3)], "labels": meta("quiet", "weft-admin", "", "", &[("annotation_weft_dev_scrape", "false")])},
        {"targets": [addr(3)], "labels": meta("job-1-abcde", "weft-admin", "Job", "job-1", &[("phase", "Succeeded")])},
    ]);
    std::fs::write(&file, serde_json::to_string_pretty(&sd).expect("JSON")).expect("writing");
    let path = p.dir.join("kubernetes.yml");
    write_yaml(&path, &config);
    promtool(&["check", "config", &path.to_string_lossy()]);

    let kube = spawn_prometheus(&p.dir, &p.hub, &prometheus, &path, KUBE_PROMETHEUS_PORT, "prometheus-kube");
    let main = std::mem::replace(&mut p.prometheus, kube);
    p.wait_targets_up(KUBE_PROMETHEUS_PORT, 3);
    let data = p.api(KUBE_PROMETHEUS_PORT, "/api/v1/targets", &[]).expect("targets");
    let mut got: Vec<Value> = data["activeTargets"]
        .as_array()
        .expect("active")
        .iter()
        .map(|t| {
            let mut l = t["labels"].clone();
            let l = l.as_object_mut().expect("labels");
            l.remove("instance");
            l.remove("job");
            json!(l)
        })
        .collect();
    got.sort_by_key(|l| l["pod"].as_str().unwrap_or_default().to_owned());
    assert_eq!(
        got,
        vec![
            json!({"namespace": "shop", "pod": "debug", "workload": "debug", "node": "node-1"}),
            json!({"namespace": "shop", "pod": "store-0", "workload": "store", "service": "store", "version": "7.0", "node": "node-1"}),
            json!({"namespace": "shop", "pod": "web-v1-6d9f8b7c5-x2x9k", "workload": "web-v1", "service": "web", "version": "v1", "node": "node-1"}),
        ],
        "the Kubernetes job's target labels"
    );
    assert_eq!(data["droppedTargets"].as_array().map(Vec::len), Some(3), "{data}");
    drop(std::mem::replace(&mut p.prometheus, main));

    // The PodMonitor relabels the same way (the Operator itself keeps the
    // named port and drops finished pods).
    let monitor = read_yaml(&prometheus_dir().join("podmonitor.yaml"));
    assert_eq!(monitor["kind"], "PodMonitor");
    let endpoint = &monitor["spec"]["podMetricsEndpoints"][0];
    assert_eq!(endpoint["port"], "weft-admin");
    let snake = |r: &Value| -> Value {
        let mut out = serde_json::Map::new();
        for (k, v) in r.as_object().expect("a relabeling") {
            let k = match k.as_str() {
                "sourceLabels" => "source_labels",
                "targetLabel" => "target_label",
                other => other,
            };
            out.insert(k.to_owned(), v.clone());
        }
        Value::Object(out)
    };
    let from_monitor: Vec<Value> = endpoint["relabelings"].as_array().expect("relabelings").iter().map(snake).collect();
    let from_config: Vec<Value> = relabel
        .as_array()
        .expect("relabel_configs")
        .iter()
        .filter(|r| {
            let src = r["source_labels"][0].as_str().unwrap_or_default();
            !matches!(
                src,
                "__meta_kubernetes_pod_container_port_name"
                    | "__meta_kubernetes_pod_phase"
                    | "__meta_kubernetes_pod_node_name"
            )
        })
        .cloned()
        .collect();
    assert_eq!(from_monitor, from_config, "podmonitor.yaml and kubernetes.yml relabel differently");
}
