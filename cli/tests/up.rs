//! End-to-end: the real `weft` binary runs a local mesh in network
//! namespaces, serves a request from one pod to another through the mesh
//! (hosts file → virtual IP → interception → discovery → peer proxy → app),
//! with mutual TLS between the proxies (every proxy holds its pod's
//! identity, nothing crosses the bridge in plaintext, a restarted proxy gets
//! a fresh token), and leaves nothing behind after Ctrl-C. Then `weft demo`
//! passes with mTLS on.
//!
//! These need root, iproute2, iptables, util-linux's setpriv, curl and
//! tcpdump. Without them they fail and say what is missing; they never skip.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use std::os::unix::fs::MetadataExt as _;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use weft_tests::eventually;
use weft_tests::weft::{ProcId, WeftProcess, alive, children};

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
    for (tool, package) in [
        ("ip", "iproute2"),
        ("iptables", "iptables"),
        ("setpriv", "util-linux"),
        ("curl", "curl"),
        ("tcpdump", "tcpdump"),
    ] {
        if weft_cli::system::find(tool).is_none() {
            problems.push(format!("`{tool}` is not installed: apt-get install -y {package}"));
        }
    }
    assert!(problems.is_empty(), "cannot run the weft up tests here:\n  - {}", problems.join("\n  - "));
}

fn tool(name: &str) -> std::path::PathBuf {
    weft_cli::system::find(name).unwrap_or_else(|| panic!("{name} is not installed"))
}

