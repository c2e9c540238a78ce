//! The index fed with objects, and the answers checked: discovery,
//! outbound policy precedence and routes, inbound policy.

use weft_api::discovery::endpoint::ProtocolHint;
use weft_api::discovery::endpoint_set::Kind as SetKind;
use weft_api::policy::inbound_policy::DefaultAccess;
use weft_api::policy::string_match::Kind as MatchKind;

use super::*;

fn service(
    ns: &str,
    name: &str,
    vip: Option<&str>,
    selector: &[(&str, &str)],
    ports: &[(u16, u16, Protocol)],
) -> Service {
    Service {
        name: ServiceName::new(ns, name),
        virtual_ip: vip.map(|v| v.parse().expect("vip")),
        ports: ports
            .iter()
            .map(|&(port, target_port, protocol)| ServicePort { name: None, port, target_port, protocol })
            .collect(),
        selector: selector.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
        endpoints: EndpointSource::Selector,
    }
}

fn workload(ns: &str, name: &str, addr: &str, labels: &[(&str, &str)], ready: bool) -> Workload {
    Workload {
        name: WorkloadName::new(ns, name),
        service_account: "web".into(),
        labels: labels.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
        address: addr.parse().expect("addr"),
        ports: vec![8080],
        meshed: true,
        ready,
        zone: String::new(),
        opaque_ports: Vec::new(),
    }
}

fn policies(yaml: &str) -> Vec<Event> {
    crate::policy::parse(yaml).expect("valid policy").into_iter().map(Event::PolicyApplied).collect()
}

/// A mesh: `web` (VIP 10.96.0.10, :80 → 8080) over two ready replicas and
/// one unready one, `store` (opaque :6379) in `data`, and an unmeshed
/// workload.
fn mesh() -> State {
    let mut s = State::new(MeshConfig::default());
    s.apply([
        Event::ServiceApplied(service(
            "default",
            "web",
            Some("10.96.0.10"),
            &[("app", "web")],
            &[(80, 8080, Protocol::Http)],
        )),
        Event::ServiceApplied(service(
            "data",
            "store",
            Some("10.96.0.20"),
            &[("app", "store")],
            &[(6379, 6379, Protocol::Opaque)],
        )),
        Event::ServiceApplied(service("default", "headless", None, &[], &[(80, 80, Protocol::Http)])),
        Event::WorkloadApplied(workload(
            "default",
            "web-v1-0",
            "127.0.1.1",
            &[("app", "web"), ("version", "v1")],
            true,
        )),
        Event::WorkloadApplied(workload(
            "default",
            "web-v2-0",
            "127.0.1.2",
            &[("app", "web"), ("version", "v2")],
            true,
        )),
        Event::WorkloadApplied(workload(
            "default",
            "web-v2-1",
            "127.0.1.3",
            &[("app", "web"), ("version", "v2")],
            false,
        )),
        Event::WorkloadApplied(workload("data", "store-0", "127.0.2.1", &[("app", "store")], true)),
        Event::WorkloadApplied(Workload {
            meshed: false,
            ports: vec![6379],
            ..workload("data", "legacy-0", "127.0.3.1", &[("app", "legacy")], true)
        }),
    ]);
    s
}

fn target(s: &str) -> Target {
    s.parse().expect("target")
}

#[test]
fn targets_parse() {
    assert_eq!(target("10.0.0.1:80"), Target::Addr("10.0.0.1:80".parse().expect("addr")));
    assert_eq!(target("[::1]:80"), Target::Addr("[::1]:80".parse().expect("addr")));
    assert_eq!(target("Web.Default.:80"), Target::Name { host: "web.default".into(), port: 80 });
    for bad in ["web", "web:", "web:0", "web:99999", ":80", "we b:80", "10.0.0.1:0"] {
        assert!(bad.parse::<Target>().is_err(), "{bad}");
    }
}

