//! Stop requests: Ctrl-C, SIGTERM and SIGHUP, counted, for every command
//! that runs until told to stop (`weft up`, `weft demo`, `weft rollout`).
//!
//! A leaf: the mesh lifecycle (`runtime`) and the commands share
//! it without depending on each other. The first signal asks for an orderly
//! stop; [`Stop::wait_beyond`] lets the lifecycle notice a second one.

use tokio::sync::watch;

/// Ctrl-C, SIGTERM or SIGHUP asked the mesh to stop.
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
pub struct Interrupted;

/// Counts stop signals; the first one stops the mesh in order.
#[derive(Clone)]
pub struct Stop {
    rx: watch::Receiver<u32>,
}

impl Stop {
    /// Takes over SIGINT, SIGTERM and SIGHUP for the rest of the process.
    pub fn install() -> std::io::Result<Stop> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut hup = signal(SignalKind::hangup())?;
        let (tx, rx) = watch::channel(0u32);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = int.recv() => {},
                    _ = term.recv() => {},
                    _ = hup.recv() => {},
                }
                tx.send_modify(|n| *n += 1);
            }
        });
        Ok(Stop { rx })
    }

    pub fn requested(&self) -> bool {
        *self.rx.borrow() > 0
    }

    pub fn check(&self) -> Result<(), Interrupted> {
        if self.requested() { Err(Interrupted) } else { Ok(()) }
    }

    /// Completes once a stop was requested.
    pub async fn wait(&self) {
        self.wait_beyond(0).await;
    }

    /// How many stop signals have arrived so far.
    pub(crate) fn signals(&self) -> u32 {
        *self.rx.borrow()
    }

    /// Completes once more than `n` stop signals have arrived.
    pub(crate) async fn wait_beyond(&self, n: u32) {
        let mut rx = self.rx.clone();
        let _ = rx.wait_for(|count| *count > n).await;
    }
}
