//! Endpoint choice, every kind a route can ask for: power of two choices
//! over peak-EWMA latency (the default, as Linkerd balances), round robin,
//! least request and consistent hashing ([`hash`]), over the endpoints the
//! circuit breaker admits. [`Balancer::pick_with`] is the one entry point.
//!
//! Each endpoint carries a [`PeakEwma`] of its observed latency and a count
//! of requests in flight; its cost is `ewma × (pending + 1)`. For each
//! request two distinct endpoints are drawn at random and the cheaper one
//! wins. A slow endpoint's cost rises at once (the *peak*: a latency above
//! the average replaces it) and decays back slowly, so it sheds load quickly
//! and regains it gradually; two random picks (instead of the global
//! minimum) keep many proxies from stampeding onto the same endpoint.

mod ewma;
pub mod hash;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::HeaderMap;
use tokio::sync::watch;
use tokio::time::Instant;

pub use ewma::PeakEwma;

use crate::policy::circuit::{Admit, Circuit, CircuitConfig};
use crate::policy::compiled::Balance;
use hash::{RoundRobin, endpoint_hash, hash_key, least_request, rendezvous};

/// One endpoint and its load statistics. Statistics survive endpoint-set
/// updates: the resolver reuses the `Arc` for an address it already knows.
#[derive(Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// Expected peer identity as discovery sent it; empty when unmeshed.
    pub identity: String,
    /// The same, parsed: `Some` makes the proxy use mesh TLS to it.
    pub spiffe: Option<crate::identity::SpiffeId>,
    pub weight: u32,
    pending: AtomicUsize,
    ewma: PeakEwma,
    /// Failure accrual, when the service's policy has a circuit breaker.
    circuit: Mutex<Option<Circuit>>,
}

impl Endpoint {
    pub fn new(addr: SocketAddr, identity: String, weight: u32) -> Self {
        let spiffe = crate::identity::SpiffeId::parse(&identity).ok();
        Self {
            addr,
            identity,
            spiffe,
            weight: weight.max(1),
            pending: AtomicUsize::new(0),
            ewma: PeakEwma::default(),
            circuit: Mutex::new(None),
        }
    }

    fn circuit(&self) -> std::sync::MutexGuard<'_, Option<Circuit>> {
        self.circuit.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes normal traffic: no breaker, or its circuit is closed.
    pub fn is_healthy(&self) -> bool {
        self.circuit().as_ref().is_none_or(Circuit::is_healthy)
    }

    /// Under a circuit breaker: whether it is open (ejected or half-open),
    /// for the `weft_circuit_open` gauge; `None` without a breaker.
    pub fn circuit_open(&self) -> Option<bool> {
        self.circuit().as_ref().map(Circuit::is_open)
    }

    /// An ejected endpoint whose ejection is over takes one probe request.
    fn try_probe(&self, now: std::time::Instant) -> bool {
        let mut circuit = self.circuit();
        match circuit.as_mut() {
            Some(c) if !c.is_healthy() => c.admit(now) == Admit::Probe,
            _ => false,
        }
    }

    /// Records the outcome of a request under `cfg`; `true` if it ejected
    /// the endpoint. `healthy_others`: how many other endpoints of the set
    /// are healthy (the last healthy one is never ejected).
    pub fn record(&self, cfg: &CircuitConfig, success: bool, healthy_others: usize) -> bool {
        let now = std::time::Instant::now();
        let mut circuit = self.circuit();
        // A new or changed breaker starts afresh.
        let c = match circuit.as_mut() {
            Some(c) if c.config() == cfg => c,
            _ => circuit.insert(Circuit::new(*cfg, now)),
        };
        if success {
            c.on_success(now);
            false
        } else {
            c.on_failure(now, healthy_others)
        }
    }

    /// The load P2C compares, for a latency estimate `rtt` (µs); lower is
    /// better. Weight divides it: weight 2 looks half as loaded.
    fn cost(&self, rtt: f64) -> f64 {
        let pending = self.pending.load(Relaxed) as f64;
        rtt * (pending + 1.0) / f64::from(self.weight)
    }

