//! A test kubelet: runs the Pods of one Node as network-namespace pods.
//!
//! ```text
//!  kube-apiserver ── watch pods (kubectl --watch) ──► Kubelet (a thread of the test)
//!       ▲  Binding (unscheduled Pods of its namespaces)     │ per Pod: a netns pod of the Mesh
//!       │  status: podIP, Ready                             │   init containers, in order
//!       └───────────────────────────────────────────────────┤   native sidecars: started, startup probe
//!  kube-controller-manager: EndpointSlices from Ready Pods  │   containers: started, readiness probe
//!                                                           ▼
//!                      ip netns exec POD sh -c 'mount volumes; exec [setpriv --reuid U] PROGRAM ARGS'
//! ```
//!
//! What a real kubelet does and this one does too: it binds the pending
//! Pods of the namespaces it serves to its Node (there is no scheduler),
//! runs init containers to completion in order, starts native sidecars
//! (`restartPolicy: Always`) and waits for their startup probe before the
//! next container, runs containers as their `runAsUser`, resolves `env`
//! (`value`, `fieldRef`) and `$(VAR)` references, mounts projected volumes
//! (service-account tokens from the TokenRequest API, bound to the Pod;
//! ConfigMaps; the downward API), Secrets and emptyDirs at their
//! `mountPath` in the container's private mount namespace, probes
//! (`httpGet`, `tcpSocket`) and writes the Pod's status (IP, conditions,
//! container states) so that the EndpointSlice controller lists it. A Pod
//! being deleted gets its processes stopped and is then deleted for good.
//!
//! What it does differently, and why:
//! - Images are not pulled: an image name maps to an [`Image`], the local
//!   binaries that stand for it (its entrypoint and its `PATH`).
//! - Names resolve through `/etc/netns/NETNS/hosts` (which `ip netns exec`
//!   mounts over `/etc/hosts`), written at the Pod's start with every
//!   Service's ClusterIP under the names cluster DNS would give it: there is
//!   no CoreDNS. ClusterIPs are then data the proxies resolve, never routed.
//! - Probes run inside the Pod's network namespace against 127.0.0.1 (the
//!   real kubelet dials the Pod's IP from the node).
//! - A container that exits is not restarted; crashes show in the logs.
//! - Volumes are mounted only under `/run` (a tmpfs is mounted there first,
//!   so nothing is created on the machine) or over directories that exist.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::env::tool;
use crate::kube::{KUBECTL_TIMEOUT, KubeCluster, kube_bin};
use crate::mesh::{Mesh, Pod};
use crate::process::Proc;

/// How long an init container may run, and a probe may take to pass.
pub const CONTAINER_DEADLINE: Duration = Duration::from_secs(90);

/// The local programs that stand for a container image.
#[derive(Clone, Debug, Default)]
pub struct Image {
    /// What runs when the container names no `command` (the image's
    /// ENTRYPOINT and CMD); the container's `args` follow it.
    pub entrypoint: Vec<String>,
    /// Program names the image has on its `PATH`, and the local file each is.
    pub binaries: BTreeMap<String, PathBuf>,
}

impl Image {
    /// An image whose entrypoint is `entrypoint`.
    pub fn new(entrypoint: &[&str]) -> Image {
        Image { entrypoint: entrypoint.iter().map(|s| (*s).to_owned()).collect(), binaries: BTreeMap::new() }
    }

    /// `name` on the image's `PATH` is the local file `path`.
    pub fn binary(mut self, name: &str, path: impl Into<PathBuf>) -> Image {
        self.binaries.insert(name.to_owned(), path.into());
        self
    }
}

/// What the kubelet should do about a Pod it was told of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Bind it to this Node (unscheduled, in a namespace this kubelet serves).
    Bind,
    /// Run it (bound here, not running yet, not being deleted).
    Start,
    /// Stop its containers and delete it for good (being deleted).
    Stop {
        finalize: bool,
    },
    Nothing,
}

/// The pure decision for one watch event: `pod` as the event carries it
/// (`deleted` for a DELETED event), and whether this kubelet runs it now.
pub fn decide(node: &str, namespaces: &[String], pod: &Value, deleted: bool, running: bool) -> Action {
    let bound_to = pod["spec"]["nodeName"].as_str().unwrap_or("");
    let namespace = pod["metadata"]["namespace"].as_str().unwrap_or("");
    let deleting = deleted || !pod["metadata"]["deletionTimestamp"].is_null();
    let finished = matches!(pod["status"]["phase"].as_str(), Some("Succeeded" | "Failed"));
    if bound_to.is_empty() {
        let ours = namespaces.iter().any(|n| n == namespace);
        return if ours && !deleting { Action::Bind } else { Action::Nothing };
    }
    if bound_to != node {
        return Action::Nothing;
    }
    match (deleting, running) {
        (true, _) => Action::Stop { finalize: !deleted },
        (false, false) if !finished => Action::Start,
        _ => Action::Nothing,
    }
}

