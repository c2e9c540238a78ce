//! The checks' decisions: plain functions of what was read from the
//! cluster ([`Observed`]) and the time, each giving one [`Check`] line of
//! the checklist. Nothing here does I/O; `tests.rs` tables them.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::admissionregistration::v1::{MutatingWebhook, MutatingWebhookConfiguration};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use weft_injector::mutate::{Decision, INJECT, INJECTED_VERSION, NamespaceInfo, PROXY_CONTAINER, Settings, mutate};

use super::report::{Check, Section};

/// The names the install manifests and the Helm chart use.
pub const CONTROL_PLANE: &str = "weft-control";
/// The injector's Deployment and its MutatingWebhookConfiguration.
pub const INJECTOR: &str = "weft-injector";
/// The webhook's serving certificate (`tls.crt`, `tls.key`, `ca.crt`).
pub const INJECTOR_TLS: &str = "weft-injector-tls";
/// A serving certificate that expires sooner fails the check.
pub const MIN_CERT_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);
/// At most this many objects are named under a failed check.
const MAX_LISTED: usize = 20;

/// Something read from the API server: `Ok(None)` when it does not exist,
/// `Err` (the reason) when it could not be read.
pub type Read<T> = Result<Option<T>, String>;

/// What the dry-run Pod came back as.
#[derive(Clone, Debug, PartialEq)]
pub enum Probe {
    /// With `weft-proxy`: the API server called the webhook and applied its patch.
    Injected { namespace: String },
    /// Created, without the proxy.
    NotInjected { namespace: String },
    /// The API server refused it.
    Refused { namespace: String, error: String },
}

/// Everything the checks look at, read once.
#[derive(Clone, Debug)]
pub struct Observed {
    /// Weft's namespace (`--namespace`).
    pub namespace: String,
    pub weft_namespace: Read<Namespace>,
    pub control_plane: Read<Deployment>,
    pub webhook: Read<MutatingWebhookConfiguration>,
    pub tls: Read<Secret>,
    pub namespaces: Result<Vec<Namespace>, String>,
    pub pods: Result<Vec<Pod>, String>,
    pub probe: Probe,
    pub now: SystemTime,
    /// The CLI's version, which the proxies' should match.
    pub cli_version: String,
}

/// Every section after `kubernetes-api`, in order.
pub fn decide(o: &Observed) -> Vec<Section> {
    vec![
        Section::new("weft-control-plane", vec![control_plane_namespace(o), control_plane_ready(o)]),
        Section::new("weft-webhook", {
            let mut checks = vec![webhook_configured(o)];
            checks.extend(webhook_cert(o));
            checks.push(webhook_reachable(o));
            checks
        }),
        Section::new("weft-data-plane", vec![pods_have_the_proxy(o), versions_match(o)]),
    ]
}

/// The `kubernetes-api` section: can the client be built, does the API
/// server answer (`None`: not asked, the client failed).
pub fn api_section(client: &Result<(), String>, query: Option<&Result<(), String>>) -> Section {
    const HINT: &str = "check --kubeconfig, $KUBECONFIG or ~/.kube/config and --context; \
                        `kubectl cluster-info` must work with the same settings";
    let mut checks = vec![match client {
        Ok(()) => Check::pass("can initialize the client"),
        Err(e) => Check::fail("can initialize the client", vec![e.clone()], HINT),
    }];
    if let Some(query) = query {
        checks.push(match query {
            Ok(()) => Check::pass("can query the Kubernetes API"),
            Err(e) => Check::fail("can query the Kubernetes API", vec![e.clone()], HINT),
        });
    }
    Section::new("kubernetes-api", checks)
}

fn control_plane_namespace(o: &Observed) -> Check {
    const TITLE: &str = "control plane Namespace exists";
    match &o.weft_namespace {
        Ok(Some(_)) => Check::pass(TITLE),
        Ok(None) => Check::fail(
            TITLE,
            vec![format!("the {:?} namespace does not exist", o.namespace)],
            "install Weft (manifests/install/ or the Helm chart), or name its namespace with --namespace",
        ),
        Err(e) => Check::fail(TITLE, vec![format!("cannot read namespace {}: {e}", o.namespace)], RBAC_HINT),
    }
}