#[test]
fn resolves_services_endpoints_and_unknowns() {
    let s = mesh();
    let web = |set: &weft_api::discovery::EndpointSet| {
        set.endpoints.iter().map(|e| (e.address.clone(), e.workload.clone())).collect::<Vec<_>>()
    };
    let both =
        vec![("127.0.1.1:8080".to_string(), "web-v1-0".to_string()), ("127.0.1.2:8080".into(), "web-v2-0".into())];
    // (target, asker namespace, kind, service, endpoints)
    let cases: &[(&str, &str, SetKind, &str, Option<&Vec<(String, String)>>)] = &[
        ("10.96.0.10:80", "", SetKind::Service, "web.default", Some(&both)),
        ("web:80", "default", SetKind::Service, "web.default", Some(&both)),
        ("web:80", "", SetKind::Service, "web.default", Some(&both)),
        ("web.default:80", "data", SetKind::Service, "web.default", Some(&both)),
        ("web.default.svc:80", "data", SetKind::Service, "web.default", Some(&both)),
        ("web.default.svc.cluster.local:80", "data", SetKind::Service, "web.default", Some(&both)),
        ("WEB.default.svc.cluster.local.:80", "data", SetKind::Service, "web.default", Some(&both)),
        ("headless:80", "default", SetKind::Service, "headless.default", None),
        ("web:80", "data", SetKind::Unknown, "", None),
        ("10.96.0.10:81", "", SetKind::Unknown, "", None),
        ("web.default.svc.example.org:80", "", SetKind::Unknown, "", None),
        ("web.default.pod:80", "", SetKind::Unknown, "", None),
        ("127.0.1.1:8080", "", SetKind::Endpoint, "", None),
        ("127.0.3.1:6379", "", SetKind::Endpoint, "", None),
        ("192.0.2.1:80", "", SetKind::Unknown, "", None),
    ];
    for (t, ns, kind, svc, endpoints) in cases {
        let set = s.resolve(&target(t), ns);
        assert_eq!(set.kind, *kind as i32, "{t} from {ns:?}");
        assert_eq!(set.service, *svc, "{t}");
        assert_eq!(set.version, s.version);
        if let Some(e) = endpoints {
            assert_eq!(&web(&set), *e, "{t}: only ready endpoints, at the target port");
        }
    }

    let set = s.resolve(&target("web:80"), "default");
    let e = &set.endpoints[0];
    assert_eq!(e.identity, "spiffe://cluster.local/ns/default/sa/web");
    assert_eq!(e.labels.get("version").map(String::as_str), Some("v1"));
    assert!(e.meshed && e.ready);
    assert_eq!(e.weight, 1);
    assert_eq!(e.protocol_hint, ProtocolHint::Detect as i32);

    let store = s.resolve(&target("store.data:6379"), "");
    assert_eq!(store.endpoints[0].protocol_hint, ProtocolHint::Opaque as i32, "opaque service port");

    let ep = s.resolve(&target("127.0.1.1:8080"), "").endpoint.expect("endpoint");
    assert_eq!((ep.address.as_str(), ep.workload.as_str()), ("127.0.1.1:8080", "web-v1-0"));
    assert_eq!(ep.identity, "spiffe://cluster.local/ns/default/sa/web");
    let legacy = s.resolve(&target("127.0.3.1:6379"), "").endpoint.expect("endpoint");
    assert!(!legacy.meshed);
    assert_eq!(legacy.identity, "", "no identity to expect from an unmeshed workload");
}

fn slice(
    ns: &str,
    name: &str,
    service: &str,
    ports: &[(Option<&str>, u16)],
    eps: &[(&str, &str, Option<&str>)],
) -> EndpointSlice {
    EndpointSlice {
        name: NsName::new(ns, name),
        service: ServiceName::new(ns, service),
        ports: ports.iter().map(|(n, p)| SlicePort { name: n.map(Into::into), port: *p }).collect(),
        endpoints: eps
            .iter()
            .map(|(addr, state, pod)| SliceEndpoint {
                address: addr.parse().expect("addr"),
                ready: *state == "ready",
                serving: *state != "unready",
                terminating: *state == "terminating",
                pod: pod.map(Into::into),
                zone: String::new(),
            })
            .collect(),
    }
}

/// `api` (VIP 10.96.1.10, ports http:80 and metrics:9090) whose endpoints
/// are EndpointSlices, not its selector; Pods `api-0`, `api-1` behind them.
fn sliced() -> State {
    let mut s = State::new(MeshConfig::default());
    let mut api = service("prod", "api", Some("10.96.1.10"), &[("app", "api")], &[]);
    api.endpoints = EndpointSource::Slices;
    api.ports = vec![
        ServicePort { name: Some("http".into()), port: 80, target_port: 8080, protocol: Protocol::Http },
        ServicePort { name: Some("metrics".into()), port: 9090, target_port: 9090, protocol: Protocol::Opaque },
    ];
    s.apply([
        Event::ServiceApplied(api),
        Event::WorkloadApplied(workload("prod", "api-0", "127.0.5.1", &[("app", "api")], true)),
        Event::WorkloadApplied(workload("prod", "api-1", "127.0.5.2", &[("app", "api")], true)),
        // Selected by the selector but in no slice: not an endpoint.
        Event::WorkloadApplied(workload("prod", "api-stray", "127.0.5.9", &[("app", "api")], true)),
        Event::SliceApplied(slice(
            "prod",
            "api-abcde",
            "api",
            // A named target port resolved per Pod: 8081 here, not 8080.
            &[(Some("http"), 8081), (Some("metrics"), 9090)],
            &[
                ("127.0.5.1", "ready", Some("api-0")),
                ("127.0.5.2", "terminating", Some("api-1")),
                ("127.0.5.3", "unready", None),
                ("127.0.5.4", "ready", None),
            ],
        )),
    ]);
    s
}

