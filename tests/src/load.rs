//! Sustained client load for the fault tests: the bench's open-loop load
//! generator (`weft-bench load`), run in a pod, and the bench's app as the
//! workload behind a service.
//!
//! ```text
//! client pod: weft-bench load --workload http1|http2 --target VIP:80 --rate R
//!             ─► iptables ─► proxy ══ mTLS ══► replica pod: proxy ─► weft-bench app :8080 (1 KiB answers)
//! ```
//!
//! The generator paces requests at a fixed rate whether or not earlier ones
//! have finished, and counts a request as failed unless it gets a 200 with
//! the app's whole 1 KiB body within `timeout`: a fault the mesh lets
//! through to the client shows up here.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use crate::env::build_bin;
use crate::mesh::Pod;
use crate::process::Proc;

/// The app's HTTP port (HTTP/1.1 and HTTP/2 prior knowledge).
pub const BENCH_APP_PORT: u16 = 8080;

/// The `weft-bench` binary (the load generator and its app), built like
/// [`crate::proxy_bin`].
pub fn bench_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| build_bin("weft-bench", "weft-bench"))
}

/// What one generator run counted (its JSON report, the fields a test needs).
#[derive(Clone, Debug)]
pub struct LoadReport {
    pub workload: String,
    /// Requests sent.
    pub sent: u64,
    /// 200 with the whole body.
    pub ok: u64,
    /// Failures other than timeouts (a status other than 200, a reset, a
    /// short body).
    pub errors: u64,
    /// No whole answer within the generator's timeout.
    pub timeouts: u64,
    pub first_error: Option<String>,
    pub achieved_rps: f64,
    /// HTTP/1.1 GETs the generator sent again on a new connection because
    /// the kept-alive one it took closed before answering (the proxy's idle
    /// timeout racing the request), as browsers, curl and Go do.
    pub stale_retries: u64,
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} sent, {} ok, {} errors, {} timeouts, {:.0} rps, {} resent on a new connection{}",
            self.workload,
            self.sent,
            self.ok,
            self.errors,
            self.timeouts,
            self.achieved_rps,
            self.stale_retries,
            self.first_error.as_ref().map(|e| format!(", first error: {e}")).unwrap_or_default()
        )
    }
}

/// A running load generator.
pub struct Load {
    proc: Proc,
    duration: Duration,
}

impl Load {
    /// Starts `weft-bench load` in `pod`: `workload` (`http1` or `http2`)
    /// to `target` at `rate` requests/s for `duration`, no warm-up (every
    /// request counts). A request not answered within `timeout` fails.
    pub fn start(pod: &Pod, workload: &str, target: &str, rate: u32, duration: Duration, timeout: Duration) -> Load {
        let args = [
            "load".to_owned(),
            "--workload".to_owned(),
            workload.to_owned(),
            "--target".to_owned(),
            target.to_owned(),
            "--rate".to_owned(),
            rate.to_string(),
            "--duration".to_owned(),
            format!("{}ms", duration.as_millis()),
            "--warmup".to_owned(),
            "0s".to_owned(),
            "--timeout".to_owned(),
            format!("{}ms", timeout.as_millis()),
            // HTTP/1.1 needs rate × latency connections: room for latency
            // spikes of a loaded machine (2 cores, debug builds) up to 1 s,
            // so that the generator's own pool never becomes the queue.
            "--max-conns".to_owned(),
            (rate.max(64)).to_string(),
        ];
        let proc = pod.spawn(&format!("load-{workload}"), bench_bin(), &args);
        Load { proc, duration: duration + timeout }
    }

    /// Whether it is still sending.
    pub fn running(&mut self) -> bool {
        self.proc.try_status().is_none()
    }

    /// Waits for the run to end (its duration and one timeout, plus 30 s)
    /// and returns its report.
    #[track_caller]
    pub fn finish(self) -> LoadReport {
        let run = self.proc.finish(self.duration + Duration::from_secs(30));
        assert!(run.status.success(), "the load generator failed: {run}");
        let line = run.stdout.lines().last().unwrap_or_default();
        let json: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("the load report is not JSON ({e}): {run}"));
        let count = |key: &str| json[key].as_u64().unwrap_or_else(|| panic!("the load report has no {key}: {line}"));
        LoadReport {
            workload: json["workload"].as_str().unwrap_or_default().to_owned(),
            sent: count("sent"),
            ok: count("ok"),
            errors: count("errors"),
            timeouts: count("timeouts"),
            first_error: json["first_error"].as_str().map(str::to_owned),
            achieved_rps: json["achieved_rps"].as_f64().unwrap_or(0.0),
            stale_retries: json["stale_retries"].as_u64().unwrap_or(0),
        }
    }
}

impl Pod {
    /// Starts the bench's app (HTTP on 0.0.0.0:8080, its TCP echo on
    /// loopback) and waits until it listens.
    pub fn bench_app(&self) -> Proc {
        let http = format!("0.0.0.0:{BENCH_APP_PORT}");
        let proc = self.spawn("app", bench_bin(), &["app", "--http", &http, "--echo", "127.0.0.1:7000"]);
        self.wait_listening(BENCH_APP_PORT);
        proc
    }
}
