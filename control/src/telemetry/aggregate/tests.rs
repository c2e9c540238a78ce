use super::*;
use crate::telemetry::prom::parse;

fn close(got: Option<f64>, want: f64) -> bool {
    got.is_some_and(|g| (g - want).abs() < 1e-9)
}

fn snap(at: f64, text: &str) -> Snapshot {
    Snapshot { at, samples: Arc::new(keep(parse(text))) }
}

/// An inbound proxy that answered `ok` successes and `failed` failures,
/// `fast` of them within 1 ms and the rest within 10 ms, with `conns`
/// connections open.
fn inbound_text(ok: u32, failed: u32, fast: u32, conns: u32) -> String {
    let total = ok + failed;
    format!(
        "weft_responses_total{{direction=\"inbound\",authority=\"web\",status_code=\"200\",classification=\"success\"}} {ok}\n\
         weft_responses_total{{direction=\"inbound\",authority=\"web\",status_code=\"503\",classification=\"failure\"}} {failed}\n\
         weft_responses_total{{direction=\"outbound\",authority=\"store\",status_code=\"200\",classification=\"success\"}} 999\n\
         weft_response_latency_seconds_bucket{{direction=\"inbound\",le=\"0.001\"}} {fast}\n\
         weft_response_latency_seconds_bucket{{direction=\"inbound\",le=\"0.01\"}} {total}\n\
         weft_response_latency_seconds_bucket{{direction=\"inbound\",le=\"+Inf\"}} {total}\n\
         weft_response_latency_seconds_sum{{direction=\"inbound\"}} 1.5\n\
         weft_tcp_open_connections{{direction=\"inbound\",protocol=\"http1\"}} {conns}\n\
         weft_tcp_open_connections{{direction=\"outbound\",protocol=\"http1\"}} 50\n\
         weft_unrelated_total 5\n"
    )
}

fn pod(ns: &str, name: &str, labels: &[(&str, &str)], meshed: bool, sa: &str) -> Pod {
    let labels: BTreeMap<String, String> = labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    Pod {
        name: NsName::new(ns, name),
        workload: workload_of(name, &labels),
        labels,
        address: "10.0.0.1".parse().unwrap(),
        meshed,
        identity: if meshed { format!("spiffe://cluster.local/ns/{ns}/sa/{sa}") } else { String::new() },
    }
}

#[test]
fn increases_per_series_with_restarts_and_new_series() {
    let before = parse("a{x=\"1\"} 10\na{x=\"2\"} 50\nweft_tcp_open_connections 3\n");
    let after = parse("a{x=\"1\"} 25\na{x=\"2\"} 7\na{x=\"3\"} 4\nweft_tcp_open_connections 9\n");
    let grew: Vec<(String, f64)> =
        increase(&before, &after).into_iter().map(|s| (s.labels["x"].clone(), s.value)).collect();
    // x=2 went down: the proxy restarted, and counted 7 since.
    assert_eq!(grew, [("1".into(), 15.0), ("2".into(), 7.0), ("3".into(), 4.0)], "gauges are not increases");
}

#[test]
fn spans_pick_the_window_within_the_history() {
    let h: Vec<Snapshot> = (0..10).map(|i| snap(100.0 + 5.0 * f64::from(i), &inbound_text(i * 10, 0, 0, 0))).collect();
    #[rustfmt::skip]
    let cases: [(f64, f64, Option<(f64, f64)>); 6] = [
        // end, window → (seconds, requests)
        (145.0, 30.0, Some((30.0, 60.0))),
        (145.0, 10.0, Some((10.0, 20.0))),
        (200.0, 30.0, Some((30.0, 60.0))),  // the newest scrape is at 145
        (146.0, 600.0, Some((45.0, 90.0))), // the whole history
        (100.0, 30.0, Some((0.0, 0.0))),    // one scrape: no rate yet
        (99.0, 30.0, None),
    ];
    for (end, window, want) in cases {
        let got = span(&h, end, window).map(|s| (s.seconds, inbound(&s).requests()));
        assert_eq!(got, want, "end {end} window {window}");
    }
    // A scrape 1 s late still opens a 30 s window.
    let late = [snap(99.0, &inbound_text(0, 0, 0, 0)), snap(130.0, &inbound_text(62, 0, 0, 0))];
    assert_eq!(span(&late, 130.0, 30.0).map(|s| s.seconds), Some(31.0));
}

