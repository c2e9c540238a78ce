//! `weft-injector` as the tests' real API server calls it: on
//! `https://127.0.0.1:PORT` with a fresh certificate for that address
//! (signed by a CA of its own, as an install has it), and a
//! MutatingWebhookConfiguration pointing at it by URL (as envtest does: no
//! Service can be reached here).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::env::injector_bin;
use crate::eventually::eventually;
use crate::kube::{KubeCluster, free_port};

/// The injector process, killed by PID when dropped.
pub struct Injector {
    child: Child,
    pub port: u16,
    /// The CA that signed its certificate (PEM): the webhook's caBundle.
    pub ca_pem: String,
    /// Its PKI: `tls.crt`, `tls.key`, `ca.crt`; and its stderr,
    /// `injector.stderr`.
    pub dir: PathBuf,
}

/// The webhook's PKI, as an install has it: a CA (the caBundle) and the
/// serving certificate it signed, for 127.0.0.1 (the webhook URL's host),
/// as `tls.crt`, `tls.key` and `ca.crt` in `dir`; returns the CA (PEM).
pub fn write_webhook_pki(dir: &Path) -> String {
    use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
    std::fs::create_dir_all(dir).expect("the PKI directory");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    ca.distinguished_name.push(DnType::CommonName, "weft-injector-ca");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().expect("a key");
    let ca_pem = ca.self_signed(&ca_key).expect("the CA").pem();
    let issuer = Issuer::new(ca, ca_key);
    let mut leaf = CertificateParams::new(Vec::<String>::new()).expect("parameters");
    leaf.subject_alt_names = vec![rcgen::SanType::IpAddress("127.0.0.1".parse().expect("ip"))];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().expect("a key");
    let crt = leaf.signed_by(&key, &issuer).expect("the serving certificate");
    for (name, pem) in [("tls.crt", crt.pem()), ("tls.key", key.serialize_pem()), ("ca.crt", ca_pem.clone())] {
        std::fs::write(dir.join(name), pem).expect("writing the PKI");
    }
    ca_pem
}

impl Drop for Injector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Injector {
    /// Starts the injector reading `cluster` as the admin, with `extra`
    /// flags, and waits until `/ready` answers 200.
    #[track_caller]
    pub fn start(cluster: &KubeCluster, extra: &[&str]) -> Injector {
        let port = free_port();
        let dir = cluster.dir().join(format!("injector-{port}"));
        Injector::start_with_pki(cluster, &dir, port, extra)
    }

    /// [`Injector::start`] with the PKI in `dir` (made by
    /// [`write_webhook_pki`] unless it is there), listening on `port`.
    #[track_caller]
    pub fn start_with_pki(cluster: &KubeCluster, dir: &Path, port: u16, extra: &[&str]) -> Injector {
        let ca_pem = match std::fs::read_to_string(dir.join("ca.crt")) {
            Ok(pem) => pem,
            Err(_) => write_webhook_pki(dir),
        };
        let dir = dir.to_owned();
        let log = dir.join("injector.stderr");
        let child = Command::new(injector_bin())
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--cert")
            .arg(dir.join("tls.crt"))
            .arg("--key")
            .arg(dir.join("tls.key"))
            .arg("--kubeconfig")
            .arg(cluster.kubeconfig())
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("the log file"))
            .spawn()
            .expect("starting weft-injector");
        let injector = Injector { child, port, ca_pem, dir: dir.clone() };
        eventually(Duration::from_secs(20), "the injector answers /ready", || {
            let out = Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "1", "--cacert"])
                .arg(dir.join("ca.crt"))
                .arg(format!("https://127.0.0.1:{port}/ready"))
                .output()
                .expect("running curl");
            let code = String::from_utf8_lossy(&out.stdout).into_owned();
            if code == "200" { Ok(()) } else { Err(format!("GET /ready: {code:?}")) }
        });
        injector
    }

    /// `dir/name`, as a string (for flags).
    pub fn file(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// A MutatingWebhookConfiguration named `name` sending this injector the
    /// Pods created in namespaces matching `namespace_selector` (YAML flow
    /// mapping, e.g. `{matchLabels: {a: b}}`).
    pub fn webhook(&self, name: &str, namespace_selector: &str) -> String {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&self.ca_pem);
        format!(
            "apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {{name: {name}}}
webhooks:
- name: inject.weft.dev
  admissionReviewVersions: [v1]
  sideEffects: None
  failurePolicy: Ignore
  timeoutSeconds: 10
  reinvocationPolicy: IfNeeded
  clientConfig: {{url: \"https://127.0.0.1:{port}/inject\", caBundle: {b64}}}
  rules: [{{operations: [CREATE], apiGroups: [\"\"], apiVersions: [v1], resources: [pods]}}]
  namespaceSelector: {namespace_selector}
",
            port = self.port
        )
    }
}
