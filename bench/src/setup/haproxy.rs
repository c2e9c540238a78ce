//! The peer proxy: a pair of Debian's HAProxy with mutual TLS 1.3, as a
//! team would deploy it by hand instead of a mesh.
//!
//! ```text
//!  pod A                                           pod B
//!  load ─► 127.0.0.1:8080 (h1) ─┐                  ┌─► :8443 ─► 127.0.0.1:8080 app (h1)
//!          127.0.0.1:8081 (h2) ─┼─ TLS 1.3, ALPN, ─┼─► :8444 ─► 127.0.0.1:8080 app (h2c)
//!          127.0.0.1:7000 (tcp)─┘  client certs    └─► :7443 ─► 127.0.0.1:7000 app (echo)
//! ```
//!
//! A throwaway CA and two leaf certificates (ECDSA P-256) are made with the
//! `openssl` CLI at start-up. Both sides run one thread (`nbthread 1`),
//! like weft-proxy's default of one worker, and HTTP connections to the
//! upstream are kept alive and shared (`http-reuse always`), idle for up to
//! 90 s like weft's pool. Start-up verifies the mTLS claim: pod B refuses a
//! client without a certificate and a client limited to TLS 1.2.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;
use weft_tests::{Pod, Proc, tool};

use super::{host_ok, wait_listening};
use crate::workload::{APP_ECHO_PORT, APP_HTTP_PORT, Workload};

/// The name in pod B's certificate, which pod A verifies.
pub const SERVER_NAME: &str = "haproxy-b";

/// TLS listeners in pod B.
const TLS_H1: u16 = 8443;
const TLS_H2: u16 = 8444;
const TLS_TCP: u16 = 7443;
/// Plain frontend for HTTP/2 prior knowledge in pod A (HTTP/1.1 and TCP
/// reuse the app's port numbers).
const FRONT_H2: u16 = 8081;

/// The pod-A frontend port for `workload`.
pub fn frontend_port(workload: Workload) -> u16 {
    match workload {
        Workload::Http1 | Workload::Conn => APP_HTTP_PORT,
        Workload::Http2 => FRONT_H2,
        Workload::Tcp => APP_ECHO_PORT,
    }
}

/// Paths of the generated PEM files.
#[derive(Debug, Clone)]
pub struct Certs {
    pub ca: PathBuf,
    /// Pod A's client certificate and key.
    pub client: PathBuf,
    /// Pod B's server certificate and key.
    pub server: PathBuf,
}

/// The running pair.
pub struct Started {
    pub client: Proc,
    pub server: Proc,
    pub checks: Vec<String>,
}

pub fn start(client: &Pod, server: &Pod, dir: &Path) -> anyhow::Result<Started> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let certs = make_certs(dir)?;
    let server_cfg = dir.join("server.cfg");
    let client_cfg = dir.join("client.cfg");
    std::fs::write(&server_cfg, server_config(&certs))?;
    std::fs::write(&client_cfg, client_config(&certs, &server.ip().to_string()))?;
    let haproxy = tool("haproxy");
    for cfg in [&server_cfg, &client_cfg] {
        host_ok(Command::new(&haproxy).arg("-c").arg("-q").arg("-f").arg(cfg))
            .with_context(|| format!("checking {}", cfg.display()))?;
    }
    let server_cfg = server_cfg.to_string_lossy().into_owned();
    let client_cfg = client_cfg.to_string_lossy().into_owned();
    // -db: stay in the foreground, one process, so its PID is the proxy's.
    let mut server_proc = server.spawn("haproxy", &haproxy, &["-db", "-f", &server_cfg]);
    wait_listening(server, &mut server_proc, &[TLS_H1, TLS_H2, TLS_TCP])?;
    let mut client_proc = client.spawn("haproxy", &haproxy, &["-db", "-f", &client_cfg]);
    wait_listening(client, &mut client_proc, &[APP_HTTP_PORT, FRONT_H2, APP_ECHO_PORT])?;
    let checks = verify_mtls(client, server, &certs)?;
    Ok(Started { client: client_proc, server: server_proc, checks })
}

