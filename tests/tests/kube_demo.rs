//! From a Deployment to meshed traffic: the demo's manifests
//! (`manifests/examples/`), applied unchanged with kubectl to the tests'
//! real API server, serve the counter through Weft with mTLS.
//!
//! ```text
//!  kubectl apply -f manifests/examples/ ─► kube-apiserver ─► kube-controller-manager: ReplicaSets, Pods
//!                                             │  Pod CREATE ─► weft-injector (127.0.0.1): weft-init + weft-proxy sidecar
//!                                             │  Pods of node-NS ─► test kubelet: a netns pod each, status Ready
//!                                             ▼                      └─► EndpointSlices (the real controller)
//!  cp pod: weft-control --source kubernetes (discovery, policy, certificates for TokenRequest tokens)
//!  client pod: curl http://web/ ─► proxy ══ mTLS ══► web-v1 ×2 | web-v2 (HTTPRoute 90/10) ══ mTLS ══► store (redis)
//! ```
//!
//! Nothing here writes a Pod's containers, status or EndpointSlices by
//! hand: the injector, the test kubelet (`weft_tests::kubelet`) and the
//! controllers do, from what kubectl applied.

use std::collections::BTreeMap;
use std::time::Duration;

use weft_tests::injector::Injector;
use weft_tests::kubelet::{Kubelet, demo_images};
use weft_tests::{KubeCluster, Mesh, eventually, manifests_dir};

/// One answer of `web`.
#[derive(Debug)]
struct Answer {
    status: u16,
    pod: String,
    version: String,
    count: u64,
    caller: String,
    body: String,
}

/// `n` requests to `http://web/` from `pod`, one curl (one connection).
fn get_web(pod: &weft_tests::Pod, n: usize) -> Vec<Answer> {
    let dir = tempfile_dir(pod);
    let url = format!("http://web/?n=[1-{n}]");
    let out = format!("{}/body-#1", dir.display());
    let run = pod.exec("curl", &["-s", "--max-time", "120", "-w", "%{http_code}\\n", "-o", &out, &url]);
    let statuses: Vec<u16> = run.stdout.lines().map(|l| l.parse().unwrap_or(0)).collect();
    assert_eq!(statuses.len(), n, "curl answered {} of {n} requests: {run}", statuses.len());
    let answers = statuses
        .into_iter()
        .enumerate()
        .map(|(i, status)| {
            let body = std::fs::read_to_string(dir.join(format!("body-{}", i + 1))).unwrap_or_default();
            let v: serde_json::Value = serde_json::from_str(body.trim()).unwrap_or_default();
            Answer {
                status,
                pod: v["pod"].as_str().unwrap_or_default().to_owned(),
                version: v["version"].as_str().unwrap_or_default().to_owned(),
                count: v["count"].as_u64().unwrap_or(0),
                caller: v["caller"].as_str().unwrap_or_default().to_owned(),
                body,
            }
        })
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    answers
}

/// A fresh directory for one curl's bodies.
fn tempfile_dir(pod: &weft_tests::Pod) -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = pod.dir().join(format!("web-bodies-{n}"));
    std::fs::create_dir_all(&dir).expect("a directory for the bodies");
    dir
}

#[test]
fn the_demo_manifests_serve_the_counter_through_weft_with_mtls_and_the_canary_splits_it() {
    demo(Sidecar::Native);
}

