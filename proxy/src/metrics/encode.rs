//! Prometheus text exposition format (version 0.0.4), written by hand: the
//! format is simple and this keeps the proxy free of a metrics framework.

use std::fmt::Write as _;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

use super::histogram::BUCKETS;
use super::{Direction, Metrics, OUTCOMES, ProtocolLabel, is_failure, outcome_index};

/// Renders every series. Called from the admin server, never on the data path.
pub fn render(m: &Metrics) -> String {
    let mut out = String::with_capacity(8 * 1024);
    render_http(m, &mut out);
    render_tcp(m, &mut out);
    render_policy(m, &mut out);
    render_edges(m, &mut out);
    header(
        &mut out,
        "weft_tap_events_dropped_total",
        "counter",
        "Tap events dropped because the tap's queue was full.",
    );
    let _ = writeln!(out, "weft_tap_events_dropped_total {}", m.tap_dropped.load(Relaxed));

    if let Some(stats) = crate::alloc::stats() {
        header(
            &mut out,
            "weft_proxy_allocator_bytes",
            "gauge",
            "What the memory allocator holds: allocated (live data), active (pages holding it), resident (incl. freed pages not yet returned), metadata.",
        );
        for (kind, v) in stats.kinds() {
            let _ = writeln!(out, "weft_proxy_allocator_bytes{{kind=\"{kind}\"}} {v}");
        }
    }

    header(&mut out, "weft_detect_total", "counter", "Protocol detection outcomes of accepted connections.");
    for dir in Direction::ALL {
        for outcome in OUTCOMES {
            let v = m.detect[dir as usize][outcome_index(outcome)].load(Relaxed);
            let _ = writeln!(
                out,
                "weft_detect_total{{direction=\"{}\",outcome=\"{}\"}} {v}",
                dir.as_str(),
                outcome.as_str()
            );
        }
    }

    header(
        &mut out,
        "weft_orig_dst_errors_total",
        "counter",
        "Connections refused because they were not redirected by iptables or their original destination was unreadable.",
    );
    for dir in Direction::ALL {
        let v = m.orig_dst_errors[dir as usize].load(Relaxed);
        let _ = writeln!(out, "weft_orig_dst_errors_total{{direction=\"{}\"}} {v}", dir.as_str());
    }

    header(
        &mut out,
        "weft_inbound_shed_total",
        "counter",
        "Inbound connections closed at accept because too many were already in detection or the TLS handshake.",
    );
    let _ = writeln!(out, "weft_inbound_shed_total {}", m.inbound_shed.load(Relaxed));
    header(
        &mut out,
        "weft_inbound_handshake_timeouts_total",
        "counter",
        "Inbound mesh TLS handshakes closed because the client did not finish them in time.",
    );
    let _ = writeln!(out, "weft_inbound_handshake_timeouts_total {}", m.inbound_handshake_timeouts.load(Relaxed));

    let decisions: Vec<_> = m
        .authz
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|((allowed, policy, reason), n)| (*allowed, escape(policy), *reason, n.load(Relaxed)))
        .collect();
    for (allowed, name, help) in [
        (
            true,
            "weft_inbound_allowed_total",
            "Inbound connections (opaque) or requests (HTTP) authorized, by deciding policy.",
        ),
        (
            false,
            "weft_inbound_denied_total",
            "Inbound connections (opaque) or requests (HTTP) refused, by deciding policy.",
        ),
    ] {
        header(&mut out, name, "counter", help);
        for (a, policy, reason, n) in &decisions {
            if *a == allowed {
                let _ = writeln!(out, "{name}{{policy=\"{policy}\",reason=\"{reason}\"}} {n}");
            }
        }
    }

    let expiry = m.identity_expiry.load(Relaxed);
    if expiry > 0 {
        header(
            &mut out,
            "weft_identity_cert_expiry_timestamp_seconds",
            "gauge",
            "When the proxy's certificate expires (Unix seconds).",
        );
        let _ = writeln!(out, "weft_identity_cert_expiry_timestamp_seconds {expiry}");
        header(&mut out, "weft_identity_renewals_total", "counter", "Certificates renewed since the proxy started.");
        let _ = writeln!(out, "weft_identity_renewals_total {}", m.identity_renewals.load(Relaxed));
    }
    out
}

