//! The `weft-policy` setup: the `weft-mtls` pair (same control plane, mTLS
//! and discovery path) plus a full outbound traffic policy on the app's
//! service, so that every request of the generator goes through the whole
//! policy stack of the client-side proxy:
//!
//! ```text
//!  route match (PathPrefix / + header user-agent) ─► RequestHeaderModifier ─► split 100/0
//!    ─► request timeout ─► retry bookkeeping (budget deposit, body buffered for replay)
//!      ─► balancer + circuit breaker ─► per-try timeout ─► endpoint
//! ```
//!
//! The policy is written into the control plane's policy directory after
//! the pair has started and before anything is measured, and start-up
//! waits until the client proxy's `/config` lists both resources under the
//! VIP's `policy_sources` without compile errors. It then proves the stack
//! is on the request path: the app sees the header the route's filter sets,
//! and a request that matches no rule is answered 404 by the proxy.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use weft_tests::Pod;

use super::mtls::{NAMESPACE, VIP};
use super::weft;
use crate::app::HEADER_PATH;
use crate::workload::{APP_HTTP_PORT, USER_AGENT};

/// The second backend of the route (weight 0): a canary service with its
/// own virtual IP and no endpoints, never picked.
pub const CANARY: &str = "app-canary";
const CANARY_VIP: &str = "198.18.0.201";
/// The header the route's RequestHeaderModifier sets, and its value.
pub const ROUTE_HEADER: (&str, &str) = ("x-weft-bench-policy", "on");
/// The resource names (`Kind/namespace/name`) the client proxy must run.
pub const SOURCES: [&str; 2] = ["HTTPRoute/default/app", "TrafficPolicy/default/app"];
/// The file in the control plane's policy directory.
const FILE: &str = "app-policy.yaml";
/// How long the policy may take to reach the client proxy (the control
/// plane polls its directory, then pushes).
const IN_FORCE_TIMEOUT: Duration = Duration::from_secs(20);

/// The services file: `weft-mtls`' service plus the canary.
pub fn services_yaml() -> String {
    format!(
        "{}  - name: {CANARY}\n    namespace: {NAMESPACE}\n    virtualIP: {CANARY_VIP}\n    \
         selector: {{app: {CANARY}}}\n    ports:\n      - {{port: {APP_HTTP_PORT}, targetPort: {APP_HTTP_PORT}}}\n",
        super::mtls::services_yaml()
    )
}

