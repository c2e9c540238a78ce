//! End-to-end: the real `weft` binary runs a local mesh in network
//! namespaces, serves a request from one pod to another through the mesh
//! (hosts file → virtual IP → interception → discovery → peer proxy → app),
//! and leaves nothing behind after Ctrl-C. Then `weft demo` passes.
//!
//! These need root, iproute2, iptables, util-linux's setpriv and curl.
//! Without them they fail and say what is missing; they never skip.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const WEFT: &str = env!("CARGO_BIN_EXE_weft");

/// Panics with everything that prevents these tests from running here.
fn preflight() {
    let mut problems = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        problems.push(
            "these tests must run as root (weft up creates network namespaces and iptables rules): run them with \
             sudo or as root, as CI does"
                .to_owned(),
        );
    }
    for (tool, package) in [("ip", "iproute2"), ("iptables", "iptables"), ("setpriv", "util-linux"), ("curl", "curl")] {
        if weft_cli::system::find(tool).is_none() {
            problems.push(format!("`{tool}` is not installed: apt-get install -y {package}"));
        }
    }
    assert!(problems.is_empty(), "cannot run the weft up tests here:\n  - {}", problems.join("\n  - "));
}

fn tool(name: &str) -> std::path::PathBuf {
    weft_cli::system::find(name).unwrap_or_else(|| panic!("{name} is not installed"))
}

/// Polls `check` until it returns `Ok` or `within` passes.
fn eventually<T>(within: Duration, what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + within;
    loop {
        match check() {
            Ok(value) => return value,
            Err(e) if Instant::now() >= deadline => panic!("{what}: not within {within:?}; last: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// A `weft` process, stopped (SIGINT, then SIGKILL) if the test panics.
struct Weft {
    child: Child,
    stdout: std::path::PathBuf,
    stderr: std::path::PathBuf,
}

impl Weft {
    fn start(dir: &Path, args: &[&str]) -> Weft {
        let stdout = dir.join("weft.stdout");
        let stderr = dir.join("weft.stderr");
        let child = Command::new(WEFT)
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("starting weft");
        Weft { child, stdout, stderr }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn output(&self) -> String {
        format!(
            "--- weft stdout\n{}\n--- weft stderr\n{}",
            std::fs::read_to_string(&self.stdout).unwrap_or_default(),
            std::fs::read_to_string(&self.stderr).unwrap_or_default()
        )
    }

    /// Waits for the exit, killing it after `within`.
    fn wait(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!("weft did not exit within {within:?}\n{}", self.output());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Weft {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGINT);
            let deadline = Instant::now() + Duration::from_secs(20);
            while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.output());
        }
    }
}

/// A process by PID and start time (so that a reused PID is not mistaken for it).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Proc {
    pid: i32,
    start: String,
    cmdline: String,
}

fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let after = &stat[stat.rfind(')')? + 2..];
    Some(after.split_whitespace().map(str::to_owned).collect())
}

/// The children of `parent` now.
fn children(parent: u32) -> BTreeSet<Proc> {
    let mut found = BTreeSet::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Some(fields) = stat_fields(pid) else { continue };
        // fields[1] is the parent PID, fields[19] the start time (stat fields 4 and 22).
        if fields.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(parent) {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            found.insert(Proc {
                pid,
                start: fields.get(19).cloned().unwrap_or_default(),
                cmdline: String::from_utf8_lossy(&cmdline).replace('\0', " "),
            });
        }
    }
    found
}

fn alive(p: &Proc) -> bool {
    // A zombie has exited; it is only waiting to be reaped.
    stat_fields(p.pid).is_some_and(|f| f.get(19) == Some(&p.start) && f.first().map(String::as_str) != Some("Z"))
}

fn netns_of_run(pid: u32) -> Vec<String> {
    let out = Command::new(tool("ip")).args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&format!("weft-{pid}-")))
        .map(str::to_owned)
        .collect()
}

fn etc_netns_of_run(pid: u32) -> Vec<String> {
    std::fs::read_dir("/etc/netns")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("weft-{pid}-")))
        .collect()
}

