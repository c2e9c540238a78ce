//! Policy objects from the API server (HTTPRoute, TrafficPolicy,
//! AccessPolicy) → the same parser and validation as policy files, and
//! the status each should show.
//!
//! An object that our validation refuses (after the API server's schema
//! let it in) keeps the last good version in force, shows
//! `Accepted=False` with the parser's message, and gets a Warning Event.
//!
//! Status, as the Gateway API asks of mesh routes (GAMMA): one entry in
//! `status.parents` per parentRef that is a Service, under our controller
//! name, with `Accepted` (`Accepted`, or `NoMatchingParent` when the Service
//! does not exist, `UnsupportedValue` when the route is invalid) and
//! `ResolvedRefs` (`ResolvedRefs`, `BackendNotFound`, `InvalidKind`).
//! Entries of other controllers are kept. Our own kinds get one
//! `Accepted` condition (`Accepted` or `Invalid`).

use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{Value, json};

use crate::index::{NsName, ServiceName, State};
use crate::policy::{self, Kind, Resource};

/// `status.parents[].controllerName` of the routes we program.
pub const CONTROLLER_NAME: &str = "weft.dev/control-plane";

/// The API resource of a policy kind (group, version, plural).
pub fn api_resource(kind: Kind) -> ApiResource {
    let (group, version, plural) = match kind {
        Kind::HttpRoute => (policy::GATEWAY_GROUP, "v1", "httproutes"),
        Kind::TrafficPolicy => (policy::POLICY_GROUP, "v1alpha1", "trafficpolicies"),
        Kind::AccessPolicy => (policy::POLICY_GROUP, "v1alpha1", "accesspolicies"),
    };
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind.as_str()), plural)
}

/// Parses an object as if it were a policy file of one document. The
/// metadata the API server adds (uid, resourceVersion, managedFields…) and
/// the status are left out: the parser refuses fields it does not know.
pub fn to_resource(kind: Kind, obj: &DynamicObject) -> Result<Resource, String> {
    let m = &obj.metadata;
    let mut metadata = json!({"name": m.name, "namespace": m.namespace});
    if let Some(l) = &m.labels {
        metadata["labels"] = json!(l);
    }
    if let Some(a) = &m.annotations {
        // kubectl's last-applied copy is the object again; not ours to read.
        let a: std::collections::BTreeMap<_, _> =
            a.iter().filter(|(k, _)| k.as_str() != "kubectl.kubernetes.io/last-applied-configuration").collect();
        if !a.is_empty() {
            metadata["annotations"] = json!(a);
        }
    }
    let doc = json!({
        "apiVersion": kind.api_version(),
        "kind": kind.as_str(),
        "metadata": metadata,
        "spec": obj.data.get("spec").cloned().unwrap_or(json!({})),
    });
    let text = doc.to_string();
    match policy::parse(&text) {
        Ok(mut rs) if rs.len() == 1 => Ok(rs.remove(0)),
        Ok(_) => Err("not exactly one object".into()),
        // A one-line JSON rendering: its line and column say nothing.
        Err(e) => Err(e.message),
    }
}

/// One condition, in the `metav1.Condition` shape (without its transition
/// time, which [`with_times`] carries over or stamps).
#[derive(Clone, Debug, PartialEq)]
pub struct Condition {
    pub type_: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Condition {
    fn to_json(&self, generation: Option<i64>) -> Value {
        let mut c = json!({
            "type": self.type_,
            "status": if self.status { "True" } else { "False" },
            "reason": self.reason,
            "message": self.message,
        });
        if let Some(g) = generation {
            c["observedGeneration"] = json!(g);
        }
        c
    }
}

/// Conditions of one of our own kinds: `Err` holds our validation's message.
pub fn accepted(result: &Result<(), String>) -> Vec<Condition> {
    vec![match result {
        Ok(()) => Condition { type_: "Accepted", status: true, reason: "Accepted", message: "in force".into() },
        Err(e) => Condition {
            type_: "Accepted",
            status: false,
            reason: "Invalid",
            message: format!("{e}; the last accepted version (if any) stays in force"),
        },
    }]
}

fn str_of<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}

/// Is this reference (a parentRef or backendRef) to a core Service?
fn is_service(r: &Value) -> bool {
    str_of(r, "group").unwrap_or("").is_empty() && str_of(r, "kind").unwrap_or("Service") == "Service"
}

