//! Keeping the mesh's processes running, and stopping exactly them.
//!
//! Each process gets a task that starts it, waits for it, and restarts it
//! after an exponential backoff (1 s doubling to 30 s, back to 1 s once it
//! has run for a minute), logging why. A [`Prepare`] step runs before every
//! start, the first and each restart (a proxy's fresh bootstrap token). Every running PID is in one table,
//! so that stopping signals only processes this run started:
//!
//! ```text
//!   shutdown: no more restarts ─► client apps: SIGTERM ─(grace)─► SIGKILL
//!                               ─► serving apps: SIGTERM ─(grace)─► SIGKILL
//!                               ─► proxies: SIGTERM ─(grace)─► SIGKILL
//!                               ─► control plane: SIGTERM ─(grace)─► SIGKILL
//! ```
//!
//! Callers stop before servers, and apps before proxies (as a native
//! sidecar outlives its pod's app), so that no last request is cut off. Each process leads its own
//! process group: Ctrl-C in the terminal reaches `weft up` alone, which
//! then stops everything in order, and a signal to the group also reaches
//! whatever the process started itself.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures_util::future::BoxFuture;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::sync::watch;
use tokio::task::JoinHandle;

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A process that ran this long is considered healthy: its next failure
/// restarts it after [`FIRST_BACKOFF`] again.
const STABLE_AFTER: Duration = Duration::from_secs(60);

/// Stop order: lower first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Apps that serve nothing (load generators, clients): they stop first,
    /// so that no request of theirs is cut off by a server going away.
    Client,
    /// Apps with ports.
    Server,
    Proxy,
    Control,
}

/// How to start one supervised process.
#[derive(Debug, Clone)]
pub struct Spec {
    /// For messages: `web-v1-0 app`.
    pub label: String,
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// The complete environment (nothing is inherited).
    pub env: BTreeMap<String, String>,
    pub cwd: PathBuf,
    /// stdout and stderr are appended here.
    pub log: PathBuf,
    /// Runs before every start; an error counts as a failed start.
    pub prepare: Option<Prepare>,
}

/// Work to do before each start of a process.
#[derive(Clone)]
pub struct Prepare(Arc<dyn Fn() -> BoxFuture<'static, anyhow::Result<()>> + Send + Sync>);

impl Prepare {
    pub fn new<F, Fut>(f: F) -> Prepare
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        Prepare(Arc::new(move || Box::pin(f())))
    }

    async fn run(&self) -> anyhow::Result<()> {
        (self.0)().await
    }
}

impl std::fmt::Debug for Prepare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Prepare(..)")
    }
}

