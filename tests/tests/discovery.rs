//! Service discovery and per-request load balancing through the control
//! plane: replicas register, a client pod calls the service's virtual IP,
//! and its proxy balances over the registered endpoints.
//!
//! ```text
//! cp: weft-control ◄── register / heartbeat ── replicas r1..r3 (app + proxy)
//!        │ Discovery.Watch(VIP:80)
//!        ▼
//! client: curl http://VIP/ ─► proxy ─P2C/EWMA─► r1 | r2 | r3
//! ```

use std::time::{Duration, Instant};

use weft_tests::{ControlPlane, Mesh, Pod, Proc, Proxy, Signal, eventually};

/// The service's virtual IP: unused in the pods' /24, so it routes out of
/// eth0 and OUTPUT redirects it before anything is sent.
const VIP: &str = "198.18.0.200";
const TARGET: &str = "198.18.0.200:80";
const APP_PORT: u16 = 8080;

const SERVICES: &str = weft_tests::WEB_SERVICE;

struct Replica {
    proxy: Proxy,
    app: Proc,
    pod: Pod,
}

impl Replica {
    fn start(mesh: &Mesh, cp: &ControlPlane, name: &str, delay_ms: u64) -> Replica {
        let pod = mesh.pod(name);
        let listen = format!("0.0.0.0:{APP_PORT}");
        let delay = delay_ms.to_string();
        let app = pod.spawn_testkit("app", &["http-server", "--listen", &listen, "--delay-ms", &delay]);
        pod.wait_listening(APP_PORT);
        let proxy = pod.run_registered_proxy(cp, name, "app=web", APP_PORT, &[]);
        Replica { proxy, app, pod }
    }

    fn addr(&self) -> String {
        self.pod.addr(APP_PORT).to_string()
    }

    /// Requests this replica's proxy forwarded to its app.
    fn served(&self) -> f64 {
        self.proxy.metrics().sum("weft_requests_total", &[("direction", "inbound")])
    }
}

/// Control plane pod (created first: 198.18.0.11) and a client pod.
fn control_and_client(mesh: &Mesh, extra: &[&str]) -> (ControlPlane, Pod, Proxy) {
    let cp_pod = mesh.pod("cp");
    let cp = cp_pod.run_control(SERVICES, extra);
    let client = mesh.pod("client");
    let proxy = client.run_proxy(&["--control-plane", &cp.url]);
    (cp, client, proxy)
}

fn wait_endpoints(proxy: &Proxy, want: &[String], within: Duration) -> Duration {
    let mut want = want.to_vec();
    want.sort();
    let start = Instant::now();
    eventually(within, &format!("the client balances over {want:?}"), || {
        let got = proxy.endpoints(TARGET);
        if got == want { Ok(()) } else { Err(format!("endpoints {got:?}")) }
    });
    start.elapsed()
}

/// `n` sequential requests on one connection (curl's URL globbing); returns
/// the status codes.
fn requests(client: &Pod, n: usize, extra: &[&str]) -> Vec<String> {
    let url = format!("http://{VIP}/r[1-{n}]");
    let mut args = vec!["-s", "-o", "/dev/null", "-w", "%{http_code}\\n", "--max-time", "60"];
    args.extend_from_slice(extra);
    args.push(&url);
    let run = client.exec("curl", &args);
    run.stdout.lines().map(str::to_owned).collect()
}

fn assert_all_ok(codes: &[String], n: usize) {
    assert_eq!(codes.len(), n, "{codes:?}");
    let failed: Vec<_> = codes.iter().filter(|c| *c != "200").collect();
    assert!(failed.is_empty(), "{} of {n} requests failed: {failed:?}", failed.len());
}

