//! `weft inject` and `weft check` (the cluster checklist) against the real
//! API server, with the real injector called by it through a
//! MutatingWebhookConfiguration pointing at `https://127.0.0.1:PORT/inject`
//! (as in kube_inject.rs), and the real control plane (as in kube_mesh.rs).
//!
//! There is no kubelet: for the control plane's "pods are ready", the test
//! does the kubelet's part for one Pod of the shipped `weft-control`
//! Deployment (manifests/install/control-plane.yaml): it binds the Pod to a
//! Node, runs a real `weft-control --source kubernetes` for it in a
//! network-namespace pod (with the test's flags, not the Pod spec's: no
//! images are run here), probes that process's `/ready` itself, and only
//! then writes the Pod's status Running and Ready. The real ReplicaSet and
//! Deployment controllers turn that into the Deployment's
//! `availableReplicas`, which is what `weft check` reads in any cluster.
//! The Deployment's status is never written by the test.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::Deserialize as _;
use serde_json::Value;
use weft_tests::injector::{Injector, write_webhook_pki};
use weft_tests::{CONTROL_ADMIN, KubeCluster, Mesh, eventually, free_port, manifests_dir, weft_bin};

const PROXY_IMAGE: &str = "registry.invalid/weft/proxy:test";

/// The shipped webhook's selectors (manifests/install/injector.yaml).
const SHIPPED_SELECTOR: &str = "{matchExpressions: [\
    {key: kubernetes.io/metadata.name, operator: NotIn, values: [kube-system, kube-public, kube-node-lease, weft-system]}, \
    {key: weft.dev/injector, operator: NotIn, values: [disabled]}]}";

/// What a `weft` run did.
#[derive(Debug)]
struct WeftRun {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `weft args`, with `stdin` on its standard input, to its end.
#[track_caller]
fn weft(args: &[&str], stdin: Option<&str>) -> WeftRun {
    let mut child = Command::new(weft_bin())
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting weft");
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).expect("writing weft's stdin");
    }
    let (out, err) = (child.stdout.take().expect("stdout"), child.stderr.take().expect("stderr"));
    let read = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let (out, err) = (read(Box::new(out)), read(Box::new(err)));
    let status = eventually(Duration::from_secs(120), &format!("weft {args:?} exits"), || {
        child.try_wait().map_err(|e| e.to_string())?.ok_or_else(|| "running".to_owned())
    });
    WeftRun {
        code: status.code(),
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

/// Every document of a YAML stream (empty ones left out).
fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|d| Value::deserialize(d).expect("a YAML document"))
        .filter(|v| !v.is_null())
        .collect()
}

/// Every object, with a List's items in its place.
fn objects(docs: &[Value]) -> Vec<Value> {
    docs.iter()
        .flat_map(|d| match d["kind"].as_str() {
            Some("List") => d["items"].as_array().cloned().unwrap_or_default(),
            _ => vec![d.clone()],
        })
        .collect()
}

/// The pod spec of a workload, or `None` for any other object.
fn pod_spec(o: &Value) -> Option<&Value> {
    let spec = match o["kind"].as_str()? {
        "Pod" => &o["spec"],
        "CronJob" => &o["spec"]["jobTemplate"]["spec"]["template"]["spec"],
        "Deployment" | "StatefulSet" | "DaemonSet" | "Job" => &o["spec"]["template"]["spec"],
        _ => return None,
    };
    Some(spec)
}

fn names(spec: &Value, field: &str) -> Vec<String> {
    spec[field].as_array().into_iter().flatten().filter_map(|c| c["name"].as_str().map(str::to_owned)).collect()
}

fn id(o: &Value) -> String {
    format!(
        "{}/{}",
        o["kind"].as_str().unwrap_or("?").to_ascii_lowercase(),
        o["metadata"]["name"].as_str().unwrap_or("?")
    )
}

const PODSPEC: &str = "containers: [{name: app, image: registry.invalid/app:1}]";

