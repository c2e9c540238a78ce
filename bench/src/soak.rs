//! `weft-bench --soak`: the weft mTLS pair for a long time under change.
//!
//! ```text
//!  sc: weft-control (CA, discovery, policy directory)
//!  sa: load, 1,000 requests/s in 5-minute windows ─► VIP ─► weft-proxy ══ mTLS ══► sb: weft-proxy ─► app   (always up)
//!                                                                   ╚═══ mTLS ══► sr: weft-proxy ─► app   (the churned replica)
//!
//!  every 10 s   the replica flips: SIGTERM (it deregisters, drains, exits) or started again (new token, registers)
//!  every 60 s   the service's TrafficPolicy is rewritten (request timeout 10 s ↔ 11 s); timed until the client proxy runs it
//!  every 10 s   RSS, file descriptors and threads of the client and the steady server proxy
//! ```
//!
//! Every request must succeed: the churn is the ordinary life of a service
//! (a replica rolled), and a proxy that loses requests over it is not one an
//! operator can keep. Memory, descriptors and threads must stay flat once the
//! first five minutes (connection pools, caches, the allocator's arenas)
//! are behind: what grows after that grows for ever. Writes `soak.md` and
//! `soak.json`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;
use weft_tests::{Mesh, Pod, Proc, Signal};

use crate::cplane::Quantiles;
use crate::footprint;
use crate::hist::Percentiles;
use crate::load::LoadReport;
use crate::setup::control::ControlPlane;
use crate::setup::{Binaries, Setup, SetupKind, mtls, wait_listening, weft};
use crate::stop;
use crate::workload::{APP_ECHO_PORT, APP_HTTP_PORT, Workload};

/// Requests per second, open loop.
const RATE: u32 = 1000;
/// One generator run: its percentiles are the report's per-window figures.
const WINDOW: Duration = Duration::from_secs(300);
/// How often the replica flips, and the footprint is sampled.
const TICK: Duration = Duration::from_secs(10);
/// A policy change every this many ticks.
const POLICY_TICKS: u32 = 6;
/// After this, RSS, descriptors and threads must be flat.
const SETTLE: Duration = Duration::from_secs(300);
/// A request not answered this long after its intended send time fails.
const TIMEOUT: Duration = Duration::from_secs(2);
/// Allowed RSS growth after [`SETTLE`].
const RSS_DRIFT_KIB: i64 = 1024;
/// How long the client proxy may take to run a policy change.
const IN_FORCE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stopped replica may take to drain and exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
/// The churned replica's workload name.
const REPLICA: &str = "app-1";
/// The TrafficPolicy file the soak rewrites.
const POLICY_FILE: &str = "soak.yaml";

/// What the command line asked for.
#[derive(Debug, Clone)]
pub struct Options {
    pub duration: Duration,
    pub out: PathBuf,
    pub proxy_bin: Option<PathBuf>,
    pub control_bin: Option<PathBuf>,
    pub command: String,
}

#[derive(Debug, Serialize)]
pub struct SoakReport {
    pub command: String,
    pub commit: String,
    pub duration_s: f64,
    pub rate: u32,
    pub windows: Vec<Window>,
    /// Replica stops (SIGTERM → exit) and starts (→ ready), with timings.
    pub replica_stops: usize,
    pub replica_starts: usize,
    pub replica_stop_s: Option<Quantiles>,
    pub replica_start_s: Option<Quantiles>,
    /// Policy changes and the time from the file's rename to the client
    /// proxy running it (its `/config` policy version moved).
    pub policy_changes: usize,
    pub policy_in_force_ms: Option<Quantiles>,
    pub samples: Vec<Sample>,
    pub steady: Vec<Steady>,
    pub targets: Vec<Target>,
    /// What went wrong besides the targets (a process that died, a change
    /// that was never seen).
    pub failures: Vec<String>,
}

/// One generator run.
#[derive(Debug, Serialize)]
pub struct Window {
    pub from_s: f64,
    pub seconds: f64,
    pub sent: u64,
    pub ok: u64,
    pub errors: u64,
    pub timeouts: u64,
    pub first_error: Option<String>,
    pub achieved_rps: f64,
    /// Microseconds.
    pub latency: Percentiles,
}

/// The footprint of the measured proxies at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub t_s: f64,
    pub proxy: String,
    pub rss_kib: u64,
    pub anon_kib: Option<u64>,
    pub fds: usize,
    pub threads: usize,
}

