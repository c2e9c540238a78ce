//! Retry budget, Finagle-style: retries may add at most `ratio` of the
//! original requests over a sliding `window`, plus a floor of
//! `min_retries_per_second × window` so that a quiet service can still
//! retry. Every original request [deposits](RetryBudget::deposit); every
//! retry must [withdraw](RetryBudget::try_withdraw) first and is not made
//! when the budget is spent. This is what keeps retries from multiplying
//! an outage: with every endpoint failing, load grows by at most `ratio`.
//!
//! One budget is shared by every request to a target, so the state sits
//! behind a mutex held for a few additions (no `.await`, no allocation).
//! Arithmetic is in integers (ratio in millionths), so the boundary is exact.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use weft_api::policy as api;

use super::window::Window;

/// The budget's settings. `Default` is the mesh default: 20 % of requests
/// plus 10 retries/s over 10 s (Linkerd's defaults).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BudgetConfig {
    /// Retries per original request, 0.0..=1000.0.
    pub ratio: f64,
    pub window: Duration,
    pub min_retries_per_second: u32,
}

pub const DEFAULT_RATIO: f64 = 0.2;
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(10);
pub const DEFAULT_MIN_RETRIES_PER_SECOND: u32 = 10;

impl Default for BudgetConfig {
    fn default() -> Self {
        Self { ratio: DEFAULT_RATIO, window: DEFAULT_WINDOW, min_retries_per_second: DEFAULT_MIN_RETRIES_PER_SECOND }
    }
}

impl BudgetConfig {
    /// From the policy; a zero window (unset) takes the default window, a
    /// ratio that is not a finite non-negative number counts as 0.
    pub fn from_api(b: &api::RetryBudget) -> Self {
        Self {
            ratio: if b.ratio.is_finite() && b.ratio > 0.0 { b.ratio.min(1000.0) } else { 0.0 },
            window: if b.window_ms == 0 { DEFAULT_WINDOW } else { Duration::from_millis(b.window_ms) },
            min_retries_per_second: b.min_retries_per_second,
        }
    }
}

#[derive(Debug)]
pub struct RetryBudget {
    /// Millionths of a retry per request.
    ratio_ppm: u128,
    /// The floor in millionths of a retry: `min_per_second × window`.
    reserve_ppm: u128,
    /// (requests, retries)
    window: Mutex<Window>,
}

