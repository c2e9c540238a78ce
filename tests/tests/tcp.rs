//! Opaque TCP: a real Redis on an opaque port, a server-speaks-first
//! protocol, and non-HTTP bytes that detection must pass through untouched.

use weft_tests::{Mesh, workload::escape};

#[test]
fn redis_incr_100_times_through_opaque_ports() {
    let mesh = Mesh::new();
    let a = mesh.pod("a");
    let b = mesh.pod("b");
    let bind = format!("127.0.0.1 {}", b.ip());
    let dir = b.dir().to_string_lossy().into_owned();
    let _redis = b.spawn(
        "redis",
        "redis-server",
        &[
            "--bind",
            &bind,
            "--port",
            "6379",
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
            "--dir",
            &dir,
        ],
    );
    b.wait_listening(6379);
    let proxy_b = b.run_proxy(&[]);
    let proxy_a = a.run_proxy(&[]);
    let host = b.ip().to_string();

    // 100 INCRs on one connection, then a GET on a second one.
    let run = a.exec("redis-cli", &["-h", &host, "-p", "6379", "-r", "100", "INCR", "weft"]).ok();
    let got: Vec<u64> = run.stdout.lines().map(|l| l.trim().parse().unwrap_or(0)).collect();
    let want: Vec<u64> = (1..=100).collect();
    assert_eq!(got, want, "{run}");
    let run = a.exec("redis-cli", &["-h", &host, "-p", "6379", "GET", "weft"]).ok();
    assert_eq!(run.stdout.trim(), "100", "{run}");

    // 6379 is a default opaque port: no detection, no HTTP, two connections.
    let opaque_port = |dir: &'static str| [("direction", dir), ("outcome", "opaque_port")];
    proxy_a.wait_metric("weft_detect_total", &opaque_port("outbound"), 2.0);
    proxy_b.wait_metric("weft_detect_total", &opaque_port("inbound"), 2.0);
    proxy_a.wait_metric("weft_tcp_connections_total", &[("direction", "outbound"), ("protocol", "opaque")], 2.0);
    proxy_b.wait_metric("weft_tcp_connections_total", &[("direction", "inbound"), ("protocol", "opaque")], 2.0);
    // Both redis-cli connections are over: closed and no longer open.
    let opaque = |dir: &'static str| [("direction", dir), ("protocol", "opaque")];
    proxy_a.wait_metric("weft_tcp_close_total", &opaque("outbound"), 2.0);
    proxy_b.wait_metric("weft_tcp_close_total", &opaque("inbound"), 2.0);
    proxy_a.wait_metric("weft_tcp_open_connections", &opaque("outbound"), 0.0);
    proxy_b.wait_metric("weft_tcp_open_connections", &opaque("inbound"), 0.0);
    let (ma, mb) = (proxy_a.metrics(), proxy_b.metrics());
    assert_eq!(ma.sum("weft_detect_total", &[]), 2.0, "{}", ma.text);
    assert_eq!(mb.sum("weft_detect_total", &[]), 2.0, "{}", mb.text);
    assert_eq!(ma.sum("weft_requests_total", &[]), 0.0, "{}", ma.text);
}

#[test]
fn server_speaks_first_banner_arrives_after_the_detect_timeout() {
    let mesh = Mesh::new();
    let a = mesh.pod("a");
    let b = mesh.pod("b");
    let _smtp =
        b.spawn_testkit("banner", &["tcp-server", "--listen", "0.0.0.0:2525", "--banner", "220 weft-test ready"]);
    b.wait_listening(2525);
    // b knows 2525 is opaque; a does not, so a's outbound proxy waits for
    // the client to speak until its detect timeout (1 s), then splices.
    let proxy_b = b.run_proxy(&["--inbound-opaque-ports", "2525"]);
    let proxy_a = a.run_proxy(&[]);

    let target = b.addr(2525).to_string();
    let run = a.testkit(&["banner-client", "--connect", &target]).ok();
    assert_eq!(run.field("banner"), escape(b"220 weft-test ready\r\n"));
    assert_eq!(run.field("echo"), "ok");
    let ms: u64 = run.field("banner_ms").parse().unwrap();
    eprintln!("measured: banner after {ms} ms");
    assert!(ms <= 1_100, "the banner took {ms} ms; a's detect timeout is 1000 ms");

    proxy_a.wait_metric("weft_detect_total", &[("direction", "outbound"), ("outcome", "timeout")], 1.0);
    proxy_b.wait_metric("weft_detect_total", &[("direction", "inbound"), ("outcome", "opaque_port")], 1.0);
}

#[test]
fn non_http_bytes_are_detected_as_opaque_and_spliced_unchanged() {
    let mesh = Mesh::new();
    let a = mesh.pod("a");
    let b = mesh.pod("b");
    let _echo = b.spawn_testkit("echo", &["tcp-server", "--listen", "0.0.0.0:7000"]);
    b.wait_listening(7000);
    let proxy_b = b.run_proxy(&[]);
    let proxy_a = a.run_proxy(&[]);

    // Binary, with bytes that look like neither an HTTP/1 request line nor
    // the HTTP/2 preface.
    let payload = "\\x00\\x01\\x02weft\\xff\\xfe\\r\\n\\x16\\x03\\x01binary";
    let want = weft_tests::workload::unescape(payload).unwrap();
    let target = b.addr(7000).to_string();
    let n = want.len().to_string();
    let run =
        a.testkit(&["raw", "--connect", &target, "--send", payload, "--read-bytes", &n, "--timeout-ms", "10000"]).ok();
    assert_eq!(run.stdout.trim_end(), escape(&want), "{run}");
    assert!(run.stderr.contains("end=read-bytes"), "{run}");
    proxy_a.wait_metric("weft_detect_total", &[("direction", "outbound"), ("outcome", "opaque")], 1.0);
    proxy_b.wait_metric("weft_detect_total", &[("direction", "inbound"), ("outcome", "opaque")], 1.0);

    // Every byte counted once each way, detection prefix included, and the
    // connection closed once the client left.
    let n = want.len() as f64;
    for (proxy, dir) in [(&proxy_a, "outbound"), (&proxy_b, "inbound")] {
        let opaque = [("direction", dir), ("protocol", "opaque")];
        proxy.wait_metric("weft_tcp_close_total", &opaque, 1.0);
        proxy.wait_metric("weft_tcp_read_bytes_total", &opaque, n);
        proxy.wait_metric("weft_tcp_write_bytes_total", &opaque, n);
        proxy.wait_metric("weft_tcp_open_connections", &opaque, 0.0);
    }
}
