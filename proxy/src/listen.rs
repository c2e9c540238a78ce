//! The listeners: accept (capped), then hand each connection to its
//! direction's stack. Direction is decided here, once, by which listener
//! accepted; nothing below branches on it.
//!
//! ```text
//! inbound listener  :4143 ─► accept (capped) ─► inbound::accept::serve
//! outbound listener :4140 ─► accept (capped) ─► outbound::accept::serve
//! ```

use std::sync::Arc;
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
                // One task per direction's future rather than one future
                // matching on the direction: a task is as large as its
                // future, and the inbound one is larger (issue #14).
                match dir {
                    Direction::Inbound => {
                        let serve = crate::inbound::accept::serve(stream, peer, stacks.inbound.clone(), drain.clone());
                        tokio::spawn(async move {
                            let _permit = permit;
                            serve.await
                        });
                    }
                    Direction::Outbound => {
                        let serve =
                            crate::outbound::accept::serve(stream, peer, stacks.outbound.clone(), drain.clone());
                        tokio::spawn(async move {
                            let _permit = permit;
                            serve.await
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
