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
                let (stacks, drain) = (stacks.clone(), drain.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    match dir {
                        Direction::Inbound => {
                            crate::inbound::accept::serve(stream, peer, stacks.inbound.clone(), drain).await
                        }
                        Direction::Outbound => {
                            crate::outbound::accept::serve(stream, peer, stacks.outbound.clone(), drain).await
                        }
                    }
                });
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
