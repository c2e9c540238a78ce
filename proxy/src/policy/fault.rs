//! Fault injection for resilience testing: delay or abort a percentage of
//! requests (`TrafficPolicy.faults`).
//!
//! The decision takes two random numbers (one for the delay, one for the
//! abort, drawn independently, as Envoy's fault filter does) so the caller
//! owns the randomness and tests are exact. A request may be both delayed
//! and then aborted.

use std::time::Duration;

use http::StatusCode;
use weft_api::policy as api;

/// A compiled `Fault`; `None` from [`FaultPolicy::new`] when it injects nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultPolicy {
    delay_percent: u32,
    delay: Duration,
    abort_percent: u32,
    abort: Option<StatusCode>,
}

/// What to do to one request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultDecision {
    /// Sleep this long before forwarding.
    pub delay: Option<Duration>,
    /// Answer with this status instead of forwarding.
    pub abort: Option<StatusCode>,
}

impl FaultPolicy {
    /// Percentages above 100 count as 100; an abort status outside
    /// 100..=599 (which the control plane refuses) disables the abort.
    pub fn new(f: &api::Fault) -> Option<Self> {
        let abort = u16::try_from(f.abort_status)
            .ok()
            .filter(|s| (100..=599).contains(s))
            .and_then(|s| StatusCode::from_u16(s).ok());
        let p = Self {
            delay_percent: if f.delay_ms == 0 { 0 } else { f.delay_percent.min(100) },
            delay: Duration::from_millis(f.delay_ms),
            abort_percent: if abort.is_none() { 0 } else { f.abort_percent.min(100) },
            abort,
        };
        (p.delay_percent > 0 || p.abort_percent > 0).then_some(p)
    }

    /// The decision for uniformly random `delay_random` and `abort_random`.
    pub fn decide(&self, delay_random: u32, abort_random: u32) -> FaultDecision {
        FaultDecision {
            delay: hit(self.delay_percent, delay_random).then_some(self.delay),
            abort: if hit(self.abort_percent, abort_random) { self.abort } else { None },
        }
    }
}

/// True for exactly `percent`% of the `u32` range.
pub fn hit(percent: u32, random: u32) -> bool {
    u64::from(random) * 100 < u64::from(percent.min(100)) << 32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(delay_percent: u32, delay_ms: u64, abort_percent: u32, abort_status: u32) -> api::Fault {
        api::Fault { delay_percent, delay_ms, abort_percent, abort_status }
    }

    #[test]
    fn hit_is_exact_over_a_sweep() {
        for percent in [0, 1, 10, 33, 50, 99, 100, 150] {
            let n = 100_000u64;
            // Midpoints of n equal slices of the u32 range.
            let hits = (0..n).filter(|k| hit(percent, u32::try_from(((2 * k + 1) << 31) / n).unwrap())).count() as u64;
            assert_eq!(hits, n * u64::from(percent.min(100)) / 100, "{percent}%");
        }
        assert!(!hit(0, 0));
        assert!(hit(100, u32::MAX));
        assert!(!hit(99, u32::MAX));
    }

    #[test]
    fn decisions() {
        // The first random value of the p-th percentile.
        let q = |p: u32| u32::try_from((u64::from(p) << 32).div_ceil(100)).unwrap();
        // (fault, delay random, abort random, expected)
        let ms = Duration::from_millis;
        let s503 = StatusCode::SERVICE_UNAVAILABLE;
        let cases: &[(api::Fault, u32, u32, Option<FaultDecision>)] = &[
            (fault(0, 0, 0, 0), 0, 0, None),
            (fault(50, 0, 0, 0), 0, 0, None),
            (fault(0, 0, 50, 0), 0, 0, None),
            (fault(0, 0, 50, 1000), 0, 0, None),
            (fault(0, 0, 50, 600), 0, 0, None),
            (fault(50, 100, 0, 0), q(49), 0, Some(FaultDecision { delay: Some(ms(100)), abort: None })),
            (fault(50, 100, 0, 0), q(50), 0, Some(FaultDecision::default())),
            (fault(0, 0, 10, 503), 0, q(9), Some(FaultDecision { delay: None, abort: Some(s503) })),
            (fault(0, 0, 10, 503), 0, q(10), Some(FaultDecision::default())),
            (
                fault(100, 5, 100, 503),
                u32::MAX,
                u32::MAX,
                Some(FaultDecision { delay: Some(ms(5)), abort: Some(s503) }),
            ),
            (fault(100, 5, 100, 503), 0, u32::MAX, Some(FaultDecision { delay: Some(ms(5)), abort: Some(s503) })),
        ];
        for (i, (f, d, a, want)) in cases.iter().enumerate() {
            assert_eq!(FaultPolicy::new(f).map(|p| p.decide(*d, *a)), *want, "case {i}: {f:?}");
        }
    }
}