#[test]
fn every_replica_receives_traffic_and_a_slow_one_receives_little() {
    let mesh = Mesh::new();
    let (cp, client, proxy) = control_and_client(&mesh, &[]);
    let replicas = [
        Replica::start(&mesh, &cp, "r1", 20),
        Replica::start(&mesh, &cp, "r2", 0),
        Replica::start(&mesh, &cp, "r3", 0),
    ];
    let addrs: Vec<String> = replicas.iter().map(Replica::addr).collect();
    // The first request resolves the VIP; then all three are known.
    assert_all_ok(&requests(&client, 1, &[]), 1);
    wait_endpoints(&proxy, &addrs, Duration::from_secs(5));

    let n = 1500;
    assert_all_ok(&requests(&client, n, &[]), n);
    let served: Vec<f64> = replicas.iter().map(Replica::served).collect();
    let total: f64 = served.iter().sum();
    assert_eq!(total, (n + 1) as f64, "every request reached exactly one replica: {served:?}");
    assert!(served.iter().all(|s| *s > 0.0), "a replica received nothing: {served:?}");
    let slow_share = served[0] / total;
    let ewma: Vec<_> = proxy.config_json()["discovery"]["targets"][0]["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| (e["address"].to_string(), e["ewma_ms"].to_string()))
        .collect();
    eprintln!("requests per replica (slow first): {served:?}; estimates {ewma:?}");
    assert!(slow_share < 0.20, "the 20 ms slower replica got {:.1} % of requests: {served:?}", slow_share * 100.0);
    let (b, c) = (served[1], served[2]);
    let even = (b + c) / 2.0;
    assert!((b - even).abs() / even <= 0.15, "equal replicas are not within ±15 % of even: {served:?}");
    drop(replicas);
    drop(cp);
}

#[test]
fn scaling_up_and_down_changes_the_endpoints_within_a_second_without_failures() {
    let mesh = Mesh::new();
    let (cp, client, proxy) = control_and_client(&mesh, &[]);
    let r1 = Replica::start(&mesh, &cp, "r1", 0);
    let r2 = Replica::start(&mesh, &cp, "r2", 0);
    assert_all_ok(&requests(&client, 1, &[]), 1);
    wait_endpoints(&proxy, &[r1.addr(), r2.addr()], Duration::from_secs(5));

    // Steady load for the whole scale-up and scale-down: 40 requests/s.
    let url = format!("http://{VIP}/load[1-400]");
    let load = client.spawn(
        "load",
        "curl",
        &["-s", "-o", "/dev/null", "-w", "%{http_code}\\n", "--rate", "40/s", "--max-time", "60", &url],
    );

    // Scale up: r3 registers once its app listens.
    let r3 = Replica::start(&mesh, &cp, "r3", 0);
    let took = wait_endpoints(&proxy, &[r1.addr(), r2.addr(), r3.addr()], Duration::from_secs(1));
    eprintln!("scale up reached the client {took:?} after r3's proxy was ready");
    eventually(Duration::from_secs(5), "r3 serves requests", || {
        let s = r3.served();
        if s > 0.0 { Ok(()) } else { Err("none yet".into()) }
    });

    // Scale down: r1's proxy deregisters on SIGTERM, then drains.
    let Replica { proxy: mut p1, app: app1, pod: pod1 } = r1;
    p1.sigterm();
    let took = wait_endpoints(&proxy, &[r2.addr(), r3.addr()], Duration::from_secs(1));
    eprintln!("scale down reached the client {took:?} after SIGTERM");
    let status = p1.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "r1's proxy exited with {status}");
    drop((app1, pod1));

    let run = load.finish(Duration::from_secs(60));
    let codes: Vec<String> = run.stdout.lines().map(str::to_owned).collect();
    assert_all_ok(&codes, 400);
    drop((r2, r3, cp));
}

#[test]
fn traffic_survives_the_control_plane_and_a_restarted_one_is_used() {
    let mesh = Mesh::new();
    let (cp, client, proxy) = control_and_client(&mesh, &["--lease-ttl", "2s"]);
    let r1 = Replica::start(&mesh, &cp, "r1", 0);
    let r2 = Replica::start(&mesh, &cp, "r2", 0);
    assert_all_ok(&requests(&client, 1, &[]), 1);
    wait_endpoints(&proxy, &[r1.addr(), r2.addr()], Duration::from_secs(5));

    // Control plane gone: the client keeps its last snapshot.
    let ControlPlane { mut proc, pod: cp_pod, services, policy_dir, .. } = cp;
    proc.signal(Signal::SIGKILL);
    proc.wait_exit(Duration::from_secs(5));
    assert_all_ok(&requests(&client, 100, &[]), 100);
    assert_eq!(proxy.endpoints(TARGET), {
        let mut v = vec![r1.addr(), r2.addr()];
        v.sort();
        v
    });

    // A new control plane on the same address: the replicas re-register,
    // the client's streams reconnect, and a replica added now is seen.
    let cp = cp_pod.start_control(services, policy_dir, None, &["--lease-ttl", "2s"]);
    let r3 = Replica::start(&mesh, &cp, "r3", 0);
    wait_endpoints(&proxy, &[r1.addr(), r2.addr(), r3.addr()], Duration::from_secs(10));
    assert_all_ok(&requests(&client, 60, &[]), 60);
    assert!(r3.served() > 0.0, "the replica added after the restart got no traffic");
    drop((r1, r2, r3, cp));
}

#[test]
fn a_lapsed_lease_removes_the_endpoint() {
    let mesh = Mesh::new();
    let (cp, client, proxy) = control_and_client(&mesh, &["--lease-ttl", "2s"]);
    let r1 = Replica::start(&mesh, &cp, "r1", 0);
    let r2 = Replica::start(&mesh, &cp, "r2", 0);
    assert_all_ok(&requests(&client, 1, &[]), 1);
    wait_endpoints(&proxy, &[r1.addr(), r2.addr()], Duration::from_secs(5));

    // SIGKILL: no deregistration, the heartbeats just stop.
    let Replica { proxy: p2, app: app2, pod: pod2 } = r2;
    let start = Instant::now();
    drop(p2);
    let took = wait_endpoints(&proxy, &[r1.addr()], Duration::from_secs(5));
    let lapsed = start.elapsed();
    eprintln!("lease lapsed and reached the client after {lapsed:?} ({took:?} of waiting)");
    assert!(lapsed >= Duration::from_millis(1500), "removed after {lapsed:?}, before the 2 s lease could lapse");
    assert_all_ok(&requests(&client, 50, &[]), 50);
    drop((app2, pod2, r1, cp));
}
