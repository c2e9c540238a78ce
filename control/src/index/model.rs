//! The objects the index holds besides policy resources: Services (from the
//! services file) and workloads (from the Registry). They are shaped like
//! Kubernetes Services and Pods.

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
    pub selector: BTreeMap<String, String>,
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
