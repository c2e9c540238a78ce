//! Failure accrual per endpoint (`TrafficPolicy.circuitBreaker`).
//!
//! ```text
//!            N consecutive failures, or success rate < min over window
//!   Closed ───────────────────────────────────────────────► Open (ejected)
//!     ▲                                                       │ base × 2^(ejections-1), ≤ max
//!     │ probe succeeds                                        ▼
//!     └──────────────────────────── HalfOpen (one probe) ◄────┘
//!                  probe fails: Open again, twice as long ──►
//! ```
//!
//! The ejection count (and so the backoff) resets once the endpoint has
//! stayed admitted for `max_ejection`. Set-level rule: an endpoint is never
//! ejected when no other endpoint is healthy ([`may_eject`]); the caller
//! passes how many others are [`Circuit::is_healthy`]. A failed probe under
//! that rule re-admits the endpoint: the breaker never leaves a service
//! with nothing to send to. A probe whose result never comes (the client
//! went away) is replaced after `base_ejection`.
//!
//! One `Circuit` per endpoint, behind the endpoint's own lock; time is
//! passed in.

use std::time::{Duration, Instant};

use weft_api::policy as api;

use super::window::Window;

/// Success-rate ejection needs at least this many requests in the window
/// (the policy has no field for it; Envoy's default is 100, we take a
/// smaller one for the small services of a mesh).
pub const SUCCESS_RATE_MIN_REQUESTS: u64 = 20;
pub const DEFAULT_BASE_EJECTION: Duration = Duration::from_secs(1);
pub const DEFAULT_MAX_EJECTION: Duration = Duration::from_secs(60);
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CircuitConfig {
    /// 0 disables.
    pub consecutive_failures: u32,
    pub base_ejection: Duration,
    pub max_ejection: Duration,
    /// 0.0 disables.
    pub min_success_rate: f64,
    pub window: Duration,
    pub min_requests: u64,
}

impl CircuitConfig {
    /// `None` when the policy enables neither rule (the default).
    pub fn from_api(c: &api::CircuitBreaker) -> Option<Self> {
        let ms = |v: u64, d: Duration| if v == 0 { d } else { Duration::from_millis(v) };
        let base_ejection = ms(c.base_ejection_ms, DEFAULT_BASE_EJECTION);
        let cfg = Self {
            consecutive_failures: c.consecutive_failures,
            base_ejection,
            max_ejection: ms(c.max_ejection_ms, DEFAULT_MAX_EJECTION).max(base_ejection),
            min_success_rate: if c.min_success_rate.is_finite() { c.min_success_rate.clamp(0.0, 1.0) } else { 0.0 },
            window: ms(c.window_ms, DEFAULT_WINDOW),
            min_requests: SUCCESS_RATE_MIN_REQUESTS,
        };
        (cfg.consecutive_failures > 0 || cfg.min_success_rate > 0.0).then_some(cfg)
    }

    /// The ejection after `ejections` ejections in a row (1-based).
    pub fn ejection_time(&self, ejections: u32) -> Duration {
        let base = self.base_ejection.as_nanos();
        let d = base.saturating_mul(1u128 << ejections.saturating_sub(1).min(64)).min(self.max_ejection.as_nanos());
        Duration::from_nanos(u64::try_from(d).unwrap_or(u64::MAX))
    }
}

/// Whether one more endpoint may be ejected while `healthy_others` other
/// endpoints of the set are healthy: never the last one.
pub fn may_eject(healthy_others: usize) -> bool {
    healthy_others > 0
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { probe_since: Instant },
}

/// Whether a request may go to the endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    Yes,
    /// Yes, as the one probe of a half-open endpoint; report its result.
    Probe,
    No,
}

#[derive(Clone, Debug)]
pub struct Circuit {
    cfg: CircuitConfig,
    state: State,
    consecutive: u32,
    ejections: u32,
    admitted_at: Instant,
    /// (successes, failures)
    window: Window,
}

