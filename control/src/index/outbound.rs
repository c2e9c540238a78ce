//! Outbound policy: how a client's proxy treats requests to a target.
//!
//! Precedence, most specific first (each field on its own, so a route
//! policy that sets only `retries.attempts` keeps the service's timeouts):
//!
//! 1. the HTTPRoute rule's own `timeouts` / `retry`;
//! 2. TrafficPolicies targeting that HTTPRoute;
//! 3. TrafficPolicies targeting the Service;
//! 4. TrafficPolicies targeting the Service's Namespace;
//! 5. TrafficPolicies targeting the Mesh;
//! 6. the built-in defaults ([`super::defaults`]).
//!
//! Two policies at the same level: the one whose `namespace/name` sorts
//! first wins (Gateway API breaks ties by creation time, then name; files
//! have no creation time).
//!
//! Routes (GAMMA): HTTPRoutes whose `parentRefs` name the Service (and the
//! port, if they give one). A route in the client's own namespace that is
//! not the Service's (a consumer route) replaces the Service's own
//! (producer) routes for that client. Every rule's every match becomes one
//! [`api::HttpRoute`] entry, ordered by the Gateway API precedence (exact
//! path, then longest prefix, then method, then most headers, then most
//! query parameters, then route name, then rule order), so the proxy can
//! take the first that matches. Each entry carries its fully merged
//! timeouts/retry/load balancer/fault: the proxy never merges.

use std::collections::BTreeSet;
use std::sync::Arc;

use weft_api::policy as api;

use super::model::{Service, ServicePort};
use super::{State, Target, defaults};
use crate::policy::httproute::{
    FilterType, HeaderModifier, HttpRoute, HttpRouteFilter, HttpRouteMatch, HttpRouteRetry, HttpRouteTimeouts,
    PathMatch, PathMatchType, PathModifier, PathModifierType, Scheme, ValueMatchType,
};
use crate::policy::traffic::{LbType, TargetKind, TrafficPolicy, TrafficPolicySpec};
use crate::policy::{Kind, Resource, ResourceId};

/// Merged client-side settings at one level of precedence.
#[derive(Clone, Debug, PartialEq)]
struct Effective {
    timeouts: api::Timeouts,
    retry: api::Retry,
    load_balancer: api::LoadBalancer,
    circuit_breaker: api::CircuitBreaker,
    fault: api::Fault,
}

impl Effective {
    fn defaults() -> Self {
        Self {
            timeouts: defaults::timeouts(),
            retry: defaults::retry(),
            load_balancer: defaults::load_balancer(),
            circuit_breaker: defaults::circuit_breaker(),
            fault: defaults::fault(),
        }
    }

