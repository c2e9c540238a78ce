//! A real Kubernetes control plane on 127.0.0.1, envtest-style: etcd,
//! kube-apiserver and kube-controller-manager of the release pinned in
//! `tests/kube/kubernetes/go.mod`, built from Go modules by
//! `bash tests/kube/build.sh` into `/var/cache/weft/kube/<version>/bin/`.
//! There is no kubelet and no container runtime: Pods stay Pending.
//!
//! [`KubeCluster::shared`] starts one cluster per test process (nextest runs
//! each test in its own process, `cargo test` shares it between a binary's
//! tests); every test works in its own namespace ([`KubeCluster::namespace`]).
//! [`KubeCluster::start`] starts a private one, stopped when dropped.
//!
//! Everything it does:
//! - generates (with rcgen) a CA, the API server's serving certificate for
//!   127.0.0.1, client certificates for an admin (`O=system:masters`) and for
//!   kube-controller-manager (`CN=system:kube-controller-manager`), and the
//!   service-account signing key;
//! - starts etcd on a free 127.0.0.1 port (peer listener on port 0), the API
//!   server with RBAC, client-certificate users and service-account tokens
//!   (Service ClusterIPs from [`SERVICE_CIDR`], data only), and
//!   kube-controller-manager with the controllers listed in [`CONTROLLERS`];
//! - waits for `/readyz` (as the admin, through kubectl) and for the
//!   controller manager to create a `default` ServiceAccount.
//!
//! Only 127.0.0.1 is ever contacted. Every process runs under
//! `setpriv --pdeathsig KILL` from a thread that lives as long as it must (the
//! test process for the shared cluster), so nothing outlives the tests even
//! though a static is never dropped; a private cluster also kills its
//! processes by PID on drop. Logs, certificates and etcd's data are under
//! `/tmp/weft-tests/kube-<pid>-<n>/`; the directories of dead test processes
//! are removed by the next cluster.

use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::env::tool;
use crate::eventually::eventually;
use crate::process::{Run, read_lossy, run_logged, spawn_logged};

/// The Service ClusterIP range: inside the RFC 2544 range the tests use, away
/// from the netns tests' pods (198.18.0.0/24), `weft up`'s pods
/// (198.18.0.0/16) and its service virtual IPs (198.19.(j/254).x, so
/// 198.19.0.x for any real mesh file). ClusterIPs are data only: nothing
/// routes them unless a test puts them in a namespace it created.
pub const SERVICE_CIDR: &str = "198.19.128.0/17";

/// The kube-controller-manager controllers that run: service accounts and
/// their tokens, Deployments → ReplicaSets → Pods, EndpointSlices, the
/// `kube-root-ca.crt` ConfigMaps, namespace deletion and garbage collection.
pub const CONTROLLERS: &[&str] = &[
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "deployment-controller",
    "replicaset-controller",
    "endpointslice-controller",
    "namespace-controller",
    "garbage-collector-controller",
];

/// How long the API server may take to report ready (post-start hooks
/// bootstrap RBAC and more; slow on a loaded 2-core machine).
pub const APISERVER_READY: Duration = Duration::from_secs(120);
/// The deadline of one kubectl command.
pub const KUBECTL_TIMEOUT: Duration = Duration::from_secs(60);

/// The `go.mod` that pins the Kubernetes release (compiled in, so the tests
/// always expect the version the source names).
const KUBERNETES_GO_MOD: &str = include_str!("../kube/kubernetes/go.mod");

/// The `go.mod` that pins the Gateway API release whose CRDs the tests install.
const GATEWAY_API_GO_MOD: &str = include_str!("../kube/gateway-api/go.mod");

/// The `go.mod` that pins the cert-manager release whose CRDs the tests install.
const CERT_MANAGER_GO_MOD: &str = include_str!("../kube/cert-manager/go.mod");