fn addresses(set: &weft_api::discovery::EndpointSet) -> Vec<(String, String)> {
    set.endpoints.iter().map(|e| (e.address.clone(), e.identity.clone())).collect()
}

#[test]
fn endpoint_slices_give_a_services_endpoints_ports_and_identities() {
    let mut s = sliced();
    let id = "spiffe://cluster.local/ns/prod/sa/web";
    // (target, endpoints as (address, identity))
    let cases: &[(&str, &[(&str, &str)])] = &[
        ("10.96.1.10:80", &[("127.0.5.1:8081", id), ("127.0.5.4:8081", "")]),
        ("api.prod:80", &[("127.0.5.1:8081", id), ("127.0.5.4:8081", "")]),
        ("api.prod:9090", &[("127.0.5.1:9090", id), ("127.0.5.4:9090", "")]),
    ];
    for (t, want) in cases {
        let set = s.resolve(&target(t), "");
        let want: Vec<(String, String)> = want.iter().map(|(a, i)| ((*a).into(), (*i).into())).collect();
        assert_eq!(addresses(&set), want, "{t}: ready slice endpoints only; the Pod gives the identity");
        assert!(set.endpoints.iter().all(|e| e.ready));
    }
    let set = s.resolve(&target("api.prod:9090"), "");
    assert_eq!(set.endpoints[0].protocol_hint, ProtocolHint::Opaque as i32);
    assert!(set.endpoints[0].meshed && !set.endpoints[1].meshed, "an address without a Pod is unmeshed");

    // Nothing ready: the terminating-but-serving endpoint drains the rest.
    let mut only_draining =
        slice("prod", "api-abcde", "api", &[(Some("http"), 8081)], &[("127.0.5.2", "terminating", Some("api-1"))]);
    s.apply([Event::SliceApplied(only_draining.clone())]);
    assert_eq!(addresses(&s.resolve(&target("api.prod:80"), "")), [("127.0.5.2:8081".into(), id.into())]);
    // A second slice: endpoints of both, an address listed twice sent once.
    only_draining.endpoints[0].ready = true;
    only_draining.endpoints[0].terminating = false;
    let mut second = only_draining.clone();
    second.name = NsName::new("prod", "api-fghij");
    s.apply([Event::SliceApplied(only_draining), Event::SliceApplied(second)]);
    assert_eq!(addresses(&s.resolve(&target("api.prod:80"), "")), [("127.0.5.2:8081".into(), id.into())]);
    // The slice's port names the Service port: no `metrics` port, no endpoint.
    assert!(s.resolve(&target("api.prod:9090"), "").endpoints.is_empty());
    // Deleting the slices empties the Service, and the address index forgets them.
    s.apply([
        Event::SliceDeleted(NsName::new("prod", "api-abcde")),
        Event::SliceDeleted(NsName::new("prod", "api-fghij")),
    ]);
    assert!(s.resolve(&target("api.prod:80"), "").endpoints.is_empty());
    assert_eq!(s.slices_at("127.0.5.2".parse().expect("ip")).count(), 0);
}

#[test]
fn a_pod_in_a_slice_is_served_on_the_slices_target_port() {
    let s = sliced();
    let serving = |pod: &str, port: u16| {
        let mut v: Vec<String> = s
            .serving(&WorkloadName::new("prod", pod), port)
            .iter()
            .map(|(svc, sp)| format!("{}:{}", svc.name, sp.port))
            .collect();
        v.sort();
        v
    };
    assert_eq!(serving("api-0", 8081), ["api.prod:80"]);
    assert_eq!(serving("api-0", 9090), ["api.prod:9090"]);
    assert!(serving("api-0", 8080).is_empty(), "the Service's own targetPort is not what the slice says");
    assert!(serving("api-stray", 8081).is_empty(), "selected, but in no slice");
    let ep = s.resolve(&target("127.0.5.1:9090"), "").endpoint.expect("the Pod at that address");
    assert_eq!(ep.protocol_hint, ProtocolHint::Opaque as i32, "opaque through the slice's Service port");
}

