//! The machine and the code a run measured: figures mean little without
//! the CPU, the kernel, the load from others, the commit and the builds.

use std::path::Path;
use std::process::Command;

use serde::Serialize;

/// The host a measurement ran on and the code it measured: what every
/// report of the bench (the full run, `handshakes`) records.
#[derive(Debug, Clone, Serialize)]
pub struct Host {
    pub cpu_model: String,
    /// CPUs this process may run on.
    pub cores: usize,
    pub kernel: String,
    pub memory_total_kib: u64,
    /// Start of the run, UTC, RFC 3339.
    pub date: String,
    pub git_commit: String,
    /// Uncommitted changes to tracked files when the run started.
    pub git_dirty: bool,
    /// `/proc/loadavg` (1, 5, 15 min) at the start and end: other work on
    /// the machine.
    pub loadavg_start: [f64; 3],
    pub loadavg_end: [f64; 3],
}

impl Host {
    /// The `- commit`, `- machine` and `- load average` lines every report
    /// starts with (each ending in a newline).
    pub fn markdown_lines(&self) -> String {
        format!(
            "- commit: `{}`{}\n- machine: {}, {} cores, {:.1} GiB, Linux {}\n- load average (1/5/15 min): \
             {:.2} {:.2} {:.2} at the start, {:.2} {:.2} {:.2} at the end\n",
            self.git_commit,
            if self.git_dirty { " (with uncommitted changes)" } else { "" },
            self.cpu_model,
            self.cores,
            self.memory_total_kib as f64 / 1024.0 / 1024.0,
            self.kernel,
            self.loadavg_start[0],
            self.loadavg_start[1],
            self.loadavg_start[2],
            self.loadavg_end[0],
            self.loadavg_end[1],
            self.loadavg_end[2],
        )
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Flattened: `latest.json` keeps its field names.
    #[serde(flatten)]
    pub host: Host,
    pub haproxy: String,
    pub nginx: String,
    pub openssl: String,
    pub proxy_binary: String,
    /// `release` or `debug`: the profile weft-proxy was built with.
    pub proxy_profile: String,
    pub control_binary: String,
    /// The profile weft-control was built with.
    pub control_profile: String,
    /// Whether this harness (and so the app and the generator) is optimized.
    pub bench_optimized: bool,
}

fn first_line(cmd: &mut Command) -> String {
    cmd.output()
        .ok()
        .map(|o| {
            let text = if o.stdout.is_empty() { o.stderr } else { o.stdout };
            String::from_utf8_lossy(&text).lines().next().unwrap_or_default().trim().to_owned()
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// `/proc/loadavg`'s three averages.
pub fn loadavg() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut it = text.split_whitespace().map(|f| f.parse().unwrap_or(f64::NAN));
    [it.next().unwrap_or(f64::NAN), it.next().unwrap_or(f64::NAN), it.next().unwrap_or(f64::NAN)]
}

impl Host {
    /// Reads everything but `loadavg_end`; `workspace` is the git checkout.
    pub fn read(workspace: &Path) -> Host {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".to_owned());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_total_kib = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|r| r.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0);
        let git = |args: &[&str]| first_line(Command::new("git").arg("-C").arg(workspace).args(args));
        let dirty = Command::new("git")
            .arg("-C")
            .arg(workspace)
            .args(["status", "--porcelain", "--untracked-files=no"])
            .output()
            .map(|o| !o.stdout.is_empty())
            .unwrap_or(false);
        let load = loadavg();
        Host {
            cpu_model,
            cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned(),
            memory_total_kib,
            date: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            git_commit: git(&["rev-parse", "HEAD"]),
            git_dirty: dirty,
            loadavg_start: load,
            loadavg_end: load,
        }
    }
}

impl Machine {
    /// Reads everything but `loadavg_end`; `workspace` is the git checkout.
    pub fn read(workspace: &Path, proxy_bin: &Path, control_bin: &Path) -> Machine {
        // `target/<profile>/weft-proxy`; a binary elsewhere (--proxy-bin) has
        // no profile we can tell.
        let profile = |bin: &Path| match bin.parent().and_then(|d| d.file_name()).and_then(|n| n.to_str()) {
            Some(p @ ("release" | "debug")) => p.to_owned(),
            _ => "unknown".to_owned(),
        };
        Machine {
            host: Host::read(workspace),
            haproxy: first_line(Command::new(weft_tests::tool("haproxy")).arg("-v")),
            // `nginx version: nginx/1.22.1`, on stderr.
            nginx: first_line(Command::new(weft_tests::tool("nginx")).arg("-v")),
            openssl: first_line(Command::new(weft_tests::tool("openssl")).arg("version")),
            proxy_binary: proxy_bin.display().to_string(),
            proxy_profile: profile(proxy_bin),
            control_binary: control_bin.display().to_string(),
            control_profile: profile(control_bin),
            bench_optimized: !cfg!(debug_assertions),
        }
    }
}
