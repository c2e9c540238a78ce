//! Inbound authorization end to end: AccessPolicy (enforce and audit) and
//! the mesh's mTLS mode, with identities from the control plane's CA.

use std::time::Duration;

use weft_tests::{Mesh, Pod, WEB_AND_STORE, eventually};

fn access_policy(mode: &str) -> String {
    format!(
        "apiVersion: policy.weft.dev/v1alpha1
kind: AccessPolicy
metadata: {{name: web-from-a, namespace: default}}
spec:
  targetRef: {{kind: Service, name: web}}
  mode: {mode}
  from:
    serviceAccounts: [{{name: a}}]
---
apiVersion: policy.weft.dev/v1alpha1
kind: AccessPolicy
metadata: {{name: store-from-a, namespace: default}}
spec:
  targetRef: {{kind: Service, name: store}}
  mode: {mode}
  from:
    serviceAccounts: [{{name: a}}]
"
    )
}

fn status(pod: &Pod, url: &str) -> u16 {
    pod.curl(&["-o", "/dev/null", url]).status()
}

fn redis_ping(pod: &Pod) -> String {
    pod.exec("redis-cli", &["-h", "198.18.0.201", "-p", "6379", "PING"]).stdout.trim().to_owned()
}

#[test]
fn an_access_policy_lets_only_sa_a_in_and_audit_lets_everyone_in_counted() {
    let mesh = Mesh::new();
    let cp = mesh.pod("cp").run_control_with_ca(WEB_AND_STORE, &[]);
    std::fs::write(cp.policy_dir.join("access.yaml"), access_policy("enforce")).expect("policy");
    let (_b, _apps, proxy_b) = mesh.web_and_store_pod(&cp);
    let a = mesh.pod("a");
    let _pa = a.run_meshed_proxy(&cp, "a", None, &[]);
    let c = mesh.pod("c");
    let _pc = c.run_meshed_proxy(&cp, "c", None, &[]);

    // c is refused once the policy is in force (it loads asynchronously).
    eventually(Duration::from_secs(10), "c is refused", || match status(&c, "http://198.18.0.200/") {
        403 => Ok(()),
        s => Err(format!("status {s}")),
    });
    let curl = c.curl(&["http://198.18.0.200/"]);
    assert_eq!(curl.status(), 403);
    assert_eq!(curl.header("weft-proxy-error"), "forbidden");
    assert!(curl.body().contains("unauthorized") && curl.body().contains("default/web-from-a"), "{}", curl.body());
    assert_eq!(status(&a, "http://198.18.0.200/"), 200);
    // Opaque TCP: a talks to Redis, c's connection is closed unanswered.
    assert_eq!(redis_ping(&a), "PONG");
    assert_ne!(redis_ping(&c), "PONG", "c reached Redis");

    let m = proxy_b.metrics();
    let denied = |p: &str| m.sum("weft_inbound_denied_total", &[("policy", p), ("reason", "unauthorized")]);
    let allowed = |p: &str| m.sum("weft_inbound_allowed_total", &[("policy", p), ("reason", "authorized")]);
    assert!(denied("default/web-from-a") >= 2.0, "HTTP denials not counted:\n{}", proxy_b.metrics_text());
    assert_eq!(denied("default/store-from-a"), 1.0, "the TCP denial is not counted once");
    assert!(allowed("default/web-from-a") >= 1.0 && allowed("default/store-from-a") >= 1.0);

    // Audit: c gets through, and it is counted as such.
    std::fs::write(cp.policy_dir.join("access.yaml"), access_policy("audit")).expect("policy");
    eventually(Duration::from_secs(10), "audit lets c in", || match status(&c, "http://198.18.0.200/") {
        200 => Ok(()),
        s => Err(format!("status {s}")),
    });
    assert_eq!(redis_ping(&c), "PONG");
    proxy_b.wait_metric("weft_inbound_allowed_total", &[("policy", "default/store-from-a"), ("reason", "audit")], 1.0);
}

