//! The proxy's metrics: plain atomics indexed by small enums on the hot path,
//! rendered as Prometheus text only when `/metrics` is scraped.
//!
//! Label sets are bounded by construction: `direction`, `protocol` and
//! `outcome` are enums; `authority` is capped at [`MAX_AUTHORITIES`] values
//! per direction (the rest count as `other`); status codes are at most 500.

pub mod counted;
mod encode;
mod histogram;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::transport::detect::Outcome;

pub use encode::{render, render_circuits};
pub use histogram::LatencyHistogram;

/// Distinct `authority` label values kept per direction.
pub const MAX_AUTHORITIES: usize = 100;
/// The label value for authorities past the cap, and for requests without one.
pub const OTHER_AUTHORITY: &str = "other";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Inbound = 0,
    Outbound = 1,
}

impl Direction {
    pub const ALL: [Direction; 2] = [Direction::Inbound, Direction::Outbound];

    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

/// Protocol label of TCP metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtocolLabel {
    Http1 = 0,
    Http2 = 1,
    Opaque = 2,
}

impl ProtocolLabel {
    pub const ALL: [ProtocolLabel; 3] = [ProtocolLabel::Http1, ProtocolLabel::Http2, ProtocolLabel::Opaque];

    pub fn as_str(self) -> &'static str {
        match self {
            ProtocolLabel::Http1 => "http1",
            ProtocolLabel::Http2 => "http2",
            ProtocolLabel::Opaque => "opaque",
        }
    }
}

const OUTCOMES: [Outcome; 6] =
    [Outcome::Http1, Outcome::Http2, Outcome::Opaque, Outcome::Timeout, Outcome::OpaquePort, Outcome::Closed];

fn outcome_index(o: Outcome) -> usize {
    match o {
        Outcome::Http1 => 0,
        Outcome::Http2 => 1,
        Outcome::Opaque => 2,
        Outcome::Timeout => 3,
        Outcome::OpaquePort => 4,
        Outcome::Closed => 5,
    }
}

/// All of the proxy's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    pub tcp: [[TcpCounters; 3]; 2],
    detect: [[AtomicU64; 6]; 2],
    authorities: [AuthorityIndex; 2],
    latency: [[LatencyHistogram; 2]; 2],
    /// Connections refused because they were not redirected (would loop) or
    /// their original destination could not be read.
    pub orig_dst_errors: [AtomicU64; 2],
    /// Inbound connections closed at accept because admission (detection
    /// and handshake) was full.
    pub inbound_shed: AtomicU64,
    /// Inbound mesh TLS handshakes that did not finish in time.
    pub inbound_handshake_timeouts: AtomicU64,
    /// Unix seconds when the current certificate expires; 0 without mTLS.
    identity_expiry: AtomicU64,
    identity_renewals: AtomicU64,
    /// Inbound authorization decisions by (allowed, policy, reason); a
    /// handful of keys (policies × reasons), looked up once per connection.
    authz: Mutex<std::collections::BTreeMap<(bool, String, &'static str), Arc<AtomicU64>>>,
    /// The traffic policy stack's counters.
    pub policy: PolicyCounters,
    /// Responses by upstream (outbound) or client (inbound) identity.
    edges: [EdgeIndex; 2],
    /// Tap events dropped (the subscriber's queue was full).
    pub tap_dropped: AtomicU64,
}

/// Distinct (peer, peer_id, tls) edges kept per direction.
pub const MAX_EDGES: usize = 100;
/// The `peer` of an outbound edge whose destination is not a mesh service.
pub const UNKNOWN_PEER: &str = "unknown";

/// Who answered (outbound: the upstream) or asked (inbound: the client),
/// set by a stage as a response extension for the record layer.
#[derive(Clone, Debug)]
pub struct EdgePeer {
    /// Outbound: the destination service `name.namespace` (`None`:
    /// [`UNKNOWN_PEER`]); inbound: `None` (rendered empty).
    pub peer: Option<Arc<str>>,
    /// The SPIFFE ID the connection was verified as; `None` when plaintext.
    pub peer_id: Option<crate::identity::SpiffeId>,
    /// The upstream's address (outbound), for tap.
    pub addr: Option<std::net::SocketAddr>,
    /// Outbound: the route and backend that answered, for tap.
    pub route: Option<(Arc<str>, Arc<str>)>,
}