/// A CA and two leaves, each leaf good for both TLS client and server auth.
pub fn make_certs(dir: &Path) -> anyhow::Result<Certs> {
    let openssl = tool("openssl");
    let p = |name: &str| dir.join(name);
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    host_ok(
        Command::new(&openssl)
            .args(["req", "-x509", "-new"])
            .args(ec)
            .arg("-keyout")
            .arg(p("ca.key"))
            .arg("-out")
            .arg(p("ca.pem"))
            .args(["-days", "2", "-subj", "/CN=weft-bench throwaway CA"])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]),
    )?;
    for (leaf, cn, serial) in [("client", "haproxy-a", "2"), ("server", SERVER_NAME, "3")] {
        host_ok(
            Command::new(&openssl)
                .args(["req", "-new"])
                .args(ec)
                .arg("-keyout")
                .arg(p(&format!("{leaf}.key")))
                .arg("-out")
                .arg(p(&format!("{leaf}.csr")))
                .args(["-subj", &format!("/CN={cn}")]),
        )?;
        let ext = p(&format!("{leaf}.ext"));
        std::fs::write(
            &ext,
            format!(
                "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
                 extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=DNS:{cn}\n"
            ),
        )?;
        host_ok(
            Command::new(&openssl)
                .args(["x509", "-req", "-days", "2", "-set_serial", serial])
                .arg("-in")
                .arg(p(&format!("{leaf}.csr")))
                .arg("-CA")
                .arg(p("ca.pem"))
                .arg("-CAkey")
                .arg(p("ca.key"))
                .arg("-extfile")
                .arg(&ext)
                .arg("-out")
                .arg(p(&format!("{leaf}.crt"))),
        )?;
        // HAProxy's `crt` takes the certificate and the key in one file.
        let mut pem = std::fs::read(p(&format!("{leaf}.crt")))?;
        pem.extend(std::fs::read(p(&format!("{leaf}.key")))?);
        std::fs::write(p(&format!("{leaf}.pem")), pem)?;
    }
    Ok(Certs { ca: p("ca.pem"), client: p("client.pem"), server: p("server.pem") })
}

const GLOBAL: &str = "\
global
    # One thread, like weft-proxy's default of one worker.
    nbthread 1
    # No maxconn: HAProxy derives it from RLIMIT_NOFILE, which it cannot
    # raise where the bench may not (no CAP_SYS_RESOURCE).
    ssl-default-bind-options ssl-min-ver TLSv1.3
    ssl-default-server-options ssl-min-ver TLSv1.3

defaults http
    mode http
    timeout connect 2s
    timeout client 1h
    timeout server 1h
    timeout http-request 10s
    timeout http-keep-alive 1h
    # Keep-alive to the upstream, shared by all clients (weft pools too).
    http-reuse always
    default-server pool-purge-delay 90s
";

const TCP_DEFAULTS: &str = "
defaults tcp
    mode tcp
    timeout connect 2s
    timeout client 1h
    timeout server 1h
";

/// Pod B: TLS listeners requiring a client certificate from the CA, plain
/// to the app on loopback.
pub fn server_config(certs: &Certs) -> String {
    let tls = format!("ssl crt {} ca-file {} verify required", certs.server.display(), certs.ca.display());
    format!(
        "{GLOBAL}
frontend in_h1
    bind :{TLS_H1} {tls} alpn http/1.1
    default_backend app_h1

frontend in_h2
    bind :{TLS_H2} {tls} alpn h2
    default_backend app_h2

backend app_h1
    server app 127.0.0.1:{APP_HTTP_PORT}

backend app_h2
    server app 127.0.0.1:{APP_HTTP_PORT} proto h2
{TCP_DEFAULTS}
frontend in_tcp
    bind :{TLS_TCP} {tls}
    default_backend app_tcp

backend app_tcp
    server app 127.0.0.1:{APP_ECHO_PORT}
"
    )
}

