//! Discovery: what stands behind a destination the proxy saw.
//!
//! A target is `IP:PORT` (read with `SO_ORIGINAL_DST`) or `NAME:PORT`:
//!
//! | target | answer |
//! | --- | --- |
//! | a Service's virtual IP and one of its ports | SERVICE: its ready endpoints (selected workloads, or its EndpointSlices) |
//! | `svc`, `svc.ns`, `svc.ns.svc`, `svc.ns.svc.cluster.local` and a port | SERVICE (bare names resolve in the asker's namespace) |
//! | a workload's address | ENDPOINT: that workload, with its identity |
//! | anything else | UNKNOWN: forward as is |

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use weft_api::discovery::endpoint::ProtocolHint;
use weft_api::discovery::endpoint_set::Kind;
use weft_api::discovery::{Endpoint, EndpointSet};

use super::model::{EndpointSource, NsName, Protocol, Service, ServicePort, SliceEndpoint, Workload};
use super::{ServiceName, State};

/// A parsed discovery or outbound-policy target.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    Addr(SocketAddr),
    /// Lower-case, without a trailing dot.
    Name {
        host: String,
        port: u16,
    },
}

impl Target {
    pub fn port(&self) -> u16 {
        match self {
            Target::Addr(a) => a.port(),
            Target::Name { port, .. } => *port,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Addr(a) => write!(f, "{a}"),
            Target::Name { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("target `{0}` has no port; use IP:PORT or NAME:PORT")]
    MissingPort(String),
    #[error("target `{0}` has an invalid port (1..=65535)")]
    BadPort(String),
    #[error("target `{0}` has an invalid host name")]
    BadHost(String),
}

impl FromStr for Target {
    type Err = TargetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(addr) = s.parse::<SocketAddr>() {
            if addr.port() == 0 {
                return Err(TargetError::BadPort(s.into()));
            }
            return Ok(Target::Addr(addr));
        }
        let (host, port) = s.rsplit_once(':').ok_or_else(|| TargetError::MissingPort(s.into()))?;
        let port = port.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| TargetError::BadPort(s.into()))?;
        let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        let valid = !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
        if !valid {
            return Err(TargetError::BadHost(s.into()));
        }
        Ok(Target::Name { host, port })
    }
}

impl State {
    /// The Service name a DNS-style host means, asked from `asker_ns`.
    pub fn service_name_for(&self, host: &str, asker_ns: &str) -> Option<ServiceName> {
        let ns = if asker_ns.is_empty() { crate::policy::DEFAULT_NAMESPACE } else { asker_ns };
        let mut parts = host.splitn(4, '.');
        let svc = parts.next()?;
        let (ns, rest) = match (parts.next(), parts.next(), parts.next()) {
            (None, _, _) => (ns, None),
            (Some(ns), None, _) => (ns, None),
            (Some(ns), Some("svc"), rest) => (ns, rest),
            _ => return None,
        };
        if rest.is_some_and(|r| r != self.mesh.cluster_domain) {
            return None;
        }
        Some(ServiceName::new(ns, svc))
    }

    /// The Service and port a target designates, if any.
    pub fn service_for(&self, target: &Target, asker_ns: &str) -> Option<(&Service, &ServicePort)> {
        let port = target.port();
        match target {
            Target::Addr(a) => self.services_at(a.ip()).find_map(|s| s.port(port).map(|p| (&**s, p))),
            Target::Name { host, .. } => {
                let name = self.service_name_for(host, asker_ns)?;
                let svc = self.services.get(&name)?;
                svc.port(port).map(|p| (&**svc, p))
            }
        }
    }

    /// The workload at an address, preferring one that serves `port`.
    pub fn workload_at(&self, ip: IpAddr, port: u16) -> Option<&Workload> {
        let mut first = None;
        for w in self.workloads_at(ip) {
            if w.ports.contains(&port) {
                return Some(w);
            }
            first.get_or_insert(&**w);
        }
        first
    }

