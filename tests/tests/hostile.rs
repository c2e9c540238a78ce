//! Hostile peers on the inbound port: a flood of garbage, half-open TLS
//! handshakes and silent connections, and 10,000 idle connections, while
//! good clients send 500 requests per second through the mTLS pair. The
//! good clients must not notice: none fails and their throughput holds;
//! the proxy's memory stays bounded and it closes the flood's connections
//! itself. Their latency is printed here and held to 2x of quiet by
//! `weft-bench --chaos` (release builds): a timing bound belongs in the
//! bench, and these debug-build proxies on 2 shared cores put the flood's
//! cost in the good clients' tail (quiet p99 8-12 ms, 215 ms under the
//! flood in CI) where the release pair's stays level (0.73x).
//!
//! ```text
//! cp: weft-control with a CA
//! a: weft example load (500/s) ─► a's proxy ══ mTLS ══► b's proxy :4143 ─► app :8080
//! x: weft-testkit flood / idle-conns ─────────────────────┘ (b's pod address, port 8080)
//! ```
//!
//! Each hostile phase is measured between two quiet ones (printed).
//!
//! What b's proxy does with them (`proxy/src/inbound/admit.rs`): at most 128
//! connections per source address and 1,024 in all may be in detection or
//! the TLS handshake; past that a new connection is closed at once, before
//! any byte (`weft_inbound_shed_total`). Admitted half-open handshakes are
//! closed 2 s after their ClientHello (`weft_inbound_handshake_timeouts_total`),
//! silent connections at the 1 s detection timeout (refused as plaintext in
//! strict mode; forwarded to the app in permissive mode, where the app may
//! be a server that speaks first).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use weft_tests::{Mesh, Pod, Proxy, Run, WEB_AND_STORE, eventually, weft_bin};

/// The good clients' rate, requests per second.
const GOOD_RATE: u32 = 500;
/// How long each measured phase of good load lasts.
const PHASE: Duration = Duration::from_secs(10);

/// What `weft example load` reported for one phase.
#[derive(Debug)]
struct Load {
    ok: u64,
    failed: u64,
    p50: Duration,
    p99: Duration,
    line: String,
}

/// A `Duration`'s `Debug` form (`812.5µs`, `1.234ms`, `2s`) back into one.
fn parse_debug_duration(s: &str) -> Option<Duration> {
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().ok()?;
    let secs = match unit {
        "s" => n,
        "ms" => n / 1e3,
        "µs" | "us" => n / 1e6,
        "ns" => n / 1e9,
        _ => return None,
    };
    Some(Duration::from_secs_f64(secs))
}

/// Parses `weft example load`'s `total: N requests in …: A ok, B failed;
/// latency p50 X p99 Y` line.
fn parse_total(log: &str) -> Option<Load> {
    let line = log.lines().find_map(|l| l.split_once("total: ").map(|(_, rest)| rest))?;
    let word_before = |word: &str| {
        let at = line.find(word)?;
        line[..at].split_whitespace().last()?.parse::<u64>().ok()
    };
    let word_after = |word: &str| {
        let at = line.find(word)? + word.len();
        parse_debug_duration(line[at..].split([' ', ';']).find(|s| !s.is_empty())?)
    };
    Some(Load {
        ok: word_before(" ok")?,
        failed: word_before(" failed")?,
        p50: word_after("p50 ")?,
        p99: word_after("p99 ")?,
        line: line.to_owned(),
    })
}

/// Good load from pod `a` to the `web` service for `duration`.
fn good_load(a: &Pod, duration: Duration) -> Load {
    let rate = GOOD_RATE.to_string();
    let secs = format!("{}s", duration.as_secs());
    let run: Run = a.exec(
        weft_bin(),
        &[
            "example",
            "load",
            "--target",
            "http://198.18.0.200/",
            "--rate",
            &rate,
            "--concurrency",
            "64",
            "--timeout",
            "5s",
            "--duration",
            &secs,
            "--report-every",
            "1h",
        ],
    );
    parse_total(&run.stderr).unwrap_or_else(|| panic!("no total line from the load:\n{run}"))
}

/// Samples a process's RSS every 100 ms until stopped; returns the peak (KiB).
struct RssSampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = 0;
            while !flag.load(Ordering::Relaxed) {
                let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                let rss = status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                    .unwrap_or(0);
                peak = peak.max(rss);
                std::thread::sleep(Duration::from_millis(100));
            }
            peak
        });
        RssSampler { stop, thread }
    }

    fn peak_kib(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the sampler thread")
    }
}

/// The fixture: a control plane with a CA (`cp_args` added), b (app and
/// proxy, sa/b), a (a meshed client, sa/a) and x (no proxy: the hostile
/// client). Field order is drop order.
struct Fixture {
    proxy_a: Proxy,
    proxy_b: Proxy,
    _apps: Vec<weft_tests::Proc>,
    _cp: weft_tests::ControlPlane,
    a: Pod,
    b: Pod,
    x: Pod,
    _mesh: Mesh,
}

