//! The control plane as a Kubernetes controller (`--source kubernetes`),
//! against the tests' real API server, with real proxies in netns pods.
//!
//! ```text
//!  kubectl ─► kube-apiserver (127.0.0.1) ◄── forward ── cp pod: weft-control --source kubernetes
//!             Services, EndpointSlices,                 (as weft-system/weft-control, shipped RBAC)
//!             Pods (status written by the test,              │ discovery, policy, certificates
//!             as a kubelet would), policy                    ▼
//!  client pod: curl ─► proxy ══ mTLS ══► server pods: proxy ─► testkit http-server
//!              (ClusterIP resolved through the control plane: no kube-proxy)
//! ```
//!
//! There is no kubelet: the test creates the Pod objects, writes their
//! status (IP, Ready) and, where a controller would, their EndpointSlices.
//! Pod IPs are the netns pods' own; ClusterIPs are data the proxies
//! resolve, never routed.

use std::time::Duration;

use weft_tests::{ControlPlane, KubeCluster, Mesh, PROXY_UID, Pod, Proc, Proxy, SERVICE_CIDR, eventually};

/// A cluster, a mesh of netns pods and the control plane reading the
/// cluster, all in one namespace of the test's own.
struct KubeMesh {
    cluster: &'static KubeCluster,
    mesh: Mesh,
    cp: ControlPlane,
    ns: String,
    /// The Node the Pods are bound to (in zone `zone-a`): the EndpointSlice
    /// controller lists a Pod only once its Node exists.
    node: String,
}

/// A netns pod that is also a Kubernetes Pod, running the testkit app on
/// 8080 (answering `x-weft-server: NAME`) behind a meshed proxy.
struct Server {
    pod: Pod,
    _app: Proc,
    _proxy: Proxy,
}

fn kube_mesh(prefix: &str) -> KubeMesh {
    on(KubeCluster::shared(), prefix)
}

/// Like [`kube_mesh`], on a cluster of the test's own: for a test that
/// stops the API server, which would fail other tests sharing it (under
/// `cargo test`, which runs them as threads of one process).
fn kube_mesh_own_cluster(prefix: &str) -> KubeMesh {
    // Its processes die with this thread (`--pdeathsig`): the test's end.
    on(Box::leak(Box::new(KubeCluster::start())), prefix)
}

fn on(cluster: &'static KubeCluster, prefix: &str) -> KubeMesh {
    on_with(cluster, prefix, &[])
}

fn on_with(cluster: &'static KubeCluster, prefix: &str, cp_args: &[&str]) -> KubeMesh {
    let mesh = Mesh::new();
    let cp = mesh.pod("cp").run_kube_control(cluster, cp_args);
    let ns = cluster.namespace(prefix);
    let node = format!("node-{ns}");
    cluster.apply(
        "default",
        &format!(
            "apiVersion: v1\nkind: Node\nmetadata: {{name: {node}, labels: {{topology.kubernetes.io/zone: zone-a}}}}\n"
        ),
    );
    KubeMesh { cluster, mesh, cp, ns, node }
}

