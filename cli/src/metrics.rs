//! The demo's report: per-service success rate, request rate and latency
//! quantiles, computed from the proxies' Prometheus metrics
//! (`docs/metrics.md`).
//!
//! ```text
//!   /metrics of each pod ──parse──► HttpStats per pod ──sum over a service's pods──►
//!   (end − start) ──► Row { success, rps, p50, p95, p99 } ──► table
//! ```
//!
//! For a service, the numbers are those of the inbound proxies of its pods
//! (`weft_responses_total` and `weft_response_latency_seconds` with
//! `direction="inbound"`): what the service answered, as its callers saw it
//! at its door. Quantiles are interpolated inside the histogram's buckets,
//! as Prometheus' `histogram_quantile` does, so they are as precise as the
//! bucket bounds around them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use weft_control::telemetry::prom::parse_le;
pub use weft_control::telemetry::prom::{Le, Sample, parse};

/// HTTP traffic seen by proxies in one direction: response counts and the
/// latency histogram, summed over the scraped pods.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HttpStats {
    pub success: f64,
    pub failure: f64,
    /// Cumulative bucket counts by upper bound (`le`), in seconds.
    pub buckets: BTreeMap<Le, f64>,
}

impl HttpStats {
    /// The stats in `samples` for `direction`; when `authorities` is given,
    /// response counts are limited to those authorities (the latency
    /// histogram has no authority label and is taken whole).
    pub fn from_samples(samples: &[Sample], direction: &str, authorities: Option<&[String]>) -> HttpStats {
        let mut stats = HttpStats::default();
        let is = |s: &Sample, key: &str, value: &str| s.labels.get(key).is_some_and(|v| v == value);
        for s in samples.iter().filter(|s| is(s, "direction", direction)) {
            match s.name.as_str() {
                "weft_responses_total" => {
                    let authority = s.labels.get("authority").map(String::as_str).unwrap_or_default();
                    if authorities.is_some_and(|a| !a.iter().any(|x| x == authority)) {
                        continue;
                    }
                    if is(s, "classification", "success") {
                        stats.success += s.value;
                    } else {
                        stats.failure += s.value;
                    }
                }
                "weft_response_latency_seconds_bucket" => {
                    let Some(le) = s.labels.get("le").and_then(|le| parse_le(le)) else { continue };
                    *stats.buckets.entry(Le(le)).or_default() += s.value;
                }
                _ => {}
            }
        }
        stats
    }

    pub fn add(&mut self, other: &HttpStats) {
        self.success += other.success;
        self.failure += other.failure;
        for (le, n) in &other.buckets {
            *self.buckets.entry(*le).or_default() += n;
        }
    }

    /// What happened between `earlier` and `self` (counters only grow; a
    /// proxy that restarted in between makes a difference negative, which
    /// is clamped to zero).
    pub fn since(&self, earlier: &HttpStats) -> HttpStats {
        HttpStats {
            success: (self.success - earlier.success).max(0.0),
            failure: (self.failure - earlier.failure).max(0.0),
            buckets: self
                .buckets
                .iter()
                .map(|(le, n)| (*le, (n - earlier.buckets.get(le).copied().unwrap_or(0.0)).max(0.0)))
                .collect(),
        }
    }

    pub fn requests(&self) -> f64 {
        self.success + self.failure
    }

    /// The `q` quantile of latency (0 < q < 1), like `histogram_quantile`:
    /// linear inside the bucket that holds it; the highest finite bound if
    /// it falls in the +Inf bucket; `None` without observations.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        weft_control::telemetry::prom::quantile(&self.buckets, q).map(Duration::from_secs_f64)
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub service: String,
    /// `None`: no HTTP request was seen (an opaque TCP service, or no traffic).
    pub stats: Option<HttpStats>,
    pub window: Duration,
}

impl Row {
    pub fn success_ratio(&self) -> Option<f64> {
        let s = self.stats.as_ref().filter(|s| s.requests() > 0.0)?;
        Some(s.success / s.requests())
    }

    pub fn rps(&self) -> Option<f64> {
        let s = self.stats.as_ref().filter(|s| s.requests() > 0.0)?;
        Some(s.requests() / self.window.as_secs_f64().max(1e-3))
    }
}

/// `850µs`, `12.3ms`, `1.20s`.
pub fn format_latency(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 0.001 {
        format!("{:.0}µs", secs * 1e6)
    } else if secs < 1.0 {
        format!("{:.1}ms", secs * 1e3)
    } else {
        format!("{secs:.2}s")
    }
}

