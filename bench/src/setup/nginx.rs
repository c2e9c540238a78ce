//! The second peer proxy: a pair of Debian's nginx with mutual TLS 1.3,
//! configured as carefully as the HAProxy pair ([`super::haproxy`]).
//!
//! ```text
//!  pod A                                                 pod B
//!  load ─► 127.0.0.1:8080 (h1)  ─┐ HTTP/1.1 kept alive, ┌─► :8443 ─► upstream keep-alive ─► 127.0.0.1:8080 app (h1)
//!          127.0.0.1:8081 (h2c) ─┘ TLS 1.3, client cert ┘
//!          127.0.0.1:7000 (tcp) ─── stream, TLS 1.3, client cert ──► :7443 ─► 127.0.0.1:7000 app (echo)
//! ```
//!
//! - **One process per side**: `master_process off; daemon off;`, so the
//!   PID the harness starts and watches is the one that accepts, proxies
//!   and holds every connection and buffer, and its `/proc` CPU and RSS are
//!   the whole cost. With a master and one worker the worker runs the same
//!   event loop, but the master's own RSS (its copy of the parsed
//!   configuration, the certificates, the connection table it allocated
//!   before forking) would go uncounted if only the worker were watched,
//!   and two processes would be summed unlike HAProxy's `-db` and weft's
//!   single process. nginx's documentation calls this mode one for
//!   development; it changes supervision and reloads, not the data path.
//! - **TLS 1.3 only, client certificates required** from the harness's
//!   throwaway CA ([`super::peer::make_certs`]); pod A verifies pod B's
//!   name. nginx checks an HTTP client's certificate after the handshake and
//!   answers a missing one with its own 400 without forwarding (its stream
//!   module closes the connection); the start-up check accepts that as
//!   refused only with nginx's own message.
//! - **Kept-alive upstream connections on both legs** (`upstream` blocks with
//!   `keepalive 64`, up to 100,000 requests and 90 s idle each, like weft's
//!   pool; HTTP/1.1 with the `Connection` header cleared), and TLS sessions
//!   resumed (`proxy_ssl_session_reuse`). Downstream connections stay open
//!   an hour and 100,000 requests, like HAProxy's `timeout http-keep-alive`.
//! - **HTTP/2 on the front only**: pod A takes HTTP/2 with prior knowledge
//!   on 8081, like HAProxy's frontend, but nginx's proxy module speaks
//!   HTTP/1.x to an upstream (only `grpc_pass` speaks HTTP/2 there, and it is
//!   meant for gRPC), so between the proxies and to the app the HTTP/2
//!   workload's requests travel as HTTP/1.1 on the same kept-alive pools.
//!   HAProxy carries HTTP/2 end to end (ALPN h2, then h2c to the app).
//! - **Opaque TCP** through the stream module (dynamic in Debian's build,
//!   loaded with `load_module`; package `libnginx-mod-stream`).
//! - **Nothing outside the run's directory**: `-p` prefix, pid, lock and
//!   every temp path there; no access log; the error log (level `warn`) on
//!   stderr, which the harness keeps with the other processes' logs.
//! - `worker_connections` is sized to the run: two per idle connection of
//!   the largest idle step, plus 1,024 for the other workloads (a 64-connection
//!   pool, the connection-per-request workload). nginx allocates and touches
//!   its whole connection table at start-up, about 0.4 KB per slot, so the
//!   idle RSS of a pair sized for 10,000 idle connections (`--full`) includes
//!   about 8 MB of table, as it would in a deployment sized for that.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;
use weft_tests::{Pod, tool};

use super::peer::{Certs, FRONT_H2, Started, make_certs, verify_mtls};
use super::{host_ok, wait_listening};
use crate::workload::{APP_ECHO_PORT, APP_HTTP_PORT};

/// The name in pod B's certificate, which pod A verifies.
const SERVER_NAME: &str = "nginx-b";
/// The name in pod A's certificate.
const CLIENT_NAME: &str = "nginx-a";

