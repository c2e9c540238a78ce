//! The in-memory index: every object the control plane knows, and the pure
//! functions that answer the proxies' questions from it.
//!
//! ```text
//!  sources ──Event──► Index::apply ──► State (immutable, versioned)
//!  (files, registry,                     │  tokio::sync::watch
//!   kubernetes)                          │
//!                                        ▼
//!                               one task per gRPC stream:
//!                               state.resolve / outbound / inbound
//!                               → send when the answer changed
//! ```
//!
//! A [`State`] is never mutated once published: `apply` clones it (its maps
//! are persistent, so that copies a few pointers), applies a batch of events,
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

use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use imbl::{HashMap, OrdMap, OrdSet};
use tokio::sync::watch;
use weft_api::policy::inbound_policy::{DefaultAccess, MtlsMode};

use crate::policy::{Resource, ResourceId};

pub use self::discovery::{Target, TargetError};
pub use self::model::{
    EndpointSlice, EndpointSource, Namespace, NsName, Protocol, Service, ServiceName, ServicePort, SliceEndpoint,
    SlicePort, Workload, WorkloadName,
};

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
    SliceApplied(EndpointSlice),
    SliceDeleted(NsName),
    NamespaceApplied(Namespace),
    NamespaceDeleted(String),
    PolicyApplied(Resource),
    PolicyDeleted(ResourceId),
}

/// One immutable snapshot of everything the control plane knows.
///
/// The maps are persistent (`imbl`): cloning a state to change it copies
/// a root pointer, and each change rewrites O(log n) nodes, so the cost of
/// an event does not grow with the size of the mesh. The secondary indexes
/// (by address, by service) are maintained object by object for the same
/// reason.
#[derive(Clone, Debug)]
pub struct State {
    /// Bumped by every applied batch that changed something.
    pub version: u64,
    /// When this version was published: push latency is measured from here.
    pub changed_at: Instant,
    pub mesh: Arc<MeshConfig>,
    pub services: OrdMap<ServiceName, Arc<Service>>,
    pub workloads: OrdMap<WorkloadName, Arc<Workload>>,
    pub slices: OrdMap<NsName, Arc<EndpointSlice>>,
    pub namespaces: OrdMap<String, Arc<Namespace>>,
    pub policies: OrdMap<ResourceId, Resource>,
    by_vip: Multimap<IpAddr, ServiceName>,
    by_address: Multimap<IpAddr, WorkloadName>,
    slices_by_service: Multimap<ServiceName, NsName>,
    slices_by_address: Multimap<IpAddr, NsName>,
}

/// Key → set of names, persistent like the maps it indexes.
type Multimap<K, V> = HashMap<K, OrdSet<V>>;

fn link<K: Hash + Eq + Clone, V: Ord + Clone>(m: &mut Multimap<K, V>, k: K, v: V) {
    m.entry(k).or_default().insert(v);
}

fn unlink<K: Hash + Eq + Clone, V: Ord + Clone>(m: &mut Multimap<K, V>, k: &K, v: &V) {
    if let Some(set) = m.get_mut(k) {
        set.remove(v);
        if set.is_empty() {
            m.remove(k);
        }
    }
}

impl State {
    pub fn new(mesh: MeshConfig) -> Self {
        Self {
            version: 0,
            changed_at: Instant::now(),
            mesh: Arc::new(mesh),
            services: OrdMap::new(),
            workloads: OrdMap::new(),
            slices: OrdMap::new(),
            namespaces: OrdMap::new(),
            policies: OrdMap::new(),
            by_vip: HashMap::new(),
            by_address: HashMap::new(),
            slices_by_service: HashMap::new(),
            slices_by_address: HashMap::new(),
        }
    }

