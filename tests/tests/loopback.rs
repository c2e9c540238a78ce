//! The local mesh without root: `weft up --mode loopback` and `weft demo
//! --mode loopback` run as an unprivileged user (nobody, 65534), every pod on
//! its own 127.N.x.y. Apps reach services through their proxy as an explicit
//! HTTP proxy (`curl -x http://<pod ip>:4140 http://web/`): the proxy
//! resolves the name through the control plane and balances over the
//! replicas, which registered once they listened on their own address.
//! Nothing of a run is left once it stops. Traffic stays on 127.0.0.0/8.
//!
//! Root is needed only to switch to the unprivileged user (`setpriv`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::time::Duration;

use weft_tests::weft::{ProcId, WeftProcess, alive, descendants, running};
use weft_tests::{eventually, preflight, tool, weft_bin};

/// The unprivileged user the meshes run as.
const NOBODY: u32 = 65534;

const MESH: &str = r#"
apiVersion: weft.dev/v1alpha1
kind: LocalMesh
metadata: {name: loopback}
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
      replicas: 3
      labels: {app: web}
      # No virtual IPs in loopback mode: Redis goes to the first store replica.
      command: [weft, example, web, --listen, "$(WEFT_LISTEN_IP):8080",
                --store, "$(STORE_SERVICE_HOST):$(STORE_SERVICE_PORT)"]
      ports: [8080]
    - name: client
      command: [sleep, infinity]
"#;

/// A directory owned by nobody holding a copy of `weft` (so that nobody can
/// run it wherever the target directory is), the mesh file, and nobody's
/// HOME and XDG_RUNTIME_DIR (the runs' state and logs). Removed at the end.
struct Home {
    dir: PathBuf,
    weft: PathBuf,
}

