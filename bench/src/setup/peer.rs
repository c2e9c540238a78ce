//! What the two peer-proxy pairs (`haproxy-mtls`, `nginx-mtls`) share: the
//! throwaway CA and leaf certificates, the generator-facing ports in pod A,
//! and the start-up checks that pod B really asks for TLS 1.3 and a client
//! certificate.
//!
//! ```text
//!  pod A (client side)                     pod B (server side)
//!  127.0.0.1:8080  HTTP/1.1   ─┐          ┌─ TLS 1.3 + client certificate ─► app 127.0.0.1:8080
//!  127.0.0.1:8081  HTTP/2 (h2c)┼─ mTLS ───┤
//!  127.0.0.1:7000  opaque TCP ─┘          └─ TLS 1.3 + client certificate ─► app 127.0.0.1:7000
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;

use weft_tests::{Pod, Proc, tool};

use super::host_ok;
use crate::workload::{APP_ECHO_PORT, APP_HTTP_PORT, Workload};

/// Plain frontend for HTTP/2 prior knowledge in pod A (HTTP/1.1 and TCP
/// reuse the app's port numbers).
pub const FRONT_H2: u16 = 8081;

/// The pod-A frontend port for `workload`, the same for both peer pairs.
pub fn frontend_port(workload: Workload) -> u16 {
    match workload {
        Workload::Http1 | Workload::Conn => APP_HTTP_PORT,
        Workload::Http2 => FRONT_H2,
        Workload::Tcp => APP_ECHO_PORT,
    }
}

/// A running pair: pod A's proxy, pod B's, and what start-up verified.
pub struct Started {
    pub client: Proc,
    pub server: Proc,
    pub checks: Vec<String>,
}

/// A leaf certificate and its key, as separate PEM files and as one file
/// holding both (HAProxy's `crt` wants them together, nginx apart).
#[derive(Debug, Clone)]
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Certificate, then key.
    pub pem: PathBuf,
}

/// Paths of the generated PEM files.
#[derive(Debug, Clone)]
pub struct Certs {
    pub ca: PathBuf,
    /// Pod A's client certificate.
    pub client: Leaf,
    /// Pod B's server certificate.
    pub server: Leaf,
}

impl Certs {
    /// The paths `make_certs(dir, …)` writes, for rendering configurations
    /// without making them (unit tests).
    pub fn paths(dir: &Path) -> Certs {
        let leaf = |name: &str| Leaf {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
            pem: dir.join(format!("{name}.pem")),
        };
        Certs { ca: dir.join("ca.pem"), client: leaf("client"), server: leaf("server") }
    }
}

/// A throwaway CA and two leaves (ECDSA P-256) made with the `openssl` CLI,
/// each leaf good for both TLS client and server auth, named by its CN and
/// a DNS SAN: `client_name` for pod A, `server_name` for pod B (which pod A
/// verifies).
pub fn make_certs(dir: &Path, client_name: &str, server_name: &str) -> anyhow::Result<Certs> {
    let openssl = tool("openssl");
    let certs = Certs::paths(dir);
    let p = |name: &str| dir.join(name);
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    host_ok(
        Command::new(&openssl)
            .args(["req", "-x509", "-new"])
            .args(ec)
            .arg("-keyout")
            .arg(p("ca.key"))
            .arg("-out")
            .arg(&certs.ca)
            .args(["-days", "2", "-subj", "/CN=weft-bench throwaway CA"])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]),
    )?;
    for (leaf, cn, serial) in [(&certs.client, client_name, "2"), (&certs.server, server_name, "3")] {
        let csr = leaf.cert.with_extension("csr");
        let ext = leaf.cert.with_extension("ext");
        host_ok(
            Command::new(&openssl)
                .args(["req", "-new"])
                .args(ec)
                .arg("-keyout")
                .arg(&leaf.key)
                .arg("-out")
                .arg(&csr)
                .args(["-subj", &format!("/CN={cn}")]),
        )?;
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
                .arg(&csr)
                .arg("-CA")
                .arg(&certs.ca)
                .arg("-CAkey")
                .arg(p("ca.key"))
                .arg("-extfile")
                .arg(&ext)
                .arg("-out")
                .arg(&leaf.cert),
        )?;
        let mut pem = std::fs::read(&leaf.cert)?;
        pem.extend(std::fs::read(&leaf.key)?);
        std::fs::write(&leaf.pem, pem)?;
    }
    Ok(certs)
}

/// What a client without a certificate got from pod B's TLS listener.
#[derive(Debug, PartialEq, Eq)]
enum NoCert {
    /// The handshake or the connection failed (curl's exit code).
    Failed(Option<i32>),
    /// The proxy finished the handshake and answered the request itself
    /// with 400 and nginx's "No required SSL certificate was sent", never
    /// forwarding it (nginx checks the certificate after the handshake).
    Answered400,
    /// Anything else: served.
    Served(String),
}

