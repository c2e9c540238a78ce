//! Latency histograms: recorded with HdrHistogram (so quantiles computed from
//! them are exact to 3 significant digits), exported as Prometheus buckets.

use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;

/// Values are microseconds; anything above a minute is clamped to it (the
/// top bucket is +Inf anyway).
const MAX_MICROS: u64 = 60_000_000;

/// Prometheus bucket upper bounds, in seconds.
pub const BUCKETS: [f64; 17] =
    [0.0001, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

#[derive(Debug, Default)]
pub struct LatencyHistogram(Mutex<Option<Inner>>);

#[derive(Debug, Clone)]
struct Inner {
    hist: Histogram<u64>,
    sum_micros: u64,
}

/// A point-in-time copy, taken under the lock and rendered outside it.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Cumulative counts per bucket of [`BUCKETS`], then +Inf.
    pub cumulative: Vec<u64>,
    pub count: u64,
    pub sum_seconds: f64,
}

impl LatencyHistogram {
    pub fn record(&self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).clamp(1, MAX_MICROS);
        let mut guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // Allocated on first use: a direction that never sees HTTP costs nothing.
        let inner = guard.get_or_insert_with(|| Inner {
            hist: Histogram::new_with_bounds(1, MAX_MICROS, 3).unwrap_or_else(|_| unreachable!("valid bounds")),
            sum_micros: 0,
        });
        inner.hist.saturating_record(micros);
        inner.sum_micros = inner.sum_micros.saturating_add(micros);
    }

    /// `None` when nothing was recorded yet.
    pub fn snapshot(&self) -> Option<Snapshot> {
        let inner = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()?;
        let count = inner.hist.len();
        let mut cumulative: Vec<u64> = BUCKETS
            .iter()
            .map(|le| {
                let micros = (le * 1e6) as u64;
                inner.hist.count_between(0, micros)
            })
            .collect();
        cumulative.push(count);
        Some(Snapshot { cumulative, count, sum_seconds: inner.sum_micros as f64 / 1e6 })
    }

    /// The value at quantile `q` (0..=1), for reports and tests.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let inner = guard.as_ref()?;
        Some(Duration::from_micros(inner.hist.value_at_quantile(q)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_end_with_the_count() {
        let h = LatencyHistogram::default();
        assert!(h.snapshot().is_none());
        for ms in [0.05f64, 0.8, 0.8, 4.0, 40.0, 40_000.0] {
            h.record(Duration::from_secs_f64(ms / 1000.0));
        }
        let s = h.snapshot().expect("recorded");
        assert_eq!(s.count, 6);
        assert_eq!(s.cumulative.len(), BUCKETS.len() + 1);
        assert!(s.cumulative.windows(2).all(|w| w[0] <= w[1]), "{s:?}");
        let at = |le: f64| s.cumulative[BUCKETS.iter().position(|b| *b == le).expect("bucket")];
        assert_eq!(at(0.0001), 1);
        assert_eq!(at(0.001), 3);
        assert_eq!(at(0.005), 4);
        assert_eq!(at(0.05), 5);
        assert_eq!(at(30.0), 5);
        assert_eq!(*s.cumulative.last().expect("inf"), 6);
        assert!((s.sum_seconds - 40.04565).abs() < 0.001, "{}", s.sum_seconds);
        assert_eq!(h.quantile(0.5).map(|d| d.as_micros()), Some(800));
    }
}
