//! The services file of the local mesh: Kubernetes Service–like entries.
//!
//! ```yaml
//! services:
//!   - name: web
//!     namespace: default          # default "default"
//!     virtualIP: 10.96.0.10        # optional: without it, reachable by name only
//!     selector: {app: web}
//!     ports:
//!       - {port: 80, targetPort: 8080}            # targetPort defaults to port
//!       - {name: redis, port: 6379, protocol: opaque}
//! ```
//!
//! Errors name the line and the field (`services[1].ports[0].port: must be
//! 1..=65535, got 0`); duplicates name the entry that repeats.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::index::model::{EndpointSource, Protocol, Service, ServiceName, ServicePort};
use crate::policy::ParseError;
use crate::policy::de::{Label, PortNumber, Scalar, Validate, check_dns_label, checked_vec, scalar_de};

/// A Service's virtual IP: a unicast address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct VirtualIp(pub IpAddr);

impl Scalar for VirtualIp {
    const EXPECTING: &'static str = "an IP address";
    fn from_str(s: &str) -> Result<Self, String> {
        match s.parse::<IpAddr>() {
            Ok(ip) if ip.is_unspecified() || ip.is_multicast() => {
                Err(format!("`{s}` cannot be a virtual IP (unspecified or multicast)"))
            }
            Ok(ip) => Ok(Self(ip)),
            Err(_) => Err(format!("`{s}` is not an IP address")),
        }
    }
}
scalar_de!(VirtualIp, deserialize_text);

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PortSpec {
    #[serde(default)]
    name: Option<String>,
    port: PortNumber,
    /// Defaults to `port`.
    #[serde(default)]
    target_port: Option<PortNumber>,
    #[serde(default)]
    protocol: Protocol,
}

impl Validate for PortSpec {
    fn validate(&self) -> Result<(), String> {
        match &self.name {
            Some(n) => check_dns_label(n).map_err(|e| format!("name: {e}")),
            None => Ok(()),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ServiceSpec {
    name: Label,
    #[serde(default)]
    namespace: Option<Label>,
    #[serde(rename = "virtualIP", default)]
    virtual_ip: Option<VirtualIp>,
    #[serde(default)]
    selector: BTreeMap<String, String>,
    #[serde(deserialize_with = "checked_vec")]
    ports: Vec<PortSpec>,
}

impl Validate for ServiceSpec {
    fn validate(&self) -> Result<(), String> {
        if self.ports.is_empty() {
            return Err("ports: at least one port is required".into());
        }
        let mut numbers = BTreeSet::new();
        let mut names = BTreeSet::new();
        for (i, p) in self.ports.iter().enumerate() {
            if !numbers.insert(p.port) {
                return Err(format!("ports[{i}].port: {} is listed twice", p.port.get()));
            }
            if let Some(n) = &p.name
                && !names.insert(n)
            {
                return Err(format!("ports[{i}].name: `{n}` is used twice"));
            }
        }
        if let Some(k) = self.selector.keys().find(|k| k.is_empty() || k.len() > 317) {
            return Err(format!("selector: invalid label key `{k}`"));
        }
        Ok(())
    }
}

impl ServiceSpec {
    fn into_service(self) -> Service {
        let namespace = self.namespace.map_or_else(|| crate::policy::DEFAULT_NAMESPACE.to_owned(), |n| n.0);
        Service {
            name: ServiceName::new(namespace, self.name.0),
            virtual_ip: self.virtual_ip.map(|v| v.0),
            ports: self
                .ports
                .into_iter()
                .map(|p| ServicePort {
                    name: p.name,
                    port: p.port.get() as u16,
                    target_port: p.target_port.unwrap_or(p.port).get() as u16,
                    protocol: p.protocol,
                })
                .collect(),
            selector: self.selector,
            endpoints: EndpointSource::Selector,
        }
    }
}

/// The entries seen so far, to refuse duplicates where they stand.
#[derive(Default)]
struct Seen {
    names: BTreeMap<(String, String), usize>,
    vips: BTreeMap<IpAddr, usize>,
}

/// Deserializes one list entry and checks it against earlier ones, from
/// inside the entry's visitor so that errors carry the entry's line.
struct EntrySeed<'a> {
    seen: &'a mut Seen,
    index: usize,
}

impl<'de> DeserializeSeed<'de> for EntrySeed<'_> {
    type Value = ServiceSpec;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<ServiceSpec, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for EntrySeed<'_> {
    type Value = ServiceSpec;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a service")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ServiceSpec, A::Error> {
        let spec = ServiceSpec::deserialize(de::value::MapAccessDeserializer::new(map))?;
        spec.validate().map_err(de::Error::custom)?;
        let ns = spec.namespace.as_ref().map_or(crate::policy::DEFAULT_NAMESPACE, |n| n.0.as_str());
        let key = (ns.to_owned(), spec.name.0.clone());
        if let Some(first) = self.seen.names.insert(key, self.index) {
            return Err(de::Error::custom(format!(
                "name: service `{}.{ns}` is already defined by services[{first}]",
                spec.name.0
            )));
        }
        if let Some(vip) = spec.virtual_ip
            && let Some(first) = self.seen.vips.insert(vip.0, self.index)
        {
            return Err(de::Error::custom(format!("virtualIP: {} is already used by services[{first}]", vip.0)));
        }
        Ok(spec)
    }
}

