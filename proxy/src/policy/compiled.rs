//! One [`api::OutboundPolicy`] version, compiled for the request path.
//!
//! Compiled once when the policy arrives (route table, splits, filters,
//! retry conditions), then shared by every request that starts under this
//! version: a request holds its `Arc<CompiledPolicy>` to the end, so a
//! policy change never alters a request in flight.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use weft_api::policy as api;

use super::budget::RetryBudget;
use super::circuit::CircuitConfig;
use super::fault::FaultPolicy;
use super::filters::Filters;
use super::retry::RetryPolicy;
use super::route::RouteTable;
use super::split::Split;
use crate::metrics::RouteStats;
use crate::transport::target::{NameTarget, Target};

/// How a route's requests pick an endpoint.
#[derive(Clone, Debug, PartialEq)]
pub enum Balance {
    /// Power of two choices over peak EWMA (the default).
    Ewma,
    RoundRobin,
    LeastRequest,
    /// Sticky by a header's or a cookie's value; requests without it are
    /// balanced by EWMA.
    Hash(api::LoadBalancer),
}

impl Balance {
    fn from_api(lb: Option<&api::LoadBalancer>) -> Self {
        use api::load_balancer::Kind;
        match lb.map(|l| Kind::try_from(l.kind)) {
            Some(Ok(Kind::RoundRobin)) => Self::RoundRobin,
            Some(Ok(Kind::LeastRequest)) => Self::LeastRequest,
            Some(Ok(Kind::ConsistentHash)) => lb.map_or(Self::Ewma, |l| Self::Hash(l.clone())),
            _ => Self::Ewma,
        }
    }
}

/// A backend of a route: a service port, with its own filters.
#[derive(Clone, Debug)]
pub struct BackendRef {
    /// `name.namespace`, as the control plane names services.
    pub service: String,
    pub port: u16,
    /// The route's parent service itself (no other discovery needed).
    pub is_parent: bool,
    /// For metrics: `name.namespace:port`.
    pub label: Arc<str>,
    pub filters: Filters,
    /// What to ask discovery for; `None` when the name is not a DNS name.
    pub discovery: Option<Target>,
    /// This (route, backend)'s request counters, looked up once.
    pub stats: OnceLock<Arc<RouteStats>>,
}

impl BackendRef {
    /// The discovery target: `name.namespace:port`.
    pub fn target(&self) -> &str {
        &self.label
    }
}

/// Timeouts of one route.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timeouts {
    /// The whole request, retries included, until the response headers.
    pub request: Option<Duration>,
    /// Each attempt: the shorter of `backendRequest` and `perTryTimeout`.
    pub per_try: Option<Duration>,
    /// A new connection's TCP (and TLS) setup; `None`: the proxy's own.
    pub connect: Option<Duration>,
    /// The longest a response body (HTTP) or a connection (opaque TCP,
    /// tunnels) may go without a byte; `None`: no limit on a response
    /// body, the proxy's `--tcp-idle-timeout` on a connection.
    pub idle: Option<Duration>,
}

/// What one route (or the service without routes) does with a request.
#[derive(Clone, Debug)]
pub struct RouteRuntime {
    /// For metrics and logs; empty without routes.
    pub name: Arc<str>,
    pub backends: Vec<BackendRef>,
    pub split: Split,
    pub filters: Filters,
    pub timeouts: Timeouts,
    pub retry: RetryPolicy,
    /// Shared by every request of this route under this policy version.
    pub budget: Arc<RetryBudget>,
    pub fault: Option<FaultPolicy>,
    pub balance: Balance,
}

/// A compiled outbound policy.
#[derive(Debug)]
pub struct CompiledPolicy {
    pub version: u64,
    /// The service it is for (`name.namespace`); empty when none.
    pub service: String,
    /// The resources it was made from (`Kind/namespace/name`), for `/config`.
    pub sources: Vec<String>,
    /// Empty: the service has no routes and every request takes `default`.
    pub routes: RouteTable,
    /// Index-aligned with `routes.routes()`.
    pub route_runtime: Vec<RouteRuntime>,
    pub default: RouteRuntime,
    pub circuit: Option<CircuitConfig>,
    /// What did not compile (logged once, shown on `/config`).
    pub errors: Vec<String>,
}

fn ms(v: u64) -> Option<Duration> {
    (v > 0).then(|| Duration::from_millis(v))
}

impl CompiledPolicy {
    pub fn compile(policy: &api::OutboundPolicy) -> Self {
        let mut errors = Vec::new();
        let parent_port = u16::try_from(policy.port).unwrap_or(0);
        let (routes, route_errors) = RouteTable::compile(policy.routes.clone());
        errors.extend(route_errors.iter().map(ToString::to_string));
        let route_runtime = routes
            .routes()
            .iter()
            .map(|r| {
                runtime(
                    &r.name,
                    &r.backends,
                    &r.filters,
                    r.timeouts.as_ref().or(policy.timeouts.as_ref()),
                    r.retry.as_ref().or(policy.retry.as_ref()),
                    r.fault.as_ref().or(policy.fault.as_ref()),
                    r.load_balancer.as_ref().or(policy.load_balancer.as_ref()),
                    (&policy.service, parent_port),
                    &mut errors,
                )
            })
            .collect();
        let parent = [api::Backend { service: policy.service.clone(), port: policy.port, weight: 1, filters: vec![] }];
        let default = runtime(
            "",
            &parent,
            &[],
            policy.timeouts.as_ref(),
            policy.retry.as_ref(),
            policy.fault.as_ref(),
            policy.load_balancer.as_ref(),
            (&policy.service, parent_port),
            &mut errors,
        );
        let circuit = policy.circuit_breaker.as_ref().and_then(CircuitConfig::from_api);
        Self {
            version: policy.version,
            service: policy.service.clone(),
            sources: policy.sources.clone(),
            routes,
            route_runtime,
            default,
            circuit,
            errors,
        }
    }

