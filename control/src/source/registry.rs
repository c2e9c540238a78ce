//! The Registry source: workloads that announce themselves (universal
//! mode), each kept by a lease.
//!
//! `Register` creates a lease and publishes the workload; `Heartbeat`
//! renews it (and publishes a readiness change, nothing else: a renewal is
//! not a state change, so heartbeats cause no pushes); `Deregister` and
//! lease expiry remove the workload. Registering a workload name again
//! replaces the previous lease (a restarted replica).
//!
//! Lease ids embed a random per-process prefix, so after a control-plane
//! restart every old id is unknown (NOT_FOUND) and proxies re-register,
//! instead of one colliding with a new lease.
//!
//! Index updates happen under the lease lock: an expiry and a concurrent
//! re-registration cannot publish out of order.

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{Event, Sink};
use crate::index::model::{Workload, WorkloadName};
use crate::policy::de::check_dns_label;
use crate::shutdown::Shutdown;

/// Shortest lease granted: shorter asks are raised to it.
pub const MIN_TTL: Duration = Duration::from_millis(100);
/// Longest lease granted.
pub const MAX_TTL: Duration = Duration::from_secs(300);

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("invalid workload: {0}")]
    Invalid(String),
    #[error("lease {0} is unknown (it lapsed, or the control plane restarted): register again")]
    UnknownLease(String),
}

/// A lease as granted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub id: String,
    pub ttl: Duration,
    /// The index version after this change.
    pub version: u64,
}

#[derive(Debug)]
struct Lease {
    workload: Workload,
    ttl: Duration,
    expires: Instant,
}

/// The leases, by id, by workload and by expiry. Every change goes through
/// the methods below, which keep the three in step: the reaper finds the
/// next expiry and the lapsed leases in O(log n), not by a scan of every
/// lease on each registration (which made registering n workloads cost
/// O(n²)).
#[derive(Debug, Default)]
struct Leases {
    by_id: HashMap<String, Lease>,
    by_workload: HashMap<WorkloadName, String>,
    by_expiry: BTreeSet<(Instant, String)>,
}

impl Leases {
    /// Adds a lease, replacing the workload's previous one (returned).
    fn insert(&mut self, id: String, lease: Lease) -> Option<Lease> {
        let old = self.by_workload.insert(lease.workload.name.clone(), id.clone()).and_then(|old| self.take(&old));
        self.by_expiry.insert((lease.expires, id.clone()));
        self.by_id.insert(id, lease);
        old
    }

    /// Removes a lease from every index.
    fn remove(&mut self, id: &str) -> Option<Lease> {
        let lease = self.take(id)?;
        self.by_workload.remove(&lease.workload.name);
        Some(lease)
    }

    /// Removes a lease from `by_id` and `by_expiry` (not `by_workload`).
    fn take(&mut self, id: &str) -> Option<Lease> {
        let (id, lease) = self.by_id.remove_entry(id)?;
        self.by_expiry.remove(&(lease.expires, id));
        Some(lease)
    }

    /// Moves a lease's expiry to `now + ttl`.
    fn renew(&mut self, id: &str, now: Instant) -> Option<&mut Lease> {
        let lease = self.by_id.get_mut(id)?;
        self.by_expiry.remove(&(lease.expires, id.to_owned()));
        lease.expires = now + lease.ttl;
        self.by_expiry.insert((lease.expires, id.to_owned()));
        Some(lease)
    }

    fn next_expiry(&self) -> Option<Instant> {
        self.by_expiry.first().map(|(at, _)| *at)
    }

    /// Removes and returns the leases lapsed by `now`, earliest first.
    fn lapsed(&mut self, now: Instant) -> Vec<Lease> {
        let mut gone = Vec::new();
        while let Some((at, id)) = self.by_expiry.first().cloned() {
            if at > now {
                break;
            }
            gone.extend(self.remove(&id));
        }
        gone
    }
}

#[derive(Debug)]
struct Inner {
    sink: Sink,
    default_ttl: Duration,
    leases: Mutex<Leases>,
    /// Wakes the reaper when a lease may expire earlier than it planned.
    changed: Notify,
    boot: u64,
    next: AtomicU64,
}

/// The workload registry. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Registry(Arc<Inner>);