    /// Overrides every field that `spec` sets.
    fn apply(&mut self, spec: &TrafficPolicySpec) {
        if let Some(t) = &spec.timeouts {
            set_ms(&mut self.timeouts.request_ms, t.request);
            set_ms(&mut self.timeouts.backend_request_ms, t.backend_request);
            set_ms(&mut self.timeouts.connect_ms, t.connect);
            set_ms(&mut self.timeouts.idle_ms, t.idle);
        }
        if let Some(r) = &spec.retries {
            let out = &mut self.retry;
            if let Some(a) = r.attempts {
                out.attempts = a.as_u32();
            }
            if let Some(on) = &r.retry_on {
                out.retry_on = on.iter().map(|c| c.0.clone()).collect();
            }
            set_ms(&mut out.per_try_timeout_ms, r.per_try_timeout);
            if let Some(b) = &r.backoff {
                set_ms(&mut out.backoff_base_ms, b.base);
                set_ms(&mut out.backoff_max_ms, b.max);
                if let Some(j) = b.jitter {
                    out.backoff_jitter = j.0;
                }
            }
            if let Some(b) = &r.budget {
                let budget = out.budget.get_or_insert_with(Default::default);
                if let Some(v) = b.ratio {
                    budget.ratio = v.0;
                }
                set_ms(&mut budget.window_ms, b.window);
                if let Some(v) = b.min_retries_per_second {
                    budget.min_retries_per_second = v.as_u32();
                }
            }
            if let Some(v) = r.allow_non_idempotent {
                out.allow_non_idempotent = v;
            }
            if let Some(v) = r.max_body_bytes {
                out.max_body_bytes = v.as_u32();
            }
            // A base raised above the inherited max (or the reverse) would
            // be refused if written in one policy; keep the pair coherent.
            if out.backoff_max_ms < out.backoff_base_ms {
                out.backoff_max_ms = out.backoff_base_ms;
            }
        }
        if let Some(cb) = &spec.circuit_breaker {
            let out = &mut self.circuit_breaker;
            if let Some(v) = cb.consecutive_failures {
                out.consecutive_failures = v.as_u32();
            }
            set_ms(&mut out.base_ejection_ms, cb.base_ejection);
            set_ms(&mut out.max_ejection_ms, cb.max_ejection);
            if let Some(v) = cb.min_success_rate {
                out.min_success_rate = v.0;
            }
            set_ms(&mut out.window_ms, cb.window);
            if out.max_ejection_ms < out.base_ejection_ms {
                out.max_ejection_ms = out.base_ejection_ms;
            }
        }
        if let Some(lb) = &spec.load_balancer {
            // One unit: hashOn means nothing without its type.
            use api::load_balancer::Kind as K;
            let kind = match lb.kind {
                LbType::Ewma => K::Ewma,
                LbType::RoundRobin => K::RoundRobin,
                LbType::LeastRequest => K::LeastRequest,
                LbType::ConsistentHash => K::ConsistentHash,
            };
            let hash = lb.hash_on.as_ref();
            self.load_balancer = api::LoadBalancer {
                kind: kind as i32,
                hash_header: hash.and_then(|h| h.header.as_ref()).map(|h| h.0.clone()).unwrap_or_default(),
                hash_cookie: hash.and_then(|h| h.cookie.clone()).unwrap_or_default(),
            };
        }
        if let Some(f) = &spec.faults {
            if let Some(d) = &f.delay {
                self.fault.delay_percent = d.percent.as_u32();
                self.fault.delay_ms = d.fixed_delay.as_millis();
            }
            if let Some(a) = &f.abort {
                self.fault.abort_percent = a.percent.as_u32();
                self.fault.abort_status = a.http_status.as_u32();
            }
        }
    }

    fn apply_route_timeouts(&mut self, t: &HttpRouteTimeouts) {
        set_ms(&mut self.timeouts.request_ms, t.request);
        set_ms(&mut self.timeouts.backend_request_ms, t.backend_request);
    }

    /// GEP-1731 retry: `codes` replace the conditions, plus connection
    /// failures (the GEP says implementations SHOULD retry those too).
    fn apply_route_retry(&mut self, r: &HttpRouteRetry) {
        if !r.codes.is_empty() {
            let mut on: Vec<String> = r.codes.iter().map(|c| c.get().to_string()).collect();
            on.push("connect-failure".into());
            self.retry.retry_on = on;
        }
        if let Some(a) = r.attempts {
            self.retry.attempts = a.as_u32();
        }
        if let Some(b) = r.backoff {
            self.retry.backoff_base_ms = b.as_millis();
            if self.retry.backoff_max_ms < self.retry.backoff_base_ms {
                self.retry.backoff_max_ms = self.retry.backoff_base_ms;
            }
        }
    }
}

fn set_ms(field: &mut u64, v: Option<crate::policy::GwDuration>) {
    if let Some(v) = v {
        *field = v.as_millis();
    }
}

/// Where a TrafficPolicy applies, for the precedence walk.
fn traffic_policies(state: &State) -> impl Iterator<Item = (&ResourceId, &Arc<TrafficPolicy>)> {
    state.policies.iter().filter_map(|(id, r)| match r {
        Resource::TrafficPolicy(p) => Some((id, p)),
        _ => None,
    })
}

/// TrafficPolicies at one level, applied so that the first by name wins.
fn apply_level<'a>(
    eff: &mut Effective,
    sources: &mut BTreeSet<String>,
    policies: impl DoubleEndedIterator<Item = (&'a ResourceId, &'a Arc<TrafficPolicy>)>,
) {
    // `policies` comes sorted by id; apply in reverse so the first sorts last.
    for (id, p) in policies.rev() {
        eff.apply(&p.spec);
        sources.insert(id.to_string());
    }
}