fn render_http(m: &Metrics, out: &mut String) {
    // Copy under the locks, write outside them.
    let mut rows = Vec::new();
    for dir in Direction::ALL {
        let map = m.authorities[dir as usize].0.read().unwrap_or_else(|p| p.into_inner());
        let mut entries: Vec<_> = map.iter().collect();
        entries.sort_by(|a, b| a.0.cmp(b.0));
        for (authority, stats) in entries {
            let responses = stats.responses.lock().unwrap_or_else(|p| p.into_inner()).clone();
            rows.push((dir, escape(authority), stats.requests.load(Relaxed), responses));
        }
    }

    header(out, "weft_requests_total", "counter", "HTTP requests received by the proxy.");
    for (dir, authority, requests, _) in &rows {
        let _ =
            writeln!(out, "weft_requests_total{{direction=\"{}\",authority=\"{authority}\"}} {requests}", dir.as_str());
    }

    header(
        out,
        "weft_responses_total",
        "counter",
        "HTTP responses sent by the proxy, including its own error responses.",
    );
    for (dir, authority, _, responses) in &rows {
        let mut responses = responses.clone();
        responses.sort_unstable();
        for (status, n) in responses {
            let class = if is_failure(status) { "failure" } else { "success" };
            let _ = writeln!(
                out,
                "weft_responses_total{{direction=\"{}\",authority=\"{authority}\",status_code=\"{status}\",classification=\"{class}\"}} {n}",
                dir.as_str()
            );
        }
    }

    header(
        out,
        "weft_response_latency_seconds",
        "histogram",
        "Time from receiving a request to receiving the response headers (or the proxy's error).",
    );
    for dir in Direction::ALL {
        for (i, class) in ["success", "failure"].into_iter().enumerate() {
            let Some(snap) = m.latency[dir as usize][i].snapshot() else {
                continue;
            };
            let labels = format!("direction=\"{}\",classification=\"{class}\"", dir.as_str());
            for (le, n) in BUCKETS.iter().zip(&snap.cumulative) {
                let _ = writeln!(out, "weft_response_latency_seconds_bucket{{{labels},le=\"{le}\"}} {n}");
            }
            let _ = writeln!(out, "weft_response_latency_seconds_bucket{{{labels},le=\"+Inf\"}} {}", snap.count);
            let _ = writeln!(out, "weft_response_latency_seconds_sum{{{labels}}} {}", snap.sum_seconds);
            let _ = writeln!(out, "weft_response_latency_seconds_count{{{labels}}} {}", snap.count);
        }
    }
}

fn render_policy(m: &Metrics, out: &mut String) {
    let p = &m.policy;
    let counters: [(&str, &str, &AtomicU64); 6] = [
        ("weft_retries_total", "Retries sent by the outbound policy (attempts after the first).", &p.retries),
        (
            "weft_retry_budget_exhausted_total",
            "Retries refused by the retry budget; the failure went back to the client.",
            &p.retry_budget_exhausted,
        ),
        ("weft_rate_limited_total", "Inbound requests answered 429 by the local rate limit.", &p.rate_limited),
        ("weft_no_route_total", "Requests to a service with routes that matched none (answered 404).", &p.no_route),
        ("weft_circuit_ejections_total", "Endpoints ejected by the circuit breaker.", &p.ejections),
        ("weft_faults_delayed_total", "Requests a fault policy delayed.", &p.faults_delayed),
    ];
    for (name, help, v) in counters {
        header(out, name, "counter", help);
        let _ = writeln!(out, "{name} {}", v.load(Relaxed));
    }
    header(out, "weft_mirror_requests_total", "counter", "RequestMirror copies, by outcome.");
    for (outcome, v) in [("answered", &p.mirrored), ("failed", &p.mirror_failed), ("skipped", &p.mirror_skipped)] {
        let _ = writeln!(out, "weft_mirror_requests_total{{outcome=\"{outcome}\"}} {}", v.load(Relaxed));
    }
    header(out, "weft_faults_aborted_total", "counter", "Requests a fault policy aborted.");
    let _ = writeln!(out, "weft_faults_aborted_total {}", p.faults_aborted.load(Relaxed));
    header(
        out,
        "weft_timeouts_total",
        "counter",
        "Requests (504), attempts, and streams (response bodies, connections) cut by a timeout, by kind.",
    );
    let _ = writeln!(out, "weft_timeouts_total{{kind=\"request\"}} {}", p.request_timeouts.load(Relaxed));
    let _ = writeln!(out, "weft_timeouts_total{{kind=\"per_try\"}} {}", p.per_try_timeouts.load(Relaxed));
    let _ = writeln!(out, "weft_timeouts_total{{kind=\"idle\"}} {}", p.idle_timeouts.load(Relaxed));
    header(
        out,
        "weft_route_requests_total",
        "counter",
        "Outbound requests by HTTPRoute rule and backend (name.namespace:port); route is empty without routes.",
    );
    let routes = p.route_rows();
    for (route, backend, stats) in &routes {
        for (class, v) in [("success", &stats.success), ("failure", &stats.failure)] {
            let _ = writeln!(
                out,
                "weft_route_requests_total{{route=\"{}\",backend=\"{}\",classification=\"{class}\"}} {}",
                escape(route),
                escape(backend),
                v.load(Relaxed)
            );
        }
    }
    header(
        out,
        "weft_route_response_latency_seconds",
        "histogram",
        "Outbound time from request to response headers (retries included), by HTTPRoute rule and backend.",
    );
    for (route, backend, stats) in &routes {
        for (i, class) in ["success", "failure"].into_iter().enumerate() {
            let labels =
                format!("route=\"{}\",backend=\"{}\",classification=\"{class}\"", escape(route), escape(backend));
            histogram(out, "weft_route_response_latency_seconds", &labels, &stats.latency[i]);
        }
    }
}