impl KubeMesh {
    /// The Pod object for netns pod `pod` (running as `sa`, meshed), its
    /// status written as a kubelet would (its IP, Ready).
    fn pod_object(&self, pod: &Pod, name: &str, sa: &str, labels: &str) {
        self.cluster.apply(
            &self.ns,
            &format!(
                "apiVersion: v1
kind: ServiceAccount
metadata: {{name: {sa}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{{labels}}}}}
spec:
  serviceAccountName: {sa}
  nodeName: {node}
  containers:
  - {{name: app, image: registry.invalid/weft/app:1, ports: [{{name: http, containerPort: 8080}}]}}
  - {{name: weft-proxy, image: registry.invalid/weft/proxy:1}}
",
                node = self.node
            ),
        );
        let ip = pod.ip();
        let status = format!(
            r#"{{"status":{{"phase":"Running","podIP":"{ip}","podIPs":[{{"ip":"{ip}"}}],"conditions":[{{"type":"Ready","status":"True"}}]}}}}"#
        );
        self.cluster.kubectl(&[
            "patch",
            "pod",
            name,
            "-n",
            &self.ns,
            "--subresource=status",
            "--type=merge",
            "-p",
            &status,
        ]);
    }

    /// A meshed proxy for Kubernetes Pod `name`: its identity proven by a
    /// service-account token bound to the Pod (audience `weft`).
    fn proxy(&self, pod: &Pod, name: &str, sa: &str) -> Proxy {
        let token = self.cluster.token(&self.ns, sa, Some("weft"), Some(name));
        let path = pod.dir().join(format!("sa-token-{name}"));
        std::fs::write(&path, token).expect("writing the token");
        std::os::unix::fs::chown(&path, Some(PROXY_UID), Some(PROXY_UID)).expect("chown the token");
        let anchors = self.cp.ca.as_ref().expect("the CA is on").anchors();
        pod.run_proxy(&[
            "--control-plane",
            &self.cp.url,
            "--identity-token-file",
            &path.display().to_string(),
            "--trust-anchors",
            &anchors.display().to_string(),
            "--service-account",
            sa,
            "--namespace",
            &self.ns,
            "--pod-name",
            name,
        ])
    }

    fn server(&self, name: &str, sa: &str, labels: &str) -> Server {
        let pod = self.mesh.pod(name);
        let app = pod.spawn_testkit("app", &["http-server", "--listen", "0.0.0.0:8080", "--name", name]);
        pod.wait_listening(8080);
        self.pod_object(&pod, name, sa, labels);
        let proxy = self.proxy(&pod, name, sa);
        Server { pod, _app: app, _proxy: proxy }
    }

    fn client(&self, name: &str, sa: &str) -> (Pod, Proxy) {
        let pod = self.mesh.pod(name);
        // As a CNI gives a Pod a default route: the ClusterIP must be
        // routable for connect() to get as far as the proxy's redirect.
        pod.exec("ip", &["route", "add", SERVICE_CIDR, "dev", "eth0"]).ok();
        self.pod_object(&pod, name, sa, "role: client");
        let proxy = self.proxy(&pod, name, sa);
        (pod, proxy)
    }

    /// A Service without selector (its slices are the test's), port 80 →
    /// 8080; returns its ClusterIP.
    fn service(&self, name: &str) -> String {
        self.cluster.apply(
            &self.ns,
            &format!(
                "apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  ports: [{{port: 80, targetPort: 8080}}]
"
            ),
        );
        let svc = self.cluster.get_json(&self.ns, &["service", name]);
        svc["spec"]["clusterIP"].as_str().expect("a ClusterIP").to_owned()
    }

    /// Writes `service`'s EndpointSlice `slice` listing `servers` (ready).
    fn slice(&self, service: &str, slice: &str, servers: &[(&Server, &str)]) {
        let endpoints: String = servers
            .iter()
            .map(|(s, name)| {
                format!(
                    "  - {{addresses: [\"{}\"], conditions: {{ready: true, serving: true, terminating: false}}, targetRef: {{kind: Pod, name: {name}}}}}\n",
                    s.pod.ip()
                )
            })
            .collect();
        let endpoints = if endpoints.is_empty() { "  []\n".to_owned() } else { endpoints };
        self.cluster.apply(
            &self.ns,
            &format!(
                "apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {slice}
  labels: {{kubernetes.io/service-name: {service}, endpointslice.kubernetes.io/managed-by: weft-tests}}
addressType: IPv4
ports: [{{name: \"\", port: 8080, protocol: TCP}}]
endpoints:
{endpoints}"
            ),
        );
    }
}

/// `n` requests to `url` + `[1-n]` on one connection from `client`:
/// (status, answering server) of each.
fn send(client: &Pod, url: &str, n: usize) -> Vec<(u16, String)> {
    client.requests(url, n, &[])
}

#[test]
fn a_service_and_its_endpoint_slice_from_the_api_server_carry_mtls_traffic() {
    let km = kube_mesh("disc");
    let web0 = km.server("web0", "web", "app: web");
    let web1 = km.server("web1", "web", "app: web");
    let vip = km.service("web");
    km.slice("web", "web-a", &[(&web0, "web0"), (&web1, "web1")]);
    let (client, _proxy) = km.client("client", "client");
    let url = format!("http://{vip}/head");

    // The proxy resolves the ClusterIP through the control plane: both
    // Pods answer, over mTLS, and each sees the client's verified identity.
    let want_id = format!("weft-client-id: spiffe://cluster.local/ns/{}/sa/client", km.ns);
    eventually(Duration::from_secs(20), "both endpoints of the slice answer", || {
        let got = send(&client, &format!("http://{vip}/"), 20);
        let mut servers: Vec<&str> = got.iter().filter(|(c, _)| *c == 200).map(|(_, s)| s.as_str()).collect();
        servers.sort();
        servers.dedup();
        if servers == ["web0", "web1"] { Ok(()) } else { Err(format!("{got:?}")) }
    });
    let curl = client.curl(&[&url]);
    assert_eq!(curl.status(), 200, "{}", curl.run);
    assert!(curl.body().to_ascii_lowercase().contains(&want_id), "the app did not see {want_id}:\n{}", curl.body());

    // A slice without web1: only web0 answers, every time.
    km.slice("web", "web-a", &[(&web0, "web0")]);
    eventually(Duration::from_secs(10), "web1 leaves the endpoints", || {
        let got = send(&client, &format!("http://{vip}/"), 20);
        if got.iter().all(|(c, s)| *c == 200 && s == "web0") { Ok(()) } else { Err(format!("{got:?}")) }
    });
    let got = send(&client, &format!("http://{vip}/"), 50);
    assert!(got.iter().all(|(c, s)| *c == 200 && s == "web0"), "{got:?}");

    // A Service with a selector and a named target port: kube-controller-
    // manager's EndpointSlice controller writes its slice from the Pods
    // (resolving `http` to 8080 through them, the zone through their
    // Node), and both Pods answer on its ClusterIP.
    km.cluster.apply(
        &km.ns,
        "apiVersion: v1
kind: Service
metadata: {name: named}
spec:
  selector: {app: web}
  ports: [{name: web, port: 80, targetPort: http}]
",
    );
    let named = km.cluster.get_json(&km.ns, &["service", "named"]);
    let named_vip = named["spec"]["clusterIP"].as_str().expect("a ClusterIP").to_owned();
    eventually(Duration::from_secs(30), "the EndpointSlice controller lists both Pods", || {
        let slices = km.cluster.get_json(&km.ns, &["endpointslices", "-l", "kubernetes.io/service-name=named"]);
        let slice = &slices["items"][0];
        let ready = slice["endpoints"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["conditions"]["ready"] == true && e["zone"] == "zone-a")
            .count();
        if ready == 2 && slice["ports"][0]["port"] == 8080 && slice["ports"][0]["name"] == "web" {
            Ok(())
        } else {
            Err(format!("slices {slices}"))
        }
    });
    eventually(Duration::from_secs(20), "both Pods answer on the selector Service", || {
        let got = send(&client, &format!("http://{named_vip}/"), 20);
        let mut servers: Vec<&str> = got.iter().filter(|(c, _)| *c == 200).map(|(_, s)| s.as_str()).collect();
        servers.sort();
        servers.dedup();
        if servers == ["web0", "web1"] && got.iter().all(|(c, _)| *c == 200) { Ok(()) } else { Err(format!("{got:?}")) }
    });
}

/// The control plane runs as 2 replicas, restarted by every rollout, and
/// the single-use renewal token a proxy got from one is unknown to the
/// other: on Kubernetes a proxy renews by presenting its projected
/// service-account token again, which any replica checks with TokenReview.
#[test]
fn a_control_plane_replica_that_never_issued_the_renewal_token_still_renews_the_certificate() {
    let lifetime = ["--cert-lifetime", "8s"];
    let mut km = on_with(KubeCluster::shared(), "replica", &lifetime);
    let web0 = km.server("web0", "web", "app: web");
    let vip = km.service("web");
    km.slice("web", "web-a", &[(&web0, "web0")]);
    let (client, client_proxy) = km.client("client", "client");
    let url = format!("http://{vip}/");
    eventually(Duration::from_secs(20), "the client reaches web0", || {
        let got = send(&client, &url, 5);
        if got.iter().all(|(c, _)| *c == 200) { Ok(()) } else { Err(format!("{got:?}")) }
    });

    // The replica that issued every certificate so far goes; the one the
    // proxies reach next shares the CA but none of its renewal tokens.
    km.cp.proc.signal(weft_tests::Signal::SIGKILL);
    km.cp.proc.wait_exit(Duration::from_secs(10));
    drop(km.cp.forward.take());
    let state = km.cp.ca.as_ref().expect("the CA is on").state_dir.join("token-state.json");
    let _ = std::fs::remove_file(&state);
    let pod = km.cp.pod.clone();
    km.cp = pod.run_kube_control(km.cluster, &lifetime);
    let renewals = |proxy: &Proxy| proxy.metrics().sum("weft_identity_renewals_total", &[]);
    let before = renewals(&client_proxy);

    // Two more renewals (8 s certificates renew within about 6 s), and
    // mTLS traffic flows on new certificates.
    eventually(Duration::from_secs(30), "the client's proxy renews twice from the other replica", || {
        let now = renewals(&client_proxy);
        if now >= before + 2.0 { Ok(()) } else { Err(format!("{now} renewals, {before} before the switch")) }
    });
    let got = send(&client, &url, 20);
    assert!(got.iter().all(|(c, s)| *c == 200 && s == "web0"), "{got:?}");
}

/// The 90/10 HTTPRoute of the GAMMA docs, on Service `web`.
fn route_90_10() -> &'static str {
    r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web-split}
spec:
  parentRefs: [{group: "", kind: Service, name: web, port: 80}]
  rules:
  - backendRefs:
    - {name: web-v1, port: 80, weight: 90}
    - {name: web-v2, port: 80, weight: 10}
"#
}

