//! The targets (`bench/README.md`, "Targets"), checked against a run's results. Each says met,
//! missed or not measured, with the figures and the margin.

use super::model::{Cell, IdleResult, ProxyIdle, Results, TargetCheck};
use crate::setup::SetupKind;
use crate::workload::Workload;

/// The targets' headline load: HTTP/1.1, 1 KiB, 1,000 requests/s.
const RATE: u32 = 1000;
/// "MB" in the targets is taken as 10^6 bytes (the stricter reading).
const MB: f64 = 1_000_000.0;

fn mb(kib: u64) -> f64 {
    kib as f64 * 1024.0 / MB
}

fn status(met: bool) -> &'static str {
    if met { "met" } else { "missed" }
}

fn cell(r: &Results, setup: SetupKind) -> Option<&Cell> {
    r.latency.iter().find(|c| c.setup == setup && c.workload == Workload::Http1 && c.rate == RATE)
}

/// Peak RSS of each proxy of `setup` at `rate`: from the latency cells
/// (all workloads) or, failing those, the knee step at that rate (which
/// runs after the idle-connection section, on a heap grown by it).
fn peak_at(r: &Results, setup: SetupKind, rate: u32) -> (Vec<(String, u64)>, &'static str) {
    fn add(peaks: &mut Vec<(String, u64)>, name: &str, kib: u64) {
        match peaks.iter_mut().find(|(n, _)| n == name) {
            Some((_, k)) => *k = (*k).max(kib),
            None => peaks.push((name.to_owned(), kib)),
        }
    }
    let mut peaks = Vec::new();
    for c in r.latency.iter().filter(|c| c.setup == setup && c.rate == rate) {
        for p in &c.proxies {
            add(&mut peaks, &p.name, p.peak_rss_kib);
        }
    }
    if !peaks.is_empty() {
        return (peaks, "the latency runs");
    }
    for k in r.knee.iter().filter(|k| k.setup == setup) {
        for step in k.steps.iter().filter(|s| s.rate == rate) {
            for p in &step.proxies {
                add(&mut peaks, &p.name, p.peak_rss_kib);
            }
        }
    }
    (peaks, "the knee step (after the idle-connection section)")
}

fn list(items: &[(String, f64)], unit: &str) -> String {
    items.iter().map(|(n, v)| format!("{n} {v:.1} {unit}")).collect::<Vec<_>>().join(", ")
}

fn cpu_of(c: Option<&Cell>) -> Vec<(String, f64)> {
    c.map(|c| c.proxies.iter().filter_map(|p| p.cpu_s_per_10k.map(|v| (p.name.clone(), v))).collect())
        .unwrap_or_default()
}

fn cpu_list(items: &[(String, f64)]) -> String {
    items.iter().map(|(n, v)| format!("{n} {v:.3}")).collect::<Vec<_>>().join(", ")
}

/// The better (lower) value of a figure among the peers that have it, with
/// the peer it belongs to; a tie goes to the first in report order.
fn lowest<T: Copy>(values: impl IntoIterator<Item = (T, f64)>) -> Option<(T, f64)> {
    values.into_iter().filter(|(_, v)| v.is_finite()).reduce(|best, next| if next.1 < best.1 { next } else { best })
}

/// " (nginx-mtls not measured)" for the peers without a figure.
fn unmeasured(peers: &[SetupKind], measured: &[SetupKind]) -> String {
    let missing: Vec<&str> = peers.iter().filter(|k| !measured.contains(k)).map(|k| k.name()).collect();
    if missing.is_empty() { String::new() } else { format!(" ({} not measured in this run)", missing.join(", ")) }
}

fn added(c: Option<&Cell>, figure: &str) -> Option<f64> {
    c.and_then(|c| c.added_over_direct.get(figure).copied())
}

