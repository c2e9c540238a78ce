//! Policy reload end to end: a TrafficPolicy written to the control plane's
//! policy directory reaches the client's proxy without a restart and is
//! enforced there; an invalid rewrite is refused and the last good policy
//! stays in force.

use std::time::{Duration, Instant};

use weft_tests::{Mesh, eventually};

const TARGET: &str = "198.18.0.200:80";
const SERVICES: &str = weft_tests::WEB_SERVICE;

fn timeout_policy(request: &str) -> String {
    format!(
        "apiVersion: policy.weft.dev/v1alpha1
kind: TrafficPolicy
metadata: {{name: web-timeouts, namespace: default}}
spec:
  targetRef: {{kind: Service, name: web}}
  timeouts: {{request: {request}}}
"
    )
}

#[test]
fn a_policy_change_applies_without_restart_and_an_invalid_one_is_refused() {
    let mesh = Mesh::new();
    let cp_pod = mesh.pod("cp");
    let cp = cp_pod.run_control(SERVICES, &[]);
    let web = mesh.pod("web");
    let _app = web.http_server(8080);
    let _web_proxy = web.run_registered_proxy(&cp, "web-0", "app=web", 8080, &[]);
    let client = mesh.pod("client");
    let proxy = client.run_proxy(&["--control-plane", &cp.url]);

    // Without a policy a slow answer is waited for.
    let slow = "http://198.18.0.200/delay?ms=1000";
    let curl = client.curl(&["-o", "/dev/null", slow]);
    assert_eq!(curl.status(), 200, "{}", curl.run);
    let before = proxy.policy_version(TARGET).expect("the client has a policy for the service");

    // A request timeout of 300 ms arrives and is enforced.
    let file = cp.policy_dir.join("web.yaml");
    std::fs::write(&file, timeout_policy("300ms")).expect("writing the policy");
    let applied = eventually(Duration::from_secs(5), "the new policy reaches the client", || {
        match proxy.policy_version(TARGET) {
            Some(v) if v > before => Ok(v),
            other => Err(format!("policy version {other:?}")),
        }
    });
    let start = Instant::now();
    let curl = client.curl(&["-o", "/dev/null", slow]);
    let took = start.elapsed();
    assert_eq!(curl.status(), 504, "{}", curl.run);
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(800),
        "the 300 ms timeout answered after {took:?}"
    );

    // An invalid rewrite (Gateway API durations have no fractions) is
    // refused, counted, and the 300 ms policy stays.
    let rejected_before = cp.metrics().sum("weft_control_policy_rejected_total", &[]);
    std::fs::write(&file, timeout_policy("1.5s")).expect("writing the policy");
    eventually(Duration::from_secs(5), "the control plane rejects the file", || {
        let rejected = cp.metrics().sum("weft_control_policy_rejected_total", &[]);
        if rejected > rejected_before { Ok(()) } else { Err(format!("rejected {rejected}")) }
    });
    assert!(cp.proc.stderr().contains("web.yaml"), "the rejection names the file:\n{}", cp.proc.stderr());
    assert_eq!(proxy.policy_version(TARGET), Some(applied), "an invalid file changed the running policy");
    let curl = client.curl(&["-o", "/dev/null", slow]);
    assert_eq!(curl.status(), 504, "the last good policy is no longer enforced: {}", curl.run);
}

/// Measurement for the issue notes (not run in CI): the time from a policy
/// file written on disk to every client proxy running it, over 100 changes,
/// and from a replica's registration to traffic reaching it. Run with
/// `cargo nextest run -p weft-tests --test policy --run-ignored only --no-capture`.
#[test]
#[ignore = "a measurement, run by hand"]
fn measure_policy_and_registration_propagation() {
    let mesh = Mesh::new();
    let cp_pod = mesh.pod("cp");
    let cp = cp_pod.run_control(SERVICES, &[]);
    let web = mesh.pod("web");
    let _app = web.http_server(8080);
    let _web_proxy = web.run_registered_proxy(&cp, "web-0", "app=web", 8080, &[]);
    let clients: Vec<_> = (0..3).map(|i| mesh.pod(&format!("c{i}"))).collect();
    let proxies: Vec<_> = clients.iter().map(|c| c.run_proxy(&["--control-plane", &cp.url])).collect();
    for c in &clients {
        assert_eq!(c.curl(&["-o", "/dev/null", "http://198.18.0.200/"]).status(), 200);
    }

    let file = cp.policy_dir.join("web.yaml");
    let mut samples = Vec::new();
    for i in 0..100 {
        let versions: Vec<u64> = proxies.iter().map(|p| p.policy_version(TARGET).unwrap_or(0)).collect();
        std::fs::write(&file, timeout_policy(&format!("{}ms", 1000 + i))).expect("writing the policy");
        let start = Instant::now();
        eventually(Duration::from_secs(5), "every client runs the new policy", || {
            let lagging =
                proxies.iter().zip(&versions).filter(|(p, v)| p.policy_version(TARGET).unwrap_or(0) <= **v).count();
            if lagging == 0 { Ok(()) } else { Err(format!("{lagging} proxies lag")) }
        });
        samples.push(start.elapsed());
    }
    samples.sort();
    let pct = |q: f64| samples[((samples.len() as f64 * q).ceil() as usize).saturating_sub(1)];
    eprintln!(
        "policy on disk -> 3 proxies running it, 100 changes: p50 {:?}, p99 {:?}, max {:?}",
        pct(0.5),
        pct(0.99),
        samples[99]
    );

    // Registration -> traffic: a second replica registers; time until a
    // client's request lands on it.
    let web2 = mesh.pod("web2");
    let app2 = web2.http_server(8080);
    let start = Instant::now();
    let proxy2 = web2.run_registered_proxy(&cp, "web-1", "app=web", 8080, &[]);
    let ready = start.elapsed();
    let reached = eventually(Duration::from_secs(10), "traffic reaches the new replica", || {
        clients[0].curl(&["-o", "/dev/null", "http://198.18.0.200/"]);
        let n = proxy2.metrics().sum("weft_requests_total", &[("direction", "inbound")]);
        if n > 0.0 { Ok(start.elapsed()) } else { Err("no request yet".into()) }
    });
    eprintln!("replica start -> proxy ready {ready:?}; -> first request served {reached:?}");
    drop((app2, proxy2));
}
