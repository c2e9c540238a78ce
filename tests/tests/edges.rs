//! Edge and route latency metrics between two meshed pods: after N
//! requests, both proxies count exactly N on the edge, each naming the
//! other side's verified identity, and the caller's route histogram holds
//! exactly N samples.
//!
//! ```text
//! cp: weft-control with a CA
//! a: curl + proxy (sa/a) ══ mTLS ══► b: proxy (sa/b) ─► app (web.default)
//!    outbound edge: peer=web.default, peer_id=sa/b, tls=true
//!                                    inbound edge: peer="", peer_id=sa/a, tls=true
//! ```

use weft_tests::{Mesh, WEB_AND_STORE};

const ID_A: &str = "spiffe://cluster.local/ns/default/sa/a";
const ID_B: &str = "spiffe://cluster.local/ns/default/sa/b";
const N: usize = 7;

#[test]
fn both_sides_of_a_meshed_edge_count_every_response_with_the_peer_identity() {
    let mesh = Mesh::new();
    let cp = mesh.pod("cp").run_control_with_ca(WEB_AND_STORE, &[]);
    let (_b, _apps, proxy_b) = mesh.web_and_store_pod(&cp);
    let a = mesh.pod("a");
    let proxy_a = a.run_meshed_proxy(&cp, "a", None, &[]);

    for i in 0..N {
        let curl = a.curl(&[&format!("http://198.18.0.200/edge/{i}")]);
        assert_eq!(curl.status(), 200, "{}", curl.run);
    }
    // One failure (the app answers 503 to /status?code=503) counts on both sides too.
    let curl = a.curl(&["http://198.18.0.200/status?code=503"]);
    assert_eq!(curl.status(), 503, "{}", curl.run);

    let out = [("direction", "outbound"), ("peer", "web.default"), ("peer_id", ID_B), ("tls", "true")];
    let success = [out.as_slice(), &[("classification", "success")]].concat();
    let failure = [out.as_slice(), &[("classification", "failure")]].concat();
    proxy_a.wait_metric("weft_edge_responses_total", &success, N as f64);
    proxy_a.wait_metric("weft_edge_responses_total", &failure, 1.0);
    proxy_a.wait_metric("weft_edge_response_latency_seconds_count", &out, (N + 1) as f64);
    // Nothing counted under another key on the caller's side.
    proxy_a.wait_metric("weft_edge_responses_total", &[("direction", "outbound")], (N + 1) as f64);
    // The route histogram (no routes: route="default") beside its counter.
    let route = [("route", "default"), ("backend", "web.default:80"), ("classification", "success")];
    proxy_a.wait_metric("weft_route_response_latency_seconds_count", &route, N as f64);
    proxy_a.wait_metric("weft_route_requests_total", &route, N as f64);

    let inb = [("direction", "inbound"), ("peer", ""), ("peer_id", ID_A), ("tls", "true")];
    let success = [inb.as_slice(), &[("classification", "success")]].concat();
    let failure = [inb.as_slice(), &[("classification", "failure")]].concat();
    proxy_b.wait_metric("weft_edge_responses_total", &success, N as f64);
    proxy_b.wait_metric("weft_edge_responses_total", &failure, 1.0);
    proxy_b.wait_metric("weft_edge_response_latency_seconds_count", &inb, (N + 1) as f64);
    proxy_b.wait_metric("weft_edge_responses_total", &[("direction", "inbound")], (N + 1) as f64);
    let m = proxy_b.metrics();
    assert!(
        m.matching("weft_edge_response_latency_seconds_bucket", &[]).all(|s| !s.labels.contains_key("classification")),
        "the edge histogram has a classification label:\n{}",
        m.text
    );
}
