//! Table tests of the checks' decisions: given these objects, which line
//! passes or fails, and what it names.

use std::time::SystemTime;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType, date_time_ymd};
use serde_json::{Value, json};

use super::decide::{cert_lifetime, probe_namespace, proxy_version, selector_matches, uninjected, webhook_host};
use super::*;

fn from<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("a valid object")
}

fn time(rfc3339: &str) -> SystemTime {
    humantime::parse_rfc3339(rfc3339).expect("a time")
}

fn namespace(name: &str, labels: Value) -> Namespace {
    let mut labels = labels;
    labels["kubernetes.io/metadata.name"] = json!(name);
    from(json!({"metadata": {"name": name, "labels": labels}}))
}

/// A Pod in `ns`; `proxy`: with `weft-proxy` as a native sidecar (and
/// `version` as its injected-version, if any).
fn pod(ns: &str, name: &str, proxy: bool, version: Option<&str>, extra: Value) -> Pod {
    let mut v = json!({
        "metadata": {"name": name, "namespace": ns, "annotations": {}},
        "spec": {"containers": [{"name": "app", "image": "app:1"}]},
        "status": {"phase": "Pending"},
    });
    if proxy {
        v["spec"]["initContainers"] = json!([{"name": "weft-init"}, {"name": "weft-proxy", "restartPolicy": "Always"}]);
    }
    if let Some(version) = version {
        v["metadata"]["annotations"]["weft.dev/injected-version"] = json!(version);
    }
    merge(&mut v, extra);
    from(v)
}

fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (slot, v) => *slot = v,
    }
}

/// The shipped webhook configuration's selectors (manifests/install/injector.yaml).
fn webhook_config(client_config: Value) -> MutatingWebhookConfiguration {
    from(json!({
        "metadata": {"name": "weft-injector"},
        "webhooks": [{
            "name": "inject.weft.dev",
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "clientConfig": client_config,
            "namespaceSelector": {"matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                 "values": ["kube-system", "kube-public", "kube-node-lease", "weft-system"]},
                {"key": "weft.dev/injector", "operator": "NotIn", "values": ["disabled"]},
            ]},
        }],
    }))
}

fn service_client_config(ca_pem: &str) -> Value {
    json!({"service": {"name": "weft-injector", "namespace": "weft-system", "path": "/inject"},
           "caBundle": base64(ca_pem.as_bytes())})
}

fn base64(bytes: &[u8]) -> String {
    // The standard alphabet with padding, as the API server's []byte JSON.
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            out.push(if i <= chunk.len() { ABC[(n >> (18 - 6 * i)) as usize & 63] as char } else { '=' });
        }
    }
    out
}

/// Observed state of a healthy install, at 2024-06-01.
fn healthy(pki: &Pki) -> Observed {
    Observed {
        namespace: "weft-system".into(),
        weft_namespace: Ok(Some(namespace("weft-system", json!({})))),
        control_plane: Ok(Some(from(json!({
            "metadata": {"name": "weft-control", "namespace": "weft-system"},
            "spec": {"replicas": 2, "selector": {}, "template": {}},
            "status": {"availableReplicas": 2},
        })))),
        webhook: Ok(Some(webhook_config(service_client_config(&pki.ca_pem)))),
        tls: Ok(Some(pki.secret(&pki.leaf_pem, &pki.leaf_key))),
        namespaces: Ok(vec![
            namespace("weft-system", json!({})),
            namespace("kube-system", json!({})),
            namespace("shop", json!({"weft.dev/inject": "enabled"})),
            namespace("plain", json!({})),
        ]),
        pods: Ok(vec![
            pod("shop", "web-1", true, Some("0.1.0"), json!({})),
            pod("plain", "batch-1", false, None, json!({})),
            pod("weft-system", "weft-control-1", false, None, json!({})),
        ]),
        probe: Probe::Injected { namespace: "shop".into() },
        now: time("2024-06-01T00:00:00Z"),
        cli_version: "0.1.0".into(),
    }
}

/// A CA, and a serving certificate it signed for the shipped webhook's
/// Service name, valid 2024-01-01 to 2025-01-01.
struct Pki {
    ca_pem: String,
    other_ca_pem: String,
    leaf_pem: String,
    leaf_key: String,
    other_key: String,
    wrong_name_pem: String,
    ip_pem: String,
}

