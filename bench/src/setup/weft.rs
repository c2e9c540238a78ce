//! The weft pairs (plaintext and mTLS): in each pod, `weft-proxy init` as root (the init
//! container), then `weft-proxy run` as uid 2102 (the sidecar), exactly as
//! the end-to-end tests run it.
//!
//! Started here rather than with `weft_tests::Pod::run_proxy` because the
//! bench needs the proxy's PID for `/proc`, which `weft_tests::Proxy` does
//! not expose.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use weft_tests::{ADMIN, Metrics, PROXY_UID, Pod, Proc};

/// Far above the 10,000 idle connections of the full run (the default cap
/// is 10,000, inbound and outbound together).
pub const MAX_CONNECTIONS: &str = "30000";

/// Installs the interception rules in `pod` with `bin init` (default
/// flags), starts `bin run` (with `extra` flags after the bench's) and waits
/// until its `/ready` answers 200 (with an identity: once it holds a
/// certificate).
pub fn start(pod: &Pod, bin: &Path, extra: &[&str]) -> anyhow::Result<Proc> {
    let init = pod.exec(bin, &["init"]);
    anyhow::ensure!(init.status.success(), "weft-proxy init in pod {}: {init}", pod.name());
    restart(pod, bin, extra)
}

/// [`start`] in a pod whose iptables rules are already installed (a
/// replica's proxy started again).
pub fn restart(pod: &Pod, bin: &Path, extra: &[&str]) -> anyhow::Result<Proc> {
    let bin = bin.to_string_lossy().into_owned();
    let uid = format!("--reuid={PROXY_UID}");
    let gid = format!("--regid={PROXY_UID}");
    let mut args: Vec<&str> =
        vec![&uid, &gid, "--clear-groups", "--", &bin, "run", "--max-connections", MAX_CONNECTIONS];
    args.extend_from_slice(extra);
    let mut proc = pod.spawn("weft-proxy", "setpriv", &args);
    let url = format!("http://{ADMIN}/ready");
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(status) = proc.try_status() {
            anyhow::bail!("weft-proxy in pod {} exited ({status}) before it was ready:\n{}", pod.name(), proc.stderr());
        }
        let run = pod.exec("curl", &["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "1", &url]);
        if run.stdout == "200" {
            return Ok(proc);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "weft-proxy in pod {} is not ready after {READY_TIMEOUT:?} (GET /ready: {run}); its log:\n{}",
            pod.name(),
            proc.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How long a proxy may take to report ready (a certificate included).
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The proxy's admin `GET path` from inside `pod`.
pub fn admin_get(pod: &Pod, path: &str) -> anyhow::Result<String> {
    let url = format!("http://{ADMIN}{path}");
    let run = pod.exec("curl", &["-sS", "--fail", "--max-time", "5", &url]);
    anyhow::ensure!(run.status.success(), "GET {path} of weft-proxy in pod {}: {run}", pod.name());
    Ok(run.stdout)
}

/// The mesh identity the proxy in `pod` holds (`/config`'s
/// `identity.identity`), if any.
pub fn identity(pod: &Pod) -> anyhow::Result<Option<String>> {
    let config: serde_json::Value = serde_json::from_str(&admin_get(pod, "/config")?)
        .with_context(|| format!("/config of weft-proxy in pod {} is not JSON", pod.name()))?;
    Ok(config["identity"]["identity"].as_str().map(str::to_owned))
}

/// What the proxy in `pod` counted, from its `/metrics`: proof that the
/// traffic went through it, by protocol, and whether protocol detection
/// ever stalled (`timeout`). Over mTLS the client side announces opaque
/// TCP by ALPN, so the inbound side counts it as an opaque port without
/// detecting it.
pub fn accounting(pod: &Pod, name: &str) -> String {
    let url = format!("http://{ADMIN}/metrics");
    let run = pod.exec("curl", &["-sS", "--fail", "--max-time", "5", &url]);
    if !run.status.success() {
        return format!("{name}: /metrics could not be read: {}", run.stderr.trim());
    }
    let m = Metrics::parse(&run.stdout);
    format!(
        "{name} counted {} HTTP requests ({} failure responses) and {} accepted connections ({}; protocol \
         detection: {})",
        m.sum("weft_requests_total", &[]),
        m.sum("weft_responses_total", &[("classification", "failure")]),
        m.sum("weft_tcp_connections_total", &[]),
        by_label(&m, "weft_tcp_connections_total", "protocol"),
        by_label(&m, "weft_detect_total", "outcome"),
    )
}

/// `value n, value n, …` of `metric` summed by `label` (in the order the
/// proxy lists them; zeros left out), or `none`.
fn by_label(m: &Metrics, metric: &str, label: &str) -> String {
    let mut values: Vec<(String, f64)> = Vec::new();
    for s in m.samples.iter().filter(|s| s.name == metric) {
        let Some(v) = s.labels.get(label) else { continue };
        match values.iter_mut().find(|(have, _)| have == v) {
            Some((_, n)) => *n += s.value,
            None => values.push((v.clone(), s.value)),
        }
    }
    let parts: Vec<String> = values.iter().filter(|(_, n)| *n > 0.0).map(|(v, n)| format!("{v} {n}")).collect();
    if parts.is_empty() { "none".to_owned() } else { parts.join(", ") }
}
