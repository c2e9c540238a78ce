//! The injector's serving certificate, issued and renewed by the control
//! plane's CA, against the real API server.
//!
//! ```text
//!  weft-control ×2 ── (as weft-system/weft-control, the shipped Role/ClusterRole) ──► kube-apiserver
//!   --source kubernetes        Secret weft-system/weft-injector-tls  (create / replace, guarded)
//!   issuer: an intermediate    MutatingWebhookConfiguration weft-injector: caBundle (patch, guarded)
//!                                        │ watch (as weft-system/weft-injector, the shipped Role)
//!                                        ▼
//!  kube-apiserver ── POST /inject (verifies against caBundle) ──► weft-injector --tls-secret (127.0.0.1)
//! ```
//!
//! The webhook points at `https://127.0.0.1:PORT/inject` (as envtest does:
//! no Service can be reached here) with `failurePolicy: Fail`, so a Pod
//! whose admission fails is not created at all: every failed handshake
//! would show as a failed `kubectl create`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use weft_tests::{KUBECTL_TIMEOUT, KubeCluster, Mesh, Proc, control_bin, eventually, free_port, injector_bin, tool};

/// The injector certificate's lifetime: renewed every 10 s (two thirds).
const LIFETIME: &str = "15s";
const SECRET: &str = "weft-injector-tls";
const ISSUED: &str = "issued the injector's serving certificate";

