//! The listeners: accept (capped), then hand each connection to its
//! direction's stack. Direction is decided here, once, by which listener
//! accepted; nothing below branches on it.
//!
//! ```text
//! inbound listener  :4143 ─► accept (capped) ─► admission (inbound/admit.rs) ─► inbound::accept::serve
//! outbound listener :4140 ─► accept (capped) ─► outbound::accept::serve
//! ```

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::drain;
use crate::inbound::Inbound;
use crate::metrics::Direction;
use crate::outbound::Outbound;

/// Both stacks, and the cap on downstream connections they share.
#[derive(Debug)]
pub struct Stacks {
    pub inbound: Arc<Inbound>,
    pub outbound: Arc<Outbound>,
    /// Caps concurrent downstream connections across both listeners.
    pub limit: Arc<Semaphore>,
}

/// Accepts connections until draining starts, then drops the listener so
/// that new connections are refused.
pub async fn accept_loop(listener: TcpListener, dir: Direction, stacks: Arc<Stacks>, drain: drain::Watch) {
    loop {
        // Waiting for a permit before accepting leaves excess connections in
        // the kernel's backlog instead of in our memory.
        let permit = tokio::select! {
            p = stacks.limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = drain.signaled() => break,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = drain.signaled() => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                let drain = drain.clone();
                // One task per direction's future rather than one future
                // matching on the direction: a task is as large as its
                // future, and the inbound one is larger (issue #14).
                match dir {
                    Direction::Inbound => {
                        // Inbound admission is decided here, before a task
                        // exists: shedding a flood then costs an accept and
                        // a close, and the tasks of connections already
                        // served are not queued behind thousands of doomed
                        // ones.
                        let inbound = stacks.inbound.clone();
                        let slot = match inbound.admission.try_enter(peer.ip()) {
                            Ok(slot) => slot,
                            Err(why) => {
                                inbound.http.metrics.inbound_shed.fetch_add(1, Relaxed);
                                tracing::debug!(%peer, ?why, "inbound admission full; closing the connection");
                                continue;
                            }
                        };
                        tokio::spawn(async move {
                            let _permit = permit;
                            crate::inbound::accept::serve(stream, peer, slot, inbound, drain).await
                        });
                    }
                    Direction::Outbound => {
                        let outbound = stacks.outbound.clone();
                        tokio::spawn(async move {
                            let _permit = permit;
                            crate::outbound::accept::serve(stream, peer, outbound, drain).await
                        });
                    }
                }
            }
            Err(e) => {
                // EMFILE and friends: back off briefly rather than spin.
                tracing::warn!(direction = dir.as_str(), error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    tracing::info!(direction = dir.as_str(), "listener closed");
}
