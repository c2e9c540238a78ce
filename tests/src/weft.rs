//! A `weft` command a test runs (`weft up`, `weft demo`), and the
//! processes a run starts, so that a test can check that none is left.
//!
//! The handle stops the command if the test panics (SIGINT, then SIGKILL
//! after 20 s) and prints its output then; processes are identified by PID
//! *and* start time, so a reused PID is never mistaken for one of the run's.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A running `weft` command.
pub struct WeftProcess {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
    /// The run's log directory, whose tails `output` adds.
    logs: Option<PathBuf>,
}

impl WeftProcess {
    /// Spawns `cmd` (stdin closed) with its output in `dir/LABEL.stdout` and
    /// `dir/LABEL.stderr`.
    pub fn spawn(mut cmd: Command, dir: &Path, label: &str) -> WeftProcess {
        let stdout = dir.join(format!("{label}.stdout"));
        let stderr = dir.join(format!("{label}.stderr"));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).expect("creating the stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("creating the stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
        WeftProcess { child, stdout, stderr, logs: None }
    }

    /// Adds the tails of the logs in `dir` to [`Self::output`].
    pub fn with_logs(mut self, dir: PathBuf) -> WeftProcess {
        self.logs = Some(dir);
        self
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// stdout, stderr and the end of each log of the run, for failures.
    pub fn output(&self) -> String {
        let mut out = format!(
            "--- weft stdout\n{}\n--- weft stderr\n{}",
            self.stdout(),
            std::fs::read_to_string(&self.stderr).unwrap_or_default()
        );
        let logs = self.logs.as_ref().and_then(|d| std::fs::read_dir(d).ok());
        for entry in logs.into_iter().flatten().flatten() {
            let log = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            out += &format!("\n--- {}\n", entry.path().display());
            for line in tail.into_iter().rev() {
                out += line;
                out.push('\n');
            }
        }
        out
    }

    /// Its exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("waiting for weft")
    }

    /// Waits for the exit, calling `each` every 100 ms meanwhile (to record
    /// the run's processes, say); panics with the output after `within`.
    pub fn wait_exit(&mut self, within: Duration, mut each: impl FnMut(&Self)) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            each(self);
            if let Some(status) = self.exited() {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!("weft did not exit within {within:?}\n{}", self.output());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Ctrl-C: SIGINT, without waiting.
    pub fn sigint(&self) {
        let _ = kill(pid(self.pid()), Signal::SIGINT);
    }

    /// Ctrl-C, then the exit within `within`.
    pub fn interrupt(&mut self, within: Duration) -> ExitStatus {
        self.sigint();
        self.wait_exit(within, |_| {})
    }
}

fn pid(id: u32) -> Pid {
    Pid::from_raw(i32::try_from(id).expect("a PID fits in i32"))
}

impl Drop for WeftProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = kill(pid(self.child.id()), Signal::SIGINT);
            let deadline = Instant::now() + Duration::from_secs(20);
            while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.output());
        }
    }
}

/// A process by PID and start time.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ProcId {
    pub pid: i32,
    pub start: String,
    pub cmdline: String,
}

/// The fields of /proc/PID/stat after the command name (which is in
/// parentheses and may contain spaces): [1] the parent PID, [19] the start
/// time.
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.get(stat.rfind(')')? + 2..)?;
    Some(after.split_whitespace().map(str::to_owned).collect())
}

fn cmdline(pid: i32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&raw).replace('\0', " ")
}

/// (pid → (parent, start time)) of every process now.
fn process_table() -> BTreeMap<i32, (i32, String)> {
    let mut table = BTreeMap::new();
    for entry in std::fs::read_dir("/proc").expect("reading /proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        if let Some(fields) = stat_fields(pid)
            && let Some(ppid) = fields.get(1).and_then(|p| p.parse::<i32>().ok())
        {
            table.insert(pid, (ppid, fields.get(19).cloned().unwrap_or_default()));
        }
    }
    table
}

/// The children of `parent` now.
pub fn children(parent: u32) -> BTreeSet<ProcId> {
    let parent = i32::try_from(parent).unwrap_or(-1);
    process_table()
        .into_iter()
        .filter(|(_, (ppid, _))| *ppid == parent)
        .map(|(pid, (_, start))| ProcId { pid, start, cmdline: cmdline(pid) })
        .collect()
}

/// Every process below `root` now (children, grandchildren…).
pub fn descendants(root: u32) -> BTreeSet<ProcId> {
    let table = process_table();
    let mut found = BTreeSet::new();
    let mut frontier = vec![i32::try_from(root).unwrap_or(-1)];
    while let Some(parent) = frontier.pop() {
        for (&pid, (ppid, start)) in &table {
            if *ppid == parent {
                found.insert(ProcId { pid, start: start.clone(), cmdline: cmdline(pid) });
                frontier.push(pid);
            }
        }
    }
    found
}

/// Whether that very process is still running (a zombie has exited; it
/// only waits to be reaped).
pub fn alive(p: &ProcId) -> bool {
    stat_fields(p.pid).is_some_and(|f| f.get(19) == Some(&p.start) && f.first().map(String::as_str) != Some("Z"))
}

/// The command lines of processes whose command line contains `needle`.
pub fn running(needle: &str) -> Vec<String> {
    process_table().keys().map(|&pid| cmdline(pid)).filter(|c| c.contains(needle)).collect()
}

/// The metrics of `pod`'s proxy in the `weft up` run `run`: its admin
/// `/metrics`, read inside the pod's network namespace as an operator would.
pub fn pod_metrics(run: u32, pod: &str) -> Result<crate::Metrics, String> {
    let out = Command::new(crate::tool("ip"))
        .args(["netns", "exec", &format!("weft-{run}-{pod}")])
        .arg(crate::tool("curl"))
        .args(["-sS", "-f", "-m", "3", "http://127.0.0.1:4191/metrics"])
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("{pod}: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(crate::Metrics::parse(&String::from_utf8_lossy(&out.stdout)))
}
