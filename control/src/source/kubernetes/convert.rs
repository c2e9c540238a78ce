//! Kubernetes objects → index objects. Pure functions, table-tested: what
//! the index keeps of a Service, an EndpointSlice and a Pod.
//!
//! | Kubernetes | index | notes |
//! | --- | --- | --- |
//! | Service (TCP ports, ClusterIP) | [`Service`] with [`EndpointSource::Slices`] | headless (`None`) and ExternalName Services have no virtual IP; UDP/SCTP ports are skipped |
//! | EndpointSlice (`kubernetes.io/service-name`) | [`EndpointSlice`] | conditions as the API defines them: `ready` unset means ready, `serving` unset means `ready`; FQDN slices are skipped |
//! | Pod with an IP | [`Workload`] | meshed when it runs a `weft-proxy` container; ready from its `Ready` condition; its own opaque ports from the annotation |
//! | Namespace | [`Namespace`] | the opaque ports of its Pods that name none |

use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Namespace as KubeNamespace, Pod, Service as KubeService};
use k8s_openapi::api::discovery::v1::EndpointSlice as KubeSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::index::model::{
    EndpointSlice, EndpointSource, Namespace, NsName, Protocol, Service, ServiceName, ServicePort, SliceEndpoint,
    SlicePort, Workload,
};

/// The label the EndpointSlice controller puts on a Service's slices.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Service, Pod or Namespace annotation: ports (comma-separated numbers)
/// whose traffic is opaque TCP, not detected. On a Service: its ports
/// (`port`); on a Pod: the Pod's own ports, whichever Service reaches them;
/// on a Namespace: those of its Pods that have no annotation of their own.
pub const OPAQUE_PORTS_ANNOTATION: &str = "config.weft.dev/opaque-ports";
/// The proxy container the injector adds; a Pod that has it is meshed.
pub const PROXY_CONTAINER: &str = "weft-proxy";

