//! The in-memory index: every object the control plane knows, and the pure
//! functions that answer the proxies' questions from it.
//!
//! ```text
//!  sources ──Event──► Index::apply ──► State (immutable, versioned)
//!  (files, registry)                     │  tokio::sync::watch
//!                                        ▼
//!                               one task per gRPC stream:
//!                               state.resolve / outbound / inbound
//!                               → send when the answer changed
//! ```
//!
//! A [`State`] is never mutated once published: `apply` clones it (objects
//! are behind `Arc`s, so that copies pointers), applies a batch of events,
//! bumps [`State::version`] once if anything actually changed, and publishes
//! the new one. Readers hold an `Arc<State>` and compute without locks.
//!
//! The questions ([`State::resolve`], [`State::outbound`],
//! [`State::inbound`]) are plain functions of the state, tested by feeding
//! objects (see `tests.rs`), as Linkerd's policy index is.

pub mod defaults;
pub mod discovery;
pub mod inbound;
pub mod model;
pub mod outbound;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;
use weft_api::policy::inbound_policy::{DefaultAccess, MtlsMode};

use crate::policy::{Resource, ResourceId};

pub use self::discovery::{Target, TargetError};
pub use self::model::{NsName, Protocol, Service, ServiceName, ServicePort, Workload, WorkloadName};

/// Mesh-wide settings that are not objects.
#[derive(Clone, Debug)]
pub struct MeshConfig {
    /// SPIFFE trust domain of workload identities.
    pub trust_domain: String,
    /// DNS suffix of `svc.ns.svc.<cluster_domain>` names.
    pub cluster_domain: String,
    /// What an inbound port allows when no AccessPolicy targets it.
    pub default_access: DefaultAccess,
    pub mtls_mode: MtlsMode,
}

impl Default for MeshConfig {
    fn default() -> Self {
        Self {
            trust_domain: "cluster.local".into(),
            cluster_domain: "cluster.local".into(),
            default_access: DefaultAccess::AllowAll,
            // Permissive, as `--mtls-mode` defaults: plaintext from clients
            // outside the mesh is still accepted (as unauthenticated), so
            // meshing a server does not cut off its unmeshed clients.
            mtls_mode: MtlsMode::Permissive,
        }
    }
}

/// A change reported by a source. Applying an object equal to the one held
/// is not a change (no version bump, no push).
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    ServiceApplied(Service),
    ServiceDeleted(ServiceName),
    WorkloadApplied(Workload),
    WorkloadDeleted(WorkloadName),
    PolicyApplied(Resource),
    PolicyDeleted(ResourceId),
}

/// One immutable snapshot of everything the control plane knows.
#[derive(Clone, Debug)]
pub struct State {
    /// Bumped by every applied batch that changed something.
    pub version: u64,
    /// When this version was published: push latency is measured from here.
    pub changed_at: Instant,
    pub mesh: Arc<MeshConfig>,
    pub services: BTreeMap<ServiceName, Arc<Service>>,
    pub workloads: BTreeMap<WorkloadName, Arc<Workload>>,
    pub policies: BTreeMap<ResourceId, Resource>,
    by_vip: HashMap<IpAddr, Vec<ServiceName>>,
    by_address: HashMap<IpAddr, Vec<WorkloadName>>,
}

impl State {
    pub fn new(mesh: MeshConfig) -> Self {
        Self {
            version: 0,
            changed_at: Instant::now(),
            mesh: Arc::new(mesh),
            services: BTreeMap::new(),
            workloads: BTreeMap::new(),
            policies: BTreeMap::new(),
            by_vip: HashMap::new(),
            by_address: HashMap::new(),
        }
    }