impl Home {
    fn new(name: &str) -> Home {
        let dir = std::env::temp_dir().join(format!("weft-loopback-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // Not `dir/weft`: that is where weft keeps the runs' state.
        std::fs::create_dir(dir.join("bin")).unwrap();
        let weft = dir.join("bin/weft");
        std::fs::copy(weft_bin(), &weft).unwrap();
        std::fs::write(dir.join("mesh.yaml"), MESH).unwrap();
        for path in [&dir, &dir.join("bin"), &weft, &dir.join("mesh.yaml")] {
            std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY)).unwrap();
        }
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        Home { dir, weft }
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// `weft ARGS` as nobody, with a clean environment; its run's state
/// directory.
struct Weft {
    proc: WeftProcess,
    state: PathBuf,
}

impl Weft {
    fn start(home: &Home, args: &[&str]) -> Weft {
        let mut cmd = Command::new(tool("setpriv"));
        cmd.args([format!("--reuid={NOBODY}"), format!("--regid={NOBODY}"), "--clear-groups".into(), "--".into()])
            .arg(&home.weft)
            .args(args)
            .current_dir(&home.dir)
            .env_clear()
            .env("HOME", &home.dir)
            .env("XDG_RUNTIME_DIR", &home.dir)
            .env("PATH", "/usr/local/bin:/usr/bin:/bin");
        let proc = WeftProcess::spawn(cmd, &home.dir, args[0]);
        // setpriv execs weft: the child's PID is weft's, the run's id.
        let state = home.dir.join("weft").join(proc.pid().to_string());
        Weft { proc: proc.with_logs(state.join("logs")), state }
    }

    /// Waits for the exit while recording the processes of the run.
    fn wait(&mut self, within: Duration, seen: &mut BTreeSet<ProcId>) -> ExitStatus {
        self.proc.wait_exit(within, |p| seen.extend(descendants(p.pid())))
    }
}

impl std::ops::Deref for Weft {
    type Target = WeftProcess;
    fn deref(&self) -> &WeftProcess {
        &self.proc
    }
}

impl std::ops::DerefMut for Weft {
    fn deref_mut(&mut self) -> &mut WeftProcess {
        &mut self.proc
    }
}

/// Nothing of the run remains: no process it started, no state directory.
fn assert_nothing_left(home: &Home, weft: &Weft, seen: &BTreeSet<ProcId>) {
    let survivors: Vec<&ProcId> = seen.iter().filter(|p| alive(p)).collect();
    assert!(survivors.is_empty(), "processes of the run are still running: {survivors:?}\n{}", weft.output());
    let stray = running(&home.weft.to_string_lossy());
    assert!(stray.is_empty(), "processes running {} are left: {stray:?}", home.weft.display());
    assert!(!weft.state.exists(), "the state directory {} was left", weft.state.display());
}

/// The address of `pod` in the summary's PODS table.
fn pod_ip(stdout: &str, pod: &str) -> Option<String> {
    let line = stdout.lines().find(|l| l.trim_start().starts_with(&format!("{pod}.default ")))?;
    let ip = line.split_whitespace().nth(1)?;
    ip.starts_with("127.").then(|| ip.to_owned())
}

/// `curl ARGS` as nobody; the output and whether it exited 0.
fn curl(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(tool("setpriv"))
        .args([format!("--reuid={NOBODY}"), format!("--regid={NOBODY}"), "--clear-groups".into(), "--".into()])
        .arg(tool("curl"))
        .args(["-sS", "-m", "5"])
        .args(args)
        .env_clear()
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Each `STATUS=<code>` that curl's `-w` wrote, and the pods the web app
/// said answered (`"pod":"web-1"`).
fn statuses_and_pods(out: &str) -> (Vec<String>, Vec<String>) {
    let statuses = out.split("STATUS=").skip(1).map(|s| s.chars().take(3).collect()).collect();
    let pods = out.split("\"pod\":\"").skip(1).filter_map(|s| s.split('"').next()).map(str::to_owned).collect();
    (statuses, pods)
}

#[test]
fn up_as_nobody_serves_requests_through_the_explicit_proxy_and_leaves_nothing() {
    preflight();
    let home = Home::new("up");
    let mut weft = Weft::start(&home, &["up", "-f", "mesh.yaml", "--mode", "loopback"]);
    let mut seen = BTreeSet::new();

    let client = eventually(Duration::from_secs(90), "the summary with the client pod's address", || {
        if let Some(status) = weft.exited() {
            panic!("weft up exited early ({status})\n{}", weft.output());
        }
        pod_ip(&weft.stdout(), "client-0").ok_or_else(|| weft.stdout())
    });
    assert!(weft.stdout().contains("loopback mode"), "{}", weft.output());
    let proxy = format!("http://{client}:4140");

    // The first request waits for the web replicas to register.
    eventually(Duration::from_secs(60), "a request to http://web/ through the client's proxy", || {
        seen.extend(descendants(weft.pid()));
        let (ok, out, err) = curl(&["-f", "-x", &proxy, "http://web/"]);
        if ok && out.contains("\"count\":") { Ok(()) } else { Err(format!("{out}{err}")) }
    });
    seen.extend(descendants(weft.pid()));
    assert!(seen.len() >= 10, "the control plane, 5 proxies and 5 apps: {seen:?}");

    // 60 requests on one keep-alive connection: balanced per request, and
    // every one reaches web, which reaches the store (Redis) by address.
    const N: usize = 60;
    let (_, out, err) = curl(&["-x", &proxy, "-w", "STATUS=%{http_code}\n", &format!("http://web/?n=[1-{N}]")]);
    let (statuses, pods) = statuses_and_pods(&out);
    assert_eq!(statuses.len(), N, "{out}{err}");
    assert!(statuses.iter().all(|s| s == "200"), "every request succeeds: {statuses:?}\n{out}");
    let mut replicas: BTreeMap<&String, usize> = BTreeMap::new();
    for pod in &pods {
        *replicas.entry(pod).or_default() += 1;
    }
    assert_eq!(pods.len(), N, "{out}");
    assert!(replicas.len() > 1, "more than one replica answered: {replicas:?}");
    eprintln!("loopback: {N}/{N} requests succeeded through {proxy}; answers per replica: {replicas:?}");

    // Every spelling of the service, and a CONNECT tunnel.
    for url in ["http://web:80/", "http://web.default/", "http://web.default.svc.cluster.local/", "http://WEB/"] {
        let (ok, out, err) = curl(&["-f", "-x", &proxy, url]);
        assert!(ok && out.contains("\"pod\":\"web-"), "{url}: {out}{err}");
    }
    // A request line longer than protocol detection's 1 KiB is still HTTP.
    let long = format!("http://web/?pad={}", "x".repeat(3000));
    let (ok, out, err) = curl(&["-f", "-x", &proxy, &long]);
    assert!(ok && out.contains("\"pod\":\"web-"), "a 3 KB request line: {out}{err}");
    let (ok, out, err) = curl(&["-f", "-p", "-x", &proxy, "http://web:80/"]);
    assert!(ok && out.contains("\"pod\":\"web-"), "CONNECT web:80: {out}{err}");

    // What the explicit proxy refuses, and says why.
    let (_, out, _) = curl(&["-w", "STATUS=%{http_code}", &format!("{proxy}/")]);
    assert!(out.contains("STATUS=400") && out.contains("explicit HTTP proxy"), "origin form: {out}");
    let (_, out, _) = curl(&["-w", "STATUS=%{http_code}", "-x", &proxy, &format!("{proxy}/")]);
    assert!(out.contains("STATUS=508"), "a request for the proxy itself: {out}");
    let (_, out, _) = curl(&["-w", "STATUS=%{http_code}", "-x", &proxy, "http://no-such-service.invalid/"]);
    assert!(out.contains("STATUS=502") && out.contains("cannot resolve"), "an unknown name: {out}");

    seen.extend(descendants(weft.pid()));
    weft.sigint();
    let status = weft.wait(Duration::from_secs(60), &mut seen);
    assert!(status.success(), "weft up after Ctrl-C: {status}\n{}", weft.output());
    assert_nothing_left(&home, &weft, &seen);
}

#[test]
fn demo_as_nobody_in_loopback_mode_succeeds() {
    preflight();
    let home = Home::new("demo");
    let mut weft = Weft::start(&home, &["demo", "--mode", "loopback", "--duration", "10s"]);
    let mut seen = BTreeSet::new();
    let status = weft.wait(Duration::from_secs(180), &mut seen);
    let stdout = weft.stdout();
    assert!(status.success(), "weft demo failed ({status})\n{}", weft.output());
    assert!(stdout.contains("loopback mode"), "{stdout}");
    let web = stdout.lines().find(|l| l.starts_with("web.default")).unwrap_or_else(|| panic!("no web row:\n{stdout}"));
    let cells: Vec<&str> = web.split_whitespace().collect();
    let success: f64 = cells[1].trim_end_matches('%').parse().unwrap();
    assert!(success >= 99.0, "{web}");
    assert!(stdout.contains("demo traffic succeeded"), "{stdout}");
    assert!(seen.len() >= 10, "the control plane, 5 proxies and 5 apps: {seen:?}");
    assert_nothing_left(&home, &weft, &seen);
}
