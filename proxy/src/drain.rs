//! Graceful shutdown.
//!
//! A [`Signal`] is fired once (SIGTERM, SIGINT or admin `/shutdown`). Every
//! listener and connection holds a [`Watch`]: listeners stop accepting as soon
//! as draining starts, HTTP connections finish their in-flight requests and
//! close, and [`Signal::drain`] resolves when the last `Watch` is dropped, or
//! the caller's deadline passes first.

use tokio::sync::{mpsc, watch};

/// Starts draining and waits for all watchers to go away.
#[derive(Debug)]
pub struct Signal {
    tx: watch::Sender<bool>,
    // Every Watch holds a sender; `recv` returns None when all are dropped.
    done_rx: mpsc::Receiver<std::convert::Infallible>,
}

/// Held by everything that must finish before the process exits.
#[derive(Clone, Debug)]
pub struct Watch {
    rx: watch::Receiver<bool>,
    _done: mpsc::Sender<std::convert::Infallible>,
}

/// A cheap handle that can start draining from anywhere (e.g. `/shutdown`).
#[derive(Clone, Debug)]
pub struct Trigger(watch::Sender<bool>);

pub fn channel() -> (Signal, Watch) {
    let (tx, rx) = watch::channel(false);
    let (done_tx, done_rx) = mpsc::channel(1);
    (Signal { tx, done_rx }, Watch { rx, _done: done_tx })
}

impl Signal {
    pub fn trigger(&self) -> Trigger {
        Trigger(self.tx.clone())
    }

    /// Resolves once draining has been requested through a [`Trigger`].
    pub async fn requested(&mut self) {
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(|draining| *draining).await;
    }

    /// Starts draining and waits until every [`Watch`] is dropped.
    pub async fn drain(mut self) {
        self.tx.send_replace(true);
        while self.done_rx.recv().await.is_some() {}
    }
}

impl Trigger {
    pub fn fire(&self) {
        self.0.send_replace(true);
    }

    pub fn is_fired(&self) -> bool {
        *self.0.borrow()
    }
}

impl Watch {
    /// Resolves when draining starts (immediately if it already has).
    pub async fn signaled(&self) {
        let mut rx = self.rx.clone();
        let _ = rx.wait_for(|draining| *draining).await;
    }

    pub fn is_draining(&self) -> bool {
        *self.rx.borrow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn drain_waits_for_every_watch() {
        let (signal, watch) = channel();
        let w2 = watch.clone();
        let task = tokio::spawn(async move {
            w2.signaled().await;
            tokio::time::sleep(Duration::from_secs(2)).await;
            drop(w2);
        });
        drop(watch);
        let start = tokio::time::Instant::now();
        signal.drain().await;
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        task.await.expect("task");
    }

    #[tokio::test]
    async fn trigger_is_seen_by_requested_and_watchers() {
        let (mut signal, watch) = channel();
        assert!(!watch.is_draining());
        signal.trigger().fire();
        signal.requested().await;
        watch.signaled().await;
        assert!(watch.is_draining());
    }
}
