//! Local rate limiting on the inbound side (`TrafficPolicy.rateLimit`):
//! a token bucket of `burst` tokens refilled at `requests_per_second`,
//! answered with 429 and `Retry-After` when empty.
//!
//! The bucket is kept as GCRA's single "theoretical arrival time" (ITU-T
//! I.371), which is exactly a token bucket: one `AtomicU64` updated with a
//! compare-and-swap, so the per-port limiter is lock-free. Per-identity
//! buckets live in a map bounded by `max_keys`; a key whose bucket is full
//! again is indistinguishable from a new one, so it is evicted first, and
//! when none is, the fullest bucket goes (its client may get a slightly
//! early burst, the map never grows).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use weft_api::policy as api;

/// How long until a token is available.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("rate limited; retry in {0:?}")]
pub struct RetryAfter(pub Duration);

impl RetryAfter {
    /// The `Retry-After` header value: whole seconds, rounded up, at least 1.
    pub fn secs_ceil(&self) -> u64 {
        let d = self.0;
        (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
    }
}

/// Default bound of the per-identity map.
pub const DEFAULT_MAX_KEYS: usize = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Gcra {
    /// Nanoseconds per token.
    interval: u64,
    /// `burst × interval`.
    tolerance: u64,
}

impl Gcra {
    fn new(requests_per_second: u32, burst: u32) -> Option<Self> {
        if requests_per_second == 0 {
            return None;
        }
        // Burst 0 (unset): one second's worth, as the control plane defaults.
        let burst = if burst == 0 { requests_per_second } else { burst };
        let interval = (1_000_000_000 / u64::from(requests_per_second)).max(1);
        Some(Self { interval, tolerance: interval.saturating_mul(u64::from(burst)) })
    }

    /// The new arrival time if a request at `t` is admitted, else the wait.
    fn step(&self, tat: u64, t: u64) -> Result<u64, RetryAfter> {
        let new = tat.max(t).saturating_add(self.interval);
        let ahead = new - t;
        if ahead <= self.tolerance { Ok(new) } else { Err(RetryAfter(Duration::from_nanos(ahead - self.tolerance))) }
    }
}

fn nanos_since(origin: Instant, now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(origin).as_nanos()).unwrap_or(u64::MAX)
}

/// One bucket for a whole port.
#[derive(Debug)]
pub struct RateLimiter {
    gcra: Gcra,
    origin: Instant,
    tat: AtomicU64,
}

impl RateLimiter {
    /// `None` when `requests_per_second` is 0 (no limit). The bucket starts full.
    pub fn new(requests_per_second: u32, burst: u32, origin: Instant) -> Option<Self> {
        Some(Self { gcra: Gcra::new(requests_per_second, burst)?, origin, tat: AtomicU64::new(0) })
    }

    pub fn try_acquire(&self, now: Instant) -> Result<(), RetryAfter> {
        let t = nanos_since(self.origin, now);
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let new = self.gcra.step(tat, t)?;
            match self.tat.compare_exchange_weak(tat, new, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Ok(()),
                Err(actual) => tat = actual,
            }
        }
    }
}

/// One bucket per key (client identity), at most `max_keys` of them.
#[derive(Debug)]
pub struct KeyedRateLimiter<K> {
    gcra: Gcra,
    origin: Instant,
    max_keys: usize,
    tats: Mutex<HashMap<K, u64>>,
}

impl<K: Hash + Eq + Clone> KeyedRateLimiter<K> {
    pub fn new(requests_per_second: u32, burst: u32, max_keys: usize, origin: Instant) -> Option<Self> {
        Some(Self {
            gcra: Gcra::new(requests_per_second, burst)?,
            origin,
            max_keys: max_keys.max(1),
            tats: Mutex::new(HashMap::new()),
        })
    }