impl EdgePeer {
    /// An upstream that answered, before the stage names it.
    pub fn upstream(peer_id: Option<crate::identity::SpiffeId>, addr: std::net::SocketAddr) -> Self {
        Self { peer: None, peer_id, addr: Some(addr), route: None }
    }

    /// A client of the inbound side.
    pub fn client(peer_id: Option<crate::identity::SpiffeId>) -> Self {
        Self { peer: None, peer_id, addr: None, route: None }
    }

    pub fn tls(&self) -> bool {
        self.peer_id.is_some()
    }

    pub fn peer_id(&self) -> &str {
        self.peer_id.as_ref().map_or("", |id| id.as_str())
    }
}

/// Responses and their latency on one edge.
#[derive(Debug, Default)]
pub struct EdgeStats {
    success: AtomicU64,
    failure: AtomicU64,
    latency: LatencyHistogram,
}

impl EdgeStats {
    pub fn response(&self, status: u16, latency: Duration) {
        if is_failure(status) { &self.failure } else { &self.success }.fetch_add(1, Relaxed);
        self.latency.record(latency);
    }
}

/// One direction's edges: a short list scanned under a read lock (at most
/// [`MAX_EDGES`] + 2 entries, usually a handful).
#[derive(Debug, Default)]
struct EdgeIndex(RwLock<Vec<(Arc<str>, Arc<str>, bool, Arc<EdgeStats>)>>);

/// Routes × backends counted at most; past it, `route="other"`.
pub const MAX_ROUTE_SERIES: usize = 1000;

/// What the traffic policy stack did.
#[derive(Debug, Default)]
pub struct PolicyCounters {
    /// Retries sent (attempts after the first).
    pub retries: AtomicU64,
    /// Retries the budget refused: the failure went back to the client.
    pub retry_budget_exhausted: AtomicU64,
    /// 504s from `timeouts.request`.
    pub request_timeouts: AtomicU64,
    /// Attempts cut by the per-try timeout (`backendRequest`, `perTryTimeout`).
    pub per_try_timeouts: AtomicU64,
    /// Response bodies and opaque connections cut by the idle timeout.
    pub idle_timeouts: AtomicU64,
    /// Inbound requests answered 429.
    pub rate_limited: AtomicU64,
    /// Requests to a service with routes that matched none (404).
    pub no_route: AtomicU64,
    /// Requests a fault policy aborted or delayed.
    pub faults_aborted: AtomicU64,
    pub faults_delayed: AtomicU64,
    /// Endpoints ejected by the circuit breaker.
    pub ejections: AtomicU64,
    /// RequestMirror copies answered, failed or timed out, and skipped
    /// (too many in flight, or a streamed body).
    pub mirrored: AtomicU64,
    pub mirror_failed: AtomicU64,
    pub mirror_skipped: AtomicU64,
    routes: Mutex<std::collections::BTreeMap<(Arc<str>, Arc<str>), Arc<RouteStats>>>,
}

/// Requests by route and backend, split into success and failure, and
/// their time to response headers by the same split.
#[derive(Debug, Default)]
pub struct RouteStats {
    success: AtomicU64,
    failure: AtomicU64,
    latency: [LatencyHistogram; 2],
}

impl RouteStats {
    pub fn response(&self, status: u16) {
        if is_failure(status) { &self.failure } else { &self.success }.fetch_add(1, Relaxed);
    }

    /// Counts the response and records its latency (request start to
    /// response headers, retries included).
    pub fn response_timed(&self, status: u16, latency: Duration) {
        self.response(status);
        self.latency[usize::from(is_failure(status))].record(latency);
    }
}

/// The route label of requests to a service without routes.
pub const DEFAULT_ROUTE: &str = "default";

impl PolicyCounters {
    /// The counters of (`route`, `backend`), created while under the cap.
    pub fn route(&self, route: &Arc<str>, backend: &Arc<str>) -> Arc<RouteStats> {
        let mut map = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        let key = (route.clone(), backend.clone());
        if map.len() >= MAX_ROUTE_SERIES && !map.contains_key(&key) {
            let other: Arc<str> = Arc::from(OTHER_AUTHORITY);
            return map.entry((other.clone(), other)).or_default().clone();
        }
        map.entry(key).or_default().clone()
    }

