//! The control plane's section: how fast a policy change reaches the
//! proxies' streams, and what the control plane holds in memory with many
//! registered endpoints.
//!
//! ```text
//!  pod cpp: weft-control (plain gRPC, no CA)                          ◄── pod cpc: weft-bench cp-push
//!           N × (tonic channel ─ WatchOutbound VIP:8080), and writes the policy file
//!  pod cpr: a fresh weft-control                                      ◄── pod cpc: weft-bench cp-register
//!           Registry.Register × 10,000 (leases held 5 min)
//!  bench:   /proc/PID of each weft-control: RSS after start-up, peak during its part, RSS with the endpoints
//! ```
//!
//! Each part has a control plane of its own, so that the RSS with the
//! endpoints does not carry what the thousand streams left in the heap.
//!
//! The simulated proxies are real gRPC clients of the real API (one
//! connection each, as proxies have); the control plane is the binary the
//! mesh runs, fed by the same files.

pub mod push;
pub mod register;

use std::fs::File;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;
use weft_tests::Mesh;

use crate::footprint;
use crate::plan::ControlPlan;
use crate::setup::Binaries;
use crate::setup::control::{self, ControlSpec};
use push::PushReport;
use register::RegisterReport;

/// The watched service and its target.
const SERVICE: &str = "app";
const VIP: &str = "198.18.0.200";
const PORT: u16 = 8080;
/// Services the registered endpoints are spread over.
const ENDPOINT_SERVICES: usize = 100;
/// Per change, at most (the push's own timeout is 20 s).
const PUSH_TIMEOUT: Duration = Duration::from_secs(25);

/// How long registering `n` endpoints may take. Until the index's maps
/// became persistent, each registration cost time in proportion to the
/// endpoints already there (66.7 s for 10,000 on a 2-core machine); and
/// until streams recomputed only when what they watch changed, each cost
/// time in proportion to the endpoints times the open streams. The bound
/// stays quadratic, so that a regression shows as slow figures rather than
/// as a time-out.
pub fn register_timeout(n: usize) -> Duration {
    let thousands = n as f64 / 1000.0;
    Duration::from_secs(60) + Duration::from_secs_f64(3.0 * thousands * thousands)
}

/// A guess of registering `n` endpoints, for the plan's estimate: 10,000
/// took 1.6 s on a busy 2-core machine once registration cost stopped
/// growing with the table (and 57 s before).
pub fn register_estimate(n: usize) -> Duration {
    Duration::from_secs_f64(1.0 + n as f64 / 5000.0)
}

/// The control plane's file poll during the section: its default. A change
/// is applied when inotify reports the rename (`control/src/source/wake.rs`),
/// so what is measured is the mesh's real path from write to stream; the
/// poll only bounds a missed event (it was 10 ms before inotify, to keep
/// the poll out of the figure).
pub const RELOAD_INTERVAL: &str = "250ms";

/// Seconds per tenth from cumulative (done, seconds) progress marks.
pub fn tenths(progress: &[(usize, f64)]) -> Vec<f64> {
    let mut last = 0.0;
    progress
        .iter()
        .map(|&(_, at)| {
            let d = at - last;
            last = at;
            d
        })
        .collect()
}

/// Nearest-rank quantiles of a few values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Quantiles {
    pub n: usize,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Quantiles {
    pub fn of(values: &[f64]) -> Option<Quantiles> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Some(Quantiles { n: v.len(), p50: at(0.5), p99: at(0.99), max: v[v.len() - 1] })
    }
}