/// A Pod, a Deployment, a StatefulSet, a DaemonSet, a Job, a CronJob, a
/// List (a Deployment and a ConfigMap), a Service, a ConfigMap and a
/// Deployment that opts out.
fn every_kind() -> String {
    let workload = |kind: &str, name: &str, extra: &str| {
        format!(
            "apiVersion: apps/v1
kind: {kind}
metadata: {{name: {name}}}
spec:
  {extra}selector: {{matchLabels: {{app: {name}-{k}}}}}
  template:
    metadata: {{labels: {{app: {name}-{k}}}}}
    spec: {{{PODSPEC}}}
",
            k = kind.to_ascii_lowercase()
        )
    };
    let listed = workload("Deployment", "listed", "replicas: 1\n  ").trim_end().replace('\n', "\n  ");
    format!(
        "# Every kind weft inject knows, and two it passes through.
apiVersion: v1
kind: Pod
metadata: {{name: web, labels: {{app: web}}}}
spec: {{{PODSPEC}}}
---
{}---
{}---
{}---
apiVersion: batch/v1
kind: Job
metadata: {{name: web}}
spec:
  template:
    spec: {{restartPolicy: Never, {PODSPEC}}}
---
apiVersion: batch/v1
kind: CronJob
metadata: {{name: web}}
spec:
  schedule: '*/5 * * * *'
  jobTemplate:
    spec:
      template:
        spec: {{restartPolicy: OnFailure, {PODSPEC}}}
---
apiVersion: v1
kind: List
items:
- {listed}
- apiVersion: v1
  kind: ConfigMap
  metadata: {{name: listed}}
  data: {{k: v}}
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  selector: {{app: web}}   # the Pod above
  ports: [{{port: 80, targetPort: 8080}}]
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: web}}
data:
  greeting: hello
  mode: '0644'
---
{}",
        workload("Deployment", "web", "replicas: 1\n  "),
        workload("StatefulSet", "web", "serviceName: web\n  "),
        workload("DaemonSet", "web", ""),
        workload("Deployment", "optout", "replicas: 1\n  ").replace(
            "    metadata: {labels: {app: optout-deployment}}",
            "    metadata: {labels: {app: optout-deployment}, annotations: {weft.dev/inject: disabled}}"
        ),
    )
}

/// The init container names of the Pods labelled `app=APP` in `ns`, once
/// there are `n` of them.
fn pods_init_containers(cluster: &KubeCluster, ns: &str, app: &str, n: usize) -> Vec<(String, Vec<String>)> {
    eventually(Duration::from_secs(60), &format!("{n} Pods of {ns}/{app}"), || {
        let list = cluster.get_json(ns, &["pods", "-l", &format!("app={app}")]);
        let items = list["items"].as_array().cloned().unwrap_or_default();
        if items.len() != n {
            return Err(format!("{} Pods", items.len()));
        }
        Ok(items
            .iter()
            .map(|p| {
                (p["metadata"]["name"].as_str().unwrap_or_default().to_owned(), names(&p["spec"], "initContainers"))
            })
            .collect())
    })
}