#[test]
fn routes_and_policies_applied_with_kubectl_shape_traffic() {
    let km = kube_mesh("policy");
    let v1 = km.server("v1", "web", "app: web, version: v1");
    let v2 = km.server("v2", "web", "app: web, version: v2");
    let vip = km.service("web");
    km.service("web-v1");
    km.service("web-v2");
    km.slice("web", "web-a", &[(&v1, "v1")]);
    km.slice("web-v1", "web-v1-a", &[(&v1, "v1")]);
    km.slice("web-v2", "web-v2-a", &[(&v2, "v2")]);
    let (client, proxy) = km.client("client", "client");
    let url = format!("http://{vip}/");
    eventually(Duration::from_secs(20), "web answers from v1", || {
        let got = send(&client, &url, 10);
        if got.iter().all(|(c, s)| *c == 200 && s == "v1") { Ok(()) } else { Err(format!("{got:?}")) }
    });

    // kubectl apply of a 90/10 split: v2's share of 1,000 requests is
    // within 5 standard deviations of 100 (sd = sqrt(1000 * 0.1 * 0.9) = 9.5).
    km.cluster.apply(&km.ns, route_90_10());
    let target = format!("{vip}:80");
    let source = format!("HTTPRoute/{}/web-split", km.ns);
    eventually(Duration::from_secs(20), "the route reaches the client's proxy", || {
        let sources = proxy.policy_sources(&target);
        if sources.contains(&source) { Ok(()) } else { Err(format!("policy sources {sources:?}")) }
    });
    let got = send(&client, &url, 1000);
    let ok = got.iter().filter(|(c, _)| *c == 200).count();
    let to_v2 = got.iter().filter(|(_, s)| s == "v2").count();
    assert_eq!(ok, 1000, "every request succeeds");
    assert!((53..=147).contains(&to_v2), "v2 got {to_v2} of 1000 under a 90/10 split");
    // Its status, as the Gateway API asks of a mesh route.
    eventually(Duration::from_secs(10), "the route shows Accepted and ResolvedRefs", || {
        let route = km.cluster.get_json(&km.ns, &["httproute", "web-split"]);
        let parent = &route["status"]["parents"][0];
        let cond = |t: &str| {
            parent["conditions"].as_array().into_iter().flatten().find(|c| c["type"] == t).map(|c| {
                (
                    c["status"].as_str().unwrap_or_default().to_owned(),
                    c["reason"].as_str().unwrap_or_default().to_owned(),
                )
            })
        };
        let want =
            (Some(("True".to_owned(), "Accepted".to_owned())), Some(("True".to_owned(), "ResolvedRefs".to_owned())));
        if parent["controllerName"] == "weft.dev/control-plane" && (cond("Accepted"), cond("ResolvedRefs")) == want {
            Ok(())
        } else {
            Err(format!("status {}", route["status"]))
        }
    });
    // kubectl delete restores the Service's own endpoints.
    km.cluster.kubectl(&["delete", "httproute", "web-split", "-n", &km.ns]);
    eventually(Duration::from_secs(20), "the route is gone from the client's proxy", || {
        let sources = proxy.policy_sources(&target);
        if sources.contains(&source) { Err(format!("policy sources {sources:?}")) } else { Ok(()) }
    });
    let got = send(&client, &url, 100);
    assert!(got.iter().all(|(c, s)| *c == 200 && s == "v1"), "{got:?}");

    // A TrafficPolicy the CRD schema refuses never reaches the API server.
    let bad = "apiVersion: policy.weft.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: bad-attempts}
spec:
  targetRef: {kind: Service, name: web}
  retries: {attempts: -1}
";
    let path = km.cluster.dir().join(format!("bad-attempts-{}.yaml", km.ns));
    std::fs::write(&path, bad).expect("writing the manifest");
    let run =
        km.cluster.try_kubectl(&["apply", "-n", &km.ns, "-f", &path.display().to_string()], Duration::from_secs(30));
    assert!(!run.status.success(), "a negative attempts count was stored:\n{run}");
    assert!(run.stderr.contains("spec.retries.attempts"), "the error does not name the field:\n{run}");
    // One the schema lets in but our validation refuses: Accepted=False,
    // a Warning Event, and nothing changes for the proxies.
    let other_ns = "apiVersion: policy.weft.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: other-namespace}
spec:
  targetRef: {kind: Namespace, name: kube-system}
  timeouts: {request: 1ms}
";
    km.cluster.apply(&km.ns, other_ns);
    eventually(Duration::from_secs(10), "the TrafficPolicy shows Accepted=False", || {
        let p = km.cluster.get_json(&km.ns, &["trafficpolicy", "other-namespace"]);
        let c = &p["status"]["conditions"][0];
        if c["type"] == "Accepted" && c["status"] == "False" && c["reason"] == "Invalid" {
            Ok(())
        } else {
            Err(format!("status {}", p["status"]))
        }
    });
    let events = km.cluster.get_json(&km.ns, &["events", "--field-selector", "reason=Invalid"]);
    let notes: Vec<String> = events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["involvedObject"]["name"] == "other-namespace" || e["regarding"]["name"] == "other-namespace")
        .map(|e| e["message"].as_str().or(e["note"].as_str()).unwrap_or_default().to_owned())
        .collect();
    assert!(notes.iter().any(|n| n.contains("can only target that namespace")), "no Warning Event says why: {events}");
    let got = send(&client, &url, 20);
    assert!(got.iter().all(|(c, _)| *c == 200), "the refused 1ms timeout took effect: {got:?}");

    // An AccessPolicy that admits only another account turns 200 into 403.
    km.cluster.apply(
        &km.ns,
        "apiVersion: policy.weft.dev/v1alpha1
kind: AccessPolicy
metadata: {name: web-only-from-admin}
spec:
  targetRef: {kind: Service, name: web}
  from: {serviceAccounts: [{name: admin}]}
",
    );
    eventually(Duration::from_secs(20), "the client is refused", || {
        let got = send(&client, &url, 5);
        if got.iter().all(|(c, _)| *c == 403) { Ok(()) } else { Err(format!("{got:?}")) }
    });
    let got = send(&client, &url, 50);
    assert!(got.iter().all(|(c, _)| *c == 403), "{got:?}");
    km.cluster.kubectl(&["delete", "accesspolicy", "web-only-from-admin", "-n", &km.ns]);
    eventually(Duration::from_secs(20), "the client is admitted again", || {
        let got = send(&client, &url, 5);
        if got.iter().all(|(c, _)| *c == 200) { Ok(()) } else { Err(format!("{got:?}")) }
    });
}