/// `$(VAR)` references in `s` replaced by `env`'s values, as Kubernetes
/// expands `command`, `args` and `env` values: `$$` is a literal `$`, and a
/// reference to an unknown variable is left as written.
pub fn expand(s: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(name_end) = after.strip_prefix('(').and_then(|a| a.find(')')) {
            let name = &after[1..=name_end];
            match env.iter().rev().find(|(k, _)| k == name) {
                Some((_, v)) => out.push_str(v),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &after[name_end + 2..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// `s` quoted for `sh`.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The value of a downward-API `fieldPath` of `pod` (the ones Pods use).
fn field(pod: &Value, path: &str, pod_ip: &str) -> Option<String> {
    let v = match path {
        "metadata.name" => &pod["metadata"]["name"],
        "metadata.namespace" => &pod["metadata"]["namespace"],
        "metadata.uid" => &pod["metadata"]["uid"],
        "spec.serviceAccountName" => &pod["spec"]["serviceAccountName"],
        "spec.nodeName" => &pod["spec"]["nodeName"],
        "status.podIP" | "status.hostIP" => return Some(pod_ip.to_owned()),
        _ => {
            let key = path
                .strip_prefix("metadata.labels['")
                .map(|k| ("labels", k))
                .or_else(|| path.strip_prefix("metadata.annotations['").map(|k| ("annotations", k)))?;
            &pod["metadata"][key.0][key.1.trim_end_matches("']")]
        }
    };
    v.as_str().map(str::to_owned)
}

/// A Pod this kubelet runs.
struct Running {
    name: String,
    namespace: String,
    /// Its network namespace, once made.
    netns: Option<Pod>,
    procs: Vec<Proc>,
}

struct Shared {
    cluster: &'static KubeCluster,
    mesh: Mesh,
    node: String,
    namespaces: Vec<String>,
    images: HashMap<String, Image>,
    /// Running Pods by UID.
    pods: Mutex<HashMap<String, Running>>,
    /// Errors met while running Pods, for the test's messages.
    errors: Mutex<Vec<String>>,
    stop: AtomicBool,
    next: AtomicUsize,
    dir: PathBuf,
}

/// The test kubelet of Node `node`; stops everything it runs when dropped.
pub struct Kubelet {
    shared: Arc<Shared>,
    watch: Arc<Mutex<Option<Child>>>,
    thread: Option<std::thread::JoinHandle<()>>,
    hosts_dirs: Arc<Mutex<Vec<PathBuf>>>,
}

impl Kubelet {
    /// Registers Node `node` and runs the Pods bound to it, binding the
    /// pending Pods of `namespaces` to it. `images` maps an image name
    /// (without its tag) to the local programs that stand for it.
    pub fn start(
        cluster: &'static KubeCluster,
        mesh: &Mesh,
        node: &str,
        namespaces: &[String],
        images: HashMap<String, Image>,
    ) -> Kubelet {
        cluster.apply(
            "default",
            &format!(
                "apiVersion: v1\nkind: Node\nmetadata: {{name: {node}, labels: {{kubernetes.io/hostname: {node}, topology.kubernetes.io/zone: zone-a}}}}\n"
            ),
        );
        let dir = mesh.dir().join(format!("kubelet-{node}"));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let shared = Arc::new(Shared {
            cluster,
            mesh: mesh.clone(),
            node: node.to_owned(),
            namespaces: namespaces.to_vec(),
            images,
            pods: Mutex::default(),
            errors: Mutex::default(),
            stop: AtomicBool::new(false),
            next: AtomicUsize::new(0),
            dir,
        });
        let watch = Arc::new(Mutex::new(None));
        let hosts_dirs = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (shared, watch, hosts_dirs) = (shared.clone(), watch.clone(), hosts_dirs.clone());
            std::thread::Builder::new()
                .name(format!("kubelet-{node}"))
                .spawn(move || watch_loop(&shared, &watch, &hosts_dirs))
                .expect("spawning the kubelet thread")
        };
        Kubelet { shared, watch, thread: Some(thread), hosts_dirs }
    }

    /// The network-namespace pod running Kubernetes Pod `namespace/name`.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<Pod> {
        let pods = self.shared.pods.lock().unwrap_or_else(|e| e.into_inner());
        pods.values().find(|r| r.namespace == namespace && r.name == name).and_then(|r| r.netns.clone())
    }

    /// What went wrong running Pods so far (empty when nothing did).
    pub fn errors(&self) -> Vec<String> {
        self.shared.errors.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(child) = self.watch.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            let _ = child.kill();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.shared.pods.lock().unwrap_or_else(|e| e.into_inner()).clear();
        for dir in self.hosts_dirs.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Watches every Pod (restarting the watch when it ends, e.g. when the API
/// server restarts) until the kubelet stops.
fn watch_loop(shared: &Arc<Shared>, watch: &Mutex<Option<Child>>, hosts_dirs: &Arc<Mutex<Vec<PathBuf>>>) {
    while !shared.stop.load(Ordering::SeqCst) {
        let child = Command::new(kube_bin("kubectl"))
            .arg(format!("--kubeconfig={}", shared.cluster.kubeconfig().display()))
            .args(["get", "pods", "--all-namespaces", "--watch", "--output-watch-events", "-o", "json"])
            .env("KUBECACHEDIR", shared.dir.join("kubectl-cache"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn();
        let mut child = match child {
            Ok(child) => child,
            Err(e) => {
                shared.error(format!("cannot run kubectl for the watch: {e}"));
                return;
            }
        };
        let stdout = child.stdout.take().expect("piped stdout");
        *watch.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let events = serde_json::Deserializer::from_reader(std::io::BufReader::new(stdout)).into_iter::<Value>();
        for event in events {
            let Ok(event) = event else { break };
            let deleted = event["type"] == "DELETED";
            handle(shared, hosts_dirs, &event["object"], deleted);
        }
        if let Some(mut child) = watch.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // The API server is away: try again in a moment.
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn handle(shared: &Arc<Shared>, hosts_dirs: &Arc<Mutex<Vec<PathBuf>>>, pod: &Value, deleted: bool) {
    let uid = pod["metadata"]["uid"].as_str().unwrap_or("").to_owned();
    let name = pod["metadata"]["name"].as_str().unwrap_or("").to_owned();
    let namespace = pod["metadata"]["namespace"].as_str().unwrap_or("").to_owned();
    let running = shared.pods.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&uid);
    match decide(&shared.node, &shared.namespaces, pod, deleted, running) {
        Action::Nothing => {}
        Action::Bind => {
            let binding = json!({
                "apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": name, "namespace": namespace},
                "target": {"apiVersion": "v1", "kind": "Node", "name": shared.node},
            });
            let path = shared.file(&format!("binding-{namespace}-{name}.json"), &binding.to_string());
            // A second Binding of the same Pod is refused (409): harmless.
            let _ = shared.cluster.try_kubectl(&["create", "-f", &path.display().to_string()], KUBECTL_TIMEOUT);
        }
        Action::Start => {
            shared.pods.lock().unwrap_or_else(|e| e.into_inner()).insert(
                uid.clone(),
                Running { name: name.clone(), namespace: namespace.clone(), netns: None, procs: Vec::new() },
            );
            let (shared, hosts_dirs, pod) = (shared.clone(), hosts_dirs.clone(), pod.clone());
            std::thread::spawn(move || {
                if let Err(why) = run_pod(&shared, &hosts_dirs, &pod, &uid) {
                    shared.error(format!("pod {namespace}/{name}: {why}"));
                    let status = json!({"status": {"phase": "Pending", "message": format!("test kubelet: {why}")}});
                    shared.patch_status(&namespace, &name, &status);
                }
            });
        }
        Action::Stop { finalize } => {
            let stopped = shared.pods.lock().unwrap_or_else(|e| e.into_inner()).remove(&uid);
            if let Some(mut running) = stopped {
                for proc in running.procs.iter_mut().rev() {
                    proc.signal(nix::sys::signal::Signal::SIGTERM);
                }
                let deadline = Instant::now() + Duration::from_secs(5);
                for proc in &mut running.procs {
                    while proc.try_status().is_none() && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
            if finalize {
                let _ = shared.cluster.try_kubectl(
                    &["delete", "pod", &name, "-n", &namespace, "--grace-period=0", "--force", "--wait=false"],
                    KUBECTL_TIMEOUT,
                );
            }
        }
    }
}

impl Shared {
    fn error(&self, why: String) {
        eprintln!("test kubelet {}: {why}", self.node);
        self.errors.lock().unwrap_or_else(|e| e.into_inner()).push(why);
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.join(name);
        let _ = std::fs::write(&path, text);
        path
    }

    fn patch_status(&self, namespace: &str, name: &str, status: &Value) {
        let run = self.cluster.try_kubectl(
            &["patch", "pod", name, "-n", namespace, "--subresource=status", "--type=merge", "-p", &status.to_string()],
            KUBECTL_TIMEOUT,
        );
        if !run.status.success() {
            self.error(format!("writing the status of {namespace}/{name}: {run}"));
        }
    }

    fn kubectl_json(&self, args: &[&str]) -> Result<Value, String> {
        let run = self.cluster.try_kubectl(args, KUBECTL_TIMEOUT);
        if !run.status.success() {
            return Err(format!("kubectl failed:\n{run}"));
        }
        serde_json::from_str(&run.stdout).map_err(|e| format!("kubectl printed invalid JSON ({e}):\n{run}"))
    }
}

fn now() -> String {
    let out = Command::new(tool("date")).args(["-u", "+%Y-%m-%dT%H:%M:%SZ"]).output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned()).unwrap_or_default()
}

/// Runs `pod` to Ready, or says why it could not.
fn run_pod(shared: &Shared, hosts_dirs: &Mutex<Vec<PathBuf>>, pod: &Value, uid: &str) -> Result<(), String> {
    let name = pod["metadata"]["name"].as_str().unwrap_or("");
    let namespace = pod["metadata"]["namespace"].as_str().unwrap_or("");
    let started = now();
    let n = shared.next.fetch_add(1, Ordering::Relaxed);
    let netns = shared.mesh.pod(&format!("k{n}"));
    let ip = netns.ip().to_string();
    // As a CNI gives a Pod its default route: a connect() to a ClusterIP
    // must get as far as the proxy's redirect. (The netns has no uplink.)
    let route = netns.exec("ip", &["route", "add", "default", "dev", "eth0"]);
    if !route.status.success() {
        return Err(format!("adding the default route: {route}"));
    }
    let pod_dir = shared.dir.join(format!("{namespace}_{name}"));
    std::fs::create_dir_all(&pod_dir).map_err(|e| format!("creating {}: {e}", pod_dir.display()))?;
    let keep = |proc: Proc| {
        let mut pods = shared.pods.lock().unwrap_or_else(|e| e.into_inner());
        match pods.get_mut(uid) {
            Some(running) => {
                running.procs.push(proc);
                Ok(())
            }
            None => Err("deleted while starting".to_owned()),
        }
    };
    if let Some(running) = shared.pods.lock().unwrap_or_else(|e| e.into_inner()).get_mut(uid) {
        running.netns = Some(netns.clone());
    }

    // Cluster DNS, as a hosts file: every Service's ClusterIP.
    let hosts_dir = PathBuf::from("/etc/netns").join(netns.ns());
    std::fs::create_dir_all(&hosts_dir).map_err(|e| format!("creating {}: {e}", hosts_dir.display()))?;
    hosts_dirs.lock().unwrap_or_else(|e| e.into_inner()).push(hosts_dir.clone());
    let services = shared.kubectl_json(&["get", "services", "--all-namespaces", "-o", "json"])?;
    std::fs::write(hosts_dir.join("hosts"), hosts_file(name, namespace, &ip, &services))
        .map_err(|e| format!("writing the hosts file: {e}"))?;

    let volumes = volumes(shared, pod, &pod_dir, &ip)?;
    let at = PodContext { shared, netns: &netns, pod, volumes: &volumes, ip: &ip };
    let spec = &pod["spec"];
    let mut statuses = Vec::new();
    let mut init_statuses = Vec::new();
    for c in spec["initContainers"].as_array().into_iter().flatten() {
        let cname = c["name"].as_str().unwrap_or("");
        let mut proc = netns_proc(&at, c)?;
        if c["restartPolicy"] == "Always" {
            let probe = if c["startupProbe"].is_object() { &c["startupProbe"] } else { &c["readinessProbe"] };
            wait_probe(&netns, &mut proc, c, probe)?;
            keep(proc)?;
            init_statuses.push(container_status(c, true, &started));
        } else {
            let status = wait_exit(&mut proc)?;
            if !status.success() {
                return Err(format!("init container {cname} exited with {status}:\n{}", proc.stderr()));
            }
            init_statuses.push(json!({
                "name": cname, "image": c["image"], "imageID": "", "ready": true, "restartCount": 0,
                "started": false, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}},
            }));
        }
    }
    let mut procs = Vec::new();
    for c in spec["containers"].as_array().into_iter().flatten() {
        procs.push((c, netns_proc(&at, c)?));
    }
    for (c, mut proc) in procs {
        wait_probe(&netns, &mut proc, c, &c["readinessProbe"])?;
        keep(proc)?;
        statuses.push(container_status(c, true, &started));
    }
    let conditions: Vec<Value> = ["PodScheduled", "Initialized", "ContainersReady", "Ready"]
        .iter()
        .map(|t| json!({"type": t, "status": "True", "lastTransitionTime": started}))
        .collect();
    let status = json!({"status": {
        "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": ip, "startTime": started,
        "conditions": conditions, "containerStatuses": statuses, "initContainerStatuses": init_statuses,
    }});
    shared.patch_status(namespace, name, &status);
    Ok(())
}

fn container_status(c: &Value, ready: bool, started: &str) -> Value {
    json!({
        "name": c["name"], "image": c["image"], "imageID": "", "ready": ready, "restartCount": 0,
        "started": true, "state": {"running": {"startedAt": started}},
    })
}

/// `/etc/hosts` of a Pod: every Service with a ClusterIP under the names
/// cluster DNS gives it (the bare name in the Pod's own namespace).
pub fn hosts_file(pod: &str, namespace: &str, ip: &str, services: &Value) -> String {
    let mut out = format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{ip}\t{pod}\n");
    for s in services["items"].as_array().into_iter().flatten() {
        let (Some(name), Some(ns), Some(vip)) =
            (s["metadata"]["name"].as_str(), s["metadata"]["namespace"].as_str(), s["spec"]["clusterIP"].as_str())
        else {
            continue;
        };
        if vip == "None" || vip.is_empty() {
            continue;
        }
        let short = if ns == namespace { format!("{name} ") } else { String::new() };
        let _ = writeln!(out, "{vip}\t{short}{name}.{ns} {name}.{ns}.svc {name}.{ns}.svc.cluster.local");
    }
    out
}

/// One mounted volume: its local directory (or file) per volume name.
type Volumes = HashMap<String, PathBuf>;

/// Makes every volume of `pod` under `dir`: projected (service-account
/// tokens, ConfigMaps, the downward API), Secrets and emptyDirs.
fn volumes(shared: &Shared, pod: &Value, dir: &Path, ip: &str) -> Result<Volumes, String> {
    let namespace = pod["metadata"]["namespace"].as_str().unwrap_or("");
    let mut out = Volumes::new();
    for v in pod["spec"]["volumes"].as_array().into_iter().flatten() {
        let vname = v["name"].as_str().unwrap_or("");
        let vdir = dir.join("volumes").join(vname);
        std::fs::create_dir_all(&vdir).map_err(|e| format!("creating {}: {e}", vdir.display()))?;
        let mut files: Vec<(String, Vec<u8>)> = Vec::new();
        let sources: Vec<&Value> = if let Some(p) = v["projected"]["sources"].as_array() {
            p.iter().collect()
        } else if v["secret"].is_object() || v["configMap"].is_object() || v["downwardAPI"].is_object() {
            vec![v]
        } else if v["emptyDir"].is_object() {
            vec![]
        } else {
            return Err(format!("volume {vname}: only projected, secret, configMap, downwardAPI and emptyDir volumes"));
        };
        for s in sources {
            if let Some(t) = s["serviceAccountToken"].as_object() {
                files.push((t["path"].as_str().unwrap_or("token").to_owned(), token(shared, pod, t)?.into_bytes()));
            }
            for (kind, source) in [("configmap", &s["configMap"]), ("secret", &s["secret"])] {
                if !source.is_object() {
                    continue;
                }
                let object_name = source["name"].as_str().or(source["secretName"].as_str()).unwrap_or("");
                let object = shared.kubectl_json(&["get", kind, object_name, "-n", namespace, "-o", "json"])?;
                let data = object["data"].as_object().cloned().unwrap_or_default();
                let decode = |v: &Value| -> Vec<u8> {
                    let s = v.as_str().unwrap_or("");
                    if kind == "secret" {
                        use base64::Engine as _;
                        base64::engine::general_purpose::STANDARD.decode(s).unwrap_or_default()
                    } else {
                        s.as_bytes().to_vec()
                    }
                };
                match source["items"].as_array() {
                    Some(items) => {
                        for item in items {
                            let key = item["key"].as_str().unwrap_or("");
                            let path = item["path"].as_str().unwrap_or(key);
                            files.push((path.to_owned(), data.get(key).map(decode).unwrap_or_default()));
                        }
                    }
                    None => files.extend(data.iter().map(|(k, v)| (k.clone(), decode(v)))),
                }
            }
            for item in s["downwardAPI"]["items"].as_array().into_iter().flatten() {
                let path = item["path"].as_str().unwrap_or("");
                let value = field(pod, item["fieldRef"]["fieldPath"].as_str().unwrap_or(""), ip).unwrap_or_default();
                files.push((path.to_owned(), value.into_bytes()));
            }
        }
        for (path, bytes) in files {
            if path.contains("..") {
                return Err(format!("volume {vname}: path {path:?} leaves the volume"));
            }
            let file = vdir.join(&path);
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent).map_err(|e| format!("creating {}: {e}", parent.display()))?;
            }
            std::fs::write(&file, bytes).map_err(|e| format!("writing {}: {e}", file.display()))?;
        }
        out.insert(vname.to_owned(), vdir);
    }
    Ok(out)
}

/// A token from the TokenRequest API for the Pod's service account, bound
/// to the Pod, as a projected `serviceAccountToken` source asks.
fn token(shared: &Shared, pod: &Value, source: &serde_json::Map<String, Value>) -> Result<String, String> {
    let namespace = pod["metadata"]["namespace"].as_str().unwrap_or("");
    let sa = pod["spec"]["serviceAccountName"].as_str().unwrap_or("default");
    let name = pod["metadata"]["name"].as_str().unwrap_or("");
    let uid = pod["metadata"]["uid"].as_str().unwrap_or("");
    let seconds = source.get("expirationSeconds").and_then(Value::as_i64).unwrap_or(3600);
    let duration = format!("{seconds}s");
    let mut args = vec!["create", "token", sa, "-n", namespace, "--duration", &duration];
    args.extend(["--bound-object-kind", "Pod", "--bound-object-name", name, "--bound-object-uid", uid]);
    if let Some(audience) = source.get("audience").and_then(Value::as_str) {
        args.extend(["--audience", audience]);
    }
    let run = shared.cluster.try_kubectl(&args, KUBECTL_TIMEOUT);
    if !run.status.success() {
        return Err(format!("TokenRequest for {namespace}/{sa} failed:\n{run}"));
    }
    Ok(run.stdout.trim().to_owned())
}

/// What every container of a Pod shares.
#[derive(Clone, Copy)]
struct PodContext<'a> {
    shared: &'a Shared,
    netns: &'a Pod,
    pod: &'a Value,
    volumes: &'a Volumes,
    ip: &'a str,
}

/// Starts container `c` of `pod` in its network namespace: its volumes
/// mounted, as its user, with its environment; then runs its `postStart`
/// exec hook, if any, to the end (the kubelet starts the next container
/// only after that).
fn netns_proc(at: &PodContext<'_>, c: &Value) -> Result<Proc, String> {
    let cname = c["name"].as_str().unwrap_or("");
    let label = format!("{}/{}", at.pod["metadata"]["name"].as_str().unwrap_or(""), cname);
    let mut proc = at.netns.spawn_command(&label, container_command(at, c, None)?);
    if let Some(hook) = c["lifecycle"]["postStart"]["exec"]["command"].as_array() {
        let argv: Vec<String> = hook.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect();
        let mut hook = at.netns.spawn_command(&format!("{cname}-post-start"), container_command(at, c, Some(argv))?);
        let status = wait_exit(&mut hook)?;
        if !status.success() {
            let _ = proc.try_status();
            return Err(format!("container {cname}: its postStart hook exited with {status}:\n{}", hook.stderr()));
        }
    }
    Ok(proc)
}

/// The command that runs container `c` of `pod`, or `exec` (a hook's
/// command) in the container's context.
fn container_command(at: &PodContext<'_>, c: &Value, exec: Option<Vec<String>>) -> Result<Command, String> {
    let PodContext { shared, netns, pod, volumes, ip } = *at;
    let cname = c["name"].as_str().unwrap_or("");
    let image_ref = c["image"].as_str().unwrap_or("");
    let image_name = image_name(image_ref);
    let image = shared
        .images
        .get(image_name)
        .ok_or_else(|| format!("container {cname}: no local programs stand for image {image_ref:?}"))?;

    // The environment: $(VAR) may name any variable defined before it.
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()),
        ("HOSTNAME".into(), pod["metadata"]["name"].as_str().unwrap_or("").into()),
    ];
    for e in c["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().unwrap_or("").to_owned();
        let value = if let Some(v) = e["value"].as_str() {
            expand(v, &env)
        } else if let Some(path) = e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            field(pod, path, ip).ok_or_else(|| format!("container {cname}: env {name}: fieldPath {path}"))?
        } else if e["valueFrom"].is_object() {
            return Err(format!("container {cname}: env {name}: only value and fieldRef"));
        } else {
            String::new()
        };
        env.push((name, value));
    }

    let strings = |v: &Value| -> Vec<String> {
        v.as_array().into_iter().flatten().filter_map(|s| s.as_str().map(|s| expand(s, &env))).collect()
    };
    let mut argv = match &exec {
        Some(exec) => exec.iter().map(|s| expand(s, &env)).collect(),
        None if c["command"].is_array() => strings(&c["command"]),
        None => image.entrypoint.clone(),
    };
    // `args` follow the command or the entrypoint, never a hook's command.
    if exec.is_none() {
        argv.extend(strings(&c["args"]));
    }
    let Some(program) = argv.first().cloned() else {
        return Err(format!("container {cname}: nothing to run (no command and no entrypoint)"));
    };
    let local = image
        .binaries
        .get(&program)
        .cloned()
        .ok_or_else(|| format!("container {cname}: image {image_name} has no program {program:?}"))?;
    argv[0] = local.display().to_string();

    // The user: the container's securityContext, else the Pod's.
    let uid = c["securityContext"]["runAsUser"].as_i64().or(pod["spec"]["securityContext"]["runAsUser"].as_i64());
    let gid = c["securityContext"]["runAsGroup"].as_i64().or(pod["spec"]["securityContext"]["runAsGroup"].as_i64());
    if let Some(uid) = uid.filter(|u| *u != 0) {
        let gid = gid.unwrap_or(uid);
        let mut prefix =
            vec![tool("setpriv").display().to_string(), format!("--reuid={uid}"), format!("--regid={gid}")];
        prefix.extend(["--clear-groups".to_owned(), "--".to_owned()]);
        argv.splice(0..0, prefix);
    }

    // The mounts, in the private mount namespace `ip netns exec` makes.
    let mut script = String::from("set -e\n");
    let mounts = c["volumeMounts"].as_array().cloned().unwrap_or_default();
    let under_run = |p: &str| p == "/run" || p.starts_with("/run/") || p.starts_with("/var/run/");
    if mounts.iter().any(|m| m["mountPath"].as_str().is_some_and(under_run)) {
        script.push_str("mount -t tmpfs -o mode=0755 test-kubelet-run /run\n");
    }
    for m in &mounts {
        let target = m["mountPath"].as_str().unwrap_or("");
        let vname = m["name"].as_str().unwrap_or("");
        let mut source = volumes.get(vname).cloned().ok_or_else(|| format!("container {cname}: no volume {vname}"))?;
        if let Some(sub) = m["subPath"].as_str() {
            source = source.join(sub);
        }
        if !under_run(target) && !Path::new(target).is_dir() {
            return Err(format!(
                "container {cname}: mountPath {target} is neither under /run nor an existing directory (test kubelet)"
            ));
        }
        let ro = if m["readOnly"] == true { "-o ro " } else { "" };
        let _ = writeln!(
            script,
            "mkdir -p {t}\nmount --bind {ro}{s} {t}",
            s = sh_quote(&source.display().to_string()),
            t = sh_quote(target)
        );
    }
    script.push_str("exec \"$@\"\n");

    let mut cmd = netns.command("sh", &["-c".to_owned(), script, format!("container-{cname}")]);
    cmd.args(&argv);
    cmd.env_clear();
    cmd.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    Ok(cmd)
}