/// Target 1: weft-mtls adds less latency at p50 and at p99 than the better
/// peer pair on that figure (each figure judged on its own, so the peer may
/// differ between them). `extra` follows the detail.
fn latency_target(mtls: Option<&Cell>, peers: &[(SetupKind, Option<&Cell>)], extra: &str) -> TargetCheck {
    let target = "weft mTLS pair adds less latency than the better peer mTLS pair (HAProxy or nginx, on each figure) \
                  at p50 and p99 (HTTP/1.1, 1 KiB, 1,000/s)";
    let of = |figure: &str| -> Vec<(SetupKind, f64)> {
        peers.iter().filter_map(|(k, c)| Some((*k, added(*c, figure)?))).collect()
    };
    let (p50s, p99s) = (of("p50"), of("p99"));
    match (added(mtls, "p50"), added(mtls, "p99"), lowest(p50s.iter().copied()), lowest(p99s.iter().copied())) {
        (Some(w50), Some(w99), Some((k50, b50)), Some((k99, b99))) => {
            let each: Vec<String> = p50s
                .iter()
                .filter_map(|(k, v50)| {
                    let v99 = p99s.iter().find(|(k99, _)| k99 == k)?.1;
                    Some(format!("{} p50 {v50:+.0} µs, p99 {v99:+.0} µs", k.name()))
                })
                .collect();
            let measured: Vec<SetupKind> = p50s.iter().map(|(k, _)| *k).collect();
            let kinds: Vec<SetupKind> = peers.iter().map(|(k, _)| *k).collect();
            TargetCheck {
                target: target.into(),
                status: status(w50 < b50 && w99 < b99),
                detail: format!(
                    "added over direct (medians): weft-mtls p50 {w50:+.0} µs, p99 {w99:+.0} µs; {}; the better \
                     peer: p50 {}, p99 {}{}; margin p50 {:.0} µs, p99 {:.0} µs{extra}",
                    each.join("; "),
                    k50.name(),
                    k99.name(),
                    unmeasured(&kinds, &measured),
                    b50 - w50,
                    b99 - w99
                ),
            }
        }
        _ => TargetCheck {
            target: target.into(),
            status: "not measured",
            detail: "HTTP/1.1 at 1,000/s was not measured for weft-mtls and a peer mTLS pair in this run".into(),
        },
    }
}

/// Target 4: each weft proxy uses less CPU per request than the better peer
/// on its side (outbound against the peers' client sides, inbound against
/// their server sides; the peer may differ between the sides). `extra`
/// follows the detail.
fn cpu_target(mtls: Option<&Cell>, peers: &[(SetupKind, Option<&Cell>)], extra: &str) -> TargetCheck {
    let target = "weft CPU per 10,000 requests per proxy lower than the better peer's on the same side (HAProxy or \
                  nginx; mTLS pairs, HTTP/1.1, 1,000/s)";
    let weft = cpu_of(mtls);
    let measured: Vec<(SetupKind, Vec<(String, f64)>)> =
        peers.iter().map(|(k, c)| (*k, cpu_of(*c))).filter(|(_, cpu)| cpu.len() == 2).collect();
    if weft.len() != 2 || measured.is_empty() {
        return TargetCheck {
            target: target.into(),
            status: "not measured",
            detail: "HTTP/1.1 at 1,000/s was not measured for weft-mtls and a peer mTLS pair in this run".into(),
        };
    }
    // Per side: (weft's value, the better peer and its value).
    let sides: Vec<(f64, (SetupKind, f64))> =
        (0..2).filter_map(|i| Some((weft[i].1, lowest(measured.iter().map(|(k, cpu)| (*k, cpu[i].1)))?))).collect();
    let each: Vec<String> = measured.iter().map(|(k, cpu)| format!("{} {}", k.name(), cpu_list(cpu))).collect();
    let kinds: Vec<SetupKind> = peers.iter().map(|(k, _)| *k).collect();
    let have: Vec<SetupKind> = measured.iter().map(|(k, _)| *k).collect();
    TargetCheck {
        target: target.into(),
        status: status(sides.iter().all(|(w, (_, best))| w < best)),
        detail: format!(
            "CPU s per 10k requests: weft-mtls {}; {}; the better peer: client side {}, server side {}{}{extra} \
             (clock-tick resolution 10 ms per run)",
            cpu_list(&weft),
            each.join("; "),
            sides[0].1.0.name(),
            sides[1].1.0.name(),
            unmeasured(&kinds, &have),
        ),
    }
}

