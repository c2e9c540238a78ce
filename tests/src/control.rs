//! The control plane in a pod of its own, and the fixtures that register
//! replicas with it.
//!
//! ```text
//! cp pod: weft-control (gRPC on its pod address :8090, admin 127.0.0.1:9990)
//! replica pods: app :8080 + proxy registering `--workload-name …`
//! client pod: proxy with `--control-plane` resolving the service's VIP
//! ```

use std::path::PathBuf;
use std::time::Duration;

use crate::env::control_bin;
use crate::eventually::eventually;
use crate::mesh::Pod;
use crate::process::Proc;
use crate::proxy::Proxy;

/// Service `web` alone (VIP 198.18.0.200:80 → 8080 over `app=web`), the
/// services file of the tests that need no other.
pub const WEB_SERVICE: &str = "services:
  - name: web
    namespace: default
    virtualIP: 198.18.0.200
    selector: {app: web}
    ports: [{port: 80, targetPort: 8080}]
";

/// Services `web` (VIP 198.18.0.200:80 → 8080) and `store`
/// (198.18.0.201:6379), both selecting `app=web`: the pod of
/// [`Mesh::web_and_store_pod`].
pub const WEB_AND_STORE: &str = "services:
  - name: web
    namespace: default
    virtualIP: 198.18.0.200
    selector: {app: web}
    ports: [{port: 80, targetPort: 8080}]
  - name: store
    namespace: default
    virtualIP: 198.18.0.201
    selector: {app: web}
    ports: [{port: 6379, targetPort: 6379}]
";

/// The control plane's gRPC port.
pub const GRPC_PORT: u16 = 8090;
/// Its admin listener, on its pod's loopback.
pub const CONTROL_ADMIN: &str = "127.0.0.1:9990";

/// A running `weft-control`.
pub struct ControlPlane {
    pub proc: Proc,
    pub pod: Pod,
    /// `http://IP:8090`, for `--control-plane`.
    pub url: String,
    pub services: PathBuf,
    pub policy_dir: PathBuf,
    /// With the mesh CA on: its state directory (holding `ca.crt`) and the
    /// bootstrap tokens file.
    pub ca: Option<MeshCa>,
    /// `--source kubernetes`: the forwarder that brings the API server to
    /// the pod's 127.0.0.1:6443.
    pub forward: Option<Proc>,
}

/// The control plane's CA, as a test sees it.
#[derive(Clone, Debug)]
pub struct MeshCa {
    pub state_dir: PathBuf,
    pub tokens: PathBuf,
    /// The control plane's `--trust-anchors` when the test gave the issuer;
    /// `None`: the root generated in the state directory.
    pub anchors_file: Option<PathBuf>,
    issued: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl MeshCa {
    /// The trust anchors to pin (`--trust-anchors`): a readable copy, as of
    /// now, of the control plane's anchors file or of the CA's `ca.crt` (its
    /// state directory is 0700, and proxies run as 2102). A copy, so that a
    /// proxy's pinned file stays what it was when it started.
    pub fn anchors(&self) -> PathBuf {
        let source = self.anchors_file.clone().unwrap_or_else(|| self.state_dir.join("ca.crt"));
        let copy = self.state_dir.with_file_name("anchors.pem");
        std::fs::copy(&source, &copy).unwrap_or_else(|e| panic!("copying {}: {e}", source.display()));
        copy
    }

    /// Creates a bootstrap token for `namespace/service_account` (workload
    /// `workload`), adds its hash to the tokens file and returns the path of
    /// a file holding the token itself, for `--identity-token-file`.
    pub fn token(&self, namespace: &str, service_account: &str, workload: &str) -> PathBuf {
        use sha2::{Digest as _, Sha256};
        let token: String = random_bytes(32).iter().map(|b| format!("{b:02x}")).collect();
        let hash = format!("{:x}", Sha256::digest(token.as_bytes()));
        let expires = humantime::format_rfc3339_seconds(std::time::SystemTime::now() + Duration::from_secs(600));
        let mut issued = self.issued.lock().unwrap_or_else(|e| e.into_inner());
        issued.push(format!(
            "  - {{sha256: {hash}, namespace: {namespace}, serviceAccount: {service_account}, workload: {workload}, expires: '{expires}'}}\n"
        ));
        let body = format!("tokens:\n{}", issued.concat());
        // Write then rename, so the control plane never reads half a file.
        let tmp = self.tokens.with_extension("tmp");
        std::fs::write(&tmp, body).expect("writing the tokens file");
        std::fs::rename(&tmp, &self.tokens).expect("replacing the tokens file");
        // The token is a secret of the proxy's user alone.
        let path = self.state_dir.with_file_name(format!("token-{workload}"));
        std::fs::write(&path, token).expect("writing the token");
        std::os::unix::fs::chown(&path, Some(crate::proxy::PROXY_UID), Some(crate::proxy::PROXY_UID))
            .expect("chown the token file");
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod the token file");
        path
    }
}

/// Random bytes from the kernel, for unguessable tokens.
fn random_bytes(n: usize) -> Vec<u8> {
    use std::io::Read as _;
    let mut b = vec![0u8; n];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)).expect("reading /dev/urandom");
    b
}