/// `weft ARGS` in `dir`, stopped (SIGINT, then SIGKILL) if the test panics.
fn start_weft(dir: &Path, args: &[&str]) -> WeftProcess {
    let mut cmd = Command::new(WEFT);
    cmd.args(args).current_dir(dir);
    WeftProcess::spawn(cmd, dir, "weft")
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
fn assert_nothing_left(pid: u32, started: &BTreeSet<ProcId>, rules_before: &str, weft: &WeftProcess) {
    assert!(netns_of_run(pid).is_empty(), "namespaces left: {:?}\n{}", netns_of_run(pid), weft.output());
    assert!(etc_netns_of_run(pid).is_empty(), "/etc/netns entries left: {:?}", etc_netns_of_run(pid));
    let survivors: Vec<&ProcId> = started.iter().filter(|p| alive(p)).collect();
    assert!(survivors.is_empty(), "processes weft started are still running: {survivors:?}\n{}", weft.output());
    assert!(!Path::new(&format!("/run/weft/{pid}")).exists(), "state directory /run/weft/{pid} left");
    assert_eq!(root_nat_rules(), rules_before, "the root namespace's nat rules changed");
}

const MESH: &str = r#"
apiVersion: weft.dev/v1alpha1
kind: LocalMesh
metadata: {name: uptest}
spec:
  # Strict: plaintext is refused, so every request that works went over mTLS.
  mtls: {mode: strict}
  defaultAccess: allow-authenticated
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
      serviceAccount: client
      command: [sleep, infinity]
"#;

/// Each pod of [`MESH`] and its identity.
const IDENTITIES: [(&str, &str); 4] = [
    ("store-0", "spiffe://cluster.local/ns/default/sa/default"),
    ("web-0", "spiffe://cluster.local/ns/default/sa/web"),
    ("web-1", "spiffe://cluster.local/ns/default/sa/web"),
    ("client-0", "spiffe://cluster.local/ns/default/sa/client"),
];

/// `pod`'s proxy's admin `/config`, read inside the pod's namespace as
/// `weft` reads the proxies' metrics.
fn proxy_config(run: u32, pod: &str) -> Result<serde_json::Value, String> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let netns = format!("weft-{run}-{pod}");
    let admin = std::net::SocketAddr::from(([127, 0, 0, 1], weft_cli::plan::PROXY_ADMIN_PORT));
    let (status, body) = runtime
        .block_on(weft_cli::probe::get(Some(&netns), admin, "/config", Duration::from_secs(3)))
        .map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("{status}: {body}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("/config is not JSON ({e}): {body}"))
}

/// `pod`'s proxy holds a certificate for `identity`.
fn certified(run: u32, pod: &str, identity: &str) -> Result<(), String> {
    let config = proxy_config(run, pod)?;
    let id = &config["identity"];
    if id["identity"] == identity && id["ready"] == true && id["expires"].is_string() {
        Ok(())
    } else {
        Err(format!("{pod}'s identity: {id}"))
    }
}

/// `curl ARGS` inside pod `pod` of run `run`.
fn curl_in(run: u32, pod: &str, args: &[&str]) -> std::process::Output {
    Command::new(tool("ip"))
        .args(["netns", "exec", &format!("weft-{run}-{pod}")])
        .arg(tool("curl"))
        .args(args)
        .output()
        .unwrap()
}

fn find(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn up_serves_a_request_between_pods_and_leaves_nothing_behind() {
    preflight();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mesh.yaml"), MESH).unwrap();
    let rules_before = root_nat_rules();
    let mut weft = start_weft(dir.path(), &["up", "-f", "mesh.yaml"]);
    let pid = weft.pid();
    let client = format!("weft-{pid}-client-0");

    // From the client pod, by service name, exactly as on Kubernetes.
    let body = eventually(Duration::from_secs(90), "a request from the client pod to http://web/", || {
        if let Some(status) = weft.exited() {
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

    // The summary was printed (once the client apps started, which may be
    // just after the first request went through), the pods exist, and so
    // do their hosts files.
    let stdout = eventually(Duration::from_secs(30), "the summary", || {
        let stdout = weft.stdout();
        if stdout.contains("Press Ctrl-C") { Ok(stdout) } else { Err(stdout) }
    });
    assert!(stdout.contains("web.default") && stdout.contains("198.19.0.1"), "{stdout}");
    assert_eq!(netns_of_run(pid).len(), 5, "hub + store + 2 web + client");
    assert_eq!(etc_netns_of_run(pid).len(), 4);
    let hosts = std::fs::read_to_string(format!("/etc/netns/{client}/hosts")).unwrap();
    assert!(hosts.contains("web web.default web.default.svc.cluster.local"), "{hosts}");
    let started = children(pid);
    assert!(started.len() >= 9, "the control plane, 4 proxies and 4 apps: {started:?}");

    // mTLS: every proxy, the client's too, holds its pod's identity.
    assert!(stdout.contains("weft: mTLS on (strict)"), "{stdout}");
    assert!(
        stdout.lines().any(|l| l.contains(&format!("netns weft-{pid}-web-0 "))
            && l.ends_with("spiffe://cluster.local/ns/default/sa/web")),
        "the summary shows each pod's identity:\n{stdout}"
    );
    for (pod, identity) in IDENTITIES {
        eventually(Duration::from_secs(10), &format!("{pod}'s proxy holds {identity}"), || {
            certified(pid, pod, identity)
        });
    }
    let state = format!("/run/weft/{pid}");
    let mode = |path: &str| std::fs::metadata(path).map(|m| (m.mode() & 0o777, m.uid())).unwrap();
    assert_eq!(mode(&format!("{state}/ca")), (0o700, 0), "the CA's directory is root's alone");
    assert_eq!(mode(&format!("{state}/ca/ca.key")).0, 0o600);
    assert_eq!(mode(&format!("{state}/identity/web-0.token")), (0o600, 2102), "a token is its proxy's alone");
    assert_eq!(mode(&format!("{state}/tokens.yaml")).0, 0o600);

    // Nothing of the apps crosses the bridge in plaintext: capture it all
    // while requests with a secret header go client → web → store, and
    // while web-0's proxy is killed and restarted (which makes new TLS
    // connections: to the control plane, and from its peers).
    let hub = format!("weft-{pid}-hub");
    let pcap = dir.path().join("bridge.pcap");
    let mut tcpdump = Command::new(tool("ip"))
        .args(["netns", "exec", &hub])
        .arg(tool("tcpdump"))
        .args(["-i", "br0", "--immediate-mode", "-U", "-s", "0", "-Z", "root", "-w"])
        .arg(&pcap)
        // Except the proxies' admin port: the control plane scrapes
        // `/metrics` there in plaintext every few seconds, as a Prometheus
        // would (docs/observability.md); no request of the apps uses it.
        .args(["tcp", "and", "not", "port", "4191"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut tcpdump_err = tcpdump.stderr.take().unwrap();
    {
        use std::io::Read as _;
        let mut seen = Vec::new();
        let mut buf = [0u8; 256];
        while !String::from_utf8_lossy(&seen).contains("listening on") {
            let n = tcpdump_err.read(&mut buf).unwrap();
            assert!(n > 0, "tcpdump exited: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buf[..n]);
        }
    }
    let secret_requests = || {
        for path in ["/", "/secret-path"] {
            let url = format!("http://web{path}");
            let out = curl_in(pid, "client-0", &["-sS", "-f", "-m", "5", "-H", "x-secret: WEFT-SECRET-HEADER", &url]);
            // /secret-path is a 404 from the app: it still crossed the mesh.
            assert!(out.status.success() || path != "/", "{out:?}");
        }
    };
    secret_requests();

    // A proxy that dies is restarted with a fresh single-use token, and
    // gets its identity again.
    let old_token = std::fs::read_to_string(format!("{state}/identity/web-0.token")).unwrap();
    let proxy = started
        .iter()
        .find(|p| p.cmdline.contains(" proxy run ") && p.cmdline.contains("--proxy-id web-0 "))
        .unwrap_or_else(|| panic!("web-0's proxy among {started:?}"))
        .clone();
    kill(Pid::from_raw(proxy.pid), Signal::SIGKILL).unwrap();
    eventually(Duration::from_secs(30), "web-0's proxy restarted with a new token", || {
        let token = std::fs::read_to_string(format!("{state}/identity/web-0.token")).map_err(|e| e.to_string())?;
        if token == old_token { Err("the old token".into()) } else { Ok(()) }
    });
    eventually(Duration::from_secs(30), "web-0's restarted proxy holds its identity", || {
        if alive(&proxy) {
            return Err("the old proxy is still running".into());
        }
        certified(pid, "web-0", "spiffe://cluster.local/ns/default/sa/web")
    });
    eventually(Duration::from_secs(30), "web-0 serves again", || {
        let out =
            curl_in(pid, "client-0", &["-sS", "-f", "-m", "3", "-H", "x-secret: WEFT-SECRET-HEADER", "http://web/"]);
        let body = String::from_utf8_lossy(&out.stdout).into_owned();
        if body.contains("\"pod\":\"web-0\"") { Ok(()) } else { Err(format!("{out:?}")) }
    });
    secret_requests();

    kill(Pid::from_raw(tcpdump.id() as i32), Signal::SIGINT).unwrap();
    let _ = tcpdump.wait();
    let bytes = std::fs::read(&pcap).unwrap();
    assert!(bytes.len() > 1000, "the capture is nearly empty ({} bytes)", bytes.len());
    for plaintext in ["WEFT-SECRET-HEADER", "x-secret", "secret-path", "GET /", "HTTP/1.1", "INCR", "weft-demo:count"] {
        assert!(!find(&bytes, plaintext.as_bytes()), "{plaintext:?} crossed the bridge in plaintext");
    }
    // A ServerHello selecting TLS 1.3 (supported_versions), and application data.
    assert!(find(&bytes, &[0x00, 0x2b, 0x00, 0x02, 0x03, 0x04]), "no TLS 1.3 handshake on the bridge");
    assert!(find(&bytes, &[0x17, 0x03, 0x03]), "no TLS application data on the bridge");

    // Strict: a caller outside the mesh (the hub has no proxy) is refused.
    let out = Command::new(tool("ip"))
        .args(["netns", "exec", &hub])
        .arg(tool("curl"))
        .args(["-sS", "-f", "-m", "5", "http://198.18.1.2:8080/"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "plaintext reached web-0 in strict mode: {}", String::from_utf8_lossy(&out.stdout));

    // Each start had its own token; only their hashes are in the tokens
    // file, and no token is logged.
    let new_token = std::fs::read_to_string(format!("{state}/identity/web-0.token")).unwrap();
    let tokens = std::fs::read_to_string(format!("{state}/tokens.yaml")).unwrap();
    for token in [&old_token, &new_token] {
        let hash = weft_control::ca::tokens::token_sha256(token);
        assert!(tokens.contains(&hash), "{hash} is not in the tokens file:\n{tokens}");
        assert!(!tokens.contains(token.as_str()), "a token is in the tokens file");
    }
    assert_eq!(tokens.matches("workload: web-0").count(), 2, "{tokens}");
    assert_eq!(tokens.matches("sha256:").count(), 5, "4 proxies, one restart:\n{tokens}");
    for entry in std::fs::read_dir(format!("{state}/logs")).unwrap().flatten() {
        let log = std::fs::read_to_string(entry.path()).unwrap();
        assert!(!log.contains(&old_token) && !log.contains(&new_token), "a token is in {}", entry.path().display());
    }
    assert!(!weft.output().contains("weft-bootstrap."), "a token in weft's output");
    let started: BTreeSet<ProcId> = started.into_iter().chain(children(pid)).collect();

    let status = weft.interrupt(Duration::from_secs(60));
    assert!(status.success(), "weft up after Ctrl-C: {status}\n{}", weft.output());
    assert_nothing_left(pid, &started, &rules_before, &weft);
}

#[test]
fn demo_succeeds_and_prints_the_table() {
    preflight();
    let dir = tempfile::tempdir().unwrap();
    let rules_before = root_nat_rules();
    let mut weft = start_weft(dir.path(), &["demo", "--duration", "20s"]);
    let pid = weft.pid();
    // Record what it starts while it runs (for the leftovers check).
    let mut started = BTreeSet::new();
    let status = weft.wait_exit(Duration::from_secs(180), |w| started.extend(children(w.pid())));
    let stdout = weft.stdout();
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
    assert!(
        stdout.contains("weft: mTLS on (permissive): all 5 proxies held a certificate for their pod's identity"),
        "{stdout}"
    );
    assert!(started.len() >= 11, "control plane, 5 proxies, 5 apps: {started:?}");
    assert_nothing_left(pid, &started, &rules_before, &weft);
}