fn ref_name(route_ns: &str, r: &Value) -> Option<ServiceName> {
    Some(NsName::new(str_of(r, "namespace").unwrap_or(route_ns), str_of(r, "name")?))
}

/// A route's conditions per Service parentRef (the parentRef as written,
/// and its conditions). `valid` is our validation's verdict.
pub fn route_conditions(
    obj: &DynamicObject,
    valid: &Result<(), String>,
    state: &State,
) -> Vec<(Value, Vec<Condition>)> {
    let ns = obj.metadata.namespace.as_deref().unwrap_or_default();
    let spec = obj.data.get("spec").cloned().unwrap_or(Value::Null);
    let empty = Vec::new();
    let parents = spec.get("parentRefs").and_then(Value::as_array).unwrap_or(&empty);
    // Backends are the same for every parent.
    let mut resolved = Condition {
        type_: "ResolvedRefs",
        status: true,
        reason: "ResolvedRefs",
        message: "all backends resolved".into(),
    };
    let backends = spec
        .get("rules")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|r| r.get("backendRefs").and_then(Value::as_array).into_iter().flatten());
    for b in backends {
        if !is_service(b) {
            resolved = Condition {
                type_: "ResolvedRefs",
                status: false,
                reason: "InvalidKind",
                message: format!("backend {}: only Services are supported", str_of(b, "name").unwrap_or("?")),
            };
            break;
        }
        if let Some(svc) = ref_name(ns, b)
            && !state.services.contains_key(&svc)
        {
            resolved = Condition {
                type_: "ResolvedRefs",
                status: false,
                reason: "BackendNotFound",
                message: format!("backend Service {}/{} does not exist", svc.namespace, svc.name),
            };
            break;
        }
    }
    parents
        .iter()
        .filter(|p| is_service(p))
        .map(|p| {
            let accepted = match (valid, ref_name(ns, p)) {
                (Err(e), _) => Condition {
                    type_: "Accepted",
                    status: false,
                    reason: "UnsupportedValue",
                    message: format!("{e}; the last accepted version (if any) stays in force"),
                },
                (Ok(()), Some(svc)) if state.services.contains_key(&svc) => {
                    Condition { type_: "Accepted", status: true, reason: "Accepted", message: "in force".into() }
                }
                (Ok(()), svc) => Condition {
                    type_: "Accepted",
                    status: false,
                    reason: "NoMatchingParent",
                    message: match svc {
                        Some(s) => format!("parent Service {}/{} does not exist", s.namespace, s.name),
                        None => "parentRef has no name".into(),
                    },
                },
            };
            (p.clone(), vec![accepted, resolved.clone()])
        })
        .collect()
}

/// `conditions` as JSON, each keeping the `lastTransitionTime` of the
/// same type in `old` when its status did not change, else stamped `now`.
pub fn with_times(conditions: &[Condition], generation: Option<i64>, old: Option<&Value>, now: &str) -> Vec<Value> {
    conditions
        .iter()
        .map(|c| {
            let mut v = c.to_json(generation);
            let prev = old
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|o| {
                    str_of(o, "type") == Some(c.type_) && str_of(o, "status") == v.get("status").and_then(Value::as_str)
                })
                .and_then(|o| o.get("lastTransitionTime").cloned());
            v["lastTransitionTime"] = prev.unwrap_or_else(|| json!(now));
            v
        })
        .collect()
}

