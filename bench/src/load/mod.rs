//! `weft-bench load`: the load generator, run inside the client pod. It
//! prints one [`LoadReport`] as JSON on stdout.
//!
//! Open loop (the default): requests are released at a constant rate by the
//! [`pacer`] whether or not earlier ones have finished, each as its own
//! task, and latency runs from the intended send time to the end of the
//! response. Closed loop (`--closed N`): N workers send back to back, for
//! the maximum throughput.
//!
//! ```text
//!  pacer thread ──Shot{intended}──► runtime thread: task per request
//!  (nanosleep)      (channel)        Client::request ─► record(now − intended)
//! ```
//!
//! The generator runs on one runtime thread (plus the pacer), so that it
//! takes the same CPU share in every setup on a 2-core machine.

pub mod client;
pub mod idle;
pub mod pacer;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use crate::hist::{Buckets, Percentiles, new_histogram};
use crate::workload::Workload;
use client::Client;
use pacer::Shot;

/// Flags of `weft-bench load`.
#[derive(clap::Args, Debug, Clone)]
pub struct LoadArgs {
    #[arg(long, value_enum)]
    pub workload: Workload,
    /// Where to send: the app's address (direct, weft) or the local proxy's.
    #[arg(long)]
    pub target: SocketAddr,
    /// Requests per second (open loop).
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Measured phase.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    pub duration: Duration,
    /// Unrecorded phase before it, at the same rate: connections open, caches warm.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "500ms")]
    pub warmup: Duration,
    /// Closed loop with this many concurrent workers instead of a rate.
    #[arg(long)]
    pub closed: Option<usize>,
    /// Most connections (HTTP/1.1, TCP) or in-flight requests (`conn`).
    /// Past it requests wait in the generator, and the wait counts in their
    /// latency. A bounded pool, as real clients have: with a pool that grows
    /// without bound, an overloaded proxy is also flooded with new
    /// connections, and the knee measures that storm more than the proxy.
    #[arg(long, default_value_t = 64)]
    pub max_conns: usize,
    /// HTTP/2 connections the streams are spread over.
    #[arg(long, default_value_t = 2)]
    pub h2_conns: usize,
    /// A request not answered this long after its intended send time fails
    /// (and is recorded at this latency, a lower bound of the truth).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    pub timeout: Duration,
}

/// What one generator run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadReport {
    pub workload: Workload,
    pub target: SocketAddr,
    /// Asked rate (open loop) or 0 (closed loop).
    pub rate: f64,
    /// Workers (closed loop) or 0.
    pub closed: usize,
    /// Requests sent in the measured phase.
    pub sent: u64,
    pub ok: u64,
    /// Failures other than timeouts.
    pub errors: u64,
    pub timeouts: u64,
    pub first_error: Option<String>,
    /// Requests of both phases, for CPU per request.
    pub total_requests: u64,
    /// Completed requests per second over the measured phase.
    pub achieved_rps: f64,
    pub latency: Percentiles,
    pub buckets: Buckets,
    pub connections_opened: u64,
    /// HTTP/1.1 requests sent again on a new connection after a kept-alive
    /// one closed before answering (the server's idle timeout racing the
    /// request), as real clients do; not failures.
    #[serde(default)]
    pub stale_retries: u64,
    /// Open loop: how late the pacer released shots (its own health).
    pub pacer_late_max_us: f64,
    pub pacer_late_over_1ms: u64,
}

/// Counters shared by the request tasks (one runtime thread: uncontended).
struct Tally {
    hist: Histogram<u64>,
    ok: u64,
    errors: u64,
    timeouts: u64,
    total: u64,
    first_error: Option<String>,
    last_done: Option<Instant>,
}

impl Tally {
    fn new() -> Tally {
        Tally { hist: new_histogram(), ok: 0, errors: 0, timeouts: 0, total: 0, first_error: None, last_done: None }
    }

