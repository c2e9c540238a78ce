//! The injector (`weft-injector`) as the real API server calls it: a
//! MutatingWebhookConfiguration pointing at `https://127.0.0.1:PORT/inject`
//! (as envtest does: no Service can be reached here), and Pods created by
//! kube-controller-manager from Deployments applied with kubectl.

use std::time::Duration;

use weft_tests::injector::Injector;
use weft_tests::{KubeCluster, eventually};

/// The webhook for every namespace but the system ones and Weft's own.
const ALL_BUT_SYSTEM: &str = "{matchExpressions: [{key: kubernetes.io/metadata.name, operator: NotIn, \
                              values: [kube-system, kube-public, kube-node-lease, weft-system]}]}";

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
    let injector = Injector::start(cluster, &["--proxy-image", "registry.invalid/weft/proxy:test"]);
    cluster.apply("default", &injector.webhook(&format!("weft-injector-{}", std::process::id()), ALL_BUT_SYSTEM));

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

/// `manifests/install/` (the chart rendered with its default values: the
/// control plane's RBAC (a Role for the injector's Secret too), Deployment,
/// Service and PodDisruptionBudget; the injector's Deployment, Service,
/// RBAC (a ClusterRole for Namespaces, a Role for its Secret),
/// PodDisruptionBudget and
/// MutatingWebhookConfiguration) is accepted whole by the real API server
/// (`--dry-run=server`: validated and admitted, not stored), after the
/// CRDs and the namespace it builds on.
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
            "clusterrole.rbac.authorization.k8s.io/weft-control",
            "clusterrole.rbac.authorization.k8s.io/weft-injector",
            "clusterrolebinding.rbac.authorization.k8s.io/weft-control",
            "clusterrolebinding.rbac.authorization.k8s.io/weft-injector",
            "deployment.apps/weft-control",
            "deployment.apps/weft-injector",
            "mutatingwebhookconfiguration.admissionregistration.k8s.io/weft-injector",
            "poddisruptionbudget.policy/weft-control",
            "poddisruptionbudget.policy/weft-injector",
            "role.rbac.authorization.k8s.io/weft-control",
            "role.rbac.authorization.k8s.io/weft-injector",
            "rolebinding.rbac.authorization.k8s.io/weft-control",
            "rolebinding.rbac.authorization.k8s.io/weft-injector",
            "service/weft-control",
            "service/weft-injector",
            "serviceaccount/weft-control",
            "serviceaccount/weft-injector",
        ],
        "{run}"
    );
    assert!(run.stdout.lines().all(|l| l.ends_with("(server dry run)")), "{run}");
}