    pub fn pending(&self) -> usize {
        self.pending.load(Relaxed)
    }

    /// The latency estimate, `None` before the first response.
    pub fn ewma_micros(&self, now: Instant) -> Option<f64> {
        self.ewma.get(now)
    }
}

/// The current endpoints of a service; replaced wholesale on each update.
pub type Endpoints = Arc<Vec<Arc<Endpoint>>>;

/// Chooses an endpoint per request (HTTP) or per connection (opaque TCP)
/// from a live endpoint set.
#[derive(Clone, Debug)]
pub struct Balancer {
    endpoints: watch::Receiver<Endpoints>,
    round_robin: Arc<RoundRobin>,
}

/// How one request picks: the route's balancer kind, its headers (for
/// consistent hashing), the service's circuit breaker, and an endpoint to
/// avoid (the one a retry's previous attempt failed on).
#[derive(Clone, Copy, Debug)]
pub struct PickOptions<'a> {
    pub balance: &'a Balance,
    pub headers: &'a HeaderMap,
    pub circuit: Option<&'a CircuitConfig>,
    pub avoid: Option<SocketAddr>,
}

/// An endpoint picked for one request; dropping it without
/// [`Pick::complete`] counts the request as finished without a latency
/// sample (e.g. cancelled).
#[derive(Debug)]
pub struct Pick {
    pub endpoint: Arc<Endpoint>,
    start: Instant,
}

impl Balancer {
    pub fn new(endpoints: watch::Receiver<Endpoints>) -> Self {
        Self { endpoints, round_robin: Arc::default() }
    }

    /// Picks an endpoint under a route's policy: a probe-ready ejected
    /// endpoint first (that request is its probe), else among the healthy
    /// endpoints (all of them when none is healthy) other than `avoid`
    /// (unless it is the only one), by the route's balancer kind.
    pub fn pick_with(&self, o: &PickOptions<'_>) -> Option<Pick> {
        let endpoints = self.endpoints.borrow().clone();
        let now = Instant::now();
        if o.circuit.is_some() {
            let std_now = now.into_std();
            if let Some(probe) = endpoints.iter().find(|e| e.try_probe(std_now)) {
                return Some(Pick::start(probe.clone()));
            }
        }
        let filtered: Vec<Arc<Endpoint>>;
        let candidates: &[Arc<Endpoint>] = if o.circuit.is_some() || (o.avoid.is_some() && endpoints.len() > 1) {
            let keep = |e: &&Arc<Endpoint>| Some(e.addr) != o.avoid && (o.circuit.is_none() || e.is_healthy());
            filtered = endpoints.iter().filter(keep).cloned().collect();
            if filtered.is_empty() {
                // Everything ejected or avoided: better any endpoint than none.
                let healthy: Vec<Arc<Endpoint>> = endpoints.iter().filter(|e| e.is_healthy()).cloned().collect();
                if healthy.is_empty() { &endpoints } else { return Self::by_kind(&healthy, o, now, &self.round_robin) }
            } else {
                &filtered
            }
        } else {
            &endpoints
        };
        Self::by_kind(candidates, o, now, &self.round_robin)
    }

    fn by_kind(candidates: &[Arc<Endpoint>], o: &PickOptions<'_>, now: Instant, rr: &RoundRobin) -> Option<Pick> {
        let chosen = match o.balance {
            Balance::Ewma => choose(candidates, now, || fastrand::usize(..)),
            Balance::RoundRobin => rr.pick(candidates.len()).and_then(|i| candidates.get(i)),
            Balance::LeastRequest => {
                let loads: Vec<usize> = candidates.iter().map(|e| e.pending()).collect();
                least_request(&loads, fastrand::u32(..)).and_then(|i| candidates.get(i))
            }
            Balance::Hash(lb) => match hash_key(lb, o.headers) {
                Some(key) => {
                    rendezvous(key, candidates.iter().map(|e| endpoint_hash(&e.addr))).and_then(|i| candidates.get(i))
                }
                None => choose(candidates, now, || fastrand::usize(..)),
            },
        }?;
        Some(Pick::start(chosen.clone()))
    }

