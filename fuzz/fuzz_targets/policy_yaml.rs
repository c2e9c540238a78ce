//! Policy resources (`weft_control::policy::parse`): a file of HTTPRoute,
//! TrafficPolicy and AccessPolicy YAML documents, as an operator (or
//! anyone who can write to the policy directory / create the objects)
//! writes them, then turned into the policy proxies receive.
//!
//! Checks: no panic and no hang in parsing; an error points inside the
//! file; the document count is bounded; and every accepted file can be
//! applied to the index and answered for (outbound for the route's Service,
//! inbound for a workload behind it) without a panic.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use weft_control::index::{
    EndpointSource, Event, MeshConfig, Protocol, Service, ServiceName, ServicePort, State, Target, Workload,
    WorkloadName,
};
use weft_control::policy::{MAX_DOCUMENTS, parse};

/// `web` in `default` (the name the seeds target), :80 → 8080, over one
/// workload, so policy resources have something to attach to.
fn mesh() -> Vec<Event> {
    let labels: BTreeMap<String, String> = [("app".to_owned(), "web".to_owned())].into();
    vec![
        Event::ServiceApplied(Service {
            name: ServiceName::new("default", "web"),
            virtual_ip: Some("10.96.0.10".parse().expect("ip")),
            ports: vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                target_port: 8080,
                protocol: Protocol::Http,
            }],
            selector: labels.clone(),
            endpoints: EndpointSource::Selector,
        }),
        Event::WorkloadApplied(Workload {
            name: WorkloadName::new("default", "web-0"),
            service_account: "web".into(),
            labels,
            address: "10.0.0.1".parse().expect("ip"),
            ports: vec![8080],
            meshed: true,
            ready: true,
            zone: String::new(),
            opaque_ports: Vec::new(),
        }),
    ]
}

/// The last line an error may name. YAML ends a line at `\r\n`, a lone
/// `\r`, `\n`, and the Unicode breaks NEL, LS and PS (YAML 1.1, libyaml),
/// so a reported line may exceed what `str::lines` counts; and at the end
/// of a file without a final break libyaml's position is one line further.
fn yaml_lines(text: &str) -> usize {
    let text = text.replace("\r\n", "\n");
    2 + text.chars().filter(|c| matches!(c, '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}')).count()
}

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else { return };
    let resources = match parse(text) {
        Ok(r) => r,
        Err(e) => {
            let lines = yaml_lines(text);
            if let Some(line) = e.line {
                assert!(line <= lines, "error at line {line} of a {lines}-line file: {e}");
            }
            return;
        }
    };
    assert!(resources.len() <= MAX_DOCUMENTS);

    let mut state = State::new(MeshConfig::default());
    state.apply(mesh());
    state.apply(resources.into_iter().map(Event::PolicyApplied));
    for target in ["web.default:80", "10.96.0.10:80", "web.default.svc.cluster.local:80"] {
        let target: Target = target.parse().expect("a valid target");
        let _ = state.outbound(&target, "default");
    }
    let _ = state.inbound(&WorkloadName::new("default", "web-0"), 8080);
});
