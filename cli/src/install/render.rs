//! The objects of the Helm chart (`manifests/chart/weft/templates/`),
//! rendered from typed values: a pure function, in the order `kubectl
//! apply` needs them.
//!
//! This is the chart's second renderer, so that `weft install` needs no
//! helm. `tests/tests/kube_chart.rs` renders the same values with both and
//! compares every object, field by field: a template changed without this
//! file (or the reverse) fails there.
//!
//! ```text
//!  CRDs ─► Namespace ─► ServiceAccounts ─► ClusterRoles ─► ClusterRoleBindings ─► Secret (issuer)
//!      ─► cert-manager Issuer, Certificate ─► Services ─► Deployments ─► PodDisruptionBudgets
//!      ─► PodMonitor (Prometheus Operator) ─► MutatingWebhookConfiguration (last: no Pod is sent to an injector that does not exist yet)
//! ```

use base64::Engine as _;
use serde_json::{Value, json};

#[cfg(test)]
use super::values::IssuerKind;
use super::values::{Resources, Values};

/// The CRDs, as `manifests/crds/` has them (the chart's `crds/` holds
/// copies, checked by the tests).
pub const CRDS: &[&str] = &[
    include_str!("../../../manifests/crds/accesspolicies.policy.weft.dev.yaml"),
    include_str!("../../../manifests/crds/trafficpolicies.policy.weft.dev.yaml"),
];

/// The Prometheus Operator's PodMonitor for the proxies, as shipped for
/// `kubectl apply`; the chart's templates/podmonitor.yaml has the same spec.
const POD_MONITOR: &str = include_str!("../../../manifests/prometheus/podmonitor.yaml");

/// The version the chart calls `appVersion`: the images' default tag and
/// the `app.kubernetes.io/version` label.
pub const APP_VERSION: &str = env!("CARGO_PKG_VERSION");

/// One object to apply: the object, and for the CRDs the source text,
/// which is printed as it is (comments and all).
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    pub object: Value,
    pub source: Option<&'static str>,
}

impl Document {
    fn object(object: Value) -> Self {
        Document { object, source: None }
    }

    pub fn kind(&self) -> &str {
        self.object["kind"].as_str().unwrap_or_default()
    }

    pub fn name(&self) -> &str {
        self.object["metadata"]["name"].as_str().unwrap_or_default()
    }
}

/// Every object of the chart for `values` in `namespace`, in apply order.
/// The CRDs come first when `crds` (helm's `--include-crds`).
pub fn render(values: &Values, namespace: &str, crds: bool) -> Result<Vec<Document>, String> {
    let r = Renderer { v: values, ns: namespace };
    let mut out = Vec::new();
    if crds {
        for source in CRDS {
            let yaml: serde_yaml_ng::Value =
                serde_yaml_ng::from_str(source).map_err(|e| format!("an embedded CRD does not parse: {e}"))?;
            let object = serde_json::to_value(yaml).map_err(|e| format!("an embedded CRD: {e}"))?;
            out.push(Document { object, source: Some(source) });
        }
    }
    if values.install_namespace {
        out.push(Document::object(json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": namespace, "labels": labels("weft")},
        })));
    }
    out.extend([r.service_account(CONTROL), r.service_account(INJECTOR)].map(Document::object));
    out.extend([r.control_cluster_role(), r.injector_cluster_role()].map(Document::object));
    out.extend([r.cluster_role_binding(CONTROL), r.cluster_role_binding(INJECTOR)].map(Document::object));
    let keeps_webhook_cert = !values.webhook.cert_manager.enabled;
    if keeps_webhook_cert {
        out.push(Document::object(r.control_role()));
    }
    out.push(Document::object(r.injector_role()));
    if keeps_webhook_cert {
        out.push(Document::object(r.role_binding(CONTROL)));
    }
    out.push(Document::object(r.role_binding(INJECTOR)));
    if let Some(secret) = r.issuer_secret()? {
        out.push(Document::object(secret));
    }
    out.extend(r.cert_manager().into_iter().map(Document::object));
    out.extend([r.control_service(), r.injector_service()].map(Document::object));
    out.extend([r.control_deployment(), r.injector_deployment()].map(Document::object));
    for (name, replicas) in [(CONTROL, values.control_plane.replicas), (INJECTOR, values.injector.replicas)] {
        if replicas > 1 {
            out.push(Document::object(r.disruption_budget(name)));
        }
    }
    if values.pod_monitor.enabled {
        out.push(Document::object(r.pod_monitor()?));
    }
    out.push(Document::object(r.webhook()));
    Ok(out)
}