/// The edge families: responses by who answered (outbound) or asked (inbound).
fn render_edges(m: &Metrics, out: &mut String) {
    let mut rows = Vec::new();
    for dir in Direction::ALL {
        let v = m.edges[dir as usize].0.read().unwrap_or_else(|p| p.into_inner());
        let mut entries: Vec<_> = v.iter().cloned().collect();
        drop(v);
        entries.sort_by(|a, b| (&a.0, &a.1, a.2).cmp(&(&b.0, &b.1, b.2)));
        for (peer, peer_id, tls, stats) in entries {
            let labels = format!(
                "direction=\"{}\",peer=\"{}\",peer_id=\"{}\",tls=\"{tls}\"",
                dir.as_str(),
                escape(&peer),
                escape(&peer_id)
            );
            rows.push((labels, stats));
        }
    }
    header(
        out,
        "weft_edge_responses_total",
        "counter",
        "HTTP responses by edge: outbound by destination service and server identity, inbound by client identity.",
    );
    for (labels, stats) in &rows {
        for (class, v) in [("success", &stats.success), ("failure", &stats.failure)] {
            let _ =
                writeln!(out, "weft_edge_responses_total{{{labels},classification=\"{class}\"}} {}", v.load(Relaxed));
        }
    }
    header(
        out,
        "weft_edge_response_latency_seconds",
        "histogram",
        "Time from request to response headers, by edge (as weft_edge_responses_total, without classification).",
    );
    for (labels, stats) in &rows {
        histogram(out, "weft_edge_response_latency_seconds", labels, &stats.latency);
    }
}

/// One histogram series (nothing when it recorded nothing yet).
fn histogram(out: &mut String, name: &str, labels: &str, h: &super::LatencyHistogram) {
    let Some(snap) = h.snapshot() else {
        return;
    };
    for (le, n) in BUCKETS.iter().zip(&snap.cumulative) {
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {n}");
    }
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", snap.count);
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", snap.sum_seconds);
    let _ = writeln!(out, "{name}_count{{{labels}}} {}", snap.count);
}

/// `weft_circuit_open`: per (target, endpoint) under a circuit breaker,
/// from the resolver's live endpoint sets (so it needs no bookkeeping on
/// the data path).
pub fn render_circuits(out: &mut String, rows: &[(String, std::net::SocketAddr, bool)]) {
    header(
        out,
        "weft_circuit_open",
        "gauge",
        "1 while the circuit breaker keeps the endpoint out of rotation (ejected or half-open), by target and endpoint.",
    );
    for (target, endpoint, open) in rows {
        let _ = writeln!(
            out,
            "weft_circuit_open{{target=\"{}\",endpoint=\"{endpoint}\"}} {}",
            escape(target),
            u8::from(*open)
        );
    }
}