/// The same with the proxy as a classic sidecar (clusters older than
/// 1.29): the first container, its postStart hook (`weft-proxy await`)
/// holding the app back until the proxy is ready.
#[test]
fn the_demo_runs_the_same_with_classic_sidecars() {
    demo(Sidecar::Classic);
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Sidecar {
    Native,
    Classic,
}

fn demo(sidecar: Sidecar) {
    let started = std::time::Instant::now();
    let step = |what: &str| eprintln!("kube_demo: {what} after {:.1?}", started.elapsed());
    let cluster = KubeCluster::shared();
    step("the cluster is up");
    let mesh = Mesh::new();
    let cp = mesh.pod("cp").run_kube_control(cluster, &[]);
    step("the control plane is up");
    let anchors = cp.ca.as_ref().expect("the CA is on").anchors();

    let ns = cluster.namespace("demo");
    cluster.kubectl(&["label", "namespace", &ns, "weft.dev/inject=enabled"]);
    step("the namespace is there");
    let injector = Injector::start(
        cluster,
        &[
            "--control-plane",
            &cp.url,
            "--trust-anchors",
            &anchors.display().to_string(),
            "--proxy-image",
            "ghcr.io/weft-mesh/weft-proxy:0.1.0",
            "--sidecar",
            if sidecar == Sidecar::Native { "native" } else { "classic" },
        ],
    );
    step("the injector is up");
    let webhook = format!("weft-injector-{ns}");
    cluster.apply(
        "default",
        &injector.webhook(
            &webhook,
            &format!("{{matchLabels: {{kubernetes.io/metadata.name: {ns}, weft.dev/inject: enabled}}}}"),
        ),
    );
    step("the webhook is configured");
    let kubelet = Kubelet::start(cluster, &mesh, &format!("node-{ns}"), std::slice::from_ref(&ns), demo_images());

    step("the control plane, the injector and the kubelet are up");
    // The user's part: apply the examples, and a client to call from.
    let examples = manifests_dir().join("examples");
    cluster.kubectl(&["apply", "-n", &ns, "-f", &examples.display().to_string()]);
    cluster.apply(
        &ns,
        "apiVersion: v1
kind: ServiceAccount
metadata: {name: client}
---
apiVersion: v1
kind: Pod
metadata: {name: client, labels: {app: client}}
spec:
  serviceAccountName: client
  containers: [{name: client, image: 'busybox:1.36', command: [sleep, '3600']}]
",
    );

    // Every Deployment becomes available: its Pods were injected, run by
    // the kubelet, and reported Ready.
    let wait = cluster.try_kubectl(
        &["wait", "-n", &ns, "--for=condition=Available", "deployment", "--all", "--timeout=180s"],
        Duration::from_secs(200),
    );
    assert!(
        wait.status.success(),
        "the demo's Deployments are not available:\n{wait}\nkubelet: {:?}",
        kubelet.errors()
    );
    cluster.kubectl(&["wait", "-n", &ns, "--for=condition=Ready", "pod/client", "--timeout=120s"]);
    assert_eq!(kubelet.errors(), Vec::<String>::new());
    step("the Deployments are available");

    // The Pods as stored: 6, each with the init container and the proxy
    // (a native sidecar, or the first container with its postStart hook),
    // their status written by the kubelet.
    let pods = cluster.get_json(&ns, &["pods"]);
    let pods = pods["items"].as_array().cloned().unwrap_or_default();
    let mut by_app: BTreeMap<String, usize> = BTreeMap::new();
    for pod in &pods {
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        let names = |field: &str| -> Vec<&str> {
            pod["spec"][field].as_array().into_iter().flatten().filter_map(|c| c["name"].as_str()).collect()
        };
        match sidecar {
            Sidecar::Native => {
                assert_eq!(names("initContainers"), ["weft-init", "weft-proxy"], "{name}: injected");
                assert_eq!(pod["spec"]["initContainers"][1]["restartPolicy"], "Always", "{name}");
            }
            Sidecar::Classic => {
                assert_eq!(names("initContainers"), ["weft-init"], "{name}: injected");
                assert_eq!(names("containers")[0], "weft-proxy", "{name}: the proxy first");
                let hook = &pod["spec"]["containers"][0]["lifecycle"]["postStart"]["exec"]["command"][1];
                assert_eq!(hook, "await", "{name}");
            }
        }
        assert!(pod["status"]["podIP"].as_str().is_some_and(|ip| ip.starts_with("198.18.0.")), "{name}: {pod}");
        let app = pod["metadata"]["labels"]["app"].as_str().unwrap_or_default();
        let version = pod["metadata"]["labels"]["version"].as_str().map(|v| format!("-{v}")).unwrap_or_default();
        *by_app.entry(format!("{app}{version}")).or_default() += 1;
    }
    let want: BTreeMap<String, usize> =
        [("client", 1), ("load", 1), ("store", 1), ("web-v1", 2), ("web-v2", 1)].map(|(k, v)| (k.to_owned(), v)).into();
    assert_eq!(by_app, want);

    // The EndpointSlice controller lists the three web Pods as ready.
    eventually(Duration::from_secs(30), "web's EndpointSlices list 3 ready endpoints", || {
        let slices = cluster.get_json(&ns, &["endpointslices", "-l", "kubernetes.io/service-name=web"]);
        let ready = slices["items"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
            .filter(|e| e["conditions"]["ready"] == true)
            .count();
        if ready == 3 { Ok(()) } else { Err(format!("{ready} ready: {slices}")) }
    });

    // The client calls web by name: every request answered by a web Pod,
    // which saw the client's identity, proven by mTLS, and counted in the
    // store (through the mesh too); v2 takes about 10 %.
    let client = kubelet.pod(&ns, "client").expect("the kubelet runs the client");
    let web_pods: Vec<String> = pods
        .iter()
        .filter(|p| p["metadata"]["labels"]["app"] == "web")
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_owned))
        .collect();
    let identity = format!("spiffe://cluster.local/ns/{ns}/sa/client");
    let answers = eventually(Duration::from_secs(30), "the client's first request succeeds", || {
        let first = get_web(&client, 1);
        if first[0].status == 200 { Ok(first) } else { Err(format!("{first:?}")) }
    });
    step("the client's first request succeeded");
    let mut last_count = answers[0].count;
    let answers = get_web(&client, 200);
    let mut v2 = 0;
    for a in &answers {
        assert_eq!(a.status, 200, "{}", a.body);
        assert!(web_pods.contains(&a.pod), "answered by {a:?}, not one of {web_pods:?}");
        assert_eq!(a.caller, identity, "{a:?}");
        assert!(a.count > last_count, "the counter went from {last_count} to {a:?}");
        last_count = a.count;
        v2 += usize::from(a.version == "v2");
    }
    // Binomial(200, 0.1): mean 20, standard deviation 4.2.
    assert!((5..=45).contains(&v2), "v2 answered {v2} of 200 under a 90/10 route");

    step("200 requests answered");
    // The route's status says Weft accepted it.
    let route = cluster.get_json(&ns, &["httproute", "web-canary"]);
    let ours = route["status"]["parents"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["controllerName"] == "weft.dev/control-plane")
        .cloned()
        .unwrap_or_else(|| panic!("no status from weft: {route}"));
    assert!(
        ours["conditions"].as_array().into_iter().flatten().any(|c| c["type"] == "Accepted" && c["status"] == "True"),
        "{ours}"
    );

    // Moving all the weight to v2: the proxies follow.
    cluster.kubectl(&[
        "patch",
        "httproute",
        "web-canary",
        "-n",
        &ns,
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/rules/0/backendRefs/0/weight","value":0},{"op":"replace","path":"/spec/rules/0/backendRefs/1/weight","value":100}]"#,
    ]);
    eventually(Duration::from_secs(20), "40 requests in a row answered by v2", || {
        let answers = get_web(&client, 40);
        let versions: Vec<&str> = answers.iter().map(|a| a.version.as_str()).collect();
        if answers.iter().all(|a| a.status == 200 && a.version == "v2") { Ok(()) } else { Err(format!("{versions:?}")) }
    });

    step("the proxies follow the route's new weights");
    // The load generator's requests succeed too, as its proxy counts them.
    let load = pods
        .iter()
        .find(|p| p["metadata"]["labels"]["app"] == "load")
        .and_then(|p| p["metadata"]["name"].as_str())
        .and_then(|name| kubelet.pod(&ns, name))
        .expect("the kubelet runs the load generator");
    let metrics = load.exec("curl", &["-s", "--max-time", "5", "http://127.0.0.1:4191/metrics"]).ok();
    let ok = weft_tests::Metrics::parse(&metrics.stdout)
        .sum("weft_responses_total", &[("direction", "outbound"), ("status_code", "200")]);
    assert!(ok > 0.0, "the load generator's proxy counted no 200 from web:\n{}", metrics.stdout);

    drop(kubelet);
    cluster.kubectl(&["delete", "mutatingwebhookconfiguration", &webhook]);
    drop(injector);
}
