//! Faults under sustained load: no client request may fail.
//!
//! ```text
//! cp:  weft-control (mesh CA, registry)          r0, r1, r2: weft-bench app :8080 + proxy (sa/web, app=web)
//! c:   weft-bench load http1 200/s ┐                 ▲
//!      weft-bench load http2 200/s ┴─► proxy (sa/client) ══ mTLS ══╝  service web, VIP 198.18.0.200:80
//! ```
//!
//! Each test runs one fault (they are independent, so nextest runs them in
//! parallel) while both generators send 200 requests/s each, and asserts
//! that every one of them got a 200 with the app's whole body; then prints
//! and bounds the retries the client's proxy made to hide the fault
//! (`weft_retries_total`), and checks that the retry budget never refused
//! one. The certificate and trust-anchor rotation under the same load is
//! `rotation.rs`.
//!
//! - `a_service_rolled_twice_answers_every_request`: each replica in turn
//!   gets SIGTERM, app and proxy at once as the kubelet sends it (the app
//!   exits at once; its proxy deregisters, drains, exits), then a
//!   replacement starts in a new pod at a new address; twice round the
//!   three.
//! - `a_control_plane_killed_for_a_minute_answers_every_request`: SIGKILL,
//!   60 s down, then a new process from the same state: the proxies keep
//!   serving from their last endpoints and certificates, and reconnect.
//! - `a_replica_that_refuses_then_hangs_then_heals_answers_every_request`:
//!   one replica's node refuses every new connection for 8 s, the open
//!   ones aborted at its start (`ss -K`); once it
//!   serves again, its proxy is stopped (SIGSTOP: the kernel still
//!   accepts, nothing answers) for 8 s, then it is resumed and serves
//!   again. A TrafficPolicy (per-try timeout, retries on reset and gateway
//!   errors, circuit breaker) is what hides these two.
//!
//! Needs root, iproute2, iptables, util-linux's setpriv and curl; never skips.

use std::time::{Duration, Instant};

use weft_tests::{BENCH_APP_PORT, ControlPlane, Load, LoadReport, Mesh, Pod, Proc, Proxy, Signal, eventually};

/// Service `web` (VIP 198.18.0.200:80 → 8080) over the `app=web` workloads.
const SERVICES: &str = weft_tests::WEB_SERVICE;

/// What the client calls, and the proxy's discovery target for it.
const TARGET: &str = "198.18.0.200:80";

/// Requests per second of each generator (HTTP/1.1 and HTTP/2).
const RATE: u32 = 200;

/// A request not answered this long after its send time fails. Generous:
/// a request held back by a retry is late, not failed; any error status,
/// reset or short body fails at once.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// One replica of `web`: its pod, the app and the proxy registering it.
struct Replica {
    name: String,
    pod: Pod,
    app: Proc,
    proxy: Proxy,
}

impl Replica {
    /// Starts the app and a meshed proxy registering it as workload `name`
    /// in a new pod `pod_name`.
    fn start(mesh: &Mesh, cp: &ControlPlane, pod_name: &str, name: &str) -> Replica {
        let pod = mesh.pod(pod_name);
        let app = pod.bench_app();
        let ports = BENCH_APP_PORT.to_string();
        let proxy = pod.run_meshed_proxy(cp, "web", Some((name, "app=web", &ports)), &[]);
        Replica { name: name.to_owned(), pod, app, proxy }
    }

    fn addr(&self) -> String {
        self.pod.addr(BENCH_APP_PORT).to_string()
    }

    /// Requests this replica's proxy forwarded to its app.
    fn served(&self) -> f64 {
        self.proxy.metrics().sum("weft_requests_total", &[("direction", "inbound")])
    }

    /// Waits until it has served 100 more requests than now: more than the
    /// stragglers a stopped proxy finishes when resumed, so it is back in
    /// the client's rotation.
    #[track_caller]
    fn wait_serving(&self, within: Duration, what: &str) {
        let start = self.served();
        eventually(within, what, || {
            let now = self.served();
            if now >= start + 100.0 { Ok(()) } else { Err(format!("{now} requests served, {start} at first")) }
        });
    }
}

/// The control plane, the client pod and its proxy, and three replicas the
/// client balances over.
struct Fleet {
    mesh: Mesh,
    cp: ControlPlane,
    client: Pod,
    client_proxy: Proxy,
    replicas: Vec<Replica>,
}