impl Pod {
    /// Writes `services_yaml` and an empty policy directory into the test
    /// directory, starts the control plane in this pod and waits until it is
    /// ready.
    pub fn run_control(&self, services_yaml: &str, extra: &[&str]) -> ControlPlane {
        let (services, policy_dir) = self.control_files(services_yaml);
        self.start_control(services, policy_dir, None, extra)
    }

    /// Like [`Pod::run_control`], with the mesh CA on: a fresh state
    /// directory (the CA is generated there) and a tokens file. gRPC is then
    /// served over TLS.
    pub fn run_control_with_ca(&self, services_yaml: &str, extra: &[&str]) -> ControlPlane {
        let (services, policy_dir) = self.control_files(services_yaml);
        let ca = self.mesh_ca(None);
        self.start_control(services, policy_dir, Some(ca), extra)
    }

    /// Like [`Pod::run_control_with_ca`], with the issuer and the trust
    /// anchors the test gives (`--issuer-cert`, `--issuer-key`,
    /// `--trust-anchors`; the control plane reloads them when they change).
    /// `anchors` must be readable by the proxies' user.
    pub fn run_control_with_issuer(
        &self,
        services_yaml: &str,
        issuer: (&std::path::Path, &std::path::Path),
        anchors: &std::path::Path,
        extra: &[&str],
    ) -> ControlPlane {
        let (services, policy_dir) = self.control_files(services_yaml);
        let ca = self.mesh_ca(Some(anchors.to_owned()));
        let mut args: Vec<&str> = vec![
            "--issuer-cert",
            issuer.0.to_str().expect("UTF-8 path"),
            "--issuer-key",
            issuer.1.to_str().expect("UTF-8 path"),
            "--trust-anchors",
            anchors.to_str().expect("UTF-8 path"),
        ];
        args.extend_from_slice(extra);
        self.start_control(services, policy_dir, Some(ca), &args)
    }

    /// The services file (written) and an empty policy directory.
    fn control_files(&self, services_yaml: &str) -> (PathBuf, PathBuf) {
        let services = self.dir().join(format!("services-{}.yaml", self.name()));
        std::fs::write(&services, services_yaml).expect("writing the services file");
        let policy_dir = self.dir().join(format!("policy-{}", self.name()));
        std::fs::create_dir_all(&policy_dir).expect("creating the policy directory");
        (services, policy_dir)
    }

    /// A CA state directory to be, and an empty tokens file.
    fn mesh_ca(&self, anchors_file: Option<PathBuf>) -> MeshCa {
        let state_dir = self.dir().join(format!("ca-{}", self.name()));
        let tokens = self.dir().join(format!("tokens-{}.yaml", self.name()));
        std::fs::write(&tokens, "tokens: []\n").expect("writing the tokens file");
        MeshCa { state_dir, tokens, anchors_file, issued: Default::default() }
    }

