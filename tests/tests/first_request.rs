//! Policy from the first byte: a request is never served under less policy
//! than it is owed just because it came first.
//!
//! ```text
//! outbound: first request to a service ─► waits for discovery AND its routes ─► routed
//! inbound:  first connection to a port  ─► waits (bounded) for the port's policy
//!           ─► no policy yet: the proxy's own default (--default-inbound-policy), decided per request
//! ```

use std::time::Duration;

use weft_tests::{Mesh, Signal, WEB_AND_STORE, eventually};

/// How many services the first-request test routes to: each is a fresh
/// destination for the client's proxy, so each first request races its
/// policy stream once.
const SERVICES: usize = 8;

fn services_yaml() -> String {
    let mut yaml = String::from("services:\n");
    for i in 0..SERVICES {
        yaml.push_str(&format!(
            "  - name: s{i}\n    namespace: default\n    virtualIP: 198.18.0.{}\n    selector: {{app: web}}\n    ports: [{{port: 80, targetPort: 8080}}]\n",
            220 + i
        ));
    }
    // Used to wait for the replica's registration without touching s0..s7.
    yaml.push_str(
        "  - name: warm\n    namespace: default\n    virtualIP: 198.18.0.240\n    selector: {app: web}\n    ports: [{port: 80, targetPort: 8080}]\n",
    );
    yaml
}

/// An HTTPRoute on service `s{i}` that sets `x-routed: s{i}` on every request.
fn header_route(i: usize) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: s{i}, namespace: default}}
spec:
  parentRefs: [{{group: \"\", kind: Service, name: s{i}, port: 80}}]
  rules:
    - filters:
        - type: RequestHeaderModifier
          requestHeaderModifier:
            set: [{{name: x-routed, value: s{i}}}]
"
    )
}

#[test]
fn the_first_request_to_each_service_runs_under_its_routes() {
    let mesh = Mesh::new();
    let cp_pod = mesh.pod("cp");
    // The routes are on disk before the control plane starts: they are in
    // force from its first answer.
    let services = cp_pod.dir().join("services-first.yaml");
    std::fs::write(&services, services_yaml()).expect("writing the services file");
    let policy_dir = cp_pod.dir().join("policy-first");
    std::fs::create_dir_all(&policy_dir).expect("creating the policy directory");
    for i in 0..SERVICES {
        std::fs::write(policy_dir.join(format!("s{i}.yaml")), header_route(i)).expect("writing a route");
    }
    let cp = cp_pod.start_control(services, policy_dir, None, &[]);
    let web = mesh.pod("web");
    let _app = web.http_server(8080);
    let _web_proxy = web.run_registered_proxy(&cp, "web-0", "app=web", 8080, &[]);
    // Another pod waits for the registration, so that the client's first
    // requests are its first contact with each service.
    let warm = mesh.pod("warm");
    let _warm_proxy = warm.run_proxy(&["--control-plane", &cp.url]);
    eventually(Duration::from_secs(10), "the replica is registered", || {
        match warm.curl(&["-o", "/dev/null", "http://198.18.0.240/"]).status() {
            200 => Ok(()),
            s => Err(format!("status {s}")),
        }
    });

    let client = mesh.pod("client");
    let _proxy = client.run_proxy(&["--control-plane", &cp.url]);
    let mut unrouted = Vec::new();
    for i in 0..SERVICES {
        let curl = client.curl(&[&format!("http://198.18.0.{}/first", 220 + i)]);
        assert_eq!(curl.status(), 200, "s{i}: {}", curl.run);
        if !curl.body().contains(&format!("header x-routed: s{i}")) {
            unrouted.push(i);
        }
    }
    assert!(unrouted.is_empty(), "first requests to s{unrouted:?} reached the app without their route's header");
    // And the second ones, of course.
    for i in 0..SERVICES {
        let curl = client.curl(&[&format!("http://198.18.0.{}/second", 220 + i)]);
        assert!(curl.body().contains(&format!("header x-routed: s{i}")), "s{i}: {}", curl.body());
    }
}

#[test]
fn before_its_port_policy_arrives_the_inbound_proxy_applies_its_default_to_every_request() {
    let mesh = Mesh::new();
    let cp = mesh.pod("cp").run_control_with_ca(WEB_AND_STORE, &["--default-access", "deny"]);
    let b = mesh.pod("b");
    let _app = b.http_server(8080);
    // What `weft up` passes for a mesh whose defaultAccess is deny.
    let proxy_b = b.run_meshed_proxy(&cp, "b", Some(("b-0", "app=web", "8080")), &["--default-inbound-policy", "deny"]);
    let a = mesh.pod("a");
    let _proxy_a = a.run_meshed_proxy(&cp, "a", None, &[]);

    // The control plane stops answering before b's proxy has asked for its
    // port's policy (it asks on the first inbound connection).
    cp.proc.signal(Signal::SIGSTOP);
    let url = format!("http://{}/", b.addr(8080));
    let during: Vec<u16> = (0..6).map(|_| a.curl(&["-o", "/dev/null", &url]).status()).collect();
    cp.proc.signal(Signal::SIGCONT);
    assert_eq!(during, vec![403; 6], "requests reached the app before its port's policy was known");
    let denied = proxy_b.metrics().sum("weft_inbound_denied_total", &[("policy", "proxy-default")]);
    assert_eq!(denied, 6.0, "the proxy's default decisions are not counted:\n{}", proxy_b.metrics_text());

    // Once the policy arrives it decides (the mesh's deny, from the control
    // plane this time).
    eventually(Duration::from_secs(10), "the control plane's policy decides", || {
        let _ = a.curl(&["-o", "/dev/null", &url]);
        let m = proxy_b.metrics();
        match m.sum("weft_inbound_denied_total", &[("policy", "default"), ("reason", "default-deny")]) {
            n if n >= 1.0 => Ok(()),
            n => Err(format!("{n} decisions by the control plane's policy")),
        }
    });
}