impl Fleet {
    /// `policy`: a TrafficPolicy (YAML) for `web`, in place before any proxy
    /// starts.
    fn start(policy: Option<&str>) -> Fleet {
        let mesh = Mesh::new();
        let cp_pod = mesh.pod("cp");
        let cp = cp_pod.run_control_with_ca(SERVICES, &[]);
        if let Some(policy) = policy {
            std::fs::write(cp.policy_dir.join("web.yaml"), policy).expect("writing the policy");
        }
        let replicas: Vec<Replica> =
            (0..3).map(|i| Replica::start(&mesh, &cp, &format!("r{i}"), &format!("web-{i}"))).collect();
        let client = mesh.pod("c");
        let client_proxy = client.run_meshed_proxy(&cp, "client", None, &[]);
        let fleet = Fleet { mesh, cp, client, client_proxy, replicas };
        // A first request has the client resolve the service (discovery
        // starts with the first connection); the load starts warm.
        let url = format!("http://{TARGET}/");
        let run =
            fleet.client.exec("curl", &["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", &url]);
        assert_eq!(run.stdout, "200", "a first request to web: {run}");
        fleet.wait_endpoints();
        fleet
    }

    /// Waits until the client balances over exactly the current replicas.
    fn wait_endpoints(&self) {
        let mut want: Vec<String> = self.replicas.iter().map(Replica::addr).collect();
        want.sort();
        eventually(Duration::from_secs(20), &format!("the client balances over {want:?}"), || {
            let got = self.client_proxy.endpoints(TARGET);
            if got == want { Ok(()) } else { Err(format!("endpoints {got:?}")) }
        });
    }

    /// Starts both generators for `duration`.
    fn load(&self, duration: Duration) -> [Load; 2] {
        ["http1", "http2"].map(|w| Load::start(&self.client, w, TARGET, RATE, duration, CLIENT_TIMEOUT))
    }

    /// The client proxy's retry counters: (retries, refused by the budget,
    /// per-try timeouts, circuit-breaker ejections).
    fn retries(&self) -> (f64, f64, f64, f64) {
        let m = self.client_proxy.metrics();
        (
            m.sum("weft_retries_total", &[]),
            m.sum("weft_retry_budget_exhausted_total", &[]),
            m.sum("weft_timeouts_total", &[("kind", "per_try")]),
            m.sum("weft_circuit_ejections_total", &[]),
        )
    }
}

/// Asserts that both runs lasted and that every request succeeded; returns
/// the number of requests.
#[track_caller]
fn assert_no_failure(test: &str, reports: &[LoadReport], duration: Duration) -> u64 {
    for r in reports {
        eprintln!("{test}: {r}");
    }
    let mut total = 0;
    for r in reports {
        let want = (f64::from(RATE) * duration.as_secs_f64() * 0.9) as u64;
        assert!(r.sent >= want, "{test}: {} sent only {} requests, expected at least {want}: {r}", r.workload, r.sent);
        assert_eq!((r.errors, r.timeouts), (0, 0), "{test}: the client saw failures: {r}");
        assert_eq!(r.ok, r.sent, "{test}: {r}");
        // A kept-alive connection closed by the client's proxy (idle) as
        // the generator took it: rare, and any real client sends again.
        assert!(r.stale_retries <= r.sent / 500, "{test}: too many requests resent on a new connection: {r}");
        total += r.sent;
    }
    total
}

/// Fails unless every generator is still running: the fault must have
/// happened under load, not after it.
#[track_caller]
fn assert_still_loaded(loads: &mut [Load], what: &str) {
    for load in loads {
        assert!(load.running(), "{what} outlasted the load: make the load's duration longer");
    }
}

#[test]
fn a_service_rolled_twice_answers_every_request() {
    let mut fleet = Fleet::start(None);
    // The rolls take about 10 s on a quiet machine, 35 s on a loaded one.
    let duration = Duration::from_secs(45);
    let mut loads = fleet.load(duration);
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    for round in 1..=2 {
        for i in 0..3 {
            let old = fleet.replicas.remove(i);
            let t = Instant::now();
            // SIGTERM to every process of the pod at once, as the kubelet
            // does: the app (which does not drain) exits at once, while its
            // proxy deregisters and drains.
            old.proxy.sigterm();
            old.app.signal(Signal::SIGTERM);
            let Replica { name, pod: _, mut app, mut proxy } = old;
            app.wait_exit(Duration::from_secs(5));
            let status = proxy.wait_exit(Duration::from_secs(35));
            assert!(status.success(), "{name}'s proxy exited with {status} after SIGTERM:\n{}", proxy.log());
            let new = Replica::start(&fleet.mesh, &fleet.cp, &format!("r{i}g{round}"), &format!("web-{i}-{round}"));
            fleet.replicas.insert(i, new);
            fleet.wait_endpoints();
            eprintln!("roll {round}: {name} replaced in {:?}", t.elapsed());
        }
    }
    eprintln!("both rolls done after {:?}", started.elapsed());
    assert_still_loaded(&mut loads, "the two rolls");
    let reports = loads.map(Load::finish);
    let total = assert_no_failure("roll", &reports, duration);
    let (retries, exhausted, _, _) = fleet.retries();
    eprintln!("roll: {total} requests, {retries} retries, {exhausted} refused by the budget");
    assert_eq!(exhausted, 0.0, "the retry budget refused retries during the roll");
    // Each of the 6 replacements costs a retry for each request sent to
    // the leaving replica between its app's exit and the client's update
    // (a few ms on a quiet machine, more on a loaded one): a small share.
    assert!(retries <= total as f64 / 20.0, "{retries} retries for {total} requests");
    // The new replicas serve.
    for r in &fleet.replicas {
        assert!(r.served() > 0.0, "{} served nothing", r.name);
    }
}