/// One proxy's footprint over the steady part (after [`SETTLE`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Steady {
    pub proxy: String,
    pub samples: usize,
    /// Last sample minus the first steady one.
    pub rss_drift_kib: i64,
    pub rss_min_kib: u64,
    pub rss_max_kib: u64,
    /// (min, max) over the steady part.
    pub fds: (usize, usize),
    pub threads: (usize, usize),
    /// Medians of the first and of the last 5 minutes of the steady part:
    /// descriptors move with the connections of the moment (the replica's
    /// churn), so growth is judged on where they settle, not on the spread.
    pub fds_medians: (usize, usize),
    pub threads_medians: (usize, usize),
}

#[derive(Debug, Serialize)]
pub struct Target {
    pub target: String,
    pub met: bool,
    pub figure: String,
}

/// Runs the soak; `Ok(false)` when a target was missed or something failed.
pub fn run(opts: &Options) -> anyhow::Result<bool> {
    crate::harness::preflight()?;
    stop::install()?;
    crate::limits::raise_nofile();
    let exe = std::env::current_exe().context("finding this executable")?;
    let proxy = opts.proxy_bin.clone().unwrap_or_else(|| weft_tests::proxy_bin().to_owned());
    let control = opts.control_bin.clone().unwrap_or_else(|| weft_tests::control_bin().to_owned());
    for bin in [&proxy, &control] {
        anyhow::ensure!(bin.is_file(), "{}: no such file", bin.display());
    }
    let bins = Binaries { exe: exe.clone(), proxy, control, baseline_proxy: None };
    eprintln!(
        "weft-bench: soak of {} at {RATE} requests/s (replica flips every {TICK:?}, policy every {:?}); results to {}",
        humantime::format_duration(opts.duration),
        TICK * POLICY_TICKS,
        opts.out.display()
    );

    let mesh = Mesh::new();
    let dir = mesh.dir().to_owned();
    let mut setup = Setup::start(SetupKind::WeftMtls, &mesh, &bins, &dir).context("starting the weft-mtls pair")?;
    let replica_pod = mesh.pod("sr");
    let mut app = replica_pod.spawn(
        "app",
        &exe,
        &["app", "--http", &format!("0.0.0.0:{APP_HTTP_PORT}"), "--echo", &format!("0.0.0.0:{APP_ECHO_PORT}")],
    );
    wait_listening(&replica_pod, &mut app, &[APP_HTTP_PORT, APP_ECHO_PORT])?;
    let mut control = setup.control.take().context("weft-mtls has a control plane")?;
    let replica = mtls::start_server(&replica_pod, &mut control, &bins.proxy, REPLICA, true)?;
    let measured: Vec<(String, u32)> = setup.proxies.iter().map(|p| (p.name.clone(), p.pid)).collect();
    eprintln!("weft-bench: soak: the pair and the replica are up; load starts");

    // The checkout as the soak starts (it may move during half an hour).
    let commit = commit();
    let started = Instant::now();
    let end = started + opts.duration;
    let mut churn = Churn {
        control: &mut control,
        pod: &replica_pod,
        proxy: &bins.proxy,
        replica: Some(replica),
        client: &setup.client,
        stops: Vec::new(),
        starts: Vec::new(),
        policy_ms: Vec::new(),
        flips: 0,
        failures: Vec::new(),
    };
    let mut samples = Vec::new();
    let windows = std::thread::scope(|scope| {
        let load = scope.spawn(|| load_windows(&setup, &exe, started, end));
        let mut tick = 0u32;
        while Instant::now() < end && !load.is_finished() && !stop::requested() {
            let now = started.elapsed();
            for (name, pid) in &measured {
                match sample(now, name, *pid) {
                    Ok(s) => samples.push(s),
                    Err(e) => churn.failures.push(format!("sampling {name}: {e:#}")),
                }
            }
            if tick % POLICY_TICKS == POLICY_TICKS - 1 {
                churn.change_policy(tick / POLICY_TICKS);
            }
            churn.flip();
            tick += 1;
            let next = started + TICK * tick;
            while Instant::now() < next && !load.is_finished() && !stop::requested() {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        load.join().expect("the load thread panicked")
    });
    let Churn { stops, starts, policy_ms, mut failures, .. } = churn;
    let windows = match windows {
        Ok(w) => w,
        Err(e) => {
            failures.push(format!("the load generator: {e:#}"));
            Vec::new()
        }
    };
    if let Err(e) = setup.check_alive() {
        failures.push(format!("{e:#}"));
    }
    let steady = steady(&samples, SETTLE);
    let mut report = SoakReport {
        command: opts.command.clone(),
        commit,
        duration_s: started.elapsed().as_secs_f64(),
        rate: RATE,
        windows,
        replica_stops: stops.len(),
        replica_starts: starts.len(),
        replica_stop_s: Quantiles::of(&stops),
        replica_start_s: Quantiles::of(&starts),
        policy_changes: policy_ms.len(),
        policy_in_force_ms: Quantiles::of(&policy_ms),
        samples,
        steady,
        targets: Vec::new(),
        failures,
    };
    report.targets = targets(&report);
    let ok = report.failures.is_empty() && report.targets.iter().all(|t| t.met);
    write(&report, &opts.out)?;
    drop(control);
    Ok(ok)
}

/// Back-to-back generator runs of [`WINDOW`] (the last one shorter) until
/// `end`, from the client pod.
fn load_windows(setup: &Setup, exe: &Path, started: Instant, end: Instant) -> anyhow::Result<Vec<Window>> {
    let mut windows = Vec::new();
    let target = setup.target(Workload::Http1).to_string();
    while !stop::requested() {
        let left = end.saturating_duration_since(Instant::now());
        if left < Duration::from_secs(5) {
            break;
        }
        let length = left.min(WINDOW);
        let from_s = started.elapsed().as_secs_f64();
        // The first window warms the connections up; later ones carry on.
        let warmup = if windows.is_empty() { "1s" } else { "0ms" };
        let args = [
            "load".to_owned(),
            "--workload".into(),
            "http1".into(),
            "--target".into(),
            target.clone(),
            "--rate".into(),
            RATE.to_string(),
            "--warmup".into(),
            warmup.into(),
            "--duration".into(),
            format!("{}ms", length.as_millis()),
            "--timeout".into(),
            format!("{}ms", TIMEOUT.as_millis()),
        ];
        let logs = setup.client.dir().join(format!("soak-load-{}", windows.len()));
        let run = weft_tests::run_logged(
            setup.client.command(exe, &args),
            (logs.with_extension("out"), logs.with_extension("err")),
            length + Duration::from_secs(60),
        );
        anyhow::ensure!(run.status.success(), "the load generator failed:\n{run}");
        let r: LoadReport = serde_json::from_str(run.stdout.trim()).with_context(|| format!("parsing {run}"))?;
        eprintln!(
            "weft-bench: soak: window {} ({:.0} s): {} sent, {} ok, {} failed; p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs",
            windows.len() + 1,
            length.as_secs_f64(),
            r.sent,
            r.ok,
            r.errors + r.timeouts,
            r.latency.p50,
            r.latency.p99,
            r.latency.max
        );
        windows.push(Window {
            from_s,
            seconds: length.as_secs_f64(),
            sent: r.sent,
            ok: r.ok,
            errors: r.errors,
            timeouts: r.timeouts,
            first_error: r.first_error,
            achieved_rps: r.achieved_rps,
            latency: r.latency,
        });
    }
    Ok(windows)
}

/// The replica and the policy, changed on the soak's ticks.
struct Churn<'a> {
    control: &'a mut ControlPlane,
    pod: &'a Pod,
    proxy: &'a Path,
    replica: Option<Proc>,
    client: &'a Pod,
    /// Seconds from SIGTERM to exit, and from start to ready.
    stops: Vec<f64>,
    starts: Vec<f64>,
    policy_ms: Vec<f64>,
    flips: u32,
    failures: Vec<String>,
}

impl Churn<'_> {
    /// Stops the replica if it runs, starts it otherwise.
    fn flip(&mut self) {
        self.flips += 1;
        let t0 = Instant::now();
        match self.replica.take() {
            Some(mut proc) => {
                proc.signal(Signal::SIGTERM);
                let status = proc.wait_exit(EXIT_TIMEOUT);
                self.stops.push(t0.elapsed().as_secs_f64());
                if !status.success() {
                    self.failures.push(format!("the replica exited with {status} on SIGTERM:\n{}", proc.stderr()));
                }
            }
            None => match mtls::start_server(self.pod, self.control, self.proxy, REPLICA, false) {
                Ok(proc) => {
                    self.starts.push(t0.elapsed().as_secs_f64());
                    self.replica = Some(proc);
                }
                Err(e) => self.failures.push(format!("starting the replica again (flip {}): {e:#}", self.flips)),
            },
        }
    }

    /// Rewrites the TrafficPolicy (the `n`th change) and waits until the
    /// client proxy runs a newer policy version.
    fn change_policy(&mut self, n: u32) {
        let target = format!("{}:{APP_HTTP_PORT}", mtls::VIP);
        let version = |client: &Pod| -> Option<u64> {
            let config: serde_json::Value = serde_json::from_str(&weft::admin_get(client, "/config").ok()?).ok()?;
            config["discovery"]["targets"].as_array()?.iter().find(|t| t["target"] == target.as_str())?
                ["policy_version"]
                .as_u64()
        };
        let before = version(self.client);
        let path = self.control.policy_dir.join(POLICY_FILE);
        let tmp = path.with_extension("tmp");
        let written = std::fs::write(&tmp, policy_yaml(n)).and_then(|()| std::fs::rename(&tmp, &path));
        let t0 = Instant::now();
        if let Err(e) = written {
            self.failures.push(format!("writing {}: {e}", path.display()));
            return;
        }
        loop {
            let now = version(self.client);
            if now.is_some() && now > before {
                self.policy_ms.push(t0.elapsed().as_secs_f64() * 1e3);
                return;
            }
            if t0.elapsed() > IN_FORCE_TIMEOUT {
                self.failures.push(format!(
                    "policy change {n} not in force on the client proxy after {IN_FORCE_TIMEOUT:?} (version {before:?} → {now:?})"
                ));
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The `n`th TrafficPolicy: the request timeout alternates, so every
/// change is a real one and none affects a request of the soak.
fn policy_yaml(n: u32) -> String {
    let seconds = 10 + n % 2;
    format!(
        "apiVersion: policy.weft.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {{name: soak, namespace: {}}}\nspec:\n  \
         targetRef: {{kind: Service, name: app}}\n  timeouts: {{request: {seconds}s}}\n",
        mtls::NAMESPACE
    )
}

fn sample(now: Duration, name: &str, pid: u32) -> anyhow::Result<Sample> {
    let m = footprint::memory(pid)?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count();
    let threads = std::fs::read_dir(format!("/proc/{pid}/task"))?.count();
    Ok(Sample {
        t_s: now.as_secs_f64(),
        proxy: name.to_owned(),
        rss_kib: m.rss_kib,
        anon_kib: m.anon_kib,
        fds,
        threads,
    })
}

/// Each proxy's footprint from `settle` on.
fn steady(samples: &[Sample], settle: Duration) -> Vec<Steady> {
    let mut names: Vec<&str> = samples.iter().map(|s| s.proxy.as_str()).collect();
    names.dedup();
    names.sort_unstable();
    names.dedup();
    names
        .into_iter()
        .filter_map(|name| {
            let s: Vec<&Sample> = samples.iter().filter(|s| s.proxy == name && s.t_s >= settle.as_secs_f64()).collect();
            let (first, last) = (s.first()?, s.last()?);
            let range = |f: fn(&Sample) -> usize| {
                (s.iter().map(|x| f(x)).min().unwrap_or(0), s.iter().map(|x| f(x)).max().unwrap_or(0))
            };
            let per_window = (WINDOW.as_secs() / TICK.as_secs()) as usize;
            let medians = |f: fn(&Sample) -> usize| {
                let n = per_window.min(s.len());
                (median(s[..n].iter().map(|x| f(x))), median(s[s.len() - n..].iter().map(|x| f(x))))
            };
            Some(Steady {
                proxy: name.to_owned(),
                samples: s.len(),
                rss_drift_kib: last.rss_kib as i64 - first.rss_kib as i64,
                rss_min_kib: s.iter().map(|x| x.rss_kib).min().unwrap_or(0),
                rss_max_kib: s.iter().map(|x| x.rss_kib).max().unwrap_or(0),
                fds: range(|x| x.fds),
                threads: range(|x| x.threads),
                fds_medians: medians(|x| x.fds),
                threads_medians: medians(|x| x.threads),
            })
        })
        .collect()
}

fn median(values: impl Iterator<Item = usize>) -> usize {
    let mut v: Vec<usize> = values.collect();
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

/// Flat: the last window's median is within `slack` of the first's
/// (a leak grows it window after window; churn only spreads it).
fn flat((first, last): (usize, usize), slack: usize) -> bool {
    last <= first + slack
}

/// Descriptors may settle this much higher: a few connections more or
/// less open at the moment.
const FD_SLACK: usize = 16;
/// Threads may move by this much (tokio's blocking pool).
const THREAD_SLACK: usize = 2;

fn targets(r: &SoakReport) -> Vec<Target> {
    let sent: u64 = r.windows.iter().map(|w| w.sent).sum();
    let failed: u64 = r.windows.iter().map(|w| w.errors + w.timeouts).sum();
    let minutes = r.duration_s / 60.0;
    let mut out = vec![Target {
        target: format!("{RATE} requests/s for the whole run, 0 failed"),
        met: failed == 0 && sent > 0 && r.windows.iter().all(|w| w.achieved_rps >= 0.95 * f64::from(RATE)),
        figure: format!(
            "{sent} sent over {minutes:.1} min, {failed} failed; {} replica stops and {} starts, {} policy changes",
            r.replica_stops, r.replica_starts, r.policy_changes
        ),
    }];
    if r.steady.is_empty() {
        out.push(Target {
            target: format!("footprint flat after the first {} min", SETTLE.as_secs() / 60),
            met: false,
            figure: "the run was too short to have a steady part".into(),
        });
    }
    for s in &r.steady {
        out.push(Target {
            target: format!("{}: RSS drift < 1 MiB after the first {} min", s.proxy, SETTLE.as_secs() / 60),
            met: s.rss_drift_kib < RSS_DRIFT_KIB,
            figure: format!(
                "{:+} KiB over {} samples (range {:.1}–{:.1} MiB)",
                s.rss_drift_kib,
                s.samples,
                s.rss_min_kib as f64 / 1024.0,
                s.rss_max_kib as f64 / 1024.0
            ),
        });
        out.push(Target {
            target: format!("{}: file descriptors and threads flat", s.proxy),
            met: flat(s.fds_medians, FD_SLACK) && flat(s.threads_medians, THREAD_SLACK),
            figure: format!(
                "median of the first / last 5 min: fds {} / {} (range {}–{}, slack {FD_SLACK}), threads {} / {} \
                 (slack {THREAD_SLACK})",
                s.fds_medians.0, s.fds_medians.1, s.fds.0, s.fds.1, s.threads_medians.0, s.threads_medians.1
            ),
        });
    }
    out
}

fn commit() -> String {
    std::process::Command::new("git")
        .args(["-C", env!("CARGO_MANIFEST_DIR"), "describe", "--always", "--dirty"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
}

fn write(r: &SoakReport, out: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let json = out.join("soak.json");
    std::fs::write(&json, serde_json::to_vec(r)?).with_context(|| format!("writing {}", json.display()))?;
    let md = out.join("soak.md");
    let text = markdown(r);
    std::fs::write(&md, &text).with_context(|| format!("writing {}", md.display()))?;
    println!("{text}");
    eprintln!("weft-bench: wrote {} and {}", md.display(), json.display());
    Ok(())
}

fn markdown(r: &SoakReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Soak: the weft mTLS pair under churn\n");
    let _ = writeln!(s, "- command: `cargo run --release -p weft-bench -- {}`", r.command);
    let _ = writeln!(
        s,
        "- commit: {}; {:.1} min at {} requests/s (HTTP/1.1, 1 KiB)",
        r.commit,
        r.duration_s / 60.0,
        r.rate
    );
    let _ = writeln!(
        s,
        "- the service's second replica stopped (SIGTERM: deregister, drain, exit) and started (new token, register) \
         every {} s: {} stops, p50 {} s; {} starts, p50 {} s",
        TICK.as_secs(),
        r.replica_stops,
        r.replica_stop_s.as_ref().map_or("–".into(), |q| format!("{:.2}", q.p50)),
        r.replica_starts,
        r.replica_start_s.as_ref().map_or("–".into(), |q| format!("{:.2}", q.p50)),
    );
    let _ = writeln!(
        s,
        "- its TrafficPolicy rewritten every {} s: {} changes, in force on the client proxy p50 {} ms, max {} ms \
         (from the file's rename, which the control plane sees through inotify; its file poll, every 250 ms, only backs that up)\n",
        (TICK * POLICY_TICKS).as_secs(),
        r.policy_changes,
        r.policy_in_force_ms.as_ref().map_or("–".into(), |q| format!("{:.0}", q.p50)),
        r.policy_in_force_ms.as_ref().map_or("–".into(), |q| format!("{:.0}", q.max)),
    );
    let _ = writeln!(s, "## Targets\n\n| target | status | where we stand |\n| --- | --- | --- |");
    for t in &r.targets {
        let _ = writeln!(s, "| {} | {} | {} |", t.target, if t.met { "met" } else { "**missed**" }, t.figure);
    }
    let _ = writeln!(
        s,
        "\n## Latency per window (µs, client → pair → app)\n\n| from (min) | length (s) | sent | failed | rps | p50 | p90 | \
         p99 | p99.9 | max |\n| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for w in &r.windows {
        let _ = writeln!(
            s,
            "| {:.1} | {:.0} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
            w.from_s / 60.0,
            w.seconds,
            w.sent,
            w.errors + w.timeouts,
            w.achieved_rps,
            w.latency.p50,
            w.latency.p90,
            w.latency.p99,
            w.latency.p999,
            w.latency.max
        );
    }
    let _ = writeln!(
        s,
        "\n## Footprint after the first {} min\n\n| proxy | samples | RSS drift (KiB) | RSS range (MiB) | fds | threads |\n\
         | --- | ---: | ---: | ---: | ---: | ---: |",
        SETTLE.as_secs() / 60
    );
    for st in &r.steady {
        let _ = writeln!(
            s,
            "| {} | {} | {:+} | {:.1}–{:.1} | {}–{} | {}–{} |",
            st.proxy,
            st.samples,
            st.rss_drift_kib,
            st.rss_min_kib as f64 / 1024.0,
            st.rss_max_kib as f64 / 1024.0,
            st.fds.0,
            st.fds.1,
            st.threads.0,
            st.threads.1
        );
    }
    if !r.failures.is_empty() {
        let _ = writeln!(s, "\n## Failures\n");
        for f in &r.failures {
            let _ = writeln!(s, "- {}", f.replace('\n', " "));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t: f64, proxy: &str, rss: u64, fds: usize) -> Sample {
        Sample { t_s: t, proxy: proxy.into(), rss_kib: rss, anon_kib: None, fds, threads: 3 }
    }

    #[test]
    fn steady_starts_at_settle_and_drift_is_last_minus_first() {
        let samples = [
            at(0.0, "a", 9000, 20),
            at(0.0, "b", 8000, 10),
            at(300.0, "a", 12000, 30),
            at(300.0, "b", 8100, 10),
            at(600.0, "a", 12500, 90),
            at(600.0, "b", 8000, 12),
            at(900.0, "a", 11900, 31),
            at(900.0, "b", 8050, 11),
        ];
        let s = steady(&samples, Duration::from_secs(300));
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].proxy.as_str(), s[0].samples, s[0].rss_drift_kib), ("a", 3, -100));
        assert_eq!((s[0].rss_min_kib, s[0].rss_max_kib, s[0].fds), (11900, 12500, (30, 90)));
        // Fewer samples than a window: both medians are over all three.
        assert_eq!(s[0].fds_medians, (31, 31));
        assert_eq!((s[1].proxy.as_str(), s[1].rss_drift_kib, s[1].fds), ("b", -50, (10, 12)));
        assert!(steady(&samples, Duration::from_secs(1000)).is_empty(), "nothing after settle: no steady part");
    }

    #[test]
    fn flat_allows_the_slack_and_no_more() {
        // (first median, last median), slack, flat
        for (medians, slack, want) in
            [((10, 10), 0, true), ((40, 31), 16, true), ((10, 26), 16, true), ((10, 27), 16, false), ((2, 5), 2, false)]
        {
            assert_eq!(flat(medians, slack), want, "{medians:?} slack {slack}");
        }
        assert_eq!(median([5, 1, 9, 3].into_iter()), 5);
        assert_eq!(median(std::iter::empty()), 0);
    }

    #[test]
    fn policies_alternate_and_parse_with_the_control_planes_parser() {
        assert_ne!(policy_yaml(0), policy_yaml(1));
        assert_eq!(policy_yaml(0), policy_yaml(2));
        for n in 0..2 {
            let parsed = weft_control::policy::parse(&policy_yaml(n)).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(parsed.len(), 1);
        }
    }
}
