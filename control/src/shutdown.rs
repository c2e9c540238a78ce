//! A shutdown signal shared by every task: fired once, observed by many.

use tokio::sync::watch;

/// Fires the signal. Dropping it fires it too, so a task never outlives
/// the control plane that started it.
#[derive(Debug)]
pub struct Trigger(watch::Sender<bool>);

/// Resolves once the control plane shuts down.
#[derive(Clone, Debug)]
pub struct Shutdown(watch::Receiver<bool>);

pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger(tx), Shutdown(rx))
}

impl Trigger {
    pub fn fire(&self) {
        self.0.send_replace(true);
    }
}

impl Shutdown {
    /// Waits for the signal (or for the trigger to be dropped).
    pub async fn signaled(&mut self) {
        let _ = self.0.wait_for(|fired| *fired).await;
    }

    pub fn is_signaled(&self) -> bool {
        *self.0.borrow()
    }
}
