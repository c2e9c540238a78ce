//! Weft's own CRDs (`manifests/crds/`: TrafficPolicy and AccessPolicy) on a
//! real API server, against the control plane's own parser
//! (`weft_control::policy::parse`): one table of documents, each with what
//! `kubectl apply` does and what the parser does. The two should agree; the
//! rows where they cannot say why.
//!
//! ```text
//! document ──► kubectl apply (--validate=strict) ──► stored? else the field path in the error
//!          └─► policy::parse                     ──► accepted? else the field path in the error
//! stored object ──► kubectl get -o json ──► policy::parse (what the controller will read)
//! ```

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};
use weft_control::policy;
use weft_tests::{KUBECTL_TIMEOUT, KubeCluster};

/// The two CRDs, by name (`<plural>.<group>`, also the file name).
const CRDS: [&str; 2] = ["trafficpolicies.policy.weft.dev", "accesspolicies.policy.weft.dev"];

fn crds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/crds")
}

/// Installs both CRDs and waits (with a deadline) until the API server
/// serves them; checks they are what the files say: namespaced, v1alpha1
/// served and stored, with a status subresource, and no condition against
/// them (a non-structural schema would show as `NonStructuralSchema`).
#[track_caller]
fn install_crds(cluster: &KubeCluster) {
    let dir = crds_dir();
    cluster.kubectl(&["apply", "-f", dir.to_str().expect("UTF-8 path")]);
    let names: Vec<String> = CRDS.iter().map(|c| format!("crd/{c}")).collect();
    let mut wait = vec!["wait", "--for=condition=Established", "--timeout=45s"];
    wait.extend(names.iter().map(String::as_str));
    cluster.kubectl(&wait);
    for name in CRDS {
        assert!(dir.join(format!("{name}.yaml")).is_file(), "manifests/crds/{name}.yaml is missing");
        let crd = cluster.get_json("default", &["crd", name]);
        assert_eq!(crd["spec"]["scope"], "Namespaced", "{name}");
        let versions = crd["spec"]["versions"].as_array().expect("versions");
        assert_eq!(versions.len(), 1, "{name}: {versions:#?}");
        let v = &versions[0];
        assert_eq!((&v["name"], &v["served"], &v["storage"]), (&json!("v1alpha1"), &json!(true), &json!(true)));
        assert_eq!(v["subresources"]["status"], json!({}), "{name}: no status subresource");
        let conditions = crd["status"]["conditions"].as_array().expect("conditions");
        for c in conditions {
            let good = matches!(c["type"].as_str(), Some("Established" | "NamesAccepted")) && c["status"] == "True";
            assert!(good, "{name} has the condition {c}");
        }
    }
}

