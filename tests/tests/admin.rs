//! The admin listener: probes, Prometheus metrics that promtool accepts, and
//! no exposure outside the pod.

use weft_tests::{ADMIN, Pair, tool};

#[test]
fn probes_answer_200() {
    let m = Pair::start(&[], &[]);
    // Exactly 200, as the admin server answers a live and ready proxy;
    // `Proxy::admin` (curl `--fail-with-body`) would let any status below
    // 400 pass.
    for path in ["/ready", "/live"] {
        let curl = m.a.curl(&["-o", "/dev/null", &format!("http://{ADMIN}{path}")]);
        assert_eq!(curl.status(), 200, "GET {path} in pod a:\n{}", curl.run);
    }
}

#[test]
fn promtool_accepts_the_metrics_of_a_live_proxy() {
    let m = Pair::start(&[], &[]);
    // Some HTTP and some opaque traffic first, so every family has samples.
    let curl = m.a.curl(&["-o", "/dev/null", &m.url("/warm-up")]);
    assert_eq!(curl.status(), 200, "{}", curl.run);
    let _echo = m.b.spawn_testkit("echo", &["tcp-server", "--listen", "0.0.0.0:4444"]);
    m.b.wait_listening(4444);
    let target = m.b.addr(4444).to_string();
    m.a.testkit(&["raw", "--connect", &target, "--send", "opaque", "--read-bytes", "6"]).ok();
    m.proxy_b.wait_metric("weft_requests_total", &[("direction", "inbound")], 1.0);

    for (name, proxy) in [("a", &m.proxy_a), ("b", &m.proxy_b)] {
        let text = proxy.metrics_text();
        let file = m.mesh.dir().join(format!("metrics-{name}.txt"));
        std::fs::write(&file, &text).unwrap();
        let script = format!("{} check metrics < {}", tool("promtool").display(), file.display());
        let run = m.a.exec("sh", &["-c", &script]);
        assert_eq!(run.code(), Some(0), "promtool rejects pod {name}'s metrics:\n{run}\n{text}");
        assert_eq!(format!("{}{}", run.stdout, run.stderr), "", "promtool has remarks:\n{run}");

        let metrics = proxy.metrics();
        for family in [
            "weft_requests_total",
            "weft_responses_total",
            "weft_response_latency_seconds",
            "weft_tcp_connections_total",
            "weft_tcp_open_connections",
            "weft_tcp_read_bytes_total",
            "weft_tcp_write_bytes_total",
            "weft_tcp_close_total",
            "weft_detect_total",
        ] {
            assert!(metrics.has_family(family), "pod {name} has no {family}:\n{text}");
        }
        // The histogram is consistent: +Inf bucket == count.
        for direction in ["inbound", "outbound"] {
            let labels = [("direction", direction)];
            let inf: Vec<_> = [("direction", direction), ("le", "+Inf")].into();
            assert_eq!(
                metrics.sum("weft_response_latency_seconds_bucket", &inf),
                metrics.sum("weft_response_latency_seconds_count", &labels),
                "{text}"
            );
        }
    }
}

#[test]
fn admin_is_not_reachable_from_other_pods() {
    let m = Pair::start(&[], &[]);
    let c = m.mesh.pod("c"); // unmeshed, so nothing of its own intercepts
    let url = format!("http://{}/metrics", m.b.addr(4191));
    let run = c.exec("curl", &["-sS", "--max-time", "5", &url]);
    assert_eq!(run.code(), Some(7), "b's admin port answered from another pod:\n{run}");
}