#[test]
fn a_workloads_own_opaque_ports_are_opaque_whichever_service_reaches_them() {
    let mut s = sliced();
    let mut api0 = workload("prod", "api-0", "127.0.5.1", &[("app", "api")], true);
    api0.opaque_ports = vec![8081];
    s.apply([Event::WorkloadApplied(api0)]);
    // (target, the hint of the endpoint at 127.0.5.1)
    let hint_of = |set: weft_api::discovery::EndpointSet| {
        set.endpoint
            .or_else(|| set.endpoints.into_iter().find(|e| e.address.starts_with("127.0.5.1:")))
            .map(|e| e.protocol_hint)
    };
    let cases = [
        ("api.prod:80", Some(ProtocolHint::Opaque as i32)),
        ("127.0.5.1:8081", Some(ProtocolHint::Opaque as i32)),
        ("127.0.5.4:80", None),
    ];
    for (t, want) in cases {
        assert_eq!(hint_of(s.resolve(&target(t), "")), want, "{t}");
    }
    // The other endpoint of the same Service port is still detected.
    let set = s.resolve(&target("api.prod:80"), "");
    let other = set.endpoints.iter().find(|e| e.address == "127.0.5.4:8081").expect("the Pod-less endpoint");
    assert_eq!(other.protocol_hint, ProtocolHint::Detect as i32);
    assert!(s.inbound(&WorkloadName::new("prod", "api-0"), 8081).opaque, "inbound too");
    assert!(!s.inbound(&WorkloadName::new("prod", "api-1"), 8081).opaque);
}

#[test]
fn a_namespaces_opaque_ports_apply_to_its_workloads_that_name_none() {
    let mut s = sliced();
    s.apply([Event::NamespaceApplied(Namespace { name: "prod".into(), opaque_ports: vec![8081, 9000] })]);
    let mut api0 = workload("prod", "api-0", "127.0.5.1", &[("app", "api")], true);
    api0.opaque_ports = vec![9000];
    s.apply([Event::WorkloadApplied(api0)]);
    // (workload, port, opaque): api-1 inherits the Namespace's; api-0's own list replaces it.
    let cases = [("api-1", 8081, true), ("api-1", 9000, true), ("api-0", 8081, false), ("api-0", 9000, true)];
    for (w, port, want) in cases {
        assert_eq!(s.inbound(&WorkloadName::new("prod", w), port).opaque, want, "{w}:{port}");
    }
    s.apply([Event::NamespaceDeleted("prod".into())]);
    assert!(!s.inbound(&WorkloadName::new("prod", "api-1"), 8081).opaque, "gone with its Namespace");
}

#[test]
fn every_change_bumps_the_version_once_and_no_change_does_not() {
    let index = Index::new(MeshConfig::default());
    let w = workload("default", "a", "127.0.0.2", &[("app", "web")], true);
    assert_eq!(index.apply([Event::WorkloadApplied(w.clone())]), 1);
    assert_eq!(index.apply([Event::WorkloadApplied(w.clone())]), 1, "the same object again is no change");
    let other = workload("default", "b", "127.0.0.3", &[("app", "web")], true);
    assert_eq!(index.apply([Event::WorkloadApplied(other), Event::WorkloadDeleted(w.name.clone())]), 2, "one batch");
    assert_eq!(index.apply([Event::WorkloadDeleted(w.name)]), 2, "deleting the absent is no change");
    assert_eq!(index.state().workloads.len(), 1);
    let mut rx = index.subscribe();
    rx.mark_unchanged();
    index.apply([Event::ServiceDeleted(ServiceName::new("x", "y"))]);
    assert!(!rx.has_changed().expect("open"), "subscribers are not woken for nothing");
}

#[test]
fn outbound_defaults_without_policy() {
    let s = mesh();
    let p = s.outbound(&target("web:80"), "default");
    assert_eq!((p.service.as_str(), p.port), ("web.default", 80));
    assert!(p.routes.is_empty());
    assert!(p.sources.is_empty());
    let t = p.timeouts.expect("timeouts");
    assert_eq!((t.request_ms, t.backend_request_ms, t.connect_ms, t.idle_ms), (15_000, 0, 1000, 0));
    let r = p.retry.expect("retry");
    assert_eq!(r.attempts, 2);
    assert_eq!(r.retry_on, ["connect-failure"]);
    assert_eq!((r.backoff_base_ms, r.backoff_max_ms), (25, 250));
    let b = r.budget.expect("budget");
    assert_eq!((b.ratio, b.window_ms, b.min_retries_per_second), (0.2, 10_000, 10));
    assert_eq!(r.max_body_bytes, 65536);
    assert_eq!(p.load_balancer.expect("lb").kind, weft_api::policy::load_balancer::Kind::Ewma as i32);
    assert_eq!(p.circuit_breaker.expect("cb").consecutive_failures, 0);

    let unknown = s.outbound(&target("192.0.2.1:443"), "");
    assert_eq!((unknown.service.as_str(), unknown.port), ("", 443));
    assert_eq!(unknown.timeouts.expect("timeouts").connect_ms, 1000, "mesh defaults apply to anything");
}