impl Circuit {
    pub fn new(cfg: CircuitConfig, now: Instant) -> Self {
        Self {
            cfg,
            state: State::Closed,
            consecutive: 0,
            ejections: 0,
            admitted_at: now,
            window: Window::new(now, cfg.window),
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn config(&self) -> &CircuitConfig {
        &self.cfg
    }

    /// Ejections in a row so far (reset after a healthy `max_ejection`).
    pub fn ejections(&self) -> u32 {
        self.ejections
    }

    /// Closed: takes normal traffic (what the set-level rule counts).
    pub fn is_healthy(&self) -> bool {
        self.state == State::Closed
    }

    /// Ejected or half-open: the `weft_circuit_open` gauge.
    pub fn is_open(&self) -> bool {
        !self.is_healthy()
    }

    /// Whether a request may be sent now; a half-open endpoint lets one
    /// probe through (and becomes half-open when its ejection is over).
    pub fn admit(&mut self, now: Instant) -> Admit {
        match self.state {
            State::Closed => Admit::Yes,
            State::Open { until } if now < until => Admit::No,
            State::HalfOpen { probe_since } if now.saturating_duration_since(probe_since) < self.cfg.base_ejection => {
                Admit::No
            }
            State::Open { .. } | State::HalfOpen { .. } => {
                self.state = State::HalfOpen { probe_since: now };
                Admit::Probe
            }
        }
    }

    pub fn on_success(&mut self, now: Instant) {
        match self.state {
            State::Closed => {
                self.consecutive = 0;
                self.window.add(now, 1, 0);
                self.decay(now);
            }
            State::HalfOpen { .. } => self.readmit(now),
            // A late answer to a request sent before the ejection.
            State::Open { .. } => {}
        }
    }

    /// Records a failure; `true` if the endpoint is now ejected.
    pub fn on_failure(&mut self, now: Instant, healthy_others: usize) -> bool {
        match self.state {
            State::Closed => {
                self.decay(now);
                self.consecutive = self.consecutive.saturating_add(1);
                self.window.add(now, 0, 1);
                if self.tripped(now) && may_eject(healthy_others) {
                    self.eject(now);
                    return true;
                }
                false
            }
            State::HalfOpen { .. } if may_eject(healthy_others) => {
                self.eject(now);
                true
            }
            State::HalfOpen { .. } => {
                self.readmit(now);
                false
            }
            State::Open { .. } => false,
        }
    }

    fn tripped(&self, now: Instant) -> bool {
        if self.cfg.consecutive_failures > 0 && self.consecutive >= self.cfg.consecutive_failures {
            return true;
        }
        if self.cfg.min_success_rate > 0.0 {
            let (ok, failed) = self.window.totals(now);
            let total = ok.saturating_add(failed);
            return total >= self.cfg.min_requests.max(1) && (ok as f64) < self.cfg.min_success_rate * total as f64;
        }
        false
    }

    fn eject(&mut self, now: Instant) {
        self.ejections = self.ejections.saturating_add(1);
        self.state = State::Open { until: now + self.cfg.ejection_time(self.ejections) };
        self.consecutive = 0;
        self.window.clear();
    }

    fn readmit(&mut self, now: Instant) {
        self.state = State::Closed;
        self.consecutive = 0;
        self.admitted_at = now;
        self.window.clear();
    }

    /// A healthy period as long as the longest ejection forgives the past.
    fn decay(&mut self, now: Instant) {
        if self.ejections > 0 && now.saturating_duration_since(self.admitted_at) >= self.cfg.max_ejection {
            self.ejections = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn cfg(consecutive: u32, rate: f64) -> CircuitConfig {
        CircuitConfig {
            consecutive_failures: consecutive,
            base_ejection: S,
            max_ejection: 8 * S,
            min_success_rate: rate,
            window: 10 * S,
            min_requests: 10,
        }
    }

    #[test]
    fn consecutive_failures_eject_at_n() {
        let t0 = Instant::now();
        let mut c = Circuit::new(cfg(3, 0.0), t0);
        assert!(!c.on_failure(t0, 1));
        assert!(!c.on_failure(t0, 1));
        c.on_success(t0);
        assert!(!c.on_failure(t0, 1));
        assert!(!c.on_failure(t0, 1), "a success resets the count");
        assert!(c.is_healthy() && !c.is_open());
        assert!(c.on_failure(t0, 1));
        assert!(c.is_open());
        assert_eq!(c.state(), State::Open { until: t0 + S });
        assert_eq!(c.admit(t0), Admit::No);
        assert_eq!(c.admit(t0 + S / 2), Admit::No);
    }

    #[test]
    fn never_eject_the_last_healthy_endpoint() {
        let t0 = Instant::now();
        let mut c = Circuit::new(cfg(2, 0.0), t0);
        for _ in 0..10 {
            assert!(!c.on_failure(t0, 0));
        }
        assert!(c.is_healthy());
        assert_eq!(c.admit(t0), Admit::Yes);
        // Once another endpoint is healthy, the next failure ejects.
        assert!(c.on_failure(t0, 1));
        assert!(!may_eject(0) && may_eject(1));
    }

    #[test]
    fn half_open_probe_readmits_or_reejects_longer() {
        let t0 = Instant::now();
        let mut c = Circuit::new(cfg(1, 0.0), t0);
        assert!(c.on_failure(t0, 1));
        // (time, expected admit) through the half-open phase.
        assert_eq!(c.admit(t0 + S), Admit::Probe);
        assert_eq!(c.admit(t0 + S), Admit::No, "one probe at a time");
        assert!(c.is_open());
        // The probe fails: ejected again, for 2 s.
        assert!(c.on_failure(t0 + S, 1));
        assert_eq!(c.state(), State::Open { until: t0 + 3 * S });
        assert_eq!(c.admit(t0 + 3 * S), Admit::Probe);
        assert!(c.on_failure(t0 + 3 * S, 1));
        assert_eq!(c.state(), State::Open { until: t0 + 7 * S });
        assert_eq!(c.ejections(), 3);
        // The probe succeeds: admitted.
        assert_eq!(c.admit(t0 + 7 * S), Admit::Probe);
        c.on_success(t0 + 7 * S);
        assert!(c.is_healthy());
        assert_eq!(c.admit(t0 + 7 * S), Admit::Yes);
        // Failing again soon after: the backoff continues (4 s → 8 s).
        assert!(c.on_failure(t0 + 8 * S, 1));
        assert_eq!(c.state(), State::Open { until: t0 + 16 * S });
    }

    #[test]
    fn ejection_time_doubles_up_to_max() {
        let c = cfg(1, 0.0);
        let times: Vec<_> = (1..=6).map(|n| c.ejection_time(n)).collect();
        assert_eq!(times, [S, 2 * S, 4 * S, 8 * S, 8 * S, 8 * S]);
        assert_eq!(c.ejection_time(u32::MAX), 8 * S);
    }

    #[test]
    fn backoff_resets_after_a_healthy_period() {
        let t0 = Instant::now();
        let mut c = Circuit::new(cfg(1, 0.0), t0);
        assert!(c.on_failure(t0, 1));
        assert_eq!(c.admit(t0 + S), Admit::Probe);
        assert!(c.on_failure(t0 + S, 1));
        assert_eq!(c.admit(t0 + 3 * S), Admit::Probe);
        c.on_success(t0 + 3 * S);
        assert_eq!(c.ejections(), 2);
        // Healthy for max_ejection (8 s): the next ejection is base again.
        c.on_success(t0 + 11 * S);
        assert_eq!(c.ejections(), 0);
        assert!(c.on_failure(t0 + 12 * S, 1));
        assert_eq!(c.state(), State::Open { until: t0 + 13 * S });
    }

    #[test]
    fn failed_probe_of_the_last_endpoint_readmits_it() {
        let t0 = Instant::now();
        let mut c = Circuit::new(cfg(1, 0.0), t0);
        assert!(c.on_failure(t0, 1));
        assert_eq!(c.admit(t0 + S), Admit::Probe);
        assert!(!c.on_failure(t0 + S, 0));
        assert!(c.is_healthy());
    }

    #[test]
    fn lost_probe_is_replaced() {
        let t0 = Instant::now();
        let mut c = Circuit::new(cfg(1, 0.0), t0);
        assert!(c.on_failure(t0, 1));
        assert_eq!(c.admit(t0 + S), Admit::Probe);
        assert_eq!(c.admit(t0 + S + S / 2), Admit::No);
        assert_eq!(c.admit(t0 + 2 * S), Admit::Probe);
    }

    #[test]
    fn late_results_while_ejected_are_ignored() {
        let t0 = Instant::now();
        let mut c = Circuit::new(cfg(1, 0.0), t0);
        assert!(c.on_failure(t0, 1));
        c.on_success(t0);
        assert!(!c.on_failure(t0, 1));
        assert_eq!(c.state(), State::Open { until: t0 + S });
    }

    #[test]
    fn success_rate_with_minimum_requests() {
        let t0 = Instant::now();
        // (successes, failures, ejected?) for min rate 0.8 and 10 requests minimum.
        let cases = [(0, 9, false), (1, 9, true), (8, 2, false), (7, 3, true), (70, 30, true), (80, 20, false)];
        for (ok, failed, want) in cases {
            let mut c = Circuit::new(cfg(0, 0.8), t0);
            for _ in 0..ok {
                c.on_success(t0);
            }
            let ejected = (0..failed).any(|_| c.on_failure(t0, 1));
            assert_eq!(ejected, want, "{ok} ok, {failed} failed");
        }
        // Old failures leave the window.
        let mut c = Circuit::new(cfg(0, 0.8), t0);
        for _ in 0..5 {
            c.on_failure(t0, 1);
        }
        for _ in 0..8 {
            c.on_success(t0 + 10 * S);
        }
        assert!(!c.on_failure(t0 + 10 * S, 1), "9 of 10 in the window");
    }

    #[test]
    fn from_api() {
        let api = |cf, rate| api::CircuitBreaker {
            consecutive_failures: cf,
            base_ejection_ms: 0,
            max_ejection_ms: 0,
            min_success_rate: rate,
            window_ms: 0,
        };
        assert_eq!(CircuitConfig::from_api(&api(0, 0.0)), None, "off by default");
        assert_eq!(CircuitConfig::from_api(&api(0, f64::NAN)), None);
        let c = CircuitConfig::from_api(&api(5, 0.0)).unwrap();
        assert_eq!((c.base_ejection, c.max_ejection, c.window), (S, 60 * S, 10 * S));
        assert_eq!(CircuitConfig::from_api(&api(0, 2.0)).unwrap().min_success_rate, 1.0);
        let inverted = api::CircuitBreaker { base_ejection_ms: 5000, max_ejection_ms: 1000, ..api(1, 0.0) };
        assert_eq!(CircuitConfig::from_api(&inverted).unwrap().max_ejection, 5 * S);
    }
}