    /// How many endpoints other than `addr` take normal traffic.
    pub fn healthy_others(&self, addr: SocketAddr) -> usize {
        self.endpoints.borrow().iter().filter(|e| e.addr != addr && e.is_healthy()).count()
    }

    pub fn endpoints(&self) -> Endpoints {
        self.endpoints.borrow().clone()
    }
}

/// Power of two choices; `rand` returns any usize (reduced here).
fn choose(endpoints: &[Arc<Endpoint>], now: Instant, mut rand: impl FnMut() -> usize) -> Option<&Arc<Endpoint>> {
    match endpoints.len() {
        0 => None,
        1 => endpoints.first(),
        n => {
            let a = rand() % n;
            // A second index distinct from the first.
            let b = (a + 1 + rand() % (n - 1)) % n;
            let (ea, eb) = (&endpoints[a], &endpoints[b]);
            // An endpoint without samples yet (just added) borrows its
            // rival's estimate: neutral, so it is tried at once but not
            // flooded (its pending count still counts). A fixed pessimistic
            // default would starve it while others are fast, and a fixed
            // optimistic one would send it a burst before its first answer.
            let (ra, rb) = match (ea.ewma.get(now), eb.ewma.get(now)) {
                (Some(x), Some(y)) => (x, y),
                (Some(x), None) => (x, x),
                (None, Some(y)) => (y, y),
                (None, None) => (ewma::DEFAULT_RTT_MICROS, ewma::DEFAULT_RTT_MICROS),
            };
            let (ca, cb) = (ea.cost(ra), eb.cost(rb));
            // The cheaper candidate wins with probability in inverse
            // proportion to its cost, not always. Peak-EWMA keeps about the
            // highest recent latency, so with a strict minimum one blip made
            // an equally fast endpoint lose every duel for seconds (a 40/60
            // split of 1,500 requests in our three-replica test); a 20 ms
            // slower endpoint still wins only ~1 duel in 20.
            let p_a = if ca + cb > 0.0 { cb / (ca + cb) } else { 0.5 };
            let coin = (rand() % 1_000_000) as f64 / 1_000_000.0;
            Some(if coin < p_a { ea } else { eb })
        }
    }
}

impl Pick {
    fn start(endpoint: Arc<Endpoint>) -> Self {
        endpoint.pending.fetch_add(1, Relaxed);
        Self { endpoint, start: Instant::now() }
    }

    pub fn addr(&self) -> SocketAddr {
        self.endpoint.addr
    }

    /// Records the latency since the pick and releases the endpoint.
    pub fn complete(self) {
        self.observe();
        // Drop decrements pending.
    }

    /// Records the latency since the pick but keeps counting the endpoint as
    /// busy (an opaque connection stays pending while it is open).
    pub fn observe(&self) {
        self.endpoint.ewma.observe(Instant::now(), self.start.elapsed());
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }
}