/// The HTTP status and body of `curl -w '\n%{http_code}'` output.
fn status_and_body(stdout: &str) -> (&str, &str) {
    match stdout.rsplit_once('\n') {
        Some((body, code)) => (code.trim(), body),
        None => (stdout.trim(), ""),
    }
}

fn no_cert_outcome(run: &weft_tests::Run) -> NoCert {
    if !run.status.success() {
        return NoCert::Failed(run.code());
    }
    match status_and_body(&run.stdout) {
        ("400", body) if body.contains("No required SSL certificate was sent") => NoCert::Answered400,
        (code, _) => NoCert::Served(code.to_owned()),
    }
}

/// Checks from pod A with curl that pod B's TLS listener on `port` wants
/// TLS 1.3 and a client certificate, and serves with one. `proxy` names the
/// peer in errors. Returns what was verified, for the report.
pub fn verify_mtls(
    client: &Pod,
    server: &Pod,
    certs: &Certs,
    server_name: &str,
    port: u16,
    proxy: &str,
) -> anyhow::Result<Vec<String>> {
    let url = format!("https://{server_name}:{port}/");
    let resolve = format!("{server_name}:{port}:{}", server.ip());
    let ca = certs.ca.to_string_lossy().into_owned();
    let (cert, key) = (certs.client.cert.to_string_lossy().into_owned(), certs.client.key.to_string_lossy());
    let base = ["-sS", "--max-time", "5", "-w", "\n%{http_code}", "--resolve", &resolve, "--cacert", &ca];
    let curl = |extra: &[&str]| {
        let mut args: Vec<&str> = base.to_vec();
        args.extend_from_slice(extra);
        args.push(&url);
        client.exec("curl", &args)
    };
    let mut checks = Vec::new();
    let served = curl(&["--cert", &cert, "--key", &key]);
    anyhow::ensure!(
        served.status.success() && status_and_body(&served.stdout).0 == "200",
        "{proxy} mTLS: a client with a certificate was not served:\n{served}"
    );
    checks.push("a client with a CA-signed certificate is served over TLS (HTTP 200)".to_owned());
    let no_cert = curl(&[]);
    let refused = match no_cert_outcome(&no_cert) {
        NoCert::Failed(code) => curl_exit(code),
        NoCert::Answered400 => "answered 400 \"No required SSL certificate was sent\" by the proxy itself, \
                                never forwarded"
            .to_owned(),
        NoCert::Served(code) => {
            anyhow::bail!("{proxy} mTLS: a client without a certificate was served (HTTP {code}):\n{no_cert}")
        }
    };
    checks.push(format!("a client without a certificate is refused ({refused})"));
    let tls12 = curl(&["--cert", &cert, "--key", &key, "--tls-max", "1.2"]);
    anyhow::ensure!(!tls12.status.success(), "{proxy} mTLS: a TLS 1.2 client was served:\n{tls12}");
    checks.push(format!("a client limited to TLS 1.2 is refused ({})", curl_exit(tls12.code())));
    Ok(checks)
}

fn curl_exit(code: Option<i32>) -> String {
    match code {
        Some(code) => format!("curl exit {code}"),
        None => "curl killed by a signal".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt as _;

    use super::*;

    #[test]
    fn frontends_by_workload() {
        assert_eq!(frontend_port(Workload::Http1), 8080);
        assert_eq!(frontend_port(Workload::Conn), 8080);
        assert_eq!(frontend_port(Workload::Http2), 8081);
        assert_eq!(frontend_port(Workload::Tcp), 7000);
    }

    #[test]
    fn a_client_without_a_certificate_counts_as_refused_only_when_not_served() {
        let run = |code: i32, stdout: &str| weft_tests::Run {
            cmd: "curl".into(),
            status: std::process::ExitStatus::from_raw(code << 8),
            stdout: stdout.into(),
            stderr: String::new(),
            elapsed: std::time::Duration::ZERO,
        };
        let nginx_400 = "<html><center>No required SSL certificate was sent</center></html>\n400";
        let table: &[(i32, &str, NoCert)] = &[
            // HAProxy: the handshake fails (curl: SSL read error).
            (56, "\n000", NoCert::Failed(Some(56))),
            // nginx: its own 400, the request not forwarded.
            (0, nginx_400, NoCert::Answered400),
            // A 400 from somewhere else (the app) is being served.
            (0, "bad request\n400", NoCert::Served("400".into())),
            (0, "hello\n200", NoCert::Served("200".into())),
        ];
        for (code, stdout, want) in table {
            assert_eq!(&no_cert_outcome(&run(*code, stdout)), want, "{stdout:?}");
        }
    }

    #[test]
    fn cert_paths_are_in_the_directory() {
        let c = Certs::paths(Path::new("/c"));
        assert_eq!(c.ca, Path::new("/c/ca.pem"));
        assert_eq!(
            (c.client.cert.as_path(), c.client.key.as_path()),
            (Path::new("/c/client.crt"), Path::new("/c/client.key"))
        );
        assert_eq!(c.server.pem, Path::new("/c/server.pem"));
    }
}