const LAYERS: &str = "
apiVersion: policy.weft.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: mesh, namespace: weft}
spec:
  targetRef: {kind: Mesh}
  timeouts: {request: 10s, idle: 5m}
  retries: {attempts: 5}
---
apiVersion: policy.weft.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: ns}
spec:
  targetRef: {kind: Namespace, name: default}
  timeouts: {request: 5s}
  circuitBreaker: {consecutiveFailures: 7}
---
apiVersion: policy.weft.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: svc-b}
spec:
  targetRef: {kind: Service, name: web}
  timeouts: {connect: 3s}
  loadBalancer: {type: roundRobin}
---
apiVersion: policy.weft.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: svc-a}
spec:
  targetRef: {kind: Service, name: web}
  timeouts: {connect: 2s}
---
apiVersion: policy.weft.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: other-ns, namespace: data}
spec:
  targetRef: {kind: Namespace, name: data}
  timeouts: {request: 1ms}
---
apiVersion: policy.weft.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: route}
spec:
  targetRef: {group: gateway.networking.k8s.io, kind: HTTPRoute, name: web}
  timeouts: {request: 1s, backendRequest: 800ms}
  retries: {retryOn: [5xx]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web}
spec:
  parentRefs: [{group: core, kind: Service, name: web, port: 80}]
  rules:
    - matches: [{path: {value: /slow}}]
      timeouts: {request: 30s}
      retry: {codes: [503], attempts: 1}
    - matches: [{path: {value: /}}]
";

#[test]
fn outbound_precedence_route_service_namespace_mesh() {
    let mut s = mesh();
    s.apply(policies(LAYERS));
    let p = s.outbound(&target("10.96.0.10:80"), "default");

    // Service level: mesh < namespace < service, field by field.
    let t = p.timeouts.expect("timeouts");
    assert_eq!(t.request_ms, 5_000, "namespace beats mesh");
    assert_eq!(t.idle_ms, 300_000, "mesh fills what nobody else sets");
    assert_eq!(t.connect_ms, 2_000, "svc-a sorts before svc-b and wins the tie");
    assert_eq!(p.retry.as_ref().expect("retry").attempts, 5);
    assert_eq!(p.circuit_breaker.expect("cb").consecutive_failures, 7);
    assert_eq!(
        p.load_balancer.as_ref().expect("lb").kind,
        weft_api::policy::load_balancer::Kind::RoundRobin as i32,
        "svc-b's field that svc-a leaves unset still applies"
    );
    assert_eq!(
        p.sources,
        [
            "HTTPRoute/default/web",
            "TrafficPolicy/default/ns",
            "TrafficPolicy/default/route",
            "TrafficPolicy/default/svc-a",
            "TrafficPolicy/default/svc-b",
            "TrafficPolicy/weft/mesh",
        ]
    );

    // Route level: the rule's own fields > route policy > service.
    let slow = p.routes.iter().find(|r| r.name == "default/web#0").expect("rule 0");
    let t = slow.timeouts.expect("timeouts");
    assert_eq!((t.request_ms, t.backend_request_ms, t.connect_ms), (30_000, 800, 2_000));
    let r = slow.retry.as_ref().expect("retry");
    assert_eq!(r.attempts, 1);
    assert_eq!(r.retry_on, ["503", "connect-failure"], "GEP-1731 codes, plus connection errors");
    let root = p.routes.iter().find(|r| r.name == "default/web#1").expect("rule 1");
    let t = root.timeouts.expect("timeouts");
    assert_eq!((t.request_ms, t.backend_request_ms), (1_000, 800));
    assert_eq!(root.retry.as_ref().expect("retry").retry_on, ["5xx"]);
    assert_eq!(root.retry.as_ref().expect("retry").attempts, 5);

    // Another namespace's policies do not leak in.
    let store = s.outbound(&target("store.data:6379"), "");
    assert_eq!(store.timeouts.expect("timeouts").request_ms, 1, "data's own namespace policy");
    assert!(store.routes.is_empty());
}