/// A lease for `/state`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseView {
    pub id: String,
    pub workload: String,
    pub ttl_ms: u64,
    pub expires_in_ms: u64,
}

impl Registry {
    pub fn new(sink: Sink, default_ttl: Duration) -> Self {
        Self(Arc::new(Inner {
            sink,
            default_ttl: default_ttl.clamp(MIN_TTL, MAX_TTL),
            leases: Mutex::new(Leases::default()),
            changed: Notify::new(),
            // RandomState is seeded randomly per process: a free nonce.
            boot: RandomState::new().hash_one(std::process::id()),
            next: AtomicU64::new(1),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Leases> {
        self.0.leases.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers `workload` with a lease of `ttl` (clamped; zero asks for
    /// the default).
    pub fn register(&self, workload: Workload, ttl: Duration) -> Grant {
        let ttl = if ttl.is_zero() { self.0.default_ttl } else { ttl.clamp(MIN_TTL, MAX_TTL) };
        let id = format!("{:016x}-{}", self.0.boot, self.0.next.fetch_add(1, Ordering::Relaxed));
        let name = workload.name.clone();
        let mut leases = self.lock();
        leases.insert(id.clone(), Lease { workload: workload.clone(), ttl, expires: Instant::now() + ttl });
        let version = self.0.sink.apply([Event::WorkloadApplied(workload)]);
        drop(leases);
        self.0.changed.notify_one();
        tracing::info!(workload = %name, lease = %id, ttl_ms = ttl.as_millis() as u64, version, "registered");
        Grant { id, ttl, version }
    }

    /// Renews a lease, updating the workload's readiness.
    pub fn heartbeat(&self, id: &str, ready: bool) -> Result<Grant, RegistryError> {
        let mut leases = self.lock();
        let lease = leases.renew(id, Instant::now()).ok_or_else(|| RegistryError::UnknownLease(id.to_owned()))?;
        let ttl = lease.ttl;
        let version = if lease.workload.ready == ready {
            self.0.sink.index().state().version
        } else {
            lease.workload.ready = ready;
            tracing::info!(workload = %lease.workload.name, ready, "readiness changed");
            self.0.sink.apply([Event::WorkloadApplied(lease.workload.clone())])
        };
        Ok(Grant { id: id.to_owned(), ttl, version })
    }

    /// Removes a workload at once. Unknown leases are fine (idempotent).
    pub fn deregister(&self, id: &str) -> u64 {
        let mut leases = self.lock();
        match leases.remove(id) {
            Some(lease) => {
                tracing::info!(workload = %lease.workload.name, "deregistered");
                self.0.sink.apply([Event::WorkloadDeleted(lease.workload.name)])
            }
            None => self.0.sink.index().state().version,
        }
    }

    /// Removes the workloads whose lease expired by `now`; returns them.
    pub fn expire(&self, now: Instant) -> Vec<WorkloadName> {
        let mut leases = self.lock();
        let gone: Vec<WorkloadName> = leases.lapsed(now).into_iter().map(|l| l.workload.name).collect();
        if !gone.is_empty() {
            let version = self.0.sink.apply(gone.iter().cloned().map(Event::WorkloadDeleted));
            for w in &gone {
                tracing::warn!(workload = %w, version, "lease lapsed; removed from discovery");
            }
        }
        gone
    }

    fn next_expiry(&self) -> Option<Instant> {
        self.lock().next_expiry()
    }

    /// Expires leases on time until shutdown.
    pub async fn reap(self, mut shutdown: Shutdown) {
        loop {
            // Far enough to mean "no lease", near enough not to overflow.
            let next = self.next_expiry().unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                () = tokio::time::sleep_until(next) => {
                    self.expire(Instant::now());
                }
                () = self.0.changed.notified() => {}
                () = shutdown.signaled() => return,
            }
        }
    }

    pub fn len(&self) -> usize {
        self.lock().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn leases(&self) -> Vec<LeaseView> {
        let now = Instant::now();
        let mut out: Vec<LeaseView> = self
            .lock()
            .by_id
            .iter()
            .map(|(id, l)| LeaseView {
                id: id.clone(),
                workload: l.workload.name.to_string(),
                ttl_ms: l.ttl.as_millis() as u64,
                expires_in_ms: l.expires.saturating_duration_since(now).as_millis() as u64,
            })
            .collect();
        out.sort_by(|a, b| a.workload.cmp(&b.workload));
        out
    }
}

/// Checks and converts a workload as announced over the API.
pub fn workload_from_api(w: weft_api::registry::Workload) -> Result<Workload, RegistryError> {
    let bad = |m: String| RegistryError::Invalid(m);
    if w.name.is_empty() || w.name.len() > 253 || w.name.split('.').any(|l| check_dns_label(l).is_err()) {
        return Err(bad(format!("name `{}` must be a DNS name (e.g. `web-v1-0`)", w.name)));
    }
    let namespace = if w.namespace.is_empty() { crate::policy::DEFAULT_NAMESPACE.to_owned() } else { w.namespace };
    check_dns_label(&namespace).map_err(|e| bad(format!("namespace: {e}")))?;
    if !w.service_account.is_empty() {
        check_dns_label(&w.service_account).map_err(|e| bad(format!("service_account: {e}")))?;
    }
    let address: IpAddr =
        w.address.parse().map_err(|_| bad(format!("address `{}` is not an IP address", w.address)))?;
    if address.is_unspecified() || address.is_multicast() {
        return Err(bad(format!("address {address} is not a unicast address")));
    }
    if w.ports.len() > 64 {
        return Err(bad("at most 64 ports".into()));
    }
    let ports = w
        .ports
        .iter()
        .map(|p| u16::try_from(*p).ok().filter(|p| *p != 0).ok_or_else(|| bad(format!("port {p} is not 1..=65535"))))
        .collect::<Result<Vec<u16>, _>>()?;
    if let Some(k) = w.labels.keys().find(|k| k.is_empty()) {
        return Err(bad(format!("label key `{k}` is empty")));
    }
    Ok(Workload {
        name: WorkloadName::new(namespace, w.name),
        service_account: w.service_account,
        labels: w.labels.into_iter().collect(),
        address,
        ports,
        meshed: w.meshed,
        ready: w.ready,
        zone: w.zone,
        opaque_ports: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;
    use crate::index::{Index, MeshConfig};
    use crate::source::Diagnostics;

    fn registry() -> (Registry, Index) {
        let index = Index::new(MeshConfig::default());
        (Registry::new(Sink::new(index.clone(), Arc::new(Diagnostics::default())), Duration::from_secs(10)), index)
    }

    fn workload(name: &str) -> Workload {
        Workload {
            name: WorkloadName::new("default", name),
            service_account: "web".into(),
            labels: BTreeMap::from([("app".into(), "web".into())]),
            address: "127.0.0.2".parse().expect("ip"),
            ports: vec![8080],
            meshed: true,
            ready: true,
            zone: String::new(),
            opaque_ports: Vec::new(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn leases_expire_and_heartbeats_renew() {
        let (reg, index) = registry();
        let a = reg.register(workload("a"), Duration::from_millis(300));
        let b = reg.register(workload("b"), Duration::ZERO);
        assert_eq!(a.ttl, Duration::from_millis(300));
        assert_eq!(b.ttl, Duration::from_secs(10), "zero asks for the default");
        assert_eq!(index.state().workloads.len(), 2);

        tokio::time::advance(Duration::from_millis(200)).await;
        let version = index.state().version;
        assert!(reg.heartbeat(&a.id, true).is_ok());
        assert_eq!(index.state().version, version, "a renewal is not a change");
        tokio::time::advance(Duration::from_millis(200)).await;
        assert!(reg.expire(Instant::now()).is_empty(), "renewed at 200ms, due at 500ms");
        tokio::time::advance(Duration::from_millis(101)).await;
        assert_eq!(reg.expire(Instant::now()), vec![WorkloadName::new("default", "a")]);
        assert_eq!(index.state().workloads.len(), 1);
        assert_eq!(reg.heartbeat(&a.id, true), Err(RegistryError::UnknownLease(a.id.clone())));

        assert!(reg.heartbeat(&b.id, false).is_ok());
        assert!(!index.state().workloads[&WorkloadName::new("default", "b")].ready);
        reg.deregister(&b.id);
        assert!(index.state().workloads.is_empty());
        assert!(reg.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn re_registering_replaces_the_old_lease() {
        let (reg, index) = registry();
        let old = reg.register(workload("a"), Duration::from_secs(1));
        let new = reg.register(workload("a"), Duration::from_secs(1));
        assert_ne!(old.id, new.id);
        assert!(reg.heartbeat(&old.id, true).is_err());
        assert_eq!(reg.len(), 1);
        assert_eq!(index.state().workloads.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_reaper_removes_lapsed_workloads_on_time() {
        let (reg, index) = registry();
        let (trigger, shutdown) = crate::shutdown::channel();
        let reaper = tokio::spawn(reg.clone().reap(shutdown));
        let mut rx = index.subscribe();
        reg.register(workload("a"), Duration::from_millis(500));
        let start = Instant::now();
        rx.wait_for(|s| s.workloads.is_empty()).await.expect("index alive");
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(500) && waited < Duration::from_millis(600), "{waited:?}");
        trigger.fire();
        reaper.await.expect("reaper");
    }

    /// `by_id`, `by_workload` and `by_expiry` describe the same leases
    /// after every kind of change, and `lapsed` takes exactly the due ones.
    #[test]
    fn lease_indexes_stay_in_step() {
        fn check(l: &Leases) {
            let from_id: BTreeSet<(Instant, String)> = l.by_id.iter().map(|(id, x)| (x.expires, id.clone())).collect();
            assert_eq!(from_id, l.by_expiry);
            assert_eq!(l.by_workload.len(), l.by_id.len());
            for (w, id) in &l.by_workload {
                assert_eq!(&l.by_id[id].workload.name, w);
            }
        }
        let t0 = Instant::now();
        let lease = |name: &str, ms: u64| Lease {
            workload: workload(name),
            ttl: Duration::from_millis(ms),
            expires: t0 + Duration::from_millis(ms),
        };
        let mut l = Leases::default();
        assert!(l.insert("1".into(), lease("a", 300)).is_none());
        assert!(l.insert("2".into(), lease("b", 100)).is_none());
        assert!(l.insert("3".into(), lease("c", 200)).is_none());
        check(&l);
        assert_eq!(l.next_expiry(), Some(t0 + Duration::from_millis(100)));
        // A restarted replica: "a" again replaces lease 1.
        assert_eq!(l.insert("4".into(), lease("a", 400)).map(|x| x.ttl), Some(Duration::from_millis(300)));
        check(&l);
        assert!(l.renew("2", t0 + Duration::from_millis(250)).is_some(), "b now due at 350");
        assert!(l.renew("1", t0).is_none(), "replaced");
        check(&l);
        assert_eq!(l.next_expiry(), Some(t0 + Duration::from_millis(200)));
        let names = |v: Vec<Lease>| v.into_iter().map(|x| x.workload.name.name).collect::<Vec<_>>();
        assert!(l.lapsed(t0 + Duration::from_millis(199)).is_empty());
        assert_eq!(names(l.lapsed(t0 + Duration::from_millis(350))), ["c", "b"]);
        check(&l);
        assert!(l.remove("4").is_some());
        assert!(l.remove("4").is_none());
        check(&l);
        assert_eq!(l.next_expiry(), None);
    }

    #[test]
    fn workloads_are_checked() {
        let ok = weft_api::registry::Workload {
            name: "web-v1-0".into(),
            namespace: String::new(),
            address: "127.0.0.2".into(),
            ports: vec![8080],
            ..Default::default()
        };
        let w = workload_from_api(ok.clone()).expect("valid");
        assert_eq!(w.name, WorkloadName::new("default", "web-v1-0"));
        for bad in [
            weft_api::registry::Workload { name: "Web".into(), ..ok.clone() },
            weft_api::registry::Workload { address: "nowhere".into(), ..ok.clone() },
            weft_api::registry::Workload { address: "0.0.0.0".into(), ..ok.clone() },
            weft_api::registry::Workload { ports: vec![70000], ..ok.clone() },
            weft_api::registry::Workload { namespace: "a.b".into(), ..ok.clone() },
        ] {
            assert!(workload_from_api(bad.clone()).is_err(), "{bad:?}");
        }
    }
}