#[test]
fn golden_metrics_of_the_inbound_side() {
    let s = span(&[snap(0.0, &inbound_text(100, 0, 100, 2)), snap(10.0, &inbound_text(1090, 10, 600, 3))], 10.0, 30.0)
        .unwrap();
    let g = inbound(&s);
    assert_eq!((g.success, g.failure, g.rps), (990.0, 10.0, 100.0));
    assert_eq!(g.success_ratio(), Some(0.99));
    // Of 1000 new requests, 500 within 1 ms, all within 10 ms: the median
    // is at the top of the first bucket, p99 at 1 + 9 × 490/500 ms.
    assert!(close(g.quantile_ms(0.5), 1.0));
    assert!(close(g.quantile_ms(0.99), 1.0 + 9.0 * 490.0 / 500.0));
    assert_eq!(Golden::default().success_ratio(), None);
    assert_eq!(Golden::default().quantile_ms(0.5), None);
}

#[test]
fn workloads_of_pods() {
    let hash = |h: &str| BTreeMap::from([("pod-template-hash".to_owned(), h.to_owned())]);
    #[rustfmt::skip]
    let cases: [(&str, BTreeMap<String, String>, &str); 7] = [
        ("web-v1-7d9f8c6b5-x2kqz", hash("7d9f8c6b5"), "web-v1"),
        ("web-v1-0", BTreeMap::new(), "web-v1"),
        ("redis-12", BTreeMap::new(), "redis"),
        ("load", BTreeMap::new(), "load"),
        ("web-v1-abc", BTreeMap::new(), "web-v1-abc"),
        ("web-zz-x2kqz", hash("7d9f8c6b5"), "web-zz-x2kqz"),
        ("-3", BTreeMap::new(), "-3"),
    ];
    for (name, labels, want) in cases {
        assert_eq!(workload_of(name, &labels), want, "{name}");
    }
}

fn two_versions() -> (Vec<Pod>, Vec<Option<Span>>) {
    let pods = vec![
        pod("default", "web-v1-0", &[("app", "web"), ("version", "v1")], true, "web"),
        pod("default", "web-v1-1", &[("app", "web"), ("version", "v1")], true, "web"),
        pod("default", "web-v2-0", &[("app", "web"), ("version", "v2")], false, "web"),
        pod("shop", "db-0", &[("app", "db")], true, "db"),
    ];
    let span = |a: (u32, u32, u32, u32), b: (u32, u32, u32, u32)| {
        let h = [snap(0.0, &inbound_text(a.0, a.1, a.2, a.3)), snap(10.0, &inbound_text(b.0, b.1, b.2, b.3))];
        span(&h, 10.0, 30.0)
    };
    let spans = vec![
        span((0, 0, 0, 0), (100, 0, 100, 1)),
        span((0, 0, 0, 0), (300, 0, 300, 2)),
        span((0, 0, 0, 0), (90, 10, 0, 4)),
        None,
    ];
    (pods, spans)
}

#[test]
fn stat_by_workload() {
    let (pods, spans) = two_versions();
    let rows = stat_workloads(&pods, &spans, None);
    let brief: Vec<(&str, &str, &str, &str, Option<f64>, f64, f64)> =
        rows.iter().map(|r| (&*r.namespace, &*r.name, &*r.version, &*r.meshed, r.success, r.rps, r.tcp_conn)).collect();
    assert_eq!(
        brief,
        [
            ("default", "web-v1", "v1", "2/2", Some(1.0), 40.0, 3.0),
            ("default", "web-v2", "v2", "0/1", Some(0.9), 10.0, 4.0),
            ("shop", "db", "", "1/1", None, 0.0, 0.0),
        ]
    );
    assert!(close(rows[0].p50_ms, 0.5), "400 requests within 1 ms: {:?}", rows[0].p50_ms);
    assert_eq!(rows[2].p99_ms, None);
    assert_eq!(stat_workloads(&pods, &spans, Some("shop")).len(), 1);
    let json = serde_json::to_value(&rows[2]).unwrap();
    assert_eq!(json["kind"], "workload");
    assert!(json["success"].is_null());
}

