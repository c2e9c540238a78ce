//! The control plane's own metrics, rendered in the Prometheus text format
//! (0.0.4) when `/metrics` is scraped.
//!
//! | metric | type | meaning |
//! | --- | --- | --- |
//! | `weft_control_streams{kind}` | gauge | open watch streams (discovery, outbound, inbound, trust_anchors, proxy_config) |
//! | `weft_control_connected_proxies` | gauge | distinct proxy ids with at least one open stream |
//! | `weft_control_pushes_total{kind}` | counter | messages handed to streams (snapshots and updates) |
//! | `weft_control_recomputations_skipped_total{kind}` | counter | state changes a stream did not recompute for: nothing it depends on changed |
//! | `weft_control_push_latency_seconds` | histogram | state change → update handed to the stream |
//! | `weft_control_policy_rejected_total` | counter | refused file contents (each distinct bad content once) |
//! | `weft_control_rejected_files` | gauge | files currently refused (their last good content in force) |
//! | `weft_control_workloads` | gauge | registered workloads |
//! | `weft_control_services` | gauge | known services |
//! | `weft_control_policies{kind}` | gauge | policy resources in force |
//! | `weft_control_leases` | gauge | registry leases |
//! | `weft_control_version` | gauge | current state version |
//! | `weft_control_certificates_issued_total` | counter | certificates signed by `Certify` |
//! | `weft_control_certify_refused_total{reason}` | counter | refused `Certify` calls, by [`Reason`] |

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::ca::{CertifyCounter, Reason};
use crate::index::State;
use crate::policy::Kind;
use crate::source::Diagnostics;

/// The kinds of watch stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    Discovery,
    Outbound,
    Inbound,
    TrustAnchors,
    ProxyConfig,
}

impl StreamKind {
    pub const ALL: [StreamKind; 5] = [
        StreamKind::Discovery,
        StreamKind::Outbound,
        StreamKind::Inbound,
        StreamKind::TrustAnchors,
        StreamKind::ProxyConfig,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StreamKind::Discovery => "discovery",
            StreamKind::Outbound => "outbound",
            StreamKind::Inbound => "inbound",
            StreamKind::TrustAnchors => "trust_anchors",
            StreamKind::ProxyConfig => "proxy_config",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Prometheus bucket upper bounds for push latency, in seconds.
pub const BUCKETS: [f64; 14] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

/// Values are microseconds; clamped to a minute.
const MAX_MICROS: u64 = 60_000_000;

#[derive(Debug)]
pub struct Metrics {
    streams: [AtomicI64; 5],
    pushes: [AtomicU64; 5],
    skipped: [AtomicU64; 5],
    issued: AtomicU64,
    refused: [AtomicU64; Reason::ALL.len()],
    /// Open streams per proxy id.
    proxies: Mutex<HashMap<String, usize>>,
    latency: Mutex<(Histogram<u64>, u64)>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            streams: Default::default(),
            pushes: Default::default(),
            skipped: Default::default(),
            issued: AtomicU64::new(0),
            refused: Default::default(),
            proxies: Mutex::default(),
            latency: Mutex::new((
                Histogram::new_with_bounds(1, MAX_MICROS, 3).unwrap_or_else(|_| unreachable!("valid bounds")),
                0,
            )),
        }
    }
}

/// Counts one open stream until dropped.
#[derive(Debug)]
pub struct StreamGuard {
    metrics: Arc<Metrics>,
    kind: StreamKind,
    proxy: String,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.metrics.streams[self.kind.index()].fetch_sub(1, Ordering::Relaxed);
        let mut p = self.metrics.proxies.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = p.get_mut(&self.proxy) {
            *n -= 1;
            if *n == 0 {
                p.remove(&self.proxy);
            }
        }
    }
}

impl Metrics {
    pub fn open_stream(self: &Arc<Self>, kind: StreamKind, proxy: &str) -> StreamGuard {
        self.streams[kind.index()].fetch_add(1, Ordering::Relaxed);
        *self.proxies.lock().unwrap_or_else(|e| e.into_inner()).entry(proxy.to_owned()).or_default() += 1;
        StreamGuard { metrics: self.clone(), kind, proxy: proxy.to_owned() }
    }