/// Whether two condition lists say the same, transition times aside.
pub fn same_conditions(a: &[Value], b: Option<&Value>) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(o) = v.as_object_mut() {
            o.remove("lastTransitionTime");
        }
        v
    };
    let b: Vec<Value> = b.and_then(Value::as_array).map(|b| b.iter().map(strip).collect()).unwrap_or_default();
    a.iter().map(strip).collect::<Vec<_>>() == b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{EndpointSource, Event, MeshConfig, Service};

    fn object(kind: Kind, ns: &str, spec: Value) -> DynamicObject {
        let mut o = DynamicObject::new("r", &api_resource(kind)).within(ns);
        o.metadata.uid = Some("u-1".into());
        o.metadata.resource_version = Some("42".into());
        o.metadata.annotations = Some(
            [("kubectl.kubernetes.io/last-applied-configuration".to_string(), "{}".to_string())].into_iter().collect(),
        );
        o.data = json!({"spec": spec, "status": {"whatever": 1}});
        o
    }

    #[test]
    fn objects_parse_as_policy_files_do() {
        // (kind, spec, Ok or the start of the error)
        let cases: Vec<(Kind, Value, Result<(), &str>)> = vec![
            (
                Kind::TrafficPolicy,
                json!({"targetRef": {"kind": "Service", "name": "web"}, "retries": {"attempts": 3}}),
                Ok(()),
            ),
            (
                Kind::TrafficPolicy,
                json!({"targetRef": {"kind": "Namespace", "name": "other"}, "timeouts": {"request": "1s"}}),
                Err("spec.targetRef.name: a TrafficPolicy in namespace `a` can only target that namespace"),
            ),
            (Kind::AccessPolicy, json!({"targetRef": {"kind": "Service", "name": "web"}, "from": {}}), Ok(())),
            (
                Kind::HttpRoute,
                json!({"parentRefs": [{"group": "", "kind": "Service", "name": "web"}],
                       "rules": [{"backendRefs": [{"name": "web-v1", "port": 80, "weight": 90}]}]}),
                Ok(()),
            ),
        ];
        for (kind, spec, want) in cases {
            let got = to_resource(kind, &object(kind, "a", spec.clone()));
            match (got, want) {
                (Ok(r), Ok(())) => assert_eq!(r.id().to_string(), format!("{kind}/a/r")),
                (Err(e), Err(w)) => assert!(e.starts_with(w), "{spec}: {e}"),
                (got, want) => panic!("{spec}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn route_status_per_service_parent() {
        let mut state = State::new(MeshConfig::default());
        let svc = |name: &str| Service {
            name: NsName::new("a", name),
            virtual_ip: None,
            ports: vec![],
            selector: Default::default(),
            endpoints: EndpointSource::Slices,
        };
        state.apply([Event::ServiceApplied(svc("web")), Event::ServiceApplied(svc("web-v1"))]);
        let parents = json!([
            {"group": "", "kind": "Service", "name": "web", "port": 80},
            {"group": "", "kind": "Service", "name": "gone"},
            {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "edge"},
        ]);
        let reasons = |spec: Value, valid: Result<(), String>| -> Vec<Vec<(&'static str, bool, &'static str)>> {
            route_conditions(&object(Kind::HttpRoute, "a", spec), &valid, &state)
                .into_iter()
                .map(|(_, cs)| cs.into_iter().map(|c| (c.type_, c.status, c.reason)).collect())
                .collect()
        };
        let good = json!({"parentRefs": parents, "rules": [{"backendRefs": [{"name": "web-v1"}]}]});
        assert_eq!(
            reasons(good.clone(), Ok(())),
            [
                vec![("Accepted", true, "Accepted"), ("ResolvedRefs", true, "ResolvedRefs")],
                vec![("Accepted", false, "NoMatchingParent"), ("ResolvedRefs", true, "ResolvedRefs")],
            ],
            "the Gateway parent is not ours to report on"
        );
        let missing = json!({"parentRefs": [parents[0]], "rules": [{"backendRefs": [{"name": "nope"}]}]});
        assert_eq!(
            reasons(missing, Ok(())),
            [vec![("Accepted", true, "Accepted"), ("ResolvedRefs", false, "BackendNotFound")]]
        );
        assert_eq!(
            reasons(json!({"parentRefs": [parents[0]]}), Err("bad".into())),
            [vec![("Accepted", false, "UnsupportedValue"), ("ResolvedRefs", true, "ResolvedRefs")]]
        );
    }

    #[test]
    fn transition_times_survive_unchanged_conditions() {
        let old = json!([
            {"type": "Accepted", "status": "True", "reason": "Accepted", "message": "in force", "lastTransitionTime": "T0"}
        ]);
        let ok = accepted(&Ok(()));
        let same = with_times(&ok, None, Some(&old), "T1");
        assert_eq!(same[0]["lastTransitionTime"], "T0");
        assert!(same_conditions(&same, Some(&old)));
        let bad = with_times(&accepted(&Err("x".into())), Some(2), Some(&old), "T1");
        assert_eq!(bad[0]["lastTransitionTime"], "T1");
        assert_eq!(bad[0]["observedGeneration"], 2);
        assert!(!same_conditions(&bad, Some(&old)));
    }
}