const RBAC_HINT: &str = "weft check reads Namespaces, Pods, Deployments and Secrets in Weft's namespace, the \
                         MutatingWebhookConfiguration, and creates Pods with dryRun=All: run it as a cluster admin";

fn control_plane_ready(o: &Observed) -> Check {
    const TITLE: &str = "control plane pods are ready";
    let ns = &o.namespace;
    let hint = format!(
        "kubectl -n {ns} describe deployment {CONTROL_PLANE}; kubectl -n {ns} get pods -l \
         app.kubernetes.io/name={CONTROL_PLANE}: a Pending pod is not scheduled, a Running one that is not ready \
         fails its /ready probe (admin port 9990) and its log says why"
    );
    match &o.control_plane {
        Err(e) => Check::fail(TITLE, vec![format!("cannot read Deployment {CONTROL_PLANE}: {e}")], RBAC_HINT),
        Ok(None) => Check::fail(
            TITLE,
            vec![format!("no Deployment {CONTROL_PLANE} in namespace {ns}")],
            "install the control plane (manifests/install/ or the Helm chart), or name Weft's namespace with --namespace",
        ),
        Ok(Some(d)) => {
            let wanted = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let available = d.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0);
            if available > 0 {
                Check::pass(TITLE)
            } else {
                Check::fail(
                    TITLE,
                    vec![format!("no ready pod of Deployment {CONTROL_PLANE} ({available} of {wanted} available)")],
                    &hint,
                )
            }
        }
    }
}

fn webhook_configured(o: &Observed) -> Check {
    const TITLE: &str = "injector webhook is configured";
    match &o.webhook {
        Ok(Some(w)) if w.webhooks.as_ref().is_some_and(|w| !w.is_empty()) => Check::pass(TITLE),
        Ok(Some(_)) => Check::fail(
            TITLE,
            vec![format!("MutatingWebhookConfiguration {INJECTOR} has no webhooks")],
            "apply manifests/install/injector.yaml (or the Helm chart) again",
        ),
        Ok(None) => Check::fail(
            TITLE,
            vec![format!("no MutatingWebhookConfiguration {INJECTOR}")],
            "install the injector (manifests/install/injector.yaml or the Helm chart); without it no Pod is injected",
        ),
        Err(e) => {
            Check::fail(TITLE, vec![format!("cannot read MutatingWebhookConfiguration {INJECTOR}: {e}")], RBAC_HINT)
        }
    }
}

/// The name the API server checks the webhook's certificate against: the
/// Service's DNS name, or the URL's host.
pub fn webhook_host(w: &MutatingWebhook) -> Option<String> {
    let cc = &w.client_config;
    if let Some(svc) = &cc.service {
        return Some(format!("{}.{}.svc", svc.name, svc.namespace));
    }
    let rest = cc.url.as_deref()?.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => authority.split(':').next()?,
    };
    (!host.is_empty()).then(|| host.to_owned())
}

