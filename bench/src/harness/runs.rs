//! One generator run in a setup's client pod, with the footprint of the
//! setup's proxies around it: peak RSS reset before, read after; CPU ticks
//! before and after; the connections that reached the server pod.

use std::path::Path;

use anyhow::Context as _;

use crate::footprint;
use crate::load::LoadReport;
use crate::plan::Phase;
use crate::report::model::ProcRun;
use crate::setup::Setup;
use crate::tcp_opens;
use crate::workload::Workload;

/// How the generator sends.
#[derive(Debug, Clone, Copy)]
pub enum Spec {
    Open { rate: u32, phase: Phase },
    Closed { workers: usize, phase: Phase },
}

fn ms(d: std::time::Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// `weft-bench load …` arguments.
pub fn load_args(
    workload: Workload,
    target: std::net::SocketAddr,
    spec: Spec,
    timeout: std::time::Duration,
) -> Vec<String> {
    let mut args: Vec<String> =
        vec!["load".into(), "--workload".into(), workload.name().into(), "--target".into(), target.to_string()];
    let phase = match spec {
        Spec::Open { rate, phase } => {
            args.extend(["--rate".into(), rate.to_string()]);
            phase
        }
        Spec::Closed { workers, phase } => {
            args.extend(["--closed".into(), workers.to_string()]);
            phase
        }
    };
    args.extend([
        "--warmup".into(),
        ms(phase.warmup),
        "--duration".into(),
        ms(phase.measure),
        "--timeout".into(),
        ms(timeout),
    ]);
    args
}

/// What one generator run measured.
pub struct Measured {
    pub report: LoadReport,
    /// Each proxy's cost.
    pub proxies: Vec<ProcRun>,
    /// TCP connections that came into the server pod during the run: the
    /// client-side proxy's upstream connections ([`tcp_opens`]).
    pub upstream_connections: u64,
}

/// Runs the generator once.
pub fn measure(
    setup: &Setup,
    exe: &Path,
    workload: Workload,
    spec: Spec,
    timeout: std::time::Duration,
) -> anyhow::Result<Measured> {
    let mut before = Vec::with_capacity(setup.proxies.len());
    for p in &setup.proxies {
        footprint::reset_peak(p.pid).with_context(|| format!("resetting the peak RSS of {}", p.name))?;
        before.push(footprint::cpu_ticks(p.pid).with_context(|| format!("reading the CPU time of {}", p.name))?);
    }
    let opens_before = tcp_opens::read(&setup.server)?;
    let args = load_args(workload, setup.target(workload), spec, timeout);
    let run = setup.client.exec(exe, &args);
    anyhow::ensure!(run.status.success(), "the load generator failed in pod {}:\n{run}", setup.client.name());
    let report: LoadReport = serde_json::from_str(run.stdout.trim())
        .with_context(|| format!("parsing the load generator's report:\n{run}"))?;
    let mut procs = Vec::with_capacity(setup.proxies.len());
    for (p, ticks) in setup.proxies.iter().zip(before) {
        let mem = footprint::memory(p.pid).with_context(|| format!("reading the memory of {}", p.name))?;
        let after = footprint::cpu_ticks(p.pid).with_context(|| format!("reading the CPU time of {}", p.name))?;
        procs.push(ProcRun { name: p.name.clone(), peak_rss_kib: mem.hwm_kib, cpu_ticks: after.saturating_sub(ticks) });
    }
    let upstream_connections = tcp_opens::read(&setup.server)?.arrived_since(opens_before);
    Ok(Measured { report, proxies: procs, upstream_connections })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn generator_arguments() {
        let phase = Phase { warmup: Duration::from_millis(500), measure: Duration::from_secs(2) };
        let target = "198.18.0.12:8080".parse().unwrap();
        let args = load_args(Workload::Http2, target, Spec::Open { rate: 1000, phase }, Duration::from_secs(2));
        assert_eq!(
            args.join(" "),
            "load --workload http2 --target 198.18.0.12:8080 --rate 1000 --warmup 500ms --duration 2000ms --timeout 2000ms"
        );
        let args = load_args(Workload::Http1, target, Spec::Closed { workers: 16, phase }, Duration::from_secs(1));
        assert!(args.join(" ").contains("--closed 16 --warmup 500ms"));
        // The generator's own parser accepts them.
        use clap::Parser as _;
        let cli = crate::cli::Cli::try_parse_from(std::iter::once("weft-bench".to_owned()).chain(args)).unwrap();
        assert!(matches!(cli.command, Some(crate::cli::Command::Load(l)) if l.closed == Some(16)));
    }
}