impl Pki {
    fn new() -> Pki {
        let ca = |cn: &str| {
            let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
            p.distinguished_name.push(rcgen::DnType::CommonName, cn);
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.not_before = date_time_ymd(2020, 1, 1);
            p.not_after = date_time_ymd(2040, 1, 1);
            let key = KeyPair::generate().expect("key");
            let cert = p.self_signed(&key).expect("CA");
            (cert.pem(), Issuer::new(p, key))
        };
        let (ca_pem, issuer) = ca("weft-injector-ca");
        let (other_ca_pem, _) = ca("another-ca");
        let leaf_key = KeyPair::generate().expect("key");
        let leaf = |sans: Vec<SanType>| {
            let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
            p.subject_alt_names = sans;
            p.not_before = date_time_ymd(2024, 1, 1);
            p.not_after = date_time_ymd(2025, 1, 1);
            p.signed_by(&leaf_key, &issuer).expect("leaf").pem()
        };
        let dns = |n: &str| SanType::DnsName(n.try_into().expect("a DNS name"));
        Pki {
            leaf_pem: leaf(vec![dns("weft-injector.weft-system.svc")]),
            wrong_name_pem: leaf(vec![dns("other.weft-system.svc")]),
            ip_pem: leaf(vec![SanType::IpAddress([127, 0, 0, 1].into())]),
            leaf_key: leaf_key.serialize_pem(),
            other_key: KeyPair::generate().expect("key").serialize_pem(),
            ca_pem,
            other_ca_pem,
        }
    }

    fn secret(&self, crt: &str, key: &str) -> Secret {
        from(json!({
            "metadata": {"name": "weft-injector-tls", "namespace": "weft-system"},
            "data": {"tls.crt": base64(crt.as_bytes()), "tls.key": base64(key.as_bytes()),
                     "ca.crt": base64(self.ca_pem.as_bytes())},
        }))
    }
}

/// The one check called `title`.
fn check<'a>(sections: &'a [Section], title: &str) -> &'a Check {
    sections.iter().flat_map(|s| &s.checks).find(|c| c.title == title).unwrap_or_else(|| panic!("no check {title:?}"))
}

#[test]
fn a_healthy_install_passes_every_check() {
    let pki = Pki::new();
    let sections = decide(&healthy(&pki));
    let text = render(&sections);
    assert_eq!(
        text,
        "weft-control-plane
------------------
√ control plane Namespace exists
√ control plane pods are ready

weft-webhook
------------
√ injector webhook is configured
√ injector webhook has valid cert
√ injector cert is valid for at least 7 days
√ injector webhook is reachable

weft-data-plane
---------------
√ every pod meant to be injected has the proxy
√ data plane and cli versions match

Status check results are √
"
    );
    assert!(passed(&sections));
}