impl Spec {
    fn command_line(&self) -> String {
        std::iter::once(self.program.as_os_str())
            .chain(self.args.iter().map(OsString::as_os_str))
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

struct Running {
    label: String,
    phase: Phase,
    pid: i32,
}

#[derive(Default)]
struct State {
    /// Set when shutdown starts: nothing is started or restarted after it.
    stopping: bool,
    running: BTreeMap<u64, Running>,
    next_id: u64,
    /// Restarts so far, by label.
    restarts: BTreeMap<String, u32>,
}

/// The processes of one run.
#[derive(Clone)]
pub struct Supervisor {
    state: Arc<Mutex<State>>,
    stop_tx: Arc<watch::Sender<bool>>,
    tasks: Arc<Mutex<Vec<(Phase, JoinHandle<()>)>>>,
}

impl Default for Supervisor {
    fn default() -> Self {
        Self { state: Arc::default(), stop_tx: Arc::new(watch::channel(false).0), tasks: Arc::default() }
    }
}

fn signal_group(pid: i32, signal: Signal) {
    // The process leads its own group (process_group(0) below).
    let _ = killpg(Pid::from_raw(pid), signal);
}

fn timestamp() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

impl Supervisor {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts `spec` and keeps it running until [`Supervisor::shutdown`].
    pub fn spawn(&self, phase: Phase, spec: Spec) {
        let this = self.clone();
        let task = tokio::spawn(async move { this.keep_running(phase, spec).await });
        self.tasks.lock().unwrap_or_else(|e| e.into_inner()).push((phase, task));
    }

    /// How many times the process labelled `label` was restarted.
    pub fn restarts(&self, label: &str) -> u32 {
        self.lock().restarts.get(label).copied().unwrap_or(0)
    }

    /// Whether the process labelled `label` is running now.
    pub fn is_running(&self, label: &str) -> bool {
        self.lock().running.values().any(|r| r.label == label)
    }

    /// PIDs of everything running now.
    pub fn pids(&self) -> Vec<i32> {
        self.lock().running.values().map(|r| r.pid).collect()
    }

    async fn keep_running(&self, phase: Phase, spec: Spec) {
        let mut stop_rx = self.stop_tx.subscribe();
        let mut backoff = FIRST_BACKOFF;
        loop {
            let started = Instant::now();
            let outcome = self.run_once(phase, &spec).await;
            let Some(outcome) = outcome else { return };
            if started.elapsed() >= STABLE_AFTER {
                backoff = FIRST_BACKOFF;
            }
            let restarts = {
                let mut state = self.lock();
                if state.stopping {
                    return;
                }
                let n = state.restarts.entry(spec.label.clone()).or_default();
                *n += 1;
                *n
            };
            tracing::warn!(
                "{} {outcome} after {:.1?}; restart #{restarts} in {backoff:?} (log: {})",
                spec.label,
                started.elapsed(),
                spec.log.display()
            );
            tokio::select! {
                () = tokio::time::sleep(backoff) => {},
                _ = stop_rx.wait_for(|stop| *stop) => return,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Starts the process once and waits for it. `None` when shutdown
    /// began before it could start; otherwise how it ended.
    async fn run_once(&self, phase: Phase, spec: &Spec) -> Option<String> {
        let mut log = match open_log(spec) {
            Ok(log) => log,
            Err(e) => return Some(format!("could not open its log {}: {e}", spec.log.display())),
        };
        if let Some(prepare) = &spec.prepare
            && let Err(e) = prepare.run().await
        {
            let _ = writeln!(log, "--- {} weft: could not prepare {}: {e:#}", timestamp(), spec.label);
            return Some(format!("could not be prepared ({e:#})"));
        }
        let mut command = tokio::process::Command::new(&spec.program);
        command
            .args(&spec.args)
            .env_clear()
            .envs(&spec.env)
            .current_dir(&spec.cwd)
            .stdin(Stdio::null())
            .process_group(0)
            .kill_on_drop(false);
        match log.try_clone() {
            Ok(err) => command.stdout(log).stderr(err),
            Err(e) => return Some(format!("could not open its log {}: {e}", spec.log.display())),
        };
        // Spawn and register under the lock, so that a shutdown either sees
        // this PID or has already set `stopping`, which we check first.
        let (id, mut child) = {
            let mut state = self.lock();
            if state.stopping {
                return None;
            }
            let child = match command.spawn() {
                Ok(child) => child,
                Err(e) => return Some(format!("could not start ({}: {e})", spec.program.display())),
            };
            let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) else {
                return Some("exited at once".into());
            };
            let id = state.next_id;
            state.next_id += 1;
            state.running.insert(id, Running { label: spec.label.clone(), phase, pid });
            (id, child)
        };
        let status = child.wait().await;
        self.lock().running.remove(&id);
        Some(match status {
            Ok(status) => format!("exited ({status})"),
            Err(e) => format!("could not be waited for ({e})"),
        })
    }

    /// Stops everything: no more restarts, then each phase in order with
    /// SIGTERM, and SIGKILL for what is left after `grace`.
    pub async fn shutdown(&self, grace: Duration) {
        self.lock().stopping = true;
        self.stop_tx.send_replace(true);
        for phase in [Phase::Client, Phase::Server, Phase::Proxy, Phase::Control] {
            let tasks: Vec<JoinHandle<()>> = {
                let mut all = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
                let (this, rest): (Vec<_>, Vec<_>) = all.drain(..).partition(|(p, _)| *p == phase);
                *all = rest;
                this.into_iter().map(|(_, t)| t).collect()
            };
            self.signal(phase, Signal::SIGTERM);
            // A supervised task ends only once its process has.
            let mut all = std::pin::pin!(futures_util::future::join_all(tasks));
            if tokio::time::timeout(grace, &mut all).await.is_err() {
                for label in self.signal(phase, Signal::SIGKILL) {
                    tracing::warn!("{label} did not stop within {grace:?} of SIGTERM; killed");
                }
                let _ = tokio::time::timeout(grace, all).await;
            }
        }
    }

    /// Sends `signal` to the running processes of `phase`; their labels.
    fn signal(&self, phase: Phase, signal: Signal) -> Vec<String> {
        let state = self.lock();
        state
            .running
            .values()
            .filter(|r| r.phase == phase)
            .map(|r| {
                signal_group(r.pid, signal);
                r.label.clone()
            })
            .collect()
    }

    /// The last resort when an orderly shutdown cannot run (an error path
    /// or a panic): SIGKILL to everything still running, at once.
    pub fn kill_all_now(&self) {
        let mut state = self.lock();
        state.stopping = true;
        for r in state.running.values() {
            signal_group(r.pid, Signal::SIGKILL);
        }
        self.stop_tx.send_replace(true);
    }
}

fn open_log(spec: &Spec) -> std::io::Result<File> {
    let mut log = OpenOptions::new().create(true).append(true).open(&spec.log)?;
    writeln!(log, "--- {} weft: starting {}: {}", timestamp(), spec.label, spec.command_line())?;
    Ok(log)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &std::path::Path, label: &str, script: &str) -> Spec {
        Spec {
            label: label.into(),
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            env: [("PATH".to_owned(), "/usr/bin:/bin".to_owned())].into(),
            cwd: dir.to_owned(),
            log: dir.join(format!("{label}.log")),
            prepare: None,
        }
    }

    async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !check() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn restarts_with_backoff_and_stops_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let sup = Supervisor::default();
        // Exits at once: restarted after 1 s, then 2 s.
        sup.spawn(Phase::Client, spec(dir.path(), "crasher", "echo ran; exit 3"));
        // Ignores SIGTERM: killed after the grace period.
        sup.spawn(Phase::Proxy, spec(dir.path(), "stubborn", "trap '' TERM; while :; do sleep 0.05; done"));
        // Stops on SIGTERM, and records that the app phase was already gone.
        sup.spawn(
            Phase::Control,
            spec(dir.path(), "polite", "trap 'echo term; exit 0' TERM; while :; do sleep 0.05; done"),
        );

        eventually("the first restart", || sup.restarts("crasher") >= 1).await;
        eventually("all running", || sup.is_running("stubborn") && sup.is_running("polite")).await;
        let pids = sup.pids();
        assert!(pids.len() >= 2);

        let started = Instant::now();
        sup.shutdown(Duration::from_millis(500)).await;
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(sup.pids().is_empty(), "everything stopped");
        for pid in pids {
            assert!(nix::sys::signal::kill(Pid::from_raw(pid), None).is_err(), "{pid} is gone");
        }
        let crasher = std::fs::read_to_string(dir.path().join("crasher.log")).unwrap();
        assert!(crasher.matches("ran").count() >= 2, "{crasher}");
        assert!(crasher.contains("starting crasher: /bin/sh -c echo ran; exit 3"), "{crasher}");
        let polite = std::fs::read_to_string(dir.path().join("polite.log")).unwrap();
        assert!(polite.contains("term"), "SIGTERM first: {polite}");
        // No restart after shutdown.
        let restarts = sup.restarts("crasher");
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(sup.restarts("crasher"), restarts);
    }

    #[tokio::test]
    async fn prepare_runs_before_every_start_and_its_failure_is_a_failed_start() {
        let dir = tempfile::tempdir().unwrap();
        let sup = Supervisor::default();
        let count = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let mut s = spec(dir.path(), "prepared", "cat \"$0\"; exit 1");
        let file = dir.path().join("prepared.txt");
        s.args.push(file.clone().into());
        s.prepare = Some(Prepare::new({
            let count = Arc::clone(&count);
            move || {
                let (count, file) = (Arc::clone(&count), file.clone());
                async move {
                    let n = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    // The second preparation fails: that start is skipped and retried.
                    anyhow::ensure!(n != 2, "no token today");
                    std::fs::write(&file, format!("prepared {n}\n"))?;
                    Ok(())
                }
            }
        }));
        sup.spawn(Phase::Proxy, s);
        eventually("three preparations", || count.load(std::sync::atomic::Ordering::SeqCst) >= 3).await;
        eventually("the third start", || {
            std::fs::read_to_string(dir.path().join("prepared.log")).unwrap_or_default().contains("prepared 3")
        })
        .await;
        sup.shutdown(Duration::from_millis(500)).await;
        let log = std::fs::read_to_string(dir.path().join("prepared.log")).unwrap();
        assert!(log.contains("prepared 1\n"), "{log}");
        assert!(!log.contains("prepared 2"), "{log}");
        assert!(log.contains("could not prepare prepared: no token today"), "{log}");
        assert!(sup.restarts("prepared") >= 2);
    }

    #[tokio::test]
    async fn kill_all_now_is_immediate() {
        let dir = tempfile::tempdir().unwrap();
        let sup = Supervisor::default();
        sup.spawn(Phase::Client, spec(dir.path(), "sleeper", "trap '' TERM; sleep 30"));
        eventually("running", || sup.is_running("sleeper")).await;
        sup.kill_all_now();
        eventually("killed", || !sup.is_running("sleeper")).await;
    }
}
