//! Latency histograms: recorded in nanoseconds into `hdrhistogram` by the
//! generator, shipped to the orchestrator as (value, count) pairs, merged
//! across repetitions, and read back as percentiles and plot curves.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Three significant digits: 0.1 % error at any magnitude.
const SIGFIG: u8 = 3;
/// Largest latency recorded (larger ones saturate): one minute.
const HIGHEST_NS: u64 = 60_000_000_000;

/// An empty histogram with the bench's bounds (1 ns to 60 s).
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIGHEST_NS, SIGFIG).expect("constant bounds are valid")
}

/// A histogram as its non-empty buckets: `(highest equivalent value in ns,
/// count)`. Re-recording the pairs into a histogram with the same bounds
/// reproduces it exactly.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Buckets(pub Vec<(u64, u64)>);

impl Buckets {
    pub fn of(h: &Histogram<u64>) -> Buckets {
        Buckets(h.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect())
    }

    /// Adds these buckets into `h`.
    pub fn add_to(&self, h: &mut Histogram<u64>) {
        for &(value, count) in &self.0 {
            h.saturating_record_n(value, count);
        }
    }
}

/// Merges several bucket lists into one histogram.
pub fn merge<'a>(all: impl IntoIterator<Item = &'a Buckets>) -> Histogram<u64> {
    let mut h = new_histogram();
    for b in all {
        b.add_to(&mut h);
    }
    h
}

/// The figures the report quotes, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

/// Names and accessors of the quoted figures, in report order.
pub const FIGURES: [(&str, fn(&Percentiles) -> f64); 5] =
    [("p50", |p| p.p50), ("p90", |p| p.p90), ("p99", |p| p.p99), ("p99.9", |p| p.p999), ("max", |p| p.max)];

fn us(ns: u64) -> f64 {
    ns as f64 / 1_000.0
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: h.len(),
            p50: us(h.value_at_quantile(0.5)),
            p90: us(h.value_at_quantile(0.9)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
            mean: h.mean() / 1_000.0,
        }
    }
}

/// Points of a percentile curve as HdrHistogram plots draw it: x is
/// `log10(1 / (1 - p))` (0 = p0, 1 = p90, 2 = p99, …), y the latency in µs.
/// The curve stops where the samples run out (x = log10(count), beyond which
/// every percentile is the maximum), up to [`CURVE_MAX_X`], and ends on the
/// maximum.
pub fn curve(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let last_x = (h.len() as f64).log10().clamp(0.0, CURVE_MAX_X);
    let mut points = Vec::new();
    let mut x = 0.0;
    while x < last_x {
        let q = 1.0 - 10f64.powf(-x);
        points.push((x, us(h.value_at_quantile(q))));
        x += CURVE_STEP;
    }
    points.push((last_x, us(h.max())));
    points
}

/// The curve's right end: p99.999.
pub const CURVE_MAX_X: f64 = 5.0;
const CURVE_STEP: f64 = 0.05;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_round_trip_exactly() {
        let mut h = new_histogram();
        for v in [1_000u64, 1_500, 2_000_000, 123_456, 123_457, 59_000_000_000] {
            h.record(v).unwrap();
        }
        h.record_n(50_000, 7).unwrap();
        let back = merge([&Buckets::of(&h)]);
        assert_eq!(back.len(), h.len());
        for q in [0.0, 0.5, 0.9, 0.99, 1.0] {
            assert_eq!(back.value_at_quantile(q), h.value_at_quantile(q), "q={q}");
        }
        assert_eq!(back.max(), h.max());
    }

    #[test]
    fn percentiles_in_microseconds() {
        let mut h = new_histogram();
        for i in 1..=1000u64 {
            h.record(i * 1_000).unwrap(); // 1 µs .. 1 ms
        }
        let p = Percentiles::of(&h);
        assert_eq!(p.count, 1000);
        assert!((p.p50 - 500.0).abs() < 1.0, "{p:?}");
        assert!((p.p99 - 990.0).abs() < 1.0, "{p:?}");
        assert!((p.max - 1000.0).abs() < 1.0, "{p:?}");
        assert_eq!(Percentiles::of(&new_histogram()), Percentiles::default());
    }

    #[test]
    fn curve_stops_where_samples_run_out() {
        let mut h = new_histogram();
        for i in 1..=100u64 {
            h.record(i * 1_000).unwrap();
        }
        let c = curve(&h);
        assert_eq!(c.first().unwrap().0, 0.0);
        let (last_x, last_y) = *c.last().unwrap();
        assert!((last_x - 2.0).abs() < 1e-9, "100 samples reach p99: {last_x}");
        assert!((last_y - 100.0).abs() < 0.2);
        assert!(c.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1), "monotone: {c:?}");
    }
}
