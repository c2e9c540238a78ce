//! The tests' Kubernetes control plane itself (`tests/src/kube.rs`): real
//! etcd, kube-apiserver and kube-controller-manager of the pinned release on
//! 127.0.0.1, driven with the real kubectl. No kubelet: Pods stay Pending.

use std::time::Duration;

use weft_tests::{KubeCluster, eventually, gateway_api_crds, gateway_api_version, kube_bin, kube_version};

/// The API server and kubectl are the release `tests/kube/kubernetes/go.mod`
/// pins, not an unversioned build.
#[test]
fn server_and_client_report_the_pinned_version() {
    let cluster = KubeCluster::shared();
    let run = cluster.kubectl(&["version", "-o", "json"]);
    let version: serde_json::Value = serde_json::from_str(&run.stdout).expect("kubectl version prints JSON");
    assert_eq!(version["serverVersion"]["gitVersion"], kube_version(), "{run}");
    assert_eq!(version["clientVersion"]["gitVersion"], kube_version(), "{run}");
    let minor = kube_version().split('.').nth(1).expect("v1.N.M");
    assert_eq!(version["serverVersion"]["major"], "1", "{run}");
    assert_eq!(version["serverVersion"]["minor"], minor, "{run}");
    // The client certificate's group makes the admin a cluster admin.
    let run = cluster.kubectl(&["auth", "can-i", "*", "*", "--all-namespaces"]);
    assert_eq!(run.stdout.trim(), "yes", "{run}");
}

/// kube-controller-manager runs the Deployment and ReplicaSet controllers:
/// a Deployment of 2 replicas gets one ReplicaSet owned by it and 2 Pods
/// owned by that, which stay Pending with no node to run on.
#[test]
fn deployment_gets_a_replicaset_and_two_pending_pods() {
    let cluster = KubeCluster::shared();
    let ns = cluster.namespace("deploy");
    cluster.apply(
        &ns,
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: app
        image: registry.invalid/weft/never-pulled:1
"#,
    );
    let deployment = cluster.get_json(&ns, &["deployment", "web"]);
    let deployment_uid = deployment["metadata"]["uid"].as_str().expect("a uid").to_owned();

    let rs = eventually(Duration::from_secs(60), "the Deployment gets a ReplicaSet", || {
        let list = cluster.get_json(&ns, &["replicasets", "-l", "app=web"]);
        let items = list["items"].as_array().cloned().unwrap_or_default();
        match items.as_slice() {
            [rs] => Ok(rs.clone()),
            other => Err(format!("{} ReplicaSets", other.len())),
        }
    });
    assert_eq!(rs["metadata"]["ownerReferences"][0]["uid"], deployment_uid.as_str(), "{rs:#}");
    assert_eq!(rs["spec"]["replicas"], 2, "{rs:#}");
    let rs_uid = rs["metadata"]["uid"].as_str().expect("a uid").to_owned();

    let pods = eventually(Duration::from_secs(60), "the ReplicaSet creates 2 Pods", || {
        let list = cluster.get_json(&ns, &["pods", "-l", "app=web"]);
        let items = list["items"].as_array().cloned().unwrap_or_default();
        if items.len() == 2 { Ok(items) } else { Err(format!("{} Pods: {list:#}", items.len())) }
    });
    for pod in &pods {
        assert_eq!(pod["metadata"]["ownerReferences"][0]["uid"], rs_uid.as_str(), "{pod:#}");
        assert_eq!(pod["status"]["phase"], "Pending", "no kubelet, so no Pod runs: {pod:#}");
        assert!(pod["spec"]["nodeName"].is_null(), "no scheduler, so no Pod is bound: {pod:#}");
        // The ServiceAccount admission plugin mounted the default account's token.
        assert_eq!(pod["spec"]["serviceAccountName"], "default", "{pod:#}");
    }
    // The Deployment controller sees them too.
    let status = eventually(Duration::from_secs(30), "the Deployment counts 2 replicas", || {
        let d = cluster.get_json(&ns, &["deployment", "web"]);
        if d["status"]["replicas"] == 2 { Ok(d["status"].clone()) } else { Err(format!("{:#}", d["status"])) }
    });
    assert_eq!(status["readyReplicas"], serde_json::Value::Null, "nothing can be ready: {status:#}");
}

