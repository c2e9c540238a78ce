//! How the proxy fails: bad requests, oversized heads, clients that never
//! finish, upstreams that refuse or do not answer. Each failure must be the
//! documented status (or close), on time, without hurting other clients.

use std::time::Instant;

use weft_tests::{Pair, Pod, Proc};

/// Sends one request with curl and asserts it succeeds quickly: the proxy is
/// still serving others while a misbehaving client holds a connection.
fn assert_serves_others(m: &Pair) {
    for i in 0..3 {
        let start = Instant::now();
        let curl = m.a.curl(&["-o", "/dev/null", &m.url(&format!("/meanwhile/{i}"))]);
        assert_eq!(curl.status(), 200, "{}", curl.run);
        let took = start.elapsed();
        assert!(took.as_secs_f64() < 1.0, "a plain request took {took:?} meanwhile");
    }
}

fn closed_after_ms(client: Proc, within_secs: u64) -> u64 {
    let run = client.finish(std::time::Duration::from_secs(within_secs));
    assert_eq!(run.code(), Some(0), "the connection was not closed:\n{run}");
    run.field("closed_after_ms").parse().unwrap()
}

#[test]
fn malformed_request_gets_400_and_never_reaches_the_app() {
    let m = Pair::start(&[], &[]);
    let target = m.b.addr(weft_tests::APP_PORT).to_string();
    let bad = "GET /bad HTTP/1.1\\r\\nHost: b\\r\\nthis line is not a header\\r\\n\\r\\n";
    let run = m.a.testkit(&["raw", "--connect", &target, "--send", bad]).ok();
    assert!(run.stdout.starts_with("HTTP/1.1 400 "), "{run}");
    assert_eq!(m.app_requests(), 0, "the app got the request:\n{}", m.app.stdout());
    // The proxy's own error responses are responses too; a 4xx is
    // classified `success` (docs/metrics.md: failure means status >= 500).
    m.proxy_a.wait_metric(
        "weft_responses_total",
        &[("direction", "outbound"), ("status_code", "400"), ("classification", "success")],
        1.0,
    );
    assert_serves_others(&m);
}

#[test]
fn oversized_headers_get_431_and_large_ones_under_the_limit_pass() {
    let m = Pair::start(&[], &[]);
    // 32 KiB of header: well under the 64 KiB default limit.
    let fits = format!("x-big: {}", "a".repeat(32 * 1024));
    let curl = m.a.curl(&["-o", "/dev/null", "-H", &fits, &m.url("/fits")]);
    assert_eq!(curl.status(), 200, "{}", curl.run);
    assert_eq!(m.app_requests(), 1);

    // 70,000 bytes in one header: over the limit on its own.
    let too_big = format!("x-big: {}", "a".repeat(70_000));
    let curl = m.a.curl(&["-o", "/dev/null", "-H", &too_big, &m.url("/too-big")]);
    assert_eq!(curl.status(), 431, "{}", curl.run);
    assert_eq!(m.app_requests(), 1, "the oversized request reached the app:\n{}", m.app.stdout());
    m.proxy_a.wait_metric(
        "weft_responses_total",
        &[("direction", "outbound"), ("status_code", "431"), ("classification", "success")],
        1.0,
    );
    assert_serves_others(&m);
}

#[test]
fn silent_client_is_closed_after_the_idle_timeout() {
    let m = Pair::start(&["--tcp-idle-timeout", "2s"], &[]);
    // 4444 is a default opaque port: spliced at once, no detection wait.
    let _echo = m.b.spawn_testkit("echo", &["tcp-server", "--listen", "0.0.0.0:4444"]);
    m.b.wait_listening(4444);
    let target = m.b.addr(4444).to_string();
    let silent = m.a.spawn_testkit("silent", &["slow-client", "--connect", &target, "--max-ms", "10000"]);
    assert_serves_others(&m);
    let ms = closed_after_ms(silent, 15);
    eprintln!("measured: closed after {ms} ms");
    assert!((1_900..=3_500).contains(&ms), "the silent connection was closed after {ms} ms; idle timeout 2 s");
}

#[test]
fn slow_loris_is_closed_after_the_header_read_timeout() {
    let m = Pair::start(&["--header-read-timeout", "2s"], &[]);
    let target = m.b.addr(weft_tests::APP_PORT).to_string();
    // A complete request line (so detection says HTTP/1 at once), then a
    // header that grows by one byte every 100 ms and never ends.
    let trickle = format!("X-Slow: {}", "a".repeat(400));
    let loris = m.a.spawn_testkit(
        "slowloris",
        &[
            "slow-client",
            "--connect",
            &target,
            "--send",
            "GET /slow HTTP/1.1\\r\\nHost: b\\r\\n",
            "--trickle",
            &trickle,
            "--interval-ms",
            "100",
            "--max-ms",
            "10000",
        ],
    );
    assert_serves_others(&m);
    let ms = closed_after_ms(loris, 15);
    eprintln!("measured: closed after {ms} ms");
    assert!(
        (1_900..=3_500).contains(&ms),
        "the slow-loris connection was closed after {ms} ms; header read timeout 2 s"
    );
    assert!(!m.app.stdout().contains("/slow"), "the app got the slow request:\n{}", m.app.stdout());
}