fn fixture(cp_args: &[&str]) -> Fixture {
    let mesh = Mesh::new();
    let cp = mesh.pod("cp").run_control_with_ca(WEB_AND_STORE, cp_args);
    let (b, apps, proxy_b) = mesh.web_and_store_pod(&cp);
    let a = mesh.pod("a");
    let proxy_a = a.run_meshed_proxy(&cp, "a", None, &[]);
    let x = mesh.pod("x");
    Fixture { proxy_a, proxy_b, _apps: apps, _cp: cp, a, b, x, _mesh: mesh }
}

/// How many connections b's inbound listener has dealt with: through
/// detection, or shed at admission.
fn detected(proxy: &Proxy) -> f64 {
    let m = proxy.metrics();
    m.sum("weft_detect_total", &[("direction", "inbound")]) + m.sum("weft_inbound_shed_total", &[])
}

#[test]
fn a_flood_of_garbage_and_half_open_handshakes_neither_fails_nor_slows_good_clients() {
    // Strict mTLS: b's proxy, not its app, must deal with every flood
    // connection (plaintext is refused there).
    let f = fixture(&["--mtls-mode", "strict"]);
    // Warm up: a's pooled mTLS connections to b, b's to its app.
    let warm = good_load(&f.a, Duration::from_secs(3));
    assert_eq!(warm.failed, 0, "warm-up: {}", warm.line);
    let rss_before = f.proxy_b.rss_kib();

    let quiet = good_load(&f.a, PHASE);

    let target = f.b.addr(8080).to_string();
    let before = detected(&f.proxy_b);
    let sampler = RssSampler::start(f.proxy_b.pid());
    // 1,000 connections per second for 13 s: the whole measured phase runs
    // under it. Each flood connection waits up to 10 s for b to close it.
    let mut flood = f.x.spawn_testkit(
        "flood",
        &["flood", "--connect", &target, "--rate", "1000", "--duration-ms", "13000", "--hold-ms", "10000"],
    );
    eventually(Duration::from_secs(10), "the flood reaches b's proxy", || {
        let n = detected(&f.proxy_b) - before;
        if n >= 200.0 { Ok(()) } else { Err(format!("{n} connections detected")) }
    });
    let under = good_load(&f.a, PHASE);
    flood.wait_exit(Duration::from_secs(40));
    // Quiet again: with the phase before, it brackets the machine's own
    // noise (2 shared cores), which the 2x bound is taken against.
    let after = good_load(&f.a, PHASE);
    let rss_peak = sampler.peak_kib();
    let m = f.proxy_b.metrics();
    let (shed, timeouts) = (m.sum("weft_inbound_shed_total", &[]), m.sum("weft_inbound_handshake_timeouts_total", &[]));
    let out = flood.stdout();
    let field = |key: &str| -> u64 {
        let prefix = format!("{key}=");
        out.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key}= from the flood:\n{out}\n{}", flood.stderr()))
    };
    eprintln!(
        "measured: quiet {} | under flood {} | quiet after {} | flood:\n{out}| b's RSS {} KiB before, peak {} KiB; b shed {shed} at admission, timed out {timeouts} handshakes",
        quiet.line, under.line, after.line, rss_before, rss_peak
    );

    assert_eq!(quiet.failed + after.failed, 0, "quiet phases: {} | {}", quiet.line, after.line);
    assert_eq!(under.failed, 0, "good requests failed under the flood: {}", under.line);
    let quiet_p99 = quiet.p99.max(after.p99);
    // b's proxy says what it did: shed most of the flood at admission (one
    // source past its share) and timed out the half-open handshakes it let in.
    assert!(shed >= 1000.0, "b's proxy shed {shed} flood connections");
    assert!(timeouts >= 10.0, "b's proxy timed out {timeouts} half-open handshakes");
    // The load is paced at 500/s with at most 64 in flight; on a 2-core
    // machine the flood client takes a core of its own, so the good client
    // must keep at least half its quiet throughput (before admission it
    // fell to a quarter, with 4 s latencies and failed connects).
    assert!(
        under.ok * 2 >= quiet.ok,
        "the good clients' throughput collapsed: quiet {} | flood {}",
        quiet.line,
        under.line
    );
    eprintln!("p99 under the flood / quiet (the worse of before and after): {:?} / {quiet_p99:?}", under.p99);
    // Every flood connection was accepted and then closed by b's proxy:
    // garbage at once (not TLS, refused as plaintext), silent ones at the
    // detection timeout (1 s), half-open handshakes at the TLS handshake
    // timeout.
    for kind in ["garbage", "hello", "silent"] {
        let opened = field(&format!("{kind}_opened"));
        assert!(opened >= 4000, "{kind}: only {opened} flood connections opened");
        assert_eq!(field(&format!("{kind}_connect_failed")), 0, "{kind}: connects failed:\n{out}");
        assert_eq!(field(&format!("{kind}_held")), 0, "{kind}: b's proxy left connections open for 10 s:\n{out}");
        assert_eq!(field(&format!("{kind}_closed_by_peer")), opened, "{kind}:\n{out}");
    }
    assert!(field("garbage_close_ms_max") <= 3_000, "garbage stayed open too long:\n{out}");
    assert!(field("silent_close_ms_max") <= 3_000, "silent connections outlived the detection timeout:\n{out}");
    assert!(field("hello_close_ms_max") <= 7_000, "half-open handshakes outlived the handshake timeout:\n{out}");
    // Bounded memory: the flood holds at most a few thousand connections in
    // their first second or few.
    let growth = rss_peak.saturating_sub(rss_before);
    assert!(growth <= 64 * 1024, "b's proxy grew by {growth} KiB under the flood ({rss_before} -> {rss_peak})");
    drop(f.proxy_a);
}