    /// Applies events in order; returns whether anything changed. The caller
    /// bumps the version (see [`Index::apply`]); tests may call this directly.
    pub fn apply(&mut self, events: impl IntoIterator<Item = Event>) -> bool {
        let mut changed = false;
        for event in events {
            changed |= match event {
                Event::ServiceApplied(s) => self.put_service(s.name.clone(), Some(s)),
                Event::ServiceDeleted(n) => self.put_service(n, None),
                Event::WorkloadApplied(w) => self.put_workload(w.name.clone(), Some(w)),
                Event::WorkloadDeleted(n) => self.put_workload(n, None),
                Event::SliceApplied(s) => self.put_slice(s.name.clone(), Some(s)),
                Event::SliceDeleted(n) => self.put_slice(n, None),
                Event::NamespaceApplied(n) => {
                    if self.namespaces.get(&n.name).map(|o| &**o) == Some(&n) {
                        false
                    } else {
                        self.namespaces.insert(n.name.clone(), Arc::new(n));
                        true
                    }
                }
                Event::NamespaceDeleted(n) => self.namespaces.remove(&n).is_some(),
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
        }
        changed
    }

    /// Replaces (`Some`) or removes (`None`) one Service and its index entries.
    fn put_service(&mut self, name: ServiceName, new: Option<Service>) -> bool {
        if self.services.get(&name).map(|s| &**s) == new.as_ref() {
            return false;
        }
        if let Some(old) = self.services.remove(&name)
            && let Some(vip) = old.virtual_ip
        {
            unlink(&mut self.by_vip, &vip, &name);
        }
        if let Some(new) = new {
            if let Some(vip) = new.virtual_ip {
                link(&mut self.by_vip, vip, name.clone());
            }
            self.services.insert(name, Arc::new(new));
        }
        true
    }

    fn put_workload(&mut self, name: WorkloadName, new: Option<Workload>) -> bool {
        if self.workloads.get(&name).map(|w| &**w) == new.as_ref() {
            return false;
        }
        if let Some(old) = self.workloads.remove(&name) {
            unlink(&mut self.by_address, &old.address, &name);
        }
        if let Some(new) = new {
            link(&mut self.by_address, new.address, name.clone());
            self.workloads.insert(name, Arc::new(new));
        }
        true
    }

    fn put_slice(&mut self, name: NsName, new: Option<EndpointSlice>) -> bool {
        if self.slices.get(&name).map(|s| &**s) == new.as_ref() {
            return false;
        }
        if let Some(old) = self.slices.remove(&name) {
            unlink(&mut self.slices_by_service, &old.service, &name);
            for e in &old.endpoints {
                unlink(&mut self.slices_by_address, &e.address, &name);
            }
        }
        if let Some(new) = new {
            link(&mut self.slices_by_service, new.service.clone(), name.clone());
            for e in &new.endpoints {
                link(&mut self.slices_by_address, e.address, name.clone());
            }
            self.slices.insert(name, Arc::new(new));
        }
        true
    }

    /// Services whose virtual IP is `ip` (normally at most one).
    pub fn services_at(&self, ip: IpAddr) -> impl Iterator<Item = &Arc<Service>> {
        self.by_vip.get(&ip).into_iter().flatten().filter_map(|n| self.services.get(n))
    }

    /// Workloads whose address is `ip`.
    pub fn workloads_at(&self, ip: IpAddr) -> impl Iterator<Item = &Arc<Workload>> {
        self.by_address.get(&ip).into_iter().flatten().filter_map(|n| self.workloads.get(n))
    }

    /// The EndpointSlices of a Service.
    pub fn slices_of(&self, svc: &ServiceName) -> impl Iterator<Item = &Arc<EndpointSlice>> {
        self.slices_by_service.get(svc).into_iter().flatten().filter_map(|n| self.slices.get(n))
    }

    /// EndpointSlices with an endpoint at `ip`.
    pub fn slices_at(&self, ip: IpAddr) -> impl Iterator<Item = &Arc<EndpointSlice>> {
        self.slices_by_address.get(&ip).into_iter().flatten().filter_map(|n| self.slices.get(n))
    }

    /// Whether `w` declares `port` opaque: its own list, or, when it has
    /// none, its Namespace's.
    pub fn opaque_port(&self, w: &Workload, port: u16) -> bool {
        if w.opaque_ports.is_empty() {
            self.namespaces.get(&w.name.namespace).is_some_and(|n| n.opaque_ports.contains(&port))
        } else {
            w.opaque_ports.contains(&port)
        }
    }

    /// The Service ports that send traffic to `w` on `port`: by selector
    /// and target port, or by an EndpointSlice listing its address with
    /// that port.
    pub fn serving_ports(&self, w: &Workload, port: u16) -> Vec<(&Service, &ServicePort)> {
        let mut out: Vec<(&Service, &ServicePort)> = Vec::new();
        for s in self.services.values() {
            if s.endpoints == EndpointSource::Selector && s.selects(w) {
                out.extend(s.ports.iter().filter(|p| p.target_port == port).map(|p| (&**s, p)));
            }
        }
        for slice in self.slices_at(w.address) {
            if slice.name.namespace != w.name.namespace {
                continue;
            }
            let Some(s) = self.services.get(&slice.service) else { continue };
            if s.endpoints != EndpointSource::Slices {
                continue;
            }
            for p in s.ports.iter().filter(|p| slice.port_for(p) == Some(port)) {
                if !out.iter().any(|(have, hp)| have.name == s.name && hp.port == p.port) {
                    out.push((&**s, p));
                }
            }
        }
        out
    }

    /// The `/state` dump: everything, for debugging.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "version": self.version,
            "changedSecondsAgo": self.changed_at.elapsed().as_secs_f64(),
            "trustDomain": self.mesh.trust_domain,
            "services": self.services.values().collect::<Vec<_>>(),
            "workloads": self.workloads.values().collect::<Vec<_>>(),
            "endpointSlices": self.slices.values().collect::<Vec<_>>(),
            "namespaces": self.namespaces.values().collect::<Vec<_>>(),
            "policies": self.policies.values().collect::<Vec<_>>(),
        })
    }
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