/// A root and an intermediate under it (the control plane's issuer), as PEM
/// files in `dir`: `root.crt`, `int.crt`, `int.key` (0600).
fn issuer(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let key = || KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("a P-256 key");
    let ca = |cn: &str, path_len| {
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(path_len);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        p
    };
    let (root_key, int_key) = (key(), key());
    let root = ca("weft-tests webhook root", BasicConstraints::Unconstrained);
    let root_cert = root.self_signed(&root_key).expect("the root");
    let mut int = ca("weft-tests webhook intermediate", BasicConstraints::Constrained(0));
    int.use_authority_key_identifier_extension = true;
    let int_cert = int.signed_by(&int_key, &rcgen::Issuer::new(root, root_key)).expect("the intermediate");
    let paths = (dir.join("root.crt"), dir.join("int.crt"), dir.join("int.key"));
    std::fs::write(&paths.0, root_cert.pem()).expect("writing root.crt");
    std::fs::write(&paths.1, int_cert.pem()).expect("writing int.crt");
    std::fs::write(&paths.2, int_key.serialize_pem()).expect("writing int.key");
    std::fs::set_permissions(&paths.2, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod int.key");
    paths
}

/// The base64 of a PEM text's certificates, whitespace removed: equal for
/// equal certificates whatever the line breaks.
fn pem_bodies(pem: &str) -> Vec<String> {
    pem.split("-----BEGIN CERTIFICATE-----")
        .skip(1)
        .map(|b| b.split("-----END CERTIFICATE-----").next().unwrap_or_default().split_whitespace().collect())
        .collect()
}

/// The first `-----BEGIN CERTIFICATE-----` block of `pem`.
fn first_cert(pem: &str) -> String {
    let start = pem.find("-----BEGIN CERTIFICATE-----").unwrap_or_else(|| panic!("no certificate in:\n{pem}"));
    let end = pem[start..].find("-----END CERTIFICATE-----").expect("an END line") + start;
    format!("{}-----END CERTIFICATE-----\n", &pem[start..end])
}

/// Runs `program args` with `stdin`, to completion (coreutils `timeout`
/// bounds it); (exit 0, stdout, stderr).
fn run(program: &str, args: &[&str], stdin: &[u8]) -> (bool, String, String) {
    use std::io::Write as _;
    let mut child = Command::new(tool("timeout"))
        .arg("20")
        .arg(tool(program))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    let mut input = child.stdin.take().expect("stdin");
    // A tool that exits without reading (s_client after its handshake)
    // closes the pipe: not an error here.
    let _ = input.write_all(stdin);
    drop(input);
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("waiting for {program}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `openssl x509 -noout ARGS` of a PEM certificate; its stdout.
#[track_caller]
fn x509(pem: &str, args: &[&str]) -> String {
    let mut all = vec!["x509", "-noout"];
    all.extend_from_slice(args);
    let (ok, out, err) = run("openssl", &all, pem.as_bytes());
    assert!(ok, "openssl x509 {args:?}: {err}");
    out.trim().to_owned()
}

/// A certificate's serial, as openssl prints it.
fn serial(pem: &str) -> String {
    x509(pem, &["-serial"]).trim_start_matches("serial=").to_owned()
}

/// What `GET /ready` answers over TLS without verifying the certificate
/// (the placeholder is served until one is loaded): (status, body).
fn ready(port: u16) -> (String, String) {
    let url = format!("https://127.0.0.1:{port}/ready");
    let (_, out, _) = run("curl", &["-sk", "--max-time", "2", "-w", "\n%{http_code}", &url], b"");
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", &out));
    (code.to_owned(), body.trim().to_owned())
}

/// The chain the injector serves now, verified by openssl against `ca`
/// for IP 127.0.0.1 (an error if it does not verify); its leaf's serial.
fn served_serial(port: u16, ca: &Path) -> Result<String, String> {
    let ca = ca.display().to_string();
    let connect = format!("127.0.0.1:{port}");
    let args = ["s_client", "-connect", &connect, "-CAfile", &ca, "-verify_ip", "127.0.0.1", "-verify_return_error"];
    let (ok, out, err) = run("openssl", &args, b"");
    if !ok {
        return Err(format!("openssl s_client: {err}"));
    }
    Ok(serial(&first_cert(&out)))
}

/// The Secret as stored (`None` while it does not exist).
fn secret(cluster: &KubeCluster) -> Option<serde_json::Value> {
    let run = cluster.try_kubectl(&["get", "secret", SECRET, "-n", "weft-system", "-o", "json"], KUBECTL_TIMEOUT);
    if !run.status.success() {
        assert!(run.stderr.contains("NotFound"), "kubectl get secret:\n{run}");
        return None;
    }
    Some(serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("kubectl printed invalid JSON ({e}):\n{run}")))
}

/// One key of the Secret's data, decoded.
fn key(secret: &serde_json::Value, name: &str) -> String {
    let b64 = secret["data"][name].as_str().unwrap_or_else(|| panic!("the Secret has no {name}: {secret:#}"));
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).expect("base64");
    String::from_utf8(bytes).expect("PEM is text")
}

/// The stored leaf's serial, if the Secret exists.
fn secret_serial(cluster: &KubeCluster) -> Option<String> {
    secret(cluster).map(|s| serial(&first_cert(&key(&s, "tls.crt"))))
}

/// The documents of `manifests/install/injector.yaml` of the given kinds.
fn injector_manifest(kinds: &[&str]) -> String {
    let text = std::fs::read_to_string(weft_tests::manifests_dir().join("install/injector.yaml"))
        .expect("reading manifests/install/injector.yaml");
    text.split("\n---\n")
        .filter(|doc| doc.lines().any(|l| kinds.iter().any(|k| l == format!("kind: {k}"))))
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// The webhook configuration the test installs: the shipped one's name and
/// settings, pointing at `https://127.0.0.1:PORT`, `failurePolicy: Fail`,
/// no caBundle, for this test's namespace only. A second webhook that
/// never matches shows that every webhook's caBundle is kept.
fn webhook_config(port: u16, label: &str) -> String {
    let hook = |name: &str, object_selector: &str| {
        format!(
            "- name: {name}
  admissionReviewVersions: [v1]
  sideEffects: None
  failurePolicy: Fail
  timeoutSeconds: 10
  reinvocationPolicy: IfNeeded
  clientConfig: {{url: \"https://127.0.0.1:{port}/inject\"}}
  rules: [{{operations: [CREATE], apiGroups: [\"\"], apiVersions: [v1], resources: [pods]}}]
  namespaceSelector: {{matchLabels: {{{label}}}}}
  objectSelector: {{{object_selector}}}
"
        )
    };
    format!(
        "apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {{name: weft-injector}}
webhooks:
{}{}",
        hook("inject.weft.dev", ""),
        hook("never.weft.dev", "matchLabels: {weft-test/never: \"true\"}")
    )
}

/// Creates Pod `name` in `ns`; `Ok` with its init containers, or the
/// error kubectl printed.
fn create_pod(cluster: &KubeCluster, dir: &Path, ns: &str, name: &str) -> Result<Vec<String>, String> {
    let path = dir.join(format!("{name}.json"));
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]},
    });
    std::fs::write(&path, pod.to_string()).expect("writing the Pod");
    let run =
        cluster.try_kubectl(&["create", "-n", ns, "-o", "json", "-f", path.to_str().expect("UTF-8")], KUBECTL_TIMEOUT);
    if !run.status.success() {
        return Err(run.stderr.trim().to_owned());
    }
    let stored: serde_json::Value = serde_json::from_str(&run.stdout).expect("kubectl create -o json prints the Pod");
    Ok(stored["spec"]["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_owned))
        .collect())
}

/// Starts a control plane replica, as `weft-system/weft-control` with the
/// shipped RBAC, on loopback ports, with `int` as its issuer.
fn control_plane(mesh: &Mesh, cluster: &KubeCluster, label: &str, issuer: &(PathBuf, PathBuf, PathBuf)) -> Proc {
    let kubeconfig =
        cluster.control_plane_kubeconfig(cluster.server(), &mesh.dir().join(format!("{label}.kubeconfig")));
    let admin = format!("127.0.0.1:{}", free_port());
    let args = [
        "--source",
        "kubernetes",
        "--kubeconfig",
        kubeconfig.to_str().expect("UTF-8"),
        "--grpc-addr",
        &format!("127.0.0.1:{}", free_port()),
        "--admin-addr",
        &admin,
        "--issuer-cert",
        issuer.1.to_str().expect("UTF-8"),
        "--issuer-key",
        issuer.2.to_str().expect("UTF-8"),
        "--trust-anchors",
        issuer.0.to_str().expect("UTF-8"),
        "--webhook-cert-san",
        "127.0.0.1",
        "--webhook-cert-lifetime",
        LIFETIME,
    ];
    let mut proc = mesh.spawn_host(label, control_bin(), &args);
    eventually(Duration::from_secs(60), &format!("{label} answers /ready"), || {
        if let Some(status) = proc.try_status() {
            panic!("{label} exited ({status}):\n{}", proc.stderr());
        }
        let (_, code, _) =
            run("curl", &["-s", "-o", "/dev/null", "-w", "%{http_code}", &format!("http://{admin}/ready")], b"");
        if code == "200" { Ok(()) } else { Err(format!("GET /ready: {code}")) }
    });
    proc
}

/// What the Pod-creating thread saw.
#[derive(Default)]
struct Created {
    /// For each Pod created and injected: the serial the injector served
    /// when its creation began.
    ok: Vec<String>,
    /// Pods refused by the API server or created without the proxy.
    failed: Vec<String>,
}

#[test]
fn the_control_plane_issues_renews_and_restores_the_injectors_certificate_with_no_failed_admission() {
    let cluster = KubeCluster::shared();
    let mesh = Mesh::new();
    cluster.install_weft();
    let inj_rbac = mesh.dir().join("injector-rbac.yaml");
    std::fs::write(
        &inj_rbac,
        injector_manifest(&["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"]),
    )
    .expect("writing the injector's RBAC");
    cluster.kubectl(&["apply", "-f", inj_rbac.to_str().expect("UTF-8")]);
    cluster.kubectl(&["delete", "secret", SECRET, "-n", "weft-system", "--ignore-not-found"]);

    let ns = cluster.namespace("whc");
    let label = format!("weft-test/webhook-cert: \"{}\"", std::process::id());
    cluster.kubectl(&[
        "label",
        "namespace",
        &ns,
        "weft.dev/inject=enabled",
        &format!("weft-test/webhook-cert={}", std::process::id()),
    ]);
    let issuer = issuer(mesh.dir());
    let root_pem = std::fs::read_to_string(&issuer.0).expect("root.crt");
    let int_pem = std::fs::read_to_string(&issuer.1).expect("int.crt");

    // The injector first, as weft-system/weft-injector with its shipped
    // Role: no Secret yet, so not ready, and saying why.
    let port = free_port();
    let token = cluster.token("weft-system", "weft-injector", None, None);
    let inj_kubeconfig =
        cluster.token_kubeconfig(cluster.server(), "weft-injector", &token, &mesh.dir().join("injector.kubeconfig"));
    let listen = format!("127.0.0.1:{port}");
    let injector = mesh.spawn_host(
        "injector",
        injector_bin(),
        &[
            "--listen",
            &listen,
            "--tls-secret",
            SECRET,
            "--namespace",
            "weft-system",
            "--kubeconfig",
            inj_kubeconfig.to_str().expect("UTF-8"),
            "--proxy-image",
            "registry.invalid/weft/proxy:test",
        ],
    );
    let (code, body) = eventually(Duration::from_secs(30), "the injector answers /ready", || {
        let (code, body) = ready(port);
        if code == "000" { Err("no answer".to_owned()) } else { Ok((code, body)) }
    });
    assert_eq!(
        (code.as_str(), body.as_str()),
        ("503", "no serving certificate yet: waiting for Secret weft-system/weft-injector-tls (tls.crt, tls.key)")
    );

    // The webhook, with failurePolicy Fail and no caBundle: nothing can be
    // admitted yet (the API server trusts nothing the injector serves).
    cluster.apply("default", &webhook_config(port, &label));
    let pods = mesh.dir().join("pods");
    std::fs::create_dir_all(&pods).expect("the Pods' directory");
    let refused = eventually(Duration::from_secs(30), "a Pod is refused while no certificate is trusted", || {
        match create_pod(cluster, &pods, &ns, "too-early") {
            Err(e) => Ok(e),
            // The API server may not have seen the webhook yet.
            Ok(_) => {
                cluster.kubectl(&["delete", "pod", "too-early", "-n", &ns, "--wait=false"]);
                Err("created".into())
            }
        }
    });
    assert!(refused.contains("failed calling webhook \"inject.weft.dev\""), "{refused}");

    // Two replicas of the control plane, one issuer.
    let cp_a = control_plane(&mesh, cluster, "control-a", &issuer);
    let cp_b = control_plane(&mesh, cluster, "control-b", &issuer);

    // Every webhook's caBundle becomes the trust anchors; nothing else of
    // the configuration changes.
    eventually(Duration::from_secs(30), "both webhooks' caBundle is the root", || {
        let config = cluster.get_json("default", &["mutatingwebhookconfiguration", "weft-injector"]);
        let hooks = config["webhooks"].as_array().cloned().unwrap_or_default();
        let bundles: Vec<Vec<String>> = hooks
            .iter()
            .map(|h| {
                let b64 = h["clientConfig"]["caBundle"].as_str().unwrap_or_default();
                let pem = base64::engine::general_purpose::STANDARD.decode(b64).unwrap_or_default();
                pem_bodies(&String::from_utf8_lossy(&pem))
            })
            .collect();
        if bundles != [pem_bodies(&root_pem), pem_bodies(&root_pem)] {
            return Err(format!("caBundles: {bundles:?}"));
        }
        let names: Vec<_> = hooks.iter().map(|h| h["name"].as_str().unwrap_or_default()).collect();
        assert_eq!(names, ["inject.weft.dev", "never.weft.dev"], "{config:#}");
        for h in &hooks {
            assert_eq!(h["failurePolicy"], "Fail", "{config:#}");
            assert_eq!(h["clientConfig"]["url"], format!("https://127.0.0.1:{port}/inject"), "{config:#}");
        }
        Ok(())
    });

    // The Secret: kubernetes.io/tls; the leaf then the intermediate; the
    // root as ca.crt; a PKCS#8 key that is the leaf's; the right names; a
    // chain openssl verifies for 127.0.0.1 only with the intermediate.
    let stored =
        eventually(Duration::from_secs(30), "the Secret exists", || secret(cluster).ok_or("not yet".to_owned()));
    assert_eq!(stored["type"], "kubernetes.io/tls");
    let keys: Vec<&str> =
        stored["data"].as_object().map(|o| o.keys().map(String::as_str).collect()).unwrap_or_default();
    assert_eq!(keys, ["ca.crt", "tls.crt", "tls.key"]);
    let (tls_crt, tls_key, ca_crt) = (key(&stored, "tls.crt"), key(&stored, "tls.key"), key(&stored, "ca.crt"));
    let chain = pem_bodies(&tls_crt);
    assert_eq!(chain.len(), 2, "leaf and intermediate:\n{tls_crt}");
    assert_eq!(chain[1], pem_bodies(&int_pem)[0], "the intermediate follows the leaf");
    assert_eq!(pem_bodies(&ca_crt), pem_bodies(&root_pem), "ca.crt is the trust anchor");
    assert!(tls_key.starts_with("-----BEGIN PRIVATE KEY-----\n"), "PKCS#8:\n{}", &tls_key[..40.min(tls_key.len())]);
    let leaf = first_cert(&tls_crt);
    let sans = x509(&leaf, &["-ext", "subjectAltName"]);
    let sans: BTreeSet<&str> = sans.lines().skip(1).flat_map(|l| l.split(',')).map(str::trim).collect();
    assert_eq!(
        sans,
        BTreeSet::from([
            "DNS:weft-injector.weft-system.svc",
            "DNS:weft-injector.weft-system.svc.cluster.local",
            "IP Address:127.0.0.1"
        ])
    );
    let (k_pub, c_pub) = (run("openssl", &["pkey", "-pubout"], tls_key.as_bytes()), x509(&leaf, &["-pubkey"]));
    assert!(k_pub.0, "openssl pkey: {}", k_pub.2);
    assert_eq!(k_pub.1.trim(), c_pub, "tls.key is the leaf's key");
    let files = mesh.dir();
    for (name, text) in [("leaf.pem", &leaf), ("ca.pem", &ca_crt), ("int.pem", &int_pem)] {
        std::fs::write(files.join(name), text).expect("writing a PEM file");
    }
    let p = |n: &str| files.join(n).display().to_string();
    let verify = |extra: &[&str]| {
        let mut args = vec!["verify", "-CAfile"];
        let ca = p("ca.pem");
        args.push(&ca);
        args.extend_from_slice(extra);
        let leaf = p("leaf.pem");
        args.extend(["-purpose", "sslserver", "-verify_ip", "127.0.0.1", &leaf]);
        run("openssl", &args, b"")
    };
    let int = p("int.pem");
    let good = verify(&["-untrusted", &int]);
    assert!(good.0 && good.1.trim().ends_with("leaf.pem: OK"), "openssl verify: {good:?}");
    let without = verify(&[]);
    assert!(!without.0, "the leaf does not verify without its intermediate: {without:?}");
    assert!(x509(&leaf, &["-checkend", "0"]).contains("will not expire"));
    let (_, out, _) = run("openssl", &["x509", "-noout", "-checkend", "16"], leaf.as_bytes());
    assert!(out.contains("will expire"), "at most 15 s of life left: {out}");

    // The injector serves it (verified by curl against the root alone).
    let ca_file = files.join("ca.pem");
    eventually(Duration::from_secs(30), "the injector is ready with the issued certificate", || {
        let url = format!("https://127.0.0.1:{port}/ready");
        let ca = ca_file.display().to_string();
        let (_, out, err) = run("curl", &["-s", "--max-time", "2", "--cacert", &ca, "-w", " %{http_code}", &url], b"");
        if out == "ready\n 200" { Ok(()) } else { Err(format!("{out:?} {err}")) }
    });

    // Pods are created without a pause while the certificate is renewed
    // twice; every one is admitted and injected.
    let stop = AtomicBool::new(false);
    let created = Mutex::new(Created::default());
    let now_served = Mutex::new(served_serial(port, &ca_file).expect("the injector serves the certificate"));
    let (mut secret_serials, mut served_serials) = (Vec::<String>::new(), Vec::<String>::new());
    let mut bad_handshakes = Vec::new();
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let name = format!("p-{n:04}");
                let serving = now_served.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let result = create_pod(cluster, &pods, &ns, &name);
                let mut c = created.lock().unwrap_or_else(|e| e.into_inner());
                match result {
                    Ok(init) if init.iter().any(|c| c == "weft-proxy") => c.ok.push(serving),
                    Ok(init) => c.failed.push(format!("{name}: created without the proxy (init containers {init:?})")),
                    Err(e) => c.failed.push(format!("{name}: {e}")),
                }
            }
        });
        // Whatever happens below (a panic included), the creator stops.
        struct Stop<'a>(&'a AtomicBool);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let _stop = Stop(&stop);
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut after_second = 0;
        while Instant::now() < deadline {
            if let Some(s) = secret_serial(cluster)
                && secret_serials.last() != Some(&s)
            {
                secret_serials.push(s);
            }
            match served_serial(port, &ca_file) {
                Ok(s) => {
                    if served_serials.last() != Some(&s) {
                        served_serials.push(s.clone());
                        *now_served.lock().unwrap_or_else(|e| e.into_inner()) = s;
                    }
                }
                Err(e) => bad_handshakes.push(e),
            }
            if served_serials.len() >= 3 {
                after_second += 1;
                // A few more rounds: Pods made under the third certificate.
                if after_second >= 8 {
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    let created = created.into_inner().unwrap_or_else(|e| e.into_inner());
    assert!(created.failed.is_empty(), "{} failed admissions:\n{}", created.failed.len(), created.failed.join("\n"));
    assert!(bad_handshakes.is_empty(), "handshakes that did not verify:\n{}", bad_handshakes.join("\n"));
    assert!(
        secret_serials.len() >= 3 && served_serials.len() >= 3,
        "not two renewals, both stored and served, within 120 s: Secret {secret_serials:?}, served {served_serials:?}"
    );
    assert!(
        served_serials.iter().all(|s| secret_serials.contains(s)),
        "the injector served only what the Secret held: Secret {secret_serials:?}, served {served_serials:?}"
    );
    // Pods were admitted while each of the first three certificates was served.
    for s in &served_serials[..3] {
        let n = created.ok.iter().filter(|served| *served == s).count();
        assert!(n >= 2, "only {n} Pods created while {s} was served");
    }
    // And the API server shook hands under each of them: the injector
    // closes connections made under an older certificate (GOAWAY), and
    // logs with each admission the serial its connection was made with.
    let log = injector.stderr();
    let per_serial: Vec<usize> = served_serials[..3]
        .iter()
        .map(|s| {
            let tag = format!("serial={s}");
            log.lines().filter(|l| l.contains("admission uid=") && l.contains(&ns) && l.contains(&tag)).count()
        })
        .collect();
    assert!(per_serial.iter().all(|n| *n >= 2), "admissions per certificate {per_serial:?} of {served_serials:?}");
    eprintln!(
        "{} Pods created and injected, none refused, across Secret serials {secret_serials:?} (served {served_serials:?}; \
         admissions answered per certificate: {per_serial:?})",
        created.ok.len()
    );

    // A deleted Secret is issued again and served; the old certificate is
    // served meanwhile, so the injector stays ready.
    let before: BTreeSet<String> = secret_serials.iter().cloned().collect();
    cluster.kubectl(&["delete", "secret", SECRET, "-n", "weft-system"]);
    assert_eq!(ready(port).0, "200", "still ready while the Secret is gone");
    let again = eventually(Duration::from_secs(30), "the Secret is issued again", || match secret_serial(cluster) {
        Some(s) if !before.contains(&s) => Ok(s),
        other => Err(format!("{other:?}")),
    });
    secret_serials.push(again.clone());
    eventually(Duration::from_secs(30), "the injector serves the new certificate", || {
        let s = served_serial(port, &ca_file)?;
        if s == again { Ok(()) } else { Err(format!("serving {s}, not {again}")) }
    });
    let init = create_pod(cluster, &pods, &ns, "after-delete").expect("admitted under the new certificate");
    assert!(init.iter().any(|c| c == "weft-proxy"), "{init:?}");

    // The replicas never fought: each certificate in the Secret was
    // written once, by one of them (the other's write lost, and it re-read).
    drop((cp_a, cp_b));
    if let Some(last) = secret_serial(cluster)
        && secret_serials.last() != Some(&last)
    {
        secret_serials.push(last);
    }
    let logs: Vec<String> = mesh_logs(&mesh, &["control-a", "control-b"]);
    let issued: usize = logs.iter().map(|l| l.lines().filter(|l| l.contains(ISSUED)).count()).sum();
    let distinct: BTreeSet<&String> = secret_serials.iter().collect();
    assert_eq!(issued, distinct.len(), "one write per certificate; Secret serials {secret_serials:?}");
    drop(injector);
}

/// The stderr of the mesh's processes labelled `labels`, from their log files.
fn mesh_logs(mesh: &Mesh, labels: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(mesh.dir()).expect("the mesh's directory").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".stderr") && labels.iter().any(|l| name.ends_with(&format!("-{l}.stderr"))) {
            out.push(std::fs::read_to_string(entry.path()).unwrap_or_default());
        }
    }
    assert_eq!(out.len(), labels.len(), "a log file for each of {labels:?}");
    out
}

/// The injector's Role (`manifests/install/injector.yaml`): it may read
/// its own Secret (list/watch by name) and Namespaces, nothing else; as
/// the API server's RBAC decides (SubjectAccessReviews).
#[test]
fn the_injectors_role_reads_its_own_secret_only() {
    let cluster = KubeCluster::shared();
    let mesh = Mesh::new();
    let rbac = mesh.dir().join("injector-rbac.yaml");
    let namespace = "apiVersion: v1\nkind: Namespace\nmetadata: {name: weft-system}\n---\n";
    let docs = injector_manifest(&["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"]);
    std::fs::write(&rbac, format!("{namespace}{docs}")).expect("writing the RBAC");
    cluster.kubectl(&["apply", "-f", rbac.to_str().expect("UTF-8")]);
    let allowed = |ns: &str, verb: &str, resource: &str, name: &str| -> bool {
        let review = serde_json::json!({
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": "system:serviceaccount:weft-system:weft-injector",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:weft-system", "system:authenticated"],
                "resourceAttributes": {"namespace": ns, "verb": verb, "group": "", "resource": resource, "name": name},
            },
        });
        let path = mesh.dir().join(format!("sar-{ns}-{verb}-{resource}-{name}.json"));
        std::fs::write(&path, review.to_string()).expect("writing the review");
        let run = cluster.kubectl(&["create", "-f", path.to_str().expect("UTF-8"), "-o", "json"]);
        let answer: serde_json::Value = serde_json::from_str(&run.stdout).expect("a SubjectAccessReview");
        answer["status"]["allowed"].as_bool().unwrap_or(false)
    };
    let ws = "weft-system";
    let rows = [
        (ws, "list", "secrets", SECRET, true),
        (ws, "watch", "secrets", SECRET, true),
        ("", "get", "namespaces", "default", true),
        (ws, "get", "secrets", SECRET, false),
        (ws, "update", "secrets", SECRET, false),
        (ws, "list", "secrets", "", false),
        (ws, "watch", "secrets", "weft-identity-issuer", false),
        ("default", "list", "secrets", SECRET, false),
        (ws, "create", "secrets", "", false),
        ("", "list", "namespaces", "", false),
    ];
    let wrong: Vec<String> = rows
        .iter()
        .filter(|(ns, verb, resource, name, want)| allowed(ns, verb, resource, name) != *want)
        .map(|(ns, verb, resource, name, want)| format!("{verb} {resource} {name} in {ns:?}: want allowed={want}"))
        .collect();
    assert!(wrong.is_empty(), "the injector's role is not what it should be:\n{}", wrong.join("\n"));
}