    /// Starts (or restarts) the control plane with existing files.
    pub fn start_control(
        &self,
        services: PathBuf,
        policy_dir: PathBuf,
        ca: Option<MeshCa>,
        extra: &[&str],
    ) -> ControlPlane {
        let mut args = self.listen_args();
        args.extend([
            "--services".into(),
            services.to_string_lossy().into_owned(),
            "--policy".into(),
            policy_dir.to_string_lossy().into_owned(),
        ]);
        if let Some(ca) = &ca {
            args.extend([
                "--state-dir".into(),
                ca.state_dir.to_string_lossy().into_owned(),
                "--tokens".into(),
                ca.tokens.to_string_lossy().into_owned(),
            ]);
        }
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        let (proc, url) = self.spawn_control(&args, ca.is_some());
        ControlPlane { proc, pod: self.clone(), url, services, policy_dir, ca, forward: None }
    }

    /// `--grpc-addr POD_IP:8090 --admin-addr 127.0.0.1:9990`.
    fn listen_args(&self) -> Vec<String> {
        vec!["--grpc-addr".into(), format!("{}:{GRPC_PORT}", self.ip()), "--admin-addr".into(), CONTROL_ADMIN.into()]
    }

    /// Starts `weft-control ARGS` and waits until its `/ready` answers 200;
    /// returns it and its gRPC URL.
    fn spawn_control(&self, args: &[String], tls: bool) -> (Proc, String) {
        let mut proc = self.spawn("weft-control", control_bin(), args);
        let scheme = if tls { "https" } else { "http" };
        let url = format!("{scheme}://{}:{GRPC_PORT}", self.ip());
        eventually(Duration::from_secs(30), "the control plane is ready", || {
            if let Some(status) = proc.try_status() {
                panic!("the control plane exited ({status}):\n{}", proc.stderr());
            }
            let run = self.exec(
                "curl",
                &[
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "--max-time",
                    "1",
                    &format!("http://{CONTROL_ADMIN}/ready"),
                ],
            );
            if run.stdout == "200" { Ok(()) } else { Err(format!("GET /ready: {run}")) }
        });
        (proc, url)
    }

    /// `weft-control --source kubernetes` in this pod, with the mesh CA on,
    /// reading `cluster` as the control plane's own service account (the
    /// shipped ClusterRole, nothing more). The API server is brought to this
    /// pod's 127.0.0.1:6443 by a forwarder; nothing is routed between the
    /// pod and the host.
    pub fn run_kube_control(&self, cluster: &crate::kube::KubeCluster, extra: &[&str]) -> ControlPlane {
        cluster.install_weft();
        let mut forward = self.spawn_host(
            &format!("forward-{}", self.name()),
            crate::env::testkit_bin(),
            &[
                "forward".to_owned(),
                "--netns".to_owned(),
                self.ns().to_owned(),
                "--listen".to_owned(),
                "127.0.0.1:6443".to_owned(),
                "--to".to_owned(),
                cluster.server_addr().to_string(),
            ],
        );
        forward.wait_stdout("listening", Duration::from_secs(10));
        let kubeconfig = cluster.control_plane_kubeconfig(
            "https://127.0.0.1:6443",
            &self.dir().join(format!("kubeconfig-{}", self.name())),
        );
        let (services, policy_dir) = self.control_files("services: []\n");
        let ca = self.mesh_ca(None);
        let mut args = self.listen_args();
        args.extend([
            "--source".into(),
            "kubernetes".into(),
            "--kubeconfig".into(),
            kubeconfig.display().to_string(),
            "--state-dir".into(),
            ca.state_dir.display().to_string(),
        ]);
        // Each of these control planes generates a root of its own, and
        // several may share one cluster: left on, they would take turns
        // re-issuing the one injector Secret. `kube_webhook_cert.rs` tests
        // that task with two replicas of one issuer.
        if !extra.iter().any(|a| a.starts_with("--webhook-cert")) {
            args.push("--webhook-cert=external".into());
        }
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        let (proc, url) = self.spawn_control(&args, true);
        ControlPlane { proc, pod: self.clone(), url, services, policy_dir, ca: Some(ca), forward: Some(forward) }
    }

    /// Runs a proxy that registers this pod's app (`name`, `labels`, on
    /// `port`) with the control plane, and waits until it is ready.
    pub fn run_registered_proxy(
        &self,
        cp: &ControlPlane,
        name: &str,
        labels: &str,
        port: u16,
        extra: &[&str],
    ) -> Proxy {
        let ip = self.ip().to_string();
        let port = port.to_string();
        let mut args = vec![
            "--control-plane",
            &cp.url,
            "--workload-name",
            name,
            "--workload-labels",
            labels,
            "--workload-address",
            &ip,
            "--workload-ports",
            &port,
        ];
        args.extend_from_slice(extra);
        self.run_proxy(&args)
    }

