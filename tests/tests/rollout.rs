//! `weft rollout` end to end: a real `weft up` in network namespaces with
//! `web` (all versions), `web-v1` (×2) and `web-v2` (×1) served by the
//! testkit HTTP server, and the example load generator calling
//! `http://web/` at 100 requests per second from its own pod. Then:
//!
//! - a canary of a healthy v2 (`--steps 50,100 --interval 3s`) exits 0, the
//!   route file ends at 0/100, and only v2's inbound proxy still counts
//!   requests;
//! - a canary of a v2 that answers every request 503 exits 1 after the
//!   first step, the route file is back at 100/0, and only v1 gets requests.
//!
//! Traffic stays inside the run's namespaces. Each test stops its `weft up`
//! (SIGINT) and checks that its namespaces and state are gone. Needs root,
//! iproute2, iptables, util-linux's setpriv and curl; never skips.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use weft_tests::weft::{WeftProcess, pod_metrics};
use weft_tests::{eventually, preflight, testkit_bin, tool, weft_bin};

/// The mesh; `FAIL_EVERY` is v2's `--fail-every` (0: never, 1: always).
const MESH: &str = r#"
apiVersion: weft.dev/v1alpha1
kind: LocalMesh
metadata: {name: rollout}
spec:
  policies: [./policy]
  # Not what is tested here, and plaintext starts faster.
  mtls: {enabled: false}
  services:
    - {name: web, selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}
    - {name: web-v1, selector: {version: v1}, ports: [{port: 80, targetPort: 8080}]}
    - {name: web-v2, selector: {version: v2}, ports: [{port: 80, targetPort: 8080}]}
  workloads:
    - name: web-v1
      replicas: 2
      labels: {app: web, version: v1}
      command: [TESTKIT, http-server, --listen, "0.0.0.0:8080", --name, v1]
      ports: [8080]
    - name: web-v2
      labels: {app: web, version: v2}
      command: [TESTKIT, http-server, --listen, "0.0.0.0:8080", --name, v2, --fail-every, "FAIL_EVERY"]
      ports: [8080]
    - name: load
      command: [weft, example, load, --target, "http://web/", --rate, "100", --timeout, "1s"]
"#;

const V1_PODS: [&str; 2] = ["web-v1-0", "web-v1-1"];
const V2_POD: &str = "web-v2-0";

/// A scratch directory with the mesh file and its policy directory.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str, fail_every: u32) -> Dir {
        let dir = std::env::temp_dir().join(format!("weft-rollout-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("policy")).unwrap();
        let mesh =
            MESH.replace("TESTKIT", &testkit_bin().to_string_lossy()).replace("FAIL_EVERY", &fail_every.to_string());
        std::fs::write(dir.join("mesh.yaml"), mesh).unwrap();
        Dir(dir)
    }

    fn route(&self) -> String {
        std::fs::read_to_string(self.0.join("policy/rollout-web.yaml")).unwrap_or_default()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// `weft up -f mesh.yaml` in `dir`; stopped (SIGINT, then SIGKILL) if the
/// test panics.
fn up(dir: &Path) -> WeftProcess {
    let mut cmd = Command::new(weft_bin());
    cmd.args(["up", "-f", "mesh.yaml"]).current_dir(dir);
    let proc = WeftProcess::spawn(cmd, dir, "up");
    let logs = PathBuf::from(format!("/run/weft/{}/logs", proc.pid()));
    proc.with_logs(logs)
}

/// Requests `pod`'s inbound proxy answered so far.
fn inbound(run: u32, pod: &str) -> Result<f64, String> {
    Ok(pod_metrics(run, pod)?.sum("weft_responses_total", &[("direction", "inbound")]))
}

/// Inbound requests of v1 (both pods) and v2.
fn counts(run: u32) -> Result<(f64, f64), String> {
    let v1 = inbound(run, V1_PODS[0])? + inbound(run, V1_PODS[1])?;
    Ok((v1, inbound(run, V2_POD)?))
}

/// Waits until at least `n` more requests reached the pods since `from`
/// and checks who got them: (v1's share, v2's share).
fn traffic_since(run: u32, from: (f64, f64), n: f64) -> (f64, f64) {
    eventually(Duration::from_secs(15), &format!("{n} more requests to web"), || {
        let now = counts(run)?;
        let delta = (now.0 - from.0, now.1 - from.1);
        if delta.0 + delta.1 >= n { Ok(delta) } else { Err(format!("{delta:?}")) }
    })
}

/// Who got the next 100 requests, once the last route change has reached
/// every proxy (the 50 requests before are left out: the control plane
/// reads the file within 250 ms, then pushes it).
fn settled_traffic(run: u32) -> (f64, f64) {
    traffic_since(run, counts(run).unwrap(), 50.0);
    traffic_since(run, counts(run).unwrap(), 100.0)
}

/// The weight of `backend` in the route file (`- name: B` then `weight: N`).
fn weight(route: &str, backend: &str) -> Option<u32> {
    let lines: Vec<&str> = route.lines().map(str::trim).collect();
    let at = lines.iter().position(|l| *l == format!("- name: {backend}"))?;
    lines[at..].iter().take(4).find_map(|l| l.strip_prefix("weight: ")?.parse().ok())
}

/// `weft rollout ARGS` against run `run`: exit status, stdout, and how long it took.
fn rollout(run: u32, args: &[&str]) -> (ExitStatus, String, Duration) {
    let started = Instant::now();
    let mut child = Command::new(weft_bin())
        .args(["rollout", "--service", "web", "--stable", "web-v1", "--canary", "web-v2", "--run"])
        .arg(run.to_string())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting weft rollout");
    let deadline = started + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("weft rollout did not finish within 30s:\n{}", String::from_utf8_lossy(&out.stdout));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("--- weft rollout {args:?} ({:.1?}, {status})\n{text}", started.elapsed());
    (status, text, started.elapsed())
}

/// Starts the mesh and waits until the load reaches web.
fn start(dir: &Dir) -> WeftProcess {
    preflight();
    let began = Instant::now();
    let up = up(&dir.0);
    let run = up.pid();
    let record = PathBuf::from(format!("/run/weft/{run}/run.json"));
    eventually(Duration::from_secs(45), "the run record", || {
        if !up_alive(&up) {
            return Err(format!("weft up exited\n{}", up.output()));
        }
        std::fs::read_to_string(&record).map_err(|e| e.to_string())
    });
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&record).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644, "run.json is readable by anyone");
        let text = std::fs::read_to_string(&record).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["pid"], run, "{text}");
        assert_eq!(json["mode"], "netns", "{text}");
        assert_eq!(json["policies"][0], dir.0.join("policy").to_string_lossy().as_ref(), "{text}");
        assert_eq!(json["pods"].as_array().map(Vec::len), Some(4), "{text}");
    }
    let from = eventually(Duration::from_secs(15), "the proxies' metrics", || counts(run));
    traffic_since(run, from, 50.0);
    eprintln!("the mesh is up and web is getting requests after {:.1?}", began.elapsed());
    up
}