#[test]
fn a_control_plane_killed_for_a_minute_answers_every_request() {
    let fleet = Fleet::start(None);
    let duration = Duration::from_secs(75);
    let mut loads = fleet.load(duration);
    std::thread::sleep(Duration::from_secs(3));

    let Fleet { mesh: _mesh, cp, client: _client, client_proxy, replicas } = fleet;
    let ControlPlane { proc: mut cp_proc, pod: cp_pod, services, policy_dir, ca, .. } = cp;
    let old_pid = cp_proc.pid();
    cp_proc.signal(Signal::SIGKILL);
    cp_proc.wait_exit(Duration::from_secs(5));
    let down = Instant::now();
    // The outage itself is the fault under test: 60 s without a control
    // plane, during which the client keeps its endpoints (checked every 5 s).
    let outage = Duration::from_secs(60);
    while down.elapsed() < outage {
        let eps = client_proxy.endpoints(TARGET);
        assert_eq!(eps.len(), 3, "the client lost endpoints while the control plane was down: {eps:?}");
        std::thread::sleep(Duration::from_secs(5).min(outage.saturating_sub(down.elapsed())));
    }
    let cp2 = cp_pod.start_control(services, policy_dir, ca, &[]);
    assert_ne!(cp2.proc.pid(), old_pid, "the control plane came back with the same PID");
    // Every proxy reconnects, and the replicas register again.
    eventually(Duration::from_secs(15), "the proxies are back with the restarted control plane", || {
        let m = cp2.metrics();
        let (leases, proxies) = (m.sum("weft_control_leases", &[]), m.sum("weft_control_connected_proxies", &[]));
        if leases == 3.0 && proxies == 4.0 { Ok(()) } else { Err(format!("{leases} leases, {proxies} proxies")) }
    });
    eprintln!("control plane back after {:?}", down.elapsed());
    assert_still_loaded(&mut loads, "the outage");
    let reports = loads.map(Load::finish);
    let total = assert_no_failure("control plane outage", &reports, duration);
    let retries = client_proxy.metrics().sum("weft_retries_total", &[]);
    eprintln!("control plane outage: {total} requests, {retries} retries");
    // Nothing on the data path changed: at most a rare retry, for reasons
    // of the machine's load (an app slow to accept), not the outage.
    assert!(retries <= total as f64 / 1000.0, "{retries} retries during a control plane outage");
    for r in &replicas {
        assert!(r.served() > 0.0, "{} served nothing", r.name);
    }
}

