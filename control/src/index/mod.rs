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
//!
//! Each question also has a [`Stamp`] ([`State::resolve_stamp`] and so on):
//! the ticks at which the parts of the state its answer reads last changed.
//! Equal stamps mean equal answers, so a stream recomputes only when
//! something it watches changed: registering an endpoint of one Service
//! wakes every stream but recomputes only that Service's watchers, and the
//! recomputation reads that Service's workloads (through a label index),
//! never the whole table.

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
    /// Workloads by `(namespace, label key, label value)`: a selector's
    /// workloads are found from its rarest label, not by a scan.
    by_label: Multimap<LabelKey, WorkloadName>,
    slices_by_service: Multimap<ServiceName, NsName>,
    slices_by_address: Multimap<IpAddr, NsName>,
    /// Moves on every applied event; the fields below record it.
    tick: u64,
    changed: Changed,
    /// Per Service, when its endpoints may last have changed: the Service
    /// itself, a workload it selects (before or after the change), one of
    /// its slices, or a Pod one of its slices names.
    endpoints_changed: HashMap<ServiceName, u64>,
    /// Per workload, when it last changed (absent once deleted).
    workload_changed: HashMap<WorkloadName, u64>,
}

type LabelKey = (String, String, String);

/// The tick at which each kind of object last changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Changed {
    services: u64,
    workloads: u64,
    slices: u64,
    namespaces: u64,
    policies: u64,
}

/// What one answer read from the state, as the ticks at which those parts
/// last changed: two states that give a question equal stamps give it equal
/// answers (versions aside), so its stream need not recompute. A stamp may
/// change when the answer does not (it is conservative), never the reverse;
/// `tests.rs` checks that over sequences of every kind of event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamp([u64; 5]);

/// Key → set of names, persistent like the maps it indexes.
type Multimap<K, V> = HashMap<K, OrdSet<V>>;

fn link<K: Hash + Eq + Clone, V: Ord + Clone>(m: &mut Multimap<K, V>, k: K, v: V) {
    m.entry(k).or_default().insert(v);
}

