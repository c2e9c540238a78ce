//! Pure aggregation over scraped proxy metrics: windowed increases and
//! rates, success ratios and latency quantiles, grouped by workload,
//! service, version, route and edge.
//!
//! ```text
//!   history of one pod: [Snapshot t0, t5, t10, …]
//!        └─ span(window) ─► increase per series between the oldest scrape in the window and the latest
//!   Golden::from(increase, seconds, filter) per pod ─► add over a group's pods ─► row
//! ```
//!
//! The numbers are computed as Prometheus would with `increase()` and
//! `histogram_quantile()`, without extrapolation: a rate is the increase
//! divided by the time between the two scrapes actually used; a counter
//! that went down (the proxy restarted) counts from zero; quantiles are
//! interpolated inside the buckets of the summed bucket increases.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use serde::Serialize;

use super::prom::{Le, Sample, parse_le, quantile};
use crate::index::NsName;

/// The metric families telemetry keeps from a scrape; the rest is dropped
/// before it is stored.
pub const FAMILIES: &[&str] =
    &[RESPONSES, LATENCY_BUCKET, ROUTE_REQUESTS, ROUTE_LATENCY_BUCKET, EDGE_RESPONSES, EDGE_LATENCY_BUCKET, TCP_OPEN];
pub const RESPONSES: &str = "weft_responses_total";
pub const LATENCY_BUCKET: &str = "weft_response_latency_seconds_bucket";
pub const ROUTE_REQUESTS: &str = "weft_route_requests_total";
pub const ROUTE_LATENCY_BUCKET: &str = "weft_route_response_latency_seconds_bucket";
pub const EDGE_RESPONSES: &str = "weft_edge_responses_total";
pub const EDGE_LATENCY_BUCKET: &str = "weft_edge_response_latency_seconds_bucket";
pub const TCP_OPEN: &str = "weft_tcp_open_connections";

/// Keeps the samples of [`FAMILIES`].
pub fn keep(samples: Vec<Sample>) -> Vec<Sample> {
    samples.into_iter().filter(|s| FAMILIES.contains(&s.name.as_str())).collect()
}

/// One scrape of one proxy.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Unix time of the scrape, seconds.
    pub at: f64,
    pub samples: Arc<Vec<Sample>>,
}

type SeriesKey<'a> = (&'a str, &'a BTreeMap<String, String>);

/// Per series, how much a counter (or a histogram bucket) grew from
/// `earlier` to `later`; a series that went down counts from zero (the
/// proxy restarted), one absent before counts whole. Gauges are not
/// counters: do not pass them here.
pub fn increase(earlier: &[Sample], later: &[Sample]) -> Vec<Sample> {
    let before: HashMap<SeriesKey<'_>, f64> = earlier.iter().map(|s| ((s.name.as_str(), &s.labels), s.value)).collect();
    later
        .iter()
        .filter(|s| s.name != TCP_OPEN)
        .map(|s| {
            let was = before.get(&(s.name.as_str(), &s.labels)).copied().unwrap_or(0.0);
            let grew = if s.value >= was { s.value - was } else { s.value };
            Sample { name: s.name.clone(), labels: s.labels.clone(), value: grew }
        })
        .collect()
}

/// What one pod did over a window.
#[derive(Clone, Debug)]
pub struct Span {
    /// Counter increases from the first scrape used to the last.
    pub increase: Vec<Sample>,
    /// Seconds between the two scrapes (0: only one scrape so far).
    pub seconds: f64,
    /// The last scrape, for gauges.
    pub latest: Arc<Vec<Sample>>,
}

/// The window of `window` seconds ending at `end` over one pod's history
/// (ordered by time): from the oldest scrape at most `window` before the
/// latest one at or before `end`, to that latest one. `None` without a
/// scrape by `end`.
pub fn span(history: &[Snapshot], end: f64, window: f64) -> Option<Span> {
    let last = history.iter().rposition(|s| s.at <= end)?;
    let latest = &history[last];
    // A scrape that ran a little late still opens the window.
    let from = latest.at - window * 1.05;
    let first = history[..=last].iter().position(|s| s.at >= from).unwrap_or(last);
    let earliest = &history[first];
    Some(Span {
        increase: increase(&earliest.samples, &latest.samples),
        seconds: latest.at - earliest.at,
        latest: latest.samples.clone(),
    })
}