/// TLS listeners in pod B: HTTP (both HTTP workloads) and the stream.
const TLS_HTTP: u16 = 8443;
const TLS_TCP: u16 = 7443;

/// Connection slots kept beside the idle connections.
const SLOTS_RESERVE: usize = 1024;
/// Kept-alive upstream connections per pool.
const KEEPALIVE: usize = 64;

/// `worker_connections` for a run that holds `held` idle connections
/// through the pair at once: each takes a downstream and an upstream slot.
pub fn worker_connections(held: usize) -> usize {
    2 * held + SLOTS_RESERVE
}

/// Where the stream module is, from `nginx -V`'s output: `Ok(None)` when it
/// is built in, the `.so` to load when it is dynamic, an error (with the
/// fix) when this nginx has none.
pub fn stream_module(nginx_v: &str) -> Result<Option<PathBuf>, String> {
    let args: Vec<&str> = nginx_v
        .lines()
        .find_map(|l| l.strip_prefix("configure arguments:"))
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    if args.contains(&"--with-stream") {
        return Ok(None);
    }
    if args.contains(&"--with-stream=dynamic") {
        let dir = args.iter().find_map(|a| a.strip_prefix("--modules-path=")).unwrap_or("/usr/lib/nginx/modules");
        return Ok(Some(Path::new(dir).join("ngx_stream_module.so")));
    }
    Err("this nginx was built without the stream module (opaque TCP): install Debian's nginx".to_owned())
}

/// [`stream_module`] of the installed nginx, checked to exist.
pub fn installed_stream_module() -> anyhow::Result<Option<PathBuf>> {
    let out = Command::new(tool("nginx")).arg("-V").output().context("running nginx -V")?;
    // nginx -V prints to stderr.
    let text = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    let module = stream_module(&text).map_err(anyhow::Error::msg)?;
    if let Some(path) = &module {
        anyhow::ensure!(
            path.is_file(),
            "nginx's stream module {} is missing: apt-get install -y libnginx-mod-stream",
            path.display()
        );
    }
    Ok(module)
}

/// Starts pod B's nginx, then pod A's, and checks the mTLS claim. `held`:
/// the idle connections the run will hold through the pair at once.
pub fn start(client: &Pod, server: &Pod, dir: &Path, held: usize) -> anyhow::Result<Started> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let certs = make_certs(dir, CLIENT_NAME, SERVER_NAME)?;
    let module = installed_stream_module()?;
    let main = |side: &'static str| Main {
        dir,
        side,
        stream_module: module.as_deref(),
        worker_connections: worker_connections(held),
    };
    for side in ["server", "client"] {
        // nginx makes each temp path's last component only.
        let tmp = dir.join(format!("{side}-tmp"));
        std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    }
    let server_cfg = dir.join("server.conf");
    let client_cfg = dir.join("client.conf");
    std::fs::write(&server_cfg, server_config(&main("server"), &certs))?;
    std::fs::write(&client_cfg, client_config(&main("client"), &certs, &server.ip().to_string()))?;
    let nginx = tool("nginx");
    let prefix = format!("{}/", dir.display());
    for cfg in [&server_cfg, &client_cfg] {
        host_ok(Command::new(&nginx).args(["-q", "-t", "-p", &prefix, "-e", "stderr", "-c"]).arg(cfg))
            .with_context(|| format!("checking {}", cfg.display()))?;
    }
    let run = |pod: &Pod, cfg: &Path| {
        let cfg = cfg.to_string_lossy().into_owned();
        pod.spawn("nginx", &nginx, &["-p", &prefix, "-e", "stderr", "-c", &cfg])
    };
    let mut server_proc = run(server, &server_cfg);
    wait_listening(server, &mut server_proc, &[TLS_HTTP, TLS_TCP])?;
    let mut client_proc = run(client, &client_cfg);
    wait_listening(client, &mut client_proc, &[APP_HTTP_PORT, FRONT_H2, APP_ECHO_PORT])?;
    let checks = verify_mtls(client, server, &certs, SERVER_NAME, TLS_HTTP, "nginx")?;
    Ok(Started { client: client_proc, server: server_proc, checks })
}