/// The version of `module` that `go_mod` requires, if any.
fn required(go_mod: &'static str, module: &str) -> Option<&'static str> {
    go_mod.lines().find_map(|l| {
        let mut words = l.split_whitespace();
        let first = words.next()?;
        let (m, version) = if first == "require" { (words.next()?, words.next()?) } else { (first, words.next()?) };
        (m == module && version.starts_with('v')).then_some(version)
    })
}

/// The Kubernetes release pinned in `tests/kube/kubernetes/go.mod`, such as
/// `v1.36.3`.
pub fn kube_version() -> &'static str {
    required(KUBERNETES_GO_MOD, "k8s.io/kubernetes")
        .filter(|v| v.starts_with("v1."))
        .expect("tests/kube/kubernetes/go.mod requires k8s.io/kubernetes v1.N.M")
}

/// The Gateway API release pinned in `tests/kube/gateway-api/go.mod`.
pub fn gateway_api_version() -> &'static str {
    required(GATEWAY_API_GO_MOD, "sigs.k8s.io/gateway-api")
        .expect("tests/kube/gateway-api/go.mod requires sigs.k8s.io/gateway-api")
}

/// The directory of the Gateway API's standard-channel CRDs that
/// `tests/kube/build.sh` copies from the pinned module; panics, saying how
/// to get them, when they are missing.
#[track_caller]
pub fn gateway_api_crds() -> PathBuf {
    let dir = kube_cache().join("kube").join("gateway-api").join(gateway_api_version());
    assert!(
        dir.join(".complete").is_file(),
        "{} holds no Gateway API CRDs: run `bash tests/kube/build.sh`",
        dir.display()
    );
    dir
}

/// The cert-manager release pinned in `tests/kube/cert-manager/go.mod`.
pub fn cert_manager_version() -> &'static str {
    required(CERT_MANAGER_GO_MOD, "github.com/cert-manager/cert-manager")
        .expect("tests/kube/cert-manager/go.mod requires github.com/cert-manager/cert-manager")
}

/// The directory of cert-manager's Certificate, Issuer and ClusterIssuer
/// CRDs that `tests/kube/build.sh` copies from the pinned module; panics,
/// saying how to get them, when they are missing.
#[track_caller]
pub fn cert_manager_crds() -> PathBuf {
    let dir = kube_cache().join("kube").join("cert-manager").join(cert_manager_version());
    assert!(
        dir.join(".complete").is_file(),
        "{} holds no cert-manager CRDs: run `bash tests/kube/build.sh`",
        dir.display()
    );
    dir
}

/// The repository's `manifests/` directory.
pub fn manifests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("manifests")
}

/// `/var/cache/weft`, or `$WEFT_KUBE_CACHE` (as in `tests/kube/build.sh`).
fn kube_cache() -> PathBuf {
    std::env::var_os("WEFT_KUBE_CACHE").map_or_else(|| PathBuf::from("/var/cache/weft"), PathBuf::from)
}

/// `/var/cache/weft/kube/<version>/bin` (`$WEFT_KUBE_CACHE` replaces
/// `/var/cache/weft`, as in `tests/kube/build.sh`).
pub fn kube_bin_dir() -> PathBuf {
    kube_cache().join("kube").join(kube_version()).join("bin")
}

/// The path of one of the built binaries (`etcd`, `kube-apiserver`,
/// `kube-controller-manager`, `kubectl`, `helm`); panics, saying how to build
/// them, when it is missing.
#[track_caller]
pub fn kube_bin(name: &str) -> PathBuf {
    let path = kube_bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} does not exist: build the Kubernetes {} control plane (etcd, kube-apiserver, \
         kube-controller-manager, kubectl, helm) with `bash tests/kube/build.sh` (needs Go >= 1.26; \
         about 7 minutes cold on 2 cores, cached in /var/cache/weft afterwards)",
        path.display(),
        kube_version()
    );
    path
}

/// A process of the control plane, killed by PID when dropped.
struct KubeProc {
    label: &'static str,
    cmd: String,
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
    /// How it was started, to start it again ([`KubeCluster::restart_apiserver`]).
    bin: PathBuf,
    args: Vec<String>,
}

