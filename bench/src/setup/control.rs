//! `weft-control` in a pod of its own: the mesh CA and discovery of the
//! `weft-mtls` setup (and, without a CA, the control plane the
//! control-plane section measures).
//!
//! Mirrors what the end-to-end tests do (`weft_tests::Pod::run_control_with_ca`
//! and `MeshCa::token`), with errors instead of panics and the process's PID
//! for `/proc`:
//!
//! ```text
//!  pod mc: weft-control --grpc-addr POD_IP:8090 (TLS with --state-dir) --admin-addr 127.0.0.1:9990
//!          files in the bench's private directory: services, policy/, ca-state/ (0700), tokens.yaml
//! ```

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use weft_tests::{PROXY_UID, Pod, Proc};

/// The control plane's gRPC port (on its pod's address).
pub const GRPC_PORT: u16 = 8090;
/// Its admin listener, on its pod's loopback.
pub const ADMIN: &str = "127.0.0.1:9990";
/// How long it may take to report ready (generating a CA included).
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a bootstrap token stays valid: enough for any start-up.
const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// A running `weft-control`; killed when dropped.
pub struct ControlPlane {
    pub proc: Proc,
    pub pod: Pod,
    /// `https://IP:8090` with a CA, `http://IP:8090` without.
    pub url: String,
    /// The policy directory it watches.
    pub policy_dir: PathBuf,
    ca: Option<Ca>,
}

struct Ca {
    state_dir: PathBuf,
    tokens: PathBuf,
    /// The tokens file's entries so far (one per proxy, single use).
    issued: Vec<String>,
    /// A copy of `ca.crt` readable by the proxies' user.
    anchors: PathBuf,
}

/// What to start.
pub struct ControlSpec<'a> {
    /// The `services:` YAML.
    pub services: &'a str,
    /// Generate a CA and serve gRPC over TLS (the mesh of `weft-mtls`).
    pub with_ca: bool,
    /// Further flags, e.g. `--reload-interval 10ms`.
    pub extra: &'a [&'a str],
}

/// Starts `bin` in `pod` with its files under `dir` (created) and waits
/// until `/ready` answers 200.
pub fn start(pod: &Pod, bin: &Path, dir: &Path, spec: &ControlSpec<'_>) -> anyhow::Result<ControlPlane> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let services = dir.join("services.yaml");
    std::fs::write(&services, spec.services).with_context(|| format!("writing {}", services.display()))?;
    let policy_dir = dir.join("policy");
    std::fs::create_dir_all(&policy_dir).with_context(|| format!("creating {}", policy_dir.display()))?;
    let grpc = format!("{}:{GRPC_PORT}", pod.ip());
    let path = |p: &Path| p.to_string_lossy().into_owned();
    let mut args: Vec<String> = vec![
        "--grpc-addr".into(),
        grpc,
        "--admin-addr".into(),
        ADMIN.into(),
        "--services".into(),
        path(&services),
        "--policy".into(),
        path(&policy_dir),
    ];
    let ca = if spec.with_ca {
        let state_dir = dir.join("ca-state");
        let tokens = dir.join("tokens.yaml");
        std::fs::write(&tokens, "tokens: []\n").with_context(|| format!("writing {}", tokens.display()))?;
        args.extend(["--state-dir".into(), path(&state_dir), "--tokens".into(), path(&tokens)]);
        Some(Ca { state_dir, tokens, issued: Vec::new(), anchors: dir.join("anchors.pem") })
    } else {
        None
    };
    args.extend(spec.extra.iter().map(|a| (*a).to_owned()));
    let mut proc = pod.spawn("weft-control", bin, &args);
    let url = format!("http://{ADMIN}/ready");
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(status) = proc.try_status() {
            anyhow::bail!(
                "weft-control in pod {} exited ({status}) before it was ready:\n{}",
                pod.name(),
                proc.stderr()
            );
        }
        let run = pod.exec("curl", &["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "1", &url]);
        if run.stdout == "200" {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "weft-control in pod {} is not ready after {READY_TIMEOUT:?} (GET /ready: {run}); its log:\n{}",
            pod.name(),
            proc.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut cp = ControlPlane { proc, pod: pod.clone(), url: String::new(), policy_dir, ca };
    let scheme = if cp.ca.is_some() { "https" } else { "http" };
    cp.url = format!("{scheme}://{}:{GRPC_PORT}", pod.ip());
    if let Some(ca) = &cp.ca {
        // The state directory is 0700 and the proxies run as 2102: they pin
        // a copy.
        std::fs::copy(ca.state_dir.join("ca.crt"), &ca.anchors)
            .with_context(|| format!("copying ca.crt out of {}", ca.state_dir.display()))?;
    }
    Ok(cp)
}

impl ControlPlane {
    /// The trust anchors for `--trust-anchors` (with a CA).
    pub fn anchors(&self) -> Option<&Path> {
        self.ca.as_ref().map(|ca| ca.anchors.as_path())
    }

    /// A fresh single-use bootstrap token for `namespace/service_account`
    /// (workload `workload`): its hash is added to the tokens file (written
    /// atomically), the token itself goes to a file of the proxies' user
    /// alone (0600), whose path is returned for `--identity-token-file`.
    pub fn token(&mut self, namespace: &str, service_account: &str, workload: &str) -> anyhow::Result<PathBuf> {
        let ca = self.ca.as_mut().context("this control plane runs without a CA")?;
        let token: String = random_bytes(32)?.iter().map(|b| format!("{b:02x}")).collect();
        let hash = weft_tests::sha256_hex(token.as_bytes());
        let expires = humantime::format_rfc3339_seconds(SystemTime::now() + TOKEN_LIFETIME);
        ca.issued.push(format!(
            "  - {{sha256: {hash}, namespace: {namespace}, serviceAccount: {service_account}, workload: {workload}, \
             expires: '{expires}'}}\n"
        ));
        let tmp = ca.tokens.with_extension("tmp");
        std::fs::write(&tmp, format!("tokens:\n{}", ca.issued.concat()))
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &ca.tokens).with_context(|| format!("replacing {}", ca.tokens.display()))?;
        let path = ca.tokens.with_file_name(format!("token-{workload}"));
        // Created 0600 before the secret is written, then handed over.
        let mut file = std::fs::OpenOptions::new();
        std::os::unix::fs::OpenOptionsExt::mode(&mut file, 0o600);
        let mut f = file.write(true).create(true).truncate(true).open(&path)?;
        std::io::Write::write_all(&mut f, token.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
        std::os::unix::fs::chown(&path, Some(PROXY_UID), Some(PROXY_UID))
            .with_context(|| format!("chown {}", path.display()))?;
        Ok(path)
    }

    /// The control plane's `/metrics`, as text.
    pub fn metrics_text(&self) -> anyhow::Result<String> {
        let run = self.pod.exec("curl", &["-sS", "--fail", "--max-time", "5", &format!("http://{ADMIN}/metrics")]);
        anyhow::ensure!(run.status.success(), "GET /metrics of weft-control: {run}");
        Ok(run.stdout)
    }
}

/// Random bytes from the kernel, for unguessable tokens.
fn random_bytes(n: usize) -> anyhow::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut b = vec![0u8; n];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)).context("reading /dev/urandom")?;
    Ok(b)
}