/// What both sides' main context takes.
pub struct Main<'a> {
    /// The run's directory for this pair (pid, lock, temp files).
    pub dir: &'a Path,
    /// `client` or `server`: names its files.
    pub side: &'a str,
    pub stream_module: Option<&'a Path>,
    pub worker_connections: usize,
}

impl Main<'_> {
    /// The main context, the `events` block, and the `http` block's
    /// settings common to both sides (followed by `body`) and the `stream`
    /// block (holding `stream`).
    fn render(&self, http: &str, stream: &str) -> String {
        let (dir, side) = (self.dir.display(), self.side);
        let load = self.stream_module.map(|m| format!("load_module {};\n", m.display())).unwrap_or_default();
        let tmp = |what: &str| format!("{dir}/{side}-tmp/{what}");
        format!(
            "# weft-bench nginx-mtls, pod {pod} ({side} side)
{load}# One process in the foreground: the PID the harness watches is the proxy.
daemon off;
master_process off;
worker_processes 1;
pid {dir}/{side}.pid;
lock_file {dir}/{side}.lock;
error_log stderr warn;

events {{
    worker_connections {wc};
}}

http {{
    access_log off;
    client_body_temp_path {body};
    proxy_temp_path {proxy};
    fastcgi_temp_path {fastcgi};
    uwsgi_temp_path {uwsgi};
    scgi_temp_path {scgi};
    # Downstream connections stay as long as HAProxy's (timeout http-keep-alive 1h).
    keepalive_timeout 1h;
    keepalive_requests 100000;
{http}}}

stream {{
    access_log off;
{stream}}}
",
            pod = if side == "client" { "A" } else { "B" },
            wc = self.worker_connections,
            body = tmp("body"),
            proxy = tmp("proxy"),
            fastcgi = tmp("fastcgi"),
            uwsgi = tmp("uwsgi"),
            scgi = tmp("scgi"),
        )
    }
}

/// An `upstream` block whose connections are kept alive (like weft's pool:
/// idle up to 90 s).
fn upstream(name: &str, server: &str) -> String {
    format!(
        "    upstream {name} {{
        server {server};
        keepalive {KEEPALIVE};
        keepalive_requests 100000;
        keepalive_timeout 90s;
    }}
"
    )
}

/// HTTP/1.1 to a kept-alive upstream (nginx's default is HTTP/1.0 and
/// `Connection: close`).
const PROXY_KEEPALIVE: &str = "            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Host $host;
            proxy_connect_timeout 2s;
";

/// A TLS server requiring a client certificate from the CA (`http` and
/// `stream` take the same directives).
fn tls_server(certs: &Certs, indent: &str) -> String {
    [
        format!("ssl_certificate {};", certs.server.cert.display()),
        format!("ssl_certificate_key {};", certs.server.key.display()),
        "ssl_protocols TLSv1.3;".to_owned(),
        format!("ssl_client_certificate {};", certs.ca.display()),
        "ssl_verify_client on;".to_owned(),
    ]
    .iter()
    .map(|l| format!("{indent}{l}\n"))
    .collect()
}

/// TLS to pod B with pod A's certificate, verifying B's chain and name, the
/// session resumed on new connections (`http` and `stream` alike).
fn tls_client(certs: &Certs, indent: &str) -> String {
    [
        "proxy_ssl_protocols TLSv1.3;".to_owned(),
        format!("proxy_ssl_certificate {};", certs.client.cert.display()),
        format!("proxy_ssl_certificate_key {};", certs.client.key.display()),
        format!("proxy_ssl_trusted_certificate {};", certs.ca.display()),
        "proxy_ssl_verify on;".to_owned(),
        format!("proxy_ssl_name {SERVER_NAME};"),
        "proxy_ssl_server_name on;".to_owned(),
        "proxy_ssl_session_reuse on;".to_owned(),
    ]
    .iter()
    .map(|l| format!("{indent}{l}\n"))
    .collect()
}

