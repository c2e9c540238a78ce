//! Pods as network namespaces.
//!
//! ```text
//!   netns wt-<pid>-<n>-hub                 netns wt-<pid>-<n>-a     netns wt-<pid>-<n>-b
//!   ┌───────────────────────────┐          ┌──────────────────┐     ┌──────────────────┐
//!   │ br0 ── v-a ───────────────┼── veth ──┼─ eth0 198.18.0.11│     │ eth0 198.18.0.12 │
//!   │     └─ v-b ───────────────┼── veth ──┼──────────────────┼─────┼─┘                │
//!   └───────────────────────────┘          │ lo, iptables,    │     │ lo, iptables,    │
//!                                          │ proxy, app, ...  │     │ proxy, app, ...  │
//!                                          └──────────────────┘     └──────────────────┘
//! ```
//!
//! Every interface is created from inside the hub (`ip -n HUB link add v-a
//! type veth peer name eth0 netns POD`), so nothing touches the root
//! namespace and parallel tests cannot collide on a name. Addresses come from
//! the RFC 2544 benchmarking range 198.18.0.0/15 and exist only inside these
//! namespaces. Names carry the test process's PID: dropping the [`Mesh`]
//! (also while a test panics) kills what runs in its pods and deletes the
//! namespaces, and the first mesh of a process sweeps away the namespaces of
//! test processes that died without cleaning up.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::env::{preflight, testkit_bin, tool};
use crate::eventually::eventually;
use crate::process::{self, Proc, Run};

/// How long a command run with [`Pod::exec`] may take.
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(60);

/// The first pod gets 198.18.0.11, the next .12, and so on.
const FIRST_HOST: u8 = 11;

/// A set of pods on one bridge. Create pods with [`Mesh::pod`]. Clones
/// share the bridge; the pods go when the last clone and pod are dropped.
#[derive(Clone)]
pub struct Mesh {
    inner: Arc<MeshInner>,
}

struct LogEntry {
    label: String,
    cmd: String,
    stdout: PathBuf,
    stderr: PathBuf,
}

pub(crate) struct MeshInner {
    prefix: String,
    hub: String,
    dir: PathBuf,
    pods: Mutex<Vec<String>>,
    logs: Mutex<Vec<LogEntry>>,
    files: AtomicUsize,
}

/// One network namespace with an address on the mesh's bridge.
#[derive(Clone)]
pub struct Pod {
    pub(crate) mesh: Arc<MeshInner>,
    name: String,
    ns: String,
    ip: Ipv4Addr,
}