/// The table `SERVICE SUCCESS RPS P50 P95 P99`.
pub fn render_table(rows: &[Row]) -> String {
    let width = rows.iter().map(|r| r.service.len()).max().unwrap_or(0).max("SERVICE".len());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<width$}  {:>8}  {:>7}  {:>8}  {:>8}  {:>8}",
        "SERVICE", "SUCCESS", "RPS", "P50", "P95", "P99"
    );
    for row in rows {
        let dash = || "-".to_owned();
        let success = row.success_ratio().map_or_else(dash, |r| format!("{:.2}%", r * 100.0));
        let rps = row.rps().map_or_else(dash, |r| format!("{r:.1}"));
        let q = |q| row.stats.as_ref().and_then(|s| s.quantile(q)).map_or_else(dash, format_latency);
        let _ = write!(
            out,
            "{:<width$}  {success:>8}  {rps:>7}  {:>8}  {:>8}  {:>8}",
            row.service,
            q(0.5),
            q(0.95),
            q(0.99)
        );
        if row.rps().is_none() {
            out.push_str("  (no HTTP requests: opaque TCP or idle)");
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRAPE: &str = r#"# HELP weft_responses_total HTTP responses sent downstream.
# TYPE weft_responses_total counter
weft_responses_total{direction="inbound",authority="web",status_code="200",classification="success"} 990
weft_responses_total{direction="inbound",authority="web:80",status_code="503",classification="failure"} 10
weft_responses_total{direction="outbound",authority="store",status_code="200",classification="success"} 7
weft_responses_total{direction="inbound",authority="we\"ird\\",status_code="200",classification="success"} 0
# TYPE weft_response_latency_seconds histogram
weft_response_latency_seconds_bucket{direction="inbound",classification="success",le="0.001"} 500
weft_response_latency_seconds_bucket{direction="inbound",classification="success",le="0.002"} 900
weft_response_latency_seconds_bucket{direction="inbound",classification="success",le="0.005"} 990
weft_response_latency_seconds_bucket{direction="inbound",classification="success",le="+Inf"} 990
weft_response_latency_seconds_bucket{direction="inbound",classification="failure",le="0.001"} 0
weft_response_latency_seconds_bucket{direction="inbound",classification="failure",le="0.002"} 0
weft_response_latency_seconds_bucket{direction="inbound",classification="failure",le="0.005"} 0
weft_response_latency_seconds_bucket{direction="inbound",classification="failure",le="+Inf"} 10
weft_response_latency_seconds_sum{direction="inbound",classification="success"} 1.5
weft_tcp_open_connections{direction="inbound",protocol="opaque"} 2 1700000000000
"#;

    #[test]
    fn parses_the_text_format() {
        let samples = parse(SCRAPE);
        assert_eq!(samples.len(), 14);
        assert_eq!(samples[3].labels["authority"], "we\"ird\\");
        let last = samples.last().unwrap();
        assert_eq!((last.name.as_str(), last.value), ("weft_tcp_open_connections", 2.0));
        assert_eq!(samples[7].labels["le"], "+Inf");
        assert!(parse("broken{x=\"1\" 3\nok 1\n").len() == 1);
    }

    #[test]
    fn inbound_stats_and_quantiles() {
        let stats = HttpStats::from_samples(&parse(SCRAPE), "inbound", None);
        assert_eq!((stats.success, stats.failure), (990.0, 10.0));
        assert_eq!(stats.buckets[&Le(f64::INFINITY)], 1000.0);
        let ms = |q| stats.quantile(q).unwrap().as_secs_f64() * 1e3;
        // Rank 500 is the top of the first bucket (0-1 ms).
        assert!((ms(0.5) - 1.0).abs() < 1e-5, "{}", ms(0.5));
        // Rank 950: 50 of the 90 in (2 ms, 5 ms] → 2 + 3 × 50/90.
        assert!((ms(0.95) - (2.0 + 3.0 * 50.0 / 90.0)).abs() < 1e-5, "{}", ms(0.95));
        // Rank 999 is in +Inf: the highest finite bound.
        assert!((ms(0.999) - 5.0).abs() < 1e-5, "{}", ms(0.999));

        let outbound = HttpStats::from_samples(&parse(SCRAPE), "outbound", None);
        assert_eq!(outbound.requests(), 7.0);
        assert_eq!(outbound.quantile(0.5), None);
        let web = HttpStats::from_samples(&parse(SCRAPE), "inbound", Some(&["web".to_owned()]));
        assert_eq!((web.success, web.failure), (990.0, 0.0));
    }

    #[test]
    fn differences_and_sums() {
        let end = HttpStats::from_samples(&parse(SCRAPE), "inbound", None);
        let start =
            HttpStats { success: 90.0, failure: 0.0, buckets: [(Le(0.001), 90.0), (Le(f64::INFINITY), 90.0)].into() };
        let window = end.since(&start);
        assert_eq!((window.success, window.failure), (900.0, 10.0));
        assert_eq!(window.buckets[&Le(0.001)], 410.0);
        assert_eq!(window.buckets[&Le(0.002)], 900.0);
        let mut total = window.clone();
        total.add(&window);
        assert_eq!(total.requests(), 1820.0);
        // A restarted proxy's counters went down: no negative traffic.
        assert_eq!(start.since(&end).requests(), 0.0);
    }

    #[test]
    fn table() {
        let stats = HttpStats::from_samples(&parse(SCRAPE), "inbound", None);
        let rows = [
            Row { service: "web.default".into(), stats: Some(stats), window: Duration::from_secs(20) },
            Row { service: "store.default".into(), stats: None, window: Duration::from_secs(20) },
        ];
        assert_eq!(rows[0].success_ratio(), Some(0.99));
        assert_eq!(rows[0].rps(), Some(50.0));
        assert_eq!(
            render_table(&rows),
            "SERVICE         SUCCESS      RPS       P50       P95       P99\n\
             web.default      99.00%     50.0     1.0ms     3.7ms     5.0ms\n\
             store.default         -        -         -         -         -  (no HTTP requests: opaque TCP or idle)\n"
        );
        assert_eq!(format_latency(Duration::from_micros(850)), "850µs");
        assert_eq!(format_latency(Duration::from_millis(1200)), "1.20s");
    }
}
