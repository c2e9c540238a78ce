//! The objects the index holds besides policy resources: Services (from the
//! services file or the Kubernetes API), workloads (from the Registry, or
//! Pods) and EndpointSlices (Kubernetes). They are shaped like their
//! Kubernetes namesakes, reduced to what discovery and policy read.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize, Serializer};

/// A namespaced name; displayed `name.namespace` as in the proxy API.
/// Ordered by namespace, then name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NsName {
    pub namespace: String,
    pub name: String,
}

impl NsName {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self { namespace: namespace.into(), name: name.into() }
    }

    /// Parses `name.namespace` (namespaces contain no dots).
    pub fn parse_dotted(s: &str) -> Option<Self> {
        let (name, ns) = s.rsplit_once('.')?;
        (!name.is_empty() && !ns.is_empty()).then(|| Self::new(ns, name))
    }
}

impl fmt::Display for NsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.name, self.namespace)
    }
}

impl Serialize for NsName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A Service's name: its frontend is this name plus its virtual IP.
pub type ServiceName = NsName;
/// A workload instance (a pod, or a replica of `weft up`).
pub type WorkloadName = NsName;

/// How a service port's traffic is treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Detect HTTP/1, HTTP/2 or opaque per connection.
    #[default]
    Http,
    /// Opaque TCP: no detection, no HTTP policy.
    Opaque,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The port clients connect to (on the virtual IP).
    pub port: u16,
    /// The port the workloads serve on.
    pub target_port: u16,
    pub protocol: Protocol,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    pub name: ServiceName,
    /// None: reachable by name only (no interception by address).
    pub virtual_ip: Option<IpAddr>,
    pub ports: Vec<ServicePort>,
    /// Workloads in the same namespace whose labels include all of these.
    /// Empty selects nothing (as a Kubernetes Service without selector).
    /// Read only when `endpoints` is [`EndpointSource::Selector`].
    pub selector: BTreeMap<String, String>,
    pub endpoints: EndpointSource,
}

/// Where a Service's endpoints come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum EndpointSource {
    /// The workloads its selector matches (services file, registry).
    #[default]
    Selector,
    /// The EndpointSlices labelled `kubernetes.io/service-name` with its
    /// name, as written by Kubernetes' EndpointSlice controller (or anyone
    /// else): they carry readiness, draining and resolved target ports.
    Slices,
}

impl Service {
    pub fn port(&self, port: u16) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.port == port)
    }

    pub fn selects(&self, w: &Workload) -> bool {
        w.name.namespace == self.name.namespace
            && !self.selector.is_empty()
            && self.selector.iter().all(|(k, v)| w.labels.get(k) == Some(v))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Workload {
    pub name: WorkloadName,
    pub service_account: String,
    pub labels: BTreeMap<String, String>,
    pub address: IpAddr,
    pub ports: Vec<u16>,
    pub meshed: bool,
    pub ready: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub zone: String,
    /// Ports the workload itself declares opaque TCP (a Pod's
    /// `config.weft.dev/opaque-ports` annotation), whatever Service fronts
    /// them: no detection on them, inbound or outbound.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub opaque_ports: Vec<u16>,
}

/// A Namespace: what it sets for the workloads in it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Namespace {
    pub name: String,
    /// Opaque ports of every workload in it that does not list its own.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub opaque_ports: Vec<u16>,
}

/// An EndpointSlice: some of one Service's endpoints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSlice {
    /// The slice's own name (Kubernetes generates `SERVICE-xxxxx`).
    pub name: NsName,
    /// The Service it belongs to (same namespace).
    pub service: ServiceName,
    /// Named after the Service's ports; `port` is the target port, already
    /// resolved (a named target port may differ per Pod, hence per slice).
    pub ports: Vec<SlicePort>,
    pub endpoints: Vec<SliceEndpoint>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SlicePort {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub port: u16,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SliceEndpoint {
    pub address: IpAddr,
    /// Serving and not terminating: gets new traffic.
    pub ready: bool,
    /// Passes readiness, terminating or not.
    pub serving: bool,
    /// Being deleted: drained, used only when nothing is ready.
    pub terminating: bool,
    /// The Pod behind it (`targetRef`), in the slice's namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub zone: String,
}

impl EndpointSlice {
    /// The target port this slice gives for a Service port: the slice port
    /// of the same name (both unnamed for a single-port Service).
    pub fn port_for(&self, sp: &ServicePort) -> Option<u16> {
        self.ports.iter().find(|p| p.name == sp.name).map(|p| p.port)
    }
}

impl Workload {
    /// `default` when unset, as Kubernetes does for pods.
    pub fn service_account(&self) -> &str {
        if self.service_account.is_empty() { "default" } else { &self.service_account }
    }

    /// The SPIFFE ID the workload's proxy proves: `spiffe://TD/ns/NS/sa/SA`.
    /// Empty for an unmeshed workload (nobody to prove it).
    pub fn identity(&self, trust_domain: &str) -> String {
        if !self.meshed {
            return String::new();
        }
        spiffe_id(trust_domain, &self.name.namespace, self.service_account())
    }
}

/// `spiffe://TRUST_DOMAIN/ns/NS/sa/SA`.
pub fn spiffe_id(trust_domain: &str, namespace: &str, service_account: &str) -> String {
    format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}")
}