/// The HTTPRoute and the TrafficPolicy, as one multi-document file.
///
/// The timeouts and the per-try timeout are far above the latencies
/// measured (they arm timers on every request, they never fire); the
/// circuit breaker never ejects the only endpoint, but every attempt is
/// recorded with it.
pub fn policy_yaml() -> String {
    let (header, value) = ROUTE_HEADER;
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: app, namespace: {NAMESPACE}}}
spec:
  parentRefs: [{{group: \"\", kind: Service, name: app, port: {APP_HTTP_PORT}}}]
  rules:
    - matches:
        - path: {{type: PathPrefix, value: /}}
          headers: [{{type: Exact, name: user-agent, value: {USER_AGENT}}}]
      filters:
        - type: RequestHeaderModifier
          requestHeaderModifier: {{set: [{{name: {header}, value: '{value}'}}]}}
      backendRefs:
        - {{name: app, port: {APP_HTTP_PORT}, weight: 100}}
        - {{name: {CANARY}, port: {APP_HTTP_PORT}, weight: 0}}
---
apiVersion: policy.weft.dev/v1alpha1
kind: TrafficPolicy
metadata: {{name: app, namespace: {NAMESPACE}}}
spec:
  targetRef: {{kind: Service, name: app}}
  retries:
    attempts: 2
    retryOn: [5xx, connect-failure]
    perTryTimeout: 1s
    backoff: {{base: 5ms, max: 50ms, jitter: 0.5}}
    budget: {{ratio: 0.2, window: 10s, minRetriesPerSecond: 10}}
  timeouts: {{request: 3s, backendRequest: 1500ms}}
  circuitBreaker: {{consecutiveFailures: 5, baseEjection: 5s, maxEjection: 30s}}
"
    )
}

/// Writes the policy into `policy_dir` (write, then rename), waits until
/// the proxy in `client` runs it for the VIP, and proves it is on the
/// request path; a description of each proof.
pub fn apply(policy_dir: &std::path::Path, client: &Pod) -> anyhow::Result<Vec<String>> {
    let path = policy_dir.join(FILE);
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, policy_yaml()).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("placing {}", path.display()))?;

    let target = format!("{VIP}:{APP_HTTP_PORT}");
    let deadline = Instant::now() + IN_FORCE_TIMEOUT;
    let sources = loop {
        let config = weft::admin_get(client, "/config")?;
        match in_force(&config, &target) {
            Ok(sources) => break sources,
            Err(why) => anyhow::ensure!(
                Instant::now() < deadline,
                "the policy in {} is not in force on the client-side proxy after {IN_FORCE_TIMEOUT:?}: {why}",
                path.display()
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut checks = vec![format!(
        "the client-side proxy runs the policy for {target} (`/config` policy_sources: {})",
        sources.join(", ")
    )];

    let (header, value) = ROUTE_HEADER;
    let url = format!("http://{target}{HEADER_PATH}{header}");
    let ua = format!("user-agent: {USER_AGENT}");
    let run = client.exec("curl", &["-sS", "--max-time", "2", "-H", &ua, &url]);
    anyhow::ensure!(
        run.status.success() && run.stdout == value,
        "the app did not see `{header}: {value}` set by the route's RequestHeaderModifier: {run}"
    );
    checks.push(format!("the route matched the generator's requests and its filter set `{header}: {value}`"));

    let run = client.exec(
        "curl",
        &["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2", "-H", "user-agent: other", &url],
    );
    anyhow::ensure!(run.stdout == "404", "a request matching no route was not answered 404 by the proxy: {run}");
    checks.push("a request matching no route is answered 404 (route matching is on the request path)".to_owned());
    Ok(checks)
}

/// The policy sources of `target` in a proxy's `/config`, if every one of
/// [`SOURCES`] is there and the policy compiled without errors.
pub fn in_force(config: &str, target: &str) -> Result<Vec<String>, String> {
    let config: serde_json::Value = serde_json::from_str(config).map_err(|e| format!("/config is not JSON: {e}"))?;
    let entry = config["discovery"]["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["target"] == target)
        .ok_or_else(|| format!("/config lists no discovery target {target}"))?;
    let sources: Vec<String> = entry["policy_sources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect();
    let missing: Vec<&str> = SOURCES.into_iter().filter(|s| !sources.iter().any(|have| have == s)).collect();
    if !missing.is_empty() {
        return Err(format!("policy_sources {sources:?} lack {missing:?}"));
    }
    match entry["policy_errors"].as_array() {
        Some(errors) if !errors.is_empty() => Err(format!("the policy compiled with errors: {errors:?}")),
        _ => Ok(sources),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_control::policy::httproute::{FilterType, PathMatchType};
    use weft_control::policy::{Resource, parse};

    #[test]
    fn the_policy_parses_with_the_control_planes_parser_and_says_what_the_setup_promises() {
        let resources = parse(&policy_yaml()).unwrap_or_else(|e| panic!("{e}\n{}", policy_yaml()));
        let ids: Vec<String> = resources.iter().map(|r| r.id().to_string()).collect();
        assert_eq!(ids, SOURCES);

        let Resource::HttpRoute(route) = &resources[0] else { panic!("not a route") };
        let rule = &route.spec.rules[0];
        let m = &rule.matches[0];
        assert_eq!(m.path.as_ref().map(|p| (p.kind, p.value.as_str())), Some((PathMatchType::PathPrefix, "/")));
        assert_eq!((m.headers[0].name.0.as_str(), m.headers[0].value.as_str()), ("user-agent", USER_AGENT));
        assert_eq!(rule.filters[0].kind, FilterType::RequestHeaderModifier);
        let backends: Vec<(&str, u64)> =
            rule.backend_refs.iter().map(|b| (b.name.0.as_str(), b.weight.map_or(1, |w| w.get()))).collect();
        assert_eq!(backends, [("app", 100), (CANARY, 0)]);

        let Resource::TrafficPolicy(tp) = &resources[1] else { panic!("not a traffic policy") };
        let retries = tp.spec.retries.as_ref().expect("retries");
        assert_eq!(retries.attempts.map(|a| a.as_u32()), Some(2));
        let on: Vec<&str> = retries.retry_on.iter().flatten().map(|r| r.0.as_str()).collect();
        assert_eq!(on, ["5xx", "connect-failure"]);
        assert!(retries.per_try_timeout.is_some() && retries.backoff.is_some() && retries.budget.is_some());
        let timeouts = tp.spec.timeouts.as_ref().expect("timeouts");
        assert!(timeouts.request.is_some() && timeouts.backend_request.is_some());
        let cb = tp.spec.circuit_breaker.as_ref().expect("circuit breaker");
        assert_eq!(cb.consecutive_failures.map(|c| c.as_u32()), Some(5));
    }

    #[test]
    fn the_services_add_the_canary_to_weft_mtls_ones() {
        let yaml = services_yaml();
        assert!(yaml.starts_with(&super::super::mtls::services_yaml()), "{yaml}");
        assert!(yaml.contains("name: app-canary") && yaml.contains("virtualIP: 198.18.0.201"), "{yaml}");
    }

    #[test]
    fn in_force_needs_every_source_and_no_errors() {
        let config = |sources: &str, errors: &str| {
            format!(
                r#"{{"discovery": {{"targets": [{{"target": "198.18.0.200:8080", "policy_sources": {sources},
                "policy_errors": {errors}}}]}}}}"#
            )
        };
        let all = r#"["HTTPRoute/default/app", "TrafficPolicy/default/app"]"#;
        assert_eq!(in_force(&config(all, "[]"), "198.18.0.200:8080").unwrap().len(), 2);
        let err = in_force(&config(r#"["TrafficPolicy/default/app"]"#, "[]"), "198.18.0.200:8080").unwrap_err();
        assert!(err.contains("HTTPRoute/default/app"), "{err}");
        let err = in_force(&config(all, r#"["route `x`: bad"]"#), "198.18.0.200:8080").unwrap_err();
        assert!(err.contains("errors"), "{err}");
        assert!(in_force(&config(all, "null"), "198.18.0.200:7000").unwrap_err().contains("no discovery target"));
    }
}
