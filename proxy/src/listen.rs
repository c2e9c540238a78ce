//! The listeners: accept (capped), then hand each connection to its
//! direction's stack. Direction is decided here, once, by which listener
//! accepted; nothing below branches on it.
//!
//! ```text
//! inbound listener  :4143 ─► accept (capped) ─► admission (inbound/admit.rs) ─► inbound::accept::serve
//! outbound listener :4140 ─► accept (capped) ─► outbound::accept::serve
//!                             set-up task: detection, handshake, policy ─► serving task (its own)
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
use crate::transport::Serving;

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
                            let serve = crate::inbound::accept::serve(stream, peer, slot, inbound, drain);
                            if let Some(serving) = serve.await {
                                serve_in_own_task(serving, permit);
                            }
                        });
                    }
                    Direction::Outbound => {
                        let outbound = stacks.outbound.clone();
                        tokio::spawn(async move {
                            if let Some(serving) = crate::outbound::accept::serve(stream, peer, outbound, drain).await {
                                serve_in_own_task(serving, permit);
                            }
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

/// Runs a set-up connection's serving stage in a task of its own, holding
/// its place under the connection cap. A task is allocated at the size of
/// its whole future for its whole life: the set-up task (detection, the
/// handshake, waiting for policy) ends here and is freed, so a connection
/// that then idles for hours holds only what serving it needs (issue #14:
/// an idle mTLS connection's inbound task went from ~2.2 KB to ~0.3 KB).
fn serve_in_own_task(serving: Serving, permit: tokio::sync::OwnedSemaphorePermit) {
    tokio::spawn(async move {
        let _permit = permit;
        serving.await
    });
}
