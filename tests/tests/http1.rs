//! HTTP/1.1 through two meshed pods (see [`Pair`]): curl in pod a, the
//! testkit server as pod b's app.

use weft_tests::{Pair, sha256_file, write_random_file};

fn meshed() -> Pair {
    Pair::start(&[], &[])
}

#[test]
fn request_crosses_both_proxies_and_each_counts_it_once() {
    let m = meshed();
    let curl = m.a.curl(&[&m.url("/hello?x=1")]);
    assert_eq!(curl.run.code(), Some(0), "{}", curl.run);
    assert_eq!(curl.status(), 200, "{}", curl.run);
    assert!(curl.body().contains("method GET\npath /hello?x=1\n"), "{}", curl.run);
    // The inbound proxy forwards on loopback, so the app's peer is 127.0.0.1.
    let peer = curl.header("x-weft-peer");
    assert!(peer.starts_with("127.0.0.1:"), "the app saw the peer {peer}, not 127.0.0.1");
    assert_eq!(m.app_connections(), 1);

    let authority = m.b.addr(weft_tests::APP_PORT).to_string();
    let out = [("direction", "outbound")];
    let inb = [("direction", "inbound")];
    m.proxy_a.wait_metric("weft_requests_total", &[("direction", "outbound"), ("authority", &authority)], 1.0);
    m.proxy_b.wait_metric("weft_requests_total", &[("direction", "inbound"), ("authority", &authority)], 1.0);
    let success_200 = [("status_code", "200"), ("classification", "success")];
    m.proxy_a.wait_metric("weft_responses_total", &[out[0], success_200[0], success_200[1]], 1.0);
    m.proxy_b.wait_metric("weft_responses_total", &[inb[0], success_200[0], success_200[1]], 1.0);
    m.proxy_a.wait_metric("weft_response_latency_seconds_count", &out, 1.0);
    m.proxy_b.wait_metric("weft_response_latency_seconds_count", &inb, 1.0);
    m.proxy_a.wait_metric("weft_detect_total", &[out[0], ("outcome", "http1")], 1.0);
    // One connection on each hop: curl → a's proxy → b's proxy.
    m.proxy_a.wait_metric("weft_tcp_connections_total", &[out[0], ("protocol", "http1")], 1.0);
    m.proxy_b.wait_metric("weft_tcp_connections_total", &inb, 1.0);

    // Exactly once each, and each only in its own direction.
    let (ma, mb) = (m.proxy_a.metrics(), m.proxy_b.metrics());
    assert_eq!(ma.sum("weft_requests_total", &[]), 1.0, "{}", ma.text);
    assert_eq!(mb.sum("weft_requests_total", &[]), 1.0, "{}", mb.text);
    assert_eq!(ma.sum("weft_requests_total", &inb), 0.0, "{}", ma.text);
    assert_eq!(mb.sum("weft_requests_total", &out), 0.0, "{}", mb.text);
    assert_eq!(ma.sum("weft_responses_total", &[]), 1.0, "{}", ma.text);
    assert_eq!(mb.sum("weft_responses_total", &[]), 1.0, "{}", mb.text);
}

#[test]
fn keep_alive_reuses_one_connection_to_the_app() {
    let m = meshed();
    let urls = [m.url("/one"), m.url("/two"), m.url("/three"), m.url("/four")];
    let mut args = vec!["-w", "%{http_code} %{num_connects}\\n"];
    for url in &urls {
        args.extend(["-o", "/dev/null", url]);
    }
    let curl = m.a.curl(&args);
    assert_eq!(curl.run.code(), Some(0), "{}", curl.run);
    // curl itself used one connection: one connect, then three reuses.
    assert_eq!(curl.body(), "200 1\n200 0\n200 0\n200 0\n", "{}", curl.run);
    let conns: Vec<_> = curl.responses().iter().map(|h| h.header("x-weft-conn").unwrap_or("-").to_owned()).collect();
    assert_eq!(conns, ["1", "1", "1", "1"], "{}", curl.run);
    assert_eq!(m.app_connections(), 1, "app log:\n{}", m.app.stdout());
    m.proxy_a.wait_metric("weft_requests_total", &[("direction", "outbound")], 4.0);
    m.proxy_b.wait_metric("weft_requests_total", &[("direction", "inbound")], 4.0);
    // And one connection on each hop between them.
    m.proxy_a.wait_metric("weft_tcp_connections_total", &[("direction", "outbound")], 1.0);
    m.proxy_b.wait_metric("weft_tcp_connections_total", &[("direction", "inbound")], 1.0);
}

