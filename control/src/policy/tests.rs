//! Table tests: valid resources parse to what they say, invalid ones are
//! refused with the line and the field path.

use super::*;
use crate::policy::httproute::{FilterType, PathMatchType, PathModifierType, ValueMatchType};
use crate::policy::traffic::{LbType, TargetKind};

const ROUTE: &str = "\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: web-split
  namespace: default
spec:
  parentRefs:
    - {group: core, kind: Service, name: web, port: 80}
  rules:
    - matches:
        - path: {type: PathPrefix, value: /api}
          headers: [{name: X-Canary, value: 'true'}]
          queryParams: [{type: RegularExpression, name: v, value: '^2'}]
          method: GET
      filters:
        - type: RequestHeaderModifier
          requestHeaderModifier: {set: [{name: x-route, value: api}], remove: [x-debug]}
      backendRefs:
        - {name: web-v1, port: 80, weight: 90}
        - {name: web-v2, port: 80, weight: 10}
        - {name: web-v3, port: 80, weight: 0}
      timeouts: {request: 5s, backendRequest: 1500ms}
      retry: {codes: [502, 503], attempts: 2, backoff: 100ms}
    - matches: [{path: {type: Exact, value: /old}}]
      filters:
        - type: RequestRedirect
          requestRedirect: {path: {type: ReplaceFullPath, replaceFullPath: /new}, statusCode: 301}
    - filters:
        - type: URLRewrite
          urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}
        - type: RequestMirror
          requestMirror: {backendRef: {name: shadow, port: 80}, percent: 5}
";

const TRAFFIC: &str = "\
apiVersion: policy.weft.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: web}
spec:
  targetRef: {kind: Service, name: web}
  retries:
    attempts: 3
    retryOn: [5xx, connect-failure, 429, unavailable]
    perTryTimeout: 500ms
    backoff: {base: 10ms, max: 1s, jitter: 0.25}
    budget: {ratio: 0.1, window: 10s, minRetriesPerSecond: 5}
    allowNonIdempotent: false
    maxBodyBytes: 65536
  timeouts: {request: 10s, connect: 1s, idle: 1h}
  circuitBreaker: {consecutiveFailures: 5, baseEjection: 30s, maxEjection: 5m}
  loadBalancer: {type: consistentHash, hashOn: {header: X-User}}
  rateLimit: {requestsPerSecond: 100, burst: 200, perIdentity: true}
  faults:
    delay: {percent: 10, fixedDelay: 200ms}
    abort: {percent: 1, httpStatus: 503}
";

const ACCESS: &str = "\
apiVersion: policy.weft.dev/v1alpha1
kind: AccessPolicy
metadata: {name: store-from-web, namespace: data}
spec:
  targetRef: {kind: Service, name: store, port: 6379}
  mode: audit
  from:
    identities: ['spiffe://cluster.local/ns/batch/*', '*']
    namespaces: [monitoring]
    serviceAccounts: [{name: web, namespace: default}, {name: loader}]
    unauthenticated: true
";

