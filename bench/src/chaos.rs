//! `weft-bench --chaos`: the mTLS pair's good clients beside a hostile
//! one. The generator sends HTTP/1.1 at a fixed rate through the
//! `weft-mtls` pair, alternately quiet and while a third pod floods the
//! server proxy's inbound port with garbage, half-open TLS handshakes
//! (a mesh ClientHello, then silence) and silent connections at 1,000/s
//! ([`weft_tests::hostile`], run in that pod as `weft-bench flood`).
//! Reports the good clients' p50/p99 quiet and under the flood, their
//! failures, the server proxy's peak RSS, and what became of the flood's
//! connections; checks the targets ([`crate::report::targets::chaos`]).
//!
//! ```text
//! pod A: weft-bench load (500/s) ─► proxy A ══ mTLS ══► proxy B :4143 ─► app
//! pod X: weft-bench flood (1,000/s) ──────────────────────┘
//! for rep { quiet run ; flood run }   (interleaved: the machine's noise hits both)
//! ```

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;
use weft_tests::Mesh;
use weft_tests::hostile::{self, Kind};

use crate::harness::Options;
use crate::harness::runs::{Spec, measure};
use crate::plan::ChaosPlan;
use crate::report::model::TargetCheck;
use crate::report::targets;
use crate::setup::{Binaries, Setup, SetupKind};
use crate::workload::{APP_HTTP_PORT, Workload};

/// Flags of `weft-bench flood` (run inside the hostile pod).
#[derive(clap::Args, Debug, Clone)]
pub struct FloodArgs {
    #[arg(long)]
    pub connect: std::net::SocketAddr,
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Duration,
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub hold: Duration,
}

/// Runs a flood and prints its report as JSON.
pub fn flood(args: &FloodArgs) -> anyhow::Result<()> {
    hostile::raise_nofile().context("raising RLIMIT_NOFILE")?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let report = runtime.block_on(hostile::flood(&hostile::Flood {
        connect: args.connect,
        rate: args.rate,
        duration: args.duration,
        kinds: Kind::ALL.to_vec(),
        hold: args.hold,
    }));
    let tally = |t: &hostile::Tally| FloodTally {
        opened: t.opened,
        connect_failed: t.connect_failed,
        closed_by_peer: t.closed_by_peer,
        held: t.held,
        close_ms_p50: t.close_ms_quantile(0.5),
        close_ms_max: t.close_ms_quantile(1.0),
    };
    let out = FloodResult {
        rate: report.rate,
        garbage: tally(&report.garbage),
        hello: tally(&report.hello),
        silent: tally(&report.silent),
    };
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}

/// One kind of flood connection, as the hostile client saw them.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct FloodTally {
    pub opened: u64,
    pub connect_failed: u64,
    /// Closed by the server proxy within the hold.
    pub closed_by_peer: u64,
    /// Still open when the client gave up (10 s).
    pub held: u64,
    pub close_ms_p50: u64,
    pub close_ms_max: u64,
}

/// A flood's report.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct FloodResult {
    /// Connections started per second, achieved.
    pub rate: f64,
    pub garbage: FloodTally,
    pub hello: FloodTally,
    pub silent: FloodTally,
}

/// One generator run's figures.
#[derive(Debug, Clone, Serialize)]
pub struct GoodRun {
    pub rep: usize,
    pub flood: bool,
    pub achieved_rps: f64,
    pub ok: u64,
    /// Errors and timeouts.
    pub failed: u64,
    pub first_error: Option<String>,
    pub p50_us: f64,
    pub p99_us: f64,
    /// The server proxy's peak RSS over the run.
    pub server_peak_rss_kib: u64,
}

/// Everything `--chaos` measured.
#[derive(Debug, Clone, Serialize)]
pub struct ChaosResults {
    pub plan: ChaosPlan,
    pub command: String,
    pub runs: Vec<GoodRun>,
    pub floods: Vec<FloodResult>,
    /// The server proxy's counters at the end: shed at admission, handshake
    /// timeouts.
    pub server_counters: Vec<(String, f64)>,
    pub targets: Vec<TargetCheck>,
    pub loadavg: [f64; 3],
}

impl ChaosResults {
    /// The median over reps of `f` of the quiet (`flood == false`) or
    /// flooded runs.
    pub fn median(&self, flood: bool, f: fn(&GoodRun) -> f64) -> Option<f64> {
        let mut v: Vec<f64> = self.runs.iter().filter(|r| r.flood == flood).map(f).collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    }
}