#[test]
fn each_problem_fails_its_own_check_and_says_what_it_found() {
    let pki = Pki::new();
    type Change = Box<dyn Fn(&mut Observed)>;
    // (case, change to the healthy state, the check, its status, the start of its first detail line)
    let cases: Vec<(&str, Change, &str, Status, &str)> = vec![
        (
            "no namespace",
            Box::new(|o| o.weft_namespace = Ok(None)),
            "control plane Namespace exists",
            Status::Fail,
            "the \"weft-system\" namespace does not exist",
        ),
        (
            "no control plane",
            Box::new(|o| o.control_plane = Ok(None)),
            "control plane pods are ready",
            Status::Fail,
            "no Deployment weft-control in namespace weft-system",
        ),
        (
            "no ready control plane pod",
            Box::new(|o| {
                if let Ok(Some(d)) = &mut o.control_plane {
                    d.status = None;
                }
            }),
            "control plane pods are ready",
            Status::Fail,
            "no ready pod of Deployment weft-control (0 of 2 available)",
        ),
        (
            "one of two is enough to serve",
            Box::new(|o| {
                if let Ok(Some(d)) = &mut o.control_plane {
                    d.status.as_mut().expect("status").available_replicas = Some(1);
                }
            }),
            "control plane pods are ready",
            Status::Pass,
            "",
        ),
        (
            "forbidden",
            Box::new(|o| o.control_plane = Err("deployments.apps \"weft-control\" is forbidden".into())),
            "control plane pods are ready",
            Status::Fail,
            "cannot read Deployment weft-control: deployments.apps \"weft-control\" is forbidden",
        ),
        (
            "no webhook configuration",
            Box::new(|o| o.webhook = Ok(None)),
            "injector webhook is configured",
            Status::Fail,
            "no MutatingWebhookConfiguration weft-injector",
        ),
        (
            "no secret",
            Box::new(|o| o.tls = Ok(None)),
            "injector webhook has valid cert",
            Status::Fail,
            "no Secret weft-injector-tls in namespace weft-system",
        ),
        (
            "no key in the secret",
            Box::new(|o| {
                if let Ok(Some(s)) = &mut o.tls {
                    s.data.as_mut().expect("data").remove("tls.key");
                }
            }),
            "injector webhook has valid cert",
            Status::Fail,
            "Secret weft-injector-tls needs tls.crt and tls.key",
        ),
        (
            "the key of another certificate",
            {
                let s = pki.secret(&pki.leaf_pem, &pki.other_key);
                Box::new(move |o| o.tls = Ok(Some(s.clone())))
            },
            "injector webhook has valid cert",
            Status::Fail,
            "tls.key of Secret weft-injector-tls: not the private key of tls.crt",
        ),
        (
            "a caBundle of another CA",
            {
                let other = pki.other_ca_pem.clone();
                Box::new(move |o| o.webhook = Ok(Some(webhook_config(service_client_config(&other)))))
            },
            "injector webhook has valid cert",
            Status::Fail,
            "webhook inject.weft.dev: tls.crt is not signed by a CA of the caBundle",
        ),
        (
            "no caBundle",
            Box::new(|o| {
                o.webhook =
                    Ok(Some(webhook_config(json!({"service": {"name": "weft-injector", "namespace": "weft-system"}}))))
            }),
            "injector webhook has valid cert",
            Status::Fail,
            "webhook inject.weft.dev: no caBundle",
        ),
        (
            "a certificate for another name",
            {
                let s = pki.secret(&pki.wrong_name_pem, &pki.leaf_key);
                Box::new(move |o| o.tls = Ok(Some(s.clone())))
            },
            "injector webhook has valid cert",
            Status::Fail,
            "webhook inject.weft.dev: tls.crt is not valid for weft-injector.weft-system.svc (it names other.weft-system.svc)",
        ),
        (
            "a URL webhook on 127.0.0.1 and an IP certificate",
            {
                let (s, ca) = (pki.secret(&pki.ip_pem, &pki.leaf_key), pki.ca_pem.clone());
                Box::new(move |o| {
                    o.tls = Ok(Some(s.clone()));
                    o.webhook = Ok(Some(webhook_config(
                        json!({"url": "https://127.0.0.1:8443/inject", "caBundle": base64(ca.as_bytes())}),
                    )));
                })
            },
            "injector webhook has valid cert",
            Status::Pass,
            "",
        ),
        (
            "expired",
            Box::new(|o| o.now = time("2025-02-01T00:00:00Z")),
            "injector webhook has valid cert",
            Status::Fail,
            "webhook inject.weft.dev: tls.crt expired on 2025-01-01T00:00:00Z",
        ),
        (
            "not valid yet",
            Box::new(|o| o.now = time("2023-12-01T00:00:00Z")),
            "injector webhook has valid cert",
            Status::Fail,
            "webhook inject.weft.dev: tls.crt is not valid before 2024-01-01T00:00:00Z",
        ),
        (
            "expires in 3 days",
            Box::new(|o| o.now = time("2024-12-29T00:00:00Z")),
            "injector cert is valid for at least 7 days",
            Status::Fail,
            "the certificate expires on 2025-01-01T00:00:00Z, in 3 days",
        ),
        (
            "expires in 3 days but is valid now",
            Box::new(|o| o.now = time("2024-12-29T00:00:00Z")),
            "injector webhook has valid cert",
            Status::Pass,
            "",
        ),
        (
            "the dry-run Pod comes back without the proxy",
            Box::new(|o| o.probe = Probe::NotInjected { namespace: "shop".into() }),
            "injector webhook is reachable",
            Status::Fail,
            "a Pod created in shop with dryRun=All came back without weft-proxy",
        ),
        (
            "the dry-run Pod is refused",
            Box::new(|o| o.probe = Probe::Refused { namespace: "shop".into(), error: "Internal error".into() }),
            "injector webhook is reachable",
            Status::Fail,
            "a Pod created in shop with dryRun=All was refused: Internal error",
        ),
        (
            "a pod of a labelled namespace without the proxy",
            Box::new(|o| {
                if let Ok(pods) = &mut o.pods {
                    pods.push(pod("shop", "late-2", false, None, json!({})));
                    pods.push(pod("shop", "late-1", false, None, json!({})));
                }
            }),
            "every pod meant to be injected has the proxy",
            Status::Fail,
            "2 pods run without the proxy although weft.dev/inject selects them:",
        ),
        (
            "pods cannot be listed",
            Box::new(|o| o.pods = Err("pods is forbidden".into())),
            "every pod meant to be injected has the proxy",
            Status::Fail,
            "cannot list Pods: pods is forbidden",
        ),
        (
            "an older proxy is a warning",
            Box::new(|o| {
                if let Ok(pods) = &mut o.pods {
                    pods.push(pod("shop", "old-1", true, Some("0.0.9"), json!({})));
                    pods.push(pod("shop", "hand-1", true, None, json!({})));
                }
            }),
            "data plane and cli versions match",
            Status::Warn,
            "2 pods were injected by another version than the cli's 0.1.0:",
        ),
    ];
    for (case, change, title, status, detail) in cases {
        let mut o = healthy(&pki);
        change(&mut o);
        let sections = decide(&o);
        let c = check(&sections, title);
        assert_eq!(c.status, status, "{case}: {c:?}");
        let first = c.details.first().map(String::as_str).unwrap_or_default();
        assert!(first.starts_with(detail) && (first.is_empty() == detail.is_empty()), "{case}: {c:?}");
        assert_eq!(c.hint.is_some(), status != Status::Pass, "{case}: a hint with every problem");
        let others_fail = sections.iter().flat_map(|s| &s.checks).filter(|o| o.status == Status::Fail).count();
        let own = usize::from(status == Status::Fail);
        // A missing webhook configuration also leaves no caBundle for the
        // cert; an expired cert is not valid for 7 more days either; and
        // the case valid now fails the 7 days; Pods that cannot be listed
        // have no versions to compare.
        let related = usize::from(matches!(
            case,
            "no webhook configuration" | "expired" | "expires in 3 days but is valid now" | "pods cannot be listed"
        ));
        assert_eq!(others_fail, own + related, "{case}: only its own check fails:\n{}", render(&sections));
        assert_eq!(passed(&sections), own + related == 0, "{case}");
    }
}