    /// (route, backend, stats), for rendering; the route is `default`
    /// for a service without routes.
    pub fn route_rows(&self) -> Vec<(Arc<str>, Arc<str>, Arc<RouteStats>)> {
        let map = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        map.iter()
            .map(|((r, b), s)| {
                let route: Arc<str> = if r.is_empty() { Arc::from(DEFAULT_ROUTE) } else { r.clone() };
                (route, b.clone(), s.clone())
            })
            .collect()
    }
}

/// TCP counters for one (direction, protocol).
#[derive(Debug, Default)]
pub struct TcpCounters {
    pub opened: AtomicU64,
    pub open: AtomicI64,
    pub closed: AtomicU64,
    pub read_bytes: AtomicU64,
    pub write_bytes: AtomicU64,
}

#[derive(Debug, Default)]
struct AuthorityIndex(RwLock<HashMap<String, Arc<AuthorityStats>>>);

/// Request and response counts for one (direction, authority).
#[derive(Debug, Default)]
pub struct AuthorityStats {
    requests: AtomicU64,
    /// (status code, count); a handful of entries, so a short Vec beats a map.
    responses: Mutex<Vec<(u16, u64)>>,
}

impl AuthorityStats {
    pub fn request(&self) {
        self.requests.fetch_add(1, Relaxed);
    }

    pub fn response(&self, status: u16) {
        let mut responses = self.responses.lock().unwrap_or_else(|p| p.into_inner());
        match responses.iter_mut().find(|(s, _)| *s == status) {
            Some((_, n)) => *n += 1,
            None => responses.push((status, 1)),
        }
    }
}

/// `failure` for 5xx and proxy errors, `success` otherwise (as Linkerd does:
/// a 4xx is the server answering correctly).
pub fn is_failure(status: u16) -> bool {
    status >= 500
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn tcp(&self, dir: Direction, proto: ProtocolLabel) -> &TcpCounters {
        &self.tcp[dir as usize][proto as usize]
    }

    /// Counts how a spliced stream (opaque connection, tunnel) failed.
    pub fn spliced(&self, err: &crate::transport::splice::SpliceError) {
        if matches!(err, crate::transport::splice::SpliceError::Idle(_)) {
            self.policy.idle_timeouts.fetch_add(1, Relaxed);
        }
    }

    pub fn detected(&self, dir: Direction, outcome: Outcome) {
        self.detect[dir as usize][outcome_index(outcome)].fetch_add(1, Relaxed);
    }

    /// The counters for `authority`, creating them while under the cap.
    pub fn authority(&self, dir: Direction, authority: &str) -> Arc<AuthorityStats> {
        let index = &self.authorities[dir as usize].0;
        if let Some(stats) = index.read().unwrap_or_else(|p| p.into_inner()).get(authority) {
            return stats.clone();
        }
        let mut map = index.write().unwrap_or_else(|p| p.into_inner());
        let key = if map.len() < MAX_AUTHORITIES || map.contains_key(authority) { authority } else { OTHER_AUTHORITY };
        map.entry(key.to_string()).or_default().clone()
    }

    /// The stats of an edge, created while under the cap (past it, the
    /// edge counts as `peer="other",peer_id="other"` with its `tls`).
    pub fn edge(&self, dir: Direction, peer: &str, peer_id: &str, tls: bool) -> Arc<EdgeStats> {
        let index = &self.edges[dir as usize].0;
        let find = |v: &[(Arc<str>, Arc<str>, bool, Arc<EdgeStats>)], p: &str, id: &str| {
            v.iter().find(|(vp, vid, vt, _)| **vp == *p && **vid == *id && *vt == tls).map(|e| e.3.clone())
        };
        if let Some(stats) = find(&index.read().unwrap_or_else(|p| p.into_inner()), peer, peer_id) {
            return stats;
        }
        let mut v = index.write().unwrap_or_else(|p| p.into_inner());
        if let Some(stats) = find(&v, peer, peer_id) {
            return stats;
        }
        let named = v.iter().filter(|(p, id, _, _)| !(&**p == OTHER_AUTHORITY && &**id == OTHER_AUTHORITY)).count();
        let (peer, peer_id) = if named < MAX_EDGES { (peer, peer_id) } else { (OTHER_AUTHORITY, OTHER_AUTHORITY) };
        if let Some(stats) = find(&v, peer, peer_id) {
            return stats;
        }
        let stats = Arc::new(EdgeStats::default());
        v.push((Arc::from(peer), Arc::from(peer_id), tls, stats.clone()));
        stats
    }

    /// The counter for an authorization decision.
    pub fn authz_counter(&self, allowed: bool, policy: &str, reason: &'static str) -> Arc<AtomicU64> {
        let mut map = self.authz.lock().unwrap_or_else(|p| p.into_inner());
        map.entry((allowed, policy.to_string(), reason)).or_default().clone()
    }

    pub fn set_identity(&self, expiry_unix: Option<u64>, renewals: u64) {
        self.identity_expiry.store(expiry_unix.unwrap_or(0), Relaxed);
        self.identity_renewals.store(renewals, Relaxed);
    }

    pub fn record_latency(&self, dir: Direction, status: u16, latency: Duration) {
        self.latency[dir as usize][usize::from(is_failure(status))].record(latency);
    }
}

