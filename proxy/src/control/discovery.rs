//! Resolving outbound destinations through `Discovery.Watch`, with the
//! service's `Policy.WatchOutbound` alongside.
//!
//! ```text
//! resolve(orig dst)  ─► cache[target] ─┬─ first use: spawn a watch task, wait ≤ timeout
//! lookup(name:port) ─┘                  └─ Resolution: Forward(orig) | Service(balancer)
//! watch task: Discovery.Watch stream ─► endpoints (watch channel) ─► Balancer
//!             Policy.WatchOutbound    ─► policy    (watch channel)
//! ```
//!
//! A target is an address (a transparent connection's original
//! destination) or a name (an explicit proxy request's host, see
//! [`super::target`]): both share the cache, the streams and the balancer.
//!
//! Endpoint statistics (EWMA, in-flight) are kept across updates for
//! addresses that stay, so an update does not reset the balancer's view.
//! Requests already sent to a removed endpoint finish normally: they hold
//! their endpoint, and the pool keeps its connection until they are done.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use weft_api::discovery::discovery_client::DiscoveryClient;
use weft_api::discovery::{EndpointSet, WatchRequest, endpoint_set::Kind};
use weft_api::policy::OutboundRequest;
use weft_api::policy::policy_client::PolicyClient;

use super::ControlPlane;
use super::backoff::Backoff;
use crate::balance::{Balancer, Endpoint, Endpoints};
use crate::policy::compiled::CompiledPolicy;
use crate::transport::target::Target;

/// Destinations remembered at most; past it, new ones are resolved without
/// caching (forwarded as is) rather than growing memory without bound.
const MAX_TARGETS: usize = 10_000;
/// A destination unused for this long stops its streams.
const TARGET_IDLE: Duration = Duration::from_secs(300);
/// After reconnecting to the control plane, how long an empty endpoint set
/// is distrusted: longer than a registration lease, so that restarted
/// control planes have heard from every live workload again.
const RECONNECT_GRACE: Duration = Duration::from_secs(15);

/// Where a connection or request goes.
#[derive(Clone, Debug)]
pub enum Resolution {
    /// Not a service (or no answer in time): the original destination.
    Forward(SocketAddr),
    /// A service: balance over its endpoints.
    Service(Arc<ServiceTarget>),
}

/// A resolved service destination.
#[derive(Debug)]
pub struct ServiceTarget {
    pub balancer: Balancer,
    /// The outbound policy, compiled; `None` until the first one arrives.
    pub policy: watch::Receiver<Option<Arc<CompiledPolicy>>>,
}

impl ServiceTarget {
    /// The policy a new request runs under (it keeps it to the end).
    pub fn policy(&self) -> Option<Arc<CompiledPolicy>> {
        self.policy.borrow().clone()
    }

    /// [`ServiceTarget::policy`], waiting up to `timeout` for the first one:
    /// discovery and policy are separate streams, and a destination's
    /// first request must not be routed before its routes are known.
    /// Immediate once a policy has arrived; `None` when none came in time.
    pub async fn policy_within(&self, timeout: Duration) -> Option<Arc<CompiledPolicy>> {
        if let Some(policy) = self.policy() {
            return Some(policy);
        }
        let mut rx = self.policy.clone();
        match tokio::time::timeout(timeout, rx.wait_for(Option::is_some)).await {
            Ok(Ok(policy)) => policy.clone(),
            _ => None,
        }
    }
}

#[derive(Debug)]
struct Entry {
    state: watch::Receiver<Option<Snapshot>>,
    service: Arc<ServiceTarget>,
    last_used: Mutex<Instant>,
}

/// What the last discovery message said about a destination.
#[derive(Clone, Debug)]
struct Snapshot {
    version: u64,
    kind: Kind,
}

#[derive(Debug)]
pub struct Resolver {
    control: Option<ControlPlane>,
    /// How long a first resolution may wait for the control plane.
    timeout: Duration,
    cache: Mutex<HashMap<Target, Arc<Entry>>>,
}

impl Resolver {
    pub fn new(control: Option<ControlPlane>, timeout: Duration) -> Arc<Self> {
        let resolver = Arc::new(Self { control, timeout, cache: Mutex::default() });
        if resolver.control.is_some() {
            tokio::spawn(sweep(Arc::downgrade(&resolver)));
        }
        resolver
    }

    /// Resolves an outbound original destination. Never fails: without an
    /// answer the connection goes where the app sent it.
    pub async fn resolve(&self, orig: SocketAddr) -> Resolution {
        match self.lookup(&Target::Addr(orig)).await {
            Some(resolution) => resolution,
            None => Resolution::Forward(orig),
        }
    }

