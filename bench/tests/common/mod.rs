//! Running `weft-bench` from an integration test: its output to files (it
//! can be long), bounded by a deadline after which it is asked to stop.

use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// What a run of `weft-bench` left.
pub struct Run {
    /// `None`: it still ran at the deadline and was stopped.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

/// Runs `cmd` (a `weft-bench` command line) to its end or to `deadline`.
pub fn run(mut cmd: Command, deadline: Duration) -> Run {
    let logs = tempfile::tempdir().expect("a temporary directory");
    let (stdout_path, stderr_path) = (logs.path().join("stdout"), logs.path().join("stderr"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("starting weft-bench");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for weft-bench") {
            break Some(status);
        }
        if started.elapsed() > deadline {
            // SIGTERM by PID: the bench stops between steps and removes its pods.
            let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let took = started.elapsed();
    Run { status, stdout: read(&stdout_path), stderr: read(&stderr_path), took }
}

/// A file's text, empty when it cannot be read.
pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}
