//! The weft pair with mutual TLS: a control plane with the mesh CA in a pod
//! of its own, the server-side proxy registering the app (its address and
//! both app ports) under a service with a virtual IP, the client-side proxy
//! resolving that VIP through discovery and opening mTLS to the endpoint.
//!
//! ```text
//!  mc: weft-control (CA, discovery, registry; gRPC over TLS)
//!        ▲ Certify, Register                   ▲ Certify, discovery
//!  ma: load ─► VIP:port ─► weft-proxy (sa/bench-client) ══ mTLS ══► weft-proxy (sa/bench-server) ─► mb: app
//! ```
//!
//! Each proxy gets a single-use bootstrap token of its own and reports ready
//! only once it holds a certificate. Start-up then proves that the pair
//! really speaks mTLS, not just that it serves: both proxies show their
//! identity in `/config`; the app sees the client's verified identity in
//! `weft-client-id` (`GET /whoami`); the server proxy counts inbound
//! connections; and a capture on the server pod's interface shows a TLS 1.3
//! handshake and none of the plaintext sent (an HTTP header, the echo
//! payload).

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use weft_tests::{Metrics, Pod, Proc, Signal};

use super::control::{self, ControlPlane, ControlSpec};
use super::weft;
use crate::app::WHOAMI_PATH;
use crate::load::LoadReport;
use crate::workload::{APP_ECHO_PORT, APP_HTTP_PORT, echo_payload};

/// The service's virtual IP: inside the pods' /24, so no route is needed,
/// and far above the pods' addresses (198.18.0.11 onwards).
pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 200);
pub const NAMESPACE: &str = "default";
pub const CLIENT_SA: &str = "bench-client";
pub const SERVER_SA: &str = "bench-server";
const TRUST_DOMAIN: &str = "cluster.local";
/// The registered workload (the server pod's app).
const WORKLOAD: &str = "app-0";
/// Sent through the pair during start-up; must never be seen on the wire.
const MARKER: &str = "WEFT-BENCH-PLAINTEXT-MARKER";
/// How long the app may take to be reachable through the VIP (registration,
/// then discovery).
const REACHABLE_TIMEOUT: Duration = Duration::from_secs(20);

pub fn spiffe_id(sa: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/ns/{NAMESPACE}/sa/{sa}")
}

/// The control plane's services file: the app's two ports behind [`VIP`].
pub fn services_yaml() -> String {
    format!(
        "services:\n  - name: app\n    namespace: {NAMESPACE}\n    virtualIP: {VIP}\n    selector: {{app: app}}\n    \
         ports:\n      - {{port: {APP_HTTP_PORT}, targetPort: {APP_HTTP_PORT}}}\n      \
         - {{port: {APP_ECHO_PORT}, targetPort: {APP_ECHO_PORT}}}\n"
    )
}

pub struct Started {
    pub control: ControlPlane,
    pub client: Proc,
    pub server: Proc,
    pub checks: Vec<String>,
}

/// Starts the control plane in `cp_pod` with the `services` file (e.g.
/// [`services_yaml`]), the proxies in `client` and `server` (whose app
/// already listens), and runs the checks; `exe` is this binary (the
/// generator), `dir` a private directory.
pub fn start(
    client: &Pod,
    server: &Pod,
    cp_pod: &Pod,
    bins: &super::Binaries,
    dir: &Path,
    services: &str,
    control_extra: &[&str],
) -> anyhow::Result<Started> {
    let spec = ControlSpec { services, with_ca: true, extra: control_extra };
    let mut control = control::start(cp_pod, &bins.control, &dir.join("control"), &spec)?;
    let anchors = control.anchors().context("the control plane has a CA")?.to_string_lossy().into_owned();
    let url = control.url.clone();
    let server_proc = start_server(server, &mut control, &bins.proxy, WORKLOAD, true)?;
    let token = control.token(NAMESPACE, CLIENT_SA, "bench-client")?.to_string_lossy().into_owned();
    let client_proc = weft::start(
        client,
        &bins.proxy,
        &[
            "--control-plane",
            &url,
            "--trust-anchors",
            &anchors,
            "--identity-token-file",
            &token,
            "--service-account",
            CLIENT_SA,
            "--namespace",
            NAMESPACE,
        ],
    )?;
    let mut started = Started { control, client: client_proc, server: server_proc, checks: Vec::new() };
    started.checks = verify(client, server, &bins.exe)?;
    Ok(started)
}

