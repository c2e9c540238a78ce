//! The injector (`weft-injector`) as the real API server calls it: a
//! MutatingWebhookConfiguration pointing at `https://127.0.0.1:PORT/inject`
//! (as envtest does: no Service can be reached here), and Pods created by
//! kube-controller-manager from Deployments applied with kubectl.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use weft_tests::{KubeCluster, eventually, free_port, injector_bin};

/// The injector process, killed by PID when dropped.
struct Injector {
    child: Child,
    port: u16,
}

impl Drop for Injector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the injector on 127.0.0.1 with a fresh self-signed certificate
/// for that address; returns it and the certificate (PEM), for the
/// webhook's caBundle.
fn start_injector(cluster: &KubeCluster) -> (Injector, String) {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("certificate parameters");
    params.subject_alt_names = vec![rcgen::SanType::IpAddress("127.0.0.1".parse().expect("ip"))];
    let key = rcgen::KeyPair::generate().expect("a key");
    let cert = params.self_signed(&key).expect("a certificate");
    let dir = cluster.dir().join(format!("injector-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("the injector's directory");
    std::fs::write(dir.join("tls.crt"), cert.pem()).expect("writing the certificate");
    std::fs::write(dir.join("tls.key"), key.serialize_pem()).expect("writing the key");
    let port = free_port();
    let log = std::fs::File::create(dir.join("injector.stderr")).expect("the log file");
    let child = Command::new(injector_bin())
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--cert")
        .arg(dir.join("tls.crt"))
        .arg("--key")
        .arg(dir.join("tls.key"))
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig())
        .args(["--proxy-image", "registry.invalid/weft/proxy:test"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("starting weft-injector");
    let injector = Injector { child, port };
    eventually(Duration::from_secs(20), "the injector answers /ready", || {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "1", "--cacert"])
            .arg(dir.join("tls.crt"))
            .arg(format!("https://127.0.0.1:{port}/ready"))
            .output()
            .expect("running curl");
        let code = String::from_utf8_lossy(&out.stdout).into_owned();
        if code == "200" { Ok(()) } else { Err(format!("GET /ready: {code:?}")) }
    });
    (injector, cert.pem())
}

fn webhook(port: u16, ca_pem: &str) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {{name: weft-injector-{pid}}}
webhooks:
- name: inject.weft.dev
  admissionReviewVersions: [v1]
  sideEffects: None
  failurePolicy: Ignore
  timeoutSeconds: 10
  reinvocationPolicy: IfNeeded
  clientConfig: {{url: \"https://127.0.0.1:{port}/inject\", caBundle: {b64}}}
  rules: [{{operations: [CREATE], apiGroups: [\"\"], apiVersions: [v1], resources: [pods]}}]
  namespaceSelector:
    matchExpressions:
    - {{key: kubernetes.io/metadata.name, operator: NotIn, values: [kube-system, kube-public, kube-node-lease, weft-system]}}
",
        pid = std::process::id()
    )
}

fn deployment(name: &str, annotations: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}, annotations: {{{annotations}}}}}
    spec:
      initContainers: [{{name: migrate, image: registry.invalid/app:1}}]
      containers: [{{name: app, image: registry.invalid/app:1}}]
"
    )
}

/// The Pods of Deployment `app` once there are 2: each one's init
/// container names and container names.
fn pods(cluster: &KubeCluster, ns: &str, app: &str) -> Vec<serde_json::Value> {
    eventually(Duration::from_secs(60), &format!("2 Pods of {ns}/{app}"), || {
        let list = cluster.get_json(ns, &["pods", "-l", &format!("app={app}")]);
        let items = list["items"].as_array().cloned().unwrap_or_default();
        if items.len() == 2 { Ok(items) } else { Err(format!("{} Pods", items.len())) }
    })
}

fn names(pod: &serde_json::Value, field: &str) -> Vec<String> {
    pod["spec"][field].as_array().into_iter().flatten().filter_map(|c| c["name"].as_str().map(str::to_owned)).collect()
}

#[test]
fn pods_of_a_deployment_in_a_labelled_namespace_get_the_proxy_as_a_native_sidecar() {
    let cluster = KubeCluster::shared();
    let (injector, ca) = start_injector(cluster);
    cluster.apply("default", &webhook(injector.port, &ca));

    let meshed = cluster.namespace("inject");
    cluster.kubectl(&["label", "namespace", &meshed, "weft.dev/inject=enabled"]);
    let plain = cluster.namespace("plain");

    cluster.apply(&meshed, &deployment("web", ""));
    cluster.apply(&meshed, &deployment("optout", "weft.dev/inject: disabled"));
    cluster.apply(&plain, &deployment("web", ""));

    for pod in pods(cluster, &meshed, "web") {
        let name = pod["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        assert_eq!(names(&pod, "initContainers"), ["weft-init", "weft-proxy", "migrate"], "{name}");
        assert_eq!(names(&pod, "containers"), ["app"], "{name}");
        let proxy = &pod["spec"]["initContainers"][1];
        assert_eq!(proxy["restartPolicy"], "Always", "{name}: a native sidecar");
        assert_eq!(proxy["startupProbe"]["httpGet"]["path"], "/ready");
        assert_eq!(pod["metadata"]["annotations"]["weft.dev/injected-version"], env!("CARGO_PKG_VERSION"));
        let token = pod["spec"]["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["name"] == "weft-identity-token")
            .unwrap_or_else(|| panic!("{name}: no identity token volume"));
        assert_eq!(token["projected"]["sources"][0]["serviceAccountToken"]["audience"], "weft");
    }
    for (ns, app) in [(&meshed, "optout"), (&plain, "web")] {
        for pod in pods(cluster, ns, app) {
            assert_eq!(names(&pod, "initContainers"), ["migrate"], "{ns}/{app}: not injected");
        }
    }

    // A second admission of an injected Pod changes nothing.
    let mut again = pods(cluster, &meshed, "web").remove(0);
    again["metadata"] = serde_json::json!({"name": "again", "namespace": meshed});
    again.as_object_mut().map(|o| o.remove("status"));
    let path = cluster.dir().join(format!("again-{meshed}.json"));
    std::fs::write(&path, again.to_string()).expect("writing the pod");
    let run = cluster.kubectl(&["create", "--dry-run=server", "-o", "json", "-f", &path.display().to_string()]);
    let stored: serde_json::Value = serde_json::from_str(&run.stdout).expect("a Pod");
    assert_eq!(names(&stored, "initContainers"), ["weft-init", "weft-proxy", "migrate"], "injected twice:\n{run}");

    // With the injector stopped and failurePolicy Ignore, Pods are created
    // uninjected.
    drop(injector);
    cluster.apply(&meshed, &deployment("late", ""));
    for pod in pods(cluster, &meshed, "late") {
        assert_eq!(names(&pod, "initContainers"), ["migrate"], "created without the injector");
    }
}

/// `manifests/install/` (the control plane's Deployment, Service and
/// PodDisruptionBudget; the injector's Deployment, Service, RBAC (a
/// ClusterRole for Namespaces, a Role for its Secret) and
/// MutatingWebhookConfiguration) is accepted whole by the real API server
/// (`--dry-run=server`: validated and admitted, not stored), after the
/// CRDs and the control plane's RBAC it builds on.
#[test]
fn the_install_manifests_are_accepted_by_the_api_server() {
    let cluster = KubeCluster::shared();
    cluster.install_weft();
    let dir = weft_tests::manifests_dir().join("install");
    let run = cluster.kubectl(&["apply", "--dry-run=server", "-f", &dir.display().to_string()]);
    let mut objects: Vec<&str> = run.stdout.lines().filter_map(|l| l.split_whitespace().next()).collect();
    objects.sort_unstable();
    assert_eq!(
        objects,
        [
            "clusterrole.rbac.authorization.k8s.io/weft-injector",
            "clusterrolebinding.rbac.authorization.k8s.io/weft-injector",
            "deployment.apps/weft-control",
            "deployment.apps/weft-injector",
            "mutatingwebhookconfiguration.admissionregistration.k8s.io/weft-injector",
            "poddisruptionbudget.policy/weft-control",
            "role.rbac.authorization.k8s.io/weft-injector",
            "rolebinding.rbac.authorization.k8s.io/weft-injector",
            "service/weft-control",
            "service/weft-injector",
            "serviceaccount/weft-injector",
        ],
        "{run}"
    );
    assert!(run.stdout.lines().all(|l| l.ends_with("(server dry run)")), "{run}");
}
