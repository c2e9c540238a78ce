//! The Helm chart (`manifests/chart/weft/`) and `weft install` / `weft
//! uninstall`, with the real helm, kubectl and API server:
//!
//! - `helm lint --strict` passes with the default and the `ci/` values;
//! - `manifests/install/`, `manifests/control-plane-rbac.yaml` and the
//!   chart's `crds/` are exactly what `manifests/render.sh` makes now;
//! - `helm template` with the default, the custom and the cert-manager
//!   values: every object is accepted by the API server (`--dry-run=server`),
//!   exactly the objects expected;
//! - `weft install` renders, object for object, what `helm template`
//!   renders from the same values (its generated key material handed to
//!   helm), so the two renderers cannot drift apart;
//! - `weft install | kubectl apply -f -` on a cluster of its own creates
//!   exactly the expected objects, a second apply changes nothing, and
//!   `weft uninstall | kubectl delete -f -` leaves no object labelled
//!   `app.kubernetes.io/part-of=weft`;
//! - bad values fail, with `weft install` and with helm, saying why.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use weft_tests::{KubeCluster, Run, cert_manager_crds, eventually, kube_bin, manifests_dir, run_logged, weft_bin};

/// The deadline of one helm or weft command.
const TOOL_TIMEOUT: Duration = Duration::from_secs(60);

fn chart() -> PathBuf {
    manifests_dir().join("chart").join("weft")
}

fn ci_values(name: &str) -> String {
    chart().join("ci").join(name).display().to_string()
}

/// A directory of this test's own, `/tmp/weft-tests/chart-<pid>-<name>`,
/// emptied first.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join("weft-tests").join(format!("chart-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

fn run(mut cmd: Command, dir: &Path, label: &str) -> Run {
    // No helm or kubectl state from $HOME: every run starts from nothing.
    cmd.env("HELM_CACHE_HOME", dir.join("helm-cache"))
        .env("HELM_CONFIG_HOME", dir.join("helm-config"))
        .env("HELM_DATA_HOME", dir.join("helm-data"));
    run_logged(cmd, (dir.join(format!("{label}.stdout")), dir.join(format!("{label}.stderr"))), TOOL_TIMEOUT)
}

fn helm(dir: &Path, args: &[&str]) -> Run {
    let mut cmd = Command::new(kube_bin("helm"));
    cmd.args(args);
    run(cmd, dir, "helm")
}

fn weft(dir: &Path, args: &[&str]) -> Run {
    let mut cmd = Command::new(weft_bin());
    cmd.args(args);
    run(cmd, dir, "weft")
}

/// `helm template weft CHART --include-crds -n NAMESPACE ARGS`.
fn helm_template(dir: &Path, namespace: &str, args: &[&str]) -> Run {
    let chart = chart().display().to_string();
    let mut all = vec!["template", "weft", &chart, "--include-crds", "--namespace", namespace];
    all.extend_from_slice(args);
    helm(dir, &all).ok()
}