    /// For destinations without a policy (no control plane, or not a mesh
    /// service): the proxy's own request timeout and no retries — the one
    /// address the app chose has no other endpoint to retry on, and a
    /// retried connect timeout would only triple the wait.
    pub fn fallback(request_timeout: Option<Duration>) -> Self {
        let (routes, _) = RouteTable::compile(Vec::new());
        let mut retry = RetryPolicy::default();
        retry.attempts = 0;
        Self {
            version: 0,
            service: String::new(),
            sources: Vec::new(),
            routes,
            route_runtime: Vec::new(),
            default: RouteRuntime {
                name: "".into(),
                backends: Vec::new(),
                split: Split::new([1]),
                filters: Filters::default(),
                timeouts: Timeouts { request: request_timeout, per_try: None, connect: None, idle: None },
                budget: Arc::new(RetryBudget::new(&retry.budget, Instant::now())),
                retry,
                fault: None,
                balance: Balance::Ewma,
            },
            circuit: None,
            errors: Vec::new(),
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn runtime(
    name: &str,
    backends: &[api::Backend],
    filters: &[api::Filter],
    timeouts: Option<&api::Timeouts>,
    retry: Option<&api::Retry>,
    fault: Option<&api::Fault>,
    lb: Option<&api::LoadBalancer>,
    (parent, parent_port): (&str, u16),
    errors: &mut Vec<String>,
) -> RouteRuntime {
    let (filters, filter_errors) = Filters::compile(filters);
    errors.extend(filter_errors.iter().map(|e| format!("route `{name}`: {e}")));
    let api_backends = backends;
    let backends: Vec<BackendRef> = api_backends
        .iter()
        .map(|b| {
            let port = u16::try_from(b.port).ok().filter(|p| *p > 0).unwrap_or(parent_port);
            let (filters, filter_errors) = Filters::compile(&b.filters);
            errors.extend(filter_errors.iter().map(|e| format!("route `{name}` backend `{}`: {e}", b.service)));
            BackendRef {
                service: b.service.clone(),
                port,
                is_parent: b.service == parent && port == parent_port,
                label: format!("{}:{port}", b.service).into(),
                filters,
                discovery: NameTarget::new(&b.service, port).map(Target::Name),
                stats: OnceLock::new(),
            }
        })
        .collect();
    let (retry, retry_errors) = retry.map_or_else(|| (RetryPolicy::default(), Vec::new()), RetryPolicy::from_api);
    errors.extend(retry_errors.iter().map(|e| format!("route `{name}`: {e}")));
    let per_try = match (retry.per_try_timeout, timeouts.and_then(|t| ms(t.backend_request_ms))) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    RouteRuntime {
        name: name.into(),
        split: Split::of_backends(api_backends),
        backends,
        filters,
        timeouts: Timeouts {
            request: timeouts.and_then(|t| ms(t.request_ms)),
            per_try,
            connect: timeouts.and_then(|t| ms(t.connect_ms)),
            idle: timeouts.and_then(|t| ms(t.idle_ms)),
        },
        budget: Arc::new(RetryBudget::new(&retry.budget, Instant::now())),
        retry,
        fault: fault.and_then(FaultPolicy::new),
        balance: Balance::from_api(lb),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(service: &str, port: u32, weight: u32) -> api::Backend {
        api::Backend { service: service.into(), port, weight, filters: vec![] }
    }

    #[test]
    fn routes_inherit_the_service_settings_and_know_their_parent() {
        let policy = api::OutboundPolicy {
            version: 7,
            service: "web.default".into(),
            port: 80,
            routes: vec![api::HttpRoute {
                name: "default/split#0".into(),
                matches: vec![api::RouteMatch::default()],
                backends: vec![backend("web.default", 0, 90), backend("web-v2.default", 8080, 10)],
                timeouts: Some(api::Timeouts { request_ms: 200, backend_request_ms: 50, ..Default::default() }),
                ..Default::default()
            }],
            timeouts: Some(api::Timeouts { request_ms: 15_000, idle_ms: 30_000, ..Default::default() }),
            retry: Some(api::Retry {
                attempts: 3,
                retry_on: vec!["5xx".into()],
                per_try_timeout_ms: 80,
                ..Default::default()
            }),
            ..Default::default()
        };
        let c = CompiledPolicy::compile(&policy);
        assert!(c.errors.is_empty(), "{:?}", c.errors);
        assert_eq!(c.version, 7);
        let r = &c.route_runtime[0];
        assert_eq!(&*r.name, "default/split#0");
        let targets: Vec<(&str, bool)> = r.backends.iter().map(|b| (b.target(), b.is_parent)).collect();
        assert_eq!(targets, [("web.default:80", true), ("web-v2.default:8080", false)]);
        assert_eq!(
            r.timeouts,
            Timeouts {
                request: Some(Duration::from_millis(200)),
                per_try: Some(Duration::from_millis(50)),
                connect: None,
                idle: None,
            }
        );
        assert_eq!(r.retry.attempts, 3, "the service's retry applies to a route without its own");
        assert_eq!(r.split.total(), 100);
        assert_eq!(c.default.timeouts.request, Some(Duration::from_secs(15)));
        assert_eq!(c.default.timeouts.per_try, Some(Duration::from_millis(80)));
        assert_eq!(c.default.timeouts.idle, Some(Duration::from_secs(30)));
        assert_eq!(c.default.backends[0].target(), "web.default:80");
        assert!(c.default.backends[0].is_parent);
        assert_eq!(c.default.balance, Balance::Ewma);
    }
}
