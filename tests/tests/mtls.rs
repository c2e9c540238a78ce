//! Mutual TLS between meshed pods, with identities from the control
//! plane's CA.
//!
//! ```text
//! cp: weft-control with a CA (state dir, bootstrap tokens)
//! a: client + proxy (sa/a) ══ TLS 1.3, both certificates checked ══► b: proxy (sa/b) ─► app, redis
//! ```

use std::time::Duration;

use weft_tests::{Mesh, Signal, WEB_AND_STORE, eventually};

const ID_A: &str = "spiffe://cluster.local/ns/default/sa/a";

#[test]
fn meshed_pods_speak_only_tls_and_the_app_sees_the_verified_client() {
    let mesh = Mesh::new();
    let cp = mesh.pod("cp").run_control_with_ca(WEB_AND_STORE, &[]);
    let (b, _apps, proxy_b) = mesh.web_and_store_pod(&cp);
    let a = mesh.pod("a");
    let _proxy_a = a.run_meshed_proxy(&cp, "a", None, &[]);

    // Capture everything on b's side of the link.
    let pcap = b.dir().join("b.pcap");
    let pcap_arg = pcap.to_string_lossy().into_owned();
    let mut tcpdump = b.spawn(
        "tcpdump",
        "tcpdump",
        &["-i", "eth0", "--immediate-mode", "-U", "-s", "0", "-Z", "root", "-w", &pcap_arg, "tcp"],
    );
    eventually(Duration::from_secs(10), "tcpdump listens", || {
        if tcpdump.stderr().contains("listening on") { Ok(()) } else { Err(tcpdump.stderr()) }
    });

    // HTTP/1: the app sees the verified identity, never a forged one.
    let curl = a.curl(&[
        "-H",
        "weft-client-id: spiffe://cluster.local/ns/evil/sa/forged",
        "-H",
        "x-secret: SECRET-H1-HEADER",
        "http://198.18.0.200/head",
    ]);
    assert_eq!(curl.status(), 200, "{}", curl.run);
    let head = curl.body().to_ascii_lowercase();
    assert!(head.contains(&format!("weft-client-id: {ID_A}")), "the app did not see the client identity:\n{head}");
    assert!(!head.contains("forged"), "a forged weft-client-id reached the app:\n{head}");
    // HTTP/2 prior knowledge, same guarantees.
    let curl = a.curl(&["--http2-prior-knowledge", "-H", "x-secret: SECRET-H2-HEADER", "http://198.18.0.200/head"]);
    assert_eq!(curl.status(), 200, "{}", curl.run);
    assert!(curl.body().to_ascii_lowercase().contains(&format!("weft-client-id: {ID_A}")), "{}", curl.body());
    // Straight to b's pod address (no service): mTLS all the same.
    let direct = format!("http://{}/head", b.addr(8080));
    let curl = a.curl(&["-H", "x-secret: SECRET-DIRECT-HEADER", &direct]);
    assert_eq!(curl.status(), 200, "{}", curl.run);
    assert!(curl.body().to_ascii_lowercase().contains(&format!("weft-client-id: {ID_A}")), "{}", curl.body());
    // Opaque TCP (Redis's port is opaque by default).
    let run = a.exec("redis-cli", &["-h", "198.18.0.201", "-p", "6379", "SET", "k", "SECRET-REDIS-VALUE"]);
    assert_eq!(run.stdout.trim(), "OK", "{run}");
    let run = a.exec("redis-cli", &["-h", "198.18.0.201", "-p", "6379", "GET", "k"]);
    assert_eq!(run.stdout.trim(), "SECRET-REDIS-VALUE", "{run}");

    tcpdump.signal(Signal::SIGINT);
    tcpdump.wait_exit(Duration::from_secs(10));
    let bytes = std::fs::read(&pcap).expect("reading the capture");
    assert!(bytes.len() > 1000, "the capture is nearly empty ({} bytes): {}", bytes.len(), tcpdump.stderr());
    for secret in [
        "SECRET-H1-HEADER",
        "SECRET-H2-HEADER",
        "SECRET-DIRECT-HEADER",
        "SECRET-REDIS-VALUE",
        "weft-client-id",
        "/head",
    ] {
        assert!(find(&bytes, secret.as_bytes()).is_none(), "{secret:?} crossed the network in plaintext");
    }
    // ServerHello's supported_versions extension selecting TLS 1.3, and
    // TLS 1.3 application-data records.
    assert!(find(&bytes, &[0x00, 0x2b, 0x00, 0x02, 0x03, 0x04]).is_some(), "no TLS 1.3 ServerHello in the capture");
    assert!(find(&bytes, &[0x17, 0x03, 0x03]).is_some(), "no TLS application data records in the capture");

    // b's proxy counted the requests as inbound.
    proxy_b.wait_metric("weft_requests_total", &[("direction", "inbound")], 3.0);
    let config = proxy_b.config_json();
    assert_eq!(config["identity"]["identity"], "spiffe://cluster.local/ns/default/sa/b", "{config:#}");
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn a_reused_bootstrap_token_gets_no_certificate() {
    let mesh = Mesh::new();
    let cp = mesh.pod("cp").run_control_with_ca(WEB_AND_STORE, &[]);
    let a = mesh.pod("a");
    let ca = cp.ca.clone().expect("CA");
    let token = ca.token("default", "a", "a-0");
    let anchors = ca.anchors();
    let args = |t: &std::path::Path| {
        vec![
            "--control-plane".to_owned(),
            cp.url.clone(),
            "--identity-token-file".to_owned(),
            t.to_string_lossy().into_owned(),
            "--trust-anchors".to_owned(),
            anchors.to_string_lossy().into_owned(),
            "--service-account".to_owned(),
            "a".to_owned(),
        ]
    };
    let first: Vec<String> = args(&token);
    let first: Vec<&str> = first.iter().map(String::as_str).collect();
    let _proxy_a = a.run_proxy(&first);

    // Pod c presents the same token: the CA refuses, c never gets ready.
    let c = mesh.pod("c");
    c.init::<&str>(&[]).ok();
    let second = args(&token);
    let mut setpriv: Vec<String> =
        vec!["--reuid=2102".into(), "--regid=2102".into(), "--clear-groups".into(), "--".into()];
    setpriv.push(weft_tests::proxy_bin().to_string_lossy().into_owned());
    setpriv.push("run".into());
    setpriv.extend(second);
    let mut proxy_c = c.spawn("weft-proxy", "setpriv", &setpriv);
    eventually(Duration::from_secs(10), "the CA refuses the reused token", || {
        let refused = cp.metrics().sum("weft_control_certify_refused_total", &[]);
        if refused >= 1.0 { Ok(()) } else { Err(format!("refused {refused}")) }
    });
    assert!(proxy_c.try_status().is_none(), "c's proxy exited instead of retrying:\n{}", proxy_c.stderr());
    let ready = c.exec(
        "curl",
        &["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2", "http://127.0.0.1:4191/ready"],
    );
    assert_eq!(ready.stdout, "503", "a proxy without a certificate reports ready: {ready}");
    assert!(proxy_c.stderr().contains("refused"), "c's log does not say why:\n{}", proxy_c.stderr());
}

#[test]
fn ten_second_certificates_renew_under_load_without_failures() {
    let mesh = Mesh::new();
    let cp = mesh.pod("cp").run_control_with_ca(WEB_AND_STORE, &["--cert-lifetime", "10s"]);
    let (_b, _apps, proxy_b) = mesh.web_and_store_pod(&cp);
    let a = mesh.pod("a");
    let proxy_a = a.run_meshed_proxy(&cp, "a", None, &[]);

    // 15 s of steady load: every certificate is renewed at least once.
    let run = a.exec(
        "curl",
        &[
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}\\n",
            "--rate",
            "20/s",
            "--max-time",
            "60",
            "http://198.18.0.200/r[1-300]",
        ],
    );
    let codes: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(codes.len(), 300, "{run}");
    let failed = codes.iter().filter(|c| **c != "200").count();
    assert_eq!(failed, 0, "{failed} requests failed across renewals: {codes:?}");
    for (name, proxy) in [("a", &proxy_a), ("b", &proxy_b)] {
        let renewals = proxy.metrics().sum("weft_identity_renewals_total", &[]);
        assert!(renewals >= 1.0, "{name}'s certificate was not renewed in 15 s of 10 s certificates");
    }
}