    /// What the mesh knows of `target`: a service (or a meshed pod
    /// addressed directly) to balance over; `None` when it knows nothing,
    /// has no control plane, or did not answer within the discovery
    /// timeout. The caller decides where unknown targets go.
    pub async fn lookup(&self, target: &Target) -> Option<Resolution> {
        let control = self.control.as_ref()?;
        let entry = self.entry(control, target)?;
        *entry.last_used.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        let mut state = entry.state.clone();
        let kind = match tokio::time::timeout(self.timeout, state.wait_for(Option::is_some)).await {
            Ok(Ok(snapshot)) => snapshot.as_ref().map(|s| s.kind),
            _ => None,
        };
        match kind {
            Some(Kind::Service) => Some(Resolution::Service(entry.service.clone())),
            // A meshed pod addressed directly: its one endpoint, so that the
            // connection gets mTLS with the pod's identity like service
            // traffic does.
            Some(Kind::Endpoint) if !entry.service.balancer.endpoints().is_empty() => {
                Some(Resolution::Service(entry.service.clone()))
            }
            None => {
                tracing::debug!(%target, "no discovery answer in time");
                None
            }
            Some(_) => None,
        }
    }

    fn entry(&self, control: &ControlPlane, target: &Target) -> Option<Arc<Entry>> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = cache.get(target) {
            return Some(e.clone());
        }
        if cache.len() >= MAX_TARGETS {
            return None;
        }
        let (state_tx, state_rx) = watch::channel(None);
        let (eps_tx, eps_rx) = watch::channel(Endpoints::default());
        let (policy_tx, policy_rx) = watch::channel(None);
        let entry = Arc::new(Entry {
            state: state_rx,
            service: Arc::new(ServiceTarget { balancer: Balancer::new(eps_rx), policy: policy_rx }),
            last_used: Mutex::new(Instant::now()),
        });
        cache.insert(target.clone(), entry.clone());
        tokio::spawn(watch_target(control.clone(), target.clone(), state_tx, eps_tx, policy_tx));
        Some(entry)
    }

    /// Every endpoint under a circuit breaker: (target, endpoint, open).
    pub fn circuits(&self) -> Vec<(String, SocketAddr, bool)> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let mut rows = Vec::new();
        for (target, e) in cache.iter() {
            for ep in e.service.balancer.endpoints().iter() {
                if let Some(open) = ep.circuit_open() {
                    rows.push((target.to_string(), ep.addr, open));
                }
            }
        }
        rows.sort();
        rows
    }

    /// What the proxy currently runs, for the admin `/config`.
    pub fn describe(&self) -> serde_json::Value {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let mut targets: Vec<_> = cache
            .iter()
            .map(|(target, e)| {
                let snapshot = e.state.borrow().clone();
                let policy = e.service.policy.borrow().clone();
                let endpoints: Vec<_> = e
                    .service
                    .balancer
                    .endpoints()
                    .iter()
                    .map(|ep| {
                        serde_json::json!({
                            "address": ep.addr.to_string(),
                            "identity": ep.identity,
                            "weight": ep.weight,
                            "pending": ep.pending(),
                            "ewma_ms": ep.ewma_micros(now).map(|us| us / 1000.0),
                        })
                    })
                    .collect();
                serde_json::json!({
                    "target": target.to_string(),
                    "kind": snapshot.as_ref().map(|s| s.kind.as_str_name()),
                    "discovery_version": snapshot.as_ref().map(|s| s.version),
                    "policy_version": policy.as_ref().map(|p| p.version),
                    "service": policy.as_ref().map(|p| p.service.clone()),
                    "policy_sources": policy.as_ref().map(|p| p.sources.clone()),
                    "policy_errors": policy.as_ref().map(|p| p.errors.clone()),
                    "endpoints": endpoints,
                })
            })
            .collect();
        targets.sort_by_key(|t| t["target"].as_str().unwrap_or_default().to_string());
        serde_json::json!({
            "control_plane": self.control.as_ref().map(|c| c.url.clone()),
            "targets": targets,
        })
    }
}

/// Drops destinations nobody used for [`TARGET_IDLE`]; their streams end
/// when the last receiver is gone.
async fn sweep(resolver: std::sync::Weak<Resolver>) {
    loop {
        tokio::time::sleep(Duration::from_secs(30)).await;
        let Some(resolver) = resolver.upgrade() else { return };
        let mut cache = resolver.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.retain(|_, e| e.last_used.lock().unwrap_or_else(|p| p.into_inner()).elapsed() < TARGET_IDLE);
    }
}