#[test]
fn a_replica_that_refuses_then_hangs_then_heals_answers_every_request() {
    // What an operator sets for a service whose GETs may be retried: a
    // per-try timeout under the client's own (2 s: well above a healthy
    // answer even on a loaded CI machine, where debug-build proxies share
    // two cores), retries on connect failures, resets and gateway errors,
    // and a circuit breaker.
    let policy = "apiVersion: policy.weft.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: web-resilience, namespace: default}
spec:
  targetRef: {kind: Service, name: web}
  retries:
    attempts: 2
    retryOn: [connect-failure, reset, gateway-error]
    perTryTimeout: 2s
  circuitBreaker: {consecutiveFailures: 5, baseEjection: 2s, maxEjection: 10s}
";
    let fleet = Fleet::start(Some(policy));
    eventually(Duration::from_secs(10), "the client runs the TrafficPolicy", || {
        let sources = fleet.client_proxy.policy_sources(TARGET);
        if sources.iter().any(|s| s.contains("web-resilience")) { Ok(()) } else { Err(format!("{sources:?}")) }
    });
    let sick = &fleet.replicas[1];
    let duration = Duration::from_secs(45);
    let mut loads = fleet.load(duration);
    std::thread::sleep(Duration::from_secs(3));

    // 1. Refusing: its node refuses every new connection from the bridge
    // (a reset for the SYN), and the connections already open to its proxy
    // are aborted (`ss -K`: a reset to the client), as when the process
    // behind a port dies; its proxy's own connections to the app, on lo,
    // go on.
    let rule = [
        "-i",
        "eth0",
        "-p",
        "tcp",
        "--syn",
        "-m",
        "multiport",
        "--dports",
        "8080,4143",
        "-j",
        "REJECT",
        "--reject-with",
        "tcp-reset",
    ];
    let insert: Vec<&str> = ["-I", "INPUT"].into_iter().chain(rule).collect();
    sick.pod.exec("iptables", &insert).ok();
    sick.pod.exec("ss", &["-K", "-tn", "state", "established", "( sport = :4143 )"]).ok();
    std::thread::sleep(Duration::from_secs(8));
    let delete: Vec<&str> = ["-D", "INPUT"].into_iter().chain(rule).collect();
    sick.pod.exec("iptables", &delete).ok();
    let after_refusing = fleet.retries();
    eprintln!("after refusing: {after_refusing:?}");
    // Back in rotation (the breaker's ejection over) before it hangs, so
    // that the hang meets requests.
    sick.wait_serving(Duration::from_secs(15), "the replica serves again after refusing");

    // 2. Hanging: the kernel accepts, the stopped proxy never answers.
    sick.proxy.signal(Signal::SIGSTOP);
    std::thread::sleep(Duration::from_secs(8));
    let after_hanging = fleet.retries();
    eprintln!("after hanging: {after_hanging:?}");

    // 3. Healed: it serves new requests again while the load runs (more
    // than the few it held while stopped).
    sick.proxy.signal(Signal::SIGCONT);
    sick.wait_serving(Duration::from_secs(15), "the healed replica serves again");
    assert_still_loaded(&mut loads, "the faults");
    let reports = loads.map(Load::finish);
    let total = assert_no_failure("refuse, hang, heal", &reports, duration);
    let (retries, exhausted, per_try, ejections) = fleet.retries();
    eprintln!(
        "refuse, hang, heal: {total} requests, {retries} retries ({} while refusing), {per_try} per-try timeouts, \
         {ejections} ejections, {exhausted} refused by the budget",
        after_refusing.0
    );
    // Both faults were real, and hidden by retries...
    assert!(after_refusing.0 > 0.0, "no retry while a replica refused connections");
    assert!(after_hanging.2 > 0.0, "no per-try timeout while a replica hung");
    assert_eq!(exhausted, 0.0, "the retry budget refused retries");
    // ...and the circuit breaker kept them few: every request in flight to
    // the replica when it hangs times out once (2 s), then it is ejected;
    // under 10 % of all requests.
    assert!(ejections > 0.0, "the circuit breaker never ejected the sick replica");
    assert!(retries <= total as f64 / 10.0, "{retries} retries for {total} requests");
}

/// The one fault the mesh cannot hide: the client's own proxy restarting
/// (SIGTERM, drain, a new process). Counted, not hidden: the HTTP/1.1
/// generator (which opens a new connection when one closes) must see
/// failures only while no proxy listens, and every request after.
#[test]
fn the_clients_own_proxy_restarting_is_counted() {
    let Fleet { mesh: _mesh, cp, client, client_proxy, replicas: _replicas } = Fleet::start(None);
    let duration = Duration::from_secs(30);
    let mut load = Load::start(&client, "http1", TARGET, RATE, duration, CLIENT_TIMEOUT);
    std::thread::sleep(Duration::from_secs(5));

    let stopping = Instant::now();
    client_proxy.sigterm();
    let mut old = client_proxy;
    let status = old.wait_exit(Duration::from_secs(35));
    assert!(status.success(), "the client's proxy exited with {status} after SIGTERM:\n{}", old.log());
    let drained = stopping.elapsed();
    let new = client.run_meshed_proxy(&cp, "client", None, &[]);
    let gap = stopping.elapsed();
    assert!(load.running(), "the restart outlasted the load");
    let report = load.finish();
    let failed = report.errors + report.timeouts;
    eprintln!(
        "client proxy restart: drained in {drained:?}, serving again after {gap:?}; the client saw {failed} failed \
         of {} requests ({report})",
        report.sent
    );
    // Failures only while no proxy listened (from SIGTERM, which closes the
    // listener, until the new proxy is ready): at most that window's
    // requests, plus two seconds' worth for connections cut by the drain
    // and a loaded machine's slow start of the new proxy.
    let window = (f64::from(RATE) * (gap + Duration::from_secs(2)).as_secs_f64()) as u64;
    assert!(failed <= window, "{failed} failures, more than the {window} requests of the restart's window");
    // And the new proxy serves.
    let served = new.metrics().sum("weft_requests_total", &[("direction", "outbound")]);
    assert!(served > 0.0, "the new client proxy served nothing");
}