#[test]
fn chunked_bodies_arrive_byte_exact_both_ways() {
    let m = meshed();
    let dir = m.a.dir();
    // Upload: a chunked request body; the app reports the digest it received.
    let upload = dir.join("upload.bin");
    write_random_file(&upload, 1_234_567, 7);
    let data = format!("@{}", upload.display());
    let curl = m.a.curl(&["-H", "Transfer-Encoding: chunked", "--data-binary", &data, &m.url("/sha256")]);
    assert_eq!(curl.status(), 200, "{}", curl.run);
    let want = format!("sha256={} bytes=1234567\n", sha256_file(&upload));
    assert_eq!(curl.body(), want, "{}", curl.run);

    // Download: the app streams a body without content-length (chunked).
    let download = dir.join("download.bin");
    let n = 3_000_001u64;
    let curl = m.a.curl(&["-o", &download.to_string_lossy(), &m.url(&format!("/bytes?n={n}"))]);
    assert_eq!(curl.status(), 200, "{}", curl.run);
    let expected = dir.join("expected.bin");
    std::fs::write(&expected, weft_tests::workload::pattern(n)).unwrap();
    assert_eq!(std::fs::metadata(&download).unwrap().len(), n);
    assert_eq!(sha256_file(&download), sha256_file(&expected));
}

#[test]
fn twenty_mib_bodies_are_byte_exact_both_ways() {
    let m = meshed();
    let dir = m.a.dir();
    let size = 20 * 1024 * 1024;
    let sent = dir.join("sent.bin");
    write_random_file(&sent, size, 20);
    let echoed = dir.join("echoed.bin");
    let data = format!("@{}", sent.display());
    // Up through both proxies and back down: the app echoes the body.
    let curl = m.a.curl(&["--data-binary", &data, "-o", &echoed.to_string_lossy(), &m.url("/echo")]);
    assert_eq!(curl.run.code(), Some(0), "{}", curl.run);
    assert_eq!(curl.status(), 200, "{}", curl.run);
    assert_eq!(std::fs::metadata(&echoed).unwrap().len(), size as u64);
    assert_eq!(sha256_file(&echoed), sha256_file(&sent), "the echoed body differs");
}

#[test]
fn expect_100_continue_is_answered_without_waiting() {
    let m = meshed();
    let body = m.a.dir().join("body.bin");
    write_random_file(&body, 256 * 1024, 100);
    let data = format!("@{}", body.display());
    // With a 3 s expect wait, a 100 Continue lost on the way shows as ≥ 3 s.
    let curl = m.a.curl(&[
        "-H",
        "Expect: 100-continue",
        "--expect100-timeout",
        "3",
        "--data-binary",
        &data,
        "-w",
        "time_total=%{time_total}\\n",
        &m.url("/sha256"),
    ]);
    assert_eq!(curl.run.code(), Some(0), "{}", curl.run);
    let statuses: Vec<_> = curl.heads.iter().map(|h| h.status).collect();
    assert_eq!(statuses, [100, 200], "{}", curl.run);
    let want = format!("sha256={} bytes={}\n", sha256_file(&body), 256 * 1024);
    assert!(curl.body().starts_with(&want), "{}", curl.run);
    let total: f64 = curl.run.field("time_total").parse().unwrap();
    eprintln!("measured: POST took {total} s");
    assert!(total < 1.0, "the POST took {total} s: the client waited for 100 Continue");
}

#[test]
fn websocket_echo_through_both_proxies() {
    let m = meshed();
    let _ws = m.b.spawn_testkit("ws", &["ws-server", "--listen", "0.0.0.0:8081"]);
    m.b.wait_listening(8081);
    let url = format!("ws://{}/chat", m.b.addr(8081));
    let run = m.a.testkit(&["ws-client", "--url", &url, "--messages", "10"]).ok();
    assert_eq!(run.field("handshake_status"), "101");
    assert_eq!(run.field("echoed"), "10");
    m.proxy_a.wait_metric("weft_requests_total", &[("direction", "outbound")], 1.0);
    m.proxy_b.wait_metric("weft_requests_total", &[("direction", "inbound")], 1.0);
}

#[test]
fn many_sequential_requests_all_succeed() {
    let m = meshed();
    for i in 0..20 {
        let curl = m.a.curl(&["-o", "/dev/null", &m.url(&format!("/n/{i}"))]);
        assert_eq!(curl.status(), 200, "request {i}: {}", curl.run);
    }
    m.proxy_a.wait_metric("weft_requests_total", &[("direction", "outbound")], 20.0);
    m.proxy_b.wait_metric("weft_requests_total", &[("direction", "inbound")], 20.0);
}