#[test]
fn a_failed_check_lists_what_it_found_and_a_hint() {
    let pki = Pki::new();
    let mut o = healthy(&pki);
    if let Ok(pods) = &mut o.pods {
        pods.push(pod("shop", "late-2", false, None, json!({})));
        pods.push(pod("shop", "old-1", true, Some("0.0.9"), json!({})));
    }
    let sections = decide(&o);
    let data_plane = render(&sections[2..]);
    assert_eq!(
        data_plane,
        "weft-data-plane
---------------
× every pod meant to be injected has the proxy
    1 pod runs without the proxy although weft.dev/inject selects it:
        * shop/late-2
    hint: they were created while the injector was down or unreachable (failurePolicy: Ignore lets Pods through), \
or before their namespace was labelled: once `injector webhook is reachable` passes, restart their workloads \
(kubectl -n NAMESPACE rollout restart deployment NAME) or delete the Pods
‼ data plane and cli versions match
    1 pod was injected by another version than the cli's 0.1.0:
        * shop/old-1 runs 0.0.9
    hint: restart those workloads to get the injector's current proxy, or use the cli of the installed version

Status check results are ×
"
    );
}

#[test]
fn which_pods_should_have_the_proxy() {
    let pki = Pki::new();
    let o = healthy(&pki);
    let namespaces = vec![
        namespace("shop", json!({"weft.dev/inject": "enabled"})),
        namespace("annotated", json!({})),
        namespace("plain", json!({})),
        namespace("off", json!({"weft.dev/inject": "enabled", "weft.dev/injector": "disabled"})),
        namespace("kube-system", json!({"weft.dev/inject": "enabled"})),
        namespace("weft-system", json!({"weft.dev/inject": "enabled"})),
    ];
    let mut namespaces = namespaces;
    namespaces[1].metadata.annotations = Some([("weft.dev/inject".to_owned(), "enabled".to_owned())].into());
    // (case, pod, should be listed)
    let cases: Vec<(&str, Pod, bool)> = vec![
        ("labelled namespace, no proxy", pod("shop", "a", false, None, json!({})), true),
        ("labelled namespace, proxy", pod("shop", "b", true, Some("0.1.0"), json!({})), false),
        ("annotated namespace, no proxy", pod("annotated", "c", false, None, json!({})), true),
        ("plain namespace", pod("plain", "d", false, None, json!({})), false),
        (
            "plain namespace, the pod opts in",
            pod("plain", "e", false, None, json!({"metadata": {"annotations": {"weft.dev/inject": "enabled"}}})),
            true,
        ),
        (
            "labelled namespace, the pod opts out",
            pod("shop", "f", false, None, json!({"metadata": {"annotations": {"weft.dev/inject": "disabled"}}})),
            false,
        ),
        ("hostNetwork", pod("shop", "g", false, None, json!({"spec": {"hostNetwork": true}})), false),
        ("finished", pod("shop", "h", false, None, json!({"status": {"phase": "Succeeded"}})), false),
        ("failed", pod("shop", "i", false, None, json!({"status": {"phase": "Failed"}})), false),
        (
            "being deleted",
            pod("shop", "j", false, None, json!({"metadata": {"deletionTimestamp": "2024-06-01T00:00:00Z"}})),
            false,
        ),
        ("the webhook is not sent its pods", pod("off", "k", false, None, json!({})), false),
        ("kube-system", pod("kube-system", "l", false, None, json!({})), false),
        ("Weft's own", pod("weft-system", "m", false, None, json!({})), false),
        (
            "another mesh",
            pod("shop", "n", false, None, json!({"spec": {"containers": [{"name": "linkerd-proxy"}]}})),
            false,
        ),
        ("running", pod("shop", "o", false, None, json!({"status": {"phase": "Running"}})), true),
    ];
    for (case, p, listed) in &cases {
        let got = uninjected(&o, std::slice::from_ref(p), &namespaces);
        let name =
            format!("{}/{}", p.metadata.namespace.as_deref().unwrap_or(""), p.metadata.name.as_deref().unwrap_or(""));
        assert_eq!(got, if *listed { vec![name] } else { vec![] }, "{case}");
    }
    // Without a readable webhook configuration, mutate alone decides.
    let mut blind = o.clone();
    blind.webhook = Ok(None);
    let k = pod("off", "k", false, None, json!({}));
    assert_eq!(uninjected(&blind, &[k], &namespaces), ["off/k"]);
}