#[test]
fn strict_refuses_plaintext_from_outside_and_permissive_counts_it() {
    for (mode, want, reason) in [("strict", 403, "plaintext"), ("permissive", 200, "plaintext-permitted")] {
        let mesh = Mesh::new();
        let cp = mesh.pod("cp").run_control_with_ca(WEB_AND_STORE, &["--mtls-mode", mode]);
        let (b, _apps, proxy_b) = mesh.web_and_store_pod(&cp);
        // A client outside the mesh: no proxy, plaintext to b's address.
        let outside = mesh.pod("out");
        let url = format!("http://{}/", b.addr(8080));
        assert_eq!(status(&outside, &url), want, "{mode}");
        proxy_b.wait_metric(
            if want == 200 { "weft_inbound_allowed_total" } else { "weft_inbound_denied_total" },
            &[("policy", "default"), ("reason", reason)],
            1.0,
        );
        // Meshed clients are unaffected.
        let a = mesh.pod("a");
        let _pa = a.run_meshed_proxy(&cp, "a", None, &[]);
        assert_eq!(status(&a, "http://198.18.0.200/"), 200, "{mode}");
    }
}

/// Port-wide: sa/a and sa/c; the `admin` route (`/admin`): sa/a only; the
/// `rest` route (everything else) has no rule of its own.
const ROUTE_SCOPED: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: admin, namespace: default}
spec:
  parentRefs: [{group: \"\", kind: Service, name: web, port: 80}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /admin}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: rest, namespace: default}
spec:
  parentRefs: [{group: \"\", kind: Service, name: web, port: 80}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /}}]
---
apiVersion: policy.weft.dev/v1alpha1
kind: AccessPolicy
metadata: {name: web-from-a-and-c, namespace: default}
spec:
  targetRef: {kind: Service, name: web}
  from:
    serviceAccounts: [{name: a}, {name: c}]
---
apiVersion: policy.weft.dev/v1alpha1
kind: AccessPolicy
metadata: {name: admin-from-a, namespace: default}
spec:
  targetRef: {group: gateway.networking.k8s.io, kind: HTTPRoute, name: admin}
  from:
    serviceAccounts: [{name: a}]
";

#[test]
fn a_route_scoped_access_policy_guards_only_its_route() {
    let mesh = Mesh::new();
    let cp = mesh.pod("cp").run_control_with_ca(WEB_AND_STORE, &[]);
    std::fs::write(cp.policy_dir.join("access.yaml"), ROUTE_SCOPED).expect("policy");
    let (_b, _apps, proxy_b) = mesh.web_and_store_pod(&cp);
    let a = mesh.pod("a");
    let _pa = a.run_meshed_proxy(&cp, "a", None, &[]);
    let c = mesh.pod("c");
    let _pc = c.run_meshed_proxy(&cp, "c", None, &[]);

    eventually(Duration::from_secs(10), "c is refused on /admin", || match status(&c, "http://198.18.0.200/admin/x") {
        403 => Ok(()),
        s => Err(format!("status {s}")),
    });
    let curl = c.curl(&["http://198.18.0.200/admin/users"]);
    assert_eq!(curl.status(), 403);
    assert!(curl.body().contains("default/admin-from-a"), "{}", curl.body());
    assert_eq!(status(&c, "http://198.18.0.200/"), 200, "c is allowed off the admin route");
    assert_eq!(status(&c, "http://198.18.0.200/administrator"), 200, "/administrator is not under /admin");
    assert_eq!(status(&a, "http://198.18.0.200/admin/users"), 200, "a is allowed on the admin route");
    assert_eq!(status(&a, "http://198.18.0.200/"), 200);

    let m = proxy_b.metrics();
    assert!(m.sum("weft_inbound_denied_total", &[("policy", "default/admin-from-a")]) >= 2.0);
    assert!(m.sum("weft_inbound_allowed_total", &[("policy", "default/admin-from-a")]) >= 1.0);
    assert!(m.sum("weft_inbound_allowed_total", &[("policy", "default/web-from-a-and-c")]) >= 2.0);
}