/// `injector webhook has valid cert` and, when the certificate could be
/// read, `injector cert is valid for at least 7 days`.
fn webhook_cert(o: &Observed) -> Vec<Check> {
    const TITLE: &str = "injector webhook has valid cert";
    let ns = &o.namespace;
    let secret_hint = format!(
        "the injector serves the certificate of Secret {INJECTOR_TLS} (tls.crt, tls.key, ca.crt) in {ns}, and the \
         webhook's caBundle must be the CA that signed it: recreate both (weft install does), then restart the \
         injector (kubectl -n {ns} rollout restart deployment {INJECTOR})"
    );
    let fail = |details: Vec<String>| vec![Check::fail(TITLE, details, &secret_hint)];
    let secret = match &o.tls {
        Ok(Some(s)) => s,
        Ok(None) => return fail(vec![format!("no Secret {INJECTOR_TLS} in namespace {ns}")]),
        Err(e) => return vec![Check::fail(TITLE, vec![format!("cannot read Secret {INJECTOR_TLS}: {e}")], RBAC_HINT)],
    };
    let data = |key: &str| secret.data.as_ref().and_then(|d| d.get(key)).map(|b| b.0.as_slice());
    let (Some(crt), Some(key)) = (data("tls.crt"), data("tls.key")) else {
        return fail(vec![format!("Secret {INJECTOR_TLS} needs tls.crt and tls.key")]);
    };
    let chain = match super::tls::certs(crt) {
        Ok(chain) => chain,
        Err(e) => return fail(vec![format!("tls.crt of Secret {INJECTOR_TLS}: {e}")]),
    };
    let mut problems = Vec::new();
    if let Err(e) = super::tls::keys_match(&chain, key) {
        problems.push(format!("tls.key of Secret {INJECTOR_TLS}: {e}"));
    }
    let webhooks = match &o.webhook {
        Ok(Some(w)) => w.webhooks.clone().unwrap_or_default(),
        _ => Vec::new(),
    };
    if webhooks.is_empty() {
        problems.push(format!("no webhook of {INJECTOR} gives a caBundle to check tls.crt against"));
    }
    for w in &webhooks {
        let Some(host) = webhook_host(w) else {
            problems.push(format!("webhook {}: neither a service nor an https URL", w.name));
            continue;
        };
        let Some(bundle) = &w.client_config.ca_bundle else {
            problems.push(format!("webhook {}: no caBundle", w.name));
            continue;
        };
        if let Err(e) = super::tls::verify(&chain, &bundle.0, &host, o.now) {
            problems.push(format!("webhook {}: {e}", w.name));
        }
    }
    let valid = if problems.is_empty() { Check::pass(TITLE) } else { Check::fail(TITLE, problems, &secret_hint) };
    let lifetime = match super::tls::not_after(&chain[0]) {
        Ok(not_after) => cert_lifetime(not_after, o.now, ns),
        Err(e) => Check::fail(
            "injector cert is valid for at least 7 days",
            vec![format!("tls.crt of Secret {INJECTOR_TLS}: {e}")],
            &secret_hint,
        ),
    };
    vec![valid, lifetime]
}

/// Fails within [`MIN_CERT_LIFETIME`] of the certificate's end.
pub fn cert_lifetime(not_after: SystemTime, now: SystemTime, ns: &str) -> Check {
    const TITLE: &str = "injector cert is valid for at least 7 days";
    let when = humantime::format_rfc3339_seconds(not_after);
    let detail = match not_after.duration_since(now) {
        Ok(left) if left >= MIN_CERT_LIFETIME => return Check::pass(TITLE),
        Ok(left) => format!("the certificate expires on {when}, in {}", days_or_hours(left)),
        Err(_) => format!("the certificate expired on {when}"),
    };
    Check::fail(
        TITLE,
        vec![detail],
        &format!(
            "renew Secret {INJECTOR_TLS} and the webhook's caBundle before it expires (weft install renews them), \
             then kubectl -n {ns} rollout restart deployment {INJECTOR}"
        ),
    )
}

/// `3 days`, `1 day`, `5 hours`: how far an expiry is, as a person says it.
fn days_or_hours(d: Duration) -> String {
    let (days, hours) = (d.as_secs() / 86_400, d.as_secs() / 3_600);
    match (days, hours) {
        (0, 1) => "1 hour".into(),
        (0, h) => format!("{h} hours"),
        (1, _) => "1 day".into(),
        (d, _) => format!("{d} days"),
    }
}

fn webhook_reachable(o: &Observed) -> Check {
    const TITLE: &str = "injector webhook is reachable";
    let ns = &o.namespace;
    match &o.probe {
        Probe::Injected { .. } => Check::pass(TITLE),
        Probe::NotInjected { namespace } => Check::fail(
            TITLE,
            vec![format!(
                "a Pod created in {namespace} with dryRun=All came back without {PROXY_CONTAINER}: the API server did \
                 not get a patch from the webhook, and its failurePolicy let the Pod through uninjected"
            )],
            &format!(
                "is the injector running and ready (kubectl -n {ns} get pods -l app.kubernetes.io/name={INJECTOR})? \
                 Then its Service's endpoints, a NetworkPolicy between the API server and the injector, and the \
                 caBundle (above) are the usual causes; the API server's log names the webhook call's error"
            ),
        ),
        Probe::Refused { namespace, error } => Check::fail(
            TITLE,
            vec![format!("a Pod created in {namespace} with dryRun=All was refused: {error}")],
            "a webhook with failurePolicy: Fail refuses Pods while the injector is unreachable, and one whose \
             sideEffects is not None or NoneOnDryRun refuses every dry run; kubectl describe \
             mutatingwebhookconfiguration shows both",
        ),
    }
}