fn is(s: &Sample, key: &str, value: &str) -> bool {
    s.labels.get(key).is_some_and(|v| v == value)
}

fn label<'a>(s: &'a Sample, key: &str) -> &'a str {
    s.labels.get(key).map_or("", String::as_str)
}

/// Success, rate and latency of a set of requests.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Golden {
    pub success: f64,
    pub failure: f64,
    /// Requests per second, summed over the pods (each over its own span).
    pub rps: f64,
    /// Cumulative bucket increases, seconds.
    pub buckets: BTreeMap<Le, f64>,
}

impl Golden {
    /// From one pod's span: responses counted in `counts` (by their
    /// `classification` label) and latency in the `bucket` family, the
    /// samples that `filter` keeps.
    pub fn from(span: &Span, counts: &str, bucket: &str, filter: impl Fn(&Sample) -> bool) -> Golden {
        let mut g = Golden::default();
        for s in span.increase.iter().filter(|s| filter(s)) {
            if s.name == counts {
                if is(s, "classification", "success") {
                    g.success += s.value;
                } else {
                    g.failure += s.value;
                }
            } else if s.name == bucket
                && let Some(le) = s.labels.get("le").and_then(|le| parse_le(le))
            {
                *g.buckets.entry(Le(le)).or_default() += s.value;
            }
        }
        if span.seconds > 0.0 {
            g.rps = g.requests() / span.seconds;
        }
        g
    }

    pub fn add(&mut self, other: &Golden) {
        self.success += other.success;
        self.failure += other.failure;
        self.rps += other.rps;
        for (le, n) in &other.buckets {
            *self.buckets.entry(*le).or_default() += n;
        }
    }

    pub fn requests(&self) -> f64 {
        self.success + self.failure
    }

    /// `None` without requests.
    pub fn success_ratio(&self) -> Option<f64> {
        (self.requests() > 0.0).then(|| self.success / self.requests())
    }

    /// The `q` latency quantile in milliseconds; `None` without requests.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        quantile(&self.buckets, q).map(|s| s * 1e3)
    }
}

/// The inbound golden metrics of one pod (what it answered).
pub fn inbound(span: &Span) -> Golden {
    Golden::from(span, RESPONSES, LATENCY_BUCKET, |s| is(s, "direction", "inbound"))
}

/// A pod as telemetry sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Pod {
    pub name: NsName,
    /// The workload it is a replica of (see [`workload_of`]).
    pub workload: String,
    pub labels: BTreeMap<String, String>,
    pub address: IpAddr,
    pub meshed: bool,
    /// Its SPIFFE ID; empty when unmeshed.
    pub identity: String,
}

impl Pod {
    pub fn version(&self) -> &str {
        self.labels.get("version").map_or("", String::as_str)
    }
}

/// The workload a pod is a replica of: a Deployment's pod
/// `NAME-HASH-xxxxx` (label `pod-template-hash: HASH`) → `NAME`; a local
/// mesh replica or a StatefulSet's pod `NAME-N` → `NAME`; else the pod's
/// own name.
pub fn workload_of(pod: &str, labels: &BTreeMap<String, String>) -> String {
    if let Some(hash) = labels.get("pod-template-hash")
        && let Some((prefix, _)) = pod.rsplit_once('-')
        && let Some(name) = prefix.strip_suffix(hash.as_str()).and_then(|p| p.strip_suffix('-'))
        && !name.is_empty()
    {
        return name.to_owned();
    }
    match pod.rsplit_once('-') {
        Some((name, n)) if !name.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
            name.to_owned()
        }
        _ => pod.to_owned(),
    }
}

/// One row of `/api/stat`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StatRow {
    pub namespace: String,
    pub name: String,
    pub kind: &'static str,
    pub version: String,
    pub meshed: String,
    pub success: Option<f64>,
    pub rps: f64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub tcp_conn: f64,
}