fn ip(args: &[&str]) {
    let out = Command::new(tool("ip")).args(args).output().unwrap_or_else(|e| panic!("cannot run ip: {e}"));
    assert!(out.status.success(), "`ip {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

fn netns_list() -> Vec<String> {
    let out = Command::new(tool("ip")).args(["netns", "list"]).output().expect("running `ip netns list`");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// Kills every process in `ns` and deletes it. Errors are ignored: this runs
/// while cleaning up, possibly during a panic.
fn destroy_netns(ns: &str) {
    if let Ok(out) = Command::new(tool("ip")).args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse() {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
    let _ = Command::new(tool("ip")).args(["netns", "del", ns]).output();
}

/// Deletes `wt-<pid>-*` namespaces left behind by test processes that are gone.
fn sweep_stale() {
    static SWEPT: OnceLock<()> = OnceLock::new();
    SWEPT.get_or_init(|| {
        for ns in netns_list() {
            let Some(pid) =
                ns.strip_prefix("wt-").and_then(|rest| rest.split('-').next()).and_then(|pid| pid.parse::<u32>().ok())
            else {
                continue;
            };
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                eprintln!("weft-tests: removing namespace {ns} left by dead process {pid}");
                destroy_netns(&ns);
            }
        }
    });
}

impl Mesh {
    /// Checks the machine ([`preflight`]), then creates the hub namespace and
    /// its bridge.
    pub fn new() -> Mesh {
        preflight();
        sweep_stale();
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let prefix = format!("wt-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let dir = std::env::temp_dir().join("weft-tests").join(&prefix);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let hub = format!("{prefix}-hub");
        // Own the name before creating it, so a failure below still cleans up.
        let inner = MeshInner {
            prefix,
            hub: hub.clone(),
            dir,
            pods: Mutex::new(Vec::new()),
            logs: Mutex::new(Vec::new()),
            files: AtomicUsize::new(0),
        };
        ip(&["netns", "add", &hub]);
        ip(&["-n", &hub, "link", "set", "lo", "up"]);
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &hub, "link", "set", "br0", "up"]);
        Mesh { inner: Arc::new(inner) }
    }

    /// A new pod named `name` (short: it becomes part of an interface name),
    /// joined to the bridge, with `lo` and `eth0` up.
    pub fn pod(&self, name: &str) -> Pod {
        assert!(
            name.len() <= 8 && name.chars().all(|c| c.is_ascii_alphanumeric()),
            "pod names are up to 8 ASCII letters or digits, not {name:?}"
        );
        let inner = &self.inner;
        let ns = format!("{}-{name}", inner.prefix);
        let host = {
            let mut pods = inner.pods.lock().unwrap_or_else(|e| e.into_inner());
            assert!(!pods.contains(&ns), "this mesh already has a pod named {name}");
            pods.push(ns.clone());
            FIRST_HOST + u8::try_from(pods.len() - 1).expect("fewer than 200 pods")
        };
        let ip_addr = Ipv4Addr::new(198, 18, 0, host);
        let hub = &inner.hub;
        let veth = format!("v-{name}");
        ip(&["netns", "add", &ns]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        ip(&["-n", hub, "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns]);
        ip(&["-n", hub, "link", "set", &veth, "master", "br0"]);
        ip(&["-n", hub, "link", "set", &veth, "up"]);
        ip(&["-n", &ns, "addr", "add", &format!("{ip_addr}/24"), "dev", "eth0"]);
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        Pod { mesh: self.inner.clone(), name: name.to_owned(), ns, ip: ip_addr }
    }

    /// A process in the test's own network namespace (not a pod's), logged
    /// and ended like the pods' processes: e.g. `weft-testkit forward`.
    pub fn spawn_host<S: AsRef<OsStr>>(&self, label: &str, program: impl AsRef<OsStr>, args: &[S]) -> Proc {
        let mut cmd = Command::new(program);
        cmd.args(args);
        Proc::spawn(self.inner.clone(), label, cmd)
    }

    /// A directory for this test's files (removed when the test passes).
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }
}

impl Default for Mesh {
    fn default() -> Self {
        Mesh::new()
    }
}

impl MeshInner {
    /// Fresh stdout/stderr file paths for a process labelled `label`.
    pub(crate) fn log_paths(&self, label: &str) -> (PathBuf, PathBuf) {
        let n = self.files.fetch_add(1, Ordering::Relaxed);
        let label = label.replace('/', "-");
        (self.dir.join(format!("{n:03}-{label}.stdout")), self.dir.join(format!("{n:03}-{label}.stderr")))
    }

    pub(crate) fn record_log(&self, label: &str, cmd: &str, stdout: &Path, stderr: &Path) {
        self.logs.lock().unwrap_or_else(|e| e.into_inner()).push(LogEntry {
            label: label.to_owned(),
            cmd: cmd.to_owned(),
            stdout: stdout.to_owned(),
            stderr: stderr.to_owned(),
        });
    }

    fn dump_logs(&self) {
        let logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        let mut report = String::new();
        for log in logs.iter() {
            let _ = writeln!(report, "\n===== {}: {}", log.label, log.cmd);
            for (stream, path) in [("stdout", &log.stdout), ("stderr", &log.stderr)] {
                let text = process::read_lossy(path);
                let lines: Vec<_> = text.lines().collect();
                let skip = lines.len().saturating_sub(300);
                let _ = writeln!(
                    report,
                    "----- {stream} ({} lines{})",
                    lines.len(),
                    if skip > 0 { ", last 300 shown" } else { "" }
                );
                for line in &lines[skip..] {
                    let _ = writeln!(report, "{line}");
                }
            }
        }
        eprintln!("{report}\n===== logs kept in {}", self.dir.display());
    }
}

impl Drop for MeshInner {
    fn drop(&mut self) {
        let pods = std::mem::take(&mut *self.pods.lock().unwrap_or_else(|e| e.into_inner()));
        for ns in &pods {
            destroy_netns(ns);
        }
        destroy_netns(&self.hub);
        if std::thread::panicking() {
            self.dump_logs();
            // Keep the logs, not the multi-MiB test bodies.
            for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
                if entry.metadata().is_ok_and(|m| m.is_file() && m.len() > 1 << 20) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Pod {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A process in the test's own network namespace, logged and ended with
    /// this pod's (see [`Mesh::spawn_host`]).
    pub fn spawn_host<S: AsRef<OsStr>>(&self, label: &str, program: impl AsRef<OsStr>, args: &[S]) -> Proc {
        let mut cmd = Command::new(program);
        cmd.args(args);
        Proc::spawn(self.mesh.clone(), label, cmd)
    }

    /// The network namespace's name.
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// The pod's address on the bridge.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// `ip:port` of this pod.
    pub fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::from((self.ip, port))
    }

    /// The mesh's directory for test files.
    pub fn dir(&self) -> &Path {
        &self.mesh.dir
    }

    /// `ip netns exec NS program args...`; a bare program name is resolved to
    /// its absolute path first.
    pub fn command<S: AsRef<OsStr>>(&self, program: impl AsRef<OsStr>, args: &[S]) -> Command {
        let program = program.as_ref();
        let program = if Path::new(program).components().count() > 1 {
            PathBuf::from(program)
        } else {
            tool(&program.to_string_lossy())
        };
        let mut cmd = Command::new(tool("ip"));
        cmd.args(["netns", "exec", &self.ns]).arg(program).args(args);
        cmd
    }

    /// Starts `cmd` (made with [`Pod::command`], then adjusted), as
    /// [`Pod::spawn`] does.
    pub fn spawn_command(&self, label: &str, cmd: Command) -> Proc {
        let label = format!("{}/{label}", self.name);
        Proc::spawn(self.mesh.clone(), &label, cmd)
    }

    /// Runs a command in the pod to completion (at most [`EXEC_TIMEOUT`]).
    pub fn exec<S: AsRef<OsStr>>(&self, program: impl AsRef<OsStr>, args: &[S]) -> Run {
        process::run(&self.mesh, self.command(program, args), EXEC_TIMEOUT)
    }

    /// Starts a command in the pod, as root; it is killed when the returned
    /// [`Proc`] is dropped.
    pub fn spawn<S: AsRef<OsStr>>(&self, label: &str, program: impl AsRef<OsStr>, args: &[S]) -> Proc {
        let label = format!("{}/{label}", self.name);
        Proc::spawn(self.mesh.clone(), &label, self.command(program, args))
    }

    /// Runs a `weft-testkit` client in the pod to completion.
    pub fn testkit<S: AsRef<OsStr>>(&self, args: &[S]) -> Run {
        self.exec(testkit_bin(), args)
    }

    /// Starts a `weft-testkit` workload in the pod.
    pub fn spawn_testkit<S: AsRef<OsStr>>(&self, label: &str, args: &[S]) -> Proc {
        self.spawn(label, testkit_bin(), args)
    }

    /// Starts the testkit HTTP server on `port` (all addresses) and waits
    /// until it listens.
    pub fn http_server(&self, port: u16) -> Proc {
        let listen = format!("0.0.0.0:{port}");
        let proc = self.spawn_testkit(&format!("http-{port}"), &["http-server", "--listen", &listen]);
        self.wait_listening(port);
        proc
    }

    /// Waits until something in the pod listens on TCP `port` (as `ss` sees it).
    #[track_caller]
    pub fn wait_listening(&self, port: u16) {
        let filter = format!("sport = :{port}");
        eventually(Duration::from_secs(10), &format!("a listener on port {port} in pod {}", self.name), || {
            let run = self.exec("ss", &["-Hltn", &filter]);
            if run.stdout.trim().is_empty() { Err(format!("ss shows nothing: {run}")) } else { Ok(()) }
        })
    }
}
