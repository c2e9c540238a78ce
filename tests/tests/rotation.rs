//! Rolling the mesh's root CA under load, without restarting a proxy.
//!
//! ```text
//! cp: weft-control --issuer-cert/--issuer-key (rewritten) --trust-anchors (rewritten), 10 s certificates
//! a: load + proxy (sa/a) ══ mTLS ══► b: proxy (sa/b) ─► app
//!    HTTP/1.1 200/s and HTTP/2 200/s throughout (weft-bench load)
//!
//! 1. anchors old          issuer old     (start)
//! 2. anchors old + new    issuer old     every proxy trusts both
//! 3. anchors old + new    issuer new     every proxy renews onto the new root
//! 4. anchors new          issuer new     the old root is retired
//! 5. the control plane restarts: the proxies reconnect trusting the
//!    streamed anchors (their pinned file holds only the old root)
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use weft_tests::{BENCH_APP_PORT, Load, Mesh, Proxy, Signal, WEB_AND_STORE, eventually};

const OLD_ROOT: &str = "Weft Old Root";
const NEW_ROOT: &str = "Weft New Root";

/// A self-signed P-256 root made by OpenSSL: (certificate, PKCS#8 key).
fn openssl_root(dir: &Path, stem: &str, cn: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join(format!("{stem}.crt")), dir.join(format!("{stem}.key")));
    let out = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "30"])
        .args(["-subj", &format!("/O=weft-test/CN={cn}")])
        .args(["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("running openssl (apt-get install openssl)");
    assert!(out.status.success(), "openssl req -x509: {}", String::from_utf8_lossy(&out.stderr));
    (cert, key)
}

/// Replaces `path` with `content` in one rename, so that the control plane
/// never reads half a file.
fn replace(path: &Path, content: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).expect("writing a CA file");
    std::fs::rename(&tmp, path).expect("replacing a CA file");
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// What a proxy's `/config` says of its identity: (issuer of its
/// certificate, number of trust anchors, renewals).
fn identity(proxy: &Proxy) -> (String, usize, u64) {
    let config = proxy.config_json();
    let id = &config["identity"];
    let issuer = id["issuer"].as_str().unwrap_or_default().to_owned();
    let anchors = id["trust_anchor_sha256"].as_array().map_or(0, Vec::len);
    (issuer, anchors, id["renewals"].as_u64().unwrap_or(0))
}

/// Waits until every proxy satisfies `check` on its identity.
fn wait_all(proxies: &[(&str, &Proxy)], within: Duration, what: &str, check: impl Fn(&(String, usize, u64)) -> bool) {
    eventually(within, what, || {
        for (name, proxy) in proxies {
            let id = identity(proxy);
            if !check(&id) {
                return Err(format!("{name}: issuer {:?}, {} anchors, {} renewals", id.0, id.1, id.2));
            }
        }
        Ok(())
    });
}

/// Requests per second of each generator (HTTP/1.1 and HTTP/2).
const RATE: u32 = 200;
/// How long the generators run: the rotation and the restart take about
/// half of it (checked at the end).
const LOAD_FOR: Duration = Duration::from_secs(45);

#[test]
fn the_root_ca_rolls_under_load_with_no_failed_request_and_no_restart() {
    let mesh = Mesh::new();
    let cp_pod = mesh.pod("cp");
    let dir = cp_pod.dir().join("roots");
    std::fs::create_dir_all(&dir).expect("creating the roots directory");
    let (old_crt, old_key) = openssl_root(&dir, "old", OLD_ROOT);
    let (new_crt, new_key) = openssl_root(&dir, "new", NEW_ROOT);
    let (issuer_crt, issuer_key) = (dir.join("issuer.crt"), dir.join("issuer.key"));
    let anchors = cp_pod.dir().join("trust-anchors.pem");
    replace(&issuer_crt, &read(&old_crt));
    replace(&issuer_key, &read(&old_key));
    replace(&anchors, &read(&old_crt));

    let cert_lifetime = ["--cert-lifetime", "10s"];
    let cp = cp_pod.run_control_with_issuer(WEB_AND_STORE, (&issuer_crt, &issuer_key), &anchors, &cert_lifetime);
    let b = mesh.pod("b");
    let _app = b.bench_app();
    let ports = BENCH_APP_PORT.to_string();
    let mut proxy_b = b.run_meshed_proxy(&cp, "b", Some(("b-0", "app=web", &ports)), &[]);
    let a = mesh.pod("a");
    let mut proxy_a = a.run_meshed_proxy(&cp, "a", None, &[]);
    let proxies = [("a", &proxy_a), ("b", &proxy_b)];
    wait_all(&proxies, Duration::from_secs(5), "both proxies hold an old-root certificate", |id| {
        id.0.contains(OLD_ROOT) && id.1 == 1
    });

    let url = "http://198.18.0.200/";
    let first = a.exec("curl", &["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", url]);
    assert_eq!(first.stdout, "200", "a first request to web: {first}");
    let timeout = Duration::from_secs(10);
    let mut loads = ["http1", "http2"].map(|w| Load::start(&a, w, "198.18.0.200:80", RATE, LOAD_FOR, timeout));

    // 2. Both roots trusted.
    replace(&anchors, &[read(&old_crt), read(&new_crt)].concat());
    wait_all(&proxies, Duration::from_secs(5), "every proxy trusts old + new", |id| id.1 == 2);

    // 3. The new root's issuer takes over; 10 s certificates are renewed
    // from it within one lifetime.
    replace(&issuer_key, &read(&new_key));
    replace(&issuer_crt, &read(&new_crt));
    wait_all(&proxies, Duration::from_secs(15), "every proxy renews onto the new root", |id| id.0.contains(NEW_ROOT));

    // 4. The old root retired.
    replace(&anchors, &read(&new_crt));
    wait_all(&proxies, Duration::from_secs(5), "every proxy trusts the new root alone", |id| id.1 == 1);

    // 5. A restarted control plane serves a new-root certificate; the
    // proxies' pinned file holds only the old root, so they get back only
    // by trusting the streamed anchors — renewals continue after it.
    let renewals_before: Vec<u64> = proxies.iter().map(|(_, p)| identity(p).2).collect();
    let weft_tests::ControlPlane { mut proc, services, policy_dir, ca, .. } = cp;
    proc.signal(Signal::SIGTERM);
    proc.wait_exit(Duration::from_secs(10));
    let mut args: Vec<&str> = vec!["--issuer-cert", issuer_crt.to_str().expect("UTF-8")];
    args.extend(["--issuer-key", issuer_key.to_str().expect("UTF-8")]);
    args.extend(["--trust-anchors", anchors.to_str().expect("UTF-8")]);
    args.extend(cert_lifetime);
    let cp = cp_pod.start_control(services, policy_dir, ca, &args);
    eventually(Duration::from_secs(20), "both proxies renew with the restarted control plane", || {
        for ((name, proxy), before) in proxies.iter().zip(&renewals_before) {
            let now = identity(proxy).2;
            if now <= *before {
                let log = proxy.log();
                let tail: Vec<&str> = log.lines().rev().take(12).collect();
                return Err(format!(
                    "{name}: {now} renewals, {before} before the restart; log ends:\n{}",
                    tail.join("\n")
                ));
            }
        }
        Ok(())
    });
    // The whole rotation and the restart happened under load; requests keep
    // flowing after it until the generators' end.
    for load in &mut loads {
        assert!(load.running(), "the rotation outlasted the load ({LOAD_FOR:?}): make LOAD_FOR longer");
    }
    let reports = loads.map(Load::finish);
    for r in &reports {
        eprintln!("rotation: {r}");
        let want = (f64::from(RATE) * LOAD_FOR.as_secs_f64() * 0.9) as u64;
        assert!(r.sent >= want, "{} sent only {} requests, expected at least {want}: {r}", r.workload, r.sent);
        assert_eq!((r.errors, r.timeouts, r.ok), (0, 0, r.sent), "requests failed during the rotation: {r}");
        assert!(r.stale_retries <= r.sent / 500, "too many requests resent on a new connection: {r}");
    }
    let m = proxy_a.metrics();
    let (retries, exhausted) = (m.sum("weft_retries_total", &[]), m.sum("weft_retry_budget_exhausted_total", &[]));
    eprintln!("rotation: {} requests, {retries} retries", reports.iter().map(|r| r.sent).sum::<u64>());
    assert_eq!(exhausted, 0.0, "the retry budget refused retries during the rotation");
    // Renewing certificates changes nothing on established connections, and
    // new ones verify against the anchors they hold: no request needs a retry.
    assert_eq!(retries, 0.0, "retries during the rotation");
    // The same processes throughout: nothing was restarted.
    for (name, proxy) in [("a", &mut proxy_a), ("b", &mut proxy_b)] {
        assert!(proxy.try_status().is_none(), "proxy {name} exited during the rotation:\n{}", proxy.log());
    }
    let refused = cp.metrics().sum("weft_control_certify_refused_total", &[]);
    assert_eq!(refused, 0.0, "the restarted control plane refused renewals");
}
