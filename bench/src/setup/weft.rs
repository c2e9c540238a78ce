//! The weft pair: in each pod, `weft-proxy init` as root (the init
//! container), then `weft-proxy run` as uid 2102 (the sidecar), exactly as
//! the end-to-end tests run it.
//!
//! Started here rather than with `weft_tests::Pod::run_proxy` because the
//! bench needs the proxy's PID for `/proc`, which `weft_tests::Proxy` does
//! not expose.

use std::path::Path;
use std::time::Duration;

use weft_tests::{ADMIN, Metrics, PROXY_UID, Pod, Proc, eventually};

/// Far above the 10,000 idle connections of the full run (the default cap
/// is 10,000, inbound and outbound together).
pub const MAX_CONNECTIONS: &str = "30000";

/// Installs the interception rules in `pod` with `bin init` (default
/// flags), starts `bin run` and waits until its `/ready` answers 200.
pub fn start(pod: &Pod, bin: &Path) -> anyhow::Result<Proc> {
    let init = pod.exec(bin, &["init"]);
    anyhow::ensure!(init.status.success(), "weft-proxy init in pod {}: {init}", pod.name());
    let bin = bin.to_string_lossy().into_owned();
    let uid = format!("--reuid={PROXY_UID}");
    let gid = format!("--regid={PROXY_UID}");
    let args = [&uid, &gid, "--clear-groups", "--", &bin, "run", "--max-connections", MAX_CONNECTIONS];
    let mut proc = pod.spawn("weft-proxy", "setpriv", &args);
    let url = format!("http://{ADMIN}/ready");
    eventually(Duration::from_secs(15), &format!("weft-proxy in pod {} is ready", pod.name()), || {
        if let Some(status) = proc.try_status() {
            panic!("weft-proxy in pod {} exited ({status}) before it was ready:\n{}", pod.name(), proc.stderr());
        }
        let run = pod.exec("curl", &["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "1", &url]);
        if run.stdout == "200" { Ok(()) } else { Err(format!("GET /ready: {run}")) }
    });
    Ok(proc)
}

/// What the proxy in `pod` counted, from its `/metrics`: proof that the
/// traffic went through it, and whether protocol detection ever stalled
/// (`timeout`).
pub fn accounting(pod: &Pod, name: &str) -> String {
    let url = format!("http://{ADMIN}/metrics");
    let run = pod.exec("curl", &["-sS", "--fail", "--max-time", "5", &url]);
    if !run.status.success() {
        return format!("{name}: /metrics could not be read: {}", run.stderr.trim());
    }
    let m = Metrics::parse(&run.stdout);
    let detect: Vec<String> = ["http1", "http2", "opaque", "timeout"]
        .iter()
        .map(|o| format!("{o} {}", m.sum("weft_detect_total", &[("outcome", o)])))
        .collect();
    format!(
        "{name} counted {} HTTP requests ({} failure responses) and {} accepted connections (detection: {})",
        m.sum("weft_requests_total", &[]),
        m.sum("weft_responses_total", &[("classification", "failure")]),
        m.sum("weft_tcp_connections_total", &[]),
        detect.join(", ")
    )
}