/// The objects of a multi-document YAML stream (documents split on `---`
/// lines; empty ones skipped).
fn documents(text: &str) -> Vec<Value> {
    let mut docs = vec![String::new()];
    for line in text.lines() {
        if line.trim_end() == "---" {
            docs.push(String::new());
        } else if let Some(doc) = docs.last_mut() {
            doc.push_str(line);
            doc.push('\n');
        }
    }
    docs.iter()
        .map(|doc| {
            let yaml: serde_yaml_ng::Value =
                serde_yaml_ng::from_str(doc).unwrap_or_else(|e| panic!("invalid YAML ({e}):\n{doc}"));
            serde_json::to_value(yaml).expect("YAML with string keys")
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// `Kind/name` or `Kind/namespace/name`.
fn id(object: &Value) -> String {
    let kind = object["kind"].as_str().unwrap_or("?");
    let name = object["metadata"]["name"].as_str().unwrap_or("?");
    match object["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{kind}/{ns}/{name}"),
        None => format!("{kind}/{name}"),
    }
}

fn by_id(objects: &[Value]) -> BTreeMap<String, Value> {
    let map: BTreeMap<String, Value> = objects.iter().map(|o| (id(o), o.clone())).collect();
    assert_eq!(map.len(), objects.len(), "an object appears twice: {:?}", objects.iter().map(id).collect::<Vec<_>>());
    map
}

/// `kubectl apply --dry-run=server` of `manifest`: the objects kubectl
/// names (`kind.group/name`), sorted, once every line says it was a server
/// dry run.
fn dry_run(cluster: &KubeCluster, dir: &Path, label: &str, manifest: &str) -> Vec<String> {
    let path = dir.join(format!("{label}.yaml"));
    std::fs::write(&path, manifest).expect("writing the manifest");
    let run = cluster.kubectl(&["apply", "--dry-run=server", "-f", &path.display().to_string()]);
    assert!(run.stdout.lines().all(|l| l.ends_with("(server dry run)")), "{run}");
    let mut names: Vec<String> =
        run.stdout.lines().filter_map(|l| l.split_whitespace().next()).map(str::to_owned).collect();
    names.sort();
    names
}

const CRDS: [&str; 2] = [
    "customresourcedefinition.apiextensions.k8s.io/accesspolicies.policy.weft.dev",
    "customresourcedefinition.apiextensions.k8s.io/trafficpolicies.policy.weft.dev",
];

/// The objects every rendering has (kubectl's names), besides the CRDs.
const ALWAYS: [&str; 14] = [
    "clusterrole.rbac.authorization.k8s.io/weft-control",
    "clusterrole.rbac.authorization.k8s.io/weft-injector",
    "clusterrolebinding.rbac.authorization.k8s.io/weft-control",
    "clusterrolebinding.rbac.authorization.k8s.io/weft-injector",
    "deployment.apps/weft-control",
    "deployment.apps/weft-injector",
    "mutatingwebhookconfiguration.admissionregistration.k8s.io/weft-injector",
    "poddisruptionbudget.policy/weft-control",
    "role.rbac.authorization.k8s.io/weft-injector",
    "rolebinding.rbac.authorization.k8s.io/weft-injector",
    "service/weft-control",
    "service/weft-injector",
    "serviceaccount/weft-control",
    "serviceaccount/weft-injector",
];

/// The control plane's Role for the injector's Secret: there unless
/// cert-manager keeps that Secret.
const CONTROL_ROLE: [&str; 2] =
    ["role.rbac.authorization.k8s.io/weft-control", "rolebinding.rbac.authorization.k8s.io/weft-control"];

fn expected(extra: &[&str], without: &[&str]) -> Vec<String> {
    let mut all: Vec<String> = CRDS
        .iter()
        .chain(ALWAYS.iter())
        .chain(extra.iter())
        .filter(|n| !without.contains(n))
        .map(|s| (*s).to_owned())
        .collect();
    all.sort();
    all
}

#[test]
fn helm_lint_strict_passes_with_every_values_file() {
    let dir = scratch("lint");
    let chart = chart().display().to_string();
    for values in [None, Some(ci_values("custom-values.yaml")), Some(ci_values("cert-manager-values.yaml"))] {
        let mut args = vec!["lint", "--strict", chart.as_str()];
        if let Some(values) = &values {
            args.extend(["--values", values.as_str()]);
        }
        let run = helm(&dir, &args);
        assert!(run.status.success(), "{run}");
        assert!(run.stdout.contains("1 chart(s) linted, 0 chart(s) failed"), "{run}");
        assert!(!run.stdout.contains("[WARNING]") && !run.stdout.contains("[ERROR]"), "{run}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `manifests/install/` is the chart rendered with its default values,
/// `manifests/control-plane-rbac.yaml` its namespace and control-plane
/// RBAC, and the chart's `crds/` the CRDs of `manifests/crds/`, byte for
/// byte, as `manifests/render.sh` makes them now.
#[test]
fn the_rendered_manifests_are_what_the_chart_renders_now() {
    let dir = scratch("render");
    let mut cmd = Command::new("bash");
    cmd.arg(manifests_dir().join("render.sh")).arg(&dir).env("HELM", kube_bin("helm"));
    let run = run(cmd, &dir, "render");
    assert!(run.status.success(), "{run}");
    let fix = "edit the chart (manifests/chart/weft/) or manifests/crds/, then run `bash manifests/render.sh` \
               and commit what it writes";
    let files = |d: &Path| -> BTreeMap<String, Vec<u8>> {
        std::fs::read_dir(d)
            .unwrap_or_else(|e| panic!("reading {}: {e}", d.display()))
            .map(|e| e.expect("a directory entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .map(|p| (p.file_name().expect("a name").to_string_lossy().into_owned(), std::fs::read(&p).expect("read")))
            .collect()
    };
    let repo = manifests_dir();
    for sub in ["install", "chart/weft/crds"] {
        let (want, have) = (files(&dir.join(sub)), files(&repo.join(sub)));
        assert_eq!(have.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "manifests/{sub}: {fix}");
        for (name, bytes) in &want {
            assert!(have[name] == *bytes, "manifests/{sub}/{name} is not the current render: {fix}");
        }
    }
    let rbac = std::fs::read(repo.join("control-plane-rbac.yaml")).expect("manifests/control-plane-rbac.yaml");
    assert!(
        rbac == std::fs::read(dir.join("control-plane-rbac.yaml")).expect("rendered"),
        "manifests/control-plane-rbac.yaml is not the current render: {fix}"
    );
    // One source for the CRDs: the chart's are manifests/crds/'s.
    let (crds, chart_crds) = (files(&repo.join("crds")), files(&repo.join("chart/weft/crds")));
    assert_eq!(crds, chart_crds, "manifests/chart/weft/crds/ differs from manifests/crds/: {fix}");
    assert_eq!(crds.len(), 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn helm_template_with_default_values_is_accepted_by_the_api_server() {
    let cluster = KubeCluster::shared();
    // The CRDs and the weft-system namespace (manifests/control-plane-rbac.yaml).
    cluster.install_weft();
    let dir = cluster.dir().join("chart-default");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let rendered = helm_template(&dir, "weft-system", &[]);
    let objects = dry_run(cluster, &dir, "default", &rendered.stdout);
    let extra = [&["poddisruptionbudget.policy/weft-injector"][..], &CONTROL_ROLE].concat();
    assert_eq!(objects, expected(&extra, &[]), "{}", rendered.stdout);
    // No issuer PEMs in the values: no Secret; no anchors: no caBundle.
    let docs = by_id(&documents(&rendered.stdout));
    let webhook = &docs["MutatingWebhookConfiguration/weft-injector"]["webhooks"][0];
    assert_eq!(webhook["failurePolicy"], "Ignore");
    assert_eq!(webhook["timeoutSeconds"], 10);
    assert_eq!(webhook["sideEffects"], "None");
    assert!(webhook["clientConfig"].get("caBundle").is_none());
    // The dashboard on the Pod's loopback, scraping every 5 s, no tracing.
    let container = &docs["Deployment/weft-system/weft-control"]["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<&str> = container["args"].as_array().expect("args").iter().filter_map(Value::as_str).collect();
    for want in ["--dashboard-addr=127.0.0.1:8084", "--telemetry-interval=5s", "--telemetry-retention=15m"] {
        assert!(args.contains(&want), "{want} not in {args:?}");
    }
    assert!(!args.iter().any(|a| a.starts_with("--trace-")), "{args:?}");
}

/// Every value changed (ci/custom-values.yaml) in a namespace of its own,
/// with an issuer given as PEM values: the Secret is rendered, the
/// injector's single replica gets no PodDisruptionBudget, and the values
/// show where they should.
#[test]
fn helm_template_with_custom_values_is_accepted_by_the_api_server() {
    let cluster = KubeCluster::shared();
    cluster.install_weft();
    let ns = cluster.namespace("chart");
    let dir = cluster.dir().join(format!("chart-{ns}"));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let pem = pem_files(&dir);
    let mut args = vec!["--values".to_owned(), ci_values("custom-values.yaml")];
    args.extend(pem.helm_args());
    let rendered = helm_template(&dir, &ns, &args.iter().map(String::as_str).collect::<Vec<_>>());
    let objects = dry_run(cluster, &dir, "custom", &rendered.stdout);
    let extra = [&["secret/mesh-issuer"][..], &CONTROL_ROLE].concat();
    assert_eq!(objects, expected(&extra, &[]), "{}", rendered.stdout);

    let docs = by_id(&documents(&rendered.stdout));
    let control = &docs[&format!("Deployment/{ns}/weft-control")]["spec"];
    assert_eq!(control["replicas"], 3);
    let container = &control["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "registry.example.org/mesh/weft-control:0.2.0-rc.1");
    assert_eq!(container["imagePullPolicy"], "Always");
    let args: Vec<&str> = container["args"].as_array().expect("args").iter().filter_map(Value::as_str).collect();
    for want in [
        "--trust-domain=mesh.example.org",
        "--cert-lifetime=12h",
        "--default-access=allow-authenticated",
        "--mtls-mode=strict",
        "--log=info,weft_control=debug",
        "--trace-collector=otel-collector.observability:4317",
        "--trace-sampling=0.25",
        "--dashboard-addr=off",
        "--telemetry-interval=10s",
        "--telemetry-retention=30m",
    ] {
        assert!(args.contains(&want), "{want} not in {args:?}");
    }
    assert_eq!(container["resources"]["requests"]["cpu"], "250m");
    assert_eq!(control["template"]["spec"]["volumes"][0]["secret"]["secretName"], "mesh-issuer");
    let injector = &docs[&format!("Deployment/{ns}/weft-injector")]["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<&str> = injector["args"].as_array().expect("args").iter().filter_map(Value::as_str).collect();
    for want in [
        "--proxy-image=registry.example.org/mesh/weft-proxy:0.2.0-rc.1".to_owned(),
        "--proxy-log=warn,weft_proxy=info".to_owned(),
        "--proxy-cpu-request=10m".to_owned(),
        "--proxy-memory-request=16Mi".to_owned(),
        "--proxy-memory-limit=64Mi".to_owned(),
        format!("--control-plane=https://weft-control.{ns}.svc:8090"),
        "--token-seconds=7200".to_owned(),
        format!("--namespace={ns}"),
    ] {
        assert!(args.contains(&want.as_str()), "{want} not in {args:?}");
    }
    assert_eq!(injector["resources"]["requests"]["cpu"], "1");
    let webhook = &docs["MutatingWebhookConfiguration/weft-injector"]["webhooks"][0];
    assert_eq!(webhook["failurePolicy"], "Fail");
    assert_eq!(webhook["timeoutSeconds"], 5);
    use base64::Engine as _;
    let ca = base64::engine::general_purpose::STANDARD
        .decode(webhook["clientConfig"]["caBundle"].as_str().expect("a caBundle"))
        .expect("base64");
    assert_eq!(String::from_utf8_lossy(&ca), pem.anchors, "the webhook trusts the mesh's anchors");
    assert_eq!(webhook["namespaceSelector"]["matchExpressions"][0]["values"][3], ns.as_str());
    let secret = &docs[&format!("Secret/{ns}/mesh-issuer")];
    assert_eq!(secret["type"], "kubernetes.io/tls");
}

/// With `webhook.certManager.enabled`, against cert-manager's own CRDs
/// (the pinned release): a self-signed Issuer and a Certificate for the
/// injector's Service name, and the webhook left for cert-manager's CA
/// injector; with an issuerRef, the chart's Issuer is not rendered.
#[test]
fn helm_template_with_cert_manager_is_accepted_by_the_api_server() {
    let cluster = KubeCluster::shared();
    cluster.install_weft();
    cluster.kubectl(&["apply", "--server-side", "-f", &cert_manager_crds().display().to_string()]);
    cluster.kubectl(&[
        "wait",
        "--for=condition=established",
        "--timeout=60s",
        "crd/certificates.cert-manager.io",
        "crd/issuers.cert-manager.io",
        "crd/clusterissuers.cert-manager.io",
    ]);
    let ns = cluster.namespace("chart-cm");
    let dir = cluster.dir().join(format!("chart-{ns}"));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let values = ci_values("cert-manager-values.yaml");
    let rendered = helm_template(&dir, &ns, &["--values", &values]);
    let objects = dry_run(cluster, &dir, "cert-manager", &rendered.stdout);
    assert_eq!(
        objects,
        expected(
            &[
                "certificate.cert-manager.io/weft-injector",
                "issuer.cert-manager.io/weft-injector-selfsigned",
                "poddisruptionbudget.policy/weft-injector",
            ],
            &[]
        ),
        "{}",
        rendered.stdout
    );
    let docs = by_id(&documents(&rendered.stdout));
    let cert = &docs[&format!("Certificate/{ns}/weft-injector")]["spec"];
    assert_eq!(cert["secretName"], "weft-injector-tls");
    assert_eq!(cert["dnsNames"], serde_json::json!([format!("weft-injector.{ns}.svc")]));
    assert_eq!(cert["issuerRef"]["name"], "weft-injector-selfsigned");
    let webhook = &docs["MutatingWebhookConfiguration/weft-injector"];
    assert_eq!(webhook["metadata"]["annotations"]["cert-manager.io/inject-ca-from"], format!("{ns}/weft-injector"));
    assert!(webhook["webhooks"][0]["clientConfig"].get("caBundle").is_none());

    let rendered = helm_template(
        &dir,
        &ns,
        &[
            "--values",
            &values,
            "--set",
            "webhook.certManager.issuerRef.name=corp-ca,webhook.certManager.issuerRef.kind=ClusterIssuer",
        ],
    );
    let objects = dry_run(cluster, &dir, "cert-manager-cluster-issuer", &rendered.stdout);
    assert_eq!(
        objects,
        expected(&["certificate.cert-manager.io/weft-injector", "poddisruptionbudget.policy/weft-injector"], &[])
    );
    let docs = by_id(&documents(&rendered.stdout));
    assert_eq!(
        docs[&format!("Certificate/{ns}/weft-injector")]["spec"]["issuerRef"],
        serde_json::json!({"group": "cert-manager.io", "kind": "ClusterIssuer", "name": "corp-ca"})
    );
}

/// A trust anchor and issuer as files, for `--set-file`.
struct Pem {
    anchors: String,
    files: [(&'static str, PathBuf); 3],
}

impl Pem {
    /// `--set-file KEY=PATH` for each.
    fn helm_args(&self) -> Vec<String> {
        self.files
            .iter()
            .flat_map(|(key, path)| ["--set-file".to_owned(), format!("{key}={}", path.display())])
            .collect()
    }
}

/// A fresh mesh PKI (the one `weft install` would generate) in `dir`.
fn pem_files(dir: &Path) -> Pem {
    let pki = weft_control::ca::bootstrap::generate("mesh.example.org", std::time::SystemTime::now()).expect("a PKI");
    write_pem(dir, &pki.trust_anchors_pem, &pki.issuer_cert_pem, &pki.issuer_key_pem)
}

fn write_pem(dir: &Path, anchors: &str, cert: &str, key: &str) -> Pem {
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("writing a PEM file");
        path
    };
    Pem {
        anchors: anchors.to_owned(),
        files: [
            ("identity.trustAnchorsPEM", write("anchors.pem", anchors)),
            ("identity.issuer.certPEM", write("issuer.crt", cert)),
            ("identity.issuer.keyPEM", write("issuer.key", key)),
        ],
    }
}

/// The rank of a kind in `weft install`'s apply order.
fn apply_rank(kind: &str) -> usize {
    const ORDER: &[&str] = &[
        "CustomResourceDefinition",
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Secret",
        "Issuer",
        "Certificate",
        "Service",
        "Deployment",
        "PodDisruptionBudget",
        "PodMonitor",
        "MutatingWebhookConfiguration",
    ];
    ORDER.iter().position(|k| *k == kind).unwrap_or_else(|| panic!("{kind} has no place in the apply order"))
}

/// `weft install` and `helm template` of the same values give the same
/// objects, field for field: the defaults, every value changed in another
/// namespace, cert-manager (with the chart's Issuer, and with a
/// ClusterIssuer of the cluster's), and an external issuer. The key
/// material `weft install` generates is handed to helm as `--set-file`.
#[test]
fn weft_install_renders_what_helm_template_renders() {
    let dir = scratch("same");
    let custom = ci_values("custom-values.yaml");
    let cert_manager = ci_values("cert-manager-values.yaml");
    let anchors = pem_files(&dir);
    let anchors_arg = format!("identity.trustAnchorsPEM={}", anchors.files[0].1.display());
    let cases: Vec<(&str, &str, Vec<&str>)> = vec![
        ("defaults", "weft-system", vec![]),
        ("custom", "mesh", vec!["--values", &custom]),
        ("cert-manager", "weft-system", vec!["--values", &cert_manager]),
        (
            "cluster issuer",
            "weft-system",
            vec![
                "--values",
                &cert_manager,
                "--set",
                "webhook.certManager.issuerRef.name=corp-ca",
                "--set",
                "webhook.certManager.issuerRef.kind=ClusterIssuer",
            ],
        ),
        ("external issuer", "weft-system", vec!["--identity-external-issuer", "--set-file", &anchors_arg]),
        ("pod monitor", "weft-system", vec!["--set", "podMonitor.enabled=true"]),
    ];
    for (case, ns, args) in cases {
        let mut weft_args = vec!["install", "--namespace", ns];
        weft_args.extend(&args);
        let installed = weft(&dir, &weft_args);
        assert!(installed.status.success(), "{case}: {installed}");
        let ours = documents(&installed.stdout);
        // The apply order: kinds never go back.
        let ranks: Vec<usize> = ours.iter().map(|o| apply_rank(o["kind"].as_str().unwrap_or_default())).collect();
        assert!(
            ranks.windows(2).all(|w| w[0] <= w[1]),
            "{case}: not in apply order: {:?}",
            ours.iter().map(id).collect::<Vec<_>>()
        );
        assert_eq!(ours.last().map(id), Some("MutatingWebhookConfiguration/weft-injector".to_owned()), "{case}");

        // helm with the same values, plus what weft install decides: the
        // Namespace in the stream and the key material it generated.
        let mut helm_args: Vec<String> = vec!["--set".into(), "installNamespace=true".into()];
        helm_args.extend(args.iter().filter(|a| **a != "--identity-external-issuer").map(|a| (*a).to_owned()));
        let secret_id =
            format!("Secret/{ns}/{}", if case == "custom" { "mesh-issuer" } else { "weft-identity-issuer" });
        let generated = ours.iter().find(|o| id(o) == secret_id);
        assert_eq!(generated.is_some(), case != "external issuer", "{case}: the issuer's Secret");
        if let Some(secret) = generated {
            use base64::Engine as _;
            let field = |key: &str| {
                let b64 = secret["data"][key].as_str().unwrap_or_else(|| panic!("{case}: no {key} in the Secret"));
                String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b64).expect("base64")).expect("PEM")
            };
            let dir = dir.join(case.replace(' ', "-"));
            std::fs::create_dir_all(&dir).expect("mkdir");
            let pem = write_pem(&dir, &field("ca.crt"), &field("tls.crt"), &field("tls.key"));
            assert!(pem.files[2].1.exists() && field("tls.key").contains("BEGIN PRIVATE KEY"), "{case}");
            helm_args.extend(pem.helm_args());
        }
        let helm_args: Vec<&str> = helm_args.iter().map(String::as_str).collect();
        let theirs = documents(&helm_template(&dir, ns, &helm_args).stdout);
        let (ours, theirs) = (by_id(&ours), by_id(&theirs));
        assert_eq!(ours.keys().collect::<Vec<_>>(), theirs.keys().collect::<Vec<_>>(), "{case}: not the same objects");
        for (name, object) in &ours {
            assert!(
                *object == theirs[name],
                "{case}: {name} differs.\nweft install:\n{}\nhelm template:\n{}",
                serde_json::to_string_pretty(object).unwrap_or_default(),
                serde_json::to_string_pretty(&theirs[name]).unwrap_or_default()
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// On a cluster of its own (the install is cluster-wide: CRDs, ClusterRoles,
/// the webhook): `weft install | kubectl apply -f -` creates exactly the
/// install's objects, in its order; applying it again changes nothing;
/// `weft uninstall | kubectl delete -f -` deletes them all, and then no
/// object labelled app.kubernetes.io/part-of=weft is left (the ReplicaSets
/// and Pods of the Deployments included).
#[test]
fn weft_install_applies_twice_and_uninstall_leaves_nothing() {
    let cluster = KubeCluster::start();
    let dir = cluster.dir().join("weft-install");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let installed = weft(&dir, &["install"]).ok();
    assert!(installed.stderr.contains("generated a new trust anchor and issuer"), "{installed}");
    let manifest = dir.join("install.yaml");
    std::fs::write(&manifest, &installed.stdout).expect("writing the manifest");
    let manifest = manifest.display().to_string();

    let applied = cluster.kubectl(&["apply", "-f", &manifest]);
    let lines: Vec<&str> = applied.stdout.lines().collect();
    let want = [
        "customresourcedefinition.apiextensions.k8s.io/accesspolicies.policy.weft.dev",
        "customresourcedefinition.apiextensions.k8s.io/trafficpolicies.policy.weft.dev",
        "namespace/weft-system",
        "serviceaccount/weft-control",
        "serviceaccount/weft-injector",
        "clusterrole.rbac.authorization.k8s.io/weft-control",
        "clusterrole.rbac.authorization.k8s.io/weft-injector",
        "clusterrolebinding.rbac.authorization.k8s.io/weft-control",
        "clusterrolebinding.rbac.authorization.k8s.io/weft-injector",
        "role.rbac.authorization.k8s.io/weft-control",
        "role.rbac.authorization.k8s.io/weft-injector",
        "rolebinding.rbac.authorization.k8s.io/weft-control",
        "rolebinding.rbac.authorization.k8s.io/weft-injector",
        "secret/weft-identity-issuer",
        "service/weft-control",
        "service/weft-injector",
        "deployment.apps/weft-control",
        "deployment.apps/weft-injector",
        "poddisruptionbudget.policy/weft-control",
        "poddisruptionbudget.policy/weft-injector",
        "mutatingwebhookconfiguration.admissionregistration.k8s.io/weft-injector",
    ];
    let created: Vec<String> = want.iter().map(|n| format!("{n} created")).collect();
    assert_eq!(lines, created, "{applied}");

    // What the cluster now holds, labelled as Weft's: exactly those.
    let kinds = "crd,namespace,serviceaccount,secret,clusterrole,clusterrolebinding,role,rolebinding,service,deployment,\
                 poddisruptionbudget,mutatingwebhookconfiguration";
    let labelled = |kinds: &str| -> Vec<String> {
        let run =
            cluster.kubectl(&["get", kinds, "--all-namespaces", "-l", "app.kubernetes.io/part-of=weft", "-o", "name"]);
        let mut names: Vec<String> = run.stdout.lines().map(str::to_owned).collect();
        names.sort();
        names
    };
    let mut sorted: Vec<String> = want.iter().map(|s| (*s).to_owned()).collect();
    sorted.sort();
    assert_eq!(labelled(kinds), sorted);
    let webhook = cluster.get_json("default", &["mutatingwebhookconfiguration", "weft-injector"]);
    assert!(webhook["webhooks"][0]["clientConfig"]["caBundle"].is_string(), "the generated anchors as caBundle");

    // A second apply changes nothing on the server: no object's spec
    // generation (or, for kinds without one, its resourceVersion) moves,
    // and `kubectl diff` finds nothing. (kubectl itself says "configured"
    // for the PodDisruptionBudgets and the webhook configuration: its
    // client-side apply always sends their replace-strategy selector and
    // atomic rules list, which the server finds equal and does not write.)
    let versions = || -> BTreeMap<String, String> {
        let list: Value = serde_json::from_str(&cluster.kubectl(&["get", "-f", &manifest, "-o", "json"]).stdout)
            .expect("kubectl get -o json");
        list["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|o| {
                let meta = &o["metadata"];
                (
                    id(o),
                    meta.get("generation")
                        .map_or_else(|| meta["resourceVersion"].to_string(), |g| format!("generation {g}")),
                )
            })
            .collect()
    };
    let before = versions();
    assert_eq!(before.len(), want.len());
    let again = cluster.kubectl(&["apply", "-f", &manifest]);
    let named: Vec<&str> = again.stdout.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert_eq!(named, want, "{again}");
    assert_eq!(versions(), before, "a second apply changed objects:\n{again}");
    let diff = cluster.try_kubectl(&["diff", "-f", &manifest], Duration::from_secs(60));
    assert!(diff.code() == Some(0) && diff.stdout.is_empty(), "kubectl diff after two applies:\n{diff}");

    let uninstall = weft(&dir, &["uninstall"]).ok();
    let deletion = dir.join("uninstall.yaml");
    std::fs::write(&deletion, &uninstall.stdout).expect("writing the deletion");
    // Deleting a namespace and CRDs waits for their finalizers.
    let deleted = cluster.try_kubectl(&["delete", "-f", &deletion.display().to_string()], Duration::from_secs(180));
    assert!(deleted.status.success(), "{deleted}");
    let mut order: Vec<&str> = want.iter().copied().filter(|n| !n.starts_with("mutatingwebhook")).collect();
    order.reverse();
    order.insert(0, want[want.len() - 1]);
    // `kind.group "name" deleted [from NS namespace]`, as kind.group/name.
    let gone: Vec<String> = deleted
        .stdout
        .lines()
        .filter(|l| l.contains(" deleted"))
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            Some(format!("{}/{}", words.next()?, words.next()?.trim_matches('"')))
        })
        .collect();
    assert_eq!(gone, order, "the webhook first, the CRDs last:\n{deleted}");
    eventually(Duration::from_secs(120), "no object labelled app.kubernetes.io/part-of=weft is left", || {
        let left = labelled(&format!("{kinds},replicaset,pod"));
        if left.is_empty() { Ok(()) } else { Err(format!("{left:?}")) }
    });
}

/// Bad input fails at once, with the reason, and prints nothing to apply;
/// helm refuses the same values (the chart's schema).
#[test]
fn bad_values_fail_with_a_clear_error() {
    let dir = scratch("bad");
    let malformed = dir.join("malformed.yaml");
    std::fs::write(&malformed, "webhook:\n  failurePolicy: [Fail\n").expect("write");
    let malformed = malformed.display().to_string();
    let cases: &[(&[&str], &str, &str)] = &[
        (
            &["--set", "nosuch=1"],
            "nosuch: no such value (known here: controlPlane, dashboard, identity",
            "additional properties 'nosuch' not allowed",
        ),
        (
            &["--set", "webhook.failurePolicy=Sometimes"],
            r#"webhook.failurePolicy: the string "Sometimes" is not one of Ignore, Fail"#,
            "value must be one of 'Ignore', 'Fail'",
        ),
        (
            &["--set", "webhook.timeoutSeconds=60"],
            "webhook.timeoutSeconds: 60 is more than 30",
            "/webhook/timeoutSeconds",
        ),
        (
            &["--set", "controlPlane.replicas=two"],
            r#"controlPlane.replicas: expected an integer, got the string "two""#,
            "/controlPlane/replicas",
        ),
        (&["--set", "tracing.sampling=2"], "tracing.sampling: 2 is more than 1", "/tracing/sampling"),
        (&["--values", &malformed], "is not a values file: ", "malformed.yaml"),
    ];
    let chart = chart().display().to_string();
    for (args, ours, theirs) in cases {
        for command in ["install", "uninstall"] {
            let mut all = vec![command];
            all.extend_from_slice(args);
            let run = weft(&dir, &all);
            assert_eq!(run.code(), Some(1), "{run}");
            assert!(run.stdout.is_empty(), "nothing to apply: {run}");
            assert!(run.stderr.starts_with("weft: ") && run.stderr.contains(ours), "{run}");
        }
        let mut all = vec!["template", "weft", chart.as_str()];
        all.extend_from_slice(args);
        let run = helm(&dir, &all);
        assert!(!run.status.success(), "helm took it: {run}");
        assert!(run.stderr.contains(theirs), "{run}");
    }
    let run = weft(&dir, &["install", "--values", &malformed]);
    assert!(run.stderr.contains("line 2"), "the malformed line is named: {run}");
    let run = weft(&dir, &["install", "--namespace", "Weft_System"]);
    assert_eq!(run.code(), Some(1), "{run}");
    assert!(run.stderr.contains("a namespace is 1 to 63 lower-case letters"), "{run}");
    let run = weft(&dir, &["install", "--set", "identity.certLifetime=1s"]);
    assert_eq!(run.code(), Some(1), "{run}");
    assert!(
        run.stderr.contains("the control plane would refuse these values") && run.stderr.contains("--cert-lifetime 1s"),
        "{run}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