#[test]
fn parses_every_kind_in_one_multi_document_file() {
    let text = format!("---\n{ROUTE}---\n# comment only\n---\n{TRAFFIC}---\n{ACCESS}---\n");
    let resources = parse(&text).expect("valid");
    let ids: Vec<String> = resources.iter().map(|r| r.id().to_string()).collect();
    assert_eq!(ids, ["HTTPRoute/default/web-split", "TrafficPolicy/default/web", "AccessPolicy/data/store-from-web"]);

    let Resource::HttpRoute(route) = &resources[0] else { panic!("route") };
    let rule = &route.spec.rules[0];
    let m = &rule.matches[0];
    assert_eq!(m.path.as_ref().map(|p| (p.kind, p.value.as_str())), Some((PathMatchType::PathPrefix, "/api")));
    assert_eq!(m.headers[0].name.0, "x-canary", "header names are lower-cased");
    assert_eq!(m.query_params[0].kind, ValueMatchType::RegularExpression);
    let weights: Vec<u64> = rule.backend_refs.iter().map(|b| b.weight.map_or(1, |w| w.get())).collect();
    assert_eq!(weights, [90, 10, 0]);
    assert_eq!(rule.timeouts.as_ref().and_then(|t| t.backend_request).map(|d| d.as_millis()), Some(1500));
    assert_eq!(route.spec.rules[1].filters[0].kind, FilterType::RequestRedirect);
    let rewrite = route.spec.rules[2].filters[0].url_rewrite.as_ref().and_then(|r| r.path.as_ref()).expect("rewrite");
    assert_eq!((rewrite.kind, rewrite.value()), (PathModifierType::ReplacePrefixMatch, "/v2"));

    let Resource::TrafficPolicy(tp) = &resources[1] else { panic!("traffic") };
    assert_eq!(tp.spec.target_ref.kind, TargetKind::Service);
    let retries = tp.spec.retries.as_ref().expect("retries");
    let on: Vec<&str> = retries.retry_on.iter().flatten().map(|r| r.0.as_str()).collect();
    assert_eq!(on, ["5xx", "connect-failure", "429", "unavailable"]);
    assert_eq!(tp.spec.load_balancer.as_ref().map(|l| l.kind), Some(LbType::ConsistentHash));
    assert_eq!(tp.spec.timeouts.as_ref().and_then(|t| t.idle).map(|d| d.as_millis()), Some(3_600_000));

    let Resource::AccessPolicy(ap) = &resources[2] else { panic!("access") };
    assert_eq!(ap.spec.mode, access::Mode::Audit);
    assert!(ap.spec.from.unauthenticated);
}

#[test]
fn defaults_fill_in() {
    let text = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web}
spec:
  parentRefs: [{group: '', kind: Service, name: web}]
  rules:
    - matches: [{path: {value: /x}}]
      backendRefs: [{name: web, port: 80}]
";
    let r = parse(text).expect("valid");
    let Resource::HttpRoute(route) = &r[0] else { panic!("route") };
    assert_eq!(route.metadata.namespace.0, "default");
    assert_eq!(route.spec.rules[0].matches[0].path.as_ref().map(|p| p.kind), Some(PathMatchType::PathPrefix));
    assert_eq!(route.spec.rules[0].backend_refs[0].weight, None, "weight defaults to 1 when compiled");
    assert!(parse("").expect("empty file").is_empty());
    assert!(parse("---\n---\n").expect("empty documents").is_empty());
}

/// `(yaml, line, expected message fragment)`; `line` 0 means "no line".
fn refused(cases: &[(&str, usize, &str)]) {
    for (text, line, want) in cases {
        let e = parse(text).expect_err(text);
        let shown = e.to_string();
        assert!(shown.contains(want), "\n{text}\ngot:  {shown}\nwant: {want}");
        if *line > 0 {
            assert_eq!(e.line, Some(*line), "\n{text}\n{shown}");
        }
    }
}

fn route_with(rules: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: web}}
spec:
  parentRefs: [{{group: core, kind: Service, name: web}}]
  rules:
{rules}"
    )
}