fn up_alive(up: &WeftProcess) -> bool {
    Path::new(&format!("/proc/{}", up.pid())).exists()
}

/// Stops the mesh and checks that nothing of it remains.
fn stop(mut up: WeftProcess) {
    let run = up.pid();
    let status = up.interrupt(Duration::from_secs(30));
    assert!(status.success(), "weft up after SIGINT: {status}\n{}", up.output());
    let out = Command::new(tool("ip")).args(["netns", "list"]).output().unwrap();
    let left: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with(&format!("weft-{run}-")))
        .map(str::to_owned)
        .collect();
    assert!(left.is_empty(), "namespaces left: {left:?}");
    assert!(!Path::new(&format!("/run/weft/{run}")).exists(), "the state directory (and run.json) is left");
}

#[test]
fn canary_of_a_healthy_version_reaches_all_traffic() {
    let dir = Dir::new("healthy", 0);
    let up = start(&dir);
    let run = up.pid();

    let (status, out, took) =
        rollout(run, &["--strategy", "canary", "--steps", "50,100", "--interval", "3s", "--abort-on-error-rate", "5%"]);
    assert!(status.success(), "{out}");
    assert!(out.contains("step 1/2: web-v2 at 50 % …"), "{out}");
    assert!(out.contains("step 2/2: web-v2 at 100 % …"), "{out}");
    assert!(out.contains("done in") && out.contains("web-v2 takes all of web"), "{out}");
    assert!(!out.contains("did not run the step's route"), "a step was judged before the proxies ran it:\n{out}");
    assert!(took < Duration::from_secs(15), "2 steps of 3s took {took:?}");
    let route = dir.route();
    assert_eq!((weight(&route, "web-v1"), weight(&route, "web-v2")), (Some(0), Some(100)), "{route}");

    // All traffic now reaches v2; v1 gets none.
    let (v1, v2) = settled_traffic(run);
    assert_eq!(v1, 0.0, "v1 still got requests after the rollout ({v2} to v2)");

    // --rollback puts everything back on v1 at once.
    let (status, out, _) = rollout(run, &["--rollback"]);
    assert!(status.success(), "{out}");
    let route = dir.route();
    assert_eq!((weight(&route, "web-v1"), weight(&route, "web-v2")), (Some(100), Some(0)), "{route}");
    stop(up);
}

#[test]
fn canary_of_a_failing_version_rolls_back_by_itself() {
    let dir = Dir::new("failing", 1);
    let up = start(&dir);
    let run = up.pid();

    let (status, out, took) =
        rollout(run, &["--strategy", "canary", "--steps", "50,100", "--interval", "3s", "--abort-on-error-rate", "5%"]);
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(out.contains("step 1/2: web-v2 at 50 % …"), "{out}");
    assert!(!out.contains("step 2/2"), "it stopped at the first step:\n{out}");
    assert!(out.contains("rolled back:") && out.contains("requests to web-v2 failed at step 1/2"), "{out}");
    assert!(took < Duration::from_secs(10), "one step of 3s took {took:?}");
    let route = dir.route();
    assert_eq!((weight(&route, "web-v1"), weight(&route, "web-v2")), (Some(100), Some(0)), "{route}");

    // v1 has all the traffic again.
    let (v1, v2) = settled_traffic(run);
    assert_eq!(v2, 0.0, "v2 still got requests after the rollback ({v1} to v1)");
    stop(up);
}