/// Does the label selector match these labels? (`matchLabels` and
/// `matchExpressions` with In, NotIn, Exists, DoesNotExist; an absent
/// selector matches everything, as the API server reads it.)
pub fn selector_matches(selector: Option<&LabelSelector>, labels: &BTreeMap<String, String>) -> bool {
    let Some(s) = selector else { return true };
    let labels_ok = s.match_labels.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    let expressions_ok = s.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        match (e.operator.as_str(), labels.get(&e.key)) {
            ("In", Some(v)) => values.contains(v),
            ("In", None) => false,
            ("NotIn", Some(v)) => !values.contains(v),
            ("NotIn", None) => true,
            ("Exists", found) => found.is_some(),
            ("DoesNotExist", found) => found.is_none(),
            _ => false,
        }
    });
    labels_ok && expressions_ok
}

/// Where to send the probe: the first namespace (by name) labelled
/// `weft.dev/inject=enabled` that the webhook is sent Pods of, where real
/// Pods go; else `default`.
pub fn probe_namespace(namespaces: &[Namespace], webhook: &Read<MutatingWebhookConfiguration>, own: &str) -> String {
    let webhooks = match webhook {
        Ok(Some(w)) => w.webhooks.clone().unwrap_or_default(),
        _ => Vec::new(),
    };
    let mut candidates: Vec<&str> = namespaces
        .iter()
        .filter(|n| {
            let labels = n.metadata.labels.clone().unwrap_or_default();
            labels.get(INJECT).map(String::as_str) == Some("enabled")
                && n.metadata.deletion_timestamp.is_none()
                && (webhooks.is_empty()
                    || webhooks.iter().any(|w| selector_matches(w.namespace_selector.as_ref(), &labels)))
        })
        .filter_map(|n| n.metadata.name.as_deref())
        .filter(|n| *n != own)
        .collect();
    candidates.sort_unstable();
    candidates.first().map_or_else(|| "default".to_owned(), |n| (*n).to_owned())
}

/// The Pods the injector should have injected and did not: what `mutate`
/// decides for each running or pending Pod, among those the webhook is
/// sent (its namespace and object selectors, when it can be read).
/// Finished Pods (Succeeded, Failed) and Pods being deleted are left out:
/// restarting them means nothing.
pub fn uninjected(o: &Observed, pods: &[Pod], namespaces: &[Namespace]) -> Vec<String> {
    let settings = decision_settings(&o.namespace);
    let by_name: BTreeMap<&str, &Namespace> =
        namespaces.iter().filter_map(|n| Some((n.metadata.name.as_deref()?, n))).collect();
    let webhooks = match &o.webhook {
        Ok(Some(w)) => w.webhooks.clone(),
        _ => None,
    };
    let mut missing = Vec::new();
    for pod in pods {
        let (Some(name), Some(ns_name)) = (pod.metadata.name.as_deref(), pod.metadata.namespace.as_deref()) else {
            continue;
        };
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or_default();
        if matches!(phase, "Succeeded" | "Failed") || pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let ns = by_name.get(ns_name);
        let ns_labels = ns.and_then(|n| n.metadata.labels.clone()).unwrap_or_default();
        let pod_labels = pod.metadata.labels.clone().unwrap_or_default();
        if let Some(webhooks) = &webhooks {
            let sent = webhooks.iter().any(|w| {
                selector_matches(w.namespace_selector.as_ref(), &ns_labels)
                    && selector_matches(w.object_selector.as_ref(), &pod_labels)
            });
            if !sent {
                continue;
            }
        }
        let info = NamespaceInfo {
            name: ns_name.to_owned(),
            labels: ns_labels,
            annotations: ns.and_then(|n| n.metadata.annotations.clone()).unwrap_or_default(),
        };
        let Ok(value) = serde_json::to_value(pod) else { continue };
        if let Decision::Inject(_) = mutate(&value, &info, &settings) {
            missing.push(format!("{ns_name}/{name}"));
        }
    }
    missing.sort();
    missing
}