/// Keeps one destination's discovery and policy streams alive until the
/// cache forgets it.
async fn watch_target(
    control: ControlPlane,
    target: Target,
    state: watch::Sender<Option<Snapshot>>,
    endpoints: watch::Sender<Endpoints>,
    policy: watch::Sender<Option<Arc<CompiledPolicy>>>,
) {
    let discovery = async {
        let mut backoff = Backoff::default();
        loop {
            if let Err(e) = stream_discovery(&control, &target, &state, &endpoints, &mut backoff).await {
                tracing::debug!(%target, error = %e, "discovery stream ended; keeping the last snapshot");
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    };
    let policy_stream = async {
        let mut backoff = Backoff::default();
        loop {
            if let Err(e) = stream_policy(&control, &target, &policy, &mut backoff).await {
                tracing::debug!(%target, error = %e, "policy stream ended; keeping the last policy");
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    };
    tokio::select! {
        _ = state.closed() => {}
        _ = discovery => {}
        _ = policy_stream => {}
    }
}

async fn stream_discovery(
    control: &ControlPlane,
    target: &Target,
    state: &watch::Sender<Option<Snapshot>>,
    endpoints: &watch::Sender<Endpoints>,
    backoff: &mut Backoff,
) -> Result<(), tonic::Status> {
    let mut client = DiscoveryClient::new(control.channel.clone());
    let request = WatchRequest {
        target: target.to_string(),
        proxy_id: control.proxy_id.clone(),
        namespace: control.namespace.clone(),
    };
    let mut stream = client.watch(request).await?.into_inner();
    let reconnected = state.borrow().is_some();
    let mut first = true;
    // An empty set held back after a reconnect (see below).
    let mut held: Option<EndpointSet> = None;
    loop {
        let next = match &held {
            Some(_) => match tokio::time::timeout(RECONNECT_GRACE, stream.message()).await {
                Ok(next) => next?,
                Err(_) => {
                    if let Some(set) = held.take() {
                        apply(&set, state, endpoints);
                    }
                    continue;
                }
            },
            None => stream.message().await?,
        };
        let Some(set) = next else { break };
        backoff.reset();
        // A control plane that just restarted knows no workload until they
        // register again (within one heartbeat). Its first answer after we
        // reconnect may therefore be an empty service; believing it would
        // fail every request in that window, so the last endpoints stay in
        // use until a non-empty update arrives or the grace period ends.
        if std::mem::take(&mut first)
            && reconnected
            && set.kind == Kind::Service as i32
            && !set.endpoints.iter().any(|e| e.ready)
            && !endpoints.borrow().is_empty()
        {
            tracing::info!(%target, "control plane reports no endpoints right after reconnecting; keeping the last ones for now");
            held = Some(set);
            continue;
        }
        held = None;
        apply(&set, state, endpoints);
    }
    Err(tonic::Status::unavailable("stream closed by the control plane"))
}

/// Applies one snapshot: a new endpoint list reusing the statistics of
/// endpoints that stay.
fn apply(set: &EndpointSet, state: &watch::Sender<Option<Snapshot>>, endpoints: &watch::Sender<Endpoints>) {
    let kind = Kind::try_from(set.kind).unwrap_or(Kind::Unknown);
    let previous: HashMap<SocketAddr, Arc<Endpoint>> = endpoints.borrow().iter().map(|e| (e.addr, e.clone())).collect();
    let candidates: Vec<&weft_api::discovery::Endpoint> = match kind {
        Kind::Service => set.endpoints.iter().filter(|e| e.ready).collect(),
        // Only a meshed endpoint (with an identity) is worth balancing over:
        // anything else goes where the app sent it, in plaintext.
        Kind::Endpoint => set.endpoint.iter().filter(|e| e.meshed && !e.identity.is_empty()).collect(),
        Kind::Unknown => Vec::new(),
    };
    let next: Vec<Arc<Endpoint>> = candidates
        .into_iter()
        .filter_map(|e| match e.address.parse::<SocketAddr>() {
            Ok(addr) => Some(
                previous
                    .get(&addr)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(Endpoint::new(addr, e.identity.clone(), e.weight))),
            ),
            Err(_) => {
                tracing::warn!(address = %e.address, "ignoring an endpoint with an invalid address");
                None
            }
        })
        .collect();
    tracing::debug!(version = set.version, kind = kind.as_str_name(), endpoints = next.len(), "discovery update");
    endpoints.send_replace(Arc::new(next));
    state.send_replace(Some(Snapshot { version: set.version, kind }));
}

async fn stream_policy(
    control: &ControlPlane,
    target: &Target,
    policy: &watch::Sender<Option<Arc<CompiledPolicy>>>,
    backoff: &mut Backoff,
) -> Result<(), tonic::Status> {
    let mut client = PolicyClient::new(control.channel.clone());
    let request = OutboundRequest {
        target: target.to_string(),
        proxy_id: control.proxy_id.clone(),
        namespace: control.namespace.clone(),
    };
    let mut stream = client.watch_outbound(request).await?.into_inner();
    while let Some(p) = stream.message().await? {
        backoff.reset();
        tracing::debug!(version = p.version, service = %p.service, "policy update");
        let compiled = CompiledPolicy::compile(&p);
        for error in &compiled.errors {
            tracing::warn!(%target, version = p.version, %error, "policy partly applied");
        }
        policy.send_replace(Some(Arc::new(compiled)));
    }
    Err(tonic::Status::unavailable("stream closed by the control plane"))
}