#[test]
fn weft_inject_puts_the_proxy_in_every_workload_kind_the_api_server_takes_and_the_webhook_leaves_alone() {
    let cluster = KubeCluster::shared();
    let dir = cluster.dir().join(format!("kube-cli-inject-{}", std::process::id()));
    let injector = Injector::start_with_pki(cluster, &dir, free_port(), &["--proxy-image", PROXY_IMAGE]);
    cluster.apply("default", &injector.webhook(&format!("weft-injector-{}", std::process::id()), SHIPPED_SELECTOR));
    let ns = cluster.namespace("inject");
    cluster.kubectl(&["label", "namespace", &ns, "weft.dev/inject=enabled"]);

    let input = every_kind();
    let input_path = dir.join("every-kind.yaml");
    std::fs::write(&input_path, &input).expect("writing the manifests");
    let input_file = input_path.display().to_string();
    let flags = ["--proxy-image", PROXY_IMAGE, "--trust-anchors", &injector.file("ca.crt")];
    let once = weft(&[&["inject", input_file.as_str()][..], &flags[..]].concat(), None);
    assert_eq!(once.code, Some(0), "{once:?}");

    // Exactly the 7 workloads that do not opt out carry the proxy, first
    // among their init containers; the rest mean what they meant.
    let (before, after) = (objects(&documents(&input)), objects(&documents(&once.stdout)));
    assert_eq!(after.iter().map(id).collect::<Vec<_>>(), before.iter().map(id).collect::<Vec<_>>(), "order kept");
    let mut injected = Vec::new();
    for (b, a) in before.iter().zip(&after) {
        match pod_spec(a).map(|s| names(s, "initContainers")) {
            Some(inits) if inits == ["weft-init", "weft-proxy"] => {
                injected.push(id(a));
                assert_eq!(names(pod_spec(a).expect("spec"), "containers"), ["app"], "{}", id(a));
            }
            _ => assert_eq!(a, b, "{} is passed through unchanged", id(a)),
        }
    }
    assert_eq!(
        injected,
        [
            "pod/web",
            "deployment/web",
            "statefulset/web",
            "daemonset/web",
            "job/web",
            "cronjob/web",
            "deployment/listed"
        ]
    );
    // Documents passed through are the input's own bytes.
    for doc in input
        .split("---\n")
        .filter(|d| d.contains("kind: Service") || d.contains("kind: ConfigMap\nmetadata: {name: web}"))
    {
        assert!(once.stdout.contains(doc), "not passed through byte for byte:\n{doc}");
    }
    assert_eq!(
        once.stderr.lines().filter(|l| l.ends_with(" injected")).count(),
        7,
        "one line per injected workload:\n{}",
        once.stderr
    );

    // Twice is once; stdin is the same as a file.
    let out_path = dir.join("injected.yaml");
    std::fs::write(&out_path, &once.stdout).expect("writing the output");
    let twice = weft(&[&["inject", &out_path.display().to_string()][..], &flags[..]].concat(), None);
    assert_eq!((twice.code, twice.stdout.as_str()), (Some(0), once.stdout.as_str()), "weft inject of its own output");
    let piped = weft(&[&["inject", "-"][..], &flags[..]].concat(), Some(&input));
    assert_eq!((piped.code, piped.stdout.as_str()), (Some(0), once.stdout.as_str()), "weft inject -");

    // The API server takes every object as it is printed.
    let out_file = out_path.display().to_string();
    let run = cluster.kubectl(&["apply", "--dry-run=server", "-n", &ns, "-f", &out_file]);
    let mut applied: Vec<&str> = run.stdout.lines().filter_map(|l| l.split_whitespace().next()).collect();
    applied.sort_unstable();
    assert_eq!(
        applied,
        [
            "configmap/listed",
            "configmap/web",
            "cronjob.batch/web",
            "daemonset.apps/web",
            "deployment.apps/listed",
            "deployment.apps/optout",
            "deployment.apps/web",
            "job.batch/web",
            "pod/web",
            "service/web",
            "statefulset.apps/web",
        ],
        "{run}"
    );
    assert!(run.stdout.lines().all(|l| l.ends_with("(server dry run)")), "{run}");

    // Applied for real in a namespace the webhook injects: it leaves the
    // injected Pods alone (one proxy each) and still injects a Deployment
    // that weft inject never saw.
    cluster.kubectl(&["apply", "-n", &ns, "-f", &out_file]);
    cluster.apply(
        &ns,
        &format!(
            "apiVersion: apps/v1
kind: Deployment
metadata: {{name: plain}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: plain}}}}
  template:
    metadata: {{labels: {{app: plain}}}}
    spec: {{{PODSPEC}}}
"
        ),
    );
    for (app, want) in [
        ("web", &["weft-init", "weft-proxy"][..]),
        ("web-deployment", &["weft-init", "weft-proxy"][..]),
        ("listed-deployment", &["weft-init", "weft-proxy"][..]),
        ("plain", &["weft-init", "weft-proxy"][..]),
        ("optout-deployment", &[][..]),
    ] {
        for (pod, inits) in pods_init_containers(cluster, &ns, app, 1) {
            assert_eq!(inits, want, "{ns}/{pod}");
        }
    }
}