fn root_nat_rules() -> String {
    let out = Command::new(tool("iptables")).args(["-t", "nat", "-S"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Nothing of run `pid` remains: namespaces, hosts directories, processes,
/// state, rules in the root namespace.
fn assert_nothing_left(pid: u32, started: &BTreeSet<Proc>, rules_before: &str, weft: &Weft) {
    assert!(netns_of_run(pid).is_empty(), "namespaces left: {:?}\n{}", netns_of_run(pid), weft.output());
    assert!(etc_netns_of_run(pid).is_empty(), "/etc/netns entries left: {:?}", etc_netns_of_run(pid));
    let survivors: Vec<&Proc> = started.iter().filter(|p| alive(p)).collect();
    assert!(survivors.is_empty(), "processes weft started are still running: {survivors:?}\n{}", weft.output());
    assert!(!Path::new(&format!("/run/weft/{pid}")).exists(), "state directory /run/weft/{pid} left");
    assert_eq!(root_nat_rules(), rules_before, "the root namespace's nat rules changed");
}

const MESH: &str = r#"
apiVersion: weft.dev/v1alpha1
kind: LocalMesh
metadata: {name: uptest}
spec:
  services:
    - {name: web, selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}
    - {name: store, selector: {app: store}, ports: [{port: 6379}]}
  workloads:
    - name: store
      labels: {app: store}
      command: [weft, example, store, --listen, "$(WEFT_LISTEN_IP):6379"]
      ports: [6379]
    - name: web
      replicas: 2
      labels: {app: web, version: v1}
      serviceAccount: web
      command: [weft, example, web, --listen, "$(WEFT_LISTEN_IP):8080", --store, "store:6379"]
      env: {APP_VERSION: v1}
      ports: [8080]
    - name: client
      command: [sleep, infinity]
"#;

#[test]
fn up_serves_a_request_between_pods_and_leaves_nothing_behind() {
    preflight();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mesh.yaml"), MESH).unwrap();
    let rules_before = root_nat_rules();
    let mut weft = Weft::start(dir.path(), &["up", "-f", "mesh.yaml"]);
    let pid = weft.pid();
    let client = format!("weft-{pid}-client-0");

    // From the client pod, by service name, exactly as on Kubernetes.
    let body = eventually(Duration::from_secs(90), "a request from the client pod to http://web/", || {
        if let Some(status) = weft.child.try_wait().unwrap() {
            panic!("weft up exited early ({status})\n{}", weft.output());
        }
        let out = Command::new(tool("ip"))
            .args(["netns", "exec", &client])
            .arg(tool("curl"))
            .args(["-sS", "-f", "-m", "3", "http://web/"])
            .output()
            .map_err(|e| e.to_string())?;
        let body = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && body.contains("\"count\":") {
            Ok(body)
        } else {
            Err(format!("{}: {}{}", out.status, body, String::from_utf8_lossy(&out.stderr)))
        }
    });
    assert!(body.contains("\"pod\":\"web-"), "{body}");
    assert!(body.contains("\"version\":\"v1\""), "{body}");

    // The summary was printed, the pods exist, and so do their hosts files.
    let stdout = std::fs::read_to_string(&weft.stdout).unwrap();
    assert!(stdout.contains("web.default") && stdout.contains("198.19.0.1"), "{stdout}");
    assert_eq!(netns_of_run(pid).len(), 5, "hub + store + 2 web + client");
    assert_eq!(etc_netns_of_run(pid).len(), 4);
    let hosts = std::fs::read_to_string(format!("/etc/netns/{client}/hosts")).unwrap();
    assert!(hosts.contains("web web.default web.default.svc.cluster.local"), "{hosts}");
    let started = children(pid);
    assert!(started.len() >= 9, "the control plane, 4 proxies and 4 apps: {started:?}");

    kill(Pid::from_raw(pid as i32), Signal::SIGINT).unwrap();
    let status = weft.wait(Duration::from_secs(60));
    assert!(status.success(), "weft up after Ctrl-C: {status}\n{}", weft.output());
    assert_nothing_left(pid, &started, &rules_before, &weft);
}

#[test]
fn demo_succeeds_and_prints_the_table() {
    preflight();
    let dir = tempfile::tempdir().unwrap();
    let rules_before = root_nat_rules();
    let mut weft = Weft::start(dir.path(), &["demo", "--duration", "20s"]);
    let pid = weft.pid();
    // Record what it starts while it runs (for the leftovers check).
    let mut started = BTreeSet::new();
    let status = loop {
        started.extend(children(pid));
        if let Some(status) = weft.child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(Duration::from_millis(500));
        assert!(started.len() < 1000);
    };
    let _ = weft.wait(Duration::from_secs(1));
    let stdout = std::fs::read_to_string(&weft.stdout).unwrap();
    assert!(status.success(), "weft demo failed ({status})\n{}", weft.output());
    let header = stdout.lines().find(|l| l.starts_with("SERVICE ")).unwrap_or_else(|| panic!("no table:\n{stdout}"));
    assert_eq!(header.split_whitespace().collect::<Vec<_>>(), ["SERVICE", "SUCCESS", "RPS", "P50", "P95", "P99"]);
    let web = stdout.lines().find(|l| l.starts_with("web.default")).unwrap_or_else(|| panic!("no web row:\n{stdout}"));
    let cells: Vec<&str> = web.split_whitespace().collect();
    assert_eq!(cells.len(), 6, "{web}");
    let success: f64 = cells[1].trim_end_matches('%').parse().unwrap();
    let rps: f64 = cells[2].parse().unwrap();
    assert!(success >= 99.0, "{web}");
    assert!(rps > 25.0 && rps < 75.0, "about 50 requests per second: {web}");
    assert!(stdout.contains("demo traffic succeeded"), "{stdout}");
    assert!(started.len() >= 11, "control plane, 5 proxies, 5 apps: {started:?}");
    assert_nothing_left(pid, &started, &rules_before, &weft);
}