#[test]
fn label_selectors_as_the_api_server_reads_them() {
    let labels = |v: Value| -> std::collections::BTreeMap<String, String> { from(v) };
    // (case, selector, labels, matches)
    let cases: Vec<(&str, Option<Value>, Value, bool)> = vec![
        ("no selector", None, json!({}), true),
        ("empty selector", Some(json!({})), json!({"a": "1"}), true),
        ("matchLabels", Some(json!({"matchLabels": {"a": "1"}})), json!({"a": "1", "b": "2"}), true),
        ("matchLabels, other value", Some(json!({"matchLabels": {"a": "1"}})), json!({"a": "2"}), false),
        (
            "In",
            Some(json!({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1", "2"]}]})),
            json!({"a": "2"}),
            true,
        ),
        (
            "In, absent",
            Some(json!({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1"]}]})),
            json!({}),
            false,
        ),
        (
            "NotIn",
            Some(json!({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]})),
            json!({"a": "1"}),
            false,
        ),
        (
            "NotIn, absent",
            Some(json!({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]})),
            json!({}),
            true,
        ),
        ("Exists", Some(json!({"matchExpressions": [{"key": "a", "operator": "Exists"}]})), json!({"a": ""}), true),
        (
            "DoesNotExist",
            Some(json!({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]})),
            json!({"a": "x"}),
            false,
        ),
        (
            "all must hold",
            Some(json!({"matchLabels": {"a": "1"}, "matchExpressions": [{"key": "b", "operator": "Exists"}]})),
            json!({"a": "1"}),
            false,
        ),
    ];
    for (case, selector, l, want) in cases {
        let selector = selector.map(from);
        assert_eq!(selector_matches(selector.as_ref(), &labels(l)), want, "{case}");
    }
}

#[test]
fn the_name_the_webhook_is_called_by() {
    let hook = |cc: Value| webhook_config(cc).webhooks.expect("webhooks").remove(0);
    // (client config, the host its certificate must name)
    let cases: Vec<(Value, Option<&str>)> = vec![
        (
            json!({"service": {"name": "weft-injector", "namespace": "weft-system"}}),
            Some("weft-injector.weft-system.svc"),
        ),
        (json!({"url": "https://127.0.0.1:8443/inject"}), Some("127.0.0.1")),
        (json!({"url": "https://[::1]:8443/inject"}), Some("::1")),
        (json!({"url": "https://injector.example.com/inject?x=1"}), Some("injector.example.com")),
        (json!({"url": "https://user@host:1/"}), Some("host")),
        (json!({"url": "not a url"}), None),
        (json!({}), None),
    ];
    for (cc, want) in cases {
        assert_eq!(webhook_host(&hook(cc.clone())).as_deref(), want, "{cc}");
    }
}

#[test]
fn the_probe_goes_where_real_pods_go() {
    let pki = Pki::new();
    let webhook = healthy(&pki).webhook;
    // (case, namespaces, where)
    let cases: Vec<(&str, Vec<Namespace>, &str)> = vec![
        ("none labelled", vec![namespace("plain", json!({}))], "default"),
        (
            "the first labelled one",
            vec![
                namespace("zoo", json!({"weft.dev/inject": "enabled"})),
                namespace("shop", json!({"weft.dev/inject": "enabled"})),
            ],
            "shop",
        ),
        (
            "not one the webhook skips",
            vec![
                namespace("aaa", json!({"weft.dev/inject": "enabled", "weft.dev/injector": "disabled"})),
                namespace("shop", json!({"weft.dev/inject": "enabled"})),
            ],
            "shop",
        ),
        ("not Weft's own", vec![namespace("weft-system", json!({"weft.dev/inject": "enabled"}))], "default"),
    ];
    for (case, namespaces, want) in cases {
        assert_eq!(probe_namespace(&namespaces, &webhook, "weft-system"), want, "{case}");
    }
}

#[test]
fn proxies_versions() {
    assert_eq!(proxy_version(&pod("a", "b", false, None, json!({}))), None);
    assert_eq!(proxy_version(&pod("a", "b", true, Some("0.1.0"), json!({}))).as_deref(), Some("0.1.0"));
    assert_eq!(proxy_version(&pod("a", "b", true, None, json!({}))).as_deref(), Some("unknown"));
    // A classic sidecar counts too.
    let classic =
        pod("a", "b", false, Some("0.1.0"), json!({"spec": {"containers": [{"name": "app"}, {"name": "weft-proxy"}]}}));
    assert_eq!(proxy_version(&classic).as_deref(), Some("0.1.0"));
}

#[test]
fn certificate_lifetime_boundaries() {
    let not_after = time("2025-01-01T00:00:00Z");
    // (now, passes)
    for (now, pass) in [
        ("2024-12-24T23:59:59Z", true),
        ("2024-12-25T00:00:00Z", true),
        ("2024-12-25T00:00:01Z", false),
        ("2025-01-02T00:00:00Z", false),
    ] {
        let c = cert_lifetime(not_after, time(now), "weft-system");
        assert_eq!(c.status == Status::Pass, pass, "{now}: {c:?}");
    }
    let expired = cert_lifetime(not_after, time("2025-01-02T00:00:00Z"), "weft-system");
    assert_eq!(expired.details, ["the certificate expired on 2025-01-01T00:00:00Z"]);
}

#[test]
fn the_api_section_stops_at_the_first_failure() {
    let failed = decide::api_section(&Err("no kubeconfig".into()), None);
    assert_eq!(
        render(&[failed]),
        "kubernetes-api
--------------
× can initialize the client
    no kubeconfig
    hint: check --kubeconfig, $KUBECONFIG or ~/.kube/config and --context; `kubectl cluster-info` must work \
with the same settings

Status check results are ×
"
    );
    let ok = decide::api_section(&Ok(()), Some(&Ok(())));
    assert_eq!(ok.checks.len(), 2);
    assert!(passed(&[ok]));
}