fn targets(p: &TrafficPolicy, kind: TargetKind, namespace: &str, name: Option<&str>) -> bool {
    let t = &p.spec.target_ref;
    t.kind == kind
        && (kind == TargetKind::Mesh || p.metadata.namespace.0 == namespace)
        && t.name.as_ref().map(|n| n.0.as_str()) == name
}

impl State {
    /// The effective settings for a Service (levels 3–6), or for a
    /// non-service target (mesh and defaults only).
    fn service_effective(&self, svc: Option<&Service>, sources: &mut BTreeSet<String>) -> Effective {
        let mut eff = Effective::defaults();
        let tps: Vec<_> = traffic_policies(self).collect();
        apply_level(&mut eff, sources, tps.iter().copied().filter(|(_, p)| targets(p, TargetKind::Mesh, "", None)));
        if let Some(svc) = svc {
            let ns = svc.name.namespace.as_str();
            apply_level(
                &mut eff,
                sources,
                tps.iter().copied().filter(|(_, p)| targets(p, TargetKind::Namespace, ns, Some(ns))),
            );
            apply_level(
                &mut eff,
                sources,
                tps.iter().copied().filter(|(_, p)| targets(p, TargetKind::Service, ns, Some(&svc.name.name))),
            );
        }
        eff
    }

    /// HTTPRoutes attached to this Service port that apply to a client in
    /// `asker_ns`: its consumer routes if it has any, else the producer's.
    pub fn routes_for(&self, svc: &Service, port: &ServicePort, asker_ns: &str) -> Vec<&Arc<HttpRoute>> {
        let attached: Vec<&Arc<HttpRoute>> = self
            .policies
            .values()
            .filter_map(|r| match r {
                Resource::HttpRoute(route) if route_attaches(route, svc, port) => Some(route),
                _ => None,
            })
            .collect();
        let svc_ns = svc.name.namespace.as_str();
        let consumer: Vec<_> = attached
            .iter()
            .copied()
            .filter(|r| r.metadata.namespace.0 != svc_ns && r.metadata.namespace.0 == asker_ns)
            .collect();
        if !consumer.is_empty() {
            return consumer;
        }
        attached.into_iter().filter(|r| r.metadata.namespace.0 == svc_ns).collect()
    }

