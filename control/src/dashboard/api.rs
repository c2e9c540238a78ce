//! The JSON API: query parameters in, the aggregation functions of
//! `telemetry::aggregate` over the store's histories, JSON out.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;
use serde_json::{Value, json};

use crate::index::{NsName, State, Target};
use crate::telemetry::aggregate::{self, Pod, PolicyBackend, ServicePods, Snapshot, Span};
use crate::telemetry::{self, Telemetry};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
        }
    }
}

/// The query string, decoded.
#[derive(Debug, Default, Clone)]
pub struct Query(pub BTreeMap<String, String>);

impl Query {
    pub fn parse(query: &str) -> Query {
        Query(form_urlencoded::parse(query.as_bytes()).into_owned().collect())
    }

    /// A non-empty parameter.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// `window` as seconds: default `default`, at most the retention.
    fn window(&self, t: &Telemetry, default: Duration) -> Result<f64, ApiError> {
        let window = match self.get("window") {
            None => default,
            Some(w) => humantime::parse_duration(w)
                .map_err(|e| ApiError::BadRequest(format!("window={w:?}: {e} (e.g. 30s, 10m)")))?,
        };
        if window.is_zero() {
            return Err(ApiError::BadRequest("window must be more than 0s".into()));
        }
        Ok(window.min(t.settings.retention).as_secs_f64())
    }

    /// `NS/NAME`, or `NAME` in `namespace` (default `default`).
    pub fn ns_name(&self, key: &str) -> Result<Option<NsName>, ApiError> {
        let Some(v) = self.get(key) else { return Ok(None) };
        let (ns, name) = match v.split_once('/') {
            Some((ns, name)) => (ns, name),
            None => (self.get("namespace").unwrap_or("default"), v),
        };
        if ns.is_empty() || name.is_empty() || name.contains('/') {
            return Err(ApiError::BadRequest(format!("{key}={v:?}: expected NAMESPACE/NAME or NAME")));
        }
        Ok(Some(NsName::new(ns, name)))
    }
}

/// Every pod the index knows with its history (empty when never scraped).
struct Pods {
    state: std::sync::Arc<State>,
    pods: Vec<Pod>,
    histories: Vec<Vec<Snapshot>>,
}

impl Pods {
    fn load(t: &Telemetry) -> Pods {
        let state = t.index.state();
        let pods = telemetry::pods(&state, &t.settings.extra);
        let view = t.store.view();
        let mut by_name: BTreeMap<NsName, Vec<Snapshot>> =
            view.entries.into_iter().map(|e| (e.pod.name, e.history.into_iter().collect())).collect();
        let histories = pods.iter().map(|p| by_name.remove(&p.name).unwrap_or_default()).collect();
        Pods { state, pods, histories }
    }

    fn spans(&self, window: f64) -> Vec<Option<Span>> {
        let end = telemetry::now();
        self.histories.iter().map(|h| aggregate::span(h, end, window)).collect()
    }

    fn services(&self) -> Vec<ServicePods> {
        telemetry::services(&self.state, &self.pods)
    }
}

fn to_rows<T: serde::Serialize>(rows: &[T]) -> Value {
    serde_json::to_value(rows).unwrap_or_default()
}

/// `GET /api/stat?by=workload|service&namespace=NS&window=30s`
pub fn stat(t: &Telemetry, q: &Query) -> Result<Value, ApiError> {
    let window = q.window(t, Duration::from_secs(30))?;
    let p = Pods::load(t);
    let spans = p.spans(window);
    let ns = q.get("namespace");
    let rows = match q.get("by").unwrap_or("workload") {
        "workload" | "workloads" => aggregate::stat_workloads(&p.pods, &spans, ns),
        "service" | "services" => aggregate::stat_services(&p.services(), &p.pods, &spans, ns),
        other => return Err(ApiError::BadRequest(format!("by={other:?}: expected workload or service"))),
    };
    Ok(json!({ "window_seconds": window, "rows": to_rows(&rows) }))
}

/// The route rules and backends (with weights) of `service`'s outbound
/// policy, over all its ports, as a client in its namespace gets them.
pub fn policy_backends(state: &State, service: &NsName) -> Option<Vec<PolicyBackend>> {
    let svc = state.services.get(service)?;
    let mut out: Vec<PolicyBackend> = Vec::new();
    for port in &svc.ports {
        let target = Target::Name { host: service.to_string(), port: port.port };
        let policy = state.outbound(&target, &service.namespace);
        for route in policy.routes.iter().filter(|r| !r.name.is_empty()) {
            for b in &route.backends {
                let backend =
                    PolicyBackend { route: route.name.clone(), backend: b.service.clone(), weight: Some(b.weight) };
                if !out.contains(&backend) {
                    out.push(backend);
                }
            }
        }
    }
    Some(out)
}