impl KubeProc {
    /// Starts `bin args` under `setpriv --pdeathsig KILL`, which then execs
    /// it (the PID is the binary's own): the kernel kills it when the thread
    /// that started it ends.
    fn spawn(dir: &Path, label: &'static str, bin: &Path, args: &[String]) -> KubeProc {
        let stdout = dir.join(format!("{label}.stdout"));
        let stderr = dir.join(format!("{label}.stderr"));
        let mut cmd = Command::new(tool("setpriv"));
        cmd.args(["--pdeathsig", "KILL", "--"]).arg(bin).args(args);
        let (child, described) = spawn_logged(cmd, &stdout, &stderr);
        KubeProc { label, cmd: described, child, stdout, stderr, bin: bin.to_owned(), args: args.to_vec() }
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("waiting for a child")
    }

    /// The last lines of its output, for failure messages.
    fn tail(&self) -> String {
        let mut text = String::new();
        for path in [&self.stdout, &self.stderr] {
            let log = read_lossy(path);
            let lines: Vec<_> = log.lines().collect();
            let start = lines.len().saturating_sub(30);
            let _ = writeln!(text, "--- {} (last {} lines):", path.display(), lines.len() - start);
            for line in &lines[start..] {
                let _ = writeln!(text, "{line}");
            }
        }
        format!("{} (`{}`):\n{text}", self.label, self.cmd)
    }

    /// Panics with its logs if it has exited.
    #[track_caller]
    fn assert_running(&mut self) {
        if let Some(status) = self.exited() {
            panic!("{} exited ({status}):\n{}", self.label, self.tail());
        }
    }
}

impl Drop for KubeProc {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A running control plane: etcd, kube-apiserver, kube-controller-manager.
pub struct KubeCluster {
    dir: PathBuf,
    server: String,
    kubeconfig: PathBuf,
    ca_pem: String,
    /// In the order they started; stopped in reverse.
    procs: Mutex<Vec<KubeProc>>,
    next: AtomicUsize,
    /// Set once [`KubeCluster::install_weft`] has run on this cluster.
    weft_installed: OnceLock<()>,
}

impl Drop for KubeCluster {
    /// Stops the controller manager, then the API server, then etcd.
    fn drop(&mut self) {
        let procs = self.procs.get_mut().unwrap_or_else(|e| e.into_inner());
        while let Some(proc) = procs.pop() {
            drop(proc);
        }
    }
}

impl std::fmt::Debug for KubeCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeCluster").field("server", &self.server).field("dir", &self.dir).finish()
    }
}