    /// Answers `Discovery.Watch(target)` from a workload in `asker_ns`.
    pub fn resolve(&self, target: &Target, asker_ns: &str) -> EndpointSet {
        let mut set = EndpointSet { version: self.version, ..Default::default() };
        if let Some((svc, port)) = self.service_for(target, asker_ns) {
            set.kind = Kind::Service as i32;
            set.service = svc.name.to_string();
            set.port = u32::from(port.port);
            set.endpoints = match svc.endpoints {
                EndpointSource::Selector => self
                    .selected(svc)
                    .filter(|w| w.ready)
                    .map(|w| self.endpoint(w, port.target_port, hint(port.protocol)))
                    .collect(),
                EndpointSource::Slices => self.slice_endpoints(svc, port),
            };
        } else if let Target::Addr(addr) = target
            && let Some(w) = self.workload_at(addr.ip(), addr.port())
        {
            set.kind = Kind::Endpoint as i32;
            let opaque = self.serving_ports(w, addr.port()).iter().any(|(_, p)| p.protocol == Protocol::Opaque);
            let h = if opaque { ProtocolHint::Opaque } else { ProtocolHint::Detect };
            set.endpoint = Some(self.endpoint(w, addr.port(), h));
        }
        set
    }

    /// A Service's endpoints from its EndpointSlices: the ready ones or,
    /// when none is ready, the serving ones that are terminating (as
    /// kube-proxy does, so that a rollout's last old pod still answers).
    /// An address listed by two slices (mid-update) is sent once.
    fn slice_endpoints(&self, svc: &Service, port: &ServicePort) -> Vec<Endpoint> {
        let h = hint(port.protocol);
        let mut seen = std::collections::BTreeSet::new();
        let mut ready = Vec::new();
        let mut draining = Vec::new();
        for slice in self.slices_of(&svc.name) {
            let Some(target_port) = slice.port_for(port) else { continue };
            for e in &slice.endpoints {
                let into = if e.ready {
                    &mut ready
                } else if e.serving && e.terminating {
                    &mut draining
                } else {
                    continue;
                };
                if !seen.insert((e.ready, e.address)) {
                    continue;
                }
                into.push(self.slice_endpoint(&slice.name.namespace, e, target_port, h));
            }
        }
        if ready.is_empty() { draining } else { ready }
    }

    /// A slice endpoint as the proxy sees it: identity and labels come from
    /// its Pod when the index has it (and the Pod has that address);
    /// without one it is an unmeshed address, sent plaintext.
    fn slice_endpoint(&self, ns: &str, e: &SliceEndpoint, port: u16, hint: ProtocolHint) -> Endpoint {
        let pod = e.pod.as_ref().and_then(|p| self.workloads.get(&NsName::new(ns, p.as_str())));
        let pod = pod.filter(|w| w.address == e.address);
        let mut ep = match pod {
            Some(w) => self.endpoint(w, port, hint),
            None => Endpoint {
                address: SocketAddr::new(e.address, port).to_string(),
                weight: 1,
                protocol_hint: hint as i32,
                workload: e.pod.clone().unwrap_or_default(),
                ..Default::default()
            },
        };
        // The slice is the truth for readiness (a terminating Pod may still
        // say Ready), and for the zone the controller read from the node.
        ep.ready = true;
        if !e.zone.is_empty() {
            ep.zone = e.zone.clone();
        }
        ep
    }

    fn endpoint(&self, w: &Workload, port: u16, hint: ProtocolHint) -> Endpoint {
        // The workload's own word (or its Namespace's) wins: a port it
        // declares opaque is never detected, whichever Service reaches it.
        let hint = if self.opaque_port(w, port) { ProtocolHint::Opaque } else { hint };
        Endpoint {
            address: SocketAddr::new(w.address, port).to_string(),
            weight: 1,
            identity: w.identity(&self.mesh.trust_domain),
            zone: w.zone.clone(),
            protocol_hint: hint as i32,
            ready: w.ready,
            meshed: w.meshed,
            labels: w.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            workload: w.name.name.clone(),
        }
    }
}

fn hint(p: Protocol) -> ProtocolHint {
    match p {
        // HTTP ports are still detected: HTTP2 would promise a mesh peer
        // that speaks HTTP/2 on the inbound side, which needs mTLS+ALPN.
        Protocol::Http => ProtocolHint::Detect,
        Protocol::Opaque => ProtocolHint::Opaque,
    }
}