    /// Takes a token from `key`'s bucket; the key is cloned only when new.
    pub fn try_acquire(&self, key: &K, now: Instant) -> Result<(), RetryAfter> {
        let t = nanos_since(self.origin, now);
        let mut map = self.tats.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(tat) = map.get_mut(key) {
            *tat = self.gcra.step(*tat, t)?;
            return Ok(());
        }
        let new = self.gcra.step(0, t)?;
        if map.len() >= self.max_keys {
            // Full buckets (arrival time passed) are as good as absent.
            map.retain(|_, tat| *tat > t);
            if map.len() >= self.max_keys
                && let Some(k) = map.iter().min_by_key(|(_, tat)| **tat).map(|(k, _)| k.clone())
            {
                map.remove(&k);
            }
        }
        map.insert(key.clone(), new);
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.tats.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The limiter an inbound port needs from its policy, if any.
#[derive(Debug)]
pub enum PortRateLimit<K> {
    Shared(RateLimiter),
    PerIdentity(KeyedRateLimiter<K>),
}

impl<K: Hash + Eq + Clone> PortRateLimit<K> {
    /// `None` when the policy sets no limit.
    pub fn from_api(r: &api::RateLimit, origin: Instant) -> Option<Self> {
        if r.per_identity {
            KeyedRateLimiter::new(r.requests_per_second, r.burst, DEFAULT_MAX_KEYS, origin).map(Self::PerIdentity)
        } else {
            RateLimiter::new(r.requests_per_second, r.burst, origin).map(Self::Shared)
        }
    }

    pub fn try_acquire(&self, identity: &K, now: Instant) -> Result<(), RetryAfter> {
        match self {
            Self::Shared(l) => l.try_acquire(now),
            Self::PerIdentity(l) => l.try_acquire(identity, now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Admitted requests at `rate` per second for `secs` seconds.
    fn admitted(rps: u32, burst: u32, rate: u32, secs: u32) -> u32 {
        let t0 = Instant::now();
        let l = RateLimiter::new(rps, burst, t0).unwrap();
        let step = Duration::from_secs(1) / rate;
        (0..rate * secs).filter(|i| l.try_acquire(t0 + step * *i).is_ok()).count() as u32
    }

    #[test]
    fn admits_rate_plus_burst() {
        // (rps, burst, offered rps, seconds, admitted ± 1)
        let cases = [
            (50, 10, 200, 5, 260),
            (50, 10, 40, 5, 200),
            (50, 50, 200, 1, 100),
            (1, 1, 100, 10, 10),
            (1000, 1, 2000, 2, 2001),
            (10, 0, 100, 2, 30),
        ];
        for (rps, burst, rate, secs, want) in cases {
            let got = admitted(rps, burst, rate, secs);
            assert!(
                got.abs_diff(want) <= 1,
                "{rps} rps burst {burst} under {rate} rps for {secs}s: {got}, want {want}"
            );
        }
    }

    #[test]
    fn retry_after_is_the_wait_for_a_token() {
        let t0 = Instant::now();
        let l = RateLimiter::new(2, 2, t0).unwrap();
        assert!(l.try_acquire(t0).is_ok());
        assert!(l.try_acquire(t0).is_ok());
        assert_eq!(l.try_acquire(t0), Err(RetryAfter(500 * MS)));
        assert_eq!(l.try_acquire(t0 + 200 * MS), Err(RetryAfter(300 * MS)));
        assert!(l.try_acquire(t0 + 500 * MS).is_ok());
        assert_eq!(l.try_acquire(t0 + 500 * MS), Err(RetryAfter(500 * MS)));
        // Idle time refills up to the burst, not beyond.
        let later = t0 + Duration::from_secs(60);
        assert!(l.try_acquire(later).is_ok() && l.try_acquire(later).is_ok());
        assert!(l.try_acquire(later).is_err());
        // Slow limits wait longer.
        let slow = RateLimiter::new(1, 1, t0).unwrap();
        assert!(slow.try_acquire(t0).is_ok());
        assert_eq!(slow.try_acquire(t0), Err(RetryAfter(Duration::from_secs(1))));
        assert!(RateLimiter::new(0, 10, t0).is_none());
    }

    #[test]
    fn retry_after_header_seconds() {
        let cases =
            [(Duration::ZERO, 1), (MS, 1), (999 * MS, 1), (1000 * MS, 1), (1001 * MS, 2), (Duration::from_secs(3), 3)];
        for (d, want) in cases {
            assert_eq!(RetryAfter(d).secs_ceil(), want, "{d:?}");
        }
    }

    #[test]
    fn per_identity_buckets_are_separate_and_bounded() {
        let t0 = Instant::now();
        let l = KeyedRateLimiter::new(1, 2, 3, t0).unwrap();
        let key = |s: &str| s.to_owned();
        for _ in 0..2 {
            assert!(l.try_acquire(&key("a"), t0).is_ok());
        }
        assert!(l.try_acquire(&key("a"), t0).is_err());
        assert!(l.try_acquire(&key("b"), t0).is_ok(), "b has its own bucket");
        assert!(l.try_acquire(&key("c"), t0).is_ok());
        assert_eq!(l.len(), 3);
        // A fourth key evicts the fullest bucket (b or c, one token used), never growing.
        assert!(l.try_acquire(&key("d"), t0).is_ok());
        assert_eq!(l.len(), 3);
        assert!(l.try_acquire(&key("a"), t0).is_err(), "a, the emptiest, is kept");
        // After the buckets refill, idle keys are swept on the next insert.
        let later = t0 + Duration::from_secs(10);
        for i in 0..100 {
            assert!(l.try_acquire(&format!("k{i}"), later).is_ok());
            assert!(l.len() <= 3);
        }
    }

    #[test]
    fn from_api() {
        let t0 = Instant::now();
        let r = |rps, burst, per_identity| api::RateLimit { requests_per_second: rps, burst, per_identity };
        assert!(PortRateLimit::<String>::from_api(&r(0, 5, false), t0).is_none());
        assert!(matches!(PortRateLimit::<String>::from_api(&r(5, 5, false), t0), Some(PortRateLimit::Shared(_))));
        let keyed = PortRateLimit::<String>::from_api(&r(1, 1, true), t0).unwrap();
        assert!(keyed.try_acquire(&"x".to_owned(), t0).is_ok());
        assert!(keyed.try_acquire(&"x".to_owned(), t0).is_err());
        assert!(keyed.try_acquire(&"y".to_owned(), t0).is_ok());
    }
}
