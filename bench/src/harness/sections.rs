//! The measured sections of a run, each interleaving the setups: latency
//! at fixed rates, the knee step-up, closed-loop maximum throughput, and
//! memory per idle connection.

use std::path::PathBuf;

use super::Running;
use super::runs::{Measured, Spec, measure};
use crate::footprint;
use crate::hist::Buckets;
use crate::load::LoadReport;
use crate::plan::{Mode, Plan};
use crate::report::model::{
    Cell, IdleResult, KneeResult, KneeStep, MaxResult, ProcRun, RunRecord, Spread, add_over_direct,
};
use crate::setup::SetupKind;
use crate::stop;
use crate::workload::Workload;

/// A knee step fails when more than this fraction of its requests fail.
const KNEE_MAX_FAILED: f64 = 0.001;
/// … or when it achieves less than this fraction of the asked rate.
const KNEE_MIN_ACHIEVED: f64 = 0.9;

/// What the sections produced.
pub struct Outcome {
    pub latency: Vec<Cell>,
    pub knee: Vec<KneeResult>,
    pub max_throughput: Vec<MaxResult>,
    pub idle_connections: Vec<IdleResult>,
    pub failures: Vec<String>,
}

pub(crate) struct Bench<'a> {
    plan: &'a Plan,
    exe: PathBuf,
    /// The mesh's private directory (logs of the idle generator).
    dir: PathBuf,
    setups: Vec<Running>,
    ticks_per_s: u64,
    cells: Vec<(Cell, Vec<Buckets>)>,
    knee: Vec<KneeResult>,
    max: Vec<MaxResult>,
    idle: Vec<IdleResult>,
    failures: Vec<String>,
    /// Wall time of the last generator run, for the progress lines.
    last_run: std::time::Duration,
}

