//! Ctrl-C and SIGTERM: the orchestrator must not die between creating
//! namespaces and deleting them. A signal sets a flag; the harness checks it
//! between steps (each step is bounded in time), returns an error, and the
//! pods are torn down as the stack unwinds. A second signal does the same:
//! tearing down is quick, and a run killed harder leaves namespaces that the
//! next `weft-tests` mesh sweeps away (their names carry our PID).

use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};

/// Kills (by its PID) and reaps the child on drop, error or not.
#[derive(Debug)]
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

static STOP: AtomicBool = AtomicBool::new(false);

/// Starts the signal thread. Call once, before creating anything.
pub fn install() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
    // Registering here, not in the thread, so that no signal can arrive
    // between this returning and the handlers existing.
    let (mut int, mut term) = rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        Ok::<_, std::io::Error>((signal(SignalKind::interrupt())?, signal(SignalKind::terminate())?))
    })?;
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        rt.block_on(async {
            loop {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
                STOP.store(true, Ordering::SeqCst);
                eprintln!("weft-bench: stopping: finishing the current step, then removing the pods");
            }
        })
    })?;
    Ok(())
}

/// Whether a stop was asked for.
pub fn requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// An error if a stop was asked for: `?` it between steps.
pub fn check() -> anyhow::Result<()> {
    anyhow::ensure!(!requested(), "interrupted by a signal");
    Ok(())
}