/// Starts `n` requests at `rate`/s from `client` to `url` in the background
/// (curl, one connection, each request's status on a line).
fn load(client: &Pod, label: &str, url: &str, n: usize, rate: u32) -> Proc {
    let url = format!("{url}[1-{n}]");
    let rate = format!("{rate}/s");
    client.spawn(
        label,
        "curl",
        &[
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %header{x-weft-server}\\n",
            "--rate",
            &rate,
            "--max-time",
            "300",
            &url,
        ],
    )
}

/// Waits for a [`load`] to end; its results by status.
fn finish(load: Proc, n: usize) -> std::collections::BTreeMap<u16, usize> {
    let run = load.finish(Duration::from_secs(300));
    let mut by_status = std::collections::BTreeMap::new();
    for line in run.stdout.lines() {
        let code = line.split(' ').next().and_then(|c| c.parse().ok()).unwrap_or(0);
        *by_status.entry(code).or_insert(0) += 1;
    }
    assert_eq!(by_status.values().sum::<usize>(), n, "curl reported {} of {n} requests: {run}", by_status.len());
    by_status
}

#[test]
fn endpoint_churn_and_an_api_server_restart_fail_no_request() {
    let km = kube_mesh_own_cluster("churn");
    let servers: Vec<Server> = ["c1", "c2", "c3"].iter().map(|n| km.server(n, "web", "app: web")).collect();
    let all: Vec<(&Server, &str)> = servers.iter().zip(["c1", "c2", "c3"]).collect();
    let vip = km.service("web");
    km.slice("web", "web-a", &all);
    let (client, proxy) = km.client("client", "client");
    let url = format!("http://{vip}/");
    let target = format!("{vip}:80");
    eventually(Duration::from_secs(20), "the client sees three endpoints", || {
        let _ = send(&client, &url, 1);
        let n = proxy.endpoints(&target).len();
        if n == 3 { Ok(()) } else { Err(format!("{n} endpoints")) }
    });

    // The slice goes from three endpoints to one and back every second for
    // 60 s, under 50 requests/s: none fails.
    let n = 3200;
    let running = load(&client, "churn-load", &url, n, 50);
    let start = std::time::Instant::now();
    let mut flips = 0;
    while start.elapsed() < Duration::from_secs(60) && flips < 120 {
        let tick = std::time::Instant::now();
        if flips % 2 == 0 {
            km.slice("web", "web-a", &all[..1])
        } else {
            km.slice("web", "web-a", &all)
        };
        flips += 1;
        std::thread::sleep(Duration::from_secs(1).saturating_sub(tick.elapsed()));
    }
    let by_status = finish(running, n);
    assert_eq!(by_status.get(&200), Some(&n), "requests by status under {flips} slice changes: {by_status:?}");
    // One a second is the aim; kubectl itself takes part of each second on a
    // loaded 2-core machine.
    assert!(flips >= 40, "only {flips} slice changes in 60 s");

    // The API server dies and comes back under load: the index keeps
    // serving what it had, and no request fails.
    km.slice("web", "web-a", &all);
    let n = 1500;
    let running = load(&client, "restart-load", &url, n, 50);
    std::thread::sleep(Duration::from_secs(3));
    km.cluster.restart_apiserver(Duration::from_secs(5));
    // The control plane lost its watches and got them back.
    eventually(Duration::from_secs(30), "the control plane's watches recover", || {
        let log = km.cp.proc.stderr();
        if log.contains("watch failed") && log.contains("watch recovered") { Ok(()) } else { Err("not yet".into()) }
    });
    // A change made after it returns is seen: only c2 is left.
    km.slice("web", "web-a", &all[1..2]);
    eventually(Duration::from_secs(30), "the change after the restart reaches the client", || {
        let eps = proxy.endpoints(&target);
        if eps == [servers[1].pod.addr(8080).to_string()] { Ok(()) } else { Err(format!("endpoints {eps:?}")) }
    });
    let by_status = finish(running, n);
    assert_eq!(by_status.get(&200), Some(&n), "requests by status across the restart: {by_status:?}");
    let got = send(&client, &url, 30);
    assert!(got.iter().all(|(c, s)| *c == 200 && s == "c2"), "{got:?}");
}
