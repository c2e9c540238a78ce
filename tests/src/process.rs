//! Processes inside pods: [`Run`], a finished command with its output, and
//! [`Proc`], a running one (a workload, a proxy, a client in the background)
//! whose stdout and stderr go to log files that the mesh prints if the test
//! fails. A `Proc` is killed by its PID when dropped, panicking or not.

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::eventually::eventually;
use crate::mesh::MeshInner;

/// A command that ran to completion.
#[derive(Debug)]
pub struct Run {
    /// The command line, for messages.
    pub cmd: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Run {
    /// Panics (showing everything) unless the command exited 0.
    #[track_caller]
    pub fn ok(self) -> Run {
        assert!(self.status.success(), "command failed:\n{self}");
        self
    }

    /// The exit code, or `None` if a signal ended the command.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// The value of the first stdout line `key=value`.
    #[track_caller]
    pub fn field(&self, key: &str) -> &str {
        let prefix = format!("{key}=");
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no `{key}=` line in the output of:\n{self}"))
    }
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "$ {}", self.cmd)?;
        writeln!(f, "exit: {} after {:?}", self.status, self.elapsed)?;
        writeln!(f, "stdout:\n{}", truncate(&self.stdout, 8192))?;
        write!(f, "stderr:\n{}", truncate(&self.stderr, 8192))
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}… ({} bytes more)", &text[..cut], text.len() - cut)
}

pub(crate) fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd` to completion with its output in files under the mesh's
/// directory; panics if it is still running after `within`.
pub(crate) fn run(mesh: &MeshInner, cmd: Command, within: Duration) -> Run {
    run_logged(cmd, mesh.log_paths("exec"), within)
}

/// Starts `cmd` with no stdin and its stdout and stderr in the two files
/// given; the child and the command line, for messages.
pub(crate) fn spawn_logged(mut cmd: Command, out_path: &Path, err_path: &Path) -> (Child, String) {
    let described = describe(&cmd);
    let child = cmd
        .stdin(Stdio::null())
        .stdout(File::create(out_path).expect("creating a log file"))
        .stderr(File::create(err_path).expect("creating a log file"))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{described}`: {e}"));
    (child, described)
}

/// Runs `cmd` to completion with its stdout and stderr in the two files
/// given (removed afterwards: the [`Run`] holds them); panics if it is
/// still running after `within`.
pub fn run_logged(cmd: Command, (out_path, err_path): (PathBuf, PathBuf), within: Duration) -> Run {
    let start = Instant::now();
    let (mut child, described) = spawn_logged(cmd, &out_path, &err_path);
    let status = wait_child(&mut child, within).unwrap_or_else(|| {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "`{described}` did not finish within {within:?}; stdout:\n{}\nstderr:\n{}",
            read_lossy(&out_path),
            read_lossy(&err_path)
        )
    });
    let run = Run {
        cmd: described,
        status,
        stdout: read_lossy(&out_path),
        stderr: read_lossy(&err_path),
        elapsed: start.elapsed(),
    };
    let _ = std::fs::remove_file(&out_path);
    let _ = std::fs::remove_file(&err_path);
    run
}

fn wait_child(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("waiting for a child") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub(crate) fn read_lossy(path: &std::path::Path) -> String {
    std::fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
}

/// A process running in a pod.
pub struct Proc {
    label: String,
    cmd: String,
    child: Child,
    status: Option<ExitStatus>,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    started: Instant,
    /// Keeps the namespaces alive while the process runs in them.
    _mesh: Arc<MeshInner>,
}

impl Proc {
    pub(crate) fn spawn(mesh: Arc<MeshInner>, label: &str, cmd: Command) -> Proc {
        let (stdout_path, stderr_path) = mesh.log_paths(label);
        let (child, described) = spawn_logged(cmd, &stdout_path, &stderr_path);
        mesh.record_log(label, &described, &stdout_path, &stderr_path);
        Proc {
            started: Instant::now(),
            label: label.to_owned(),
            cmd: described,
            child,
            status: None,
            stdout_path,
            stderr_path,
            _mesh: mesh,
        }
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// The process's PID (`ip netns exec` and `setpriv` exec the command, so
    /// this is the workload itself).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it wrote to stdout so far.
    pub fn stdout(&self) -> String {
        read_lossy(&self.stdout_path)
    }

    /// Everything it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        read_lossy(&self.stderr_path)
    }

    /// Sends `signal` to the process.
    #[track_caller]
    pub fn signal(&self, signal: Signal) {
        let pid = Pid::from_raw(i32::try_from(self.pid()).expect("a PID fits in i32"));
        nix::sys::signal::kill(pid, signal)
            .unwrap_or_else(|e| panic!("sending {signal} to {} ({}): {e}", self.label, self.pid()));
    }

    /// Its exit status if it has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("waiting for a child");
        }
        self.status
    }

    /// Waits for it to exit; panics if it is still running after `within`.
    #[track_caller]
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let what = format!("{} (`{}`) exits", self.label, self.cmd);
        eventually(within, &what, || self.try_status().ok_or_else(|| "still running".to_owned()))
    }

    /// Waits for it to exit and returns it as a [`Run`] (`elapsed` counts
    /// from the spawn until the wait saw it exit).
    #[track_caller]
    pub fn finish(mut self, within: Duration) -> Run {
        let status = self.wait_exit(within);
        let elapsed = self.started.elapsed();
        Run { cmd: self.cmd.clone(), status, stdout: self.stdout(), stderr: self.stderr(), elapsed }
    }

    /// Waits until its stdout contains `needle`; panics if it exits first or
    /// the deadline passes.
    #[track_caller]
    pub fn wait_stdout(&mut self, needle: &str, within: Duration) {
        let what = format!("{} prints {needle:?}", self.label);
        eventually(within, &what, || {
            let out = self.stdout();
            if out.contains(needle) {
                return Ok(());
            }
            match self.try_status() {
                Some(status) => panic!(
                    "{} exited ({status}) before printing {needle:?}:\nstdout:\n{out}\nstderr:\n{}",
                    self.label,
                    self.stderr()
                ),
                None => Err(format!("stdout so far: {out:?}")),
            }
        })
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.try_status().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