    /// Answers `Policy.WatchOutbound(target)` for a client in `asker_ns`.
    pub fn outbound(&self, target: &Target, asker_ns: &str) -> api::OutboundPolicy {
        let mut sources = BTreeSet::new();
        let Some((svc, port)) = self.service_for(target, asker_ns) else {
            let eff = self.service_effective(None, &mut sources);
            return api::OutboundPolicy {
                version: self.version,
                service: String::new(),
                port: u32::from(target.port()),
                routes: Vec::new(),
                timeouts: Some(eff.timeouts),
                retry: Some(eff.retry),
                load_balancer: Some(eff.load_balancer),
                circuit_breaker: Some(eff.circuit_breaker),
                fault: Some(eff.fault),
                sources: sources.into_iter().collect(),
            };
        };
        let eff = self.service_effective(Some(svc), &mut sources);
        let asker_ns = if asker_ns.is_empty() { crate::policy::DEFAULT_NAMESPACE } else { asker_ns };
        let mut entries: Vec<(MatchRank, api::HttpRoute)> = Vec::new();
        for route in self.routes_for(svc, port, asker_ns) {
            let route_ns = route.metadata.namespace.0.as_str();
            let route_name = route.metadata.name.0.as_str();
            sources.insert(ResourceId::new(Kind::HttpRoute, route_ns, route_name).to_string());
            let mut route_eff = eff.clone();
            let route_tps: Vec<_> = traffic_policies(self)
                .filter(|(_, p)| targets(p, TargetKind::HttpRoute, route_ns, Some(route_name)))
                .collect();
            apply_level(&mut route_eff, &mut sources, route_tps.into_iter());
            let default_rule;
            let rules = if route.spec.rules.is_empty() {
                default_rule = [Default::default()];
                &default_rule[..]
            } else {
                &route.spec.rules[..]
            };
            for (i, rule) in rules.iter().enumerate() {
                let mut rule_eff = route_eff.clone();
                if let Some(t) = &rule.timeouts {
                    rule_eff.apply_route_timeouts(t);
                }
                if let Some(r) = &rule.retry {
                    rule_eff.apply_route_retry(r);
                }
                let backends = if rule.backend_refs.is_empty() {
                    if rule.has_redirect() {
                        Vec::new()
                    } else {
                        // Mesh profile: no backendRefs means the parent Service itself.
                        vec![api::Backend {
                            service: svc.name.to_string(),
                            port: u32::from(port.port),
                            weight: 1,
                            filters: Vec::new(),
                        }]
                    }
                } else {
                    rule.backend_refs
                        .iter()
                        .map(|b| api::Backend {
                            service: format!("{}.{}", b.name.0, b.namespace.as_ref().map_or(route_ns, |n| &n.0)),
                            port: b.port.map_or(0, |p| p.as_u32()),
                            weight: b.weight.map_or(1, |w| w.as_u32()),
                            filters: b.filters.iter().filter_map(|f| filter(f, route_ns)).collect(),
                        })
                        .collect()
                };
                let filters: Vec<api::Filter> = rule.filters.iter().filter_map(|f| filter(f, route_ns)).collect();
                let default_match = [HttpRouteMatch::default()];
                let matches = if rule.matches.is_empty() { &default_match[..] } else { &rule.matches[..] };
                for (j, m) in matches.iter().enumerate() {
                    let rank = MatchRank::new(m, route_ns, route_name, i, j);
                    entries.push((
                        rank,
                        api::HttpRoute {
                            name: format!("{route_ns}/{route_name}#{i}"),
                            matches: vec![route_match(m)],
                            backends: backends.clone(),
                            filters: filters.clone(),
                            timeouts: Some(rule_eff.timeouts),
                            retry: Some(rule_eff.retry.clone()),
                            load_balancer: Some(rule_eff.load_balancer.clone()),
                            fault: Some(rule_eff.fault),
                        },
                    ));
                }
            }
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        api::OutboundPolicy {
            version: self.version,
            service: svc.name.to_string(),
            port: u32::from(port.port),
            routes: entries.into_iter().map(|(_, r)| r).collect(),
            timeouts: Some(eff.timeouts),
            retry: Some(eff.retry),
            load_balancer: Some(eff.load_balancer),
            circuit_breaker: Some(eff.circuit_breaker),
            fault: Some(eff.fault),
            sources: sources.into_iter().collect(),
        }
    }
}

/// Whether a route's parentRefs name this Service and port.
pub(crate) fn route_attaches(route: &HttpRoute, svc: &Service, port: &ServicePort) -> bool {
    route.spec.parent_refs.iter().any(|p| {
        let ns = p.namespace.as_ref().map_or(route.metadata.namespace.0.as_str(), |n| n.0.as_str());
        p.name.0 == svc.name.name
            && ns == svc.name.namespace
            && p.port.is_none_or(|pp| pp.get() == u64::from(port.port))
            && p.section_name.as_ref().is_none_or(|s| port.name.as_ref() == Some(s))
    })
}

/// Gateway API match precedence; smaller sorts first.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct MatchRank {
    /// Exact 0, regular expression 1, prefix 2 (regex placement is
    /// implementation-specific; Linkerd puts it between the two).
    path_kind: u8,
    /// Longer paths first.
    path_len: std::cmp::Reverse<usize>,
    /// A method match first.
    no_method: bool,
    headers: std::cmp::Reverse<usize>,
    query: std::cmp::Reverse<usize>,
    route: (String, String),
    rule: usize,
    index: usize,
}

impl MatchRank {
    fn new(m: &HttpRouteMatch, ns: &str, name: &str, rule: usize, index: usize) -> Self {
        let (kind, len) = match &m.path {
            None => (2, 1),
            Some(PathMatch { kind: PathMatchType::Exact, value }) => (0, value.len()),
            Some(PathMatch { kind: PathMatchType::RegularExpression, value }) => (1, value.len()),
            Some(PathMatch { kind: PathMatchType::PathPrefix, value }) => (2, value.len()),
        };
        Self {
            path_kind: kind,
            path_len: std::cmp::Reverse(len),
            no_method: m.method.is_none(),
            headers: std::cmp::Reverse(m.headers.len()),
            query: std::cmp::Reverse(m.query_params.len()),
            route: (ns.to_owned(), name.to_owned()),
            rule,
            index,
        }
    }
}