impl Drop for Pick {
    fn drop(&mut self) {
        self.endpoint.pending.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(port: u16) -> Arc<Endpoint> {
        Arc::new(Endpoint::new(SocketAddr::from(([198, 18, 0, 1], port)), String::new(), 1))
    }

    #[test]
    fn no_endpoints_no_pick_and_one_is_always_chosen() {
        let now = Instant::now();
        assert!(choose(&[], now, || 0).is_none());
        let one = [ep(1)];
        for r in 0..5 {
            assert_eq!(choose(&one, now, || r).map(|e| e.addr.port()), Some(1));
        }
    }

    #[test]
    fn the_two_candidates_are_distinct_and_the_cheaper_wins() {
        let now = Instant::now();
        let eps = [ep(1), ep(2), ep(3)];
        // Endpoint 2 is slow, the others fast.
        eps[0].ewma.observe(now, Duration::from_millis(1));
        eps[1].ewma.observe(now, Duration::from_millis(200));
        eps[2].ewma.observe(now, Duration::from_millis(1));
        // Draws: a = 1 (port 2), second draw 0 → b = (1+1+0)%3 = 2 (port 3);
        // a middle coin always goes to the cheaper one.
        let mut draws = [1usize, 0, 500_000].into_iter();
        let got = choose(&eps, now, || draws.next().unwrap_or(0)).expect("pick");
        assert_eq!(got.addr.port(), 3);
        for a in 0..3 {
            for r in 0..2 {
                let mut d = [a, r, 500_000].into_iter();
                let got = choose(&eps, now, || d.next().unwrap_or(0)).expect("pick");
                assert_ne!(got.addr.port(), 2, "a={a} r={r}");
            }
        }
        // Over many draws the slow one (200× the cost) wins about 1 in 200
        // of the duels it is in.
        let mut rng = fastrand::Rng::with_seed(1);
        let slow = (0..30_000).filter(|_| choose(&eps, now, || rng.usize(..)).expect("pick").addr.port() == 2).count();
        assert!(slow < 300, "the slow endpoint won {slow} of 30000");
    }

    #[test]
    fn pending_requests_raise_cost_until_dropped() {
        let (_tx, rx) = watch::channel(Arc::new(vec![ep(1)]));
        let b = Balancer::new(rx);
        let e = b.endpoints()[0].clone();
        let base = e.cost(1000.0);
        let headers = HeaderMap::new();
        let options = PickOptions { balance: &Balance::Ewma, headers: &headers, circuit: None, avoid: None };
        let p1 = b.pick_with(&options).expect("pick");
        let p2 = b.pick_with(&options).expect("pick");
        assert_eq!(e.pending(), 2);
        assert!((e.cost(1000.0) - 3.0 * base).abs() < 1e-6 * base);
        drop(p1);
        p2.complete();
        assert_eq!(e.pending(), 0);
    }

    #[test]
    fn a_new_endpoint_is_tried_next_to_fast_ones() {
        let now = Instant::now();
        let eps = [ep(1), ep(2)];
        eps[0].ewma.observe(now, Duration::from_millis(1));
        // Unsampled endpoint 2 borrows endpoint 1's estimate; with equal
        // pending counts it is an even toss, decided by the third draw.
        for (coin, want) in [(499_999usize, 2u16), (500_000, 1)] {
            let mut d = [1usize, 0, coin].into_iter();
            let got = choose(&eps, now, || d.next().unwrap_or(0)).expect("pick");
            assert_eq!(got.addr.port(), want, "coin {coin}");
        }
        // Requests in flight on it make the idle endpoint the cheaper one.
        eps[1].pending.fetch_add(2, Relaxed);
        let mut d = [1usize, 0, 500_000].into_iter();
        let got = choose(&eps, now, || d.next().unwrap_or(0)).expect("pick");
        assert_eq!(got.addr.port(), 1);
    }

    #[test]
    fn a_slow_endpoint_receives_a_small_share() {
        // Three endpoints, one 20 ms slower: simulate sequential requests
        // with P2C and feed back each endpoint's latency.
        let eps: Vec<_> = (1..=3).map(ep).collect();
        let mut now = Instant::now();
        let mut counts = [0usize; 3];
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..3000 {
            let e = choose(&eps, now, || rng.usize(..)).expect("pick");
            let i = usize::from(e.addr.port() - 1);
            counts[i] += 1;
            let latency = if i == 0 { Duration::from_millis(21) } else { Duration::from_millis(1) };
            now += Duration::from_millis(1);
            e.ewma.observe(now, latency);
        }
        let share = counts[0] as f64 / 3000.0;
        assert!(share < 0.2, "slow endpoint got {share:.3} of requests: {counts:?}");
        let (b, c) = (counts[1] as f64, counts[2] as f64);
        assert!((b - c).abs() / (b + c) < 0.15, "equal endpoints uneven: {counts:?}");
    }
}