/// `GET /api/routes?service=NS/NAME&window=30s`
pub fn routes(t: &Telemetry, q: &Query) -> Result<Value, ApiError> {
    let window = q.window(t, Duration::from_secs(30))?;
    let service = q.ns_name("service")?.ok_or_else(|| ApiError::BadRequest("service=NS/NAME is needed".into()))?;
    let p = Pods::load(t);
    let policy = policy_backends(&p.state, &service)
        .ok_or_else(|| ApiError::NotFound(format!("no service {}/{}", service.namespace, service.name)))?;
    let rows = aggregate::routes(&service.to_string(), &policy, &p.spans(window));
    Ok(json!({ "window_seconds": window, "rows": to_rows(&rows) }))
}

/// `GET /api/edges?namespace=NS&window=30s`
pub fn edges(t: &Telemetry, q: &Query) -> Result<Value, ApiError> {
    let window = q.window(t, Duration::from_secs(30))?;
    let p = Pods::load(t);
    let rows = aggregate::edges(&p.pods, &p.spans(window), &p.services(), q.get("namespace"));
    Ok(json!({ "window_seconds": window, "rows": to_rows(&rows) }))
}

/// `GET /api/series?service=NS/NAME|workload=NS/NAME&window=10m`
pub fn series(t: &Telemetry, q: &Query) -> Result<Value, ApiError> {
    let window = q.window(t, Duration::from_secs(600))?;
    let p = Pods::load(t);
    let members: Vec<usize> = match (q.ns_name("service")?, q.ns_name("workload")?) {
        (Some(s), None) => {
            p.services()
                .into_iter()
                .find(|x| x.name == s)
                .ok_or_else(|| ApiError::NotFound(format!("no service {}/{}", s.namespace, s.name)))?
                .pods
        }
        (None, Some(w)) => {
            let m: Vec<usize> = (0..p.pods.len())
                .filter(|&i| p.pods[i].name.namespace == w.namespace && p.pods[i].workload == w.name)
                .collect();
            if m.is_empty() {
                return Err(ApiError::NotFound(format!("no workload {}/{}", w.namespace, w.name)));
            }
            m
        }
        _ => return Err(ApiError::BadRequest("give one of service=NS/NAME or workload=NS/NAME".into())),
    };
    let mut groups = vec![("all".to_owned(), members.clone())];
    let mut versions: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for &i in &members {
        versions.entry(p.pods[i].version()).or_default().push(i);
    }
    if versions.len() > 1 {
        groups.extend(versions.into_iter().map(|(v, m)| (if v.is_empty() { "none" } else { v }.to_owned(), m)));
    }
    let step = if t.settings.interval.is_zero() { 5.0 } else { t.settings.interval.as_secs_f64() };
    let n = ((window / step).round() as usize).clamp(1, 2000);
    let end = telemetry::now();
    let start = end - step * n as f64;
    let histories: Vec<&[Snapshot]> = p.histories.iter().map(Vec::as_slice).collect();
    let (times, lines) = aggregate::series(&histories, &groups, start, step, n);
    Ok(json!({ "step_seconds": step, "t": times, "series": lines }))
}

/// `GET /api/workloads`
pub fn workloads(t: &Telemetry) -> Value {
    let p = Pods::load(t);
    let view = t.store.view();
    let status: BTreeMap<&NsName, (Option<f64>, Option<&str>)> =
        view.entries.iter().map(|e| (&e.pod.name, (e.last_scrape, e.last_error.as_deref()))).collect();
    let rows: Vec<Value> = p
        .pods
        .iter()
        .map(|pod| {
            let (last, error) = status.get(&pod.name).copied().unwrap_or((None, None));
            json!({
                "namespace": pod.name.namespace,
                "name": pod.name.name,
                "workload": pod.workload,
                "labels": pod.labels,
                "address": pod.address,
                "meshed": pod.meshed,
                "identity": pod.identity,
                "last_scrape": last,
                "error": error,
            })
        })
        .collect();
    json!({ "workloads": rows })
}

/// `GET /api/prometheus/sd`: Prometheus `http_sd_configs`, one target per
/// meshed pod.
pub fn prometheus_sd(t: &Telemetry) -> Value {
    let p = Pods::load(t);
    let services = p.services();
    let targets: Vec<Value> = p
        .pods
        .iter()
        .enumerate()
        .filter(|(_, pod)| pod.meshed)
        .map(|(i, pod)| {
            let mut labels = json!({
                "namespace": pod.name.namespace,
                "workload": pod.workload,
                "pod": pod.name.name,
                "version": pod.version(),
            });
            let selecting: BTreeSet<&str> =
                services.iter().filter(|s| s.pods.contains(&i)).map(|s| s.name.name.as_str()).collect();
            if let Some(first) = selecting.first() {
                labels["service"] = (*first).into();
            }
            json!({
                "targets": [SocketAddr::new(pod.address, t.settings.admin_port).to_string()],
                "labels": labels,
            })
        })
        .collect();
    Value::Array(targets)
}
