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
//! `openssl` CLI at start-up ([`super::peer`]). Both sides run one thread (`nbthread 1`),
//! like weft-proxy's default of one worker, and HTTP connections to the
//! upstream are kept alive and shared (`http-reuse always`), idle for up to
//! 90 s like weft's pool. Start-up verifies the mTLS claim: pod B refuses a
//! client without a certificate and a client limited to TLS 1.2.

use std::path::Path;
use std::process::Command;

use anyhow::Context as _;
use weft_tests::{Pod, tool};

use super::peer::{Certs, FRONT_H2, Started, make_certs, verify_mtls};
use super::{host_ok, wait_listening};
use crate::workload::{APP_ECHO_PORT, APP_HTTP_PORT};

/// The name in pod B's certificate, which pod A verifies.
pub const SERVER_NAME: &str = "haproxy-b";
/// The name in pod A's certificate.
const CLIENT_NAME: &str = "haproxy-a";

/// TLS listeners in pod B.
const TLS_H1: u16 = 8443;
const TLS_H2: u16 = 8444;
const TLS_TCP: u16 = 7443;

pub fn start(client: &Pod, server: &Pod, dir: &Path) -> anyhow::Result<Started> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let certs = make_certs(dir, CLIENT_NAME, SERVER_NAME)?;
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
    let checks = verify_mtls(client, server, &certs, SERVER_NAME, TLS_H1, "HAProxy")?;
    Ok(Started { client: client_proc, server: server_proc, checks })
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
    let tls = format!("ssl crt {} ca-file {} verify required", certs.server.pem.display(), certs.ca.display());
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
        certs.client.pem.display(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn certs() -> Certs {
        Certs::paths(std::path::Path::new("/c"))
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
}