const ROUTES: &str = "
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: b-split}
spec:
  parentRefs: [{group: core, kind: Service, name: web}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /}}]
      backendRefs:
        - {name: web-v1, port: 80, weight: 90}
        - {name: web-v2, port: 80, weight: 10}
        - {name: web-v3, port: 80, weight: 0}
    - matches:
        - path: {type: PathPrefix, value: /api}
        - path: {type: PathPrefix, value: /api/v2}
    - matches: [{path: {type: Exact, value: /api}}]
      filters: [{type: RequestRedirect, requestRedirect: {hostname: example.com}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: a-canary}
spec:
  parentRefs: [{group: core, kind: Service, name: web}]
  rules:
    - matches:
        - path: {value: /api}
          headers: [{name: x-canary, value: 'yes'}]
        - path: {value: /api}
          method: POST
        - path: {type: RegularExpression, value: '/api/[0-9]+'}
      backendRefs: [{name: web-v2, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: elsewhere}
spec:
  parentRefs: [{group: core, kind: Service, name: web, port: 8080}]
";

#[test]
fn routes_are_ordered_by_gateway_api_precedence() {
    let mut s = mesh();
    s.apply(policies(ROUTES));
    let p = s.outbound(&target("web:80"), "default");
    let order: Vec<(String, String, String)> = p
        .routes
        .iter()
        .map(|r| {
            let m = &r.matches[0];
            let path = m.path.as_ref().expect("path");
            let kind = match MatchKind::try_from(path.kind).expect("kind") {
                MatchKind::Exact => "=",
                MatchKind::Prefix => "^",
                MatchKind::Regex => "~",
            };
            (r.name.clone(), format!("{kind}{}", path.value), format!("{}{}", m.method, m.headers.len()))
        })
        .collect();
    let want: Vec<(String, String, String)> = [
        ("default/b-split#2", "=/api", "0"),
        ("default/a-canary#0", "~/api/[0-9]+", "0"),
        ("default/b-split#1", "^/api/v2", "0"),
        ("default/a-canary#0", "^/api", "POST0"),
        ("default/a-canary#0", "^/api", "1"),
        ("default/b-split#1", "^/api", "0"),
        ("default/b-split#0", "^/", "0"),
    ]
    .iter()
    .map(|(a, b, c)| ((*a).into(), (*b).into(), (*c).into()))
    .collect();
    assert_eq!(order, want);

    let split = p.routes.last().expect("split");
    let weights: Vec<(String, u32)> = split.backends.iter().map(|b| (b.service.clone(), b.weight)).collect();
    assert_eq!(weights, [("web-v1.default".into(), 90), ("web-v2.default".into(), 10), ("web-v3.default".into(), 0)]);
    let parent = p.routes.iter().find(|r| r.name == "default/b-split#1").expect("no backendRefs");
    assert_eq!(parent.backends.len(), 1);
    assert_eq!((parent.backends[0].service.as_str(), parent.backends[0].port), ("web.default", 80), "the parent");
    let redirect = &p.routes[0];
    assert!(redirect.backends.is_empty(), "a redirect answers itself");
    assert_eq!(redirect.filters.len(), 1);
    assert!(!p.sources.iter().any(|s| s.contains("elsewhere")), "a route for another port does not attach");
}

#[test]
fn consumer_routes_replace_producer_routes_for_their_namespace() {
    let mut s = mesh();
    s.apply(policies(
        "
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: producer}
spec:
  parentRefs: [{group: core, kind: Service, name: web}]
  rules: [{backendRefs: [{name: web, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: consumer, namespace: data}
spec:
  parentRefs: [{group: core, kind: Service, name: web, namespace: default}]
  rules: [{backendRefs: [{name: web-v2, namespace: default, port: 80}]}]
",
    ));
    let names = |ns: &str| -> Vec<String> {
        s.outbound(&target("web.default:80"), ns).routes.iter().map(|r| r.name.clone()).collect()
    };
    assert_eq!(names("default"), ["default/producer#0"]);
    assert_eq!(names("data"), ["data/consumer#0"]);
    assert_eq!(names("other"), ["default/producer#0"]);
}

const ACCESS: &str = "
apiVersion: policy.weft.dev/v1alpha1
kind: AccessPolicy
metadata: {name: web-from-data}
spec:
  targetRef: {kind: Service, name: web, port: 80}
  from:
    namespaces: [data]
    serviceAccounts: [{name: loader}, {name: cron, namespace: batch}]
---
apiVersion: policy.weft.dev/v1alpha1
kind: AccessPolicy
metadata: {name: web-wrong-port}
spec:
  targetRef: {kind: Service, name: web, port: 8080}
  from: {unauthenticated: true}
---
apiVersion: policy.weft.dev/v1alpha1
kind: AccessPolicy
metadata: {name: admin-route}
spec:
  targetRef: {group: gateway.networking.k8s.io, kind: HTTPRoute, name: admin}
  mode: audit
  from: {identities: ['spiffe://cluster.local/ns/ops/*']}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: admin}
spec:
  parentRefs: [{group: core, kind: Service, name: web}]
  rules: [{matches: [{path: {value: /admin}}]}]
---
apiVersion: policy.weft.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: mesh-limit, namespace: weft}
spec:
  targetRef: {kind: Mesh}
  rateLimit: {requestsPerSecond: 1000}
---
apiVersion: policy.weft.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: web-limit}
spec:
  targetRef: {kind: Service, name: web}
  rateLimit: {requestsPerSecond: 50, perIdentity: true}
";

#[test]
fn inbound_policy() {
    let mut s = mesh();
    let web = WorkloadName::new("default", "web-v1-0");

    let open = s.inbound(&web, 8080);
    assert_eq!(open.default_access, DefaultAccess::AllowAll as i32);
    assert_eq!(open.mtls_mode, weft_api::policy::inbound_policy::MtlsMode::Permissive as i32);
    assert!(open.authorizations.is_empty() && open.rate_limit.is_none() && !open.opaque);
    assert!(open.routes.is_empty(), "no route-scoped authorization, no routes");

    s.apply(policies(ACCESS));
    let p = s.inbound(&web, 8080);
    assert_eq!(p.default_access, DefaultAccess::Deny as i32, "once authorizations exist, the rest is denied");
    let names: Vec<&str> = p.authorizations.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(
        names,
        ["default/admin-route", "default/web-from-data"],
        "port 8080 is the target port, not the service port"
    );
    let svc = &p.authorizations[1];
    assert_eq!(svc.namespaces, ["data"]);
    assert_eq!(svc.service_accounts, ["default/loader", "batch/cron"]);
    assert!(svc.routes.is_empty() && !svc.audit && !svc.unauthenticated);
    let route = &p.authorizations[0];
    assert_eq!(route.routes, ["default/admin"]);
    assert!(route.audit);
    // The routes ride along, so the proxy can tell which one a request takes.
    let names: Vec<&str> = p.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["default/admin#0"]);
    assert_eq!(p.routes[0].matches[0].path.as_ref().map(|m| m.value.as_str()), Some("/admin"));
    let rl = p.rate_limit.expect("rate limit");
    assert_eq!((rl.requests_per_second, rl.burst, rl.per_identity), (50, 50, true), "service beats mesh");

    // A port no service targets: mesh defaults, no limit.
    let other = s.inbound(&web, 9999);
    assert!(other.authorizations.is_empty() && other.rate_limit.is_none());
    assert_eq!(other.default_access, DefaultAccess::AllowAll as i32);

    // An opaque port, under the mesh-wide limit only.
    let store = s.inbound(&WorkloadName::new("data", "store-0"), 6379);
    assert!(store.opaque);
    assert_eq!(store.rate_limit.map(|r| r.requests_per_second), Some(1000));

    // Not registered (yet): defaults.
    let ghost = s.inbound(&WorkloadName::new("default", "ghost"), 8080);
    assert_eq!(ghost.default_access, DefaultAccess::AllowAll as i32);
    assert_eq!(ghost.version, s.version);
}