const CONTROL: &str = "weft-control";
const INJECTOR: &str = "weft-injector";
/// The Secret of the injector's serving certificate.
pub const INJECTOR_TLS_SECRET: &str = "weft-injector-tls";
const SELF_SIGNED_ISSUER: &str = "weft-injector-selfsigned";

fn labels(name: &str) -> Value {
    json!({
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/part-of": "weft",
        "app.kubernetes.io/version": APP_VERSION,
    })
}

fn selector(name: &str) -> Value {
    json!({"app.kubernetes.io/name": name})
}

fn resources(r: &Resources) -> Value {
    json!({
        "requests": {"cpu": r.requests.cpu, "memory": r.requests.memory},
        "limits": {"memory": r.limits.memory},
    })
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// The pod-level hardening both workloads share.
fn pod_security(uid: u32) -> Value {
    json!({"runAsNonRoot": true, "runAsUser": uid, "runAsGroup": uid, "seccompProfile": {"type": "RuntimeDefault"}})
}

fn container_security() -> Value {
    json!({"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]}})
}

/// Replicas spread over nodes when there are nodes enough.
fn anti_affinity(name: &str) -> Value {
    json!({"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
        "weight": 100,
        "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": selector(name)}},
    }]}})
}

struct Renderer<'a> {
    v: &'a Values,
    ns: &'a str,
}