/// What `kubectl apply` of a row's document does.
#[derive(Clone, Copy, Debug)]
enum Api {
    /// The API server stores it.
    Stores,
    /// kubectl fails, and its error names this (a field path).
    Refuses(&'static str),
}

/// What `policy::parse` does with the row's document.
#[derive(Clone, Copy, Debug)]
enum Parser {
    /// Accepted; and the object the API server stored (when it did) parses
    /// to the same resource.
    Accepts,
    /// Refused with an error containing this; so is the object the API
    /// server stored, when it did (the controller's `Accepted=False`).
    Refuses(&'static str),
    /// This spelling is refused with an error containing this, but the
    /// API server stores a plain JSON value that the parser accepts: kubectl
    /// and the parser read YAML differently. Only with [`Api::Stores`].
    RefusesSpelling(&'static str),
}

struct Case {
    what: &'static str,
    /// A YAML document; `$NAME` and `$NS` are replaced by the row's object
    /// name and the test's namespace.
    doc: String,
    api: Api,
    parser: Parser,
    /// Why the API server and the parser disagree; empty when they agree.
    why: &'static str,
}

impl Case {
    fn agree(&self) -> bool {
        matches!((self.api, self.parser), (Api::Stores, Parser::Accepts) | (Api::Refuses(_), Parser::Refuses(_)))
    }

    fn because(self, why: &'static str) -> Case {
        Case { why, ..self }
    }
}

fn case(what: &'static str, doc: String, api: Api, parser: Parser) -> Case {
    Case { what, doc, api, parser, why: "" }
}

/// Both refuse; `api` is the field path kubectl's error must name, `parser`
/// a fragment of the parser's error (which names the path its own way).
fn refused(what: &'static str, doc: String, api: &'static str, parser: &'static str) -> Case {
    case(what, doc, Api::Refuses(api), Parser::Refuses(parser))
}

/// Both accept.
fn accepted(what: &'static str, doc: String) -> Case {
    case(what, doc, Api::Stores, Parser::Accepts)
}

fn traffic(spec: &str) -> String {
    format!(
        "apiVersion: policy.weft.dev/v1alpha1
kind: TrafficPolicy
metadata: {{name: $NAME, namespace: $NS}}
spec:
{spec}"
    )
}

fn access(spec: &str) -> String {
    format!(
        "apiVersion: policy.weft.dev/v1alpha1
kind: AccessPolicy
metadata: {{name: $NAME, namespace: $NS}}
spec:
{spec}"
    )
}

/// A TrafficPolicy for the whole mesh with `field` (a line under `spec`).
fn mesh(field: &str) -> String {
    traffic(&format!("  targetRef: {{kind: Mesh}}\n  {field}\n"))
}

/// An AccessPolicy for Service `store` with `from: {}` and `target` as
/// its targetRef.
fn access_to(target: &str) -> String {
    access(&format!("  targetRef: {target}\n  from: {{}}\n"))
}

/// An AccessPolicy for Service `store` with `from` as its from.
fn access_from(from: &str) -> String {
    access(&format!("  targetRef: {{kind: Service, name: store}}\n  from: {from}\n"))
}

/// Every field of TrafficPolicy set (hashOn takes header or cookie: the
/// cookie is in the next row).
const TRAFFIC_FULL: &str = "apiVersion: policy.weft.dev/v1alpha1
kind: TrafficPolicy
metadata:
  name: $NAME
  namespace: $NS
  labels: {app: web}
  annotations: {weft.dev/owner: team-web}
spec:
  targetRef: {group: '', kind: Service, name: web}
  retries:
    attempts: 10
    retryOn: [5xx, gateway-error, connect-failure, reset, cancelled, deadline-exceeded, internal,
              resource-exhausted, unavailable, 429, '503']
    perTryTimeout: 500ms
    backoff: {base: 10ms, max: 1s, jitter: 0.25}
    budget: {ratio: 0.1, window: 10s, minRetriesPerSecond: 100000}
    allowNonIdempotent: true
    maxBodyBytes: 4294967295
  timeouts: {request: 10s, backendRequest: 2s, connect: 1s, idle: 1h}
  circuitBreaker: {consecutiveFailures: 1000, baseEjection: 30s, maxEjection: 5m, minSuccessRate: 1, window: 1m}
  loadBalancer: {type: consistentHash, hashOn: {header: X-User}}
  rateLimit: {requestsPerSecond: 1000000, burst: 1000000, perIdentity: true}
  faults:
    delay: {percent: 100, fixedDelay: 200ms}
    abort: {percent: 0, httpStatus: 599}
";

/// Every field of AccessPolicy set.
const ACCESS_FULL: &str = "apiVersion: policy.weft.dev/v1alpha1
kind: AccessPolicy
metadata:
  name: $NAME
  namespace: $NS
  labels: {app: store}
  annotations: {weft.dev/owner: team-data}
spec:
  targetRef: {group: core, kind: Service, name: store, port: 65535}
  mode: audit
  from:
    identities: ['spiffe://cluster.local/ns/batch/*', '*', 'spiffe://cluster.local/ns/web/sa/web']
    namespaces: [monitoring]
    serviceAccounts: [{name: web, namespace: default}, {name: loader}]
    unauthenticated: true
";

fn cases() -> Vec<Case> {
    let retry_codes = |n: u16| (500..500 + n).map(|c| c.to_string()).collect::<Vec<_>>().join(", ");
    let namespaces = |n: usize| (0..n).map(|i| format!("ns{i}")).collect::<Vec<_>>().join(", ");
    vec![
        // Valid documents.
        accepted("TrafficPolicy, minimal", mesh("timeouts: {request: 1s}")),
        accepted("TrafficPolicy, every field set", TRAFFIC_FULL.to_owned()),
        accepted(
            "TrafficPolicy for its own namespace, hashing on a cookie",
            traffic(
                "  targetRef: {group: core, kind: Namespace, name: $NS}
  loadBalancer: {type: consistentHash, hashOn: {cookie: session}}
",
            ),
        ),
        accepted(
            "TrafficPolicy for an HTTPRoute; request 0s (no bound) with a backendRequest",
            traffic(
                "  targetRef: {group: gateway.networking.k8s.io, kind: HTTPRoute, name: web-split}
  timeouts: {request: 0s, backendRequest: 5s}
  retries: {attempts: 0}
",
            ),
        ),
        accepted(
            "Mesh in Weft's group; durations at the grammar's limits",
            traffic(
                "  targetRef: {group: policy.weft.dev, kind: Mesh}
  timeouts: {request: 99999h, idle: 1h2m3s4ms, connect: 99999ms}
  retries: {budget: {window: 60s}}
",
            ),
        ),
        accepted(
            "loadBalancer without hashOn; fractions written as integers",
            mesh(
                "loadBalancer: {type: leastRequest}
  retries: {backoff: {jitter: 1}, budget: {ratio: 0, window: 1s}}",
            ),
        ),
        accepted("AccessPolicy, minimal (from: {} allows nobody)", access_to("{kind: Service, name: store}")),
        accepted("AccessPolicy, every field set", ACCESS_FULL.to_owned()),
        accepted(
            "AccessPolicy for an HTTPRoute, enforcing",
            access(
                "  targetRef: {group: gateway.networking.k8s.io, kind: HTTPRoute, name: web-split}
  mode: enforce
  from: {namespaces: [a, b-2]}
",
            ),
        ),
        accepted("AccessPolicy for port 1", access_to("{kind: Service, name: store, port: 1}")),
        // Numbers out of range, negative or not integers.
        refused(
            "negative attempts",
            mesh("retries: {attempts: -1}"),
            "spec.retries.attempts",
            "spec.retries.attempts: must not be negative",
        ),
        refused(
            "attempts over 10",
            mesh("retries: {attempts: 11}"),
            "spec.retries.attempts",
            "spec.retries.attempts: must be 0..=10, got 11",
        ),
        refused(
            "fractional attempts",
            mesh("retries: {attempts: 2.5}"),
            "spec.retries.attempts",
            "spec.retries.attempts: must be an integer 0..=10, got 2.5",
        ),
        case(
            "attempts written as a float",
            mesh("retries: {attempts: 3.0}"),
            Api::Stores,
            Parser::RefusesSpelling("spec.retries.attempts: must be an integer 0..=10, got 3"),
        )
        .because(
            "JSON has one number type: the API server stores 3.0 as 3 (integral), which the parser \
             reads. Only the file's spelling differs; the controller never sees 3.0",
        ),
        refused(
            "delay percent over 100",
            mesh("faults: {delay: {percent: 101, fixedDelay: 1s}}"),
            "spec.faults.delay.percent",
            "spec.faults.delay.percent: must be 0..=100, got 101",
        ),
        refused(
            "negative abort percent",
            mesh("faults: {abort: {percent: -5, httpStatus: 503}}"),
            "spec.faults.abort.percent",
            "spec.faults.abort.percent: must not be negative",
        ),
        refused(
            "abort status 600",
            mesh("faults: {abort: {percent: 5, httpStatus: 600}}"),
            "spec.faults.abort.httpStatus",
            "spec.faults.abort.httpStatus: must be 200..=599, got 600",
        ),
        refused(
            "abort status 199",
            mesh("faults: {abort: {percent: 5, httpStatus: 199}}"),
            "spec.faults.abort.httpStatus",
            "spec.faults.abort.httpStatus: must be 200..=599, got 199",
        ),
        refused(
            "jitter over 1",
            mesh("retries: {backoff: {jitter: 1.5}}"),
            "spec.retries.backoff.jitter",
            "spec.retries.backoff.jitter: must be 0.0..=1.0, got 1.5",
        ),
        refused(
            "negative budget ratio",
            mesh("retries: {budget: {ratio: -0.1}}"),
            "spec.retries.budget.ratio",
            "spec.retries.budget.ratio: must be 0.0..=1.0, got -0.1",
        ),
        refused(
            "minSuccessRate as a string",
            mesh("circuitBreaker: {minSuccessRate: '0.5'}"),
            "spec.circuitBreaker.minSuccessRate",
            "spec.circuitBreaker.minSuccessRate: invalid type: string",
        ),
        refused(
            "maxBodyBytes over u32",
            mesh("retries: {maxBodyBytes: 4294967296}"),
            "spec.retries.maxBodyBytes",
            "spec.retries.maxBodyBytes: must be 0..=4294967295",
        ),
        refused(
            "consecutiveFailures over 1000",
            mesh("circuitBreaker: {consecutiveFailures: 1001}"),
            "spec.circuitBreaker.consecutiveFailures",
            "spec.circuitBreaker.consecutiveFailures: must be 0..=1000",
        ),
        refused(
            "minRetriesPerSecond over 100000",
            mesh("retries: {budget: {minRetriesPerSecond: 100001}}"),
            "spec.retries.budget.minRetriesPerSecond",
            "spec.retries.budget.minRetriesPerSecond: must be 0..=100000",
        ),
        refused(
            "requestsPerSecond 0",
            traffic("  targetRef: {kind: Service, name: web}\n  rateLimit: {requestsPerSecond: 0}\n"),
            "spec.rateLimit.requestsPerSecond",
            "spec.rateLimit.requestsPerSecond: must be 1..=1000000, got 0",
        ),
        refused(
            "burst over a million",
            traffic("  targetRef: {kind: Service, name: web}\n  rateLimit: {requestsPerSecond: 5, burst: 1000001}\n"),
            "spec.rateLimit.burst",
            "spec.rateLimit.burst: must be 1..=1000000",
        ),
        refused(
            "port 0",
            access_to("{kind: Service, name: store, port: 0}"),
            "spec.targetRef.port",
            "spec.targetRef.port: must be 1..=65535, got 0",
        ),
        refused(
            "port 65536",
            access_to("{kind: Service, name: store, port: 65536}"),
            "spec.targetRef.port",
            "spec.targetRef.port: must be 1..=65535, got 65536",
        ),
        // Durations: the Gateway API grammar, nothing else.
        refused(
            "duration `5 seconds`",
            mesh("retries: {perTryTimeout: 5 seconds}"),
            "spec.retries.perTryTimeout",
            "spec.retries.perTryTimeout: `5 seconds` is not a Gateway API duration",
        ),
        refused(
            "fractional duration",
            mesh("timeouts: {request: 1.5s}"),
            "spec.timeouts.request",
            "spec.timeouts.request: `1.5s` is not a Gateway API duration",
        ),
        refused(
            "negative duration",
            mesh("retries: {backoff: {base: -1s}}"),
            "spec.retries.backoff.base",
            "spec.retries.backoff.base: `-1s` is not a Gateway API duration",
        ),
        refused(
            "empty duration",
            mesh("timeouts: {idle: ''}"),
            "spec.timeouts.idle",
            "spec.timeouts.idle: `` is not a Gateway API duration",
        ),
        refused(
            "duration in days",
            mesh("circuitBreaker: {baseEjection: 1d}"),
            "spec.circuitBreaker.baseEjection",
            "spec.circuitBreaker.baseEjection: `1d` is not a Gateway API duration",
        ),
        refused(
            "duration of five parts",
            mesh("timeouts: {request: 1h1m1s1ms1ms}"),
            "spec.timeouts.request",
            "spec.timeouts.request: `1h1m1s1ms1ms` is not a Gateway API duration",
        ),
        refused(
            "duration with six digits",
            mesh("faults: {delay: {percent: 1, fixedDelay: 100000ms}}"),
            "spec.faults.delay.fixedDelay",
            "spec.faults.delay.fixedDelay: `100000ms` is not a Gateway API duration",
        ),
        refused(
            "duration without a unit",
            mesh("circuitBreaker: {window: 10}"),
            "spec.circuitBreaker.window",
            "spec.circuitBreaker.window: `10` is not a Gateway API duration",
        ),
        // Cross-field rules: CEL on the schema's side.
        refused(
            "backoff base over max",
            mesh("retries: {backoff: {base: 2s, max: 1s}}"),
            "spec.retries.backoff.base",
            "spec.retries.backoff: base: 2s must not exceed max (1s)",
        ),
        refused(
            "baseEjection over maxEjection",
            mesh("circuitBreaker: {baseEjection: 1m, maxEjection: 59s}"),
            "spec.circuitBreaker.baseEjection",
            "spec.circuitBreaker: baseEjection: 1m must not exceed maxEjection (59s)",
        ),
        refused(
            "budget window under 1s",
            mesh("retries: {budget: {window: 999ms}}"),
            "spec.retries.budget.window",
            "spec.retries.budget: window: must be 1s..=60s, got 999ms",
        ),
        refused(
            "budget window over 60s",
            mesh("retries: {budget: {window: 1m1s}}"),
            "spec.retries.budget.window",
            "spec.retries.budget: window: must be 1s..=60s, got 1m1s",
        ),
        refused(
            "backendRequest over request",
            mesh("timeouts: {request: 1s, backendRequest: 1001ms}"),
            "spec.timeouts.backendRequest",
            "spec.timeouts: backendRequest: 1001ms must not exceed request (1s)",
        ),
        refused(
            "connect timeout 0",
            mesh("timeouts: {connect: 0ms}"),
            "spec.timeouts.connect",
            "spec.timeouts: connect: must be greater than 0s",
        ),
        refused(
            "Service target without a name",
            traffic("  targetRef: {kind: Service}\n  timeouts: {request: 1s}\n"),
            "spec.targetRef.name",
            "spec.targetRef: name: required for kind Service",
        ),
        refused(
            "Mesh target with a name",
            traffic("  targetRef: {kind: Mesh, name: web}\n  timeouts: {request: 1s}\n"),
            "spec.targetRef.name",
            "spec.targetRef: name: must not be set for kind Mesh",
        ),
        refused(
            "Service target in the Gateway API group",
            traffic(
                "  targetRef: {group: gateway.networking.k8s.io, kind: Service, name: web}
  timeouts: {request: 1s}
",
            ),
            "spec.targetRef.group",
            "spec.targetRef: group: `gateway.networking.k8s.io` does not fit kind Service",
        ),
        refused(
            "rateLimit on an HTTPRoute",
            traffic(
                "  targetRef: {group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}
  rateLimit: {requestsPerSecond: 5}
",
            ),
            "spec.rateLimit",
            "spec: rateLimit: is enforced per Service port",
        ),
        refused(
            "a policy that sets nothing",
            traffic("  targetRef: {kind: Service, name: web}\n"),
            "spec: Invalid value",
            "spec: sets nothing",
        ),
        refused(
            "consistentHash without hashOn",
            mesh("loadBalancer: {type: consistentHash}"),
            "spec.loadBalancer.hashOn",
            "spec.loadBalancer: hashOn: required when type is consistentHash",
        ),
        refused(
            "hashOn without consistentHash",
            mesh("loadBalancer: {type: ewma, hashOn: {header: x-user}}"),
            "spec.loadBalancer.hashOn",
            "spec.loadBalancer: hashOn: only used when type is consistentHash",
        ),
        refused(
            "hashOn on both header and cookie",
            mesh("loadBalancer: {type: consistentHash, hashOn: {header: x-user, cookie: session}}"),
            "spec.loadBalancer.hashOn",
            "spec.loadBalancer.hashOn: set exactly one of header and cookie",
        ),
        refused(
            "hashOn an empty cookie",
            mesh("loadBalancer: {type: consistentHash, hashOn: {cookie: ''}}"),
            "spec.loadBalancer.hashOn.cookie",
            "spec.loadBalancer.hashOn: set exactly one of header and cookie",
        ),
        refused(
            "hashOn a header name with a space",
            mesh("loadBalancer: {type: consistentHash, hashOn: {header: x user}}"),
            "spec.loadBalancer.hashOn.header",
            "spec.loadBalancer.hashOn.header: `x user` is not a valid HTTP header name",
        ),
        refused(
            "faults without delay or abort",
            mesh("faults: {}"),
            "spec.faults",
            "spec.faults: set delay, abort or both",
        ),
        refused(
            "retryOn naming a code twice, as a number and as text",
            mesh("retries: {retryOn: [503, '503']}"),
            "spec.retries.retryOn",
            "spec.retries: retryOn: `503` appears more than once",
        ),
        refused(
            "retryOn with 33 entries",
            mesh(&format!("retries: {{retryOn: [{}]}}", retry_codes(33))),
            "spec.retries.retryOn",
            "spec.retries: retryOn: at most 32 entries, got 33",
        ),
        refused(
            "AccessPolicy port on an HTTPRoute",
            access_to("{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r, port: 80}"),
            "spec.targetRef.port",
            "spec.targetRef: port: only for kind Service",
        ),
        refused(
            "AccessPolicy HTTPRoute target in the core group",
            access_to("{group: core, kind: HTTPRoute, name: r}"),
            "spec.targetRef.group",
            "spec.targetRef: group: `core` does not fit kind HttpRoute",
        ),
        refused(
            "65 namespaces",
            access_from(&format!("{{namespaces: [{}]}}", namespaces(65))),
            "spec.from.namespaces",
            "spec.from: namespaces: at most 64 entries, got 65",
        ),
        case(
            "TrafficPolicy targeting another namespace",
            traffic("  targetRef: {kind: Namespace, name: other}\n  timeouts: {request: 1s}\n"),
            Api::Stores,
            Parser::Refuses("spec.targetRef.name: a TrafficPolicy in namespace"),
        )
        .because(
            "the rule compares spec.targetRef.name with metadata.namespace, and CEL on a CRD sees \
             only metadata.name and generateName: the controller reports it as Accepted=False",
        ),
        // Enums.
        refused(
            "retryOn: [sometimes]",
            mesh("retries: {retryOn: [5xx, sometimes]}"),
            "spec.retries.retryOn[1]",
            "spec.retries.retryOn[1]: `sometimes` is not a retry condition",
        ),
        refused(
            "retryOn status 99",
            mesh("retries: {retryOn: [99]}"),
            "spec.retries.retryOn[0]",
            "spec.retries.retryOn[0]: `99` is not a retry condition",
        ),
        refused(
            "retryOn status '600'",
            mesh("retries: {retryOn: ['600']}"),
            "spec.retries.retryOn[0]",
            "spec.retries.retryOn[0]: `600` is not a retry condition",
        ),
        refused(
            "retryOn status '+503'",
            mesh("retries: {retryOn: ['+503']}"),
            "spec.retries.retryOn[0]",
            "spec.retries.retryOn[0]: `+503` is not a retry condition",
        ),
        refused(
            "targetRef kind Pod",
            traffic("  targetRef: {kind: Pod, name: web}\n  timeouts: {request: 1s}\n"),
            "spec.targetRef.kind",
            "spec.targetRef.kind: unknown variant `Pod`",
        ),
        refused(
            "AccessPolicy targetRef kind Namespace",
            access_to("{kind: Namespace, name: store}"),
            "spec.targetRef.kind",
            "spec.targetRef.kind: unknown variant `Namespace`",
        ),
        refused(
            "loadBalancer type random",
            mesh("loadBalancer: {type: random}"),
            "spec.loadBalancer.type",
            "spec.loadBalancer.type: unknown variant `random`",
        ),
        refused(
            "mode: maybe",
            access("  targetRef: {kind: Service, name: store}\n  mode: maybe\n  from: {}\n"),
            "spec.mode",
            "spec.mode: unknown variant `maybe`",
        ),
        // Names, identities, other strings.
        refused(
            "an upper-case target name",
            traffic("  targetRef: {kind: Service, name: Web}\n  timeouts: {request: 1s}\n"),
            "spec.targetRef.name",
            "spec.targetRef.name: `Web` is not a DNS label",
        ),
        refused(
            "a 64-character target name",
            access_to(&format!("{{kind: Service, name: {}}}", "a".repeat(64))),
            "spec.targetRef.name",
            "is not a DNS label",
        ),
        case(
            "an unquoted number as the target name",
            traffic("  targetRef: {kind: Service, name: 123}\n  timeouts: {request: 1s}\n"),
            Api::Refuses("spec.targetRef.name"),
            Parser::Accepts,
        )
        .because(
            "the parser reads a plain scalar as text where it wants a string, on purpose \
             (control/src/policy/de.rs deserialize_text); the API server never stores a number there",
        ),
        refused(
            "an invalid object name",
            "apiVersion: policy.weft.dev/v1alpha1
kind: AccessPolicy
metadata: {name: Web_Policy, namespace: $NS}
spec: {targetRef: {kind: Service, name: web}, from: {}}
"
            .to_owned(),
            "metadata.name",
            "metadata.name: `Web_Policy` is not a valid name",
        ),
        refused(
            "an identity that is not a SPIFFE ID",
            access_from("{identities: [web.default]}"),
            "spec.from.identities[0]",
            "spec.from.identities[0]: `web.default` is not an identity pattern",
        ),
        refused(
            "an identity with an empty path segment",
            access_from("{identities: ['spiffe://cluster.local/ns//sa/web']}"),
            "spec.from.identities[0]",
            "spec.from.identities[0]: `spiffe://cluster.local/ns//sa/web` is not an identity pattern",
        ),
        refused(
            "an identity with a * inside",
            access_from("{identities: ['spiffe://cluster.local/ns/b*/sa/web']}"),
            "spec.from.identities[0]",
            "is not an identity pattern",
        ),
        refused(
            "an identity with no trust domain",
            access_from("{identities: ['spiffe:///ns/batch/sa/web']}"),
            "spec.from.identities[0]",
            "is not an identity pattern",
        ),
        refused(
            "a namespace with an underscore",
            access_from("{namespaces: [team_a]}"),
            "spec.from.namespaces[0]",
            "spec.from.namespaces[0]: `team_a` is not a DNS label",
        ),
        refused(
            "perIdentity as a string",
            traffic(
                "  targetRef: {kind: Service, name: web}
  rateLimit: {requestsPerSecond: 5, perIdentity: 'true'}
",
            ),
            "spec.rateLimit.perIdentity",
            "spec.rateLimit.perIdentity: invalid type: string",
        ),
        case(
            "allowNonIdempotent: yes",
            mesh("retries: {allowNonIdempotent: yes}"),
            Api::Stores,
            Parser::RefusesSpelling("spec.retries.allowNonIdempotent: invalid type: string \"yes\""),
        )
        .because(
            "kubectl reads YAML 1.1, where `yes` is true, and sends true; the parser reads YAML 1.2, \
             where it is a string. The API server stores true, which the parser reads",
        ),
        // Unknown fields.
        refused(
            "unknown field at the top of spec",
            mesh("retires: {attempts: 3}"),
            "unknown field \"spec.retires\"",
            "spec: unknown field `retires`",
        ),
        refused(
            "unknown field nested in spec",
            mesh("retries: {attempts: 3, backoff: {base: 1s, maximum: 2s}}"),
            "unknown field \"spec.retries.backoff.maximum\"",
            "spec.retries.backoff: unknown field `maximum`",
        ),
        refused(
            "unknown field in a list item",
            access_from("{serviceAccounts: [{name: web, ns: default}]}"),
            "unknown field \"spec.from.serviceAccounts[0].ns\"",
            "spec.from.serviceAccounts[0]: unknown field `ns`",
        ),
        refused(
            "unknown field beside spec",
            format!("{}specs: {{}}\n", mesh("timeouts: {request: 1s}")),
            "unknown field \"specs\"",
            "unknown field `specs`",
        ),
        refused(
            "unknown field in metadata",
            "apiVersion: policy.weft.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: $NAME, namespace: $NS, lables: {app: web}}
spec: {targetRef: {kind: Mesh}, timeouts: {request: 1s}}
"
            .to_owned(),
            "unknown field \"metadata.lables\"",
            "metadata: unknown field `lables`",
        ),
        // Missing required fields.
        refused(
            "no spec",
            "apiVersion: policy.weft.dev/v1alpha1
kind: AccessPolicy
metadata: {name: $NAME, namespace: $NS}
"
            .to_owned(),
            "spec: Required value",
            "missing field `spec`",
        ),
        refused(
            "no targetRef",
            traffic("  timeouts: {request: 1s}\n"),
            "spec.targetRef: Required value",
            "spec: missing field `targetRef`",
        ),
        refused(
            "targetRef without a kind",
            traffic("  targetRef: {name: web}\n  timeouts: {request: 1s}\n"),
            "spec.targetRef.kind: Required value",
            "spec.targetRef: missing field `kind`",
        ),
        refused(
            "loadBalancer without a type",
            mesh("loadBalancer: {hashOn: {header: x-user}}"),
            "spec.loadBalancer.type: Required value",
            "spec.loadBalancer: missing field `type`",
        ),
        refused(
            "rateLimit without requestsPerSecond",
            traffic("  targetRef: {kind: Service, name: web}\n  rateLimit: {burst: 10}\n"),
            "spec.rateLimit.requestsPerSecond: Required value",
            "spec.rateLimit: missing field `requestsPerSecond`",
        ),
        refused(
            "delay without fixedDelay",
            mesh("faults: {delay: {percent: 5}}"),
            "spec.faults.delay.fixedDelay: Required value",
            "spec.faults.delay: missing field `fixedDelay`",
        ),
        refused(
            "abort without httpStatus",
            mesh("faults: {abort: {percent: 5}}"),
            "spec.faults.abort.httpStatus: Required value",
            "spec.faults.abort: missing field `httpStatus`",
        ),
        refused(
            "AccessPolicy without from",
            access("  targetRef: {kind: Service, name: store}\n"),
            "spec.from: Required value",
            "spec: missing field `from`",
        ),
        refused(
            "AccessPolicy targetRef without a name",
            access("  targetRef: {kind: Service}\n  from: {}\n"),
            "spec.targetRef.name: Required value",
            "spec.targetRef: missing field `name`",
        ),
        refused(
            "service account without a name",
            access_from("{serviceAccounts: [{namespace: default}]}"),
            "spec.from.serviceAccounts[0].name: Required value",
            "spec.from.serviceAccounts[0]: missing field `name`",
        ),
    ]
}

/// The stored object as its author would have written it: apiVersion,
/// kind, spec, and the metadata the parser reads (name, namespace, labels,
/// annotations but kubectl's own). Status is dropped (the parser ignores it).
fn as_written(stored: &Value) -> Value {
    let meta = &stored["metadata"];
    let mut out = Map::new();
    for key in ["name", "namespace", "labels"] {
        if let Some(v) = meta.get(key) {
            out.insert(key.to_owned(), v.clone());
        }
    }
    if let Some(Value::Object(annotations)) = meta.get("annotations") {
        let ours: Map<String, Value> = annotations
            .iter()
            .filter(|(k, _)| !k.starts_with("kubectl.kubernetes.io/"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !ours.is_empty() {
            out.insert("annotations".to_owned(), Value::Object(ours));
        }
    }
    json!({"apiVersion": stored["apiVersion"], "kind": stored["kind"], "metadata": out, "spec": stored["spec"]})
}

/// Runs one row; `Err` says every way it went other than the row says.
fn check(cluster: &KubeCluster, ns: &str, i: usize, case: &Case) -> Result<(), String> {
    let name = format!("row-{i:02}");
    let text = case.doc.replace("$NAME", &name).replace("$NS", ns);
    let mut wrong = Vec::new();
    if case.agree() != case.why.is_empty() {
        wrong.push(if case.agree() {
            "the API server and the parser agree, yet the row says why they do not".to_owned()
        } else {
            "the API server and the parser disagree: the row must say why".to_owned()
        });
    }
    if matches!((case.api, case.parser), (Api::Refuses(_), Parser::RefusesSpelling(_))) {
        wrong.push("RefusesSpelling is about what the API server stores; it refused".to_owned());
    }

    // The parser, on the document as written.
    let parsed = policy::parse(&text);
    match (case.parser, &parsed) {
        (Parser::Accepts, Ok(_)) => {}
        (Parser::Refuses(want) | Parser::RefusesSpelling(want), Err(e)) if e.to_string().contains(want) => {}
        (Parser::Refuses(want) | Parser::RefusesSpelling(want), Err(e)) => {
            wrong.push(format!("parser: refused, but not with `{want}`: {e}"));
        }
        (Parser::Refuses(want) | Parser::RefusesSpelling(want), Ok(_)) => {
            wrong.push(format!("parser: accepted; want refused with `{want}`"));
        }
        (Parser::Accepts, Err(e)) => wrong.push(format!("parser: refused: {e}")),
    }

    // The API server.
    let path = cluster.dir().join(format!("{ns}-{name}.yaml"));
    std::fs::write(&path, &text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    let run = cluster.try_kubectl(&["apply", "-n", ns, "-f", path.to_str().expect("UTF-8 path")], KUBECTL_TIMEOUT);
    let said = run.stderr.trim();
    match case.api {
        Api::Refuses(_) if run.status.success() => {
            wrong.push(format!("API server: stored it: {}", run.stdout.trim()));
        }
        Api::Refuses(field) if !said.contains(field) => {
            wrong.push(format!("API server: refused, but its error does not name `{field}`: {said}"));
        }
        Api::Refuses(_) => {}
        Api::Stores if !run.status.success() => wrong.push(format!("API server: refused: {said}")),
        Api::Stores => {
            // What the controller will read: the stored object.
            let kind = text.lines().find_map(|l| l.strip_prefix("kind: ")).expect("a kind line");
            let stored = cluster.get_json(ns, &[kind, &name]);
            let json = serde_json::to_string_pretty(&as_written(&stored)).expect("JSON");
            let reparsed = policy::parse(&json);
            match (case.parser, &reparsed, &parsed) {
                (Parser::Accepts, Ok(again), Ok(first)) if again == first => {}
                (Parser::Accepts, Ok(_), Ok(_)) => {
                    wrong.push(format!("the stored object parses to another resource:\n{json}"));
                }
                // The document itself was refused: reported above.
                (Parser::Accepts, Ok(_), Err(_)) => {}
                (Parser::RefusesSpelling(_), Ok(_), _) => {}
                (Parser::Refuses(want), Err(e), _) if e.to_string().contains(want) => {}
                (_, Err(e), _) => wrong.push(format!("the stored object does not parse: {e}\n{json}")),
                (_, Ok(_), _) => wrong.push(format!("the stored object parses; want it refused:\n{json}")),
            }
        }
    }
    if wrong.is_empty() { Ok(()) } else { Err(format!("{name} {}:\n  {}\n{text}", case.what, wrong.join("\n  "))) }
}

/// The table: for every document, what the API server does with the CRDs'
/// schemas and what Weft's parser does, and the error of each names the
/// field. Every row runs, then every wrong row is reported.
#[test]
fn the_api_server_and_the_parser_refuse_the_same_documents() {
    let cluster = KubeCluster::shared();
    install_crds(cluster);
    let ns = cluster.namespace("crds");
    let cases = cases();
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        if let Err(why) = check(cluster, &ns, i, case) {
            failures.push(why);
        }
    }
    let disagree: Vec<String> =
        cases.iter().filter(|c| !c.agree()).map(|c| format!("  {}: {}", c.what, c.why)).collect();
    eprintln!(
        "{} rows; the API server and the parser disagree on {}:\n{}",
        cases.len(),
        disagree.len(),
        disagree.join("\n")
    );
    assert!(
        failures.is_empty(),
        "{} of {} rows went otherwise:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

/// Unknown fields: kubectl's default `--validate=strict` has the API server
/// refuse them, naming each; with validation off, the structural schema
/// prunes them and stores the rest.
#[test]
fn unknown_fields_are_refused_by_kubectl_and_pruned_from_what_is_stored() {
    let cluster = KubeCluster::shared();
    install_crds(cluster);
    let ns = cluster.namespace("prune");
    let doc = format!(
        "apiVersion: policy.weft.dev/v1alpha1
kind: TrafficPolicy
metadata: {{name: typos, namespace: {ns}}}
spec:
  targetRef: {{kind: Service, name: web, port: 80}}
  retries: {{attempts: 2, retryOnn: [5xx]}}
  timeout: {{request: 1s}}
"
    );
    let path = cluster.dir().join(format!("{ns}-typos.yaml"));
    std::fs::write(&path, &doc).expect("writing the manifest");
    let path = path.to_str().expect("UTF-8 path");

    let run = cluster.try_kubectl(&["apply", "-n", &ns, "-f", path], KUBECTL_TIMEOUT);
    assert!(!run.status.success(), "stored with unknown fields:\n{run}");
    for field in ["spec.targetRef.port", "spec.retries.retryOnn", "spec.timeout"] {
        assert!(run.stderr.contains(&format!("unknown field \"{field}\"")), "`{field}` is not named:\n{run}");
    }
    let e = policy::parse(&doc).expect_err("the parser took unknown fields");
    assert!(e.to_string().contains("spec.targetRef: unknown field `port`"), "{e}");

    cluster.kubectl(&["apply", "--validate=false", "-n", &ns, "-f", path]);
    let stored = cluster.get_json(&ns, &["trafficpolicy", "typos"]);
    assert_eq!(
        stored["spec"],
        json!({"targetRef": {"kind": "Service", "name": "web"}, "retries": {"attempts": 2}}),
        "not pruned to the schema's fields"
    );
}

/// The status subresource: `status` in an applied document is ignored, the
/// control plane's `Accepted` condition is written through
/// `--subresource=status` and checked against metav1.Condition's schema,
/// and `kubectl get` shows it in the printer columns.
#[test]
fn accepted_condition_goes_through_the_status_subresource_and_shows_in_kubectl_get() {
    let cluster = KubeCluster::shared();
    install_crds(cluster);
    let ns = cluster.namespace("status");
    cluster.apply(
        &ns,
        "apiVersion: policy.weft.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: web-retries}
spec:
  targetRef: {kind: Service, name: web}
  retries: {attempts: 3}
status:
  conditions:
    - {type: Accepted, status: 'True', reason: Forged, message: '', lastTransitionTime: '2025-01-01T00:00:00Z'}
---
apiVersion: policy.weft.dev/v1alpha1
kind: AccessPolicy
metadata: {name: store-from-web}
spec:
  targetRef: {kind: Service, name: store, port: 6379}
  from: {serviceAccounts: [{name: web}]}
",
    );
    let tp = cluster.get_json(&ns, &["trafficpolicy", "web-retries"]);
    assert!(tp["status"].is_null(), "status was written through the main resource: {tp:#}");
    let generation = tp["metadata"]["generation"].as_i64().expect("a generation");

    let accepted = |status: &str, reason: &str| {
        json!({"status": {"conditions": [{
            "type": "Accepted", "status": status, "reason": reason, "message": "",
            "lastTransitionTime": "2025-01-01T00:00:00Z", "observedGeneration": generation,
        }]}})
        .to_string()
    };
    let status_patch = |kind: &str, name: &str, patch: &str| {
        cluster.try_kubectl(
            &["patch", kind, name, "-n", &ns, "--subresource=status", "--type=merge", "-p", patch],
            KUBECTL_TIMEOUT,
        )
    };
    let run = status_patch("trafficpolicy", "web-retries", &accepted("True", "Accepted"));
    assert!(run.status.success(), "{run}");
    let run = status_patch("accesspolicy", "store-from-web", &accepted("False", "TargetNotFound"));
    assert!(run.status.success(), "{run}");
    let tp = cluster.get_json(&ns, &["trafficpolicy", "web-retries"]);
    assert_eq!(tp["status"]["conditions"][0]["observedGeneration"], generation, "{tp:#}");
    assert_eq!(tp["metadata"]["generation"], generation, "a status write changed the generation");

    // A condition that is not a metav1.Condition is refused, naming the field.
    let run = status_patch("trafficpolicy", "web-retries", &accepted("Maybe", "Accepted"));
    assert!(!run.status.success(), "stored status Maybe:\n{run}");
    assert!(run.stderr.contains("status.conditions[0].status"), "{run}");
    let run = status_patch("trafficpolicy", "web-retries", &accepted("True", ""));
    assert!(!run.status.success(), "stored an empty reason:\n{run}");
    assert!(run.stderr.contains("status.conditions[0].reason"), "{run}");

    // Printer columns: the header, then the row, of each kind.
    let table = |kind: &str| -> Vec<Vec<String>> {
        let run = cluster.kubectl(&["get", kind, "-n", &ns]);
        run.stdout
            .lines()
            .map(|l| l.split("  ").map(str::trim).filter(|w| !w.is_empty()).map(str::to_owned).collect())
            .collect()
    };
    let tps = table("trafficpolicies");
    assert_eq!(tps[0], ["NAME", "TARGET KIND", "TARGET", "ACCEPTED", "AGE"], "{tps:?}");
    assert_eq!(tps[1][..4], ["web-retries", "Service", "web", "True"], "{tps:?}");
    let aps = table("accesspolicies");
    assert_eq!(aps[0], ["NAME", "TARGET KIND", "TARGET", "PORT", "MODE", "ACCEPTED", "AGE"], "{aps:?}");
    assert_eq!(aps[1][..6], ["store-from-web", "Service", "store", "6379", "enforce", "False"], "{aps:?}");
}