/// Starts a server-side proxy in `pod` (whose app already listens on both
/// app ports) that registers the pod as `workload` of the service (label
/// `app=app`, service account [`SERVER_SA`]), with a fresh bootstrap token;
/// `init` installs the pod's iptables rules first (once per pod).
pub fn start_server(
    pod: &Pod,
    control: &mut ControlPlane,
    proxy: &Path,
    workload: &str,
    init: bool,
) -> anyhow::Result<Proc> {
    let anchors = control.anchors().context("the control plane has a CA")?.to_string_lossy().into_owned();
    let token = control.token(NAMESPACE, SERVER_SA, workload)?.to_string_lossy().into_owned();
    let address = pod.ip().to_string();
    let ports = format!("{APP_HTTP_PORT},{APP_ECHO_PORT}");
    let args = [
        "--control-plane",
        &control.url,
        "--trust-anchors",
        &anchors,
        "--identity-token-file",
        &token,
        "--service-account",
        SERVER_SA,
        "--namespace",
        NAMESPACE,
        "--workload-name",
        workload,
        "--workload-labels",
        "app=app",
        "--workload-address",
        &address,
        "--workload-ports",
        &ports,
    ];
    if init { weft::start(pod, proxy, &args) } else { weft::restart(pod, proxy, &args) }
}