fn string_match(kind: ValueMatchType, value: &str) -> api::StringMatch {
    use api::string_match::Kind as K;
    let kind = match kind {
        ValueMatchType::Exact => K::Exact,
        ValueMatchType::RegularExpression => K::Regex,
    };
    api::StringMatch { kind: kind as i32, value: value.to_owned() }
}

fn route_match(m: &HttpRouteMatch) -> api::RouteMatch {
    use api::string_match::Kind as K;
    let path = m.path.clone().unwrap_or(PathMatch { kind: PathMatchType::PathPrefix, value: "/".into() });
    let kind = match path.kind {
        PathMatchType::Exact => K::Exact,
        PathMatchType::PathPrefix => K::Prefix,
        PathMatchType::RegularExpression => K::Regex,
    };
    api::RouteMatch {
        path: Some(api::StringMatch { kind: kind as i32, value: path.value }),
        headers: m
            .headers
            .iter()
            .map(|h| api::NamedMatch { name: h.name.0.clone(), value: Some(string_match(h.kind, &h.value)) })
            .collect(),
        query_params: m
            .query_params
            .iter()
            .map(|q| api::NamedMatch { name: q.name.clone(), value: Some(string_match(q.kind, &q.value)) })
            .collect(),
        method: m.method.map(|m| m.as_str().to_owned()).unwrap_or_default(),
    }
}

fn header_modifier(h: &HeaderModifier) -> api::HeaderModifier {
    let headers = |v: &[crate::policy::httproute::HttpHeader]| {
        v.iter().map(|h| api::Header { name: h.name.0.clone(), value: h.value.clone() }).collect()
    };
    api::HeaderModifier {
        set: headers(&h.set),
        add: headers(&h.add),
        remove: h.remove.iter().map(|n| n.0.clone()).collect(),
    }
}

fn path_modifier(p: &PathModifier) -> api::PathModifier {
    use api::path_modifier::Kind as K;
    let kind = match p.kind {
        PathModifierType::ReplaceFullPath => K::Full,
        PathModifierType::ReplacePrefixMatch => K::Prefix,
    };
    api::PathModifier { kind: kind as i32, value: p.value().to_owned() }
}

/// The proxy form of a filter; `None` for one that does nothing (a mirror
/// of 0 %, which the API would read as 100 %).
fn filter(f: &HttpRouteFilter, route_ns: &str) -> Option<api::Filter> {
    use api::filter::Kind as K;
    let kind = match f.kind {
        FilterType::RequestHeaderModifier => {
            f.request_header_modifier.as_ref().map(|h| K::RequestHeaderModifier(header_modifier(h)))
        }
        FilterType::ResponseHeaderModifier => {
            f.response_header_modifier.as_ref().map(|h| K::ResponseHeaderModifier(header_modifier(h)))
        }
        FilterType::RequestRedirect => f.request_redirect.as_ref().map(|r| {
            K::RequestRedirect(api::Redirect {
                scheme: match r.scheme {
                    Some(Scheme::Http) => "http".into(),
                    Some(Scheme::Https) => "https".into(),
                    None => String::new(),
                },
                hostname: r.hostname.clone().unwrap_or_default(),
                port: r.port.map_or(0, |p| p.as_u32()),
                path: r.path.as_ref().map(path_modifier),
                status_code: r.status_code.map_or(302, |s| u32::from(s.0)),
            })
        }),
        FilterType::UrlRewrite => f.url_rewrite.as_ref().map(|r| {
            K::UrlRewrite(api::UrlRewrite {
                hostname: r.hostname.clone().unwrap_or_default(),
                path: r.path.as_ref().map(path_modifier),
            })
        }),
        FilterType::RequestMirror => f.request_mirror.as_ref().filter(|m| m.percent() > 0).map(|m| {
            let b = &m.backend_ref;
            K::RequestMirror(api::Mirror {
                service: format!("{}.{}", b.name.0, b.namespace.as_ref().map_or(route_ns, |n| &n.0)),
                port: b.port.map_or(0, |p| p.as_u32()),
                percent: m.percent(),
            })
        }),
    };
    kind.map(|kind| api::Filter { kind: Some(kind) })
}