/// The targets are the mTLS pair's (what a mesh deploys, against the peer
/// pairs that also do mTLS, HAProxy and nginx, taking the better of the two
/// on each figure); the plaintext pair's figures are given beside them, for
/// what TLS costs.
pub fn check(r: &Results) -> Vec<TargetCheck> {
    let mtls = cell(r, SetupKind::WeftMtls);
    let plain = cell(r, SetupKind::Weft);
    let peers: Vec<(SetupKind, Option<&Cell>)> = SetupKind::PEERS.iter().map(|&k| (k, cell(r, k))).collect();
    let plain_ref = match (added(plain, "p50"), added(plain, "p99")) {
        (Some(p50), Some(p99)) => format!("; the plaintext weft pair adds p50 {p50:+.0} µs, p99 {p99:+.0} µs"),
        _ => String::new(),
    };
    let mut out = vec![latency_target(mtls, &peers, &plain_ref)];

    let target = "weft mTLS pair's p50 added latency < 150 µs (HTTP/1.1, 1,000/s)";
    out.push(match added(mtls, "p50") {
        Some(w50) => TargetCheck {
            target: target.into(),
            status: status(w50 < 150.0),
            detail: format!("weft-mtls adds p50 {w50:+.0} µs over direct; margin {:.0} µs{plain_ref}", 150.0 - w50),
        },
        None => TargetCheck {
            target: target.into(),
            status: "not measured",
            detail: "weft-mtls was not measured with HTTP/1.1 at 1,000/s in this run".into(),
        },
    });

    let target = "each weft proxy < 20 MB RSS at 2,000/s (mTLS pair)";
    let (peaks, source) = peak_at(r, SetupKind::WeftMtls, 2000);
    out.push(if peaks.is_empty() {
        TargetCheck {
            target: target.into(),
            status: "not measured",
            detail: "no run at 2,000/s (the full mode's rates and the knee step-up include it)".into(),
        }
    } else {
        let worst = peaks.iter().map(|(_, k)| mb(*k)).fold(0.0, f64::max);
        let items: Vec<(String, f64)> = peaks.iter().map(|(n, k)| (n.clone(), mb(*k))).collect();
        let (plain_peaks, _) = peak_at(r, SetupKind::Weft, 2000);
        let plain: Vec<(String, f64)> = plain_peaks.iter().map(|(n, k)| (n.clone(), mb(*k))).collect();
        TargetCheck {
            target: target.into(),
            status: status(worst < 20.0),
            detail: format!(
                "peak RSS (VmHWM) in {source} at 2,000/s: {}; margin {:.1} MB{}",
                list(&items, "MB"),
                20.0 - worst,
                if plain.is_empty() { String::new() } else { format!(" (plaintext pair: {})", list(&plain, "MB")) }
            ),
        }
    });

    // One figure (`kib`) of each proxy of the setups of `kind`.
    let idle_of = |kind: SetupKind, kib: fn(&ProxyIdle) -> Option<u64>| -> Vec<(String, f64)> {
        r.setups
            .iter()
            .filter(|s| s.kind == kind)
            .flat_map(|s| s.proxies.iter().filter_map(move |p| Some((p.name.clone(), mb(kib(p)?)))))
            .collect()
    };
    let rss = |p: &ProxyIdle| Some(p.idle_rss_kib);
    let (idle, plain_idle) = (idle_of(SetupKind::WeftMtls, rss), idle_of(SetupKind::Weft, rss));
    let idle_anon = idle_of(SetupKind::WeftMtls, |p| p.idle_anon_kib);
    let target = "each weft proxy < 10 MB RSS idle (mTLS pair)";
    out.push(if idle.is_empty() {
        TargetCheck { target: target.into(), status: "not measured", detail: String::new() }
    } else {
        let worst = idle.iter().map(|(_, v)| *v).fold(0.0, f64::max);
        TargetCheck {
            target: target.into(),
            status: status(worst < 10.0),
            detail: format!(
                "RSS after start-up (certificate held): {}; margin {:.1} MB{}{}",
                list(&idle, "MB"),
                10.0 - worst,
                if idle_anon.is_empty() {
                    String::new()
                } else {
                    format!(" (anonymous part: {}; the rest is shared file pages)", list(&idle_anon, "MB"))
                },
                if plain_idle.is_empty() {
                    String::new()
                } else {
                    format!(" (plaintext pair: {})", list(&plain_idle, "MB"))
                }
            ),
        }
    });

    // Issue #15: what each extra sidecar costs is its anonymous memory; the
    // file pages (the binary's text) are shared by every proxy on a node.
    let target = "each weft proxy's anonymous memory (RssAnon) ≤ 2 MB idle (mTLS pair)";
    out.push(if idle_anon.is_empty() {
        TargetCheck { target: target.into(), status: "not measured", detail: "no RssAnon (Linux < 4.5)".into() }
    } else {
        let worst = idle_anon.iter().map(|(_, v)| *v).fold(0.0, f64::max);
        TargetCheck {
            target: target.into(),
            status: status(worst <= 2.0),
            detail: format!(
                "RssAnon after start-up: {}; margin {:.1} MB (whole RSS: {})",
                list(&idle_anon, "MB"),
                2.0 - worst,
                list(&idle, "MB")
            ),
        }
    });

    let pc = cpu_of(plain);
    let plain_cpu = if pc.is_empty() { String::new() } else { format!("; plaintext weft {}", cpu_list(&pc)) };
    out.push(cpu_target(mtls, &peers, &plain_cpu));
    out.push(upstream_target(&upstream_by_rate(r, SetupKind::WeftMtls), &peer_upstreams(r)));
    out.extend(memory_after_burst(r));
    out.extend(control_plane(r));
    out
}

