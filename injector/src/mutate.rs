//! The injection decision: a pure function of the Pod, its Namespace and
//! the injector's settings, table-tested.
//!
//! | input | decision |
//! | --- | --- |
//! | namespace kube-system, kube-public, kube-node-lease or Weft's own | skip |
//! | `hostNetwork: true` | skip (its traffic is the node's) |
//! | a `weft-proxy`, `linkerd-proxy` or `istio-proxy` container already | skip (idempotent; one mesh per pod) |
//! | Pod annotation or label `weft.dev/inject`: `enabled` / `disabled` | that (the Pod wins) |
//! | else the Namespace's `weft.dev/inject` label or annotation | that |
//! | else | skip |
//!
//! Injecting adds, in this order, before the Pod's own init containers:
//! `weft-init` (`weft-proxy init`, NET_ADMIN and NET_RAW only) and the
//! proxy `weft-proxy` as a native sidecar (an init container with
//! `restartPolicy: Always` and a startup probe on `/ready`, so the app
//! starts once the proxy is ready and Jobs still complete) — or, on
//! clusters older than 1.29 ([`Sidecar::Classic`]), as the Pod's first
//! container with a `postStart` hook (`weft-proxy await`); a projected
//! service-account token (audience `weft`) for its identity; and the
//! annotation `weft.dev/injected-version`.

use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, ExecAction, HTTPGetAction, Lifecycle,
    LifecycleHandler, ObjectFieldSelector, Probe, ProjectedVolumeSource, ResourceRequirements, SecurityContext,
    ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Value, json};

use crate::patch::{Op, escape};

/// The label or annotation that turns injection on or off.
pub const INJECT: &str = "weft.dev/inject";
/// Recorded on every injected Pod.
pub const INJECTED_VERSION: &str = "weft.dev/injected-version";
/// Pod annotations that shape what is injected.
pub const SKIP_INBOUND_PORTS: &str = "config.weft.dev/skip-inbound-ports";
pub const SKIP_OUTBOUND_PORTS: &str = "config.weft.dev/skip-outbound-ports";
pub const OPAQUE_PORTS: &str = "config.weft.dev/opaque-ports";
pub const PROXY_CPU_REQUEST: &str = "config.weft.dev/proxy-cpu-request";
pub const PROXY_MEMORY_REQUEST: &str = "config.weft.dev/proxy-memory-request";
pub const PROXY_MEMORY_LIMIT: &str = "config.weft.dev/proxy-memory-limit";

pub const PROXY_CONTAINER: &str = "weft-proxy";
pub const INIT_CONTAINER: &str = "weft-init";
const TOKEN_VOLUME: &str = "weft-identity-token";
const TOKEN_DIR: &str = "/var/run/secrets/weft.dev/identity";
const PROXY_UID: i64 = 2102;
/// The proxy's admin port. Bound on every address in a Pod so that the
/// kubelet can probe `/ready` and `/live`; the admin server still refuses
/// `/shutdown` and `/config` to any peer but loopback, and `weft-init`
/// never redirects it.
const ADMIN_PORT: i32 = 4191;
/// The proxy's tap server (gRPC over mTLS, only the control plane may call).
const TAP_PORT: i32 = 4190;
/// Containers of other meshes: a Pod has one proxy.
const OTHER_PROXIES: &[&str] = &["linkerd-proxy", "istio-proxy"];
const SYSTEM_NAMESPACES: &[&str] = &["kube-system", "kube-public", "kube-node-lease"];

/// What the injector puts in Pods.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The image holding `weft-proxy` (both the init and the sidecar run it).
    pub proxy_image: String,
    /// `https://weft-control.weft-system.svc:8090`.
    pub control_plane: String,
    /// The name the control plane's certificate is checked against.
    pub control_plane_name: String,
    pub trust_domain: String,
    /// Weft's own namespace: never injected.
    pub own_namespace: String,
    /// Recorded as `weft.dev/injected-version`.
    pub version: String,
    /// Lifetime of the projected identity token.
    pub token_seconds: i64,
    /// The mesh's trust anchors (PEM), which the proxy pins for the
    /// control plane's TLS; given to it as `WEFT_PROXY_TRUST_ANCHORS_PEM`.
    pub trust_anchors_pem: Option<String>,
    /// The proxy's resources and log filter where the Pod names none.
    pub proxy: ProxyDefaults,
    /// How the proxy runs beside the app.
    pub sidecar: Sidecar,
}