/// Pod B: TLS listeners requiring a client certificate, plain to the app on
/// loopback over kept-alive connections.
pub fn server_config(main: &Main<'_>, certs: &Certs) -> String {
    let http = format!(
        "{upstream}
    server {{
        listen {TLS_HTTP} ssl;
{tls}        location / {{
            proxy_pass http://app;
{PROXY_KEEPALIVE}        }}
    }}
",
        upstream = upstream("app", &format!("127.0.0.1:{APP_HTTP_PORT}")),
        tls = tls_server(certs, "        "),
    );
    let stream = format!(
        "    server {{
        listen {TLS_TCP} ssl;
{tls}        proxy_pass 127.0.0.1:{APP_ECHO_PORT};
        proxy_connect_timeout 2s;
        proxy_timeout 1h;
    }}
",
        tls = tls_server(certs, "        "),
    );
    main.render(&http, &stream)
}

/// Pod A: plain listeners on loopback (HTTP/1.1, HTTP/2 prior knowledge,
/// TCP), mutual TLS to pod B over kept-alive connections.
pub fn client_config(main: &Main<'_>, certs: &Certs, server_ip: &str) -> String {
    let http = format!(
        "{upstream}
    server {{
        listen 127.0.0.1:{APP_HTTP_PORT};
        listen 127.0.0.1:{FRONT_H2} http2;
        location / {{
            proxy_pass https://b;
{PROXY_KEEPALIVE}{tls}        }}
    }}
",
        upstream = upstream("b", &format!("{server_ip}:{TLS_HTTP}")),
        tls = tls_client(certs, "            "),
    );
    let stream = format!(
        "    server {{
        listen 127.0.0.1:{APP_ECHO_PORT};
        proxy_pass {server_ip}:{TLS_TCP};
        proxy_connect_timeout 2s;
        proxy_timeout 1h;
        proxy_ssl on;
{tls}    }}
",
        tls = tls_client(certs, "        "),
    );
    main.render(&http, &stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn main(side: &str) -> Main<'_> {
        Main {
            dir: Path::new("/run/n"),
            side,
            stream_module: Some(Path::new("/usr/lib/nginx/modules/ngx_stream_module.so")),
            worker_connections: worker_connections(1000),
        }
    }

    fn certs() -> Certs {
        Certs::paths(Path::new("/c"))
    }

    #[test]
    fn the_stream_module_is_loaded_only_when_dynamic() {
        let v =
            |args: &str| format!("nginx version: nginx/1.22.1\nbuilt with OpenSSL 3.0\nconfigure arguments: {args}\n");
        let table: &[(&str, Result<Option<&str>, ()>)] = &[
            (
                "--with-cc-opt='-g -O2' --modules-path=/usr/lib/nginx/modules --with-stream=dynamic --with-http_v2_module",
                Ok(Some("/usr/lib/nginx/modules/ngx_stream_module.so")),
            ),
            ("--with-stream=dynamic", Ok(Some("/usr/lib/nginx/modules/ngx_stream_module.so"))),
            ("--modules-path=/opt/m --with-stream=dynamic", Ok(Some("/opt/m/ngx_stream_module.so"))),
            ("--with-stream --with-stream_ssl_module", Ok(None)),
            ("--with-stream_ssl_module", Err(())),
            ("", Err(())),
        ];
        for (args, want) in table {
            let got = stream_module(&v(args));
            match (want, got) {
                (Ok(want), Ok(got)) => assert_eq!(got.as_deref(), want.map(Path::new), "{args}"),
                (Err(()), Err(e)) => assert!(e.contains("stream module"), "{e}"),
                (want, got) => panic!("{args}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn connection_slots_cover_both_sides_of_every_idle_connection() {
        for (held, slots) in [(0, 1024), (20, 1064), (1000, 3024), (10_000, 21_024)] {
            assert_eq!(worker_connections(held), slots, "{held}");
        }
    }

    #[test]
    fn both_sides_run_one_process_and_write_only_into_the_run_dir() {
        for cfg in [server_config(&main("server"), &certs()), client_config(&main("client"), &certs(), "198.18.0.30")] {
            for line in [
                "load_module /usr/lib/nginx/modules/ngx_stream_module.so;",
                "daemon off;",
                "master_process off;",
                "worker_processes 1;",
                "worker_connections 3024;",
                "error_log stderr warn;",
                "keepalive_requests 100000;",
            ] {
                assert!(cfg.contains(line), "{line}:\n{cfg}");
            }
            assert_eq!(cfg.matches("access_log off;").count(), 2, "{cfg}");
            // Every absolute path is the run's directory or the certificates'.
            for word in cfg.split_whitespace().filter(|w| w.starts_with('/') && w.len() > 1) {
                let path = word.trim_end_matches(';');
                assert!(
                    path.starts_with("/run/n/") || path.starts_with("/c/") || path.ends_with("ngx_stream_module.so"),
                    "{path} is outside the run's directory:\n{cfg}"
                );
            }
            for temp in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
                assert!(cfg.contains(&format!("{temp}_temp_path /run/n/")), "{temp}:\n{cfg}");
            }
        }
        let none = Main { stream_module: None, ..main("server") };
        assert!(!server_config(&none, &certs()).contains("load_module"));
    }

    #[test]
    fn pod_b_requires_tls13_and_a_client_certificate_and_keeps_the_app_connections() {
        let cfg = server_config(&main("server"), &certs());
        // The HTTP listener and the stream listener alike.
        for line in [
            "ssl_protocols TLSv1.3;",
            "ssl_verify_client on;",
            "ssl_client_certificate /c/ca.pem;",
            "ssl_certificate /c/server.crt;",
        ] {
            assert_eq!(cfg.matches(line).count(), 2, "{line}:\n{cfg}");
        }
        assert!(cfg.contains("listen 8443 ssl;") && cfg.contains("listen 7443 ssl;"), "{cfg}");
        assert!(cfg.contains("server 127.0.0.1:8080;\n        keepalive 64;"), "{cfg}");
        assert!(cfg.contains("keepalive_timeout 90s;") && cfg.contains("proxy_pass http://app;"), "{cfg}");
        assert!(cfg.contains("proxy_http_version 1.1;") && cfg.contains("proxy_set_header Connection \"\";"));
        assert!(cfg.contains("proxy_pass 127.0.0.1:7000;"), "{cfg}");
        assert!(cfg.contains("pid /run/n/server.pid;"), "{cfg}");
    }

    #[test]
    fn pod_a_verifies_pod_b_and_keeps_its_connections() {
        let cfg = client_config(&main("client"), &certs(), "198.18.0.30");
        for line in [
            "proxy_ssl_protocols TLSv1.3;",
            "proxy_ssl_certificate /c/client.crt;",
            "proxy_ssl_certificate_key /c/client.key;",
            "proxy_ssl_trusted_certificate /c/ca.pem;",
            "proxy_ssl_verify on;",
            "proxy_ssl_name nginx-b;",
            "proxy_ssl_session_reuse on;",
        ] {
            // HTTP and stream.
            assert_eq!(cfg.matches(line).count(), 2, "{line}:\n{cfg}");
        }
        assert!(cfg.contains("server 198.18.0.30:8443;\n        keepalive 64;"), "{cfg}");
        assert!(cfg.contains("proxy_pass https://b;") && cfg.contains("proxy_http_version 1.1;"), "{cfg}");
        assert!(cfg.contains("listen 127.0.0.1:8080;") && cfg.contains("listen 127.0.0.1:8081 http2;"), "{cfg}");
        assert!(cfg.contains("listen 127.0.0.1:7000;") && cfg.contains("proxy_pass 198.18.0.30:7443;"), "{cfg}");
        assert!(cfg.contains("proxy_ssl on;"), "{cfg}");
    }
}