/// One stream count.
#[derive(Debug, Clone, Serialize)]
pub struct PushResult {
    pub streams: usize,
    pub changes: usize,
    /// Opening the streams (64 at a time) and receiving the first policy on
    /// each, seconds.
    pub connect_s: f64,
    /// Openings that failed and were tried again (as a proxy would).
    pub open_retries: usize,
    pub first_retry_error: Option<String>,
    /// Per change, ms from the write until the last stream had it.
    pub to_all_ms: Vec<f64>,
    /// Over the changes: the time to reach every stream.
    pub to_all: Option<Quantiles>,
    /// Over the changes: the time to reach the first stream (file poll and
    /// recomputation, before the fan-out).
    pub to_first: Option<Quantiles>,
    /// The slowest change to reach every stream: ms until its first stream
    /// had it. Splits a slow change between noticing it (file poll, index,
    /// computation) and the fan-out.
    pub slowest_to_first_ms: Option<f64>,
    /// Every (stream, change) arrival, pooled.
    pub per_stream: Option<Quantiles>,
    /// (stream, change) pairs that never arrived within the timeout.
    pub missed: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct EndpointsResult {
    pub asked: usize,
    pub services: usize,
    pub registered: usize,
    pub failed: usize,
    pub first_error: Option<String>,
    pub took_s: f64,
    /// (registrations done, seconds) at every tenth.
    pub progress: Vec<(usize, f64)>,
    /// Discovery streams open while registering, the messages they got,
    /// and how long after the last registration they all had every
    /// endpoint (ms; `None`: some never did within 10 s).
    pub watchers: usize,
    pub watch_messages: u64,
    pub watch_converged_ms: Option<f64>,
    /// On a control plane of its own: VmRSS after start-up, after
    /// registering (the leases held), and VmHWM while registering.
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    pub peak_kib: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ControlPlaneResult {
    pub reload_interval: &'static str,
    /// VmRSS of the push part's control plane after start-up (services
    /// loaded, nothing connected).
    pub idle_rss_kib: Option<u64>,
    pub push: Vec<PushResult>,
    /// Endpoints registered with the push part's control plane before its
    /// streams opened, so that a change is pushed at that size.
    pub push_endpoints: usize,
    /// How long those registrations took, with no stream open: (seconds,
    /// (registrations done, seconds) at every tenth). The index's own cost
    /// per registration, which must not grow with the table.
    pub push_registration: Option<(f64, Vec<(usize, f64)>)>,
    /// VmHWM over the push part (every stream count).
    pub push_peak_kib: Option<u64>,
    pub endpoints: Option<EndpointsResult>,
    /// Why the section stopped early, if it did.
    pub error: Option<String>,
}

/// The services file: the watched service, and the ones the endpoints join.
fn services_yaml() -> String {
    let mut yaml = format!(
        "services:\n  - name: {SERVICE}\n    namespace: default\n    virtualIP: {VIP}\n    selector: {{app: \
         {SERVICE}}}\n    ports: [{{port: {PORT}, targetPort: {PORT}}}]\n"
    );
    for j in 0..ENDPOINT_SERVICES {
        let name = register::service_of(j, ENDPOINT_SERVICES);
        yaml.push_str(&format!(
            "  - name: {name}\n    namespace: default\n    virtualIP: {}\n    selector: {{app: {name}}}\n    \
             ports: [{{port: 80, targetPort: 8080}}]\n",
            register::service_vip(j)
        ));
    }
    yaml
}

/// Runs the section in two new pods of `mesh`. An error ends the section
/// and is recorded in the result; only a stop (Ctrl-C) is returned.
pub fn measure(mesh: &Mesh, bins: &Binaries, dir: &Path, plan: &ControlPlan) -> anyhow::Result<ControlPlaneResult> {
    let mut result = ControlPlaneResult {
        reload_interval: RELOAD_INTERVAL,
        idle_rss_kib: None,
        push: Vec::new(),
        push_endpoints: 0,
        push_registration: None,
        push_peak_kib: None,
        endpoints: None,
        error: None,
    };
    if let Err(e) = run(mesh, bins, dir, plan, &mut result) {
        crate::stop::check()?;
        result.error = Some(format!("{e:#}"));
    }
    Ok(result)
}

/// Runs `exe args` in `pod` to completion within `timeout` (killed past
/// it, or on a stop); its stdout. Logs go to `dir/label.{stdout,stderr}`.
fn run_in_pod(
    pod: &weft_tests::Pod,
    exe: &Path,
    args: &[String],
    timeout: Duration,
    dir: &Path,
    label: &str,
) -> anyhow::Result<String> {
    let (out, err) = (dir.join(format!("{label}.stdout")), dir.join(format!("{label}.stderr")));
    let mut cmd = pod.command(exe, args);
    cmd.stdin(Stdio::null())
        .stdout(File::create(&out).with_context(|| format!("creating {}", out.display()))?)
        .stderr(File::create(&err).with_context(|| format!("creating {}", err.display()))?);
    let mut child = cmd.spawn().with_context(|| format!("starting {label}"))?;
    let deadline = Instant::now() + timeout;
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline || crate::stop::requested() {
            let _ = child.kill();
            let _ = child.wait();
            crate::stop::check()?;
            anyhow::bail!("{label} did not finish within {timeout:?}; its stderr:\n{}", read(&err));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    anyhow::ensure!(status.success(), "{label} failed ({status}); its stderr:\n{}", read(&err));
    Ok(read(&out))
}

fn run(
    mesh: &Mesh,
    bins: &Binaries,
    dir: &Path,
    plan: &ControlPlan,
    result: &mut ControlPlaneResult,
) -> anyhow::Result<()> {
    let client = mesh.pod("cpc");
    let services = services_yaml();
    // Telemetry off: its scraper would dial every registered endpoint's
    // admin port each 5 s (10,000 connects to addresses that are data only,
    // refused at once for want of a route), which is not what this section
    // measures and not what a real mesh of that size would cost either.
    let spec = ControlSpec {
        services: &services,
        with_ca: false,
        extra: &["--reload-interval", RELOAD_INTERVAL, "--telemetry-interval", "0"],
    };
    let mem = |pid: u32| footprint::memory(pid).context("reading the memory of weft-control");

    if !plan.streams.is_empty() {
        crate::stop::check()?;
        let dir = dir.join("cplane-push");
        let mut cp = control::start(&mesh.pod("cpp"), &bins.control, &dir, &spec)?;
        let pid = cp.proc.pid();
        result.idle_rss_kib = Some(mem(pid)?.rss_kib);
        footprint::reset_peak(pid)?;
        if plan.endpoints > 0 {
            // The change is pushed at the size the registry part measures.
            let report = register(&client, bins, &cp, plan.endpoints, 0, &dir)?;
            anyhow::ensure!(
                report.failed == 0,
                "registering {} endpoints before the push: {} failed: {}",
                plan.endpoints,
                report.failed,
                report.first_error.unwrap_or_default()
            );
            result.push_endpoints = report.registered;
            result.push_registration = Some((report.took_s, report.progress));
        }
        let streams = plan.streams.iter().map(usize::to_string).collect::<Vec<_>>().join(",");
        let policy_file = cp.policy_dir.join("bench-push.yaml");
        let args = [
            "cp-push".to_owned(),
            "--url".into(),
            cp.url.clone(),
            "--target".into(),
            format!("{VIP}:{PORT}"),
            "--service".into(),
            SERVICE.into(),
            "--policy-file".into(),
            policy_file.to_string_lossy().into_owned(),
            "--streams".into(),
            streams,
            "--changes".into(),
            plan.changes.to_string(),
        ];
        let timeout = Duration::from_secs(60) + PUSH_TIMEOUT * u32::try_from(plan.changes * plan.streams.len())?;
        let run = run_in_pod(&client, &bins.exe, &args, timeout, &dir, "cp-push");
        check_alive(&mut cp)?;
        let stdout = run?;
        let report: PushReport =
            serde_json::from_str(stdout.trim()).with_context(|| format!("parsing the push report {stdout:?}"))?;
        result.push_peak_kib = Some(mem(pid)?.hwm_kib);
        result.push = summarize(&report);
        for p in &result.push {
            eprintln!(
                "  control plane: policy change to {:>5} streams: all reached in p50 {:.1} ms, p99 {:.1} ms \
                 ({} changes, {} missed)",
                p.streams,
                p.to_all.map_or(f64::NAN, |q| q.p50),
                p.to_all.map_or(f64::NAN, |q| q.p99),
                p.changes,
                p.missed
            );
        }
        // Killed here: the endpoints are counted on a fresh control plane.
        drop(cp);
    }

    if plan.endpoints > 0 {
        crate::stop::check()?;
        let dir = dir.join("cplane-registry");
        let mut cp = control::start(&mesh.pod("cpr"), &bins.control, &dir, &spec)?;
        let pid = cp.proc.pid();
        let before = mem(pid)?.rss_kib;
        footprint::reset_peak(pid)?;
        let report = register(&client, bins, &cp, plan.endpoints, ENDPOINT_SERVICES, &dir);
        check_alive(&mut cp)?;
        let report = report?;
        // The registrations have all been answered, so the index holds them.
        let after = mem(pid)?;
        eprintln!(
            "  control plane: {} endpoints registered in {:.1} s with {} discovery streams (all up to date {}): \
             RSS {:.1} → {:.1} MiB",
            report.registered,
            report.took_s,
            report.watchers,
            report.watch_converged_ms.map_or_else(|| "never".to_owned(), |ms| format!("{ms:.0} ms later")),
            before as f64 / 1024.0,
            after.rss_kib as f64 / 1024.0
        );
        result.endpoints = Some(EndpointsResult {
            asked: plan.endpoints,
            services: ENDPOINT_SERVICES,
            registered: report.registered,
            failed: report.failed,
            first_error: report.first_error,
            took_s: report.took_s,
            progress: report.progress,
            watchers: report.watchers,
            watch_messages: report.watch_messages,
            watch_converged_ms: report.watch_converged_ms,
            rss_before_kib: before,
            rss_after_kib: after.rss_kib,
            peak_kib: after.hwm_kib,
        });
    }
    Ok(())
}

/// Registers `count` endpoints with `cp` from `client` (`weft-bench
/// cp-register`), with `watch` discovery streams open meanwhile.
fn register(
    client: &weft_tests::Pod,
    bins: &Binaries,
    cp: &control::ControlPlane,
    count: usize,
    watch: usize,
    dir: &Path,
) -> anyhow::Result<RegisterReport> {
    let args = [
        "cp-register".to_owned(),
        "--url".into(),
        cp.url.clone(),
        "--count".into(),
        count.to_string(),
        "--services".into(),
        ENDPOINT_SERVICES.to_string(),
        "--watch".into(),
        watch.to_string(),
    ];
    let stdout = run_in_pod(client, &bins.exe, &args, register_timeout(count), dir, "cp-register")?;
    serde_json::from_str(stdout.trim()).with_context(|| format!("parsing the registration report {stdout:?}"))
}

fn check_alive(cp: &mut control::ControlPlane) -> anyhow::Result<()> {
    if let Some(status) = cp.proc.try_status() {
        anyhow::bail!("weft-control exited ({status}); its log:\n{}", cp.proc.stderr());
    }
    Ok(())
}

fn summarize(report: &PushReport) -> Vec<PushResult> {
    report
        .steps
        .iter()
        .map(|step| {
            // A change some stream missed has no "time to all".
            let to_all_ms: Vec<f64> =
                step.changes.iter().filter(|c| c.missed == 0).filter_map(|c| c.arrivals_ms.last().copied()).collect();
            let first: Vec<f64> = step.changes.iter().filter_map(|c| c.arrivals_ms.first().copied()).collect();
            let pooled: Vec<f64> = step.changes.iter().flat_map(|c| c.arrivals_ms.iter().copied()).collect();
            let slowest = step
                .changes
                .iter()
                .filter(|c| c.missed == 0)
                .filter_map(|c| Some((*c.arrivals_ms.last()?, *c.arrivals_ms.first()?)))
                .max_by(|a, b| a.0.total_cmp(&b.0));
            PushResult {
                streams: step.streams,
                changes: step.changes.len(),
                connect_s: step.connect_s,
                open_retries: step.open_retries,
                first_retry_error: step.first_retry_error.clone(),
                to_all: Quantiles::of(&to_all_ms),
                to_all_ms,
                to_first: Quantiles::of(&first),
                slowest_to_first_ms: slowest.map(|(_, first)| first),
                per_stream: Quantiles::of(&pooled),
                missed: step.changes.iter().map(|c| c.missed).sum(),
            }
        })
        .collect()
}

/// Whether the section's figures are complete (every change reached every
/// stream, every endpoint registered); the failures otherwise.
pub fn failures(r: &ControlPlaneResult) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(e) = &r.error {
        out.push(format!("control plane: {e}"));
    }
    for p in r.push.iter().filter(|p| p.missed > 0) {
        out.push(format!(
            "control plane: {} policy updates never reached their stream (of {} streams)",
            p.missed, p.streams
        ));
    }
    if let Some(e) = r.endpoints.as_ref().filter(|e| e.watchers > 0 && e.watch_converged_ms.is_none()) {
        out.push(format!(
            "control plane: after {} registrations, some of the {} discovery streams never held every endpoint of \
             their service",
            e.registered, e.watchers
        ));
    }
    if let Some(e) = r.endpoints.as_ref().filter(|e| e.failed > 0) {
        out.push(format!(
            "control plane: {} of {} registrations failed: {}",
            e.failed,
            e.asked,
            e.first_error.as_deref().unwrap_or_default()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use push::{PushChange, PushStep};

    #[test]
    fn quantiles_are_nearest_rank() {
        let q = Quantiles::of(&[5.0, 1.0, 3.0, 2.0, 4.0]).unwrap();
        assert_eq!((q.n, q.p50, q.p99, q.max), (5, 3.0, 5.0, 5.0));
        let many: Vec<f64> = (1..=200).map(f64::from).collect();
        let q = Quantiles::of(&many).unwrap();
        assert_eq!((q.p50, q.p99, q.max), (100.0, 198.0, 200.0));
        assert!(Quantiles::of(&[]).is_none());
    }

    #[test]
    fn a_missed_update_has_no_time_to_all() {
        let report = PushReport {
            target: "t".into(),
            steps: vec![PushStep {
                streams: 3,
                connect_s: 0.1,
                open_retries: 0,
                first_retry_error: None,
                changes: vec![
                    PushChange { arrivals_ms: vec![1.0, 2.0, 4.0], missed: 0 },
                    PushChange { arrivals_ms: vec![1.5, 3.0], missed: 1 },
                    PushChange { arrivals_ms: vec![0.5, 1.0, 2.0], missed: 0 },
                ],
            }],
        };
        let r = &summarize(&report)[0];
        assert_eq!(r.to_all_ms, vec![4.0, 2.0]);
        assert_eq!(r.to_first.unwrap().p50, 1.0);
        assert_eq!(r.slowest_to_first_ms, Some(1.0), "the first arrival of the change that took 4 ms");
        assert_eq!((r.per_stream.unwrap().n, r.missed), (8, 1));
    }

    #[test]
    fn the_services_file_lists_every_service() {
        let yaml = services_yaml();
        assert!(yaml.contains("virtualIP: 198.18.0.200"));
        assert!(yaml.contains("name: svc-99") && yaml.contains("virtualIP: 10.96.0.100"));
    }
}