#[test]
fn weft_inject_refuses_malformed_input_naming_the_document_and_prints_nothing() {
    let dir = std::env::temp_dir().join(format!("weft-tests-kube-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    let good = "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: app, image: x}]}\n";
    // (case, input, what stderr says)
    let cases = [
        (
            "malformed YAML",
            format!("{good}---\n{good}---\napiVersion: v1\nkind: [Pod\n"),
            "document 3: not valid YAML: did not find expected ',' or ']' at line 13 column 1",
        ),
        ("not a Kubernetes object", format!("{good}---\n- just\n- a list\n"), "document 2: not a Kubernetes object"),
    ];
    for (case, input, want) in cases {
        let path = dir.join("bad.yaml");
        std::fs::write(&path, &input).expect("writing");
        for run in [weft(&["inject", &path.display().to_string()], None), weft(&["inject", "-"], Some(&input))] {
            assert_eq!(run.code, Some(1), "{case}: {run:?}");
            assert_eq!(run.stdout, "", "{case}: nothing printed");
            assert!(run.stderr.contains(want), "{case}: {run:?}");
            assert!(run.stderr.contains("(nothing was printed)"), "{case}: {run:?}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// What `weft check` prints for a healthy cluster.
const HEALTHY: &str = "kubernetes-api
--------------
√ can initialize the client
√ can query the Kubernetes API

weft-control-plane
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
";

/// Does the kubelet's part for one Pod of Deployment weft-control: binds
/// it to `node`, runs a real control plane for it in a netns pod, probes
/// its `/ready`, then reports the Pod Running and Ready with that pod's IP.
fn run_control_plane_pod(cluster: &KubeCluster, mesh: &Mesh, node: &str) -> weft_tests::ControlPlane {
    let pod_name = eventually(Duration::from_secs(60), "the ReplicaSet creates weft-control's Pods", || {
        let list = cluster.get_json("weft-system", &["pods", "-l", "app.kubernetes.io/name=weft-control"]);
        let items = list["items"].as_array().cloned().unwrap_or_default();
        items
            .iter()
            .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_owned))
            .min()
            .ok_or_else(|| "no Pod yet".to_owned())
    });
    // As the scheduler binds a Pod: POST pods/NAME/binding.
    let binding = cluster.dir().join(format!("binding-{pod_name}.json"));
    std::fs::write(
        &binding,
        format!(r#"{{"apiVersion":"v1","kind":"Binding","metadata":{{"name":"{pod_name}"}},"target":{{"apiVersion":"v1","kind":"Node","name":"{node}"}}}}"#),
    )
    .expect("writing the binding");
    cluster.kubectl(&[
        "create",
        "--raw",
        &format!("/api/v1/namespaces/weft-system/pods/{pod_name}/binding"),
        "-f",
        &binding.display().to_string(),
    ]);
    let netns = mesh.pod("cp");
    let cp = netns.run_kube_control(cluster, &[]);
    // The kubelet's readiness probe, against the process itself.
    let probe = netns.exec(
        "curl",
        &["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2", &format!("http://{CONTROL_ADMIN}/ready")],
    );
    assert_eq!(probe.stdout, "200", "the control plane's /ready: {probe}");
    let ip = netns.ip();
    let status = format!(
        r#"{{"status":{{"phase":"Running","podIP":"{ip}","podIPs":[{{"ip":"{ip}"}}],"conditions":[{{"type":"Ready","status":"True"}}]}}}}"#
    );
    cluster.kubectl(&[
        "patch",
        "pod",
        &pod_name,
        "-n",
        "weft-system",
        "--subresource=status",
        "--type=merge",
        "-p",
        &status,
    ]);
    cp
}

#[test]
fn weft_check_passes_a_healthy_mesh_and_names_pods_created_while_the_injector_was_down() {
    // A cluster of its own: weft check looks at every namespace.
    let cluster = KubeCluster::start();
    let mesh = Mesh::new();
    cluster.install_weft();
    let install = manifests_dir().join("install").join("control-plane.yaml");
    cluster.kubectl(&["apply", "-f", &install.display().to_string()]);
    let kubeconfig = cluster.kubeconfig().display().to_string();
    // Before any of its Pods runs, the control plane is not ready (and
    // nothing else is installed yet).
    let bare = weft(&["check", "--kubeconfig", &kubeconfig], None);
    assert_eq!(bare.code, Some(1), "{bare:?}");
    assert!(
        bare.stdout.contains(
            "√ control plane Namespace exists
× control plane pods are ready
    no ready pod of Deployment weft-control (0 of 2 available)
"
        ),
        "{}",
        bare.stdout
    );
    let node = format!("node-{}", std::process::id());
    cluster.apply("default", &format!("apiVersion: v1\nkind: Node\nmetadata: {{name: {node}}}\n"));
    let _cp = run_control_plane_pod(&cluster, &mesh, &node);
    eventually(Duration::from_secs(60), "Deployment weft-control has an available replica", || {
        let d = cluster.get_json("weft-system", &["deployment", "weft-control"]);
        let available = d["status"]["availableReplicas"].as_i64().unwrap_or(0);
        if available >= 1 { Ok(()) } else { Err(format!("status {}", d["status"])) }
    });

    // The injector serves the certificate of Secret weft-injector-tls, and
    // the webhook's caBundle is the CA that signed it.
    let pki = cluster.dir().join("webhook-pki");
    write_webhook_pki(&pki);
    let pki_file = |name: &str| pki.join(name).display().to_string();
    cluster.kubectl(&[
        "create",
        "secret",
        "generic",
        "weft-injector-tls",
        "-n",
        "weft-system",
        "--type=kubernetes.io/tls",
        &format!("--from-file=tls.crt={}", pki_file("tls.crt")),
        &format!("--from-file=tls.key={}", pki_file("tls.key")),
        &format!("--from-file=ca.crt={}", pki_file("ca.crt")),
    ]);
    let injector = Injector::start_with_pki(&cluster, &pki, free_port(), &["--proxy-image", PROXY_IMAGE]);
    cluster.apply("default", &injector.webhook("weft-injector", SHIPPED_SELECTOR));

    let shop = cluster.namespace("shop");
    cluster.kubectl(&["label", "namespace", &shop, "weft.dev/inject=enabled"]);
    let deployment = |name: &str| {
        format!(
            "apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec: {{{PODSPEC}}}
"
        )
    };
    cluster.apply(&shop, &deployment("web"));
    for (pod, inits) in pods_init_containers(&cluster, &shop, "web", 2) {
        assert_eq!(inits, ["weft-init", "weft-proxy"], "{pod}");
    }
    let healthy = weft(&["check", "--kubeconfig", &kubeconfig], None);
    assert_eq!((healthy.code, healthy.stdout.as_str()), (Some(0), HEALTHY), "{}", healthy.stderr);

    // The injector stops; with failurePolicy Ignore, new Pods are created
    // without the proxy, and weft check names them.
    drop(injector);
    cluster.apply(&shop, &deployment("late"));
    let late = pods_init_containers(&cluster, &shop, "late", 2);
    let mut late_names: Vec<String> = late
        .iter()
        .map(|(p, inits)| {
            assert!(inits.is_empty(), "{p} was created without the injector: {inits:?}");
            format!("{shop}/{p}")
        })
        .collect();
    late_names.sort();
    let failing = weft(&["check", "--kubeconfig", &kubeconfig], None);
    let want = HEALTHY
        .replace(
            "√ injector webhook is reachable\n",
            &format!(
                "× injector webhook is reachable
    a Pod created in {shop} with dryRun=All came back without weft-proxy: the API server did not get a patch from \
the webhook, and its failurePolicy let the Pod through uninjected
    hint: is the injector running and ready (kubectl -n weft-system get pods -l \
app.kubernetes.io/name=weft-injector)? Then its Service's endpoints, a NetworkPolicy between the API server and \
the injector, and the caBundle (above) are the usual causes; the API server's log names the webhook call's error
"
            ),
        )
        .replace(
            "√ every pod meant to be injected has the proxy\n",
            &format!(
                "× every pod meant to be injected has the proxy
    2 pods run without the proxy although weft.dev/inject selects them:
        * {}
        * {}
    hint: they were created while the injector was down or unreachable (failurePolicy: Ignore lets Pods \
through), or before their namespace was labelled: once `injector webhook is reachable` passes, restart their \
workloads (kubectl -n NAMESPACE rollout restart deployment NAME) or delete the Pods
",
                late_names[0], late_names[1]
            ),
        )
        .replace("Status check results are √", "Status check results are ×");
    assert_eq!((failing.code, failing.stdout.as_str()), (Some(1), want.as_str()), "{}", failing.stderr);
}