#[test]
fn invalid_routes_are_refused_with_line_and_field() {
    let weight = route_with(
        "    - backendRefs:\n        - {name: a, port: 80}\n        - {name: b, port: 80, weight: 2000000}\n",
    );
    let regex = route_with("    - matches: [{path: {type: RegularExpression, value: '(unclosed'}}]\n");
    let duration = route_with("    - timeouts: {request: 1.5s}\n");
    let backend_req = route_with("    - timeouts:\n        request: 1s\n        backendRequest: 2s\n");
    let unknown = route_with("    - matchs: []\n");
    let filter = route_with("    - filters: [{type: RequestHeaderModifier}]\n");
    let ext = route_with("    - filters: [{type: ExtensionRef}]\n");
    let redirect_and_backends = route_with(
        "    - filters: [{type: RequestRedirect, requestRedirect: {statusCode: 302}}]\n      backendRefs: [{name: a, port: 80}]\n",
    );
    let no_port = route_with("    - backendRefs: [{name: a}]\n");
    let bad_method = route_with("    - matches: [{method: FETCH}]\n");
    let relative = route_with("    - matches: [{path: {type: Exact, value: api}}]\n");
    let dup_header = route_with("    - matches: [{headers: [{name: a, value: x}, {name: A, value: y}]}]\n");
    let mirror = route_with(
        "    - filters: [{type: RequestMirror, requestMirror: {backendRef: {name: s, port: 80}, percent: 101}}]\n",
    );
    refused(&[
        (&weight, 9, "spec.rules[0].backendRefs[1].weight: must be 0..=1000000, got 2000000"),
        (&regex, 7, "spec.rules[0].matches[0].path: value: invalid regular expression `(unclosed`"),
        (&duration, 7, "spec.rules[0].timeouts.request: `1.5s` is not a Gateway API duration"),
        (&backend_req, 8, "spec.rules[0].timeouts: backendRequest: 2s must not exceed request (1s)"),
        (&unknown, 7, "unknown field `matchs`"),
        (&filter, 7, "spec.rules[0].filters[0]: requestHeaderModifier: required when type is RequestHeaderModifier"),
        (&ext, 7, "unknown variant `ExtensionRef`"),
        (&redirect_and_backends, 7, "cannot be used with backendRefs"),
        (&no_port, 7, "spec.rules[0].backendRefs[0]: port: required for a Service backend"),
        (&bad_method, 7, "spec.rules[0].matches[0].method: unknown variant `FETCH`"),
        (&relative, 7, "must be an absolute path"),
        (&dup_header, 7, "headers[].name: `a` appears more than once"),
        (&mirror, 7, "percent: must be 0..=100, got 101"),
    ]);
}

#[test]
fn invalid_documents_are_refused() {
    let gateway_parent = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web}
spec:
  parentRefs: [{name: web-gateway}]
";
    let no_parents = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web}
spec: {}
";
    let wrong_version = "apiVersion: gateway.networking.k8s.io/v1beta9
kind: HTTPRoute
metadata: {name: web}
spec:
  parentRefs: [{group: core, kind: Service, name: web}]
";
    let bad_name = "apiVersion: policy.weft.dev/v1alpha1
kind: AccessPolicy
metadata: {name: Web_Policy}
spec: {targetRef: {kind: Service, name: web}, from: {}}
";
    let unknown_kind = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n";
    let second_bad = format!(
        "{}---\napiVersion: policy.weft.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {{name: t}}\nspec:\n  targetRef: {{kind: Mesh}}\n  timeouts: {{connect: 0s}}\n",
        ACCESS
    );
    let twice = format!("{ACCESS}---\n{ACCESS}");
    let not_a_mapping = "- just\n- a list\n";
    let syntax = "apiVersion: policy.weft.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: a\n";
    refused(&[
        (gateway_parent, 5, "spec.parentRefs[0]: kind: required; set `kind: Service`"),
        (no_parents, 4, "spec: parentRefs: at least one Service parent is required"),
        (wrong_version, 1, "apiVersion: must be `gateway.networking.k8s.io/v1`"),
        (bad_name, 3, "metadata.name: `Web_Policy` is not a valid name"),
        (
            unknown_kind,
            2,
            "kind: unknown variant `ConfigMap`, expected one of `HTTPRoute`, `TrafficPolicy`, `AccessPolicy`",
        ),
        (&second_bad, 18, "TrafficPolicy default/t: spec.timeouts: connect: must be greater than 0s"),
        (&twice, 0, "AccessPolicy data/store-from-web is defined twice in this file"),
        (not_a_mapping, 1, "invalid type: sequence"),
        (syntax, 0, "did not find expected"),
    ]);
}

fn traffic_with(spec: &str) -> String {
    format!(
        "apiVersion: policy.weft.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {{name: t, namespace: prod}}\nspec:\n{spec}"
    )
}