    /// A proxy with a mesh identity `spiffe://cluster.local/ns/default/sa/SA`
    /// from the control plane's CA (a fresh bootstrap token), registering
    /// this pod's app when `register` gives its (name, labels, ports).
    pub fn run_meshed_proxy(
        &self,
        cp: &ControlPlane,
        sa: &str,
        register: Option<(&str, &str, &str)>,
        extra: &[&str],
    ) -> Proxy {
        let ca = cp.ca.as_ref().expect("the control plane runs without a CA; use run_control_with_ca");
        let workload = register.map_or_else(|| format!("{sa}-client"), |(name, _, _)| name.to_owned());
        let token = ca.token("default", sa, &workload).to_string_lossy().into_owned();
        let anchors = ca.anchors().to_string_lossy().into_owned();
        let ip = self.ip().to_string();
        let mut args: Vec<&str> = vec![
            "--control-plane",
            &cp.url,
            "--identity-token-file",
            &token,
            "--trust-anchors",
            &anchors,
            "--service-account",
            sa,
        ];
        if let Some((name, labels, ports)) = register {
            args.extend([
                "--workload-name",
                name,
                "--workload-labels",
                labels,
                "--workload-address",
                &ip,
                "--workload-ports",
                ports,
            ]);
        }
        args.extend_from_slice(extra);
        self.run_proxy(&args)
    }
}

impl crate::mesh::Mesh {
    /// Pod `b`: the testkit app on 8080 and Redis on 6379 (loopback only),
    /// registered as `b-0` (`app=web`) by a proxy with identity sa/b. Returns
    /// the pod, its workloads and the proxy.
    pub fn web_and_store_pod(&self, cp: &ControlPlane) -> (Pod, Vec<Proc>, Proxy) {
        let b = self.pod("b");
        let app = b.http_server(8080);
        let redis = b.spawn(
            "redis",
            "redis-server",
            &["--port", "6379", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        );
        b.wait_listening(6379);
        let proxy = b.run_meshed_proxy(cp, "b", Some(("b-0", "app=web", "8080,6379")), &[]);
        (b, vec![app, redis], proxy)
    }
}

impl ControlPlane {
    /// The control plane's own metrics.
    pub fn metrics(&self) -> crate::metrics::Metrics {
        let run = self.pod.exec("curl", &["-s", "--max-time", "5", &format!("http://{CONTROL_ADMIN}/metrics")]);
        crate::metrics::Metrics::parse(&run.stdout)
    }
}

impl Proxy {
    /// The endpoint addresses this proxy currently balances over for
    /// `target` (as its admin `/config` shows them), sorted.
    pub fn endpoints(&self, target: &str) -> Vec<String> {
        let config = self.config_json();
        let mut eps: Vec<String> = config["discovery"]["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["target"] == target)
            .flat_map(|t| t["endpoints"].as_array().cloned().unwrap_or_default())
            .filter_map(|e| e["address"].as_str().map(str::to_owned))
            .collect();
        eps.sort();
        eps
    }

    /// The outbound policy version this proxy runs for `target`, if any.
    pub fn policy_version(&self, target: &str) -> Option<u64> {
        let config = self.config_json();
        config["discovery"]["targets"]
            .as_array()?
            .iter()
            .find(|t| t["target"] == target)
            .and_then(|t| t["policy_version"].as_u64())
    }

    /// The resources (`Kind/namespace/name`) of the outbound policy this
    /// proxy runs for `target`.
    pub fn policy_sources(&self, target: &str) -> Vec<String> {
        let config = self.config_json();
        config["discovery"]["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["target"] == target)
            .flat_map(|t| t["policy_sources"].as_array().cloned().unwrap_or_default())
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect()
    }

    /// The admin `/config` document.
    pub fn config_json(&self) -> serde_json::Value {
        let run = self.admin("GET", "/config");
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("/config is not JSON ({e}): {run}"))
    }
}