impl Renderer<'_> {
    fn meta(&self, name: &str, component: &str) -> Value {
        json!({"name": name, "namespace": self.ns, "labels": labels(component)})
    }

    fn image(&self, name: &str) -> String {
        let tag = if self.v.image.tag.is_empty() { APP_VERSION } else { &self.v.image.tag };
        format!("{}/{name}:{tag}", self.v.image.registry)
    }

    fn service_account(&self, name: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": self.meta(name, name)})
    }

    /// templates/control-plane-rbac.yaml: see the comments there for why
    /// each rule.
    fn control_cluster_role(&self) -> Value {
        let mut role = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": CONTROL, "labels": labels(CONTROL)},
            "rules": [
                {"apiGroups": [""], "resources": ["services", "pods", "namespaces"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": ["gateway.networking.k8s.io"], "resources": ["httproutes"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": ["policy.weft.dev"], "resources": ["trafficpolicies", "accesspolicies"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": ["gateway.networking.k8s.io"], "resources": ["httproutes/status"], "verbs": ["update", "patch"]},
                {"apiGroups": ["policy.weft.dev"], "resources": ["trafficpolicies/status", "accesspolicies/status"], "verbs": ["update", "patch"]},
                {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
                {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
            ],
        });
        if !self.v.webhook.cert_manager.enabled {
            // The injector webhook's caBundle, kept equal to the anchors.
            role["rules"].as_array_mut().expect("rules").push(json!({
                "apiGroups": ["admissionregistration.k8s.io"],
                "resources": ["mutatingwebhookconfigurations"],
                "resourceNames": [INJECTOR],
                "verbs": ["get", "list", "watch", "patch"],
            }));
        }
        role
    }

    /// The injector's serving certificate, which the control plane keeps:
    /// `create` cannot be limited to a name, the rest is this one Secret.
    fn control_role(&self) -> Value {
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": self.meta(CONTROL, CONTROL),
            "rules": [
                {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
                {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [INJECTOR_TLS_SECRET], "verbs": ["get", "list", "watch", "update"]},
            ],
        })
    }

    /// The injector reads its own Secret (watched by name) and no other.
    fn injector_role(&self) -> Value {
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": self.meta(INJECTOR, INJECTOR),
            "rules": [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": [INJECTOR_TLS_SECRET], "verbs": ["list", "watch"]}],
        })
    }

    fn role_binding(&self, name: &str) -> Value {
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": self.meta(name, name),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": self.ns}],
        })
    }

    /// The injector reads a Pod's Namespace and nothing else.
    fn injector_cluster_role(&self) -> Value {
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": INJECTOR, "labels": labels(INJECTOR)},
            "rules": [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"]}],
        })
    }

    fn cluster_role_binding(&self, name: &str) -> Value {
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name, "labels": labels(name)},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": self.ns}],
        })
    }

    /// The issuer's Secret, when the values carry its PEMs (the chart's
    /// `weft.renderIssuer`, with the same refusal).
    fn issuer_secret(&self) -> Result<Option<Value>, String> {
        let id = &self.v.identity;
        if id.issuer.cert_pem.is_empty() && id.issuer.key_pem.is_empty() {
            return Ok(None);
        }
        if id.issuer.cert_pem.is_empty() || id.issuer.key_pem.is_empty() || id.trust_anchors_pem.is_empty() {
            return Err("identity.issuer.certPEM, identity.issuer.keyPEM and identity.trustAnchorsPEM go together: \
                        give all three (the Secret is rendered), or neither PEM of the issuer (the Secret \
                        identity.issuer.secretName must exist)"
                .into());
        }
        Ok(Some(json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": self.meta(&id.issuer.secret_name, CONTROL),
            "type": "kubernetes.io/tls",
            "data": {
                "tls.crt": b64(&id.issuer.cert_pem),
                "tls.key": b64(&id.issuer.key_pem),
                "ca.crt": b64(&id.trust_anchors_pem),
            },
        })))
    }

    /// templates/cert-manager.yaml.
    fn cert_manager(&self) -> Vec<Value> {
        let cm = &self.v.webhook.cert_manager;
        if !cm.enabled {
            return Vec::new();
        }
        let mut out = Vec::new();
        let (issuer, kind) = if cm.issuer_ref.name.is_empty() {
            out.push(json!({
                "apiVersion": "cert-manager.io/v1",
                "kind": "Issuer",
                "metadata": self.meta(SELF_SIGNED_ISSUER, INJECTOR),
                "spec": {"selfSigned": {}},
            }));
            (SELF_SIGNED_ISSUER, "Issuer")
        } else {
            (cm.issuer_ref.name.as_str(), cm.issuer_ref.kind.as_str())
        };
        out.push(json!({
            "apiVersion": "cert-manager.io/v1",
            "kind": "Certificate",
            "metadata": self.meta(INJECTOR, INJECTOR),
            "spec": {
                "secretName": INJECTOR_TLS_SECRET,
                "secretTemplate": {"labels": labels(INJECTOR)},
                "dnsNames": [format!("{INJECTOR}.{}.svc", self.ns)],
                "usages": ["server auth", "digital signature"],
                "privateKey": {"algorithm": "ECDSA", "size": 256, "encoding": "PKCS8", "rotationPolicy": "Always"},
                "issuerRef": {"group": "cert-manager.io", "kind": kind, "name": issuer},
            },
        }));
        out
    }

    fn control_service(&self) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": self.meta(CONTROL, CONTROL),
            "spec": {"selector": selector(CONTROL), "ports": [{"name": "grpc", "port": 8090, "targetPort": "grpc"}]},
        })
    }

    fn injector_service(&self) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": self.meta(INJECTOR, INJECTOR),
            "spec": {"selector": selector(INJECTOR), "ports": [{"name": "https", "port": 443, "targetPort": "https"}]},
        })
    }

    fn deployment(&self, name: &str, replicas: u32, pod_spec: Value) -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": self.meta(name, name),
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": selector(name)},
                "template": {
                    // Weft's own Pods are never meshed.
                    "metadata": {"labels": labels(name), "annotations": {"weft.dev/inject": "disabled"}},
                    "spec": pod_spec,
                },
            },
        })
    }

    /// templates/control-plane.yaml.
    fn control_deployment(&self) -> Value {
        let v = self.v;
        let mut args = vec![
            "--source=kubernetes".to_owned(),
            "--grpc-addr=0.0.0.0:8090".to_owned(),
            "--admin-addr=0.0.0.0:9990".to_owned(),
            "--issuer-cert=/var/run/weft/issuer/tls.crt".to_owned(),
            "--issuer-key=/var/run/weft/issuer/tls.key".to_owned(),
            "--trust-anchors=/var/run/weft/issuer/ca.crt".to_owned(),
            format!("--trust-domain={}", v.identity.trust_domain),
            format!("--cert-lifetime={}", v.identity.cert_lifetime),
            format!("--default-access={}", v.policy.default_access.as_flag()),
            format!("--mtls-mode={}", v.policy.mtls_mode.as_flag()),
            format!("--log={}", v.log_level),
            format!("--namespace={}", self.ns),
        ];
        if v.webhook.cert_manager.enabled {
            // The Secret and the webhook's caBundle are cert-manager's.
            args.push("--webhook-cert=external".to_owned());
        }
        if !v.tracing.collector.is_empty() {
            args.push(format!("--trace-collector={}", v.tracing.collector));
            args.push(format!("--trace-sampling={}", v.tracing.sampling));
        }
        // Loopback in the Pod: `kubectl port-forward` reaches it, nothing
        // else in the cluster does.
        let dashboard = if v.dashboard.enabled { "127.0.0.1:8084" } else { "off" };
        args.push(format!("--dashboard-addr={dashboard}"));
        args.push(format!("--telemetry-interval={}", v.telemetry.interval));
        args.push(format!("--telemetry-retention={}", v.telemetry.retention));
        let probe =
            |path: &str, period: u32| json!({"httpGet": {"path": path, "port": "admin"}, "periodSeconds": period});
        self.deployment(
            CONTROL,
            v.control_plane.replicas,
            json!({
                "serviceAccountName": CONTROL,
                "affinity": anti_affinity(CONTROL),
                "securityContext": pod_security(2103),
                "containers": [{
                    "name": CONTROL,
                    "image": self.image(CONTROL),
                    "imagePullPolicy": v.image.pull_policy.as_str(),
                    "args": args,
                    "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                    "ports": [{"name": "grpc", "containerPort": 8090}, {"name": "admin", "containerPort": 9990}],
                    "readinessProbe": probe("/ready", 2),
                    "livenessProbe": probe("/live", 10),
                    "resources": resources(&v.control_plane.resources),
                    "securityContext": container_security(),
                    "volumeMounts": [{"name": "issuer", "mountPath": "/var/run/weft/issuer", "readOnly": true}],
                }],
                // 0400 (256): the issuer's key is for weft-control's user alone.
                "volumes": [{"name": "issuer", "secret": {"secretName": v.identity.issuer.secret_name, "defaultMode": 256}}],
            }),
        )
    }

    /// templates/injector.yaml, the Deployment.
    fn injector_deployment(&self) -> Value {
        let v = self.v;
        let ns = self.ns;
        let proxy = &v.proxy.resources;
        let args = [
            "--listen=0.0.0.0:8443".to_owned(),
            format!("--tls-secret={INJECTOR_TLS_SECRET}"),
            "--trust-anchors=/var/run/weft/anchors/ca.crt".to_owned(),
            format!("--proxy-image={}", self.image("weft-proxy")),
            format!("--proxy-log={}", v.proxy.log_level),
            format!("--proxy-cpu-request={}", proxy.requests.cpu),
            format!("--proxy-memory-request={}", proxy.requests.memory),
            format!("--proxy-memory-limit={}", proxy.limits.memory),
            format!("--control-plane=https://{CONTROL}.{ns}.svc:8090"),
            format!("--control-plane-name={CONTROL}.{ns}.svc"),
            format!("--trust-domain={}", v.identity.trust_domain),
            format!("--token-seconds={}", v.identity.token_seconds),
            format!("--namespace={ns}"),
            format!("--log={}", v.log_level),
        ];
        self.deployment(
            INJECTOR,
            v.injector.replicas,
            json!({
                "serviceAccountName": INJECTOR,
                "affinity": anti_affinity(INJECTOR),
                "securityContext": pod_security(2104),
                "containers": [{
                    "name": INJECTOR,
                    "image": self.image(INJECTOR),
                    "imagePullPolicy": v.image.pull_policy.as_str(),
                    "args": args,
                    "ports": [{"name": "https", "containerPort": 8443}],
                    "readinessProbe": {"httpGet": {"path": "/ready", "port": "https", "scheme": "HTTPS"}},
                    "resources": resources(&v.injector.resources),
                    "securityContext": container_security(),
                    "volumeMounts": [
                        {"name": "anchors", "mountPath": "/var/run/weft/anchors", "readOnly": true},
                    ],
                }],
                "volumes": [
                    {"name": "anchors", "secret": {
                        "secretName": v.identity.issuer.secret_name,
                        "items": [{"key": "ca.crt", "path": "ca.crt"}],
                    }},
                ],
            }),
        )
    }

    /// templates/podmonitor.yaml: [`POD_MONITOR`]'s spec, in the release's
    /// namespace with the chart's labels.
    fn pod_monitor(&self) -> Result<Value, String> {
        let yaml: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(POD_MONITOR).map_err(|e| format!("podmonitor.yaml does not parse: {e}"))?;
        let shipped = serde_json::to_value(yaml).map_err(|e| format!("podmonitor.yaml: {e}"))?;
        Ok(json!({
            "apiVersion": shipped["apiVersion"],
            "kind": shipped["kind"],
            "metadata": self.meta("weft-proxy", "weft-proxy"),
            "spec": shipped["spec"],
        }))
    }

    /// templates/disruption-budgets.yaml: a drain leaves one replica.
    fn disruption_budget(&self, name: &str) -> Value {
        json!({
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": self.meta(name, name),
            "spec": {"minAvailable": 1, "selector": {"matchLabels": selector(name)}},
        })
    }

    /// templates/injector.yaml, the MutatingWebhookConfiguration.
    fn webhook(&self) -> Value {
        let v = self.v;
        let ns = self.ns;
        let cert_manager = v.webhook.cert_manager.enabled;
        let mut metadata = json!({"name": INJECTOR, "labels": labels(INJECTOR)});
        let mut client = json!({"service": {"name": INJECTOR, "namespace": ns, "path": "/inject", "port": 443}});
        if cert_manager {
            metadata["annotations"] = json!({"cert-manager.io/inject-ca-from": format!("{ns}/{INJECTOR}")});
        } else if !v.identity.trust_anchors_pem.is_empty() {
            // The injector's certificate comes from the control plane's CA.
            client["caBundle"] = json!(b64(&v.identity.trust_anchors_pem));
        }
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": metadata,
            "webhooks": [{
                "name": "inject.weft.dev",
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "failurePolicy": v.webhook.failure_policy.as_str(),
                "timeoutSeconds": v.webhook.timeout_seconds,
                "reinvocationPolicy": "IfNeeded",
                "clientConfig": client,
                "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
                "namespaceSelector": {"matchExpressions": [
                    {"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                     "values": ["kube-system", "kube-public", "kube-node-lease", ns]},
                    {"key": "weft.dev/injector", "operator": "NotIn", "values": ["disabled"]},
                ]},
            }],
        })
    }
}