#[test]
fn stat_by_service_adds_a_row_per_version() {
    let (pods, spans) = two_versions();
    let services = [
        ServicePods { name: NsName::new("default", "web"), pods: vec![0, 1, 2] },
        ServicePods { name: NsName::new("default", "web-v1"), pods: vec![0, 1] },
        ServicePods { name: NsName::new("shop", "db"), pods: vec![] },
    ];
    let rows = stat_services(&services, &pods, &spans, None);
    let brief: Vec<(&str, &str, &str, f64, Option<f64>)> =
        rows.iter().map(|r| (&*r.name, &*r.version, &*r.meshed, r.rps, r.success)).collect();
    assert_eq!(
        brief,
        [
            ("web", "", "2/3", 50.0, Some(490.0 / 500.0)),
            ("web", "v1", "2/2", 40.0, Some(1.0)),
            ("web", "v2", "0/1", 10.0, Some(0.9)),
            ("web-v1", "", "2/2", 40.0, Some(1.0)),
            ("db", "", "0/0", 0.0, None),
        ]
    );
    assert!(rows.iter().all(|r| r.kind == "service"));
    assert_eq!(stat_services(&services, &pods, &spans, Some("default")).len(), 4);
}

fn route_text(rows: &[(&str, &str, u32, u32, u32)]) -> String {
    let mut out = String::new();
    for (route, backend, ok, failed, fast) in rows {
        let total = ok + failed;
        out += &format!(
            "weft_route_requests_total{{route=\"{route}\",backend=\"{backend}\",classification=\"success\"}} {ok}\n\
             weft_route_requests_total{{route=\"{route}\",backend=\"{backend}\",classification=\"failure\"}} {failed}\n\
             weft_route_response_latency_seconds_bucket{{route=\"{route}\",backend=\"{backend}\",classification=\"success\",le=\"0.001\"}} {fast}\n\
             weft_route_response_latency_seconds_bucket{{route=\"{route}\",backend=\"{backend}\",classification=\"success\",le=\"+Inf\"}} {total}\n"
        );
    }
    out
}

#[test]
fn routes_sum_the_callers_and_carry_the_weights() {
    let caller = |rows: &[(&str, &str, u32, u32, u32)]| {
        span(&[snap(0.0, &route_text(&[])), snap(10.0, &route_text(rows))], 10.0, 30.0)
    };
    let spans = vec![
        caller(&[("default/web#0", "web-v1.default", 90, 0, 90), ("default/web#0", "web-v2.default", 9, 1, 10)]),
        caller(&[("default/web#0", "web-v1.default:80", 90, 0, 0), ("default", "store.default", 5, 0, 5)]),
        caller(&[("default/other#0", "x.default", 5, 0, 5), ("default", "web.default", 7, 0, 7)]),
        None,
    ];
    let policy = [
        PolicyBackend { route: "default/web#0".into(), backend: "web-v1.default".into(), weight: Some(90) },
        PolicyBackend { route: "default/web#0".into(), backend: "web-v2.default".into(), weight: Some(10) },
        PolicyBackend { route: "default/web#1".into(), backend: "web-v3.default".into(), weight: Some(1) },
    ];
    let rows = routes("web.default", &policy, &spans);
    let brief: Vec<(&str, &str, Option<u32>, f64, Option<f64>)> =
        rows.iter().map(|r| (&*r.route, &*r.backend, r.weight, r.rps, r.success)).collect();
    assert_eq!(
        brief,
        [
            ("default/web#0", "web-v1.default", Some(90), 18.0, Some(1.0)),
            ("default/web#0", "web-v2.default", Some(10), 1.0, Some(0.9)),
            ("default/web#1", "web-v3.default", Some(1), 0.0, None),
        ]
    );
    assert!(close(rows[0].p50_ms, 1.0), "90 of 180 within 1 ms: {:?}", rows[0].p50_ms);
    assert!(rows.iter().all(|r| r.service == "web.default"));

    // Without routes: the service itself, under `default`.
    let plain = routes("store.default", &[], &spans);
    assert_eq!(plain.len(), 1);
    assert_eq!((plain[0].route.as_str(), plain[0].backend.as_str(), plain[0].rps), ("default", "store.default", 0.5));
}