/// The API server signs ServiceAccount tokens (TokenRequest) with the
/// audience asked for, and accepts them back as that account.
#[test]
fn service_account_token_for_an_audience() {
    let cluster = KubeCluster::shared();
    let ns = cluster.namespace("token");
    let run = cluster.kubectl(&["create", "token", "default", "-n", &ns, "--audience", "weft", "--duration", "10m"]);
    let token = run.stdout.trim().to_owned();
    let parts: Vec<_> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWT: {run}");

    // TokenReview: the API server says who the token is, for the audience weft.
    let review = format!(
        r#"{{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","spec":{{"token":"{token}","audiences":["weft"]}}}}"#
    );
    let path = cluster.dir().join(format!("tokenreview-{ns}.json"));
    std::fs::write(&path, review).expect("writing the TokenReview");
    let run = cluster.kubectl(&["create", "-f", &path.display().to_string(), "-o", "json"]);
    let reviewed: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(reviewed["status"]["authenticated"], true, "{reviewed:#}");
    assert_eq!(reviewed["status"]["user"]["username"], format!("system:serviceaccount:{ns}:default"), "{reviewed:#}");
    assert_eq!(reviewed["status"]["audiences"], serde_json::json!(["weft"]), "{reviewed:#}");

    // The same token is refused for another audience.
    let other = std::fs::read_to_string(&path).expect("reading").replace(r#"["weft"]"#, r#"["not-weft"]"#);
    std::fs::write(&path, other).expect("writing the TokenReview");
    let run = cluster.kubectl(&["create", "-f", &path.display().to_string(), "-o", "json"]);
    let reviewed: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_ne!(reviewed["status"]["authenticated"], true, "{reviewed:#}");
}

/// helm, built beside the control plane, runs and is the pinned v4.
#[test]
fn helm_is_built() {
    let out = std::process::Command::new(kube_bin("helm")).args(["version", "--short"]).output().expect("running helm");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.starts_with("v4."), "helm version --short: {text}");
}

/// The control plane's ClusterRole and Role (`manifests/control-plane-rbac.yaml`),
/// applied to the real API server: its service account may do exactly what
/// reading the cluster and keeping the injector's certificate need, and none
/// of the things it must not. Each answer is the API server's own RBAC
/// decision (a SubjectAccessReview), so it needs no CRD installed.
#[test]
fn the_control_planes_role_allows_what_it_needs_and_nothing_else() {
    let cluster = KubeCluster::shared();
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/control-plane-rbac.yaml");
    cluster.kubectl(&["apply", "-f", manifest.to_str().expect("UTF-8 path")]);
    let ns = cluster.namespace("rbac");
    // (namespace, "" when cluster-scoped; verb; group; resource; subresource; name)
    let allowed =
        |(namespace, verb, group, resource, subresource, name): (&str, &str, &str, &str, &str, &str)| -> bool {
            let review = serde_json::json!({
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SubjectAccessReview",
                "spec": {
                    "user": "system:serviceaccount:weft-system:weft-control",
                    "groups": ["system:serviceaccounts", "system:serviceaccounts:weft-system", "system:authenticated"],
                    "resourceAttributes": {
                        "namespace": namespace, "verb": verb, "group": group, "resource": resource,
                        "subresource": subresource, "name": name,
                    },
                },
            });
            let path = cluster.dir().join(format!("sar-{namespace}-{verb}-{resource}-{subresource}-{name}.json"));
            std::fs::write(&path, review.to_string()).expect("writing the review");
            let run = cluster.kubectl(&["create", "-f", path.to_str().expect("UTF-8 path"), "-o", "json"]);
            let answer: serde_json::Value = serde_json::from_str(&run.stdout).expect("a SubjectAccessReview");
            answer["status"]["allowed"].as_bool().unwrap_or(false)
        };
    let n = ns.as_str();
    let (ws, tls, mwc, adm) =
        ("weft-system", "weft-injector-tls", "mutatingwebhookconfigurations", "admissionregistration.k8s.io");
    let cases: &[((&str, &str, &str, &str, &str, &str), bool)] = &[
        ((n, "list", "", "services", "", ""), true),
        ((n, "watch", "", "services", "", ""), true),
        ((n, "watch", "", "pods", "", ""), true),
        ((n, "watch", "", "namespaces", "", ""), true),
        ((n, "list", "discovery.k8s.io", "endpointslices", "", ""), true),
        ((n, "watch", "discovery.k8s.io", "endpointslices", "", ""), true),
        ((n, "watch", "gateway.networking.k8s.io", "httproutes", "", ""), true),
        ((n, "watch", "policy.weft.dev", "trafficpolicies", "", ""), true),
        ((n, "watch", "policy.weft.dev", "accesspolicies", "", ""), true),
        ((n, "patch", "gateway.networking.k8s.io", "httproutes", "status", ""), true),
        ((n, "update", "policy.weft.dev", "trafficpolicies", "status", ""), true),
        ((n, "update", "policy.weft.dev", "accesspolicies", "status", ""), true),
        ((n, "create", "authentication.k8s.io", "tokenreviews", "", ""), true),
        ((n, "create", "", "events", "", ""), true),
        ((n, "create", "events.k8s.io", "events", "", ""), true),
        // The injector's certificate: its one Secret, its webhook's caBundle.
        ((ws, "create", "", "secrets", "", ""), true),
        ((ws, "get", "", "secrets", "", tls), true),
        ((ws, "list", "", "secrets", "", tls), true),
        ((ws, "watch", "", "secrets", "", tls), true),
        ((ws, "update", "", "secrets", "", tls), true),
        (("", "get", adm, mwc, "", "weft-injector"), true),
        (("", "watch", adm, mwc, "", "weft-injector"), true),
        (("", "patch", adm, mwc, "", "weft-injector"), true),
        // Not: other secrets (the CA's issuer above all), secrets elsewhere,
        // other webhooks, writes to workloads or to routes and policies
        // themselves, tokens, nodes.
        ((n, "get", "", "secrets", "", ""), false),
        ((n, "list", "", "secrets", "", ""), false),
        ((n, "create", "", "secrets", "", ""), false),
        ((ws, "get", "", "secrets", "", "weft-identity-issuer"), false),
        ((ws, "list", "", "secrets", "", ""), false),
        ((ws, "delete", "", "secrets", "", tls), false),
        ((ws, "patch", "", "secrets", "", tls), false),
        (("", "patch", adm, mwc, "", "another-webhook"), false),
        (("", "update", adm, mwc, "", "weft-injector"), false),
        (("", "patch", adm, "validatingwebhookconfigurations", "", "weft-injector"), false),
        ((n, "create", "", "pods", "", ""), false),
        ((n, "delete", "", "services", "", ""), false),
        ((n, "update", "discovery.k8s.io", "endpointslices", "", ""), false),
        ((n, "update", "gateway.networking.k8s.io", "httproutes", "", ""), false),
        ((n, "delete", "policy.weft.dev", "trafficpolicies", "", ""), false),
        ((n, "create", "", "serviceaccounts", "token", ""), false),
        ((n, "list", "", "nodes", "", ""), false),
        ((n, "update", "", "pods", "status", ""), false),
    ];
    let wrong: Vec<String> = cases
        .iter()
        .filter(|(attrs, want)| allowed(*attrs) != *want)
        .map(|((ns, verb, group, resource, sub, name), want)| {
            format!("{verb} {group}/{resource} {sub} {name} in {ns:?}: want allowed={want}")
        })
        .collect();
    assert_eq!(cases.iter().filter(|(_, want)| *want).count(), 23);
    assert!(wrong.is_empty(), "the control plane's role is not what it should be:\n{}", wrong.join("\n"));
}