/// An image reference without its tag or digest: `redis:7.4` → `redis`.
pub fn image_name(reference: &str) -> &str {
    let without_digest = reference.split('@').next().unwrap_or(reference);
    match without_digest.rfind(':') {
        Some(i) if !without_digest[i..].contains('/') => &without_digest[..i],
        _ => without_digest,
    }
}

fn wait_exit(proc: &mut Proc) -> Result<std::process::ExitStatus, String> {
    let deadline = Instant::now() + CONTAINER_DEADLINE;
    loop {
        if let Some(status) = proc.try_status() {
            return Ok(status);
        }
        if Instant::now() > deadline {
            return Err(format!("{} still runs after {CONTAINER_DEADLINE:?}", proc.label()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `probe` (httpGet or tcpSocket, on 127.0.0.1) passes; no
/// probe passes at once.
fn wait_probe(netns: &Pod, proc: &mut Proc, c: &Value, probe: &Value) -> Result<(), String> {
    let port = |p: &Value| -> Option<u64> {
        p.as_u64().or_else(|| {
            let name = p.as_str()?;
            c["ports"].as_array()?.iter().find(|cp| cp["name"] == name)?["containerPort"].as_u64()
        })
    };
    let check: Box<dyn Fn() -> bool> = if probe["httpGet"].is_object() {
        let get = &probe["httpGet"];
        let port = port(&get["port"]).ok_or("an httpGet probe without a port")?;
        let scheme = if get["scheme"] == "HTTPS" { "https" } else { "http" };
        let url = format!("{scheme}://127.0.0.1:{port}{}", get["path"].as_str().unwrap_or("/"));
        let netns = netns.clone();
        Box::new(move || {
            let run = netns.exec("curl", &["-sk", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "1", &url]);
            run.stdout.parse::<u16>().is_ok_and(|code| (200..400).contains(&code))
        })
    } else if probe["tcpSocket"].is_object() {
        let port = port(&probe["tcpSocket"]["port"]).ok_or("a tcpSocket probe without a port")?;
        let netns = netns.clone();
        let filter = format!("sport = :{port}");
        Box::new(move || !netns.exec("ss", &["-Hltn", &filter]).stdout.trim().is_empty())
    } else {
        return Ok(());
    };
    let deadline = Instant::now() + CONTAINER_DEADLINE;
    loop {
        if let Some(status) = proc.try_status() {
            return Err(format!("{} exited ({status}) before its probe passed:\n{}", proc.label(), proc.stderr()));
        }
        if check() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{}: its probe did not pass within {CONTAINER_DEADLINE:?}", proc.label()));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What stands for each image the demo's manifests (`manifests/examples/`)
/// name: the binaries under test and Debian's redis-server.
pub fn demo_images() -> HashMap<String, Image> {
    let redis = tool("redis-server");
    HashMap::from([
        // The proxy's image: `weft-proxy init` and `weft-proxy run`.
        (
            "ghcr.io/weft-mesh/weft-proxy".to_owned(),
            Image::new(&["weft-proxy"]).binary("weft-proxy", crate::proxy_bin()),
        ),
        // The demo's apps: `weft example web|load`.
        ("ghcr.io/weft-mesh/weft".to_owned(), Image::new(&["weft"]).binary("weft", crate::weft_bin())),
        // The official image runs with protected mode off (its own build).
        ("redis".to_owned(), Image::new(&["redis-server", "--protected-mode", "no"]).binary("redis-server", redis)),
        ("busybox".to_owned(), Image::new(&["sh"]).binary("sleep", tool("sleep")).binary("sh", tool("sh"))),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_kubelet_does_with_a_pod() {
        let ns = vec!["demo".to_owned()];
        let pod = |node: &str, namespace: &str, deleting: bool, phase: &str| {
            let mut p =
                json!({"metadata": {"namespace": namespace}, "spec": {"nodeName": node}, "status": {"phase": phase}});
            if deleting {
                p["metadata"]["deletionTimestamp"] = json!("2026-12-07T00:00:00Z");
            }
            p
        };
        let table = [
            (pod("", "demo", false, "Pending"), false, false, Action::Bind),
            (pod("", "other", false, "Pending"), false, false, Action::Nothing),
            (pod("", "demo", true, "Pending"), false, false, Action::Nothing),
            (pod("n1", "demo", false, "Pending"), false, false, Action::Start),
            (pod("n1", "other", false, "Pending"), false, false, Action::Start),
            (pod("n1", "demo", false, "Running"), false, true, Action::Nothing),
            (pod("n1", "demo", false, "Succeeded"), false, false, Action::Nothing),
            (pod("n2", "demo", false, "Pending"), false, false, Action::Nothing),
            (pod("n1", "demo", true, "Running"), false, true, Action::Stop { finalize: true }),
            (pod("n1", "demo", false, "Running"), true, true, Action::Stop { finalize: false }),
        ];
        for (i, (p, deleted, running, want)) in table.into_iter().enumerate() {
            assert_eq!(decide("n1", &ns, &p, deleted, running), want, "row {i}: {p}");
        }
    }

    #[test]
    fn references_expand_as_kubernetes_expands_them() {
        let env = vec![("A".to_owned(), "1".to_owned()), ("B".to_owned(), "two".to_owned())];
        for (input, want) in [
            ("$(A):$(B)", "1:two"),
            ("$$(A)", "$(A)"),
            ("$(C)", "$(C)"),
            ("$A", "$A"),
            ("x$", "x$"),
            ("$(A", "$(A"),
            ("plain", "plain"),
        ] {
            assert_eq!(expand(input, &env), want, "{input}");
        }
    }

    #[test]
    fn image_names_drop_the_tag_and_digest() {
        for (input, want) in [
            ("redis:7.4", "redis"),
            ("ghcr.io/weft-mesh/weft:0.1.0", "ghcr.io/weft-mesh/weft"),
            ("localhost:5000/app", "localhost:5000/app"),
            ("app@sha256:abc", "app"),
            ("app", "app"),
        ] {
            assert_eq!(image_name(input), want, "{input}");
        }
    }

    #[test]
    fn the_hosts_file_names_services_as_cluster_dns_would() {
        let services = json!({"items": [
            {"metadata": {"name": "web", "namespace": "demo"}, "spec": {"clusterIP": "10.96.0.10"}},
            {"metadata": {"name": "db", "namespace": "other"}, "spec": {"clusterIP": "10.96.0.11"}},
            {"metadata": {"name": "headless", "namespace": "demo"}, "spec": {"clusterIP": "None"}},
        ]});
        let hosts = hosts_file("web-1", "demo", "198.18.0.12", &services);
        assert!(hosts.contains("198.18.0.12\tweb-1\n"), "{hosts}");
        assert!(hosts.contains("10.96.0.10\tweb web.demo web.demo.svc web.demo.svc.cluster.local\n"), "{hosts}");
        assert!(hosts.contains("10.96.0.11\tdb.other db.other.svc db.other.svc.cluster.local\n"), "{hosts}");
        assert!(!hosts.contains("headless"), "{hosts}");
    }
}