impl<'a> Bench<'a> {
    pub fn new(plan: &'a Plan, exe: PathBuf, dir: PathBuf, setups: Vec<Running>) -> Bench<'a> {
        Bench {
            plan,
            exe,
            dir,
            setups,
            ticks_per_s: footprint::ticks_per_second(),
            cells: Vec::new(),
            knee: Vec::new(),
            max: Vec::new(),
            idle: Vec::new(),
            failures: Vec::new(),
            last_run: std::time::Duration::ZERO,
        }
    }

    pub fn setups(&self) -> &[Running] {
        &self.setups
    }

    fn alive(&self) -> Vec<usize> {
        (0..self.setups.len()).filter(|i| self.setups[*i].dead.is_none()).collect()
    }

    /// One generator run in setup `i`; `None` (recorded as a failure) if it
    /// could not run. Errors only when a stop was asked for.
    fn run(&mut self, i: usize, workload: Workload, spec: Spec) -> anyhow::Result<Option<Measured>> {
        stop::check()?;
        let running = &mut self.setups[i];
        let started = std::time::Instant::now();
        let result = measure(&running.setup, &self.exe, workload, spec, self.plan.timeout);
        stop::check()?;
        let name = running.setup.kind.name();
        if let Err(dead) = running.setup.check_alive() {
            let why = format!("{name}: {dead:#}");
            running.dead = Some(why.clone());
            self.failures.push(why);
            return Ok(None);
        }
        match result {
            Ok(done) => {
                self.last_run = started.elapsed();
                Ok(Some(done))
            }
            Err(e) => {
                self.failures.push(format!("{name} {} {spec:?}: {e:#}", workload.name()));
                Ok(None)
            }
        }
    }

    fn cell_index(&mut self, workload: Workload, rate: u32, setup: SetupKind) -> usize {
        if let Some(i) =
            self.cells.iter().position(|(c, _)| c.workload == workload && c.rate == rate && c.setup == setup)
        {
            return i;
        }
        self.cells.push((Cell::new(workload, rate, setup), Vec::new()));
        self.cells.len() - 1
    }

    /// Latency at the fixed rates: for rep { for workload { for rate { for setup } } }.
    pub fn latency(&mut self) -> anyhow::Result<()> {
        let plan = self.plan;
        let total = plan.reps * plan.workloads.len() * plan.rates.len() * self.setups.len();
        let mut n = 0;
        for rep in 0..plan.reps {
            for &workload in &plan.workloads {
                for &rate in &plan.rates {
                    for i in self.alive() {
                        n += 1;
                        let kind = self.setups[i].setup.kind;
                        let Some(Measured { report, proxies, upstream_connections }) =
                            self.run(i, workload, Spec::Open { rate, phase: plan.phase })?
                        else {
                            continue;
                        };
                        progress(self.last_run, n, total, workload, &format!("{rate}/s"), kind, &report);
                        let failed = report.errors + report.timeouts;
                        if report.ok == 0 || (plan.mode == Mode::Smoke && failed > 0) {
                            self.failures.push(format!(
                                "{} {} at {rate}/s served {} of {} requests: {}",
                                kind.name(),
                                workload.name(),
                                report.ok,
                                report.sent,
                                report.first_error.as_deref().unwrap_or("no error recorded")
                            ));
                        }
                        let c = self.cell_index(workload, rate, kind);
                        let (cell, buckets) = &mut self.cells[c];
                        cell.runs.push(record(rep, &report, proxies, upstream_connections));
                        buckets.push(report.buckets);
                    }
                }
            }
        }
        Ok(())
    }

    /// The step-up: each setup runs the rates in order until one is past
    /// the limit. Setups still in the race run each step interleaved.
    pub fn knee(&mut self) -> anyhow::Result<()> {
        let Some(knee) = self.plan.knee.clone() else {
            return Ok(());
        };
        let mut active = self.alive();
        self.knee = active
            .iter()
            .map(|&i| KneeResult {
                setup: self.setups[i].setup.kind,
                steps: Vec::new(),
                knee_rps: None,
                over_rps: None,
            })
            .collect();
        let total = knee.rates.len() * active.len();
        let mut n = 0;
        for &rate in &knee.rates {
            for i in active.clone() {
                n += 1;
                let kind = self.setups[i].setup.kind;
                let k = self.knee.iter().position(|k| k.setup == kind).expect("a result per setup");
                // A step past the limit runs once more before it counts: one
                // noisy run on a shared machine must not set the knee.
                let mut over = None;
                for repeat in [false, true] {
                    let Some(Measured { report, proxies, .. }) =
                        self.run(i, Workload::Http1, Spec::Open { rate, phase: knee.phase })?
                    else {
                        over = None;
                        break;
                    };
                    let what = format!("knee {rate}/s{}", if repeat { " again" } else { "" });
                    progress(self.last_run, n, total, Workload::Http1, &what, kind, &report);
                    let failed = (report.errors + report.timeouts) as f64;
                    let past = report.latency.p99 > knee.p99_limit.as_secs_f64() * 1e6
                        || failed > KNEE_MAX_FAILED * report.sent.max(1) as f64
                        || report.achieved_rps < KNEE_MIN_ACHIEVED * f64::from(rate);
                    self.knee[k].steps.push(KneeStep {
                        rate,
                        repeat,
                        achieved_rps: report.achieved_rps,
                        latency: report.latency,
                        errors: report.errors,
                        timeouts: report.timeouts,
                        first_error: report.first_error.clone(),
                        over: past,
                        proxies,
                    });
                    over = Some(past);
                    if !past {
                        break;
                    }
                }
                let result = &mut self.knee[k];
                match over {
                    // The setup died (recorded by `run`).
                    None => active.retain(|a| *a != i),
                    Some(true) => {
                        result.over_rps = Some(rate);
                        active.retain(|a| *a != i);
                    }
                    Some(false) => result.knee_rps = Some(rate),
                }
            }
            if active.is_empty() {
                break;
            }
        }
        Ok(())
    }

    /// Closed-loop HTTP/1.1 throughput, repeated and interleaved.
    pub fn max_throughput(&mut self) -> anyhow::Result<()> {
        let Some(max) = self.plan.max.clone() else {
            return Ok(());
        };
        self.max = self
            .alive()
            .iter()
            .map(|&i| MaxResult {
                setup: self.setups[i].setup.kind,
                workers: max.workers,
                runs_rps: Vec::new(),
                rps: None,
                errors: 0,
                of_direct: None,
            })
            .collect();
        let total = max.reps * self.max.len();
        let mut n = 0;
        for _ in 0..max.reps {
            for i in self.alive() {
                n += 1;
                let kind = self.setups[i].setup.kind;
                let Some(Measured { report, .. }) =
                    self.run(i, Workload::Http1, Spec::Closed { workers: max.workers, phase: max.phase })?
                else {
                    continue;
                };
                progress(
                    self.last_run,
                    n,
                    total,
                    Workload::Http1,
                    &format!("max, {} conns", max.workers),
                    kind,
                    &report,
                );
                if let Some(m) = self.max.iter_mut().find(|m| m.setup == kind) {
                    m.runs_rps.push(report.achieved_rps);
                    m.errors += report.errors + report.timeouts;
                }
            }
        }
        for m in &mut self.max {
            m.rps = Spread::of(m.runs_rps.iter().copied());
        }
        let direct = self.max.iter().find(|m| m.setup == SetupKind::Direct).and_then(|m| m.rps).map(|s| s.median);
        for m in &mut self.max {
            m.of_direct = direct.filter(|d| *d > 0.0).and_then(|d| m.rps.map(|s| s.median / d));
        }
        Ok(())
    }

    /// Memory per idle connection, for each setup with proxies.
    pub fn idle_connections(&mut self) -> anyhow::Result<()> {
        if self.plan.idle_steps.is_empty() {
            return Ok(());
        }
        // (first index in self.idle, proxies, the thread sampling them).
        let mut recovering = Vec::new();
        for i in self.alive() {
            stop::check()?;
            let setup = &self.setups[i].setup;
            if setup.proxies.is_empty() {
                continue;
            }
            match super::idle::measure(setup, &self.exe, &self.plan.idle_steps, self.plan.idle_settle, &self.dir) {
                Ok((results, closed_at)) => {
                    let pids = setup.proxies.iter().map(|p| (p.name.clone(), p.pid)).collect();
                    let watcher = super::idle::watch_recovery(pids, closed_at, self.plan.idle_recovery);
                    recovering.push((self.idle.len(), results.len(), watcher));
                    for r in &results {
                        let points: Vec<String> = r
                            .points
                            .iter()
                            .map(|p| format!("{} conns: {:.0} B/conn", p.open, p.bytes_per_conn.unwrap_or(f64::NAN)))
                            .collect();
                        eprintln!("  idle {:<13} {}: {}", setup.kind.name(), r.proxy, points.join(", "));
                        if let Some(e) = &r.first_error {
                            self.failures.push(format!("{} idle connections: {e}", setup.kind.name()));
                        }
                    }
                    self.idle.extend(results);
                }
                Err(e) => {
                    stop::check()?;
                    self.failures.push(format!("{} idle connections: {e:#}", setup.kind.name()));
                }
            }
        }
        // The windows overlap: the last burst's is the one waited for.
        for (first, n, watcher) in recovering {
            let seen = watcher.join().map_err(|_| anyhow::anyhow!("the RSS sampling thread panicked"))?;
            stop::check()?;
            let results = &mut self.idle[first..first + n];
            match seen {
                Ok(samples) => {
                    for (r, s) in results.iter_mut().zip(samples) {
                        r.after_close = s;
                        eprintln!(
                            "  idle {:<13} {}: RSS before {} KiB, peak {} KiB, {:.0} s after close {:+.0} KiB, back \
                             within 2 MB {}",
                            r.setup.name(),
                            r.proxy,
                            r.rss_before_kib,
                            r.rss_peak_kib.unwrap_or(0),
                            r.after_close.last().map_or(0.0, |s| s.after_s),
                            r.kept_bytes().unwrap_or(f64::NAN) / 1024.0,
                            r.back_after_s().map_or_else(|| "not yet".to_owned(), |s| format!("after {s:.0} s"))
                        );
                    }
                }
                Err(e) => {
                    let name = results.first().map(|r| r.setup.name()).unwrap_or_default();
                    self.failures.push(format!("{name} RSS after the idle connections closed: {e:#}"));
                }
            }
        }
        Ok(())
    }

    pub fn finish(self) -> Outcome {
        let ticks = self.ticks_per_s;
        let mut latency: Vec<Cell> = self
            .cells
            .into_iter()
            .map(|(mut cell, buckets)| {
                cell.summarize(&buckets, ticks);
                cell
            })
            .collect();
        // Report order: workload, rate, then setup as listed.
        latency.sort_by_key(|c| (c.workload, c.rate, SetupKind::ALL.iter().position(|k| *k == c.setup)));
        add_over_direct(&mut latency);
        Outcome {
            latency,
            knee: self.knee,
            max_throughput: self.max,
            idle_connections: self.idle,
            failures: self.failures,
        }
    }
}

fn record(rep: usize, r: &LoadReport, proxies: Vec<ProcRun>, upstream_connections: u64) -> RunRecord {
    RunRecord {
        rep,
        ok: r.ok,
        errors: r.errors,
        timeouts: r.timeouts,
        first_error: r.first_error.clone(),
        achieved_rps: r.achieved_rps,
        latency: r.latency,
        total_requests: r.total_requests,
        connections_opened: r.connections_opened,
        upstream_connections,
        pacer_late_max_us: r.pacer_late_max_us,
        proxies,
    }
}

fn progress(
    took: std::time::Duration,
    n: usize,
    total: usize,
    workload: Workload,
    what: &str,
    kind: SetupKind,
    r: &LoadReport,
) {
    let l = &r.latency;
    eprintln!(
        "  [{n:>3}/{total}] {:<5} {what:<13} {:<13} p50 {:>7.0} µs  p99 {:>8.0} µs  max {:>8.0} µs  {:>6.0}/s  failed {}  ({:.1} s)",
        workload.name(),
        kind.name(),
        l.p50,
        l.p99,
        l.max,
        r.achieved_rps,
        r.errors + r.timeouts,
        took.as_secs_f64()
    );
}