/// How the proxy container runs beside the app's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Sidecar {
    /// An init container with `restartPolicy: Always` (Kubernetes ≥ 1.29):
    /// started before the app, which waits for its startup probe; it does
    /// not keep a Job from completing.
    #[default]
    Native,
    /// The first of the Pod's containers, whose `postStart` hook
    /// (`weft-proxy await`) holds the next containers back until the proxy
    /// is ready: for clusters older than 1.29. A Job's Pod then never
    /// completes on its own (the proxy keeps running).
    Classic,
}

impl Sidecar {
    /// The mode for a cluster at `major.minor` (as `/version` reports them:
    /// the minor may carry a `+`).
    pub fn for_version(major: &str, minor: &str) -> Sidecar {
        let number = |s: &str| s.trim_end_matches('+').parse::<u32>().ok();
        match (number(major), number(minor)) {
            (Some(1), Some(minor)) if minor < 29 => Sidecar::Classic,
            (Some(0), _) => Sidecar::Classic,
            _ => Sidecar::Native,
        }
    }
}

/// What every injected proxy gets unless its Pod's annotations say
/// otherwise (`config.weft.dev/proxy-*`); the chart's `proxy` values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyDefaults {
    /// Kubernetes quantities.
    pub cpu_request: String,
    pub memory_request: String,
    pub memory_limit: String,
    /// `WEFT_PROXY_LOG` (tracing EnvFilter syntax); none: the proxy's own
    /// default.
    pub log: Option<String>,
}

impl Default for ProxyDefaults {
    fn default() -> Self {
        Self { cpu_request: "50m".into(), memory_request: "32Mi".into(), memory_limit: "256Mi".into(), log: None }
    }
}

/// Whether `s` is a Kubernetes quantity (`100m`, `64Mi`, `1.5`, `2e3`):
/// a non-negative decimal number with an optional binary (Ki … Ei), decimal
/// (m, k, M … E) or exponent suffix. A Pod patched with anything else
/// would be refused by the API server, so the injector checks its own
/// defaults at start.
pub fn is_quantity(s: &str) -> bool {
    let end = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, suffix) = s.split_at(end);
    let number_ok = number.matches('.').count() <= 1 && number.bytes().any(|b| b.is_ascii_digit());
    let digits = |e: &str| !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit());
    let suffix_ok = match suffix {
        "" | "m" | "k" | "M" | "G" | "T" | "P" | "E" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" => true,
        exponent => {
            exponent.strip_prefix(['e', 'E']).map(|e| e.strip_prefix(['+', '-']).unwrap_or(e)).is_some_and(digits)
        }
    };
    number_ok && suffix_ok
}

/// The Namespace as the decision needs it.
#[derive(Clone, Debug, Default)]
pub struct NamespaceInfo {
    pub name: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub annotations: std::collections::BTreeMap<String, String>,
}

/// The decision.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    Inject(Vec<Op>),
    Skip(String),
}

fn meta_value<'a>(obj: &'a Value, section: &str, key: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(section)?.get(key)?.as_str()
}

/// `Some(true)` for `enabled`, `Some(false)` for `disabled`.
fn switch(v: Option<&str>) -> Option<bool> {
    match v? {
        "enabled" => Some(true),
        "disabled" => Some(false),
        _ => None,
    }
}

/// The decision for `pod` (the object as admitted: it may lack its name
/// and namespace) in `ns`.
pub fn mutate(pod: &Value, ns: &NamespaceInfo, s: &Settings) -> Decision {
    if SYSTEM_NAMESPACES.contains(&ns.name.as_str()) || ns.name == s.own_namespace {
        return Decision::Skip(format!("namespace {} is never injected", ns.name));
    }
    let spec = pod.get("spec").cloned().unwrap_or(Value::Null);
    if spec.get("hostNetwork").and_then(Value::as_bool) == Some(true) {
        return Decision::Skip("hostNetwork pods share the node's network".into());
    }
    let names = |field: &str| -> Vec<String> {
        spec.get(field)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| c.get("name")?.as_str().map(str::to_owned))
            .collect()
    };
    let all: Vec<String> = names("containers").into_iter().chain(names("initContainers")).collect();
    if all.iter().any(|n| n == PROXY_CONTAINER) {
        return Decision::Skip("already injected".into());
    }
    if let Some(other) = all.iter().find(|n| OTHER_PROXIES.contains(&n.as_str())) {
        return Decision::Skip(format!("the pod already runs {other}"));
    }
    let pod_says = switch(meta_value(pod, "annotations", INJECT)).or(switch(meta_value(pod, "labels", INJECT)));
    let ns_says =
        switch(ns.labels.get(INJECT).map(String::as_str)).or(switch(ns.annotations.get(INJECT).map(String::as_str)));
    match pod_says.or(ns_says) {
        Some(true) => {}
        Some(false) => return Decision::Skip(format!("{INJECT}: disabled")),
        None => return Decision::Skip(format!("neither the pod nor namespace {} sets {INJECT}", ns.name)),
    }
    Decision::Inject(ops(pod, &spec, s))
}