/// Per HTTP/1.1 rate of `kind`: the connections that reached the server
/// pod, summed over the repetitions.
fn upstream_by_rate(r: &Results, kind: SetupKind) -> Vec<(u32, u64)> {
    r.latency
        .iter()
        .filter(|c| c.setup == kind && c.workload == crate::workload::Workload::Http1)
        .map(|c| (c.rate, c.runs.iter().map(|run| run.upstream_connections).sum()))
        .collect()
}

fn peer_upstreams(r: &Results) -> Vec<(SetupKind, Vec<(u32, u64)>)> {
    SetupKind::PEERS.iter().map(|&k| (k, upstream_by_rate(r, k))).filter(|(_, u)| !u.is_empty()).collect()
}

/// Issue #15: the client-side proxy shares kept-alive upstream connections
/// at least as well as the better peer: over the HTTP/1.1 rates both ran,
/// weft-mtls opened no more connections to the server pod in all than it.
/// Judged on the sum, not rate by rate: pools outlive a run, so a rate's
/// figure depends on what the rates before it left open.
fn upstream_target(weft: &[(u32, u64)], peers: &[(SetupKind, Vec<(u32, u64)>)]) -> TargetCheck {
    let target = "weft's client-side proxy opens no more upstream connections than the better peer's (HTTP/1.1, \
                  all rates, summed over the repetitions)";
    // Per peer that ran every rate weft ran: its total, and its figures.
    let totals: Vec<(SetupKind, u64, &[(u32, u64)])> = peers
        .iter()
        .filter_map(|(k, u)| {
            let per_rate: Option<Vec<u64>> =
                weft.iter().map(|(rate, _)| u.iter().find(|(r, _)| r == rate).map(|(_, n)| *n)).collect();
            Some((*k, per_rate?.iter().sum(), u.as_slice()))
        })
        .collect();
    let best = lowest(totals.iter().map(|(k, n, _)| (*k, *n as f64)));
    let (Some((best_kind, best_total)), false) = (best, weft.is_empty()) else {
        return TargetCheck {
            target: target.into(),
            status: "not measured",
            detail: "HTTP/1.1 was not measured for weft-mtls and a peer mTLS pair at the same rates".into(),
        };
    };
    let total: u64 = weft.iter().map(|(_, n)| n).sum();
    let per_rate = |u: &[(u32, u64)]| {
        weft.iter()
            .filter_map(|(rate, _)| u.iter().find(|(r, _)| r == rate).map(|(r, n)| format!("{n} at {r}/s")))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let each: Vec<String> = totals.iter().map(|(k, n, u)| format!("{} {n} ({})", k.name(), per_rate(u))).collect();
    TargetCheck {
        target: target.into(),
        status: status(total <= best_total as u64),
        detail: format!(
            "connections into the server pod (/proc/net/snmp): weft-mtls {total} ({}); {}; the better peer: {}",
            per_rate(weft),
            each.join("; "),
            best_kind.name()
        ),
    }
}

/// Issue #14's memory targets: the burst's memory comes back (within 2 MB of
/// the RSS before it, 30 s after the connections closed), and an idle mTLS
/// connection costs each proxy at most 12 KB (10^3 bytes, the stricter reading).
fn memory_after_burst(r: &Results) -> Vec<TargetCheck> {
    const WINDOW_S: f64 = 30.0;
    const PER_CONN_BYTES: f64 = 12_000.0;
    let of = |kind: SetupKind| -> Vec<&IdleResult> { r.idle_connections.iter().filter(|i| i.setup == kind).collect() };
    let (mtls, plain) = (of(SetupKind::WeftMtls), of(SetupKind::Weft));
    let mut out = Vec::new();

    let target = "after a burst of idle mTLS connections closes, each weft proxy's RSS is back within 2 MB of its \
                  pre-burst value within 30 s";
    let recovery = |rs: &[&IdleResult]| -> String {
        rs.iter()
            .map(|i| {
                format!(
                    "{} before {:.1} MB, peak {}, kept {} at {:.0} s, back {}",
                    i.proxy,
                    mb(i.rss_before_kib),
                    i.rss_peak_kib.map(|k| format!("{:.1} MB", mb(k))).unwrap_or_else(|| "–".into()),
                    i.kept_bytes().map(|b| format!("{:+.2} MB", b / MB)).unwrap_or_else(|| "–".into()),
                    i.after_close.last().map_or(0.0, |s| s.after_s),
                    i.back_after_s().map(|s| format!("after {s:.0} s")).unwrap_or_else(|| "never".into()),
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    let window_ok =
        !mtls.is_empty() && mtls.iter().all(|i| i.after_close.last().is_some_and(|s| s.after_s >= WINDOW_S - 0.5));
    out.push(if window_ok {
        let burst = mtls.iter().filter_map(|i| i.points.last()).map(|p| p.open).max().unwrap_or(0);
        // The sample nearest 30 s after the close decides (the window may be longer).
        let met = mtls.iter().all(|i| {
            let kept = i.after_close.iter().rfind(|s| s.after_s <= WINDOW_S + 0.5);
            let back = i.back_after_s().is_some_and(|s| s <= WINDOW_S + 0.5);
            back && kept.is_some_and(|s| (s.rss_kib as f64 - i.rss_before_kib as f64) * 1024.0 <= 2.0 * MB)
        });
        TargetCheck {
            target: target.into(),
            status: status(met),
            detail: format!(
                "{burst} connections: {}{}",
                recovery(&mtls),
                if plain.is_empty() { String::new() } else { format!(" (plaintext pair: {})", recovery(&plain)) }
            ),
        }
    } else {
        TargetCheck {
            target: target.into(),
            status: "not measured",
            detail: "needs the idle section on weft-mtls with its 30 s window (`--only idle`, not --smoke)".into(),
        }
    });

    let target = "each idle mTLS connection costs each weft proxy <= 12 KB";
    let per_conn = |rs: &[&IdleResult]| -> Vec<(String, f64)> {
        rs.iter()
            .flat_map(|i| {
                i.points.iter().filter_map(move |p| Some((format!("{} at {}", i.proxy, p.open), p.bytes_per_conn?)))
            })
            .collect()
    };
    let bytes =
        |items: &[(String, f64)]| items.iter().map(|(n, b)| format!("{n} {b:.0} B")).collect::<Vec<_>>().join(", ");
    let (m, p) = (per_conn(&mtls), per_conn(&plain));
    out.push(if m.is_empty() {
        TargetCheck {
            target: target.into(),
            status: "not measured",
            detail: "the idle section did not run on weft-mtls".into(),
        }
    } else {
        let worst = m.iter().map(|(_, b)| *b).fold(f64::MIN, f64::max);
        TargetCheck {
            target: target.into(),
            status: status(worst <= PER_CONN_BYTES),
            detail: format!(
                "(RSS growth) / connections: {}; margin {:.0} B{}",
                bytes(&m),
                PER_CONN_BYTES - worst,
                if p.is_empty() { String::new() } else { format!(" (plaintext pair: {})", bytes(&p)) }
            ),
        }
    });
    out
}

/// Issue #14's scaling targets: 10,000 registrations in 5 s, each tenth
/// taking about as long as the others, and a change reaching 1,000 streams
/// at 10,000 endpoints in p99 <= 25 ms.
fn control_plane(r: &Results) -> Vec<TargetCheck> {
    let Some(cp) = &r.control_plane else { return Vec::new() };
    let mut out = Vec::new();
    // Linearity is judged with no stream open (the push part registers its
    // endpoints first): the index's cost per registration. With a stream
    // per service, each registration also re-sends its service's whole
    // endpoint set (the API is state-of-the-world), which grows with the
    // endpoints per service; that run is held to the total only.
    let target = "10,000 registrations in <= 5 s, each tenth within 2x of the first (linear); <= 5 s with a discovery \
                  stream per service";
    let plain = cp.push_registration.as_ref().filter(|_| cp.push_endpoints >= 10_000);
    out.push(match (plain, &cp.endpoints) {
        (Some((took, progress)), Some(e)) if e.asked >= 10_000 => {
            let tenths = crate::cplane::tenths(progress);
            let (first, worst) =
                (tenths.first().copied().unwrap_or(f64::NAN), tenths.iter().copied().fold(0.0, f64::max));
            let linear = tenths.len() == 10 && worst <= 2.0 * first.max(0.05);
            let watched = crate::cplane::tenths(&e.progress);
            TargetCheck {
                target: target.into(),
                status: status(
                    linear && *took <= 5.0 && e.failed == 0 && e.took_s <= 5.0 && e.watch_converged_ms.is_some(),
                ),
                detail: format!(
                    "{} in {:.2} s, tenths {:.2}–{:.2} s (first {:.2} s); with {} streams {:.2} s, tenths {:.2}–{:.2} s",
                    cp.push_endpoints,
                    took,
                    tenths.iter().copied().fold(f64::INFINITY, f64::min),
                    worst,
                    first,
                    e.watchers,
                    e.took_s,
                    watched.iter().copied().fold(f64::INFINITY, f64::min),
                    watched.iter().copied().fold(0.0, f64::max),
                ),
            }
        }
        _ => TargetCheck {
            target: target.into(),
            status: "not measured",
            detail: "fewer than 10,000 endpoints in this run (`--endpoints 10000`)".into(),
        },
    });
    let target = "a policy change reaches 1,000 streams at 10,000 endpoints in p99 <= 25 ms";
    let at_size = cp.push.iter().find(|p| p.streams >= 1000).filter(|_| cp.push_endpoints >= 10_000);
    out.push(match at_size.and_then(|p| p.to_all.map(|q| (p, q))) {
        Some((p, q)) => TargetCheck {
            target: target.into(),
            status: status(q.p99 <= 25.0 && p.missed == 0),
            detail: format!(
                "{} streams, {} endpoints, {} changes: p50 {:.1} ms, p99 {:.1} ms, slowest {:.1} ms{} (from the \
                 file's rename: the poll of up to {} included)",
                p.streams,
                cp.push_endpoints,
                p.changes,
                q.p50,
                q.p99,
                q.max,
                p.slowest_to_first_ms.map(|f| format!(", its first stream after {f:.1} ms")).unwrap_or_default(),
                cp.reload_interval
            ),
        },
        None => TargetCheck {
            target: target.into(),
            status: "not measured",
            detail: "needs 1,000 streams and `--endpoints 10000`".into(),
        },
    });
    out
}

/// `--chaos`: how much a flood may cost the good clients' p99.
pub const CHAOS_P99_FACTOR: f64 = 2.0;
/// The server proxy's peak RSS under the flood may exceed its quiet peak by
/// this much (admission holds at most 1,024 connections in detection or
/// handshake, a few tens of KiB each).
pub const CHAOS_RSS_GROWTH_KIB: u64 = 32 * 1024;

/// The `--chaos` targets: the good clients' p99 under the flood within 2x of
/// quiet (medians over the reps), no good request failed, the server proxy's
/// RSS bounded, and every flood connection closed by the proxy.
pub fn chaos(r: &crate::chaos::ChaosResults) -> Vec<TargetCheck> {
    let mut out = Vec::new();
    let p99_target = "good clients' p99 under the flood <= 2x quiet";
    out.push(match (r.median(false, |g| g.p99_us), r.median(true, |g| g.p99_us)) {
        (Some(q), Some(f)) => TargetCheck {
            target: p99_target.into(),
            status: status(f <= q * CHAOS_P99_FACTOR),
            detail: format!("median p99 {f:.0} µs under the flood, {q:.0} µs quiet ({:.2}x)", f / q.max(1.0)),
        },
        _ => TargetCheck { target: p99_target.into(), status: "not measured", detail: String::new() },
    });
    let failed: u64 = r.runs.iter().map(|g| g.failed).sum();
    let first = r.runs.iter().find_map(|g| g.first_error.clone()).map(|e| format!(" (first: {e})"));
    out.push(TargetCheck {
        target: "0 failed good requests".into(),
        status: status(failed == 0 && !r.runs.is_empty()),
        detail: format!("{failed} failed over {} runs{}", r.runs.len(), first.unwrap_or_default()),
    });
    let rss_target = format!("server proxy RSS under the flood <= quiet + {:.0} MB", mb(CHAOS_RSS_GROWTH_KIB));
    let peak = |flood: bool| r.runs.iter().filter(|g| g.flood == flood).map(|g| g.server_peak_rss_kib).max();
    out.push(match (peak(false), peak(true)) {
        (Some(q), Some(f)) => TargetCheck {
            target: rss_target,
            status: status(f <= q + CHAOS_RSS_GROWTH_KIB),
            detail: format!("peak {:.1} MB under the flood, {:.1} MB quiet", mb(f), mb(q)),
        },
        _ => TargetCheck { target: rss_target, status: "not measured", detail: String::new() },
    });
    // Silent connections are left out: in permissive mode the proxy
    // forwards the ones it admitted to the app after the detection timeout
    // (it may be a server that speaks first), and the app keeps them.
    let (opened, held): (u64, u64) =
        r.floods.iter().flat_map(|f| [&f.garbage, &f.hello]).fold((0, 0), |(o, h), t| (o + t.opened, h + t.held));
    let silent_held: u64 = r.floods.iter().map(|f| f.silent.held).sum();
    out.push(TargetCheck {
        target: "every garbage and half-open TLS connection closed within the hold".into(),
        status: status(opened > 0 && held == 0),
        detail: format!(
            "{held} of {opened} still open after the hold; {silent_held} silent connections admitted and forwarded \
             to the app (permissive mTLS) stayed open there"
        ),
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::model::ProxyCost;

    #[test]
    fn the_better_peer_is_the_lowest_finite_value_first_on_a_tie() {
        let (h, n) = (SetupKind::HaproxyMtls, SetupKind::NginxMtls);
        let table: &[(&[(SetupKind, f64)], Option<(SetupKind, f64)>)] = &[
            (&[], None),
            (&[(h, 120.0)], Some((h, 120.0))),
            (&[(h, 120.0), (n, 90.0)], Some((n, 90.0))),
            (&[(h, 90.0), (n, 120.0)], Some((h, 90.0))),
            (&[(h, 90.0), (n, 90.0)], Some((h, 90.0))),
            // Negative added latency (faster than direct's median) is lower still.
            (&[(h, 5.0), (n, -3.0)], Some((n, -3.0))),
            (&[(h, f64::NAN), (n, 200.0)], Some((n, 200.0))),
            (&[(h, f64::NAN)], None),
        ];
        for (values, want) in table {
            assert_eq!(lowest(values.iter().copied()), *want, "{values:?}");
        }
    }

    /// A cell with added p50/p99 and CPU per 10k for its two proxies.
    fn cell(setup: SetupKind, p50: f64, p99: f64, cpu: [f64; 2]) -> Cell {
        let mut c = Cell::new(Workload::Http1, RATE, setup);
        c.added_over_direct = [("p50", p50), ("p99", p99)].into_iter().collect();
        c.proxies = cpu
            .iter()
            .zip(["client side", "server side"])
            .map(|(v, side)| ProxyCost {
                name: format!("{} ({side})", setup.name()),
                peak_rss_kib: 0,
                cpu_s_per_10k: Some(*v),
            })
            .collect();
        c
    }

    #[test]
    fn weft_is_judged_against_the_better_peer_on_each_figure() {
        let (h, n) = (SetupKind::HaproxyMtls, SetupKind::NginxMtls);
        // (weft p50, p99; haproxy p50, p99; nginx p50, p99 or none) →
        // (status, the better peer on p50, on p99).
        let table: &[((f64, f64), (f64, f64), Option<(f64, f64)>, (&str, &str, &str))] = &[
            // Beats both.
            ((50.0, 200.0), (120.0, 900.0), Some((100.0, 1000.0)), ("met", "nginx-mtls", "haproxy-mtls")),
            // Beats HAProxy at p50 but not nginx: missed.
            ((110.0, 200.0), (120.0, 900.0), Some((100.0, 1000.0)), ("missed", "nginx-mtls", "haproxy-mtls")),
            // Beats nginx at p99 but not HAProxy: missed.
            ((50.0, 950.0), (120.0, 900.0), Some((100.0, 1000.0)), ("missed", "nginx-mtls", "haproxy-mtls")),
            // A tie is not less.
            ((100.0, 200.0), (120.0, 900.0), Some((100.0, 1000.0)), ("missed", "nginx-mtls", "haproxy-mtls")),
            // nginx not measured: judged against HAProxy, and said so.
            ((50.0, 200.0), (120.0, 900.0), None, ("met", "haproxy-mtls", "haproxy-mtls")),
        ];
        for (w, hp, np, (want, better50, better99)) in table {
            let weft = cell(SetupKind::WeftMtls, w.0, w.1, [0.1, 0.1]);
            let hc = cell(h, hp.0, hp.1, [0.2, 0.2]);
            let nc = np.map(|np| cell(n, np.0, np.1, [0.2, 0.2]));
            let t = latency_target(Some(&weft), &[(h, Some(&hc)), (n, nc.as_ref())], "");
            assert_eq!(t.status, *want, "{}", t.detail);
            assert!(t.detail.contains(&format!("the better peer: p50 {better50}, p99 {better99}")), "{}", t.detail);
            assert_eq!(t.detail.contains("nginx-mtls not measured"), np.is_none(), "{}", t.detail);
        }
        let weft = cell(SetupKind::WeftMtls, 1.0, 1.0, [0.1, 0.1]);
        let t = latency_target(Some(&weft), &[(h, None), (n, None)], "");
        assert_eq!(t.status, "not measured");
        assert_eq!(latency_target(None, &[(h, Some(&weft))], "").status, "not measured");
    }

    #[test]
    fn cpu_is_judged_side_by_side_against_the_better_peer() {
        let (h, n) = (SetupKind::HaproxyMtls, SetupKind::NginxMtls);
        // (weft client, server; haproxy; nginx) → (status, better client side, better server side).
        let table: &[([f64; 2], [f64; 2], [f64; 2], (&str, &str, &str))] = &[
            ([0.10, 0.10], [0.20, 0.15], [0.15, 0.30], ("met", "nginx-mtls", "haproxy-mtls")),
            // Beats HAProxy's client side, not nginx's.
            ([0.18, 0.10], [0.20, 0.15], [0.15, 0.30], ("missed", "nginx-mtls", "haproxy-mtls")),
            // Beats nginx's server side, not HAProxy's.
            ([0.10, 0.20], [0.20, 0.15], [0.15, 0.30], ("missed", "nginx-mtls", "haproxy-mtls")),
        ];
        for (w, hp, np, (want, client, server)) in table {
            let weft = cell(SetupKind::WeftMtls, 0.0, 0.0, *w);
            let (hc, nc) = (cell(h, 0.0, 0.0, *hp), cell(n, 0.0, 0.0, *np));
            let t = cpu_target(Some(&weft), &[(h, Some(&hc)), (n, Some(&nc))], "");
            assert_eq!(t.status, *want, "{}", t.detail);
            let better = format!("the better peer: client side {client}, server side {server}");
            assert!(t.detail.contains(&better), "{}", t.detail);
        }
        let weft = cell(SetupKind::WeftMtls, 0.0, 0.0, [0.1, 0.1]);
        assert_eq!(cpu_target(Some(&weft), &[(h, None), (n, None)], "").status, "not measured");
    }

    #[test]
    fn upstream_connections_are_judged_on_the_total_against_the_better_peer() {
        let (h, n) = (SetupKind::HaproxyMtls, SetupKind::NginxMtls);
        let peers = vec![(h, vec![(500, 17), (1000, 20)]), (n, vec![(500, 28), (1000, 0)])];
        // More than nginx at 1,000/s, fewer in all: met.
        let t = upstream_target(&[(500, 4), (1000, 10)], &peers);
        assert_eq!(t.status, "met", "{}", t.detail);
        assert!(t.detail.contains("weft-mtls 14 (4 at 500/s, 10 at 1000/s)"), "{}", t.detail);
        assert!(t.detail.contains("nginx-mtls 28 (28 at 500/s, 0 at 1000/s)"), "{}", t.detail);
        assert!(t.detail.ends_with("the better peer: nginx-mtls"), "{}", t.detail);
        assert_eq!(upstream_target(&[(500, 20), (1000, 8)], &peers).status, "met", "a tie is at or below");
        assert_eq!(upstream_target(&[(500, 20), (1000, 9)], &peers).status, "missed");
        // A peer that missed one of weft's rates is not compared.
        assert_eq!(upstream_target(&[(2000, 1)], &peers).status, "not measured");
        assert_eq!(upstream_target(&[], &peers).status, "not measured");
    }
}