/// A workload's entries in [`State::by_label`].
fn label_keys(w: &Workload) -> impl Iterator<Item = LabelKey> + '_ {
    w.labels.iter().map(|(k, v)| (w.name.namespace.clone(), k.clone(), v.clone()))
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
            by_label: HashMap::new(),
            slices_by_service: HashMap::new(),
            slices_by_address: HashMap::new(),
            tick: 0,
            changed: Changed::default(),
            endpoints_changed: HashMap::new(),
            workload_changed: HashMap::new(),
        }
    }

    /// Applies events in order; returns whether anything changed. The caller
    /// bumps the version (see [`Index::apply`]); tests may call this directly.
    pub fn apply(&mut self, events: impl IntoIterator<Item = Event>) -> bool {
        let mut changed = false;
        for event in events {
            // Ticks that no change records are simply skipped.
            self.tick += 1;
            let tick = self.tick;
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
                        self.changed.namespaces = tick;
                        true
                    }
                }
                Event::NamespaceDeleted(n) => {
                    let gone = self.namespaces.remove(&n).is_some();
                    if gone {
                        self.changed.namespaces = tick;
                    }
                    gone
                }
                Event::PolicyApplied(r) => {
                    let id = r.id();
                    if self.policies.get(&id) == Some(&r) {
                        false
                    } else {
                        self.policies.insert(id, r);
                        self.changed.policies = tick;
                        true
                    }
                }
                Event::PolicyDeleted(id) => {
                    let gone = self.policies.remove(&id).is_some();
                    if gone {
                        self.changed.policies = tick;
                    }
                    gone
                }
            };
        }
        changed
    }

    /// Records that `svc`'s endpoints may have changed at this tick.
    fn touch_endpoints(&mut self, svc: &ServiceName) {
        self.endpoints_changed.insert(svc.clone(), self.tick);
    }

    /// Records that the Services reaching `w` (by selector, or by a slice
    /// listing its address) may have new endpoints. Scans the Services of
    /// `w`'s namespace only for selectors: a few, against every workload.
    fn touch_services_of(&mut self, w: &Workload) {
        let mut touched: Vec<ServiceName> = self
            .services_in(&w.name.namespace)
            .filter(|s| s.endpoints == EndpointSource::Selector && s.selects(w))
            .map(|s| s.name.clone())
            .collect();
        touched.extend(self.slices_at(w.address).map(|slice| slice.service.clone()));
        for svc in &touched {
            self.touch_endpoints(svc);
        }
    }

    /// Replaces (`Some`) or removes (`None`) one Service and its index entries.
    fn put_service(&mut self, name: ServiceName, new: Option<Service>) -> bool {
        if self.services.get(&name).map(|s| &**s) == new.as_ref() {
            return false;
        }
        self.changed.services = self.tick;
        self.touch_endpoints(&name);
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
        self.changed.workloads = self.tick;
        if let Some(old) = self.workloads.remove(&name) {
            self.touch_services_of(&old);
            unlink(&mut self.by_address, &old.address, &name);
            for key in label_keys(&old) {
                unlink(&mut self.by_label, &key, &name);
            }
            self.workload_changed.remove(&name);
        }
        if let Some(new) = new {
            self.touch_services_of(&new);
            link(&mut self.by_address, new.address, name.clone());
            for key in label_keys(&new) {
                link(&mut self.by_label, key, name.clone());
            }
            self.workload_changed.insert(name.clone(), self.tick);
            self.workloads.insert(name, Arc::new(new));
        }
        true
    }

    /// The workloads `svc`'s selector picks, in name order: those carrying
    /// its rarest label, filtered by the rest.
    pub fn selected(&self, svc: &Service) -> impl Iterator<Item = &Arc<Workload>> {
        let ns = &svc.name.namespace;
        let rarest = svc
            .selector
            .iter()
            .map(|(k, v)| self.by_label.get(&(ns.clone(), k.clone(), v.clone())))
            .min_by_key(|names| names.map_or(0, OrdSet::len))
            .flatten();
        rarest.into_iter().flatten().filter_map(|n| self.workloads.get(n)).filter(|w| svc.selects(w))
    }

    fn put_slice(&mut self, name: NsName, new: Option<EndpointSlice>) -> bool {
        if self.slices.get(&name).map(|s| &**s) == new.as_ref() {
            return false;
        }
        self.changed.slices = self.tick;
        let services = [self.slices.get(&name).map(|s| s.service.clone()), new.as_ref().map(|s| s.service.clone())];
        for svc in services.into_iter().flatten() {
            self.touch_endpoints(&svc);
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

    /// The Services of namespace `ns` (a selector selects only there).
    pub fn services_in(&self, ns: &str) -> impl Iterator<Item = &Arc<Service>> {
        let ns = ns.to_owned();
        self.services
            .range(NsName::new(ns.clone(), String::new())..)
            .take_while(move |(name, _)| name.namespace == ns)
            .map(|(_, s)| s)
    }

    /// Services whose virtual IP is `ip` (normally at most one).
    pub fn services_at(&self, ip: IpAddr) -> impl Iterator<Item = &Arc<Service>> {
        self.by_vip.get(&ip).into_iter().flatten().filter_map(|n| self.services.get(n))
    }

    /// Workloads whose address is `ip`.
    pub fn workloads_at(&self, ip: IpAddr) -> impl Iterator<Item = &Arc<Workload>> {
        self.by_address.get(&ip).into_iter().flatten().filter_map(|n| self.workloads.get(n))
    }

    /// The stamp of [`State::resolve`]`(target, asker_ns)`. A Service's
    /// answer reads the Service, its endpoints and the Namespaces (opaque
    /// ports); an address that is no Service's reads workloads and slices.
    pub fn resolve_stamp(&self, target: &Target, asker_ns: &str) -> Stamp {
        let c = &self.changed;
        match self.service_for(target, asker_ns) {
            Some((svc, _)) => {
                let endpoints = self.endpoints_changed.get(&svc.name).copied().unwrap_or(0);
                Stamp([c.services, c.namespaces, endpoints, 0, 0])
            }
            None => Stamp([c.services, c.namespaces, c.workloads, c.slices, 0]),
        }
    }

    /// The stamp of [`State::outbound`]: Services, Namespaces and policy
    /// resources; never workloads or slices.
    pub fn outbound_stamp(&self) -> Stamp {
        let c = &self.changed;
        Stamp([c.services, c.namespaces, c.policies, 0, 0])
    }

    /// The stamp of [`State::inbound`]`(workload, _)`: the workload itself,
    /// the Services and slices that may serve it, Namespaces and policies.
    pub fn inbound_stamp(&self, workload: &WorkloadName) -> Stamp {
        let c = &self.changed;
        let own = self.workload_changed.get(workload).copied().unwrap_or(0);
        Stamp([c.services, c.namespaces, c.policies, c.slices, own])
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
        for s in self.services_in(&w.name.namespace) {
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
