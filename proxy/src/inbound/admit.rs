//! Admission: the stage between accept and a known peer (detection, the
//! ClientHello, the mesh TLS handshake), where a connection has cost us work
//! and memory but has not yet shown it is a client at all. A hostile or
//! broken peer can open these far faster than good clients open theirs
//! (garbage, a ClientHello and then silence, a connect and nothing), so
//! this stage is bounded on its own:
//!
//! ```text
//! accept ─► decide(source's share, total) ─ shed ──► closed at once (counted: shed)
//!                └─ enter ─► detect ─► hello ─► TLS handshake ─► slot released ─► served
//!                            └─ detection timeout ─┘└─ HANDSHAKE_TIMEOUT ─┘ (counted: timeout)
//! ```
//!
//! Two bounds: the total (memory, whatever arrives) and a share per source
//! address (fairness: one misbehaving client fills its own share and is shed
//! beyond it, while other peers still get in). The share also bounds the CPU
//! one client can spend on us: every ClientHello costs a key exchange and a
//! signature, so a client stalling handshakes starts at most
//! `PER_SOURCE / HANDSHAKE_TIMEOUT` of them per second. Connections already
//! past admission are untouched by any of this. A good client shed here
//! sees its connection closed before any byte and retries (a meshed peer's
//! proxy does so by itself: the request was never sent).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Fewest admission slots, whatever the connection cap: enough for the
/// handshake bursts of a busy pod (every peer proxy reconnecting at once).
const MIN_SLOTS: usize = 64;
/// Most admission slots. Each holds a detection buffer or a TLS handshake
/// in progress (a few tens of KiB at most); 1,024 of them bound this
/// stage's memory to tens of MiB whatever arrives.
const MAX_SLOTS: usize = 1024;

/// Most connections one source address may have in admission at once.
/// A peer proxy finishes each handshake in milliseconds and plaintext
/// clients are detected in one read, so even a burst (a client's
/// connection pool of 100 opened at start-up, each an mTLS connection of
/// its proxy) stays under it; a client stalling handshakes can start at
/// most 64 per second.
pub const PER_SOURCE: usize = 128;

/// How long a mesh client has, once its ClientHello is in, to finish the
/// handshake: it sends its last flight one round trip after our
/// ServerHello. Far shorter than the outbound side's connect budget, since
/// a peer that stalls here holds a slot others need.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// How many inbound connections may be in admission at once, given the
/// proxy's cap on connections: an eighth of it, within
/// [`MIN_SLOTS`]..=[`MAX_SLOTS`], and never more than the cap.
pub fn slots(max_connections: usize) -> usize {
    (max_connections / 8).clamp(MIN_SLOTS, MAX_SLOTS).min(max_connections)
}

/// What admission does with a new connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    Enter,
    /// Its source already holds its share.
    ShedSource,
    /// Admission is full.
    ShedFull,
}

/// Decides for a new connection from a source that has `from_source`
/// connections in admission, when `total` are (pure; see the table test).
pub fn decide(from_source: usize, total: usize, slots: usize) -> Admit {
    if from_source >= PER_SOURCE {
        Admit::ShedSource
    } else if total >= slots {
        Admit::ShedFull
    } else {
        Admit::Enter
    }
}

/// The admission slots of the inbound listener: how many connections are in
/// admission, in total and per source address.
#[derive(Debug, Clone)]
pub struct Admission {
    slots: usize,
    held: Arc<Mutex<Held>>,
}

#[derive(Debug, Default)]
struct Held {
    total: usize,
    by_source: HashMap<IpAddr, usize>,
}

/// A connection's place in admission; dropping it frees the slot.
#[derive(Debug)]
pub struct Slot {
    source: IpAddr,
    held: Arc<Mutex<Held>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.total -= 1;
        if let Some(n) = held.by_source.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                // Only sources with connections in admission stay in the
                // map, so it is bounded by the slots.
                held.by_source.remove(&self.source);
            }
        }
    }
}

impl Admission {
    pub fn new(max_connections: usize) -> Admission {
        Admission { slots: slots(max_connections), held: Arc::default() }
    }

    /// A slot for a connection from `source`, or why not: the caller closes
    /// the connection at once rather than queue it (queued, a flood's
    /// connections would wait in front of good ones).
    pub fn try_enter(&self, source: IpAddr) -> Result<Slot, Admit> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let from_source = held.by_source.get(&source).copied().unwrap_or(0);
        match decide(from_source, held.total, self.slots) {
            Admit::Enter => {
                held.total += 1;
                *held.by_source.entry(source).or_default() += 1;
                Ok(Slot { source, held: self.held.clone() })
            }
            shed => Err(shed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_an_eighth_of_the_connection_cap_within_bounds() {
        for (max_connections, want) in
            [(1, 1), (10, 10), (64, 64), (100, 64), (512, 64), (1_000, 125), (10_000, 1_024), (1 << 20, 1_024)]
        {
            assert_eq!(slots(max_connections), want, "max_connections {max_connections}");
        }
    }

    #[test]
    fn a_source_is_shed_past_its_share_and_everyone_when_full() {
        for (from_source, total, slots, want) in [
            (0, 0, 64, Admit::Enter),
            (127, 63, 1_024, Admit::Enter),
            (128, 128, 1_024, Admit::ShedSource),
            (128, 1_024, 1_024, Admit::ShedSource),
            (0, 64, 64, Admit::ShedFull),
            (5, 1_024, 1_024, Admit::ShedFull),
            (0, 1_023, 1_024, Admit::Enter),
        ] {
            assert_eq!(decide(from_source, total, slots), want, "{from_source} from the source, {total}/{slots}");
        }
    }

    #[test]
    fn a_flooding_source_fills_its_share_and_others_still_enter_and_slots_free_on_drop() {
        let admission = Admission::new(2_048);
        let (flood, good): (IpAddr, IpAddr) = ("198.18.0.14".parse().unwrap(), "198.18.0.13".parse().unwrap());
        let taken: Vec<Slot> = (0..PER_SOURCE).map(|_| admission.try_enter(flood).expect("a free slot")).collect();
        assert_eq!(admission.try_enter(flood).unwrap_err(), Admit::ShedSource);
        let others: Vec<Slot> =
            (0..PER_SOURCE).map(|_| admission.try_enter(good).expect("another source enters")).collect();
        let rest: Vec<Slot> = (0..slots(2_048) - 2 * PER_SOURCE)
            .map(|i| admission.try_enter(IpAddr::from([198, 18, 1, (i % 250) as u8])).expect("room left"))
            .collect();
        assert_eq!(admission.try_enter("198.18.0.15".parse().unwrap()).unwrap_err(), Admit::ShedFull);
        drop(taken);
        drop(others);
        drop(rest);
        let held = admission.held.lock().unwrap();
        assert_eq!((held.total, held.by_source.len()), (0, 0), "slots were not freed");
    }
}