fn ns_name(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<NsName> {
    Some(NsName::new(meta.namespace.clone()?, meta.name.clone()?))
}

/// The ports an object's [`OPAQUE_PORTS_ANNOTATION`] lists (entries that
/// are not port numbers are ignored).
fn opaque_ports(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Vec<u16> {
    let mut ports: Vec<u16> = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(OPAQUE_PORTS_ANNOTATION))
        .map(|v| v.split(',').filter_map(|p| p.trim().parse().ok()).filter(|p| *p != 0).collect())
        .unwrap_or_default();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// The index's Service for a Kubernetes Service (`None`: unnamed, a
/// malformed object the API server would not have stored).
pub fn service(s: &KubeService) -> Option<Service> {
    let name: ServiceName = ns_name(&s.metadata)?;
    let spec = s.spec.as_ref();
    let virtual_ip = spec
        .and_then(|sp| sp.cluster_ip.as_deref())
        .filter(|ip| *ip != "None")
        .and_then(|ip| ip.parse::<IpAddr>().ok());
    let opaque = opaque_ports(&s.metadata);
    let ports = spec
        .and_then(|sp| sp.ports.as_ref())
        .into_iter()
        .flatten()
        .filter(|p| p.protocol.as_deref().is_none_or(|pr| pr == "TCP"))
        .filter_map(|p| {
            let port = u16::try_from(p.port).ok().filter(|p| *p != 0)?;
            // A named target port is resolved per Pod by the slices; the
            // number here is only read for selector-fed Services.
            let target_port = match &p.target_port {
                Some(IntOrString::Int(n)) => u16::try_from(*n).ok().filter(|p| *p != 0).unwrap_or(port),
                _ => port,
            };
            let protocol = if opaque.contains(&port) { Protocol::Opaque } else { Protocol::Http };
            Some(ServicePort { name: p.name.clone().filter(|n| !n.is_empty()), port, target_port, protocol })
        })
        .collect();
    Some(Service {
        name,
        virtual_ip,
        ports,
        selector: spec.and_then(|sp| sp.selector.clone()).unwrap_or_default(),
        endpoints: EndpointSource::Slices,
    })
}

/// The index's EndpointSlice (`None`: not a Service's slice, or of FQDN
/// addresses, which the proxy cannot dial by IP).
pub fn slice(s: &KubeSlice) -> Option<EndpointSlice> {
    let name = ns_name(&s.metadata)?;
    if s.address_type != "IPv4" && s.address_type != "IPv6" {
        return None;
    }
    let service = s.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?.clone();
    let ports = s
        .ports
        .iter()
        .flatten()
        .filter(|p| p.protocol.as_deref().is_none_or(|pr| pr == "TCP"))
        .filter_map(|p| {
            let port = u16::try_from(p.port?).ok().filter(|p| *p != 0)?;
            Some(SlicePort { name: p.name.clone().filter(|n| !n.is_empty()), port })
        })
        .collect();
    let endpoints = s
        .endpoints
        .iter()
        .flatten()
        .filter_map(|e| {
            // Every address of an endpoint is the same Pod; the first one
            // is the one Kubernetes itself uses.
            let address: IpAddr = e.addresses.first()?.parse().ok()?;
            let c = e.conditions.as_ref();
            let ready = c.and_then(|c| c.ready).unwrap_or(true);
            let serving = c.and_then(|c| c.serving).unwrap_or(ready);
            let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
            let pod = e.target_ref.as_ref().filter(|r| r.kind.as_deref() == Some("Pod")).and_then(|r| r.name.clone());
            Some(SliceEndpoint { address, ready, serving, terminating, pod, zone: e.zone.clone().unwrap_or_default() })
        })
        .collect();
    Some(EndpointSlice { service: ServiceName::new(name.namespace.clone(), service), name, ports, endpoints })
}

/// The index's Workload for a Pod (`None`: no IP yet, or finished — a
/// Pod without an address is nobody's endpoint).
pub fn workload(p: &Pod) -> Option<Workload> {
    let name = ns_name(&p.metadata)?;
    let status = p.status.as_ref()?;
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    let address: IpAddr = status.pod_ip.as_deref()?.parse().ok()?;
    let spec = p.spec.as_ref();
    let containers = spec.map(|s| s.containers.as_slice()).unwrap_or_default();
    let init = spec.and_then(|s| s.init_containers.as_deref()).unwrap_or_default();
    let meshed = containers.iter().chain(init).any(|c| c.name == PROXY_CONTAINER);
    let mut ports: Vec<u16> = containers
        .iter()
        .filter(|c| c.name != PROXY_CONTAINER)
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| u16::try_from(p.container_port).ok())
        .collect();
    ports.sort_unstable();
    ports.dedup();
    let ready = status.conditions.iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True");
    Some(Workload {
        name,
        service_account: spec.and_then(|s| s.service_account_name.clone()).unwrap_or_default(),
        labels: p.metadata.labels.clone().unwrap_or_default(),
        address,
        ports,
        meshed,
        ready,
        zone: String::new(),
        opaque_ports: opaque_ports(&p.metadata),
    })
}

/// The index's Namespace.
pub fn namespace(n: &KubeNamespace) -> Option<Namespace> {
    Some(Namespace { name: n.metadata.name.clone()?, opaque_ports: opaque_ports(&n.metadata) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_json<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).expect("a valid object")
    }

    #[test]
    fn services() {
        // (object, virtual IP, ports as (name, port, target, opaque))
        let cases: Vec<(serde_json::Value, Option<&str>, Vec<(Option<&str>, u16, u16, bool)>)> = vec![
            (
                serde_json::json!({"metadata": {"name": "web", "namespace": "a"},
                    "spec": {"clusterIP": "198.19.128.10", "ports": [{"port": 80, "targetPort": 8080}]}}),
                Some("198.19.128.10"),
                vec![(None, 80, 8080, false)],
            ),
            (
                serde_json::json!({"metadata": {"name": "web", "namespace": "a",
                        "annotations": {"config.weft.dev/opaque-ports": "6379, 11211"}},
                    "spec": {"clusterIP": "None", "ports": [
                        {"name": "http", "port": 80, "targetPort": "http"},
                        {"name": "redis", "port": 6379},
                        {"name": "dns", "port": 53, "protocol": "UDP"}]}}),
                None,
                vec![(Some("http"), 80, 80, false), (Some("redis"), 6379, 6379, true)],
            ),
            (
                serde_json::json!({"metadata": {"name": "ext", "namespace": "a"},
                    "spec": {"type": "ExternalName", "externalName": "example.org"}}),
                None,
                vec![],
            ),
        ];
        for (obj, vip, ports) in cases {
            let s = service(&from_json(obj.clone())).expect("converted");
            assert_eq!(s.name, NsName::new("a", obj["metadata"]["name"].as_str().expect("name")));
            assert_eq!(s.virtual_ip, vip.map(|v| v.parse().expect("ip")), "{obj}");
            let got: Vec<_> = s
                .ports
                .iter()
                .map(|p| (p.name.as_deref(), p.port, p.target_port, p.protocol == Protocol::Opaque))
                .collect();
            assert_eq!(got, ports, "{obj}");
            assert_eq!(s.endpoints, EndpointSource::Slices);
        }
    }

    #[test]
    fn endpoint_slices() {
        let obj = serde_json::json!({
            "metadata": {"name": "web-x1", "namespace": "a", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "", "port": 8080, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["10.0.0.1"], "targetRef": {"kind": "Pod", "name": "web-0"}, "zone": "z1"},
                {"addresses": ["10.0.0.2"], "conditions": {"ready": false, "serving": true, "terminating": true}},
                {"addresses": ["10.0.0.3"], "conditions": {"ready": false}},
                {"addresses": ["not-an-ip"]},
            ]
        });
        let s = slice(&from_json(obj)).expect("converted");
        assert_eq!((s.name.to_string(), s.service.to_string()), ("web-x1.a".into(), "web.a".into()));
        assert_eq!(s.ports, [SlicePort { name: None, port: 8080 }], "an empty port name is no name");
        let got: Vec<_> = s
            .endpoints
            .iter()
            .map(|e| (e.address.to_string(), e.ready, e.serving, e.terminating, e.pod.as_deref(), e.zone.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("10.0.0.1".into(), true, true, false, Some("web-0"), "z1"),
                ("10.0.0.2".into(), false, true, true, None, ""),
                ("10.0.0.3".into(), false, false, false, None, ""),
            ]
        );
        let unlabelled = serde_json::json!({"metadata": {"name": "x", "namespace": "a"}, "addressType": "IPv4"});
        assert!(slice(&from_json(unlabelled)).is_none(), "not a Service's slice");
        let fqdn = serde_json::json!({"metadata": {"name": "x", "namespace": "a",
            "labels": {"kubernetes.io/service-name": "web"}}, "addressType": "FQDN"});
        assert!(slice(&from_json(fqdn)).is_none(), "FQDN endpoints are not dialled");
    }

    #[test]
    fn namespaces() {
        let ns: KubeNamespace = from_json(serde_json::json!({"metadata": {"name": "data",
            "annotations": {"config.weft.dev/opaque-ports": "5432,6379"}}}));
        assert_eq!(namespace(&ns), Some(Namespace { name: "data".into(), opaque_ports: vec![5432, 6379] }));
        let plain: KubeNamespace = from_json(serde_json::json!({"metadata": {"name": "web"}}));
        assert_eq!(namespace(&plain).map(|n| n.opaque_ports), Some(vec![]));
    }

    #[test]
    fn pods() {
        let pod = |status: serde_json::Value, containers: serde_json::Value| -> Pod {
            from_json(serde_json::json!({
                "metadata": {"name": "web-0", "namespace": "a", "labels": {"app": "web"},
                    "annotations": {"config.weft.dev/opaque-ports": "6379, x, 9090,6379"}},
                "spec": {"serviceAccountName": "web", "containers": containers},
                "status": status,
            }))
        };
        let meshed = serde_json::json!([
            {"name": "app", "image": "x", "ports": [{"containerPort": 8080}, {"containerPort": 9090}]},
            {"name": "weft-proxy", "image": "y", "ports": [{"containerPort": 4143}]},
        ]);
        let plain = serde_json::json!([{"name": "app", "image": "x"}]);
        let ready = serde_json::json!({"podIP": "10.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]});
        let unready = serde_json::json!({"podIP": "10.0.0.1", "conditions": [{"type": "Ready", "status": "False"}]});
        // (status, containers, Some((meshed, ready, ports)) or None)
        let cases = [
            (ready.clone(), meshed.clone(), Some((true, true, vec![8080, 9090]))),
            (unready, plain.clone(), Some((false, false, vec![]))),
            (serde_json::json!({"phase": "Pending"}), meshed.clone(), None),
            (serde_json::json!({"podIP": "10.0.0.1", "phase": "Succeeded"}), meshed, None),
        ];
        for (status, containers, want) in cases {
            let w = workload(&pod(status.clone(), containers));
            assert_eq!(w.as_ref().map(|w| (w.meshed, w.ready, w.ports.clone())), want, "{status}");
            if let Some(w) = w {
                assert_eq!((w.service_account.as_str(), w.address.to_string()), ("web", "10.0.0.1".into()));
                assert_eq!(w.labels.get("app").map(String::as_str), Some("web"));
                assert_eq!(w.opaque_ports, [6379, 9090]);
            }
        }
    }
}
