//! The proxy under test, run in a pod the way a Kubernetes pod runs it:
//! `weft-proxy init` as root (the init container), then `weft-proxy run` as
//! UID 2102 (the sidecar), so that the owner match in the rules keeps the
//! proxy's own connections out of interception.

use std::ffi::OsStr;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::env::proxy_bin;
use crate::eventually::eventually;
use crate::mesh::Pod;
use crate::metrics::Metrics;
use crate::process::{Proc, Run};

/// The proxy's UID, excluded from interception by `init`.
pub const PROXY_UID: u32 = 2102;
/// The admin listener, on the pod's loopback.
pub const ADMIN: &str = "127.0.0.1:4191";
/// How long a proxy may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// Sets the proxy's `--log` filter when present (default: the proxy's own).
pub const ENV_PROXY_LOG: &str = "WEFT_TEST_PROXY_LOG";

/// A running `weft-proxy run`.
pub struct Proxy {
    pod: Pod,
    proc: Proc,
}

impl Pod {
    /// `weft-proxy init ARGS` in this pod, as root.
    pub fn init<S: AsRef<OsStr>>(&self, args: &[S]) -> Run {
        let mut all: Vec<&OsStr> = vec![OsStr::new("init")];
        all.extend(args.iter().map(AsRef::as_ref));
        self.exec(proxy_bin(), &all)
    }

    /// Installs the interception rules with default flags, then starts the
    /// proxy with `args` and waits until its `/ready` answers 200.
    pub fn run_proxy(&self, args: &[&str]) -> Proxy {
        self.init::<&str>(&[]).ok();
        self.start_proxy(args)
    }

    /// Starts `weft-proxy run ARGS` as UID 2102 (no `init`) and waits until
    /// it is ready.
    pub fn start_proxy(&self, args: &[&str]) -> Proxy {
        let uid = format!("--reuid={PROXY_UID}");
        let gid = format!("--regid={PROXY_UID}");
        let mut all: Vec<String> = vec![uid, gid, "--clear-groups".into(), "--".into()];
        all.push(proxy_bin().to_string_lossy().into_owned());
        all.push("run".into());
        if let Ok(filter) = std::env::var(ENV_PROXY_LOG) {
            all.extend(["--log".to_owned(), filter]);
        }
        all.extend(args.iter().map(|a| (*a).to_owned()));
        let proc = self.spawn("weft-proxy", "setpriv", &all);
        let mut proxy = Proxy { pod: self.clone(), proc };
        proxy.wait_ready();
        proxy
    }
}

impl Proxy {
    fn wait_ready(&mut self) {
        let url = format!("http://{ADMIN}/ready");
        let what = format!("the proxy in pod {} is ready", self.pod.name());
        eventually(READY_TIMEOUT, &what, || {
            if let Some(status) = self.proc.try_status() {
                panic!("the proxy in pod {} exited ({status}) before it was ready:\n{}", self.pod.name(), self.log());
            }
            let run = self.pod.exec("curl", &["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "1", &url]);
            if run.stdout == "200" { Ok(()) } else { Err(format!("GET /ready: {run}")) }
        });
    }

    pub fn pod(&self) -> &Pod {
        &self.pod
    }

    /// The proxy's stderr so far (its log).
    pub fn log(&self) -> String {
        self.proc.stderr()
    }

    /// A request to the admin listener from inside the pod (`curl -X METHOD`);
    /// stdout is the body.
    pub fn admin(&self, method: &str, path: &str) -> Run {
        let url = format!("http://{ADMIN}{path}");
        self.pod.exec("curl", &["-sS", "--fail-with-body", "--max-time", "5", "-X", method, &url])
    }

    /// The raw `/metrics` text.
    #[track_caller]
    pub fn metrics_text(&self) -> String {
        self.admin("GET", "/metrics").ok().stdout
    }

    /// A parsed scrape of `/metrics`.
    #[track_caller]
    pub fn metrics(&self) -> Metrics {
        Metrics::parse(&self.metrics_text())
    }

    /// Waits until the sum of `name{labels}` equals `want` exactly; panics
    /// with the last scrape otherwise. Counters are recorded as a response
    /// finishes, which may be just after the client has it, hence the wait.
    #[track_caller]
    pub fn wait_metric(&self, name: &str, labels: &[(&str, &str)], want: f64) {
        let what = format!("{name}{labels:?} == {want} in pod {}", self.pod.name());
        eventually(Duration::from_secs(5), &what, || {
            let m = self.metrics();
            let got = m.sum(name, labels);
            if got == want { Ok(()) } else { Err(format!("it is {got}; scrape:\n{}", m.text)) }
        });
    }

    /// The proxy's PID (`ip netns exec` and `setpriv` exec it in place).
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// The proxy's resident memory now, in KiB (`VmRSS` in /proc).
    #[track_caller]
    pub fn rss_kib(&self) -> u64 {
        let path = format!("/proc/{}/status", self.pid());
        let status = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no VmRSS line in {path}:\n{status}"))
    }

    /// How many file descriptors the proxy holds now (/proc/PID/fd).
    #[track_caller]
    pub fn open_fds(&self) -> usize {
        let path = format!("/proc/{}/fd", self.pid());
        std::fs::read_dir(&path).unwrap_or_else(|e| panic!("listing {path}: {e}")).count()
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        self.proc.signal(Signal::SIGTERM);
    }

    /// Sends `signal` (SIGSTOP: a proxy that accepts and never answers).
    pub fn signal(&self, signal: Signal) {
        self.proc.signal(signal);
    }

    /// Exit status if the proxy has exited.
    pub fn try_status(&mut self) -> Option<std::process::ExitStatus> {
        self.proc.try_status()
    }

    /// Waits for the proxy to exit.
    #[track_caller]
    pub fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        self.proc.wait_exit(within)
    }
}