/// Every question asked of every state in a sequence of events of every
/// kind: wherever two consecutive states give a question the same stamp,
/// they give it the same answer. This is what lets a stream skip
/// recomputing (`grpc/watch.rs`); a stamp that missed a dependency fails
/// here. Also checks that the label index finds exactly what a scan of
/// every workload would.
#[test]
fn equal_stamps_mean_equal_answers() {
    let mut api = service("prod", "api", Some("10.96.1.10"), &[("app", "api")], &[(80, 8080, Protocol::Http)]);
    api.endpoints = EndpointSource::Slices;
    let web = service("default", "web", Some("10.96.0.10"), &[("app", "web")], &[(80, 8080, Protocol::Http)]);
    let mut web_v2 = web.clone();
    web_v2.selector.insert("version".into(), "v2".into());
    let web_0 = workload("default", "web-0", "127.0.1.1", &[("app", "web")], true);
    let mut web_0_v2 = web_0.clone();
    web_0_v2.labels.insert("version".into(), "v2".into());
    let mut web_0_unready = web_0_v2.clone();
    web_0_unready.ready = false;
    let mut web_0_opaque = web_0_v2.clone();
    web_0_opaque.opaque_ports = vec![8080];
    let api_0 = workload("prod", "api-0", "127.0.5.1", &[("app", "api")], true);
    let mut api_0_moved = api_0.clone();
    api_0_moved.address = "127.0.5.7".parse().expect("addr");
    let api_slice = |state| slice("prod", "api-1", "api", &[(None, 8080)], &[("127.0.5.1", state, Some("api-0"))]);
    let ns = |name: &str, ports: Vec<u16>| Namespace { name: name.into(), opaque_ports: ports };

    let mut events = vec![
        Event::ServiceApplied(web.clone()),
        Event::WorkloadApplied(web_0.clone()),
        Event::WorkloadApplied(workload("default", "web-1", "127.0.1.2", &[("app", "web")], true)),
        Event::WorkloadApplied(workload("default", "other", "127.0.1.3", &[("app", "other")], true)),
        Event::WorkloadApplied(workload("prod", "web-x", "127.0.1.4", &[("app", "web")], true)),
        Event::WorkloadApplied(web_0_v2.clone()),
        Event::ServiceApplied(web_v2),
        Event::WorkloadApplied(web_0_unready),
        Event::WorkloadApplied(web_0_opaque),
        Event::NamespaceApplied(ns("default", vec![8080])),
        Event::NamespaceApplied(ns("prod", vec![9090])),
        Event::ServiceApplied(web.clone()),
        Event::ServiceApplied(api),
        Event::WorkloadApplied(api_0.clone()),
        Event::SliceApplied(api_slice("ready")),
        Event::SliceApplied(api_slice("terminating")),
        Event::WorkloadApplied(api_0_moved),
        Event::WorkloadApplied(api_0),
        Event::WorkloadApplied(workload("prod", "api-0", "127.0.5.1", &[("app", "api"), ("v", "2")], true)),
    ];
    events.extend(policies(ACCESS));
    events.extend(policies(ROUTES));
    events.extend([
        Event::SliceDeleted(NsName::new("prod", "api-1")),
        Event::WorkloadDeleted(WorkloadName::new("default", "web-0")),
        Event::NamespaceDeleted("default".into()),
        Event::ServiceDeleted(ServiceName::new("default", "web")),
        Event::WorkloadApplied(web_0),
    ]);

    let targets = ["web:80", "10.96.0.10:80", "web.default.svc.cluster.local:80", "api.prod:80", "10.96.1.10:80"]
        .into_iter()
        .chain(["127.0.1.1:8080", "127.0.5.1:8080", "127.0.5.7:8080", "nothing:80", "web:81"])
        .map(target)
        .collect::<Vec<_>>();
    let askers = ["default", "prod", "data"];
    let workloads = ["web-0.default", "web-1.default", "api-0.prod", "gone.default"]
        .map(|n| NsName::parse_dotted(n).expect("name"));
    let mut before = State::new(MeshConfig::default());
    for (i, event) in events.into_iter().enumerate() {
        let mut after = before.clone();
        after.apply([event.clone()]);
        for t in &targets {
            for ns in askers {
                if before.resolve_stamp(t, ns) == after.resolve_stamp(t, ns) {
                    let (mut a, mut b) = (before.resolve(t, ns), after.resolve(t, ns));
                    (a.version, b.version) = (0, 0);
                    assert_eq!(a, b, "event {i} {event:?}: resolve({t}, {ns}) changed under an equal stamp");
                }
                if before.outbound_stamp() == after.outbound_stamp() {
                    let (mut a, mut b) = (before.outbound(t, ns), after.outbound(t, ns));
                    (a.version, b.version) = (0, 0);
                    assert_eq!(a, b, "event {i} {event:?}: outbound({t}, {ns}) changed under an equal stamp");
                }
            }
        }
        for w in &workloads {
            if before.inbound_stamp(w) == after.inbound_stamp(w) {
                for port in [80, 8080, 9090] {
                    let (mut a, mut b) = (before.inbound(w, port), after.inbound(w, port));
                    (a.version, b.version) = (0, 0);
                    assert_eq!(a, b, "event {i} {event:?}: inbound({w}, {port}) changed under an equal stamp");
                }
            }
        }
        for svc in after.services.values() {
            let scanned: Vec<&WorkloadName> =
                after.workloads.values().filter(|w| svc.selects(w)).map(|w| &w.name).collect();
            let indexed: Vec<&WorkloadName> = after.selected(svc).map(|w| &w.name).collect();
            assert_eq!(indexed, scanned, "event {i}: the label index of {}", svc.name);
        }
        before = after;
    }
}