    /// Applies events in order; returns whether anything changed. The caller
    /// bumps the version (see [`Index::apply`]); tests may call this directly.
    pub fn apply(&mut self, events: impl IntoIterator<Item = Event>) -> bool {
        let (mut services, mut workloads, mut changed) = (false, false, false);
        for event in events {
            let c = match event {
                Event::ServiceApplied(s) => {
                    let c = upsert(&mut self.services, s.name.clone(), s);
                    services |= c;
                    c
                }
                Event::ServiceDeleted(n) => {
                    let c = self.services.remove(&n).is_some();
                    services |= c;
                    c
                }
                Event::WorkloadApplied(w) => {
                    let c = upsert(&mut self.workloads, w.name.clone(), w);
                    workloads |= c;
                    c
                }
                Event::WorkloadDeleted(n) => {
                    let c = self.workloads.remove(&n).is_some();
                    workloads |= c;
                    c
                }
                Event::PolicyApplied(r) => {
                    let id = r.id();
                    if self.policies.get(&id) == Some(&r) {
                        false
                    } else {
                        self.policies.insert(id, r);
                        true
                    }
                }
                Event::PolicyDeleted(id) => self.policies.remove(&id).is_some(),
            };
            changed |= c;
        }
        if services {
            self.by_vip.clear();
            for s in self.services.values() {
                if let Some(vip) = s.virtual_ip {
                    self.by_vip.entry(vip).or_default().push(s.name.clone());
                }
            }
        }
        if workloads {
            self.by_address.clear();
            for w in self.workloads.values() {
                self.by_address.entry(w.address).or_default().push(w.name.clone());
            }
        }
        changed
    }

    /// Services whose virtual IP is `ip` (normally at most one).
    pub fn services_at(&self, ip: IpAddr) -> impl Iterator<Item = &Arc<Service>> {
        self.by_vip.get(&ip).into_iter().flatten().filter_map(|n| self.services.get(n))
    }

    /// Workloads whose address is `ip`.
    pub fn workloads_at(&self, ip: IpAddr) -> impl Iterator<Item = &Arc<Workload>> {
        self.by_address.get(&ip).into_iter().flatten().filter_map(|n| self.workloads.get(n))
    }

    /// Ready workloads selected by `svc`.
    pub fn endpoints_of<'a>(&'a self, svc: &'a Service) -> impl Iterator<Item = &'a Arc<Workload>> + 'a {
        self.workloads.values().filter(move |w| svc.selects(w))
    }

    /// The `/state` dump: everything, for debugging.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "version": self.version,
            "changedSecondsAgo": self.changed_at.elapsed().as_secs_f64(),
            "trustDomain": self.mesh.trust_domain,
            "services": self.services.values().collect::<Vec<_>>(),
            "workloads": self.workloads.values().collect::<Vec<_>>(),
            "policies": self.policies.values().collect::<Vec<_>>(),
        })
    }
}

fn upsert<K: Ord, V: PartialEq>(map: &mut BTreeMap<K, Arc<V>>, key: K, value: V) -> bool {
    if map.get(&key).is_some_and(|old| **old == value) {
        return false;
    }
    map.insert(key, Arc::new(value));
    true
}

/// The published state and the way to change it. Cheap to clone; every
/// clone publishes to the same subscribers.
#[derive(Clone, Debug)]
pub struct Index {
    tx: Arc<watch::Sender<Arc<State>>>,
}

impl Index {
    pub fn new(mesh: MeshConfig) -> Self {
        let (tx, _) = watch::channel(Arc::new(State::new(mesh)));
        Self { tx: Arc::new(tx) }
    }

    /// A receiver that sees every published state (coalesced: a slow reader
    /// skips straight to the newest, which is what a snapshot stream wants).
    pub fn subscribe(&self) -> watch::Receiver<Arc<State>> {
        self.tx.subscribe()
    }

    /// The current state.
    pub fn state(&self) -> Arc<State> {
        self.tx.borrow().clone()
    }

    /// Applies a batch atomically: subscribers see all of it or none, and
    /// the version moves by one if anything changed. Returns the version
    /// in force afterwards.
    pub fn apply(&self, events: impl IntoIterator<Item = Event>) -> u64 {
        let mut version = 0;
        self.tx.send_if_modified(|current| {
            let mut next = State::clone(current);
            let changed = next.apply(events);
            if changed {
                next.version += 1;
                next.changed_at = Instant::now();
                *current = Arc::new(next);
            }
            version = current.version;
            changed
        });
        version
    }
}

#[cfg(test)]
mod tests;