    fn record(
        &mut self,
        measured: bool,
        started: Instant,
        outcome: Result<Result<(), client::RequestError>, ()>,
        timeout: Duration,
    ) {
        self.total += 1;
        if !measured {
            return;
        }
        let done = Instant::now();
        match outcome {
            Ok(Ok(())) => {
                self.ok += 1;
                self.hist.saturating_record(nanos(done - started));
                self.last_done = Some(done);
            }
            Ok(Err(e)) => {
                self.errors += 1;
                self.first_error.get_or_insert_with(|| e.to_string());
            }
            Err(()) => {
                self.timeouts += 1;
                self.hist.saturating_record(nanos(timeout));
                self.first_error.get_or_insert_with(|| format!("no response within {timeout:?}"));
            }
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

pub fn run(args: &LoadArgs) -> anyhow::Result<()> {
    crate::limits::raise_nofile();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let report = rt.block_on(generate(args))?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

async fn generate(args: &LoadArgs) -> anyhow::Result<LoadReport> {
    let client = Client::new(args.workload, args.target, args.max_conns, args.h2_conns)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("connecting to {}", args.target))?;
    let client = Arc::new(client);
    let tally = Arc::new(Mutex::new(Tally::new()));
    let (window_start, pacer_stats) = match args.closed {
        None => open_loop(args, &client, &tally).await?,
        Some(workers) => (closed_loop(args, workers, &client, &tally).await, pacer::PacerStats::default()),
    };
    let tally = tally.lock().unwrap_or_else(|e| e.into_inner());
    // Open loop: the scheduled window, or longer if the responses spilled
    // past it (the setup did not keep up). Closed loop: the window.
    let window = match (args.closed, tally.last_done) {
        (None, Some(last)) => args.duration.max(last.saturating_duration_since(window_start)),
        _ => args.duration,
    };
    Ok(LoadReport {
        workload: args.workload,
        target: args.target,
        rate: if args.closed.is_some() { 0.0 } else { args.rate },
        closed: args.closed.unwrap_or(0),
        sent: tally.ok + tally.errors + tally.timeouts,
        ok: tally.ok,
        errors: tally.errors,
        timeouts: tally.timeouts,
        first_error: tally.first_error.clone(),
        total_requests: tally.total,
        achieved_rps: if window.is_zero() { 0.0 } else { tally.ok as f64 / window.as_secs_f64() },
        latency: Percentiles::of(&tally.hist),
        buckets: Buckets::of(&tally.hist),
        connections_opened: client.opened(),
        stale_retries: client.stale_retries(),
        pacer_late_max_us: pacer_stats.late_max.as_secs_f64() * 1e6,
        pacer_late_over_1ms: pacer_stats.late_over_1ms,
    })
}

/// Returns the start of the measured phase and the pacer's figures.
async fn open_loop(
    args: &LoadArgs,
    client: &Arc<Client>,
    tally: &Arc<Mutex<Tally>>,
) -> anyhow::Result<(Instant, pacer::PacerStats)> {
    anyhow::ensure!(args.rate > 0.0 && args.rate.is_finite(), "--rate must be positive");
    let warmup = (args.warmup.as_secs_f64() * args.rate).round() as u64;
    let measured = ((args.duration.as_secs_f64() * args.rate).round() as u64).max(1);
    // A little lead so that the first shots are not late by construction.
    let start = Instant::now() + Duration::from_millis(5);
    let window_start = start + Duration::from_secs_f64(warmup as f64 / args.rate);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Shot>();
    let rate = args.rate;
    let pacer = std::thread::Builder::new()
        .name("pacer".into())
        .spawn(move || pacer::pace(tx, start, rate, warmup, measured))
        .context("starting the pacer thread")?;
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            shot = rx.recv() => match shot {
                Some(shot) => {
                    let (client, tally, timeout) = (client.clone(), tally.clone(), args.timeout);
                    tasks.spawn(async move {
                        let deadline = tokio::time::Instant::from_std(shot.intended + timeout);
                        let outcome = tokio::time::timeout_at(deadline, client.request()).await.map_err(drop);
                        tally.lock().unwrap_or_else(|e| e.into_inner()).record(shot.measured, shot.intended, outcome, timeout);
                    });
                }
                None => break,
            },
        }
    }
    // Every task ends by its deadline, so this wait is bounded.
    while tasks.join_next().await.is_some() {}
    let stats = pacer.join().map_err(|_| anyhow::anyhow!("the pacer thread panicked"))?;
    Ok((window_start, stats))
}

async fn closed_loop(args: &LoadArgs, workers: usize, client: &Arc<Client>, tally: &Arc<Mutex<Tally>>) -> Instant {
    let window_start = Instant::now() + args.warmup;
    let end = window_start + args.duration;
    let mut tasks = JoinSet::new();
    for _ in 0..workers.max(1) {
        let (client, tally, timeout) = (client.clone(), tally.clone(), args.timeout);
        tasks.spawn(async move {
            while Instant::now() < end {
                let started = Instant::now();
                let outcome = tokio::time::timeout(timeout, client.request()).await.map_err(drop);
                let measured = started >= window_start && Instant::now() <= end;
                tally.lock().unwrap_or_else(|e| e.into_inner()).record(measured, started, outcome, timeout);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    window_start
}