/// Pod A: plain listeners on loopback, TLS with a client certificate to pod
/// B, verifying its certificate and name.
pub fn client_config(certs: &Certs, server_ip: &str) -> String {
    let tls = format!(
        "ssl crt {} ca-file {} verify required verifyhost {SERVER_NAME} sni str({SERVER_NAME})",
        certs.client.display(),
        certs.ca.display()
    );
    format!(
        "{GLOBAL}
frontend h1
    bind 127.0.0.1:{APP_HTTP_PORT}
    default_backend up_h1

frontend h2
    bind 127.0.0.1:{FRONT_H2} proto h2
    default_backend up_h2

backend up_h1
    server b {server_ip}:{TLS_H1} {tls} alpn http/1.1

backend up_h2
    server b {server_ip}:{TLS_H2} {tls} alpn h2
{TCP_DEFAULTS}
frontend tcp
    bind 127.0.0.1:{APP_ECHO_PORT}
    default_backend up_tcp

backend up_tcp
    server b {server_ip}:{TLS_TCP} {tls}
"
    )
}

/// Checks from pod A with curl that pod B's TLS listener wants TLS 1.3 and
/// a client certificate, and serves with one. Returns what was verified.
fn verify_mtls(client: &Pod, server: &Pod, certs: &Certs) -> anyhow::Result<Vec<String>> {
    let url = format!("https://{SERVER_NAME}:{TLS_H1}/");
    let resolve = format!("{SERVER_NAME}:{TLS_H1}:{}", server.ip());
    let ca = certs.ca.to_string_lossy().into_owned();
    let cert = certs.client.to_string_lossy().into_owned();
    let base =
        ["-sS", "--max-time", "5", "-o", "/dev/null", "-w", "%{http_code}", "--resolve", &resolve, "--cacert", &ca];
    let curl = |extra: &[&str]| {
        let mut args: Vec<&str> = base.to_vec();
        args.extend_from_slice(extra);
        args.push(&url);
        client.exec("curl", &args)
    };
    let mut checks = Vec::new();
    let served = curl(&["--cert", &cert]);
    anyhow::ensure!(
        served.status.success() && served.stdout == "200",
        "HAProxy mTLS: a client with a certificate was not served:\n{served}"
    );
    checks.push("a client with a CA-signed certificate is served over TLS (HTTP 200)".to_owned());
    let no_cert = curl(&[]);
    anyhow::ensure!(!no_cert.status.success(), "HAProxy mTLS: a client without a certificate was served:\n{no_cert}");
    checks.push(format!("a client without a certificate is refused ({})", curl_exit(&no_cert)));
    let tls12 = curl(&["--cert", &cert, "--tls-max", "1.2"]);
    anyhow::ensure!(!tls12.status.success(), "HAProxy mTLS: a TLS 1.2 client was served:\n{tls12}");
    checks.push(format!("a client limited to TLS 1.2 is refused ({})", curl_exit(&tls12)));
    Ok(checks)
}

fn curl_exit(run: &weft_tests::Run) -> String {
    match run.code() {
        Some(code) => format!("curl exit {code}"),
        None => "curl killed by a signal".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certs() -> Certs {
        Certs { ca: "/c/ca.pem".into(), client: "/c/client.pem".into(), server: "/c/server.pem".into() }
    }

    #[test]
    fn configs_require_tls13_and_client_certificates() {
        let server = server_config(&certs());
        assert_eq!(server.matches("verify required").count(), 3, "{server}");
        assert!(server.contains("ssl-min-ver TLSv1.3"));
        assert!(server.contains("server app 127.0.0.1:8080 proto h2"));

        let client = client_config(&certs(), "198.18.0.16");
        assert_eq!(client.matches("crt /c/client.pem").count(), 3, "{client}");
        assert!(client.contains("server b 198.18.0.16:8444 ") && client.contains("alpn h2"));
        assert!(client.contains("verifyhost haproxy-b") && client.contains("http-reuse always"));
        assert!(client.contains("bind 127.0.0.1:8081 proto h2"));
    }

    #[test]
    fn frontends_by_workload() {
        assert_eq!(frontend_port(Workload::Http1), 8080);
        assert_eq!(frontend_port(Workload::Conn), 8080);
        assert_eq!(frontend_port(Workload::Http2), 8081);
        assert_eq!(frontend_port(Workload::Tcp), 7000);
    }
}
