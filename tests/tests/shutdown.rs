//! Graceful shutdown: SIGTERM or `POST /shutdown` closes the listeners at
//! once, lets in-flight requests finish (up to `--drain-timeout`), then
//! exits 0.

use std::time::{Duration, Instant};

use weft_tests::{Pair, eventually};

#[test]
fn sigterm_lets_the_in_flight_request_finish_and_refuses_new_connections() {
    let mut m = Pair::start(&[], &[]);
    let c = m.mesh.pod("c"); // unmeshed: its connections reach b's rules directly
    let url = m.url("/delay?ms=2000");
    let mut in_flight =
        m.a.spawn("in-flight", "curl", &["-sS", "--max-time", "30", "-w", "\\nstatus=%{http_code}\\n", &url]);
    m.app.wait_stdout("GET /delay?ms=2000", Duration::from_secs(5));
    m.proxy_b.sigterm();

    // New connections to b are refused while the request is still running:
    // the inbound listener is closed, so the redirected SYN gets a RST.
    let target = format!("http://{}/", m.b.addr(weft_tests::APP_PORT));
    eventually(Duration::from_secs(1), "a new connection to b is refused", || {
        let run = c.exec("curl", &["-sS", "-o", "/dev/null", "--max-time", "1", &target]);
        if run.code() == Some(7) { Ok(()) } else { Err(run.to_string()) }
    });
    assert!(in_flight.try_status().is_none(), "the in-flight request ended before the check:\n{}", in_flight.stdout());

    let run = in_flight.finish(Duration::from_secs(10));
    assert_eq!(run.code(), Some(0), "{run}");
    assert_eq!(run.field("status"), "200", "{run}");
    assert!(run.stdout.starts_with("delayed 2000 ms\n"), "{run}");

    let status = m.proxy_b.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0), "proxy exit: {status}\n{}", m.proxy_b.log());
}

#[test]
fn admin_shutdown_is_graceful_and_exits_0() {
    let mut m = Pair::start(&[], &[]);
    let run = m.proxy_b.admin("POST", "/shutdown").ok();
    let status = m.proxy_b.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0), "after {run}\nproxy log:\n{}", m.proxy_b.log());
}

#[test]
fn drain_timeout_bounds_the_shutdown() {
    let mut m = Pair::start(&[], &["--drain-timeout", "1s"]);
    let url = m.url("/delay?ms=20000");
    let _in_flight = m.a.spawn("in-flight", "curl", &["-sS", "--max-time", "30", &url]);
    eventually(Duration::from_secs(5), "the slow request reaches the app", || {
        if m.app.stdout().contains("GET /delay?ms=20000") { Ok(()) } else { Err(m.app.stdout()) }
    });
    let start = Instant::now();
    m.proxy_b.sigterm();
    let status = m.proxy_b.wait_exit(Duration::from_secs(5));
    let took = start.elapsed();
    eprintln!("measured: exited after {took:?}");
    assert_eq!(status.code(), Some(0), "proxy exit: {status}\n{}", m.proxy_b.log());
    assert!(took >= Duration::from_millis(900), "exited after {took:?}, before the 1 s drain timeout");
    assert!(took < Duration::from_millis(2_500), "exited after {took:?}; drain timeout 1 s");
}