impl TcpCounters {
    pub fn open_connection(&self) {
        self.opened.fetch_add(1, Relaxed);
        self.open.fetch_add(1, Relaxed);
    }

    pub fn close_connection(&self) {
        self.open.fetch_sub(1, Relaxed);
        self.closed.fetch_add(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges_are_capped_per_direction() {
        let m = Metrics::new();
        for i in 0..MAX_EDGES + 5 {
            let id = format!("spiffe://td/ns/default/sa/s{i}");
            m.edge(Direction::Inbound, "", &id, true).response(200, Duration::from_millis(1));
        }
        // Plaintext past the cap keeps its tls label under "other".
        m.edge(Direction::Inbound, "", "", false).response(503, Duration::from_millis(1));
        // The other direction has its own budget.
        m.edge(Direction::Outbound, "web.default", "spiffe://td/ns/default/sa/web", true)
            .response(200, Duration::from_millis(1));
        let v = m.edges[0].0.read().expect("lock");
        assert_eq!(v.len(), MAX_EDGES + 2);
        let other: Vec<_> = v.iter().filter(|e| &*e.0 == "other" && &*e.1 == "other").collect();
        assert_eq!(other.len(), 2, "one other key per tls value");
        let tls_other = other.iter().find(|e| e.2).expect("tls other");
        assert_eq!(tls_other.3.success.load(Relaxed), 5);
        drop(v);
        // A key admitted before the cap keeps its own series.
        m.edge(Direction::Inbound, "", "spiffe://td/ns/default/sa/s0", true).response(200, Duration::from_millis(1));
        let v = m.edges[0].0.read().expect("lock");
        let s0 = v.iter().find(|e| &*e.1 == "spiffe://td/ns/default/sa/s0").expect("s0");
        assert_eq!(s0.3.success.load(Relaxed), 2);
        assert_eq!(m.edges[1].0.read().expect("lock").len(), 1);
    }

    #[test]
    fn authorities_are_capped() {
        let m = Metrics::new();
        for i in 0..MAX_AUTHORITIES + 10 {
            m.authority(Direction::Outbound, &format!("svc-{i}:80")).request();
        }
        let map = m.authorities[1].0.read().expect("lock");
        assert_eq!(map.len(), MAX_AUTHORITIES + 1);
        assert_eq!(map[OTHER_AUTHORITY].requests.load(Relaxed), 10);
        // An authority admitted before the cap keeps its own series.
        drop(map);
        m.authority(Direction::Outbound, "svc-0:80").request();
        let map = m.authorities[1].0.read().expect("lock");
        assert_eq!(map["svc-0:80"].requests.load(Relaxed), 2);
    }

    #[test]
    fn responses_count_per_status() {
        let s = AuthorityStats::default();
        for code in [200, 200, 503, 200] {
            s.response(code);
        }
        let r = s.responses.lock().expect("lock");
        assert_eq!(*r, vec![(200, 3), (503, 1)]);
    }
}
