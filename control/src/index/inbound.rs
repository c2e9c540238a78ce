//! Inbound policy: how a workload's proxy treats connections to one of its
//! ports.
//!
//! The port is served for every Service that selects the workload and
//! targets that port. From those:
//!
//! - **authorizations**: AccessPolicies targeting one of those Services
//!   (optionally one Service port), or an HTTPRoute attached to one of them
//!   (then the authorization names the route). As soon as any applies, the
//!   default becomes DENY: a client must match one authorization. An
//!   authorization with `audit: true` comes from `mode: audit`: the proxy
//!   should log and count what it would deny but let it through.
//! - **opaque**: any of those Service ports says `protocol: opaque`.
//! - **rate limit**: from TrafficPolicy `rateLimit`, Service > Namespace >
//!   Mesh (first by name within a level).
//! - **mTLS mode**, **default access** otherwise: the mesh's.

use std::collections::BTreeSet;

use weft_api::policy as api;
use weft_api::policy::inbound_policy::DefaultAccess;

use super::model::{Protocol, Service, ServicePort};
use super::outbound::route_attaches;
use super::{State, Target, WorkloadName};
use crate::policy::access::{AccessPolicy, AccessTargetKind, Mode};
use crate::policy::traffic::{RateLimit, TargetKind};
use crate::policy::{Kind, Resource, ResourceId};

impl State {
    /// Service ports that route to `port` of `workload`.
    pub fn serving(&self, workload: &WorkloadName, port: u16) -> Vec<(&Service, &ServicePort)> {
        let Some(w) = self.workloads.get(workload) else { return Vec::new() };
        self.serving_ports(w, port)
    }

    /// Answers `Policy.WatchInbound(workload, port)`. An unknown workload
    /// (not registered yet) gets the mesh defaults.
    pub fn inbound(&self, workload: &WorkloadName, port: u16) -> api::InboundPolicy {
        let serving = self.serving(workload, port);
        let mut sources = BTreeSet::new();
        let mut authorizations = Vec::new();
        for (id, r) in &self.policies {
            let Resource::AccessPolicy(p) = r else { continue };
            if let Some(routes) = self.access_applies(p, &serving) {
                sources.insert(id.to_string());
                authorizations.push(authorization(id, p, routes));
            }
        }
        let rate_limit = self.rate_limit(workload, &serving, &mut sources);
        // Route-scoped authorizations need the routes, ranked as clients
        // rank them (the producer routes: the Service's own namespace).
        let mut routes: Vec<api::HttpRoute> = Vec::new();
        if authorizations.iter().any(|a| !a.routes.is_empty()) {
            for (svc, sp) in &serving {
                let target = Target::Name { host: format!("{}.{}", svc.name.name, svc.name.namespace), port: sp.port };
                for r in self.outbound(&target, &svc.name.namespace).routes {
                    if !routes.iter().any(|have| have.name == r.name && have.matches == r.matches) {
                        routes.push(r);
                    }
                }
            }
        }
        let default_access = if authorizations.is_empty() { self.mesh.default_access } else { DefaultAccess::Deny };
        api::InboundPolicy {
            version: self.version,
            port: u32::from(port),
            default_access: default_access as i32,
            mtls_mode: self.mesh.mtls_mode as i32,
            authorizations,
            rate_limit,
            opaque: serving.iter().any(|(_, p)| p.protocol == Protocol::Opaque)
                || self.workloads.get(workload).is_some_and(|w| self.opaque_port(w, port)),
            sources: sources.into_iter().collect(),
            routes,
        }
    }

    /// `Some(routes)` when the policy applies to one of the serving ports:
    /// empty routes for a Service target, the route for an HTTPRoute target.
    fn access_applies(&self, p: &AccessPolicy, serving: &[(&Service, &ServicePort)]) -> Option<Vec<String>> {
        let ns = p.metadata.namespace.0.as_str();
        let t = &p.spec.target_ref;
        match t.kind {
            AccessTargetKind::Service => serving
                .iter()
                .any(|(s, sp)| {
                    s.name.namespace == ns
                        && s.name.name == t.name.0
                        && t.port.is_none_or(|tp| tp.get() == u64::from(sp.port))
                })
                .then(Vec::new),
            AccessTargetKind::HttpRoute => {
                let id = ResourceId::new(Kind::HttpRoute, ns, &t.name.0);
                let Some(Resource::HttpRoute(route)) = self.policies.get(&id) else { return None };
                serving.iter().any(|(s, sp)| route_attaches(route, s, sp)).then(|| vec![id.ns_name()])
            }
        }
    }

    fn rate_limit(
        &self,
        workload: &WorkloadName,
        serving: &[(&Service, &ServicePort)],
        sources: &mut BTreeSet<String>,
    ) -> Option<api::RateLimit> {
        let candidates = self.policies.iter().filter_map(|(id, r)| match r {
            Resource::TrafficPolicy(p) => p.spec.rate_limit.as_ref().map(|rl| (id, p, rl)),
            _ => None,
        });
        // (level, id): service 0 < namespace 1 < mesh 2, then name.
        let mut best: Option<(u8, &ResourceId, &RateLimit)> = None;
        for (id, p, rl) in candidates {
            let t = &p.spec.target_ref;
            let pns = p.metadata.namespace.0.as_str();
            let name = t.name.as_ref().map(|n| n.0.as_str());
            let level = match t.kind {
                TargetKind::Service
                    if serving.iter().any(|(s, _)| s.name.namespace == pns && Some(s.name.name.as_str()) == name) =>
                {
                    0
                }
                TargetKind::Namespace if !serving.is_empty() && pns == workload.namespace => 1,
                TargetKind::Mesh if !serving.is_empty() => 2,
                _ => continue,
            };
            if best.is_none_or(|(l, bid, _)| (level, id) < (l, bid)) {
                best = Some((level, id, rl));
            }
        }
        let (_, id, rl) = best?;
        sources.insert(id.to_string());
        let rps = rl.requests_per_second.as_u32();
        Some(api::RateLimit {
            requests_per_second: rps,
            burst: rl.burst.map_or(rps, |b| b.as_u32()),
            per_identity: rl.per_identity,
        })
    }
}

fn authorization(id: &ResourceId, p: &AccessPolicy, routes: Vec<String>) -> api::Authorization {
    let from = &p.spec.from;
    let ns = p.metadata.namespace.0.as_str();
    api::Authorization {
        name: id.ns_name(),
        identities: from.identities.iter().map(|i| i.0.clone()).collect(),
        namespaces: from.namespaces.iter().map(|n| n.0.clone()).collect(),
        service_accounts: from
            .service_accounts
            .iter()
            .map(|sa| format!("{}/{}", sa.namespace.as_ref().map_or(ns, |n| n.0.as_str()), sa.name.0))
            .collect(),
        unauthenticated: from.unauthenticated,
        routes,
        audit: p.spec.mode == Mode::Audit,
    }
}