#[test]
fn load_durations_and_totals_parse() {
    assert_eq!(parse_debug_duration("812.5µs"), Some(Duration::from_nanos(812_500)));
    assert_eq!(parse_debug_duration("1.5ms"), Some(Duration::from_micros(1500)));
    assert_eq!(parse_debug_duration("2s"), Some(Duration::from_secs(2)));
    assert_eq!(parse_debug_duration("ms"), None);
    let load = parse_total(
        "2026 INFO total: 5000 requests in 10.0s (500.0/s): 4999 ok, 1 failed; latency p50 1.2ms p99 3.456ms; \
         last error: HTTP 503",
    )
    .expect("parses");
    assert_eq!((load.ok, load.failed), (4999, 1));
    assert_eq!(load.p50, Duration::from_micros(1200));
    assert_eq!(load.p99, Duration::from_micros(3456));
}

#[test]
fn ten_thousand_idle_connections_do_not_stop_good_clients() {
    // Permissive mTLS (the default): b's proxy cannot tell a silent
    // plaintext client from one waiting for a server that speaks first,
    // so it forwards it to the app after the detection timeout.
    let f = fixture(&[]);
    let warm = good_load(&f.a, Duration::from_secs(3));
    assert_eq!(warm.failed, 0, "warm-up: {}", warm.line);
    let rss_before = f.proxy_b.rss_kib();
    let quiet = good_load(&f.a, PHASE);

    let target = f.b.addr(8080).to_string();
    let sampler = RssSampler::start(f.proxy_b.pid());
    let mut idle = f.x.spawn_testkit(
        "idle",
        &["idle-conns", "--connect", &target, "--count", "10000", "--rate", "2000", "--hold-ms", "25000"],
    );
    idle.wait_stdout("connect_failed=", Duration::from_secs(30));
    let fds_held = f.proxy_b.open_fds();
    let under = good_load(&f.a, PHASE);
    idle.wait_exit(Duration::from_secs(60));
    let after = good_load(&f.a, PHASE);
    let rss_peak = sampler.peak_kib();
    let m = f.proxy_b.metrics();
    let (shed, timeouts) = (m.sum("weft_inbound_shed_total", &[]), m.sum("weft_inbound_handshake_timeouts_total", &[]));
    let out = idle.stdout();
    let field = |key: &str| -> u64 {
        let prefix = format!("{key}=");
        out.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key}= from the idle client:\n{out}\n{}", idle.stderr()))
    };
    eprintln!(
        "measured: quiet {} | with 10,000 idle {} | quiet after {} | idle client:\n{out}| b's proxy: {fds_held} fds, RSS {} KiB \
         before, peak {} KiB; shed {shed} at admission, {timeouts} handshake timeouts",
        quiet.line, under.line, after.line, rss_before, rss_peak
    );

    assert_eq!(quiet.failed + after.failed, 0, "quiet phases: {} | {}", quiet.line, after.line);
    assert_eq!(under.failed, 0, "good requests failed beside 10,000 idle connections: {}", under.line);
    let quiet_p99 = quiet.p99.max(after.p99);
    assert!(
        under.ok * 2 >= quiet.ok,
        "the good clients' throughput collapsed: quiet {} | idle {}",
        quiet.line,
        under.line
    );
    eprintln!("p99 beside idle connections / quiet: {:?} / {quiet_p99:?}", under.p99);
    // What the misbehaving client sees: every connect succeeds (the kernel
    // completes it); b's proxy closes, without a byte, the ones past its
    // share of admission at once, and forwards the ones it admitted to the
    // app after the detection timeout (the app may be a server that speaks
    // first), where they stay open.
    assert_eq!(field("opened") + field("connect_failed"), 10_000, "{out}");
    assert!(shed >= 9_000.0, "b's proxy shed {shed} of 10,000 idle connections from one client");
    assert_eq!(field("closed_by_peer") + field("held"), field("opened"), "{out}");
    let growth = rss_peak.saturating_sub(rss_before);
    assert!(growth <= 256 * 1024, "b's proxy grew by {growth} KiB beside 10,000 idle connections");
    drop(f.proxy_a);
}
