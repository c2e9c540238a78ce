//! One kind's watch, turned into index events.
//!
//! ```text
//!  kube watcher ─► Init, InitApply…, InitDone ─► one batch: every object listed,
//!  (re-lists after 410 Gone,                      plus removals of what was published
//!   backs off on errors)                          and is no longer there
//!               ─► Apply(obj) / Delete(obj)   ─► one event each
//! ```
//!
//! Only what changed is sent to the index (which also ignores an object
//! equal to the one it holds), so the cost of a change does not grow with
//! the number of objects. While the API server is away the watcher backs
//! off and retries; the index keeps serving the last state it was given.

use std::collections::HashSet;
use std::fmt::Debug;

use futures_util::StreamExt as _;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event as WatchEvent};
use kube::{Api, Resource, ResourceExt as _};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::index::{Event, NsName};
use crate::shutdown::Shutdown;
use crate::source::Sink;

/// What an object means for the index.
#[derive(Debug)]
pub enum Outcome {
    /// Publish this (replacing what was published for the object).
    Publish(Event),
    /// Nothing to publish for it: withdraw what was.
    Withdraw,
    /// Refused: keep what was published for it (the last good version).
    Keep,
}

/// A kind's translation into index events.
pub trait Translate: Send + 'static {
    type Object: Resource + Clone + Debug + DeserializeOwned + Send + Sync + 'static;

    /// The kind, for logs.
    fn kind(&self) -> &'static str;

    /// What `obj`, just listed or changed, means for the index.
    fn applied(&mut self, obj: &Self::Object) -> Outcome;

    /// The event that removes what was published for `key`.
    fn removal(&self, key: &NsName) -> Event;

    /// Called when `obj` is deleted, before its removal is published.
    fn deleted(&mut self, _obj: &Self::Object) {}
}

fn key<K: Resource>(obj: &K) -> NsName {
    NsName::new(obj.namespace().unwrap_or_default(), obj.name_any())
}

/// Runs `t`'s watch of `api` until shutdown. `synced` becomes true after
/// the first complete list is published.
pub async fn run<T: Translate>(
    api: Api<T::Object>,
    mut t: T,
    sink: Sink,
    synced: watch::Sender<bool>,
    mut shutdown: Shutdown,
) {
    let kind = t.kind();
    let mut published: HashSet<NsName> = HashSet::new();
    let mut listing: Vec<T::Object> = Vec::new();
    let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut failing = false;
    loop {
        let next = tokio::select! {
            next = stream.next() => next,
            () = shutdown.signaled() => return,
        };
        let event = match next {
            Some(Ok(e)) => e,
            Some(Err(e)) => {
                // The watcher re-lists or resumes after its backoff; until
                // then the index keeps the last state.
                if !failing {
                    tracing::warn!(%kind, error = %e, "watch failed; retrying with backoff, serving the last known state");
                }
                failing = true;
                continue;
            }
            None => {
                tracing::error!(%kind, "the watch stream ended; this kind is no longer followed");
                return;
            }
        };
        // `Init` comes before the list that may fail again: only what the
        // API server answered shows the watch is back.
        if failing && !matches!(event, WatchEvent::Init) {
            tracing::info!(%kind, "watch recovered");
            failing = false;
        }
        match event {
            WatchEvent::Init => listing.clear(),
            WatchEvent::InitApply(obj) => listing.push(obj),
            WatchEvent::InitDone => {
                let mut batch = Vec::new();
                let mut seen = HashSet::with_capacity(listing.len());
                for obj in listing.drain(..) {
                    let k = key(&obj);
                    match t.applied(&obj) {
                        Outcome::Publish(e) => {
                            batch.push(e);
                            published.insert(k.clone());
                        }
                        Outcome::Withdraw => {
                            if published.remove(&k) {
                                batch.push(t.removal(&k));
                            }
                        }
                        Outcome::Keep => {}
                    }
                    seen.insert(k);
                }
                let gone: Vec<NsName> = published.iter().filter(|k| !seen.contains(*k)).cloned().collect();
                for k in gone {
                    published.remove(&k);
                    batch.push(t.removal(&k));
                }
                let n = batch.len();
                let version = sink.apply(batch);
                tracing::info!(%kind, objects = seen.len(), events = n, version, "listed");
                synced.send_replace(true);
            }
            WatchEvent::Apply(obj) => {
                let k = key(&obj);
                match t.applied(&obj) {
                    Outcome::Publish(e) => {
                        published.insert(k);
                        sink.apply([e]);
                    }
                    Outcome::Withdraw => {
                        if published.remove(&k) {
                            sink.apply([t.removal(&k)]);
                        }
                    }
                    Outcome::Keep => {}
                }
            }
            WatchEvent::Delete(obj) => {
                t.deleted(&obj);
                let k = key(&obj);
                if published.remove(&k) {
                    sink.apply([t.removal(&k)]);
                }
            }
        }
    }
}