fn stat_row(
    kind: &'static str,
    namespace: &str,
    name: &str,
    version: &str,
    members: &[usize],
    pods: &[Pod],
    spans: &[Option<Span>],
) -> StatRow {
    let mut golden = Golden::default();
    let mut tcp = 0.0;
    for &i in members {
        if let Some(span) = &spans[i] {
            golden.add(&inbound(span));
            tcp += span
                .latest
                .iter()
                .filter(|s| s.name == TCP_OPEN && is(s, "direction", "inbound"))
                .map(|s| s.value)
                .sum::<f64>();
        }
    }
    let meshed = members.iter().filter(|&&i| pods[i].meshed).count();
    StatRow {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        kind,
        version: version.to_owned(),
        meshed: format!("{meshed}/{}", members.len()),
        success: golden.success_ratio(),
        rps: golden.rps,
        p50_ms: golden.quantile_ms(0.5),
        p95_ms: golden.quantile_ms(0.95),
        p99_ms: golden.quantile_ms(0.99),
        tcp_conn: tcp,
    }
}

/// `/api/stat?by=workload`: one row per workload (its pods summed), in
/// `namespace` when given, ordered by namespace and name. `spans[i]` is
/// `pods[i]`'s.
pub fn stat_workloads(pods: &[Pod], spans: &[Option<Span>], namespace: Option<&str>) -> Vec<StatRow> {
    let mut groups: BTreeMap<(&str, &str), Vec<usize>> = BTreeMap::new();
    for (i, p) in pods.iter().enumerate() {
        if namespace.is_none_or(|ns| ns == p.name.namespace) {
            groups.entry((&p.name.namespace, &p.workload)).or_default().push(i);
        }
    }
    groups
        .into_iter()
        .map(|((ns, name), members)| {
            let version = pods[members[0]].version();
            stat_row("workload", ns, name, version, &members, pods, spans)
        })
        .collect()
}

/// A Service and the pods it selects (indexes into the pods).
#[derive(Clone, Debug, PartialEq)]
pub struct ServicePods {
    pub name: NsName,
    pub pods: Vec<usize>,
}

/// `/api/stat?by=service`: one row per service, then one per version when
/// its pods have more than one.
pub fn stat_services(
    services: &[ServicePods],
    pods: &[Pod],
    spans: &[Option<Span>],
    namespace: Option<&str>,
) -> Vec<StatRow> {
    let mut rows = Vec::new();
    for s in services.iter().filter(|s| namespace.is_none_or(|ns| ns == s.name.namespace)) {
        rows.push(stat_row("service", &s.name.namespace, &s.name.name, "", &s.pods, pods, spans));
        let mut versions: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for &i in &s.pods {
            versions.entry(pods[i].version()).or_default().push(i);
        }
        if versions.len() > 1 {
            for (version, members) in versions {
                rows.push(stat_row("service", &s.name.namespace, &s.name.name, version, &members, pods, spans));
            }
        }
    }
    rows
}

/// A route rule and backend of a service's policy, with its weight.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyBackend {
    /// `namespace/name#rule`, or `default` for a service without routes.
    pub route: String,
    /// `name.namespace`.
    pub backend: String,
    pub weight: Option<u32>,
}

/// One row of `/api/routes`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RouteRow {
    pub route: String,
    pub service: String,
    pub backend: String,
    pub weight: Option<u32>,
    pub success: Option<f64>,
    pub rps: f64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// `name.namespace:port` → `name.namespace`; an empty route → `default`.
fn route_key(s: &Sample) -> (String, String) {
    let route = match label(s, "route") {
        "" => "default",
        r => r,
    };
    let backend = label(s, "backend");
    let backend =
        backend.rsplit_once(':').filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit())).map_or(backend, |(b, _)| b);
    (route.to_owned(), backend.to_owned())
}