/// Signs a leaf for `id` with the mesh CA's key (the test runs as root and
/// can read the CA's state directory), as OpenSSL files: (cert, key).
fn openssl_leaf(ca_dir: &std::path::Path, out: &std::path::Path, id: &str) -> (String, String) {
    let key = out.join("ossl.key");
    let csr = out.join("ossl.csr");
    let cert = out.join("ossl.crt");
    let ext = out.join("ossl.ext");
    std::fs::write(
        &ext,
        format!("subjectAltName=URI:{id}\nextendedKeyUsage=clientAuth,serverAuth\nkeyUsage=digitalSignature\n"),
    )
    .expect("ext file");
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl").args(args).output().expect("running openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let s = |p: &std::path::Path| p.to_string_lossy().into_owned();
    run(&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", &s(&key)]);
    run(&["req", "-new", "-key", &s(&key), "-subj", "/O=weft-test", "-out", &s(&csr)]);
    run(&[
        "x509",
        "-req",
        "-in",
        &s(&csr),
        "-CA",
        &s(&ca_dir.join("ca.crt")),
        "-CAkey",
        &s(&ca_dir.join("ca.key")),
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        &s(&ext),
        "-out",
        &s(&cert),
    ]);
    (s(&cert), s(&key))
}

#[test]
fn openssl_with_a_mesh_certificate_talks_to_the_inbound_proxy_and_without_one_is_refused() {
    let mesh = Mesh::new();
    let cp = mesh.pod("cp").run_control_with_ca(WEB_AND_STORE, &[]);
    let (b, _apps, _proxy_b) = mesh.web_and_store_pod(&cp);
    let ca = cp.ca.clone().expect("CA");
    let id = "spiffe://cluster.local/ns/default/sa/ossl";
    let (cert, key) = openssl_leaf(&ca.state_dir, b.dir(), id);
    let anchors = ca.anchors().to_string_lossy().into_owned();
    let x = mesh.pod("x");
    let target = b.addr(8080).to_string();
    let request = "GET /head HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n";
    let s_client = |with_cert: bool| {
        let client_cert = if with_cert { format!("-cert {cert} -key {key}") } else { String::new() };
        let script = format!(
            "printf '{}' | timeout 10 openssl s_client -connect {target} -tls1_3 -alpn weft.http/1 -CAfile {anchors} \
             -verify_return_error -ign_eof -quiet {client_cert} 2>&1",
            request.replace('\r', "\\r").replace('\n', "\\n"),
        );
        x.exec("sh", &["-c", &script])
    };
    let ok = s_client(true);
    assert!(ok.stdout.contains("HTTP/1.1 200"), "openssl with a mesh certificate: {ok}");
    assert!(ok.stdout.to_ascii_lowercase().contains(&format!("weft-client-id: {id}")), "{ok}");
    let refused = s_client(false);
    assert!(!refused.stdout.contains("HTTP/1.1 200"), "openssl without a certificate got through: {refused}");
}

#[test]
fn a_plaintext_connection_from_before_discovery_answered_is_never_reused_for_mtls() {
    let mesh = Mesh::new();
    let cp = mesh.pod("cp").run_control_with_ca(WEB_AND_STORE, &[]);
    let (b, _apps, _proxy_b) = mesh.web_and_store_pod(&cp);
    let a = mesh.pod("a");
    let proxy_a = a.run_meshed_proxy(&cp, "a", None, &[]);
    let direct = format!("http://{}/head", b.addr(8080));
    let target = b.addr(8080).to_string();

    // Discovery does not answer: a's proxy sends the request where the app
    // sent it, in plaintext, and pools that connection.
    cp.proc.signal(Signal::SIGSTOP);
    let first = a.curl(&[&direct]);
    cp.proc.signal(Signal::SIGCONT);
    assert!(matches!(first.status(), 200 | 403), "b's proxy did not answer: {}", first.run);
    assert!(!first.body().contains("weft-client-id"), "{}", first.body());

    // Discovery now says b is meshed as sa/b: every later request must be
    // mTLS, on a new connection.
    eventually(Duration::from_secs(10), "a's proxy knows b as a meshed endpoint", || {
        match proxy_a.endpoints(&target) {
            eps if eps == vec![target.clone()] => Ok(()),
            eps => Err(format!("endpoints of {target}: {eps:?}")),
        }
    });
    for i in 0..3 {
        let curl = a.curl(&[&direct]);
        assert_eq!(curl.status(), 200, "request {i}: {}", curl.run);
        assert!(
            curl.body().to_ascii_lowercase().contains(&format!("weft-client-id: {ID_A}")),
            "request {i} went in plaintext over the connection pooled before discovery answered:\n{}",
            curl.body()
        );
    }
}