impl RetryBudget {
    pub fn new(cfg: &BudgetConfig, origin: Instant) -> Self {
        // Bounded by from_api/the float cast saturating; never panics.
        let ratio_ppm = (cfg.ratio.max(0.0) * 1e6).round() as u128;
        let reserve_ppm = u128::from(cfg.min_retries_per_second) * cfg.window.as_millis() * 1000;
        Self { ratio_ppm, reserve_ppm, window: Mutex::new(Window::new(origin, cfg.window)) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Window> {
        // A panic elsewhere cannot leave two counters inconsistent; go on.
        self.window.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records an original request (not a retry).
    pub fn deposit(&self, now: Instant) {
        self.lock().add(now, 1, 0);
    }

    /// Takes one retry from the budget: `true` if it may be made (and is
    /// now counted), `false` if the budget is spent (count
    /// `weft_retry_budget_exhausted_total` and pass the failure through).
    pub fn try_withdraw(&self, now: Instant) -> bool {
        let mut w = self.lock();
        let (requests, retries) = w.totals(now);
        let allowed = (u128::from(retries) + 1) * 1_000_000 <= self.ratio_ppm * u128::from(requests) + self.reserve_ppm;
        if allowed {
            w.add(now, 0, 1);
        }
        allowed
    }

    /// How many more retries would be allowed now (for `/config` and tests).
    pub fn remaining(&self, now: Instant) -> u64 {
        let (requests, retries) = self.lock().totals(now);
        let total = (self.ratio_ppm * u128::from(requests) + self.reserve_ppm) / 1_000_000;
        u64::try_from(total.saturating_sub(u128::from(retries))).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(ratio: f64, window_s: u64, min: u32) -> BudgetConfig {
        BudgetConfig { ratio, window: Duration::from_secs(window_s), min_retries_per_second: min }
    }

    /// Deposits `requests` at t0, then withdraws until refused.
    fn allowed(c: BudgetConfig, requests: u64) -> u64 {
        let t0 = Instant::now();
        let b = RetryBudget::new(&c, t0);
        for _ in 0..requests {
            b.deposit(t0);
        }
        let mut n = 0;
        while b.try_withdraw(t0) {
            n += 1;
            assert!(n < 1_000_000);
        }
        assert_eq!(b.remaining(t0), 0);
        n
    }

    #[test]
    fn exact_counts_at_the_boundary() {
        // (config, requests, retries allowed)
        let cases = [
            (cfg(0.2, 10, 0), 100, 20),
            (cfg(0.2, 10, 0), 99, 19),
            (cfg(0.2, 10, 0), 4, 0),
            (cfg(0.2, 10, 0), 5, 1),
            (cfg(0.1, 10, 0), 1000, 100),
            (cfg(0.2, 10, 10), 100, 120),
            (cfg(1.0, 1, 0), 7, 7),
            (cfg(0.0, 10, 0), 1000, 0),
            (cfg(0.0, 10, 3), 1000, 30),
            // The floor with no traffic at all.
            (cfg(0.2, 10, 10), 0, 100),
            (cfg(0.2, 1, 1), 0, 1),
            (BudgetConfig::default(), 0, 100),
            (BudgetConfig::default(), 1000, 300),
        ];
        for (c, requests, want) in cases {
            assert_eq!(allowed(c, requests), want, "{c:?} with {requests} requests");
        }
    }

    #[test]
    fn window_expiry() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let b = RetryBudget::new(&cfg(0.5, 10, 0), t0);
        for _ in 0..10 {
            b.deposit(t0);
        }
        for _ in 0..5 {
            assert!(b.try_withdraw(t0 + s(1)));
        }
        assert!(!b.try_withdraw(t0 + s(1)));
        // New requests later in the window add budget.
        b.deposit(t0 + s(5));
        b.deposit(t0 + s(5));
        assert!(b.try_withdraw(t0 + s(5)));
        assert!(!b.try_withdraw(t0 + s(5)));
        // At 10 s the first requests leave the window: 2 requests, 6 retries.
        assert!(!b.try_withdraw(t0 + s(10)));
        // At 11 s the first retries leave too: 2 requests, 1 retry.
        assert_eq!(b.remaining(t0 + s(11)), 0);
        // After everything has expired the budget is empty again (no floor).
        assert_eq!(b.remaining(t0 + s(30)), 0);
        b.deposit(t0 + s(30));
        b.deposit(t0 + s(30));
        assert!(b.try_withdraw(t0 + s(30)));
    }

    #[test]
    fn floor_refills_with_time() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let b = RetryBudget::new(&cfg(0.2, 2, 5), t0);
        assert_eq!(b.remaining(t0), 10);
        for _ in 0..10 {
            assert!(b.try_withdraw(t0));
        }
        assert!(!b.try_withdraw(t0 + Duration::from_millis(1999)));
        assert!(b.try_withdraw(t0 + s(2)), "the first retries left the window");
    }

    #[test]
    fn from_api_defaults_and_sanitizes() {
        let api = |ratio, window_ms, min| api::RetryBudget { ratio, window_ms, min_retries_per_second: min };
        assert_eq!(BudgetConfig::from_api(&api(0.3, 0, 1)), cfg(0.3, 10, 1));
        assert_eq!(BudgetConfig::from_api(&api(f64::NAN, 5000, 0)), cfg(0.0, 5, 0));
        assert_eq!(BudgetConfig::from_api(&api(-1.0, 5000, 0)), cfg(0.0, 5, 0));
        assert_eq!(BudgetConfig::from_api(&api(f64::INFINITY, 5000, 0)).ratio, 0.0);
    }
}