/// `/api/routes` for `service` (`name.namespace`): the callers' outbound
/// route metrics summed over every pod, for the routes of its policy
/// (`policy`; the service itself as `default` when it has none), with
/// their weights; backends seen in the metrics but gone from the policy
/// are listed with no weight.
pub fn routes(service: &str, policy: &[PolicyBackend], spans: &[Option<Span>]) -> Vec<RouteRow> {
    let default = [PolicyBackend { route: "default".into(), backend: service.to_owned(), weight: None }];
    let policy = if policy.is_empty() { &default[..] } else { policy };
    let names: BTreeSet<&str> = policy.iter().map(|p| p.route.as_str()).collect();
    let mut per: BTreeMap<(String, String), Golden> =
        policy.iter().map(|p| ((p.route.clone(), p.backend.clone()), Golden::default())).collect();
    for span in spans.iter().flatten() {
        let mut seen: BTreeMap<(String, String), Vec<Sample>> = BTreeMap::new();
        for s in span.increase.iter().filter(|s| s.name == ROUTE_REQUESTS || s.name == ROUTE_LATENCY_BUCKET) {
            let (route, backend) = route_key(s);
            let ours = names.contains(route.as_str()) && (route != "default" || backend == service);
            if ours {
                seen.entry((route, backend)).or_default().push(s.clone());
            }
        }
        for (key, samples) in seen {
            let one = Span { increase: samples, seconds: span.seconds, latest: span.latest.clone() };
            per.entry(key).or_default().add(&Golden::from(&one, ROUTE_REQUESTS, ROUTE_LATENCY_BUCKET, |_| true));
        }
    }
    let order: Vec<(String, String)> = policy.iter().map(|p| (p.route.clone(), p.backend.clone())).collect();
    let mut keys = order.clone();
    keys.extend(per.keys().filter(|k| !order.contains(k)).cloned());
    keys.into_iter()
        .map(|key| {
            let g = &per[&key];
            let weight = policy.iter().find(|p| (&p.route, &p.backend) == (&key.0, &key.1)).and_then(|p| p.weight);
            RouteRow {
                route: key.0.clone(),
                service: service.to_owned(),
                backend: key.1.clone(),
                weight,
                success: g.success_ratio(),
                rps: g.rps,
                p50_ms: g.quantile_ms(0.5),
                p95_ms: g.quantile_ms(0.95),
                p99_ms: g.quantile_ms(0.99),
            }
        })
        .collect()
}

/// One row of `/api/edges`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EdgeRow {
    pub src: String,
    pub src_ns: String,
    pub dst: String,
    pub dst_ns: String,
    pub client_id: String,
    pub server_id: String,
    pub secured: bool,
    pub success: Option<f64>,
    pub rps: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// The namespace in `spiffe://TD/ns/NS/sa/SA`.
fn spiffe_namespace(id: &str) -> &str {
    id.split("/ns/").nth(1).and_then(|r| r.split('/').next()).unwrap_or("")
}

/// `/api/edges`: who calls whom. Each edge is read where the server
/// answered (its inbound edge metrics, keyed by the client's identity and
/// whether it was mTLS); the calling workload is the one with that
/// identity whose outbound edge metrics show requests to a service
/// selecting the server (several such workloads: one row, their names
/// joined by `,`; none known: `src` is empty and `src_ns` is the
/// identity's namespace). An edge is listed once its counter is non-zero;
/// its numbers are over the window.
pub fn edges(pods: &[Pod], spans: &[Option<Span>], services: &[ServicePods], namespace: Option<&str>) -> Vec<EdgeRow> {
    // Which services select each pod, by `name.namespace`.
    let mut selecting: Vec<BTreeSet<String>> = vec![BTreeSet::new(); pods.len()];
    for s in services {
        for &i in &s.pods {
            selecting[i].insert(s.name.to_string());
        }
    }
    // Outbound edges of every pod: (peer service, peer_id, tls) with a non-zero counter.
    let outbound: Vec<BTreeSet<(String, String, String)>> = spans
        .iter()
        .map(|span| {
            span.iter()
                .flat_map(|s| s.latest.iter())
                .filter(|s| s.name == EDGE_RESPONSES && is(s, "direction", "outbound") && s.value > 0.0)
                .map(|s| (label(s, "peer").to_owned(), label(s, "peer_id").to_owned(), label(s, "tls").to_owned()))
                .collect()
        })
        .collect();
    let mut rows: BTreeMap<(String, String, String, String, String, bool), Golden> = BTreeMap::new();
    for (d, span) in spans.iter().enumerate() {
        let Some(span) = span else { continue };
        let dst = &pods[d];
        let keys: BTreeSet<(String, String)> = span
            .latest
            .iter()
            .filter(|s| s.name == EDGE_RESPONSES && is(s, "direction", "inbound") && s.value > 0.0)
            .map(|s| (label(s, "peer_id").to_owned(), label(s, "tls").to_owned()))
            .collect();
        for (client_id, tls) in keys {
            let calls_dst = |c: usize| {
                outbound[c].iter().any(|(peer, peer_id, t)| {
                    selecting[d].contains(peer) && *t == tls && (tls != "true" || *peer_id == dst.identity)
                })
            };
            let mut srcs: BTreeSet<(&str, &str)> = BTreeSet::new();
            for (c, p) in pods.iter().enumerate() {
                if (client_id.is_empty() || p.identity == client_id) && calls_dst(c) {
                    srcs.insert((&p.name.namespace, &p.workload));
                }
            }
            if srcs.is_empty() && !client_id.is_empty() {
                let with_id: BTreeSet<(&str, &str)> = pods
                    .iter()
                    .filter(|p| p.identity == client_id)
                    .map(|p| (&*p.name.namespace, &*p.workload))
                    .collect();
                srcs = with_id;
            }
            let src_ns = srcs.iter().next().map_or_else(|| spiffe_namespace(&client_id).to_owned(), |s| s.0.to_owned());
            let src = srcs.iter().map(|s| s.1).collect::<Vec<_>>().join(",");
            let secured = tls == "true";
            let golden = Golden::from(span, EDGE_RESPONSES, EDGE_LATENCY_BUCKET, |s| {
                is(s, "direction", "inbound") && label(s, "peer_id") == client_id && label(s, "tls") == tls
            });
            let key = (src_ns, src, dst.name.namespace.clone(), dst.workload.clone(), client_id.clone(), secured);
            rows.entry(key).or_default().add(&golden);
        }
    }
    rows.into_iter()
        .filter(|((src_ns, _, dst_ns, ..), _)| namespace.is_none_or(|ns| ns == src_ns || ns == dst_ns))
        .map(|((src_ns, src, dst_ns, dst, client_id, secured), g)| {
            let server_id = pods
                .iter()
                .find(|p| p.name.namespace == dst_ns && p.workload == dst)
                .filter(|_| secured)
                .map(|p| p.identity.clone())
                .unwrap_or_default();
            EdgeRow {
                src,
                src_ns,
                dst,
                dst_ns,
                client_id,
                server_id,
                secured,
                success: g.success_ratio(),
                rps: g.rps,
                p50_ms: g.quantile_ms(0.5),
                p99_ms: g.quantile_ms(0.99),
            }
        })
        .collect()
}