/// One request on a connection the client then keeps idle: what it
/// received, and when the connection closed (`None`: still open at
/// `hold_ms`).
fn keep_idle(pod: &Pod, target: &str, hold_ms: u64) -> (String, Option<u64>) {
    let client = pod.spawn_testkit(
        "kept-alive",
        &[
            "slow-client",
            "--connect",
            target,
            "--send",
            "GET /kept HTTP/1.1\\r\\nHost: b\\r\\n\\r\\n",
            "--max-ms",
            &hold_ms.to_string(),
        ],
    );
    let run = client.finish(std::time::Duration::from_millis(hold_ms + 10_000));
    let closed = match run.code() {
        Some(0) => Some(run.field("closed_after_ms").parse().unwrap()),
        Some(3) => None,
        _ => panic!("the kept-alive client failed:\n{run}"),
    };
    (run.field("received").to_owned(), closed)
}

/// Runs `client` at once from pod a, through proxy A (outbound), and from
/// unmeshed pod c, straight to proxy B (inbound); the results by side.
fn on_both_sides<T: Send>(m: &Pair, client: impl Fn(&Pod) -> T + Sync) -> [(&'static str, T); 2] {
    let c = m.mesh.pod("c");
    std::thread::scope(|s| {
        let inbound = s.spawn(|| client(&c));
        [("outbound", client(&m.a)), ("inbound", inbound.join().unwrap())]
    })
}

#[test]
fn idle_kept_alive_connections_outlive_the_header_read_timeout() {
    // hyper's header read timeout also ran on idle connections: every
    // kept-alive connection was closed 1 s after its last response here.
    let m = Pair::start(&["--header-read-timeout", "1s"], &["--header-read-timeout", "1s"]);
    let target = m.b.addr(weft_tests::APP_PORT).to_string();
    for (side, (received, closed)) in on_both_sides(&m, |pod| keep_idle(pod, &target, 3_000)) {
        assert!(received.starts_with("HTTP/1.1 200 "), "{side}: {received}");
        assert_eq!(closed, None, "{side}: an idle kept-alive connection was closed after {closed:?} ms");
    }
    assert_eq!(m.app_requests(), 2);
}

#[test]
fn idle_kept_alive_connections_close_after_the_keep_alive_timeout() {
    let m = Pair::start(&["--keep-alive-timeout", "2s"], &[]);
    let target = m.b.addr(weft_tests::APP_PORT).to_string();
    let (received, closed) = keep_idle(&m.a, &target, 10_000);
    assert!(received.starts_with("HTTP/1.1 200 "), "{received}");
    let ms = closed.expect("the idle connection was still open after 10 s; keep-alive timeout 2 s");
    eprintln!("measured: closed after {ms} ms");
    assert!((1_900..=3_500).contains(&ms), "the idle connection was closed after {ms} ms; keep-alive timeout 2 s");
}

/// Holds an HTTP/2 connection idle after one request; the ms until the
/// proxy closed it, or `None` if it was still open after `hold_ms`.
fn keep_h2_idle(pod: &Pod, target: &str, hold_ms: u64) -> Option<u64> {
    let client = pod.spawn_testkit(
        "h2-idle",
        &["h2-idle", "--connect", target, "--path", "/kept-h2", "--max-ms", &hold_ms.to_string()],
    );
    let run = client.finish(std::time::Duration::from_millis(hold_ms + 10_000));
    match run.code() {
        Some(0) | Some(3) => assert_eq!(run.field("status"), "200", "{run}"),
        _ => panic!("the HTTP/2 client failed:\n{run}"),
    }
    (run.code() == Some(0)).then(|| run.field("closed_after_ms").parse().unwrap())
}

#[test]
fn idle_http2_connections_close_after_the_keep_alive_timeout() {
    // An HTTP/2 connection with no stream open was held for ever: hyper's
    // server has no idle timeout, so a client could pile them up.
    let m = Pair::start(&["--keep-alive-timeout", "2s"], &["--keep-alive-timeout", "2s"]);
    let target = m.b.addr(weft_tests::APP_PORT).to_string();
    for (side, closed) in on_both_sides(&m, |pod| keep_h2_idle(pod, &target, 10_000)) {
        let ms = closed.unwrap_or_else(|| panic!("{side}: the idle HTTP/2 connection was open after 10 s"));
        eprintln!("measured: {side} closed after {ms} ms");
        assert!((1_900..=3_500).contains(&ms), "{side}: closed after {ms} ms idle; keep-alive timeout 2 s");
    }
    // A stream open longer than the timeout is not idle: a 3 s response
    // on one connection completes.
    let curl = m.a.curl(&["--http2-prior-knowledge", "-o", "/dev/null", &m.url("/delay?ms=3000")]);
    assert_eq!(curl.status(), 200, "{}", curl.run);
    assert_eq!(m.app_requests(), 3);
}

#[test]
fn inbound_limits_apply_to_unmeshed_clients() {
    let m = Pair::start(&[], &["--header-read-timeout", "2s"]);
    // c has no proxy: its connections meet b's inbound proxy directly.
    let c = m.mesh.pod("c");
    let too_big = format!("x-big: {}", "a".repeat(70_000));
    let curl = c.curl(&["-o", "/dev/null", "-H", &too_big, &m.url("/too-big")]);
    assert_eq!(curl.status(), 431, "{}", curl.run);

    let target = m.b.addr(weft_tests::APP_PORT).to_string();
    let trickle = format!("X-Slow: {}", "a".repeat(400));
    let loris = c.spawn_testkit(
        "slowloris",
        &[
            "slow-client",
            "--connect",
            &target,
            "--send",
            "GET /slow HTTP/1.1\\r\\nHost: b\\r\\n",
            "--trickle",
            &trickle,
            "--interval-ms",
            "100",
            "--max-ms",
            "10000",
        ],
    );
    assert_serves_others(&m);
    let ms = closed_after_ms(loris, 15);
    eprintln!("measured: closed after {ms} ms");
    assert!(
        (1_900..=3_500).contains(&ms),
        "the slow-loris connection was closed after {ms} ms; header read timeout 2 s"
    );
    assert_eq!(m.app_requests(), 3, "only the 3 good requests reach the app:\n{}", m.app.stdout());
}

#[test]
fn refused_upstream_gets_502() {
    let m = Pair::start(&[], &[]);
    let c: Pod = m.mesh.pod("c");
    // Nothing listens on 9999, neither behind b's proxy nor in unmeshed c.
    for target in [m.b.addr(9999), c.addr(9999)] {
        let curl = m.a.curl(&["-o", "/dev/null", &format!("http://{target}/")]);
        assert_eq!(curl.run.code(), Some(0), "{}", curl.run);
        assert_eq!(curl.status(), 502, "to {target}: {}", curl.run);
        // The proxy's own answer says so, and why (b's inbound proxy for
        // b, a's outbound proxy for c).
        assert_eq!(curl.header("weft-proxy-error"), "connect-refused", "to {target}");
    }
    m.proxy_a.wait_metric(
        "weft_responses_total",
        &[("direction", "outbound"), ("status_code", "502"), ("classification", "failure")],
        2.0,
    );
}

#[test]
fn slow_upstream_gets_504_after_the_request_timeout() {
    let m = Pair::start(&["--request-timeout", "500ms"], &[]);
    let curl = m.a.curl(&["-o", "/dev/null", "-w", "time_total=%{time_total}\\n", &m.url("/delay?ms=3000")]);
    assert_eq!(curl.status(), 504, "{}", curl.run);
    assert_eq!(curl.header("weft-proxy-error"), "response-timeout");
    let total: f64 = curl.run.field("time_total").parse().unwrap();
    eprintln!("measured: 504 after {total} s");
    assert!((0.45..1.5).contains(&total), "504 after {total} s; request timeout 0.5 s");
    m.proxy_a.wait_metric(
        "weft_responses_total",
        &[("direction", "outbound"), ("status_code", "504"), ("classification", "failure")],
        1.0,
    );
}

#[test]
fn unreachable_upstream_gets_504_after_the_connect_timeout() {
    let m = Pair::start(&["--connect-timeout", "1s"], &[]);
    // 198.18.0.99 is on the bridge's subnet but no pod has it: ARP gets no
    // answer and the proxy's connect hangs until its timeout.
    let curl = m.a.curl(&["-o", "/dev/null", "-w", "time_total=%{time_total}\\n", "http://198.18.0.99:8080/"]);
    assert_eq!(curl.status(), 504, "{}", curl.run);
    assert_eq!(curl.header("weft-proxy-error"), "connect-timeout");
    let total: f64 = curl.run.field("time_total").parse().unwrap();
    eprintln!("measured: 504 after {total} s");
    assert!((0.95..2.5).contains(&total), "504 after {total} s; connect timeout 1 s");
}
