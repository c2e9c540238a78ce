//! Memory per idle connection, and whether it comes back: after a warm-up
//! (a few connections opened and closed, as a sidecar that has served),
//! `weft-bench idle` in the client pod opens the connections step by step
//! through the setup;
//! between steps the proxies' RSS is read. Then the generator exits, which
//! closes them all at once, and [`watch_recovery`] samples the proxies' RSS
//! every second for the plan's window (30 s; issue #14 wants it back within
//! 2 MB of the RSS before the burst by then).

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::footprint;
use crate::load::idle::IdleStep;
use crate::report::model::{IdlePoint, IdleResult, RecoverySample};
use crate::setup::Setup;
use crate::stop::{self, KillOnDrop};
use crate::workload::Workload;

/// Time allowed for a step of `n` connections (TLS handshakes included).
fn step_timeout(n: usize) -> Duration {
    Duration::from_secs(20) + Duration::from_millis(n as u64 * 5)
}

/// Opens the steps' connections through `setup`, reading the proxies' RSS
/// after each, then closes them all; returns the figures and when the
/// connections were closed (the generator had exited).
pub fn measure(
    setup: &Setup,
    exe: &Path,
    steps: &[usize],
    settle: Duration,
    log_dir: &Path,
) -> anyhow::Result<(Vec<IdleResult>, Instant)> {
    let target = setup.target(Workload::Tcp).to_string();
    // A sidecar that has served has its TLS code paged in. Without this,
    // "before" is a proxy that never completed a handshake at scale, and the
    // burst's first handshakes read the binary's text in (~2.5 MB of
    // RssFile here, file-backed and shared, never "given back"), which
    // would count as memory the burst kept.
    warm_up(setup, exe, &target, log_dir)?;
    std::thread::sleep(settle);
    let mut before = Vec::new();
    for p in &setup.proxies {
        before.push(footprint::memory(p.pid).with_context(|| format!("reading the memory of {}", p.name))?.rss_kib);
        // The burst's peak is VmHWM from here on.
        footprint::reset_peak(p.pid).with_context(|| format!("resetting the peak RSS of {}", p.name))?;
    }
    let steps_arg = steps.iter().map(usize::to_string).collect::<Vec<_>>().join(",");
    let stderr_path = log_dir.join(format!("idle-{}.stderr", setup.kind.name()));
    let mut cmd = setup.client.command(exe, &["idle", "--target", &target, "--steps", &steps_arg]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).with_context(|| format!("creating {}", stderr_path.display()))?);
    let mut child = KillOnDrop(cmd.spawn().context("starting the idle-connection generator")?);
    let stdout = child.0.stdout.take().expect("stdout is piped");
    let mut stdin = child.0.stdin.take().expect("stdin is piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    let mut results: Vec<IdleResult> = setup
        .proxies
        .iter()
        .zip(&before)
        .map(|(p, b)| IdleResult {
            setup: setup.kind,
            proxy: p.name.clone(),
            rss_before_kib: *b,
            points: Vec::new(),
            first_error: None,
            rss_peak_kib: None,
            after_close: Vec::new(),
        })
        .collect();
    for (k, &n) in steps.iter().enumerate() {
        let line = match rx.recv_timeout(step_timeout(n)) {
            Ok(line) => line.context("reading the idle generator's output")?,
            Err(_) => {
                let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                anyhow::bail!("the idle generator did not report {n} connections within {:?}:\n{log}", step_timeout(n));
            }
        };
        stop::check()?;
        let step: IdleStep = serde_json::from_str(&line).with_context(|| format!("parsing {line:?}"))?;
        // The echo on every connection has returned, so both proxies hold
        // the connection (past detection) by now. Read after `settle`: what
        // the handshakes allocated and freed is garbage that an allocator
        // may hand back on a timer (jemalloc's decay), not what an idle
        // connection holds; the burst's peak is reported apart (VmHWM).
        std::thread::sleep(settle);
        for (r, p) in results.iter_mut().zip(&setup.proxies) {
            let rss = footprint::memory(p.pid).with_context(|| format!("reading the memory of {}", p.name))?.rss_kib;
            let grown = rss as f64 - r.rss_before_kib as f64;
            r.points.push(IdlePoint {
                open: step.open,
                failed: step.failed,
                rss_kib: rss,
                bytes_per_conn: (step.open > 0).then(|| grown * 1024.0 / step.open as f64),
            });
            if r.first_error.is_none() {
                r.first_error.clone_from(&step.first_error);
            }
        }
        if k + 1 < steps.len() {
            writeln!(stdin, "next").context("telling the idle generator to go on")?;
        }
    }
    // Closing stdin lets it exit, closing every connection; one that has
    // not within 5 s is killed (on drop), which closes them just the same.
    drop(stdin);
    for _ in 0..200 {
        if child.0.try_wait()?.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    drop(child);
    let closed_at = Instant::now();
    for (r, p) in results.iter_mut().zip(&setup.proxies) {
        r.rss_peak_kib =
            Some(footprint::memory(p.pid).with_context(|| format!("reading the memory of {}", p.name))?.hwm_kib);
    }
    Ok((results, closed_at))
}

/// Connections opened through the setup and closed before the burst.
const WARM_UP: usize = 200;

/// Opens [`WARM_UP`] idle connections through `setup` and closes them.
fn warm_up(setup: &Setup, exe: &Path, target: &str, log_dir: &Path) -> anyhow::Result<()> {
    let stderr_path = log_dir.join(format!("idle-warm-up-{}.stderr", setup.kind.name()));
    let mut cmd = setup.client.command(exe, &["idle", "--target", target, "--steps", &WARM_UP.to_string()]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).with_context(|| format!("creating {}", stderr_path.display()))?);
    let mut child = KillOnDrop(cmd.spawn().context("starting the idle-connection generator to warm up")?);
    let stdout = child.0.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(BufReader::new(stdout).lines().next());
    });
    match rx.recv_timeout(step_timeout(WARM_UP)) {
        Ok(Some(Ok(_))) => {}
        _ => {
            let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            anyhow::bail!(
                "the warm-up's {WARM_UP} connections did not open within {:?}:\n{log}",
                step_timeout(WARM_UP)
            );
        }
    }
    // Closing stdin lets it exit, closing the connections.
    drop(child.0.stdin.take());
    for _ in 0..200 {
        if child.0.try_wait()?.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    Ok(())
}

/// What [`watch_recovery`] saw of one proxy.
pub type Recovery = anyhow::Result<Vec<Vec<RecoverySample>>>;

/// Samples the RSS of `pids` once a second after `closed_at` until `window`
/// has passed, on a thread of its own, so that the next setup's burst can
/// run meanwhile (other processes in other pods: it does not touch these
/// proxies' memory). Stops early, with what it has, when a stop is asked.
pub fn watch_recovery(pids: Vec<(String, u32)>, closed_at: Instant, window: Duration) -> JoinHandle<Recovery> {
    std::thread::spawn(move || {
        let mut samples = vec![Vec::new(); pids.len()];
        for k in 1..=window.as_secs().max(1) {
            let at = closed_at + Duration::from_secs(k);
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
            if stop::requested() {
                break;
            }
            let after_s = closed_at.elapsed().as_secs_f64();
            for ((name, pid), out) in pids.iter().zip(&mut samples) {
                let rss_kib = footprint::memory(*pid).with_context(|| format!("reading the memory of {name}"))?.rss_kib;
                out.push(RecoverySample { after_s, rss_kib });
            }
        }
        Ok(samples)
    })
}
