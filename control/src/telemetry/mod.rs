//! Control-plane telemetry: the proxies' metrics, scraped, kept and
//! aggregated for the dashboard, its JSON API and the `weft` views.
//!
//! ```text
//!   index (workloads: address, labels, meshed) + --telemetry-target
//!     └─► scrape: every --telemetry-interval, http://ADDR:4191/metrics of each meshed pod
//!           (bounded concurrency, a timeout each, the error kept per pod)
//!     └─► store: a bounded history per pod (--telemetry-retention)
//!     └─► aggregate: pure functions (windowed rates, success, quantiles;
//!           by workload, service, version, route, edge)  ◄── dashboard /api/*
//!   tap: the proxies' tap streams (port 4190, mTLS), relayed to /api/tap
//! ```
//!
//! Both sources feed the same index, so this works the same with
//! `--source files` (registered workloads) and `--source kubernetes`
//! (Pods).

pub mod aggregate;
pub mod prom;
pub mod scrape;
pub mod store;
pub mod tap;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use self::aggregate::{Pod, ServicePods, workload_of};
use self::store::Store;
use crate::index::{EndpointSource, Index, NsName, State};

/// The proxies' admin port, where `/metrics` is.
pub const PROXY_ADMIN_PORT: u16 = 4191;
/// The proxies' tap port.
pub const PROXY_TAP_PORT: u16 = 4190;

/// How telemetry runs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Between scrapes of every pod; zero disables scraping.
    pub interval: Duration,
    /// How far back the history goes.
    pub retention: Duration,
    /// One scrape's deadline (connect to end of body).
    pub timeout: Duration,
    /// Scrapes in flight at once.
    pub concurrency: usize,
    /// The proxies' admin port (4191; tests use others).
    pub admin_port: u16,
    /// The proxies' tap port (4190; tests use others).
    pub tap_port: u16,
    /// Pods the index does not know (the local mesh's clients, which do
    /// not register): scraped too.
    pub extra: Vec<ExtraTarget>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            interval: Duration::from_secs(5),
            retention: Duration::from_secs(15 * 60),
            timeout: Duration::from_secs(2),
            concurrency: 16,
            admin_port: PROXY_ADMIN_PORT,
            tap_port: PROXY_TAP_PORT,
            extra: Vec::new(),
        }
    }
}

/// `--telemetry-target NAMESPACE/POD/SERVICE_ACCOUNT=IP`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtraTarget {
    pub name: NsName,
    pub service_account: String,
    pub address: IpAddr,
}

impl std::str::FromStr for ExtraTarget {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad =
            || format!("{s:?}: expected NAMESPACE/POD/SERVICE_ACCOUNT=IP, e.g. default/load-0/default=198.18.1.5");
        let (who, ip) = s.split_once('=').ok_or_else(bad)?;
        let mut parts = who.split('/');
        let (Some(ns), Some(name), Some(sa), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        if ns.is_empty() || name.is_empty() || sa.is_empty() {
            return Err(bad());
        }
        Ok(ExtraTarget {
            name: NsName::new(ns, name),
            service_account: sa.to_owned(),
            address: ip.trim().parse().map_err(|_| bad())?,
        })
    }
}

/// Unix time now, seconds.
pub fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Every pod the index knows (and the extra targets), meshed or not.
pub fn pods(state: &State, extra: &[ExtraTarget]) -> Vec<Pod> {
    let td = &state.mesh.trust_domain;
    let mut pods: Vec<Pod> = state
        .workloads
        .values()
        .map(|w| Pod {
            name: w.name.clone(),
            workload: workload_of(&w.name.name, &w.labels),
            labels: w.labels.clone(),
            address: w.address,
            meshed: w.meshed,
            identity: w.identity(td),
        })
        .collect();
    for e in extra {
        if pods.iter().any(|p| p.name == e.name) {
            continue;
        }
        pods.push(Pod {
            name: e.name.clone(),
            workload: workload_of(&e.name.name, &BTreeMap::new()),
            labels: BTreeMap::new(),
            address: e.address,
            meshed: true,
            identity: crate::index::model::spiffe_id(td, &e.name.namespace, &e.service_account),
        });
    }
    pods.sort_by(|a, b| a.name.cmp(&b.name));
    pods
}

/// Every Service with the pods (indexes into `pods`) it sends traffic to:
/// by selector, or by its EndpointSlices' addresses.
pub fn services(state: &State, pods: &[Pod]) -> Vec<ServicePods> {
    state
        .services
        .values()
        .map(|s| {
            let members = pods
                .iter()
                .enumerate()
                .filter(|(_, p)| match s.endpoints {
                    EndpointSource::Selector => {
                        p.name.namespace == s.name.namespace
                            && !s.selector.is_empty()
                            && s.selector.iter().all(|(k, v)| p.labels.get(k) == Some(v))
                    }
                    EndpointSource::Slices => {
                        state.slices_of(&s.name).any(|slice| slice.endpoints.iter().any(|e| e.address == p.address))
                    }
                })
                .map(|(i, _)| i)
                .collect();
            ServicePods { name: s.name.clone(), pods: members }
        })
        .collect()
}

/// The running telemetry: the store and what it needs to answer.
#[derive(Debug, Clone)]
pub struct Telemetry {
    pub index: Index,
    pub store: Arc<Store>,
    pub settings: Arc<Settings>,
}

impl Telemetry {
    pub fn new(index: Index, settings: Settings) -> Telemetry {
        let store = Arc::new(Store::new(settings.retention, settings.interval));
        Telemetry { index, store, settings: Arc::new(settings) }
    }
}