/// One line of `/api/series`: values per point, `None` where no data.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SeriesLine {
    pub rps: Vec<Option<f64>>,
    pub success: Vec<Option<f64>>,
    pub p50_ms: Vec<Option<f64>>,
    pub p95_ms: Vec<Option<f64>>,
    pub p99_ms: Vec<Option<f64>>,
}

/// `/api/series`: the inbound golden metrics of each group of pods (`all`,
/// then one per version…) at points `start + step·i` (i = 1..=n), each
/// over the step before it. Returns the points' times and the lines.
pub fn series(
    histories: &[&[Snapshot]],
    groups: &[(String, Vec<usize>)],
    start: f64,
    step: f64,
    n: usize,
) -> (Vec<f64>, BTreeMap<String, SeriesLine>) {
    let times: Vec<f64> = (1..=n).map(|i| start + step * i as f64).collect();
    // For each pod, the scrape at or before each point (index 0 = start).
    let at = |h: &[Snapshot], t: f64| h.iter().rposition(|s| s.at <= t);
    let mut lines = BTreeMap::new();
    for (name, members) in groups {
        let mut line = SeriesLine::default();
        for (i, &t) in times.iter().enumerate() {
            let t0 = if i == 0 { start } else { times[i - 1] };
            let mut golden = Golden::default();
            let mut any = false;
            for &m in members {
                let h = histories[m];
                let (Some(b), Some(e)) = (at(h, t0), at(h, t)) else { continue };
                if b == e {
                    continue;
                }
                let span = Span {
                    increase: increase(&h[b].samples, &h[e].samples),
                    seconds: h[e].at - h[b].at,
                    latest: h[e].samples.clone(),
                };
                golden.add(&inbound(&span));
                any = true;
            }
            line.rps.push(any.then_some(golden.rps));
            line.success.push(golden.success_ratio());
            line.p50_ms.push(golden.quantile_ms(0.5));
            line.p95_ms.push(golden.quantile_ms(0.95));
            line.p99_ms.push(golden.quantile_ms(0.99));
        }
        lines.insert(name.clone(), line);
    }
    (times, lines)
}

#[cfg(test)]
mod tests;