/// Settings for asking `mutate` its decision only: the patch it also
/// builds is dropped, so only Weft's namespace matters.
fn decision_settings(own_namespace: &str) -> Settings {
    Settings {
        proxy_image: String::new(),
        control_plane: String::new(),
        control_plane_name: String::new(),
        trust_domain: String::new(),
        own_namespace: own_namespace.to_owned(),
        version: String::new(),
        token_seconds: 3600,
        trust_anchors_pem: None,
        proxy: Default::default(),
        sidecar: Default::default(),
    }
}

/// `* a`, `* b`, … at most [`MAX_LISTED`], then how many more.
fn listed(items: &[String]) -> Vec<String> {
    let mut lines: Vec<String> = items.iter().take(MAX_LISTED).map(|i| format!("    * {i}")).collect();
    if items.len() > MAX_LISTED {
        lines.push(format!("    … and {} more", items.len() - MAX_LISTED));
    }
    lines
}

fn pods_have_the_proxy(o: &Observed) -> Check {
    const TITLE: &str = "every pod meant to be injected has the proxy";
    let (pods, namespaces) = match (&o.pods, &o.namespaces) {
        (Ok(p), Ok(n)) => (p, n),
        (Err(e), _) => return Check::fail(TITLE, vec![format!("cannot list Pods: {e}")], RBAC_HINT),
        (_, Err(e)) => return Check::fail(TITLE, vec![format!("cannot list Namespaces: {e}")], RBAC_HINT),
    };
    let missing = uninjected(o, pods, namespaces);
    if missing.is_empty() {
        return Check::pass(TITLE);
    }
    let mut details = vec![format!(
        "{} {} without the proxy although {INJECT} selects {}:",
        missing.len(),
        if missing.len() == 1 { "pod runs" } else { "pods run" },
        if missing.len() == 1 { "it" } else { "them" },
    )];
    details.extend(listed(&missing));
    Check::fail(
        TITLE,
        details,
        "they were created while the injector was down or unreachable (failurePolicy: Ignore lets Pods through), \
         or before their namespace was labelled: once `injector webhook is reachable` passes, restart their \
         workloads (kubectl -n NAMESPACE rollout restart deployment NAME) or delete the Pods",
    )
}

/// `Some(version)` for a Pod with the proxy (`unknown` when it has no
/// `weft.dev/injected-version`), `None` for one without.
pub fn proxy_version(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let has = spec.containers.iter().chain(spec.init_containers.iter().flatten()).any(|c| c.name == PROXY_CONTAINER);
    has.then(|| {
        pod.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(INJECTED_VERSION))
            .cloned()
            .unwrap_or_else(|| "unknown".into())
    })
}

fn versions_match(o: &Observed) -> Check {
    const TITLE: &str = "data plane and cli versions match";
    let Ok(pods) = &o.pods else {
        return Check::fail(TITLE, vec!["cannot list Pods (see above)".into()], RBAC_HINT);
    };
    let mut other: Vec<String> = pods
        .iter()
        .filter_map(|p| {
            let v = proxy_version(p)?;
            let who = format!("{}/{}", p.metadata.namespace.as_deref()?, p.metadata.name.as_deref()?);
            (v != o.cli_version).then(|| format!("{who} runs {v}"))
        })
        .collect();
    if other.is_empty() {
        return Check::pass(TITLE);
    }
    other.sort();
    let mut details = vec![format!(
        "{} injected by another version than the cli's {}:",
        if other.len() == 1 { "1 pod was".to_owned() } else { format!("{} pods were", other.len()) },
        o.cli_version
    )];
    details.extend(listed(&other));
    Check::warn(
        TITLE,
        details,
        "restart those workloads to get the injector's current proxy, or use the cli of the installed version",
    )
}