    /// Counts a message handed to a stream; `latency` is set for updates
    /// caused by a state change (not for the first snapshot).
    pub fn pushed(&self, kind: StreamKind, latency: Option<Duration>) {
        self.pushes[kind.index()].fetch_add(1, Ordering::Relaxed);
        if let Some(l) = latency {
            let micros = u64::try_from(l.as_micros()).unwrap_or(u64::MAX).clamp(1, MAX_MICROS);
            let mut h = self.latency.lock().unwrap_or_else(|e| e.into_inner());
            h.0.saturating_record(micros);
            h.1 = h.1.saturating_add(micros);
        }
    }

    /// Counts a state change a stream skipped: its answer's stamp held.
    pub fn skipped(&self, kind: StreamKind) {
        self.skipped[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn skips(&self, kind: StreamKind) -> u64 {
        self.skipped[kind.index()].load(Ordering::Relaxed)
    }

    pub fn certificate_issued(&self) {
        self.issued.fetch_add(1, Ordering::Relaxed);
    }

    pub fn certify_refused(&self, reason: Reason) {
        self.refused[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn certificates_issued(&self) -> u64 {
        self.issued.load(Ordering::Relaxed)
    }

    pub fn certify_refusals(&self, reason: Reason) -> u64 {
        self.refused[reason.index()].load(Ordering::Relaxed)
    }

    pub fn streams(&self, kind: StreamKind) -> i64 {
        self.streams[kind.index()].load(Ordering::Relaxed)
    }

    pub fn connected_proxies(&self) -> usize {
        self.proxies.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn pushes(&self, kind: StreamKind) -> u64 {
        self.pushes[kind.index()].load(Ordering::Relaxed)
    }

    /// Push latency at quantile `q`, for reports (`None` before any update).
    pub fn push_latency_quantile(&self, q: f64) -> Option<Duration> {
        let h = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        (!h.0.is_empty()).then(|| Duration::from_micros(h.0.value_at_quantile(q)))
    }

    /// Renders everything, reading gauges from `state`.
    pub fn render(&self, state: &State, diagnostics: &Diagnostics, leases: usize) -> String {
        // Writing to a String cannot fail: the `let _ =` below discard `Ok(())`.
        let mut out = String::with_capacity(4096);
        header(&mut out, "weft_control_streams", "gauge", "Open watch streams.");
        for k in StreamKind::ALL {
            let _ = writeln!(out, "weft_control_streams{{kind=\"{}\"}} {}", k.as_str(), self.streams(k));
        }
        header(&mut out, "weft_control_connected_proxies", "gauge", "Distinct proxies with at least one open stream.");
        let _ = writeln!(out, "weft_control_connected_proxies {}", self.connected_proxies());
        header(&mut out, "weft_control_pushes_total", "counter", "Messages handed to watch streams.");
        for k in StreamKind::ALL {
            let _ = writeln!(out, "weft_control_pushes_total{{kind=\"{}\"}} {}", k.as_str(), self.pushes(k));
        }
        header(
            &mut out,
            "weft_control_recomputations_skipped_total",
            "counter",
            "State changes a stream did not recompute for: nothing its answer depends on changed.",
        );
        for k in StreamKind::ALL {
            let _ =
                writeln!(out, "weft_control_recomputations_skipped_total{{kind=\"{}\"}} {}", k.as_str(), self.skips(k));
        }
        header(
            &mut out,
            "weft_control_push_latency_seconds",
            "histogram",
            "Time from a state change to the update handed to a stream.",
        );
        {
            let h = self.latency.lock().unwrap_or_else(|e| e.into_inner());
            for le in BUCKETS {
                let count = h.0.count_between(0, (le * 1e6) as u64);
                let _ = writeln!(out, "weft_control_push_latency_seconds_bucket{{le=\"{le}\"}} {count}");
            }
            let _ = writeln!(out, "weft_control_push_latency_seconds_bucket{{le=\"+Inf\"}} {}", h.0.len());
            let _ = writeln!(out, "weft_control_push_latency_seconds_sum {}", h.1 as f64 / 1e6);
            let _ = writeln!(out, "weft_control_push_latency_seconds_count {}", h.0.len());
        }
        let simple: [(&str, &str, &str, u64); 6] = [
            (
                "weft_control_policy_rejected_total",
                "counter",
                "Refused contents of services and policy files (each distinct bad content once).",
                diagnostics.rejected_total(),
            ),
            (
                "weft_control_rejected_files",
                "gauge",
                "Files currently refused; their last good content stays in force.",
                diagnostics.rejections().len() as u64,
            ),
            ("weft_control_workloads", "gauge", "Registered workloads.", state.workloads.len() as u64),
            ("weft_control_services", "gauge", "Known services.", state.services.len() as u64),
            ("weft_control_leases", "gauge", "Registry leases.", leases as u64),
            ("weft_control_version", "gauge", "Current state version.", state.version),
        ];
        for (name, kind, help, value) in simple {
            header(&mut out, name, kind, help);
            let _ = writeln!(out, "{name} {value}");
        }
        header(&mut out, "weft_control_certificates_issued_total", "counter", "Certificates signed by Certify.");
        let _ = writeln!(out, "weft_control_certificates_issued_total {}", self.certificates_issued());
        header(&mut out, "weft_control_certify_refused_total", "counter", "Refused Certify calls, by reason.");
        for r in Reason::ALL {
            let _ = writeln!(
                out,
                "weft_control_certify_refused_total{{reason=\"{}\"}} {}",
                r.as_str(),
                self.certify_refusals(r)
            );
        }
        header(&mut out, "weft_control_policies", "gauge", "Policy resources in force.");
        for kind in [Kind::HttpRoute, Kind::TrafficPolicy, Kind::AccessPolicy] {
            let n = state.policies.keys().filter(|id| id.kind == kind).count();
            let _ = writeln!(out, "weft_control_policies{{kind=\"{kind}\"}} {n}");
        }
        out
    }
}

impl CertifyCounter for Metrics {
    fn issued(&self) {
        self.certificate_issued();
    }

    fn refused(&self, reason: Reason) {
        self.certify_refused(reason);
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::MeshConfig;

    #[test]
    fn renders_prometheus_text() {
        let m = Arc::new(Metrics::default());
        let _a = m.open_stream(StreamKind::Outbound, "p1");
        let _b = m.open_stream(StreamKind::Outbound, "p1");
        let _c = m.open_stream(StreamKind::Inbound, "p2");
        m.pushed(StreamKind::Outbound, None);
        m.certificate_issued();
        m.certify_refused(Reason::TokenReused);
        m.certify_refused(Reason::TokenReused);
        for ms in [0.05, 2.0, 2.0, 300.0] {
            m.pushed(StreamKind::Outbound, Some(Duration::from_secs_f64(ms / 1000.0)));
        }
        let text = m.render(&State::new(MeshConfig::default()), &Diagnostics::default(), 0);
        for line in [
            "weft_control_streams{kind=\"outbound\"} 2",
            "weft_control_streams{kind=\"inbound\"} 1",
            "weft_control_connected_proxies 2",
            "weft_control_pushes_total{kind=\"outbound\"} 5",
            "weft_control_push_latency_seconds_bucket{le=\"0.0001\"} 1",
            "weft_control_push_latency_seconds_bucket{le=\"0.0025\"} 3",
            "weft_control_push_latency_seconds_bucket{le=\"0.25\"} 3",
            "weft_control_push_latency_seconds_bucket{le=\"+Inf\"} 4",
            "weft_control_push_latency_seconds_count 4",
            "weft_control_policies{kind=\"HTTPRoute\"} 0",
            "# TYPE weft_control_policy_rejected_total counter",
            "weft_control_streams{kind=\"trust_anchors\"} 0",
            "weft_control_certificates_issued_total 1",
            "weft_control_certify_refused_total{reason=\"token_reused\"} 2",
            "weft_control_certify_refused_total{reason=\"csr_sans\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing `{line}` in\n{text}");
        }
        // Every sample belongs to a family announced before it.
        let mut families = std::collections::BTreeSet::new();
        for l in text.lines() {
            if let Some(t) = l.strip_prefix("# TYPE ") {
                families.insert(t.split(' ').next().unwrap_or_default().to_owned());
            } else if !l.starts_with('#') {
                let name = l.split(['{', ' ']).next().unwrap_or_default();
                let base = name.trim_end_matches("_bucket").trim_end_matches("_sum").trim_end_matches("_count");
                assert!(families.contains(name) || families.contains(base), "{l}");
            }
        }
        drop((_a, _b));
        assert_eq!(m.connected_proxies(), 1);
    }
}