/// A mesh route (GAMMA: its parent is a Service) with a 90/10 split.
const ROUTE_90_10: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web}
spec:
  parentRefs: [{group: \"\", kind: Service, name: web, port: 80}]
  rules:
    - backendRefs: [{name: web-v1, port: 80, weight: 90}, {name: web-v2, port: 80, weight: 10}]
";

/// The Gateway API's standard-channel CRDs of the pinned release install
/// (server-side apply, as upstream advises for their size), and the API
/// server then stores a mesh HTTPRoute and refuses one its schema rejects.
#[test]
fn gateway_api_crds_install_and_the_api_server_validates_mesh_routes() {
    let cluster = KubeCluster::shared();
    let crds = gateway_api_crds();
    cluster.kubectl(&["apply", "--server-side", "-f", crds.to_str().expect("UTF-8 path")]);
    cluster.kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd/httproutes.gateway.networking.k8s.io",
        "--timeout=60s",
    ]);
    let crd = cluster.get_json("default", &["crd", "httproutes.gateway.networking.k8s.io"]);
    let bundle = &crd["metadata"]["annotations"]["gateway.networking.k8s.io/bundle-version"];
    assert_eq!(bundle, gateway_api_version(), "the installed CRDs are not the pinned release's");

    let ns = cluster.namespace("gamma");
    cluster.apply(&ns, ROUTE_90_10);
    let route = cluster.get_json(&ns, &["httproute", "web"]);
    assert_eq!(route["spec"]["parentRefs"][0]["kind"], "Service");
    assert_eq!(route["spec"]["rules"][0]["backendRefs"][1]["weight"], 10);

    // A negative weight is refused by the CRD's schema, naming the field.
    let bad = ROUTE_90_10.replace("name: web}", "name: web-bad}").replace("weight: 10", "weight: -1");
    let path = cluster.dir().join(format!("{ns}-bad-route.yaml"));
    std::fs::write(&path, bad).expect("writing the manifest");
    let run =
        cluster.try_kubectl(&["apply", "-n", &ns, "-f", path.to_str().expect("UTF-8 path")], Duration::from_secs(60));
    assert!(!run.status.success(), "the API server stored a route with a negative weight:\n{run}");
    assert!(run.stderr.contains("weight"), "the refusal does not name the field:\n{run}");
}