/// Proves that the pair speaks mTLS; a description of each proof.
fn verify(client: &Pod, server: &Pod, exe: &Path) -> anyhow::Result<Vec<String>> {
    let mut checks = Vec::new();
    for (pod, sa, side) in [(client, CLIENT_SA, "client"), (server, SERVER_SA, "server")] {
        let want = spiffe_id(sa);
        let got = weft::identity(pod)?;
        anyhow::ensure!(
            got.as_deref() == Some(want.as_str()),
            "the {side}-side proxy's /config shows identity {got:?}, expected {want}"
        );
    }
    checks.push(format!(
        "both proxies hold certificates from the control plane's CA ({} and {})",
        spiffe_id(CLIENT_SA),
        spiffe_id(SERVER_SA)
    ));

    let inbound_before = inbound_connections(server)?;
    let pcap = server.dir().join(format!("{}-mtls.pcap", server.name()));
    let capture = Capture::start(server, &pcap)?;

    // HTTP: the app sees the client's verified identity.
    let url = format!("http://{VIP}:{APP_HTTP_PORT}{WHOAMI_PATH}");
    let marker = format!("x-bench-marker: {MARKER}");
    let deadline = Instant::now() + REACHABLE_TIMEOUT;
    let whoami = loop {
        let run = client.exec("curl", &["-sS", "--max-time", "2", "-H", &marker, &url]);
        if run.status.success() && run.stdout.starts_with("spiffe://") {
            break run.stdout;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the app is not reachable through the VIP ({url}) after {REACHABLE_TIMEOUT:?}: {run}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    anyhow::ensure!(
        whoami == spiffe_id(CLIENT_SA),
        "the app saw weft-client-id {whoami:?}, expected {}",
        spiffe_id(CLIENT_SA)
    );
    checks.push(format!("the app behind the VIP sees the verified client identity `{whoami}` (weft-client-id)"));

    // Opaque TCP to the echo port through the VIP.
    let target = format!("{VIP}:{APP_ECHO_PORT}");
    let args =
        ["load", "--workload", "tcp", "--target", &target, "--rate", "20", "--warmup", "0ms", "--duration", "500ms"];
    // The first connection to a new destination may wait for discovery:
    // a second try is allowed.
    let mut tries = 0;
    let report = loop {
        tries += 1;
        let run = client.exec(exe, &args);
        anyhow::ensure!(run.status.success(), "the opaque TCP check through {target} failed: {run}");
        let report: LoadReport = serde_json::from_str(run.stdout.trim()).with_context(|| format!("parsing {run}"))?;
        if report.ok > 0 && report.errors + report.timeouts == 0 {
            break report;
        }
        anyhow::ensure!(
            tries < 3,
            "opaque TCP through {target}: {} echoed, {} failed: {}",
            report.ok,
            report.errors + report.timeouts,
            report.first_error.unwrap_or_default()
        );
    };
    checks.push(format!("opaque TCP through {target} echoes ({} round trips)", report.ok));

    let bytes = capture.stop()?;
    anyhow::ensure!(bytes.len() > 500, "the capture on pod {} is nearly empty ({} bytes)", server.name(), bytes.len());
    let payload = echo_payload();
    for (what, needle) in [("the HTTP marker header", MARKER.as_bytes()), ("the echo payload", &payload[1..])] {
        anyhow::ensure!(
            find(&bytes, needle).is_none(),
            "{what} crossed the network in plaintext (capture {})",
            pcap.display()
        );
    }
    // ServerHello's supported_versions extension selecting TLS 1.3, then
    // TLS application data records.
    anyhow::ensure!(
        find(&bytes, &[0x00, 0x2b, 0x00, 0x02, 0x03, 0x04]).is_some(),
        "no TLS 1.3 ServerHello in the capture {}",
        pcap.display()
    );
    anyhow::ensure!(find(&bytes, &[0x17, 0x03, 0x03]).is_some(), "no TLS records in the capture {}", pcap.display());
    let _ = std::fs::remove_file(&pcap);
    checks.push(
        "a capture on the server pod's interface shows a TLS 1.3 handshake and neither the HTTP header nor the echo \
         payload in plaintext"
            .to_owned(),
    );

    let inbound = inbound_connections(server)? - inbound_before;
    anyhow::ensure!(inbound >= 2.0, "the server-side proxy counted {inbound} new inbound connections, expected ≥ 2");
    checks.push(format!("the server-side proxy accepted them as inbound ({inbound} connections)"));
    Ok(checks)
}

fn inbound_connections(pod: &Pod) -> anyhow::Result<f64> {
    let m = Metrics::parse(&weft::admin_get(pod, "/metrics")?);
    Ok(m.sum("weft_tcp_connections_total", &[("direction", "inbound")]))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `tcpdump` on a pod's `eth0`; killed if dropped before [`Capture::stop`].
struct Capture {
    proc: Proc,
    path: std::path::PathBuf,
}

impl Capture {
    fn start(pod: &Pod, path: &Path) -> anyhow::Result<Capture> {
        let arg = path.to_string_lossy().into_owned();
        let mut proc = pod.spawn(
            "tcpdump",
            "tcpdump",
            &["-i", "eth0", "--immediate-mode", "-U", "-s", "0", "-Z", "root", "-w", &arg, "tcp"],
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while !proc.stderr().contains("listening on") {
            if let Some(status) = proc.try_status() {
                anyhow::bail!("tcpdump exited ({status}): {}", proc.stderr());
            }
            anyhow::ensure!(Instant::now() < deadline, "tcpdump does not listen after 10 s: {}", proc.stderr());
            std::thread::sleep(Duration::from_millis(25));
        }
        Ok(Capture { proc, path: path.to_owned() })
    }

    /// Stops the capture and returns the file's bytes.
    fn stop(mut self) -> anyhow::Result<Vec<u8>> {
        self.proc.signal(Signal::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.proc.try_status().is_none() {
            anyhow::ensure!(Instant::now() < deadline, "tcpdump did not stop within 10 s");
            std::thread::sleep(Duration::from_millis(25));
        }
        std::fs::read(&self.path).with_context(|| format!("reading the capture {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_lists_both_app_ports_behind_the_vip() {
        let yaml = services_yaml();
        assert!(yaml.contains("virtualIP: 198.18.0.200") && yaml.contains("selector: {app: app}"), "{yaml}");
        assert!(yaml.contains("{port: 8080, targetPort: 8080}") && yaml.contains("{port: 7000, targetPort: 7000}"));
        assert_eq!(spiffe_id(CLIENT_SA), "spiffe://cluster.local/ns/default/sa/bench-client");
    }
}