fn edge_text(direction: &str, peer: &str, peer_id: &str, tls: bool, ok: u32, failed: u32) -> String {
    format!(
        "weft_edge_responses_total{{direction=\"{direction}\",peer=\"{peer}\",peer_id=\"{peer_id}\",tls=\"{tls}\",classification=\"success\"}} {ok}\n\
         weft_edge_responses_total{{direction=\"{direction}\",peer=\"{peer}\",peer_id=\"{peer_id}\",tls=\"{tls}\",classification=\"failure\"}} {failed}\n\
         weft_edge_response_latency_seconds_bucket{{direction=\"{direction}\",peer=\"{peer}\",peer_id=\"{peer_id}\",tls=\"{tls}\",le=\"0.002\"}} {}\n\
         weft_edge_response_latency_seconds_bucket{{direction=\"{direction}\",peer=\"{peer}\",peer_id=\"{peer_id}\",tls=\"{tls}\",le=\"+Inf\"}} {}\n",
        ok + failed,
        ok + failed
    )
}

#[test]
fn edges_name_the_caller_and_the_callee() {
    let web = "spiffe://cluster.local/ns/default/sa/web";
    let load = "spiffe://cluster.local/ns/default/sa/load";
    let batch = "spiffe://cluster.local/ns/jobs/sa/batch";
    let pods = vec![
        pod("default", "load-0", &[("app", "load")], true, "load"),
        pod("default", "web-v1-0", &[("app", "web")], true, "web"),
        pod("default", "web-v2-0", &[("app", "web")], true, "web"),
        pod("default", "other-0", &[("app", "other")], true, "load"),
    ];
    let services = [ServicePods { name: NsName::new("default", "web"), pods: vec![1, 2] }];
    let two = |text: String| span(&[snap(0.0, ""), snap(10.0, &text)], 10.0, 30.0);
    let spans = vec![
        two(edge_text("outbound", "web.default", web, true, 150, 0)),
        two(edge_text("inbound", "", load, true, 100, 0)
            + &edge_text("inbound", "", "", false, 9, 1)
            + &edge_text("inbound", "", batch, true, 5, 0)),
        two(edge_text("inbound", "", load, true, 50, 0)),
        // Same identity as load, but it calls nobody: not a source.
        two(String::new()),
    ];
    let rows = edges(&pods, &spans, &services, None);
    let brief: Vec<(&str, &str, &str, &str, bool, f64, Option<f64>)> =
        rows.iter().map(|r| (&*r.src, &*r.src_ns, &*r.dst, &*r.client_id, r.secured, r.rps, r.success)).collect();
    assert_eq!(
        brief,
        [
            // The plaintext caller is nobody the control plane knows.
            ("", "", "web-v1", "", false, 1.0, Some(0.9)),
            ("load", "default", "web-v1", load, true, 10.0, Some(1.0)),
            ("load", "default", "web-v2", load, true, 5.0, Some(1.0)),
            ("", "jobs", "web-v1", batch, true, 0.5, Some(1.0)),
        ]
    );
    assert_eq!(rows[1].server_id, web);
    assert_eq!(rows[0].server_id, "", "no server identity over plaintext");
    assert!(close(rows[1].p99_ms, 1.98), "{:?}", rows[1].p99_ms);
    assert_eq!(edges(&pods, &spans, &services, Some("jobs")).len(), 1);
    assert!(edges(&pods, &spans, &services, Some("nowhere")).is_empty());
}

#[test]
fn series_per_step_and_version() {
    // Pod 0 scraped every 5 s with 50 new requests each time; pod 1 only
    // from t=10, 10 per scrape, one of them failed.
    let h0: Vec<Snapshot> = (0..5).map(|i| snap(f64::from(i) * 5.0, &inbound_text(i * 50, 0, i * 50, 0))).collect();
    let h1: Vec<Snapshot> = (2..5).map(|i| snap(f64::from(i) * 5.0, &inbound_text(i * 9, i, 0, 0))).collect();
    let histories: Vec<&[Snapshot]> = vec![&h0, &h1];
    let groups = [("all".to_owned(), vec![0, 1]), ("v2".to_owned(), vec![1])];
    let (t, lines) = series(&histories, &groups, 0.0, 5.0, 4);
    assert_eq!(t, [5.0, 10.0, 15.0, 20.0]);
    assert_eq!(lines["all"].rps, [Some(10.0), Some(10.0), Some(12.0), Some(12.0)]);
    assert_eq!(lines["v2"].rps, [None, None, Some(2.0), Some(2.0)]);
    assert_eq!(lines["v2"].success, [None, None, Some(0.9), Some(0.9)]);
    assert_eq!(lines["all"].success[2], Some(59.0 / 60.0));
    assert!(close(lines["v2"].p50_ms[2], 5.5), "all of pod 1's within (1 ms, 10 ms]: {:?}", lines["v2"].p50_ms);
}