impl KubeCluster {
    /// The cluster shared by every test of this process, started by the first
    /// caller. If it cannot start, every caller panics with the reason.
    #[track_caller]
    pub fn shared() -> &'static KubeCluster {
        static CLUSTER: OnceLock<Result<KubeCluster, String>> = OnceLock::new();
        let started = CLUSTER.get_or_init(|| {
            // Started from a thread that never ends, so `--pdeathsig` fires
            // only when the test process exits (a test's own thread ends with
            // the test, which would kill the cluster under the next one).
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::Builder::new()
                .name("kube-cluster".to_owned())
                .spawn(move || {
                    let started = std::panic::catch_unwind(KubeCluster::start).map_err(|panic| {
                        panic
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                            .unwrap_or_else(|| "(a panic without a message)".to_owned())
                    });
                    let _ = tx.send(started);
                    loop {
                        std::thread::park();
                    }
                })
                .expect("spawning the kube-cluster thread");
            rx.recv().unwrap_or_else(|_| Err("the kube-cluster thread ended without a cluster".to_owned()))
        });
        match started {
            Ok(cluster) => cluster,
            Err(why) => panic!("the shared Kubernetes cluster did not start: {why}"),
        }
    }

    /// Starts a cluster of its own, stopped (by PID) when it is dropped.
    /// Panics, with the processes' logs, if any part is not ready in time.
    #[track_caller]
    pub fn start() -> KubeCluster {
        let started = Instant::now();
        let etcd_bin = kube_bin("etcd");
        let apiserver_bin = kube_bin("kube-apiserver");
        let kcm_bin = kube_bin("kube-controller-manager");
        kube_bin("kubectl");

        let dir = new_dir();
        let pki = Pki::write(&dir.join("pki"));
        let mut procs = Vec::new();

        // etcd
        let etcd_port = free_port();
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let etcd_args = vec![
            format!("--data-dir={}", dir.join("etcd").display()),
            format!("--listen-client-urls={etcd_url}"),
            format!("--advertise-client-urls={etcd_url}"),
            "--listen-peer-urls=http://127.0.0.1:0".to_owned(),
            "--initial-advertise-peer-urls=http://127.0.0.1:2380".to_owned(),
            "--initial-cluster=default=http://127.0.0.1:2380".to_owned(),
            // Test data: losing it in a power cut costs nothing.
            "--unsafe-no-fsync".to_owned(),
            "--log-level=warn".to_owned(),
        ];
        procs.push(KubeProc::spawn(&dir, "etcd", &etcd_bin, &etcd_args));
        eventually(Duration::from_secs(30), "etcd answers /health", || {
            procs[0].assert_running();
            let body = http_get(etcd_port, "/health")?;
            if body.contains(r#""health":"true""#) { Ok(()) } else { Err(body) }
        });

        // kube-apiserver
        let port = free_port();
        let server = format!("https://127.0.0.1:{port}");
        let p = |name: &str| pki.dir.join(name).display().to_string();
        let apiserver_args = vec![
            format!("--etcd-servers={etcd_url}"),
            "--bind-address=127.0.0.1".to_owned(),
            format!("--secure-port={port}"),
            "--advertise-address=127.0.0.1".to_owned(),
            // The endpoint reconciler cannot publish a loopback address.
            "--endpoint-reconciler-type=none".to_owned(),
            format!("--service-cluster-ip-range={SERVICE_CIDR}"),
            "--allow-privileged=true".to_owned(),
            "--authorization-mode=RBAC".to_owned(),
            format!("--tls-cert-file={}", p("apiserver.crt")),
            format!("--tls-private-key-file={}", p("apiserver.key")),
            format!("--client-ca-file={}", p("ca.crt")),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".to_owned(),
            format!("--service-account-key-file={}", p("sa.pub")),
            format!("--service-account-signing-key-file={}", p("sa.key")),
            format!("--cert-dir={}", dir.join("apiserver-certs").display()),
        ];
        procs.push(KubeProc::spawn(&dir, "kube-apiserver", &apiserver_bin, &apiserver_args));

        let kubeconfig = dir.join("admin.kubeconfig");
        write_kubeconfig(&kubeconfig, &server, &pki.dir, "admin");
        let kcm_kubeconfig = dir.join("kube-controller-manager.kubeconfig");
        write_kubeconfig(&kcm_kubeconfig, &server, &pki.dir, "kube-controller-manager");

        let cluster = KubeCluster {
            dir: dir.clone(),
            server,
            kubeconfig,
            ca_pem: pki.ca_pem.clone(),
            procs: Mutex::new(procs),
            next: AtomicUsize::new(0),
            weft_installed: OnceLock::new(),
        };
        cluster.wait_apiserver_ready("kube-apiserver");

        // kube-controller-manager
        let kcm_args = vec![
            format!("--kubeconfig={}", kcm_kubeconfig.display()),
            "--leader-elect=false".to_owned(),
            // Each controller acts as its own service account with its own
            // RBAC role, as in a kubeadm cluster.
            "--use-service-account-credentials=true".to_owned(),
            format!("--service-account-private-key-file={}", p("sa.key")),
            format!("--root-ca-file={}", p("ca.crt")),
            format!("--controllers={}", CONTROLLERS.join(",")),
            // No HTTPS endpoint: nothing here scrapes it, and parallel test
            // processes would fight over its port.
            "--secure-port=0".to_owned(),
        ];
        cluster.procs.lock().unwrap_or_else(|e| e.into_inner()).push(KubeProc::spawn(
            &dir,
            "kube-controller-manager",
            &kcm_bin,
            &kcm_args,
        ));
        // A ServiceAccount in a new namespace proves the controller manager
        // is running, authenticated and authorized.
        cluster.namespace("ready");
        eprintln!(
            "weft-tests: Kubernetes {} on {} ready in {:.1?} (kubeconfig {})",
            kube_version(),
            cluster.server,
            started.elapsed(),
            cluster.kubeconfig.display()
        );
        cluster
    }

    /// Kills kube-apiserver (SIGKILL, as a crash would), waits `down`, starts
    /// it again on the same port with the same flags (etcd keeps the data)
    /// and waits until it is ready. Call it from the thread that will end
    /// last (the test's): `--pdeathsig` ties the new process to it.
    #[track_caller]
    pub fn restart_apiserver(&self, down: Duration) {
        let (bin, args) = {
            let mut procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
            let api = procs.iter_mut().find(|p| p.label == "kube-apiserver").expect("a kube-apiserver");
            let _ = api.child.kill();
            let _ = api.child.wait();
            // The first run's logs stay, as `*.before-restart`.
            for path in [&api.stdout, &api.stderr] {
                let _ = std::fs::rename(
                    path,
                    path.with_extension(format!(
                        "{}.before-restart",
                        path.extension().and_then(|e| e.to_str()).unwrap_or("log")
                    )),
                );
            }
            (api.bin.clone(), api.args.clone())
        };
        std::thread::sleep(down);
        let restarted = KubeProc::spawn(&self.dir, "kube-apiserver", &bin, &args);
        {
            let mut procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
            let slot = procs.iter_mut().find(|p| p.label == "kube-apiserver").expect("a kube-apiserver");
            *slot = restarted;
        }
        self.wait_apiserver_ready("the restarted kube-apiserver");
    }

    /// Waits until kube-apiserver reports `/readyz` ok to the admin.
    #[track_caller]
    fn wait_apiserver_ready(&self, who: &str) {
        let what = format!("{who} reports /readyz ok to the admin (logs in {})", self.dir.display());
        eventually(APISERVER_READY, &what, || {
            self.assert_running();
            let run = self.try_kubectl(&["get", "--raw=/readyz"], Duration::from_secs(20));
            if run.status.success() && run.stdout.trim() == "ok" {
                Ok(())
            } else {
                Err(format!("{}\n{}", run.stdout.trim(), run.stderr.trim()))
            }
        });
    }

    /// `https://127.0.0.1:PORT`.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The admin's kubeconfig (a client certificate in `system:masters`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The cluster CA (it signed the API server's certificate and the users').
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The directory of logs, certificates and etcd's data.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Panics with the logs of any control-plane process that has exited.
    #[track_caller]
    pub fn assert_running(&self) {
        for proc in self.procs.lock().unwrap_or_else(|e| e.into_inner()).iter_mut() {
            proc.assert_running();
        }
    }

    /// The last lines of every control-plane process's logs.
    pub fn logs(&self) -> String {
        self.procs.lock().unwrap_or_else(|e| e.into_inner()).iter().map(KubeProc::tail).collect::<Vec<_>>().join("\n")
    }

    /// Runs kubectl as the admin and returns what happened, whatever the exit
    /// code; panics only if it runs longer than `within`.
    #[track_caller]
    pub fn try_kubectl(&self, args: &[&str], within: Duration) -> Run {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let out = self.dir.join(format!("kubectl-{n}.stdout"));
        let err = self.dir.join(format!("kubectl-{n}.stderr"));
        let mut cmd = Command::new(kube_bin("kubectl"));
        cmd.arg(format!("--kubeconfig={}", self.kubeconfig.display())).args(args);
        // No cache under $HOME: every test process starts from nothing.
        cmd.env("KUBECACHEDIR", self.dir.join("kubectl-cache"));
        run_logged(cmd, (out, err), within)
    }

    /// Runs kubectl as the admin; panics (with its output) unless it exits 0.
    #[track_caller]
    pub fn kubectl(&self, args: &[&str]) -> Run {
        let run = self.try_kubectl(args, KUBECTL_TIMEOUT);
        assert!(run.status.success(), "kubectl failed (control-plane logs in {}):\n{run}", self.dir.display());
        run
    }

    /// `kubectl apply -f` of `manifest` (YAML or JSON) in `namespace`.
    #[track_caller]
    pub fn apply(&self, namespace: &str, manifest: &str) -> Run {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(format!("manifest-{n}.yaml"));
        std::fs::write(&path, manifest).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        let path = path.display().to_string();
        self.kubectl(&["apply", "-n", namespace, "-f", &path])
    }

    /// `kubectl get KIND [NAME] -n NAMESPACE -o json`, parsed.
    #[track_caller]
    pub fn get_json(&self, namespace: &str, what: &[&str]) -> serde_json::Value {
        let mut args = vec!["get"];
        args.extend_from_slice(what);
        args.extend_from_slice(&["-n", namespace, "-o", "json"]);
        let run = self.kubectl(&args);
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("kubectl printed invalid JSON ({e}):\n{run}"))
    }

    /// The API server's address (`127.0.0.1:PORT`).
    pub fn server_addr(&self) -> std::net::SocketAddr {
        let hostport = self.server.trim_start_matches("https://");
        hostport.parse().unwrap_or_else(|e| panic!("API server address {hostport:?}: {e}"))
    }

    /// Installs what Weft's control plane reads (once per cluster): the
    /// Gateway API CRDs, Weft's own CRDs (`manifests/crds/`) and its RBAC
    /// (`manifests/control-plane-rbac.yaml`), and waits until the CRDs are
    /// served.
    #[track_caller]
    pub fn install_weft(&self) {
        self.weft_installed.get_or_init(|| {
            self.kubectl(&["apply", "--server-side", "-f", &gateway_api_crds().display().to_string()]);
            let manifests = manifests_dir();
            self.kubectl(&["apply", "-f", &manifests.join("crds").display().to_string()]);
            self.kubectl(&["apply", "-f", &manifests.join("control-plane-rbac.yaml").display().to_string()]);
            self.kubectl(&[
                "wait",
                "--for=condition=established",
                "--timeout=60s",
                "crd/httproutes.gateway.networking.k8s.io",
                "crd/trafficpolicies.policy.weft.dev",
                "crd/accesspolicies.policy.weft.dev",
            ]);
        });
    }

    /// A service-account token (`kubectl create token`) for `audience` (the
    /// API server's own when `None`), bound to `pod` when given.
    #[track_caller]
    pub fn token(&self, namespace: &str, sa: &str, audience: Option<&str>, pod: Option<&str>) -> String {
        let mut args = vec!["create", "token", sa, "-n", namespace, "--duration", "2h"];
        if let Some(audience) = audience {
            args.extend(["--audience", audience]);
        }
        if let Some(pod) = pod {
            args.extend(["--bound-object-kind", "Pod", "--bound-object-name", pod]);
        }
        self.kubectl(&args).stdout.trim().to_owned()
    }

    /// Writes a kubeconfig that reaches the API server at `server` with a
    /// bearer `token` (named `user`), and returns its path.
    #[track_caller]
    pub fn token_kubeconfig(&self, server: &str, user: &str, token: &str, path: &Path) -> PathBuf {
        write_kubeconfig_for(path, server, &self.dir.join("pki").join("ca.crt"), user, &format!("token: {token}"));
        path.to_owned()
    }

    /// Writes a kubeconfig that reaches the API server at `server` as the
    /// control plane's own service account (`weft-system/weft-control`,
    /// bound to the shipped ClusterRole only), and returns its path.
    #[track_caller]
    pub fn control_plane_kubeconfig(&self, server: &str, path: &Path) -> PathBuf {
        let token = self.token("weft-system", "weft-control", None, None);
        self.token_kubeconfig(server, "weft-control", &token, path)
    }

    /// Creates a namespace of its own, `<prefix>-<pid>-<n>`, and waits until
    /// kube-controller-manager has given it a `default` ServiceAccount.
    #[track_caller]
    pub fn namespace(&self, prefix: &str) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let name = format!("{prefix}-{}-{n}", std::process::id());
        self.kubectl(&["create", "namespace", &name]);
        eventually(
            Duration::from_secs(60),
            &format!(
                "kube-controller-manager creates the default ServiceAccount in {name} (logs in {})",
                self.dir.display()
            ),
            || {
                self.assert_running();
                let run =
                    self.try_kubectl(&["get", "serviceaccount", "default", "-n", &name, "-o", "name"], KUBECTL_TIMEOUT);
                if run.status.success() { Ok(()) } else { Err(run.stderr) }
            },
        );
        name
    }
}