fn annotation(pod: &Value, key: &str) -> Option<String> {
    meta_value(pod, "annotations", key).map(str::to_owned)
}

fn ops(pod: &Value, spec: &Value, s: &Settings) -> Vec<Op> {
    let mut ops = Vec::new();
    let init = init_container(pod, s);
    let proxy = proxy_container(pod, s);
    let to_value = |c: &Container| serde_json::to_value(c).unwrap_or(Value::Null);
    // Both before the pod's own init containers: those get the mesh too
    // (not with a classic sidecar, which starts after every init container).
    let has_init = spec.get("initContainers").and_then(Value::as_array).is_some();
    match (s.sidecar, has_init) {
        (Sidecar::Native, true) => {
            ops.push(Op::add("/spec/initContainers/0", to_value(&init)));
            ops.push(Op::add("/spec/initContainers/1", to_value(&proxy)));
        }
        (Sidecar::Native, false) => {
            ops.push(Op::add("/spec/initContainers", json!([to_value(&init), to_value(&proxy)])));
        }
        (Sidecar::Classic, true) => ops.push(Op::add("/spec/initContainers/0", to_value(&init))),
        (Sidecar::Classic, false) => ops.push(Op::add("/spec/initContainers", json!([to_value(&init)]))),
    }
    if s.sidecar == Sidecar::Classic {
        // First, so the kubelet starts it (and runs its postStart hook to
        // the end) before the app's containers.
        ops.push(Op::add("/spec/containers/0", to_value(&proxy)));
    }
    let volume = Volume {
        name: TOKEN_VOLUME.into(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    audience: Some("weft".into()),
                    expiration_seconds: Some(s.token_seconds),
                    path: "token".into(),
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let volume = serde_json::to_value(volume).unwrap_or(Value::Null);
    match spec.get("volumes").and_then(Value::as_array) {
        Some(_) => ops.push(Op::add("/spec/volumes/-", volume)),
        None => ops.push(Op::add("/spec/volumes", json!([volume]))),
    }
    let path = format!("/metadata/annotations/{}", escape(INJECTED_VERSION));
    match pod.get("metadata").and_then(|m| m.get("annotations")).and_then(Value::as_object) {
        Some(_) => ops.push(Op::add(&path, json!(s.version))),
        None => ops.push(Op::add("/metadata/annotations", json!({ INJECTED_VERSION: s.version }))),
    }
    ops
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar { name: name.into(), value: Some(value.into()), ..Default::default() }
}

fn env_field(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector { field_path: path.into(), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn init_container(pod: &Value, s: &Settings) -> Container {
    let mut args = vec!["init".to_owned()];
    if let Some(p) = annotation(pod, SKIP_INBOUND_PORTS) {
        args.extend(["--skip-inbound-ports".into(), p]);
    }
    if let Some(p) = annotation(pod, SKIP_OUTBOUND_PORTS) {
        args.extend(["--skip-outbound-ports".into(), p]);
    }
    Container {
        name: INIT_CONTAINER.into(),
        image: Some(s.proxy_image.clone()),
        command: Some(vec!["weft-proxy".into()]),
        args: Some(args),
        security_context: Some(SecurityContext {
            capabilities: Some(Capabilities {
                add: Some(vec!["NET_ADMIN".into(), "NET_RAW".into()]),
                drop: Some(vec!["ALL".into()]),
            }),
            // iptables runs as root in the pod's network namespace only.
            run_as_user: Some(0),
            run_as_non_root: Some(false),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn proxy_container(pod: &Value, s: &Settings) -> Container {
    let probe = |path: &str| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(ADMIN_PORT),
            ..Default::default()
        }),
        period_seconds: Some(1),
        failure_threshold: Some(if path == "/ready" { 120 } else { 3 }),
        ..Default::default()
    };
    let mut env = vec![
        env("WEFT_PROXY_CONTROL_PLANE", &s.control_plane),
        env("WEFT_PROXY_CONTROL_PLANE_NAME", &s.control_plane_name),
        env("WEFT_PROXY_TRUST_DOMAIN", &s.trust_domain),
        env("WEFT_PROXY_IDENTITY_TOKEN_FILE", &format!("{TOKEN_DIR}/token")),
        env("WEFT_PROXY_ADMIN_ADDR", &format!("0.0.0.0:{ADMIN_PORT}")),
        env_field("WEFT_PROXY_POD_NAME", "metadata.name"),
        env_field("WEFT_PROXY_NAMESPACE", "metadata.namespace"),
        env_field("WEFT_PROXY_SERVICE_ACCOUNT", "spec.serviceAccountName"),
    ];
    if let Some(pem) = &s.trust_anchors_pem {
        env.push(self::env("WEFT_PROXY_TRUST_ANCHORS_PEM", pem));
    }
    if let Some(p) = annotation(pod, OPAQUE_PORTS) {
        env.push(self::env("WEFT_PROXY_INBOUND_OPAQUE_PORTS", &p));
    }
    if let Some(log) = &s.proxy.log {
        env.push(self::env("WEFT_PROXY_LOG", log));
    }
    let quantity = |key: &str, default: &str| Quantity(annotation(pod, key).unwrap_or_else(|| default.to_owned()));
    let resources = ResourceRequirements {
        requests: Some(
            [
                ("cpu".to_owned(), quantity(PROXY_CPU_REQUEST, &s.proxy.cpu_request)),
                ("memory".to_owned(), quantity(PROXY_MEMORY_REQUEST, &s.proxy.memory_request)),
            ]
            .into(),
        ),
        limits: Some([("memory".to_owned(), quantity(PROXY_MEMORY_LIMIT, &s.proxy.memory_limit))].into()),
        ..Default::default()
    };
    let mut c = Container {
        name: PROXY_CONTAINER.into(),
        image: Some(s.proxy_image.clone()),
        command: Some(vec!["weft-proxy".into()]),
        args: Some(vec!["run".into()]),
        env: Some(env),
        ports: Some(vec![
            ContainerPort { name: Some("weft-admin".into()), container_port: ADMIN_PORT, ..Default::default() },
            ContainerPort { name: Some("weft-inbound".into()), container_port: 4143, ..Default::default() },
            ContainerPort { name: Some("weft-tap".into()), container_port: TAP_PORT, ..Default::default() },
        ]),
        liveness_probe: Some(probe("/live")),
        readiness_probe: Some(probe("/ready")),
        resources: Some(resources),
        security_context: Some(SecurityContext {
            run_as_user: Some(PROXY_UID),
            run_as_non_root: Some(true),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Default::default() }),
            ..Default::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: TOKEN_VOLUME.into(),
            mount_path: TOKEN_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        }]),
        ..Default::default()
    };
    match s.sidecar {
        // A native sidecar (Kubernetes >= 1.29): started before the app
        // containers, which wait for its startup probe (the proxy has its
        // certificate and is serving); it does not keep a Job from completing.
        Sidecar::Native => {
            c.restart_policy = Some("Always".into());
            c.startup_probe = Some(probe("/ready"));
        }
        // A classic sidecar: the kubelet starts the next container only
        // once this postStart hook returns, i.e. once the proxy is ready.
        Sidecar::Classic => {
            c.lifecycle = Some(Lifecycle {
                post_start: Some(LifecycleHandler {
                    exec: Some(ExecAction {
                        command: Some(vec!["weft-proxy".into(), "await".into(), "--timeout".into(), "2m".into()]),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            proxy_image: "weft/proxy:test".into(),
            control_plane: "https://weft-control.weft-system.svc:8090".into(),
            control_plane_name: "weft-control.weft-system.svc".into(),
            trust_domain: "cluster.local".into(),
            own_namespace: "weft-system".into(),
            version: "0.1.0".into(),
            token_seconds: 3600,
            trust_anchors_pem: Some("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into()),
            proxy: ProxyDefaults::default(),
            sidecar: Sidecar::Native,
        }
    }

    fn ns(name: &str, label: Option<&str>) -> NamespaceInfo {
        NamespaceInfo {
            name: name.into(),
            labels: label.map(|v| [(INJECT.to_owned(), v.to_owned())].into()).unwrap_or_default(),
            ..Default::default()
        }
    }

    fn pod(extra_meta: Value, spec: Value) -> Value {
        let mut p = json!({"metadata": {"generateName": "web-5d9c-"}, "spec": spec});
        if let (Some(m), Some(extra)) = (p["metadata"].as_object_mut(), extra_meta.as_object()) {
            m.extend(extra.clone());
        }
        p
    }

    fn app() -> Value {
        json!({"containers": [{"name": "app", "image": "app:1"}]})
    }

    #[test]
    fn quantities() {
        for (q, ok) in [
            ("50m", true),
            ("32Mi", true),
            ("1", true),
            ("1.5", true),
            (".5", true),
            ("5.", true),
            ("2e3", true),
            ("2E-3", true),
            ("1E", true),
            ("1Ei", true),
            ("", false),
            ("m", false),
            (".", false),
            ("1..5", false),
            ("1.2.3", false),
            ("-1", false),
            ("1 Mi", false),
            ("1mi", false),
            ("1MB", false),
            ("1e", false),
            ("1e+", false),
        ] {
            assert_eq!(is_quantity(q), ok, "{q:?}");
        }
    }

    #[test]
    fn who_is_injected() {
        // (case, pod, namespace, injected, or the start of the skip reason)
        let cases: Vec<(&str, Value, NamespaceInfo, Result<(), &str>)> = vec![
            ("labelled namespace", pod(json!({}), app()), ns("shop", Some("enabled")), Ok(())),
            (
                "annotated namespace",
                pod(json!({}), app()),
                NamespaceInfo {
                    name: "shop".into(),
                    annotations: [(INJECT.to_owned(), "enabled".to_owned())].into(),
                    ..Default::default()
                },
                Ok(()),
            ),
            (
                "unlabelled namespace",
                pod(json!({}), app()),
                ns("shop", None),
                Err("neither the pod nor namespace shop"),
            ),
            ("pod opts in", pod(json!({"annotations": {INJECT: "enabled"}}), app()), ns("shop", None), Ok(())),
            ("pod label opts in", pod(json!({"labels": {INJECT: "enabled"}}), app()), ns("shop", None), Ok(())),
            (
                "pod opts out",
                pod(json!({"annotations": {INJECT: "disabled"}}), app()),
                ns("shop", Some("enabled")),
                Err("weft.dev/inject: disabled"),
            ),
            (
                "namespace opts out",
                pod(json!({}), app()),
                ns("shop", Some("disabled")),
                Err("weft.dev/inject: disabled"),
            ),
            (
                "kube-system",
                pod(json!({"annotations": {INJECT: "enabled"}}), app()),
                ns("kube-system", None),
                Err("namespace kube-system is never injected"),
            ),
            (
                "weft's own",
                pod(json!({}), app()),
                ns("weft-system", Some("enabled")),
                Err("namespace weft-system is never injected"),
            ),
            (
                "hostNetwork",
                pod(json!({}), json!({"hostNetwork": true, "containers": [{"name": "app"}]})),
                ns("shop", Some("enabled")),
                Err("hostNetwork"),
            ),
            (
                "already injected",
                pod(json!({}), json!({"initContainers": [{"name": "weft-proxy"}], "containers": [{"name": "app"}]})),
                ns("shop", Some("enabled")),
                Err("already injected"),
            ),
            (
                "another mesh",
                pod(json!({}), json!({"containers": [{"name": "app"}, {"name": "linkerd-proxy"}]})),
                ns("shop", Some("enabled")),
                Err("the pod already runs linkerd-proxy"),
            ),
            ("an unknown value", pod(json!({"annotations": {INJECT: "yes"}}), app()), ns("shop", None), Err("neither")),
        ];
        for (case, pod, ns, want) in cases {
            match (mutate(&pod, &ns, &settings()), want) {
                (Decision::Inject(_), Ok(())) => {}
                (Decision::Skip(why), Err(w)) => assert!(why.starts_with(w), "{case}: {why}"),
                (got, want) => panic!("{case}: got {got:?}, want {want:?}"),
            }
        }
    }

    /// Applies `add` operations as the API server would (enough for these).
    fn apply(mut v: Value, ops: &[Op]) -> Value {
        for op in ops {
            let tokens: Vec<String> =
                op.path.split('/').skip(1).map(|t| t.replace("~1", "/").replace("~0", "~")).collect();
            let (last, parents) = tokens.split_last().expect("a path");
            let mut at = &mut v;
            for t in parents {
                at = if at.is_array() { &mut at[t.parse::<usize>().expect("index")] } else { &mut at[t.as_str()] };
            }
            match at {
                Value::Array(a) if last == "-" => a.push(op.value.clone()),
                Value::Array(a) => a.insert(last.parse().expect("index"), op.value.clone()),
                Value::Object(o) => {
                    assert!(!o.contains_key(last.as_str()) || !op.value.is_array(), "{}: replacing an array", op.path);
                    o.insert(last.clone(), op.value.clone());
                }
                other => panic!("{}: cannot add into {other}", op.path),
            }
        }
        v
    }

    #[test]
    fn what_is_added_and_a_second_admission_adds_nothing() {
        let s = settings();
        // Without and with init containers, volumes and annotations of its own.
        let bare = pod(json!({}), app());
        let full = pod(
            json!({"annotations": {"team": "a", SKIP_OUTBOUND_PORTS: "3306", OPAQUE_PORTS: "6379"}}),
            json!({"initContainers": [{"name": "migrate"}], "containers": [{"name": "app"}], "volumes": [{"name": "data"}]}),
        );
        for (case, p) in [("bare", bare), ("full", full)] {
            let Decision::Inject(ops) = mutate(&p, &ns("shop", Some("enabled")), &s) else {
                panic!("{case}: not injected")
            };
            let injected = apply(p.clone(), &ops);
            let inits: Vec<&str> = injected["spec"]["initContainers"]
                .as_array()
                .expect("init containers")
                .iter()
                .filter_map(|c| c["name"].as_str())
                .collect();
            assert_eq!(&inits[..2], [INIT_CONTAINER, PROXY_CONTAINER], "{case}: ours first");
            assert_eq!(inits.len(), if case == "full" { 3 } else { 2 }, "{case}: the pod's own kept");
            let proxy = &injected["spec"]["initContainers"][1];
            assert_eq!(proxy["restartPolicy"], "Always", "{case}: a native sidecar");
            assert_eq!(proxy["startupProbe"]["httpGet"]["path"], "/ready");
            assert_eq!(proxy["startupProbe"]["httpGet"]["port"], 4191);
            assert!(
                proxy["ports"]
                    .as_array()
                    .is_some_and(|p| p.iter().any(|p| p["containerPort"] == 4190 && p["name"] == "weft-tap")),
                "no tap port: {proxy:#}"
            );
            assert_eq!(proxy["securityContext"]["runAsUser"], 2102);
            assert_eq!(proxy["securityContext"]["runAsNonRoot"], true);
            let init = &injected["spec"]["initContainers"][0];
            assert_eq!(init["securityContext"]["capabilities"]["add"], json!(["NET_ADMIN", "NET_RAW"]));
            assert_eq!(init["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
            assert_eq!(injected["metadata"]["annotations"][INJECTED_VERSION], "0.1.0");
            let vols: Vec<&str> = injected["spec"]["volumes"]
                .as_array()
                .expect("volumes")
                .iter()
                .filter_map(|v| v["name"].as_str())
                .collect();
            assert!(vols.contains(&"weft-identity-token"), "{case}: {vols:?}");
            let audience = &injected["spec"]["volumes"].as_array().expect("volumes").last().expect("ours")["projected"]
                ["sources"][0]["serviceAccountToken"]["audience"];
            assert_eq!(audience, "weft");
            if case == "full" {
                assert_eq!(injected["metadata"]["annotations"]["team"], "a", "the pod's annotations kept");
                assert_eq!(init["args"], json!(["init", "--skip-outbound-ports", "3306"]));
                let env = proxy["env"].as_array().expect("env");
                assert!(env.iter().any(|e| e["name"] == "WEFT_PROXY_INBOUND_OPAQUE_PORTS" && e["value"] == "6379"));
                assert!(env.iter().any(|e| e["name"] == "WEFT_PROXY_TRUST_ANCHORS_PEM"
                    && e["value"].as_str().is_some_and(|v| v.contains("BEGIN CERTIFICATE"))));
            }
            assert_eq!(mutate(&injected, &ns("shop", Some("enabled")), &s), Decision::Skip("already injected".into()));
        }
    }

    /// The injector's defaults (the chart's `proxy` values) shape every
    /// proxy; a Pod's own annotation wins over each.
    #[test]
    fn proxy_resources_and_log_come_from_the_settings_unless_the_pod_says() {
        let mut s = settings();
        s.proxy = ProxyDefaults {
            cpu_request: "200m".into(),
            memory_request: "64Mi".into(),
            memory_limit: "1Gi".into(),
            log: Some("debug".into()),
        };
        let own = json!({"annotations": {PROXY_CPU_REQUEST: "10m"}});
        for (case, meta, cpu, memory, limit) in
            [("settings", json!({}), "200m", "64Mi", "1Gi"), ("the pod's cpu request", own, "10m", "64Mi", "1Gi")]
        {
            let p = pod(meta, app());
            let Decision::Inject(ops) = mutate(&p, &ns("shop", Some("enabled")), &s) else {
                panic!("{case}: not injected")
            };
            let proxy = apply(p, &ops)["spec"]["initContainers"][1].clone();
            assert_eq!(proxy["resources"]["requests"], json!({"cpu": cpu, "memory": memory}), "{case}");
            assert_eq!(proxy["resources"]["limits"], json!({"memory": limit}), "{case}");
            let log: Vec<&Value> =
                proxy["env"].as_array().expect("env").iter().filter(|e| e["name"] == "WEFT_PROXY_LOG").collect();
            assert_eq!(log, [&json!({"name": "WEFT_PROXY_LOG", "value": "debug"})], "{case}");
        }
        // No log filter: the proxy's own default, no variable.
        s.proxy.log = None;
        let p = pod(json!({}), app());
        let Decision::Inject(ops) = mutate(&p, &ns("shop", Some("enabled")), &s) else { panic!("not injected") };
        let proxy = apply(p, &ops)["spec"]["initContainers"][1].clone();
        assert!(!proxy["env"].as_array().expect("env").iter().any(|e| e["name"] == "WEFT_PROXY_LOG"));
    }

    #[test]
    fn a_classic_sidecar_is_the_first_container_and_holds_the_app_until_ready() {
        let s = Settings { sidecar: Sidecar::Classic, ..settings() };
        let bare = pod(json!({}), app());
        let full = pod(
            json!({}),
            json!({"initContainers": [{"name": "migrate"}], "containers": [{"name": "app"}, {"name": "log"}]}),
        );
        for (case, p, inits_want, containers_want) in [
            ("bare", bare, vec![INIT_CONTAINER], vec![PROXY_CONTAINER, "app"]),
            ("full", full, vec![INIT_CONTAINER, "migrate"], vec![PROXY_CONTAINER, "app", "log"]),
        ] {
            let Decision::Inject(ops) = mutate(&p, &ns("shop", Some("enabled")), &s) else {
                panic!("{case}: not injected")
            };
            let injected = apply(p.clone(), &ops);
            let names = |field: &str| -> Vec<String> {
                injected["spec"][field]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c["name"].as_str().map(str::to_owned))
                    .collect()
            };
            assert_eq!(names("initContainers"), inits_want, "{case}");
            assert_eq!(names("containers"), containers_want, "{case}");
            let proxy = &injected["spec"]["containers"][0];
            assert!(proxy["restartPolicy"].is_null() && proxy["startupProbe"].is_null(), "{case}: {proxy}");
            assert_eq!(
                proxy["lifecycle"]["postStart"]["exec"]["command"],
                json!(["weft-proxy", "await", "--timeout", "2m"]),
                "{case}"
            );
            assert_eq!(proxy["readinessProbe"]["httpGet"]["path"], "/ready", "{case}");
            assert_eq!(mutate(&injected, &ns("shop", Some("enabled")), &s), Decision::Skip("already injected".into()));
        }
    }

    #[test]
    fn native_sidecars_from_kubernetes_1_29() {
        for (major, minor, want) in [
            ("1", "29", Sidecar::Native),
            ("1", "36", Sidecar::Native),
            ("1", "30+", Sidecar::Native),
            ("1", "28", Sidecar::Classic),
            ("1", "28+", Sidecar::Classic),
            ("1", "21", Sidecar::Classic),
            ("2", "0", Sidecar::Native),
            ("1", "", Sidecar::Native),
        ] {
            assert_eq!(Sidecar::for_version(major, minor), want, "{major}.{minor}");
        }
    }
}
