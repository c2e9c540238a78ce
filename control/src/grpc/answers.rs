//! Answers shared by the watch streams that ask the same question.
//!
//! A thousand proxies of one Deployment watch the same target's outbound
//! policy. Without sharing, a change makes each of their streams compute,
//! compare and drop its own copy of one and the same answer. Here the first
//! stream to see a new [`Stamp`] for a question computes the answer; the
//! others find it in the question's slot and only clone it to send.
//!
//! ```text
//!  stream ──key──► Answers: key → Slot { stamp, Arc<answer> }   (one per question asked)
//!     │ same stamp as the slot's? ──yes──► the slot's Arc
//!     └───────────────────────────  no ──► compute, keep it in the slot
//! ```
//!
//! A slot lives while a stream holds its [`Asker`]: the table never holds
//! questions nobody asks any more, whatever targets proxies make up.
//! Answers are kept with version 0; the stream sets the version it sends.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};

use super::watch::Snapshot;
use crate::index::{Stamp, State};

/// The slots of one kind of question, keyed by the question.
#[derive(Debug)]
pub struct Answers<K, T> {
    slots: Arc<Mutex<HashMap<K, Held<T>>>>,
}

impl<K, T> Default for Answers<K, T> {
    fn default() -> Self {
        Self { slots: Arc::default() }
    }
}

/// A slot and the number of streams asking its question.
#[derive(Debug)]
struct Held<T> {
    slot: Arc<Mutex<Slot<T>>>,
    askers: usize,
}

/// The newest answer computed for a question.
#[derive(Debug)]
struct Slot<T> {
    /// The state version it was computed from: an older state never
    /// replaces a newer one's answer.
    version: u64,
    stamp: Option<Stamp>,
    answer: Option<Arc<T>>,
}

impl<K: Hash + Eq + Clone, T> Answers<K, T> {
    /// The slot for `key`, held until the returned asker is dropped.
    pub fn ask(&self, key: K) -> Asker<K, T> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let held = slots.entry(key.clone()).or_insert_with(|| Held {
            slot: Arc::new(Mutex::new(Slot { version: 0, stamp: None, answer: None })),
            askers: 0,
        });
        held.askers += 1;
        Asker { slot: held.slot.clone(), key: Some(key), slots: self.slots.clone() }
    }

    /// Questions with at least one asker.
    #[cfg(test)]
    pub fn questions(&self) -> usize {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

/// One stream's hold on its question's slot.
#[derive(Debug)]
pub struct Asker<K: Hash + Eq, T> {
    slot: Arc<Mutex<Slot<T>>>,
    key: Option<K>,
    slots: Arc<Mutex<HashMap<K, Held<T>>>>,
}

impl<K: Hash + Eq, T: Snapshot> Asker<K, T> {
    /// The answer for `state`, whose stamp for this question is `stamp`:
    /// the slot's if it has that stamp, else `compute(state)`, kept for the
    /// others. The answer's version is 0.
    pub fn answer(&self, state: &State, stamp: &Stamp, compute: impl FnOnce(&State) -> T) -> Arc<T> {
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(answer) = slot.answer.as_ref().filter(|_| slot.stamp.as_ref() == Some(stamp)) {
            return answer.clone();
        }
        // Computed under the lock: the streams that share the question wait
        // for this one answer instead of each computing their own.
        let mut answer = compute(state);
        *answer.version_mut() = 0;
        let answer = Arc::new(answer);
        if slot.answer.is_none() || state.version >= slot.version {
            *slot = Slot { version: state.version, stamp: Some(stamp.clone()), answer: Some(answer.clone()) };
        }
        answer
    }
}

impl<K: Hash + Eq, T> Drop for Asker<K, T> {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else { return };
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(held) = slots.get_mut(&key) {
            held.askers -= 1;
            if held.askers == 0 {
                slots.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use weft_api::policy::OutboundPolicy;

    use super::*;
    use crate::index::{Event, Index, MeshConfig, Namespace};

    fn policy(service: &str, version: u64) -> OutboundPolicy {
        OutboundPolicy { service: service.into(), version, ..Default::default() }
    }

    /// A state after the current one, whose outbound stamp differs.
    fn next(index: &Index, ns: &str) -> Arc<State> {
        index.apply([Event::NamespaceApplied(Namespace { name: ns.into(), opaque_ports: vec![] })]);
        index.state()
    }

    #[test]
    fn one_computation_per_stamp_shared_by_every_asker() {
        let answers: Answers<&str, OutboundPolicy> = Answers::default();
        let index = Index::new(MeshConfig::default());
        let state = index.state();
        let (a, b) = (answers.ask("web:80"), answers.ask("web:80"));
        let other = answers.ask("db:5432");
        let computed = Cell::new(0);
        let compute = |_: &State| {
            computed.set(computed.get() + 1);
            policy("web", 7)
        };
        let s1 = state.outbound_stamp();

        let first = a.answer(&state, &s1, compute);
        assert_eq!(*first, policy("web", 0), "kept without its version");
        assert!(Arc::ptr_eq(&first, &b.answer(&state, &s1, compute)), "the second asker gets the same answer");
        assert_eq!(computed.get(), 1);

        other.answer(&state, &s1, |_| policy("db", 7));
        assert_eq!(computed.get(), 1, "another question has a slot of its own");

        let state = next(&index, "x");
        let s2 = state.outbound_stamp();
        assert_ne!(s1, s2);
        let fresh = b.answer(&state, &s2, |_| policy("web-v2", 8));
        assert_eq!(fresh.service, "web-v2", "a new stamp computes anew");
        assert!(Arc::ptr_eq(&fresh, &a.answer(&state, &s2, compute)));
        assert_eq!(computed.get(), 1);
    }

    #[test]
    fn an_older_state_does_not_replace_a_newer_answer() {
        let answers: Answers<&str, OutboundPolicy> = Answers::default();
        let index = Index::new(MeshConfig::default());
        let old = index.state();
        let new = next(&index, "x");
        let (a, b) = (answers.ask("web:80"), answers.ask("web:80"));

        a.answer(&new, &new.outbound_stamp(), |_| policy("new", 0));
        let stale = b.answer(&old, &old.outbound_stamp(), |_| policy("old", 0));
        assert_eq!(stale.service, "old", "the slow stream still gets its own state's answer");
        let again = a.answer(&new, &new.outbound_stamp(), |_| policy("recomputed", 0));
        assert_eq!(again.service, "new", "the newer answer stayed");
    }

    #[test]
    fn a_question_is_forgotten_with_its_last_asker() {
        let answers: Answers<String, OutboundPolicy> = Answers::default();
        let a = answers.ask("web:80".into());
        let b = answers.ask("web:80".into());
        let c = answers.ask("db:5432".into());
        assert_eq!(answers.questions(), 2);
        drop(a);
        assert_eq!(answers.questions(), 2, "b still asks");
        drop((b, c));
        assert_eq!(answers.questions(), 0);
    }
}