fn render_tcp(m: &Metrics, out: &mut String) {
    type Field = fn(&super::TcpCounters) -> i64;
    let families: [(&str, &str, &str, Field); 5] = [
        ("weft_tcp_connections_total", "counter", "TCP connections accepted, by detected protocol.", |c| {
            c.opened.load(Relaxed) as i64
        }),
        ("weft_tcp_open_connections", "gauge", "TCP connections currently open.", |c| c.open.load(Relaxed)),
        ("weft_tcp_read_bytes_total", "counter", "Bytes read from downstream clients.", |c| {
            c.read_bytes.load(Relaxed) as i64
        }),
        ("weft_tcp_write_bytes_total", "counter", "Bytes written to downstream clients.", |c| {
            c.write_bytes.load(Relaxed) as i64
        }),
        ("weft_tcp_close_total", "counter", "TCP connections closed.", |c| c.closed.load(Relaxed) as i64),
    ];
    for (name, kind, help, field) in families {
        header(out, name, kind, help);
        for dir in Direction::ALL {
            for proto in ProtocolLabel::ALL {
                let v = field(m.tcp(dir, proto));
                let _ = writeln!(out, "{name}{{direction=\"{}\",protocol=\"{}\"}} {v}", dir.as_str(), proto.as_str());
            }
        }
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Label values escape backslash, double quote and newline.
fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn renders_counts_and_histograms() {
        let m = Metrics::new();
        let a = m.authority(Direction::Outbound, "web:80");
        a.request();
        a.response(200);
        a.request();
        a.response(502);
        m.record_latency(Direction::Outbound, 200, Duration::from_millis(2));
        m.tcp(Direction::Inbound, ProtocolLabel::Opaque).open_connection();
        m.detected(Direction::Inbound, crate::transport::detect::Outcome::Timeout);
        let text = render(&m);
        for line in [
            "weft_requests_total{direction=\"outbound\",authority=\"web:80\"} 2",
            "weft_responses_total{direction=\"outbound\",authority=\"web:80\",status_code=\"200\",classification=\"success\"} 1",
            "weft_responses_total{direction=\"outbound\",authority=\"web:80\",status_code=\"502\",classification=\"failure\"} 1",
            "weft_response_latency_seconds_bucket{direction=\"outbound\",classification=\"success\",le=\"0.001\"} 0",
            "weft_response_latency_seconds_bucket{direction=\"outbound\",classification=\"success\",le=\"0.003\"} 1",
            "weft_response_latency_seconds_count{direction=\"outbound\",classification=\"success\"} 1",
            "weft_tcp_open_connections{direction=\"inbound\",protocol=\"opaque\"} 1",
            "weft_detect_total{direction=\"inbound\",outcome=\"timeout\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn renders_routes_and_edges() {
        let m = Metrics::new();
        let (route, backend): (std::sync::Arc<str>, std::sync::Arc<str>) = ("".into(), "web.default:80".into());
        m.policy.route(&route, &backend).response_timed(200, Duration::from_millis(2));
        let named: std::sync::Arc<str> = "default/web#0".into();
        m.policy.route(&named, &backend).response_timed(503, Duration::from_millis(20));
        m.edge(Direction::Outbound, "web.default", "spiffe://td/ns/default/sa/web", true)
            .response(200, Duration::from_millis(2));
        m.edge(Direction::Inbound, "", "spiffe://td/ns/x/sa/\"q\"", true).response(500, Duration::from_millis(2));
        m.edge(Direction::Inbound, "", "", false).response(200, Duration::from_millis(2));
        let text = render(&m);
        for line in [
            "weft_route_requests_total{route=\"default\",backend=\"web.default:80\",classification=\"success\"} 1",
            "weft_route_response_latency_seconds_bucket{route=\"default\",backend=\"web.default:80\",classification=\"success\",le=\"0.002\"} 1",
            "weft_route_response_latency_seconds_count{route=\"default\",backend=\"web.default:80\",classification=\"success\"} 1",
            "weft_route_response_latency_seconds_bucket{route=\"default/web#0\",backend=\"web.default:80\",classification=\"failure\",le=\"0.015\"} 0",
            "weft_route_response_latency_seconds_bucket{route=\"default/web#0\",backend=\"web.default:80\",classification=\"failure\",le=\"0.02\"} 1",
            "weft_edge_responses_total{direction=\"outbound\",peer=\"web.default\",peer_id=\"spiffe://td/ns/default/sa/web\",tls=\"true\",classification=\"success\"} 1",
            "weft_edge_responses_total{direction=\"outbound\",peer=\"web.default\",peer_id=\"spiffe://td/ns/default/sa/web\",tls=\"true\",classification=\"failure\"} 0",
            "weft_edge_responses_total{direction=\"inbound\",peer=\"\",peer_id=\"spiffe://td/ns/x/sa/\\\"q\\\"\",tls=\"true\",classification=\"failure\"} 1",
            "weft_edge_responses_total{direction=\"inbound\",peer=\"\",peer_id=\"\",tls=\"false\",classification=\"success\"} 1",
            "weft_edge_response_latency_seconds_bucket{direction=\"inbound\",peer=\"\",peer_id=\"\",tls=\"false\",le=\"+Inf\"} 1",
            "weft_edge_response_latency_seconds_count{direction=\"outbound\",peer=\"web.default\",peer_id=\"spiffe://td/ns/default/sa/web\",tls=\"true\"} 1",
            "weft_tap_events_dropped_total 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        // No classification on the edge histogram.
        assert!(
            !text.lines().any(|l| l.starts_with("weft_edge_response_latency_seconds") && l.contains("classification"))
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
