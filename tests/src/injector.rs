//! `weft-injector` as the tests' real API server calls it: on
//! `https://127.0.0.1:PORT` with a fresh certificate for that address, and
//! a MutatingWebhookConfiguration pointing at it by URL (as envtest does:
//! no Service can be reached here).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::env::injector_bin;
use crate::eventually::eventually;
use crate::kube::{KubeCluster, free_port};

/// The injector process, killed by PID when dropped.
pub struct Injector {
    child: Child,
    pub port: u16,
    /// Its certificate (PEM): the webhook's caBundle.
    pub ca_pem: String,
    /// Its stderr.
    pub log: PathBuf,
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
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("certificate parameters");
        params.subject_alt_names = vec![rcgen::SanType::IpAddress("127.0.0.1".parse().expect("ip"))];
        let key = rcgen::KeyPair::generate().expect("a key");
        let cert = params.self_signed(&key).expect("a certificate");
        let port = free_port();
        let dir = cluster.dir().join(format!("injector-{port}"));
        std::fs::create_dir_all(&dir).expect("the injector's directory");
        std::fs::write(dir.join("tls.crt"), cert.pem()).expect("writing the certificate");
        std::fs::write(dir.join("tls.key"), key.serialize_pem()).expect("writing the key");
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
        let injector = Injector { child, port, ca_pem: cert.pem(), log };
        eventually(Duration::from_secs(20), "the injector answers /ready", || {
            let out = Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "1", "--cacert"])
                .arg(dir.join("tls.crt"))
                .arg(format!("https://127.0.0.1:{port}/ready"))
                .output()
                .expect("running curl");
            let code = String::from_utf8_lossy(&out.stdout).into_owned();
            if code == "200" { Ok(()) } else { Err(format!("GET /ready: {code:?}")) }
        });
        injector
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