/// `/tmp/weft-tests/kube-<pid>-<n>`, after removing those of dead processes.
fn new_dir() -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let root = std::env::temp_dir().join("weft-tests");
    if let Ok(entries) = std::fs::read_dir(&root) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) =
                name.strip_prefix("kube-").and_then(|r| r.split('-').next()).and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let dir = root.join(format!("kube-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

/// A free port on 127.0.0.1 (free when asked; the process that gets it binds
/// it moments later).
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).and_then(|l| l.local_addr()).expect("binding 127.0.0.1:0").port()
}

/// A plain HTTP/1.0 GET to 127.0.0.1:`port`; the body, or why not.
fn http_get(port: u16, path: &str) -> Result<String, String> {
    let mut stream = TcpStream::connect_timeout(&(Ipv4Addr::LOCALHOST, port).into(), Duration::from_secs(2))
        .map_err(|e| format!("connecting to 127.0.0.1:{port}: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream.read_to_string(&mut response).map_err(|e| e.to_string())?;
    Ok(response)
}

/// The certificates and keys, as files in `dir`.
struct Pki {
    dir: PathBuf,
    ca_pem: String,
}

impl Pki {
    fn write(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let write = |name: &str, pem: &str| {
            let path = dir.join(name);
            std::fs::write(&path, pem).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        };
        let key = || KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("generating a P-256 key");

        let ca_key = key();
        let mut ca = CertificateParams::default();
        ca.distinguished_name = dn(&[(DnType::CommonName, "weft-tests-kubernetes-ca")]);
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let ca_cert = ca.self_signed(&ca_key).expect("self-signing the CA");
        let ca_pem = ca_cert.pem();
        write("ca.crt", &ca_pem);
        let issuer = Issuer::new(ca, ca_key);

        let leaf = |name: &str, subject: &[(DnType, &str)], sans: Vec<SanType>, usage: ExtendedKeyUsagePurpose| {
            let leaf_key = key();
            let mut params = CertificateParams::default();
            params.distinguished_name = dn(subject);
            params.subject_alt_names = sans;
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&leaf_key, &issuer).expect("signing a certificate");
            write(&format!("{name}.crt"), &cert.pem());
            write(&format!("{name}.key"), &leaf_key.serialize_pem());
        };
        leaf(
            "apiserver",
            &[(DnType::CommonName, "kube-apiserver")],
            vec![
                SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                SanType::DnsName("kubernetes.default.svc".try_into().expect("a DNS name")),
            ],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        leaf(
            "admin",
            &[(DnType::CommonName, "weft-admin"), (DnType::OrganizationName, "system:masters")],
            Vec::new(),
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        leaf(
            "kube-controller-manager",
            &[(DnType::CommonName, "system:kube-controller-manager")],
            Vec::new(),
            ExtendedKeyUsagePurpose::ClientAuth,
        );

        let sa_key = key();
        write("sa.key", &sa_key.serialize_pem());
        write("sa.pub", &sa_key.public_key_pem());
        Pki { dir: dir.to_path_buf(), ca_pem }
    }
}

fn dn(parts: &[(DnType, &str)]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    for (ty, value) in parts {
        dn.push(ty.clone(), *value);
    }
    dn
}

/// A kubeconfig for `user` (its `<user>.crt`/`.key` in `pki`).
fn write_kubeconfig(path: &Path, server: &str, pki: &Path, user: &str) {
    let credentials = format!(
        "client-certificate: {}\n    client-key: {}",
        pki.join(format!("{user}.crt")).display(),
        pki.join(format!("{user}.key")).display()
    );
    write_kubeconfig_for(path, server, &pki.join("ca.crt"), user, &credentials);
}

/// A kubeconfig of one cluster (`server`, trusting `ca`) and one user whose
/// `user:` fields are `credentials` (YAML, indented by 4 after the first).
fn write_kubeconfig_for(path: &Path, server: &str, ca: &Path, user: &str, credentials: &str) {
    let text = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: weft-tests
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: {user}
  user:
    {credentials}
contexts:
- name: {user}
  context:
    cluster: weft-tests
    user: {user}
current-context: {user}
",
        ca = ca.display(),
    );
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}