fn services_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ServiceSpec>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<ServiceSpec>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of services")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut seen = Seen::default();
            let mut out = Vec::new();
            while let Some(s) = seq.next_element_seed(EntrySeed { seen: &mut seen, index: out.len() })? {
                out.push(s);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(V)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServicesFile {
    #[serde(default, deserialize_with = "services_list")]
    services: Vec<ServiceSpec>,
}

/// Parses a services file. An empty file means no services.
pub fn parse(text: &str) -> Result<Vec<Service>, ParseError> {
    let file: Option<ServicesFile> = Option::deserialize(serde_yaml_ng::Deserializer::from_str(text))
        .map_err(|e| ParseError::from_yaml(&e, 0, None))?;
    Ok(file.map(|f| f.services.into_iter().map(ServiceSpec::into_service).collect()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_services_file() {
        let text = "services:
  - name: web
    virtualIP: 10.96.0.10
    selector: {app: web}
    ports: [{port: 80, targetPort: 8080}]
  - name: store
    namespace: data
    selector: {app: store}
    ports:
      - {name: redis, port: 6379, protocol: opaque}
";
        let s = parse(text).expect("valid");
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].name, ServiceName::new("default", "web"));
        assert_eq!(s[0].virtual_ip, Some("10.96.0.10".parse().expect("ip")));
        assert_eq!(s[0].ports, vec![ServicePort { name: None, port: 80, target_port: 8080, protocol: Protocol::Http }]);
        assert_eq!(s[1].name, ServiceName::new("data", "store"));
        assert_eq!(s[1].virtual_ip, None);
        assert_eq!(s[1].ports[0].target_port, 6379);
        assert_eq!(s[1].ports[0].protocol, Protocol::Opaque);
        assert!(parse("").expect("empty").is_empty());
        assert!(parse("# nothing yet\n").expect("comment").is_empty());
        assert!(parse("services: []\n").expect("none").is_empty());
    }

    #[test]
    fn errors_name_line_and_field() {
        let cases = [
            (
                "services:\n  - name: web\n    selector: {app: web}\n    ports: [{port: 0}]\n",
                (4, "services[0].ports[0].port: must be 1..=65535, got 0"),
            ),
            ("services:\n  - name: Web\n    ports: [{port: 80}]\n", (2, "services[0].name: `Web` is not a DNS label")),
            (
                "services:\n  - name: web\n    virtualIp: 10.0.0.1\n    ports: [{port: 80}]\n",
                (3, "services[0]: unknown field `virtualIp`, expected one of"),
            ),
            (
                "services:\n  - name: web\n    virtualIP: 10.0.0.300\n    ports: [{port: 80}]\n",
                (3, "services[0].virtualIP: `10.0.0.300` is not an IP address"),
            ),
            ("services:\n  - name: web\n    ports: []\n", (2, "services[0]: ports: at least one port is required")),
            (
                "services:\n  - name: web\n    ports: [{port: 80, protocol: grpc}]\n",
                (3, "services[0].ports[0].protocol: unknown variant `grpc`"),
            ),
            (
                "services:\n  - {name: web, ports: [{port: 80}]}\n  - {name: api, ports: [{port: 80}]}\n  - {name: web, ports: [{port: 81}]}\n",
                (4, "services[2]: name: service `web.default` is already defined by services[0]"),
            ),
            (
                "services:\n  - {name: a, virtualIP: 10.0.0.1, ports: [{port: 80}]}\n  - {name: b, virtualIP: 10.0.0.1, ports: [{port: 80}]}\n",
                (3, "services[1]: virtualIP: 10.0.0.1 is already used by services[0]"),
            ),
            ("service:\n  - name: web\n", (1, "unknown field `service`")),
            ("services:\n  - {name: web, ports: [{port: 80}]\n", (3, "did not find expected ',' or '}'")),
        ];
        for (text, (line, want)) in cases {
            let e = parse(text).expect_err(text);
            assert_eq!(e.line, Some(line), "{text}\n{e}");
            assert!(e.message.contains(want), "{text}\ngot:  {}\nwant: {want}", e.message);
        }
    }
}