/// Runs `--chaos`; `Ok(false)` when a target is missed.
pub fn run(opts: &Options) -> anyhow::Result<bool> {
    crate::harness::preflight()?;
    crate::stop::install()?;
    crate::limits::raise_nofile();
    let plan = ChaosPlan::default();
    let exe = std::env::current_exe().context("finding this executable")?;
    let proxy = opts.proxy_bin.clone().unwrap_or_else(|| weft_tests::proxy_bin().to_owned());
    let control = opts.control_bin.clone().unwrap_or_else(|| weft_tests::control_bin().to_owned());
    let bins = Binaries { exe: exe.clone(), proxy, control, baseline_proxy: None };
    let mesh = Mesh::new();
    let dir = mesh.dir().to_owned();
    let setup = Setup::start(SetupKind::WeftMtls, &mesh, &bins, &dir).context("starting setup weft-mtls")?;
    let hostile_pod = mesh.pod("chaosx");
    let target = setup.server.addr(APP_HTTP_PORT).to_string();
    let spec = Spec::Open { rate: plan.rate, phase: plan.phase };
    let flood_for = format!("{}ms", (plan.phase.warmup + plan.phase.measure + Duration::from_secs(1)).as_millis());
    let hold = format!("{}ms", plan.hold.as_millis());
    let flood_rate = plan.flood_rate.to_string();

    let mut runs = Vec::new();
    let mut floods = Vec::new();
    for rep in 0..plan.reps {
        for flooded in [false, true] {
            crate::stop::check()?;
            let flood = flooded.then(|| {
                hostile_pod.spawn(
                    "flood",
                    &exe,
                    &["flood", "--connect", &target, "--rate", &flood_rate, "--duration", &flood_for, "--hold", &hold],
                )
            });
            let crate::harness::runs::Measured { report, proxies: procs, .. } =
                measure(&setup, &exe, Workload::Http1, spec, plan.timeout)?;
            let server_peak = procs.get(1).map_or(0, |p| p.peak_rss_kib);
            runs.push(GoodRun {
                rep,
                flood: flooded,
                achieved_rps: report.achieved_rps,
                ok: report.ok,
                failed: report.errors + report.timeouts,
                first_error: report.first_error.clone(),
                p50_us: report.latency.p50,
                p99_us: report.latency.p99,
                server_peak_rss_kib: server_peak,
            });
            if let Some(mut flood) = flood {
                flood.wait_exit(plan.hold + Duration::from_secs(30));
                let out = flood.stdout();
                floods.push(
                    serde_json::from_str(out.trim())
                        .with_context(|| format!("parsing the flood's report: {out}\n{}", flood.stderr()))?,
                );
            }
            let last = runs.last().expect("just pushed");
            eprintln!(
                "weft-bench --chaos: rep {rep} {}: {:.0} rps, {} failed, p50 {:.0} µs, p99 {:.0} µs, server RSS peak \
                 {} KiB",
                if flooded { "flood" } else { "quiet" },
                last.achieved_rps,
                last.failed,
                last.p50_us,
                last.p99_us,
                last.server_peak_rss_kib
            );
        }
    }
    let metrics = setup.server.exec("curl", &["-s", "--max-time", "5", "http://127.0.0.1:4191/metrics"]);
    let server_counters = ["weft_inbound_shed_total", "weft_inbound_handshake_timeouts_total"]
        .iter()
        .map(|name| {
            let v = metrics
                .stdout
                .lines()
                .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.trim().parse::<f64>().ok()))
                .unwrap_or(f64::NAN);
            ((*name).to_owned(), v)
        })
        .collect();
    let mut results = ChaosResults {
        plan,
        command: opts.command.clone(),
        runs,
        floods,
        server_counters,
        targets: Vec::new(),
        loadavg: crate::report::machine::loadavg(),
    };
    results.targets = targets::chaos(&results);
    write(&results, &opts.out)?;
    Ok(results.targets.iter().all(|t| t.status == "met"))
}

fn write(r: &ChaosResults, out: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let json: PathBuf = out.join("chaos.json");
    crate::report::write_json(&json, r)?;
    let md = out.join("chaos.md");
    let mut f = std::fs::File::create(&md).with_context(|| format!("creating {}", md.display()))?;
    writeln!(f, "# weft-bench --chaos\n")?;
    writeln!(f, "`{}`; load average at the end {:?}.\n", r.command, r.loadavg)?;
    writeln!(
        f,
        "Good clients: HTTP/1.1 at {}/s through the weft-mtls pair; flood: {}/s garbage, half-open TLS \
         handshakes and silent connections on the server proxy's inbound port, each held up to {} s.\n",
        r.plan.rate,
        r.plan.flood_rate,
        r.plan.hold.as_secs()
    )?;
    writeln!(f, "| rep | phase | rps | failed | p50 (µs) | p99 (µs) | server proxy peak RSS (KiB) |")?;
    writeln!(f, "| --- | --- | --- | --- | --- | --- | --- |")?;
    for g in &r.runs {
        writeln!(
            f,
            "| {} | {} | {:.0} | {} | {:.0} | {:.0} | {} |",
            g.rep,
            if g.flood { "flood" } else { "quiet" },
            g.achieved_rps,
            g.failed,
            g.p50_us,
            g.p99_us,
            g.server_peak_rss_kib
        )?;
    }
    writeln!(
        f,
        "\n| flood | kind | opened | connect failed | closed by proxy | held 10 s | close p50 (ms) | close max (ms) |"
    )?;
    writeln!(f, "| --- | --- | --- | --- | --- | --- | --- | --- |")?;
    for (i, fl) in r.floods.iter().enumerate() {
        for (kind, t) in [("garbage", &fl.garbage), ("hello", &fl.hello), ("silent", &fl.silent)] {
            writeln!(
                f,
                "| {i} ({:.0}/s) | {kind} | {} | {} | {} | {} | {} | {} |",
                fl.rate, t.opened, t.connect_failed, t.closed_by_peer, t.held, t.close_ms_p50, t.close_ms_max
            )?;
        }
    }
    writeln!(f, "\nServer proxy counters at the end:")?;
    for (name, v) in &r.server_counters {
        writeln!(f, "- `{name}` {v}")?;
    }
    writeln!(f, "\n## Targets\n")?;
    for t in &r.targets {
        writeln!(f, "- **{}**: {} — {}", t.target, t.status, t.detail)?;
    }
    eprintln!("weft-bench --chaos: wrote {} and {}", md.display(), json.display());
    Ok(())
}