#[test]
fn invalid_traffic_and_access_policies_are_refused() {
    let retry_on = traffic_with("  targetRef: {kind: Mesh}\n  retries: {retryOn: [5xx, teapot]}\n");
    let lb = traffic_with("  targetRef: {kind: Service, name: web}\n  loadBalancer: {type: consistentHash}\n");
    let hash = traffic_with(
        "  targetRef: {kind: Service, name: web}\n  loadBalancer: {type: ewma, hashOn: {header: x-user}}\n",
    );
    let empty = traffic_with("  targetRef: {kind: Service, name: web}\n");
    let rl_route = traffic_with(
        "  targetRef: {group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}\n  rateLimit: {requestsPerSecond: 5}\n",
    );
    let other_ns = traffic_with("  targetRef: {kind: Namespace, name: dev}\n  timeouts: {request: 1s}\n");
    let mesh_name = traffic_with("  targetRef: {kind: Mesh, name: x}\n  timeouts: {request: 1s}\n");
    let jitter = traffic_with("  targetRef: {kind: Mesh}\n  retries: {backoff: {jitter: 1.5}}\n");
    let backoff = traffic_with("  targetRef: {kind: Mesh}\n  retries: {backoff: {base: 2s, max: 1s}}\n");
    let attempts = traffic_with("  targetRef: {kind: Mesh}\n  retries: {attempts: -1}\n");
    let status = traffic_with("  targetRef: {kind: Mesh}\n  faults: {abort: {percent: 5, httpStatus: 700}}\n");
    let identity = "apiVersion: policy.weft.dev/v1alpha1
kind: AccessPolicy
metadata: {name: a}
spec:
  targetRef: {kind: Service, name: web}
  from: {identities: [web.default]}
";
    let no_trust_domain = identity.replace("web.default", "'spiffe:///ns/batch/sa/web'");
    let signed_code = traffic_with("  targetRef: {kind: Mesh}\n  retries: {retryOn: ['+503']}\n");
    let padded_code = traffic_with("  targetRef: {kind: Mesh}\n  retries: {retryOn: ['0503']}\n");
    let no_from = "apiVersion: policy.weft.dev/v1alpha1
kind: AccessPolicy
metadata: {name: a}
spec:
  targetRef: {kind: Service, name: web}
";
    let route_port = "apiVersion: policy.weft.dev/v1alpha1
kind: AccessPolicy
metadata: {name: a}
spec:
  targetRef: {group: gateway.networking.k8s.io, kind: HTTPRoute, name: r, port: 80}
  from: {}
";
    refused(&[
        (&retry_on, 6, "spec.retries.retryOn[1]: `teapot` is not a retry condition"),
        (&lb, 6, "spec.loadBalancer: hashOn: required when type is consistentHash"),
        (&hash, 6, "spec.loadBalancer: hashOn: only used when type is consistentHash"),
        (&empty, 5, "spec: sets nothing"),
        (&rl_route, 5, "spec: rateLimit: is enforced per Service port"),
        (&other_ns, 0, "spec.targetRef.name: a TrafficPolicy in namespace `prod` can only target that namespace"),
        (&mesh_name, 5, "spec.targetRef: name: must not be set for kind Mesh"),
        (&jitter, 6, "spec.retries.backoff.jitter: must be 0.0..=1.0, got 1.5"),
        (&backoff, 6, "spec.retries.backoff: base: 2s must not exceed max (1s)"),
        (&attempts, 6, "spec.retries.attempts: must not be negative"),
        (&status, 6, "spec.faults.abort.httpStatus: must be 200..=599, got 700"),
        (identity, 6, "spec.from.identities[0]: `web.default` is not an identity pattern"),
        (&no_trust_domain, 6, "spec.from.identities[0]: `spiffe:///ns/batch/sa/web` is not an identity pattern"),
        (&signed_code, 6, "spec.retries.retryOn[0]: `+503` is not a retry condition"),
        (&padded_code, 6, "spec.retries.retryOn[0]: `0503` is not a retry condition"),
        (no_from, 5, "spec: missing field `from`"),
        (route_port, 5, "spec.targetRef: port: only for kind Service"),
    ]);
}