/// Keys every object shows first, in this order (then the rest, sorted),
/// so that the output reads like a hand-written manifest.
const FIRST_KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "name",
    "namespace",
    "labels",
    "annotations",
    "type",
    "spec",
    "data",
    "rules",
    "roleRef",
    "subjects",
    "webhooks",
    "image",
];

/// `value` as YAML with [`FIRST_KEYS`] first.
fn ordered(value: &Value) -> serde_yaml_ng::Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            let rank = |k: &str| FIRST_KEYS.iter().position(|f| *f == k).unwrap_or(FIRST_KEYS.len());
            keys.sort_by(|a, b| rank(a).cmp(&rank(b)).then(a.cmp(b)));
            let mut out = serde_yaml_ng::Mapping::new();
            for key in keys {
                out.insert(serde_yaml_ng::Value::String(key.clone()), ordered(&map[key]));
            }
            serde_yaml_ng::Value::Mapping(out)
        }
        Value::Array(items) => serde_yaml_ng::Value::Sequence(items.iter().map(ordered).collect()),
        other => serde_yaml_ng::to_value(other).unwrap_or(serde_yaml_ng::Value::Null),
    }
}

/// Multi-document YAML: each document after `---`, the CRDs as written.
pub fn to_yaml(documents: &[Document]) -> Result<String, String> {
    let mut out = String::new();
    for doc in documents {
        out.push_str("---\n");
        match doc.source {
            Some(text) => out.push_str(text),
            None => out.push_str(&serde_yaml_ng::to_string(&ordered(&doc.object)).map_err(|e| e.to_string())?),
        }
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(docs: &[Document]) -> Vec<String> {
        docs.iter().map(|d| format!("{}/{}", d.kind(), d.name())).collect()
    }

    /// The apply order, and which objects exist for which values.
    #[test]
    fn objects_and_their_order() {
        let mut v = Values::default();
        let docs = render(&v, "weft-system", false).expect("render");
        assert_eq!(
            kinds(&docs),
            [
                "ServiceAccount/weft-control",
                "ServiceAccount/weft-injector",
                "ClusterRole/weft-control",
                "ClusterRole/weft-injector",
                "ClusterRoleBinding/weft-control",
                "ClusterRoleBinding/weft-injector",
                "Role/weft-control",
                "Role/weft-injector",
                "RoleBinding/weft-control",
                "RoleBinding/weft-injector",
                "Service/weft-control",
                "Service/weft-injector",
                "Deployment/weft-control",
                "Deployment/weft-injector",
                "PodDisruptionBudget/weft-control",
                "PodDisruptionBudget/weft-injector",
                "MutatingWebhookConfiguration/weft-injector",
            ]
        );
        v.install_namespace = true;
        v.identity.issuer.cert_pem = "cert".into();
        v.identity.issuer.key_pem = "key".into();
        v.identity.trust_anchors_pem = "anchors".into();
        v.webhook.cert_manager.enabled = true;
        v.injector.replicas = 1;
        v.pod_monitor.enabled = true;
        let docs = render(&v, "mesh", true).expect("render");
        assert_eq!(
            kinds(&docs),
            [
                "CustomResourceDefinition/accesspolicies.policy.weft.dev",
                "CustomResourceDefinition/trafficpolicies.policy.weft.dev",
                "Namespace/mesh",
                "ServiceAccount/weft-control",
                "ServiceAccount/weft-injector",
                "ClusterRole/weft-control",
                "ClusterRole/weft-injector",
                "ClusterRoleBinding/weft-control",
                "ClusterRoleBinding/weft-injector",
                // cert-manager keeps the injector's Secret: no Role for the
                // control plane.
                "Role/weft-injector",
                "RoleBinding/weft-injector",
                "Secret/weft-identity-issuer",
                "Issuer/weft-injector-selfsigned",
                "Certificate/weft-injector",
                "Service/weft-control",
                "Service/weft-injector",
                "Deployment/weft-control",
                "Deployment/weft-injector",
                "PodDisruptionBudget/weft-control",
                "PodMonitor/weft-proxy",
                "MutatingWebhookConfiguration/weft-injector",
            ]
        );
        let monitor = &docs[docs.len() - 2].object;
        assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
        assert_eq!(monitor["metadata"]["namespace"], "mesh");
        assert_eq!(monitor["spec"]["podMetricsEndpoints"][0]["port"], "weft-admin");
        let webhook = &docs.last().expect("webhook").object;
        assert_eq!(webhook["metadata"]["annotations"]["cert-manager.io/inject-ca-from"], "mesh/weft-injector");
        assert!(webhook["webhooks"][0]["clientConfig"].get("caBundle").is_none(), "cert-manager's to inject");
        v.webhook.cert_manager.issuer_ref.name = "corp-ca".into();
        v.webhook.cert_manager.issuer_ref.kind = IssuerKind::ClusterIssuer;
        let docs = render(&v, "mesh", false).expect("render");
        assert!(!kinds(&docs).contains(&"Issuer/weft-injector-selfsigned".to_owned()));
        let cert = docs.iter().find(|d| d.kind() == "Certificate").expect("a Certificate");
        assert_eq!(
            cert.object["spec"]["issuerRef"],
            json!({"group": "cert-manager.io", "kind": "ClusterIssuer", "name": "corp-ca"})
        );
    }

    /// The control plane's tracing, dashboard and telemetry flags.
    #[test]
    fn observability_values_become_control_plane_flags() {
        let control_args = |v: &Values| -> Vec<String> {
            let docs = render(v, "weft-system", false).expect("render");
            let control = docs.iter().find(|d| d.kind() == "Deployment" && d.name() == CONTROL).expect("control");
            serde_json::from_value(control.object["spec"]["template"]["spec"]["containers"][0]["args"].clone())
                .expect("args")
        };
        let mut v = Values::default();
        let args = control_args(&v);
        let tail: Vec<&str> = args[args.len() - 3..].iter().map(String::as_str).collect();
        assert_eq!(tail, ["--dashboard-addr=127.0.0.1:8084", "--telemetry-interval=5s", "--telemetry-retention=15m"]);
        assert!(!args.iter().any(|a| a.starts_with("--trace-")), "no collector, no tracing flags: {args:?}");
        v.tracing.collector = "otel-collector.observability:4317".into();
        v.tracing.sampling = 0.25;
        v.dashboard.enabled = false;
        v.telemetry.interval = "0s".into();
        let args = control_args(&v);
        let tail: Vec<&str> = args[args.len() - 5..].iter().map(String::as_str).collect();
        assert_eq!(
            tail,
            [
                "--trace-collector=otel-collector.observability:4317",
                "--trace-sampling=0.25",
                "--dashboard-addr=off",
                "--telemetry-interval=0s",
                "--telemetry-retention=15m",
            ]
        );
    }

    /// The identity Secret needs all three PEMs, as the chart's `fail` says.
    #[test]
    fn half_an_issuer_is_refused() {
        let mut v = Values::default();
        v.identity.issuer.cert_pem = "cert".into();
        let err = render(&v, "weft-system", false).expect_err("refused");
        assert!(err.contains("go together"), "{err}");
        v.identity.issuer.key_pem = "key".into();
        assert!(render(&v, "weft-system", false).is_err(), "no anchors");
        v.identity.trust_anchors_pem = "anchors".into();
        let docs = render(&v, "weft-system", false).expect("all three");
        let secret = docs.iter().find(|d| d.kind() == "Secret").expect("a Secret");
        assert_eq!(secret.object["data"], json!({"tls.crt": "Y2VydA==", "tls.key": "a2V5", "ca.crt": "YW5jaG9ycw=="}));
        let webhook = &docs.last().expect("webhook").object;
        assert_eq!(webhook["webhooks"][0]["clientConfig"]["caBundle"], "YW5jaG9ycw==", "the anchors, base64");
    }

    /// The YAML reads top-down (apiVersion, kind, metadata, spec) and
    /// parses back to the same objects; the CRDs are printed as written.
    #[test]
    fn yaml_output_round_trips() {
        let mut v =
            Values { install_namespace: true, log_level: "info,weft_control=debug".into(), ..Values::default() };
        // A quantity YAML would read as a number unless quoted.
        v.control_plane.resources.requests.cpu = "1".into();
        let docs = render(&v, "weft-system", true).expect("render");
        let text = to_yaml(&docs).expect("yaml");
        assert!(text.contains(CRDS[0]) && text.contains(CRDS[1]), "CRDs verbatim");
        let parsed: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&text)
            .map(|d| serde_json::to_value(serde_yaml_ng::Value::deserialize(d).expect("a document")).expect("json"))
            .collect();
        let objects: Vec<Value> = docs.iter().map(|d| d.object.clone()).collect();
        assert_eq!(parsed, objects);
        assert!(text.contains("cpu: '1'"), "quoted, so it stays a string");
        let namespace = text.split("---\n").nth(3).expect("the namespace document");
        assert!(
            namespace.starts_with("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: weft-system\n"),
            "{namespace}"
        );
    }

    use serde::Deserialize as _;
}
