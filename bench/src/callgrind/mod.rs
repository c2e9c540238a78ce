//! `weft-bench callgrind`: instructions executed per request by one
//! weft-proxy, counted by valgrind's callgrind — a figure that repeats on a
//! noisy machine, where timings do not (issue #15: profile before
//! optimising, and hold the line in CI).
//!
//! ```text
//!  weft:       load ─► [outbound proxy under callgrind] ─── plain ──► inbound proxy ─► app
//!  weft-mtls:  load ─► VIP ─► [outbound proxy under callgrind] ══ mTLS ══► inbound proxy ─► app
//!              load ─► VIP ─► outbound proxy ══ mTLS ══► [inbound proxy under callgrind] ─► app
//! ```
//!
//! The setups are the bench's own (`weft`, `weft-mtls`: pods, interception
//! rules, control plane, the mTLS proofs), started natively; then one proxy
//! at a time is stopped and started again under
//! `valgrind --tool=callgrind`, with the same flags plus raised timeouts
//! (valgrind makes it ~50× slower). The client ([`client`], in the client
//! pod) opens one connection, sends the warm-up requests, and waits; the
//! counters are zeroed (`callgrind_control -z`), the measured requests are
//! sent one after the other, the counts are dumped (`callgrind_control -d`)
//! before the connection closes. So a figure covers exactly the measured
//! requests on an established connection (plus whatever timers fired
//! meanwhile), never start-up, connection set-up or teardown. Each run is a
//! new connection through the same proxy process.
//!
//! Why zero and dump rather than `--collect-atstart=no`: collection can
//! then only be switched on from inside the proxy (a client request) or on
//! entering a named function (`--toggle-collect`), and neither brackets
//! "these 200 requests" from outside; zeroing right before them and dumping
//! right after does, whatever the proxy did before.
//!
//! Writes `callgrind.{md,json}`; with `--check BASELINE` it compares the
//! medians with the committed baseline ([`count::Baseline`]) and fails on a
//! count above baseline × (1 + tolerance) (`bench/tests/callgrind.rs`).

pub mod client;
pub mod count;

use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Serialize;
use weft_tests::{ADMIN, Mesh, PROXY_UID, Pod, Proc};

use crate::report::machine::Host;
use crate::setup::{Binaries, Setup, SetupKind, mtls, weft};
use crate::stop::{self, KillOnDrop};
use crate::workload::{APP_ECHO_PORT, APP_HTTP_PORT};
use client::{Exchange, Measured};
use count::{Baseline, Summary, thousands};

/// Flags of `weft-bench callgrind`.
#[derive(clap::Args, Debug, Clone)]
pub struct CallgrindArgs {
    /// Measured requests per run, sent one after the other on one
    /// kept-alive connection.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    pub requests: u32,
    /// Requests on the same connection before the counters are zeroed.
    #[arg(long, default_value_t = 50)]
    pub warmup: u32,
    /// Runs per path (each a new connection through the same proxy
    /// process); the figure is their median.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,
    /// Only these paths (repeat or comma-separate) [default: all].
    #[arg(long, value_enum, value_delimiter = ',')]
    pub paths: Vec<PathKind>,
    /// Measure this weft-proxy binary instead of building the checkout's.
    #[arg(long, env = "WEFT_BENCH_PROXY_BIN")]
    pub proxy_bin: Option<PathBuf>,
    /// Run this weft-control binary instead of building the checkout's.
    #[arg(long, env = "WEFT_BENCH_CONTROL_BIN")]
    pub control_bin: Option<PathBuf>,
    /// Directory for callgrind.md and callgrind.json [default: bench/results].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Compare the medians with this baseline (bench/callgrind-baseline.json)
    /// for the proxy's profile; exit 1 if one exceeds baseline × (1 +
    /// tolerance).
    #[arg(long)]
    pub check: Option<PathBuf>,
    /// With --check: write the medians into the baseline as this profile's
    /// figures instead of failing.
    #[arg(long, requires = "check")]
    pub update_baseline: bool,
    /// Keep each run's callgrind dump here, for `callgrind_annotate`.
    #[arg(long)]
    pub profiles: Option<PathBuf>,
}

impl CallgrindArgs {
    pub fn out(&self) -> PathBuf {
        self.out.clone().unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/results")))
    }
}

/// What is counted: which proxy, which traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum PathKind {
    /// Setup `weft`: the client pod's proxy, HTTP/1.1, plaintext upstream.
    OutboundHttp1,
    /// Setup `weft-mtls`: the client pod's proxy, HTTP/1.1 to the VIP,
    /// mTLS upstream.
    OutboundMtlsHttp1,
    /// Setup `weft-mtls`: the client pod's proxy, opaque TCP echo.
    OutboundMtlsTcp,
    /// Setup `weft-mtls`: the server pod's proxy, HTTP/1.1 arriving over
    /// mTLS.
    InboundMtlsHttp1,
    /// Setup `weft-mtls`: the server pod's proxy, opaque TCP over mTLS.
    InboundMtlsTcp,
}

impl PathKind {
    pub const ALL: [PathKind; 5] = [
        PathKind::OutboundHttp1,
        PathKind::OutboundMtlsHttp1,
        PathKind::InboundMtlsHttp1,
        PathKind::OutboundMtlsTcp,
        PathKind::InboundMtlsTcp,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PathKind::OutboundHttp1 => "outbound-http1",
            PathKind::OutboundMtlsHttp1 => "outbound-mtls-http1",
            PathKind::OutboundMtlsTcp => "outbound-mtls-tcp",
            PathKind::InboundMtlsHttp1 => "inbound-mtls-http1",
            PathKind::InboundMtlsTcp => "inbound-mtls-tcp",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            PathKind::OutboundHttp1 => {
                "setup weft, the client pod's (outbound) proxy: HTTP/1.1 GET, 1 KiB response, plaintext to the \
                 server pod's proxy"
            }
            PathKind::OutboundMtlsHttp1 => {
                "setup weft-mtls, the client pod's (outbound) proxy: HTTP/1.1 GET to the VIP, 1 KiB response, \
                 mTLS to the server pod's proxy"
            }
            PathKind::OutboundMtlsTcp => {
                "setup weft-mtls, the client pod's (outbound) proxy: opaque TCP, 64 bytes echoed, mTLS upstream"
            }
            PathKind::InboundMtlsHttp1 => {
                "setup weft-mtls, the server pod's (inbound) proxy: HTTP/1.1 over mTLS in, plaintext to the app"
            }
            PathKind::InboundMtlsTcp => {
                "setup weft-mtls, the server pod's (inbound) proxy: opaque TCP over mTLS in, 64 bytes echoed by the app"
            }
        }
    }

    fn exchange(self) -> Exchange {
        match self {
            PathKind::OutboundMtlsTcp | PathKind::InboundMtlsTcp => Exchange::Tcp,
            _ => Exchange::Http1,
        }
    }

    fn setup(self) -> SetupKind {
        if self == PathKind::OutboundHttp1 { SetupKind::Weft } else { SetupKind::WeftMtls }
    }

    fn inbound(self) -> bool {
        matches!(self, PathKind::InboundMtlsHttp1 | PathKind::InboundMtlsTcp)
    }
}

/// `callgrind.json`.
#[derive(Debug, Serialize)]
pub struct CallgrindReport {
    pub command: String,
    pub host: Host,
    pub valgrind: String,
    pub proxy_binary: String,
    /// `debug` or `release` (from `target/<profile>/`), else `unknown`.
    pub proxy_profile: String,
    pub requests: u32,
    pub warmup: u32,
    pub runs: u32,
    pub paths: Vec<PathResult>,
}

#[derive(Debug, Serialize)]
pub struct PathResult {
    pub path: PathKind,
    pub description: &'static str,
    /// Instructions (Ir) per request over the runs.
    pub ir_per_request: Summary,
    /// The client's wall time per request under valgrind, ms, per run (for
    /// orientation only).
    pub client_ms_per_request: Vec<f64>,
}

/// Tools this command needs beyond the pods' (checked by `weft_tests`).
const VALGRIND_TOOLS: [&str; 2] = ["valgrind", "callgrind_control"];

/// How long a proxy under valgrind may take to report ready.
const READY_TIMEOUT: Duration = Duration::from_secs(180);
/// How long the path may take to serve its first request after a proxy was
/// replaced (discovery, policy, a fresh pool).
const REACHABLE_TIMEOUT: Duration = Duration::from_secs(120);
/// One `callgrind_control` command, and the client's warm-up or measured
/// phase.
const STEP_TIMEOUT: Duration = Duration::from_secs(300);
/// Flags of the proxy under valgrind beyond the bench's: every timeout that
/// a 50× slower proxy could trip is raised (they are timers either way:
/// the work per request does not depend on their length).
const SLOW_FLAGS: &[&str] = &[
    "--inbound-detect-timeout",
    "60s",
    "--outbound-detect-timeout",
    "60s",
    "--header-read-timeout",
    "120s",
    "--connect-timeout",
    "60s",
    "--discovery-timeout",
    "60s",
    "--policy-timeout",
    "60s",
];

/// Why this machine cannot run the command, with the fix.
pub fn preflight() -> anyhow::Result<()> {
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "weft-bench callgrind must run as root: it creates network namespaces and iptables rules"
    );
    let missing: Vec<&str> = VALGRIND_TOOLS.into_iter().filter(|t| find_tool(t).is_none()).collect();
    anyhow::ensure!(
        missing.is_empty(),
        "missing {}: install valgrind with: apt-get install -y valgrind",
        missing.join(" and ")
    );
    Ok(())
}

fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/usr/local/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Runs the measurement; `Ok(false)` when `--check` found a count over its
/// limit (or no baseline for it).
pub fn run(args: &CallgrindArgs) -> anyhow::Result<bool> {
    preflight()?;
    stop::install()?;
    let valgrind = find_tool("valgrind").context("valgrind")?;
    let control_tool = find_tool("callgrind_control").context("callgrind_control")?;
    let given = |bin: &Option<PathBuf>, flag| crate::setup::given_binary(bin.as_deref(), flag);
    let proxy = given(&args.proxy_bin, "--proxy-bin")?.unwrap_or_else(|| weft_tests::proxy_bin().to_owned());
    let control = given(&args.control_bin, "--control-bin")?.unwrap_or_else(|| weft_tests::control_bin().to_owned());
    let bins = Binaries {
        exe: std::env::current_exe().context("finding this executable")?,
        proxy,
        control,
        baseline_proxy: None,
    };
    let profile = match bins.proxy.parent().and_then(|d| d.file_name()).and_then(|n| n.to_str()) {
        Some(p @ ("release" | "debug")) => p.to_owned(),
        _ => "unknown".to_owned(),
    };
    let mut paths = if args.paths.is_empty() { PathKind::ALL.to_vec() } else { args.paths.clone() };
    paths.sort_by_key(|p| PathKind::ALL.iter().position(|q| q == p));
    paths.dedup();
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let host = Host::read(&workspace);
    let started = Instant::now();
    eprintln!(
        "weft-bench callgrind: {} ({profile}), paths {}; {} runs of {} requests after {} warm-up",
        bins.proxy.display(),
        paths.iter().map(|p| p.name()).collect::<Vec<_>>().join(", "),
        args.runs,
        args.requests,
        args.warmup
    );

    let mesh = Mesh::new();
    let dumps = mesh.dir().join("callgrind");
    std::fs::create_dir_all(&dumps).with_context(|| format!("creating {}", dumps.display()))?;
    // valgrind writes its dumps as the proxy's user.
    std::os::unix::fs::chown(&dumps, Some(PROXY_UID), Some(PROXY_UID))
        .with_context(|| format!("chown {}", dumps.display()))?;
    let ctx = Ctx { bins: &bins, valgrind: &valgrind, control_tool: &control_tool, dumps: &dumps, args };
    let mut runs = Runs(paths.iter().map(|p| (*p, Vec::new(), Vec::new())).collect());
    if paths.contains(&PathKind::OutboundHttp1) {
        ctx.plain(&mesh, &mut runs)?;
    }
    let (inbound, outbound): (Vec<PathKind>, Vec<PathKind>) =
        paths.iter().copied().filter(|p| p.setup() == SetupKind::WeftMtls).partition(|p| p.inbound());
    if !inbound.is_empty() || !outbound.is_empty() {
        ctx.mtls(&mesh, &inbound, &outbound, &mut runs)?;
    }
    drop(mesh);

    let report = CallgrindReport {
        command: std::env::args().skip(1).collect::<Vec<_>>().join(" "),
        host,
        valgrind: first_line(Command::new(&valgrind).arg("--version")),
        proxy_binary: bins.proxy.display().to_string(),
        proxy_profile: profile,
        requests: args.requests,
        warmup: args.warmup,
        runs: args.runs,
        paths: runs.results(),
    };
    let out = args.out();
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let md = markdown(&report);
    std::fs::write(out.join("callgrind.md"), &md).with_context(|| format!("writing {}", out.display()))?;
    crate::report::write_json(&out.join("callgrind.json"), &report)?;
    print!("{md}");
    eprintln!(
        "weft-bench callgrind: done in {:.0} s; wrote {}",
        started.elapsed().as_secs_f64(),
        out.join("callgrind.{md,json}").display()
    );

    match &args.check {
        Some(baseline) => check(baseline, &report, args.update_baseline),
        None => Ok(true),
    }
}

/// `--check`: the medians against the baseline for the proxy's profile,
/// printed; `Ok(false)` when one is over its limit or has no figure. With
/// `update`, records the medians instead.
fn check(baseline_path: &Path, report: &CallgrindReport, update: bool) -> anyhow::Result<bool> {
    let profile = &report.proxy_profile;
    let text = std::fs::read_to_string(baseline_path)
        .with_context(|| format!("reading the baseline {}", baseline_path.display()))?;
    let mut baseline: Baseline =
        serde_json::from_str(&text).with_context(|| format!("parsing the baseline {}", baseline_path.display()))?;
    let medians: Vec<(String, u64)> =
        report.paths.iter().map(|p| (p.path.name().to_owned(), p.ir_per_request.median)).collect();
    let checks = baseline.check(profile, &medians);
    println!("\n## Against the baseline {}\n", baseline_path.display());
    print!("{}", count::check_table(profile, baseline.tolerance, &checks));
    if update {
        baseline.update(profile, &medians);
        let mut text = serde_json::to_string_pretty(&baseline)?;
        text.push('\n');
        std::fs::write(baseline_path, text).with_context(|| format!("writing {}", baseline_path.display()))?;
        println!("\nRecorded these medians as the {profile} baseline in {}.", baseline_path.display());
        return Ok(true);
    }
    let failed = checks.iter().any(count::Check::fails);
    if failed {
        println!(
            "\nA count is over its limit (or has no baseline). If the change is intended (or the toolchain or a \
             dependency moved), record the new figures: `WEFT_CALLGRIND_UPDATE=1 cargo nextest run -p weft-bench \
             --test callgrind` (debug), or `weft-bench callgrind --check {} --update-baseline` with the profile to \
             record; commit the baseline with the change that moved it.",
            baseline_path.display()
        );
    }
    Ok(!failed)
}

/// Per path, the per-request counts and the client's ms per request of
/// each run so far.
struct Runs(Vec<(PathKind, Vec<u64>, Vec<f64>)>);

impl Runs {
    fn record(&mut self, path: PathKind, counted: &Counted) {
        if let Some((_, ir, ms)) = self.0.iter_mut().find(|(p, _, _)| *p == path) {
            ir.push(counted.ir_per_request);
            ms.push(counted.client_ms_per_request);
        }
    }

    fn results(self) -> Vec<PathResult> {
        self.0
            .into_iter()
            .filter_map(|(path, ir, ms)| {
                Some(PathResult {
                    path,
                    description: path.describe(),
                    ir_per_request: Summary::of(&ir)?,
                    client_ms_per_request: ms,
                })
            })
            .collect()
    }
}

/// What one measured run gave.
struct Counted {
    ir_per_request: u64,
    client_ms_per_request: f64,
}

/// A proxy under callgrind.
struct Valgrinded {
    proc: Proc,
    /// `--callgrind-out-file`; dump *n* goes to `<out>.<n>`.
    out: PathBuf,
    dumps: u32,
    label: String,
    /// `--vgdb-prefix`: vgdb's FIFOs in the run's directory, not /tmp.
    vgdb_prefix: PathBuf,
}

impl Valgrinded {
    fn alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.proc.try_status() {
            bail!("the proxy under callgrind ({}) exited ({status}); its log:\n{}", self.label, self.proc.stderr());
        }
        Ok(())
    }
}

struct Ctx<'a> {
    bins: &'a Binaries,
    valgrind: &'a Path,
    control_tool: &'a Path,
    dumps: &'a Path,
    args: &'a CallgrindArgs,
}

impl Ctx<'_> {
    /// `outbound-http1`: setup `weft`, its client-side proxy under callgrind.
    fn plain(&self, mesh: &Mesh, runs: &mut Runs) -> anyhow::Result<()> {
        stop::check()?;
        let setup = Setup::start(SetupKind::Weft, mesh, self.bins, mesh.dir()).context("starting setup weft")?;
        eprintln!("weft-bench callgrind: setup weft started; its outbound proxy goes under callgrind");
        let mut vg = self.replace(&setup.client, setup.proxies[0].pid, &[], "outbound-http1")?;
        let target = setup.target(crate::workload::Workload::Http1);
        reachable(&setup.client, target, &mut vg)?;
        self.measure_runs(&setup.client, &mut vg, &[(PathKind::OutboundHttp1, target)], runs)
    }

    /// The `weft-mtls` paths: the server-side proxy under callgrind for
    /// `inbound`, then (a native one back in its place) the client-side
    /// proxy for `outbound`.
    fn mtls(&self, mesh: &Mesh, inbound: &[PathKind], outbound: &[PathKind], runs: &mut Runs) -> anyhow::Result<()> {
        stop::check()?;
        let mut setup =
            Setup::start(SetupKind::WeftMtls, mesh, self.bins, mesh.dir()).context("starting setup weft-mtls")?;
        eprintln!("weft-bench callgrind: setup weft-mtls started (mTLS proven)");
        let vip = |port| SocketAddr::from((mtls::VIP, port));
        let target = |p: PathKind| vip(if p.exchange() == Exchange::Tcp { APP_ECHO_PORT } else { APP_HTTP_PORT });
        // Kept alive until the outbound side has been measured.
        let mut native_server: Option<Proc> = None;
        if !inbound.is_empty() {
            stop::check()?;
            let control = setup.control.as_mut().context("weft-mtls has a control plane")?;
            let extra = server_args(control, &setup.server, "app-callgrind")?;
            let mut vg = self.replace(&setup.server, setup.proxies[1].pid, &extra, "inbound-mtls")?;
            reachable(&setup.client, vip(APP_HTTP_PORT), &mut vg)?;
            let plan: Vec<_> = inbound.iter().map(|&p| (p, target(p))).collect();
            self.measure_runs(&setup.client, &mut vg, &plan, runs)?;
            drop(vg);
            if !outbound.is_empty() {
                // A native server-side proxy again (the rules are in place).
                let control = setup.control.as_mut().context("weft-mtls has a control plane")?;
                native_server =
                    Some(mtls::start_server(&setup.server, control, &self.bins.proxy, "app-native", false)?);
            }
        }
        if !outbound.is_empty() {
            stop::check()?;
            let control = setup.control.as_mut().context("weft-mtls has a control plane")?;
            let extra = client_args(control)?;
            let mut vg = self.replace(&setup.client, setup.proxies[0].pid, &extra, "outbound-mtls")?;
            reachable(&setup.client, vip(APP_HTTP_PORT), &mut vg)?;
            let plan: Vec<_> = outbound.iter().map(|&p| (p, target(p))).collect();
            self.measure_runs(&setup.client, &mut vg, &plan, runs)?;
        }
        drop(native_server);
        Ok(())
    }

    /// Stops the proxy `pid` in `pod` and starts it again under callgrind
    /// with the bench's flags, [`SLOW_FLAGS`] and `extra`; waits for `/ready`.
    fn replace(&self, pod: &Pod, pid: u32, extra: &[String], label: &str) -> anyhow::Result<Valgrinded> {
        kill_and_wait(pid)?;
        let out = self.dumps.join(format!("{label}.out"));
        let vgdb_prefix = self.dumps.join(format!("vgdb-{label}"));
        let mut args: Vec<String> = vec![
            format!("--reuid={PROXY_UID}"),
            format!("--regid={PROXY_UID}"),
            "--clear-groups".into(),
            "--".into(),
            self.valgrind.display().to_string(),
            "--tool=callgrind".into(),
            format!("--callgrind-out-file={}", out.display()),
            format!("--vgdb-prefix={}", vgdb_prefix.display()),
            self.bins.proxy.display().to_string(),
            "run".into(),
            "--max-connections".into(),
            weft::MAX_CONNECTIONS.into(),
        ];
        args.extend(SLOW_FLAGS.iter().map(|s| (*s).to_owned()));
        args.extend_from_slice(extra);
        let started = Instant::now();
        let mut proc = pod.spawn(&format!("weft-proxy-callgrind-{label}"), "setpriv", &args);
        let url = format!("http://{ADMIN}/ready");
        loop {
            if let Some(status) = proc.try_status() {
                bail!("weft-proxy under callgrind in pod {} exited ({status}):\n{}", pod.name(), proc.stderr());
            }
            let run = pod.exec("curl", &["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5", &url]);
            if run.stdout == "200" {
                break;
            }
            anyhow::ensure!(
                started.elapsed() < READY_TIMEOUT,
                "weft-proxy under callgrind in pod {} is not ready after {READY_TIMEOUT:?} (GET /ready: {run}); \
                 its log:\n{}",
                pod.name(),
                proc.stderr()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        eprintln!(
            "weft-bench callgrind: {label}: proxy under callgrind ready in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Ok(Valgrinded { proc, out, dumps: 0, label: label.to_owned(), vgdb_prefix })
    }

    /// `runs` rounds of every (path, target) in `plan`, interleaved.
    fn measure_runs(
        &self,
        pod: &Pod,
        vg: &mut Valgrinded,
        plan: &[(PathKind, SocketAddr)],
        runs: &mut Runs,
    ) -> anyhow::Result<()> {
        for run in 1..=self.args.runs {
            for &(path, target) in plan {
                stop::check()?;
                let counted =
                    self.measure(pod, vg, path, target).with_context(|| format!("{} run {run}", path.name()))?;
                eprintln!(
                    "weft-bench callgrind: {} run {run}/{}: {} Ir/request ({:.1} ms/request under valgrind)",
                    path.name(),
                    self.args.runs,
                    thousands(counted.ir_per_request),
                    counted.client_ms_per_request
                );
                if let Some(dir) = &self.args.profiles {
                    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
                    let from = dump_path(&vg.out, vg.dumps);
                    let to = dir.join(format!("callgrind.{}.{run}.out", path.name()));
                    std::fs::copy(&from, &to).with_context(|| format!("copying {}", from.display()))?;
                }
                runs.record(path, &counted);
            }
        }
        Ok(())
    }

    /// One run: a connection, the warm-up, zero, the measured requests,
    /// dump, close.
    fn measure(&self, pod: &Pod, vg: &mut Valgrinded, path: PathKind, target: SocketAddr) -> anyhow::Result<Counted> {
        let exchange = match path.exchange() {
            Exchange::Http1 => "http1",
            Exchange::Tcp => "tcp",
        };
        let stderr_path = self.dumps.join(format!("client-{}-{}.stderr", path.name(), vg.dumps + 1));
        let mut cmd = pod.command(
            &self.bins.exe,
            &[
                "callgrind-client",
                "--target",
                &target.to_string(),
                "--exchange",
                exchange,
                "--warmup",
                &self.args.warmup.to_string(),
                "--requests",
                &self.args.requests.to_string(),
            ],
        );
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(
            std::fs::File::create(&stderr_path).with_context(|| format!("creating {}", stderr_path.display()))?,
        );
        let mut child = cmd.spawn().context("starting callgrind-client")?;
        let mut stdin = child.stdin.take().context("the client's stdin")?;
        let stdout = child.stdout.take().context("the client's stdout")?;
        let mut child = KillOnDrop(child);
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let client_log = || std::fs::read_to_string(&stderr_path).unwrap_or_default();
        let mut next_line = |phase: &str, vg: &mut Valgrinded| -> anyhow::Result<String> {
            let deadline = Instant::now() + STEP_TIMEOUT;
            loop {
                match lines.recv_timeout(Duration::from_millis(500)) {
                    Ok(line) => return Ok(line?),
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        let status = child.0.wait()?;
                        bail!("the client exited ({status}) during the {phase}: {}", client_log());
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        vg.alive()?;
                        stop::check()?;
                        anyhow::ensure!(Instant::now() < deadline, "the {phase} took over {STEP_TIMEOUT:?}");
                    }
                }
            }
        };
        let warm = next_line("warm-up", vg)?;
        anyhow::ensure!(warm == "warm", "the client printed {warm:?}, expected \"warm\"");
        self.callgrind_control("-z", vg)?;
        writeln!(stdin, "go")?;
        stdin.flush()?;
        let measured = next_line("measured requests", vg)?;
        let measured: Measured =
            serde_json::from_str(&measured).with_context(|| format!("the client's report {measured:?}"))?;
        self.callgrind_control("-d", vg)?;
        vg.dumps += 1;
        let ir = read_dump(&dump_path(&vg.out, vg.dumps))?;
        writeln!(stdin, "close")?;
        stdin.flush()?;
        drop(stdin);
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.0.try_wait()? {
                break status;
            }
            anyhow::ensure!(Instant::now() < deadline, "the client did not exit after \"close\"");
            std::thread::sleep(Duration::from_millis(20));
        };
        anyhow::ensure!(status.success(), "the client exited with {status}: {}", client_log());
        Ok(Counted {
            ir_per_request: ir / u64::from(measured.requests),
            client_ms_per_request: measured.elapsed_us as f64 / 1000.0 / f64::from(measured.requests),
        })
    }

    /// `callgrind_control <command> <pid>`, which must say OK. It runs as
    /// the proxy's user: vgdb, which it drives, must wake a proxy blocked in
    /// `epoll_wait` with ptrace, and from root that invocation never
    /// returns here (valgrind 3.19; as the same user it does). It gets a
    /// process group of its own so that a hung vgdb, which would keep the
    /// proxy stopped under ptrace, is killed with it.
    fn callgrind_control(&self, command: &str, vg: &mut Valgrinded) -> anyhow::Result<()> {
        vg.alive()?;
        let pid = vg.proc.pid().to_string();
        let mut cmd = Command::new(find_tool("setpriv").context("setpriv")?);
        cmd.args([&format!("--reuid={PROXY_UID}"), &format!("--regid={PROXY_UID}"), "--clear-groups", "--"])
            .arg(self.control_tool)
            .arg(format!("--vgdb-prefix={}", vg.vgdb_prefix.display()))
            .args([command, &pid])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd.spawn().context("starting callgrind_control")?;
        let group = nix::unistd::Pid::from_raw(i32::try_from(child.id())?);
        let deadline = Instant::now() + STEP_TIMEOUT;
        while child.try_wait()?.is_none() {
            if Instant::now() >= deadline {
                let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
                let _ = child.wait();
                bail!("callgrind_control {command} {pid} still ran after {STEP_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let output = child.wait_with_output()?;
        let (out, err) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        anyhow::ensure!(
            output.status.success() && out.contains("OK"),
            "callgrind_control {command} {pid} did not succeed ({}): {out}{err}",
            output.status
        );
        Ok(())
    }
}

fn dump_path(out: &Path, n: u32) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// The Ir total of a dump, waiting briefly for it to be complete.
fn read_dump(path: &Path) -> anyhow::Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let parsed = std::fs::read_to_string(path).map_err(|e| e.to_string()).and_then(|t| count::total_ir(&t));
        match parsed {
            Ok(ir) => return Ok(ir),
            Err(e) if Instant::now() >= deadline => bail!("the dump {}: {e}", path.display()),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// SIGKILL to `pid` (a proxy this run started), then waits until it has
/// exited (its sockets are closed once it is a zombie).
fn kill_and_wait(pid: u32) -> anyhow::Result<()> {
    let raw = nix::unistd::Pid::from_raw(i32::try_from(pid)?);
    let _ = nix::sys::signal::kill(raw, nix::sys::signal::Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // `pid (comm) S …`: the state follows the last ')'.
        let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
        if matches!(state, None | Some("Z" | "X")) {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "process {pid} is still running 10 s after SIGKILL");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `target` answers an HTTP GET from `pod` with 200: the path
/// through the replaced proxy works (discovery, policy, a fresh pool).
fn reachable(pod: &Pod, target: SocketAddr, vg: &mut Valgrinded) -> anyhow::Result<()> {
    let url = format!("http://{target}/");
    let started = Instant::now();
    loop {
        vg.alive()?;
        stop::check()?;
        let run = pod.exec("curl", &["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "30", &url]);
        if run.stdout == "200" {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < REACHABLE_TIMEOUT,
            "{url} does not answer 200 through the proxy under callgrind after {REACHABLE_TIMEOUT:?}: {run}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The client-side proxy's flags in `weft-mtls` (as `mtls::start` gives
/// them), with a fresh bootstrap token.
fn client_args(control: &mut crate::setup::control::ControlPlane) -> anyhow::Result<Vec<String>> {
    identity_args(control, mtls::CLIENT_SA, "bench-client-callgrind")
}

/// The server-side proxy's flags in `weft-mtls` (as `mtls::start_server`
/// gives them), registering the app as `workload`, with a fresh token.
fn server_args(
    control: &mut crate::setup::control::ControlPlane,
    pod: &Pod,
    workload: &str,
) -> anyhow::Result<Vec<String>> {
    let mut args = identity_args(control, mtls::SERVER_SA, workload)?;
    args.extend(
        [
            "--workload-name",
            workload,
            "--workload-labels",
            "app=app",
            "--workload-address",
            &pod.ip().to_string(),
            "--workload-ports",
            &format!("{APP_HTTP_PORT},{APP_ECHO_PORT}"),
        ]
        .map(str::to_owned),
    );
    Ok(args)
}

/// The flags both sides share: the control plane, its trust anchors, and a
/// fresh bootstrap token for `service_account` (the token's pod `name`).
fn identity_args(
    control: &mut crate::setup::control::ControlPlane,
    service_account: &str,
    name: &str,
) -> anyhow::Result<Vec<String>> {
    let anchors = control.anchors().context("the control plane has a CA")?.display().to_string();
    let token = control.token(mtls::NAMESPACE, service_account, name)?;
    Ok([
        "--control-plane",
        &control.url,
        "--trust-anchors",
        &anchors,
        "--identity-token-file",
        &token.display().to_string(),
        "--service-account",
        service_account,
        "--namespace",
        mtls::NAMESPACE,
    ]
    .map(str::to_owned)
    .to_vec())
}

fn first_line(cmd: &mut Command) -> String {
    cmd.output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).lines().next().map(|l| l.trim().to_owned()))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// `callgrind.md`.
pub fn markdown(r: &CallgrindReport) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# weft-proxy: instructions per request (callgrind)\n");
    let _ = writeln!(
        md,
        "{} ({} build), {}; commit {}{}, {}; `weft-bench {}`.\n",
        r.proxy_binary,
        r.proxy_profile,
        r.valgrind,
        r.host.git_commit,
        if r.host.git_dirty { " (dirty)" } else { "" },
        r.host.date,
        r.command
    );
    let _ = writeln!(
        md,
        "One proxy at a time under `valgrind --tool=callgrind`; per run, one kept-alive connection: {} warm-up \
         requests, counters zeroed, {} sequential requests counted, counts dumped before the connection closes. \
         Instructions executed (Ir) by the whole proxy process (every thread, timers included) divided by the \
         requests; median of {} runs, each a new connection through the same proxy process.\n",
        r.warmup, r.requests, r.runs
    );
    let _ = writeln!(md, "| path | Ir/request (median) | runs | spread | what |\n| --- | ---: | --- | ---: | --- |");
    for p in &r.paths {
        let s = &p.ir_per_request;
        let runs: Vec<String> = s.runs.iter().map(|v| thousands(*v)).collect();
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.2} % | {} |",
            p.path.name(),
            thousands(s.median),
            runs.join(", "),
            s.spread_pct,
            p.description
        );
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_names_and_kinds() {
        let names: Vec<&str> = PathKind::ALL.iter().map(|p| p.name()).collect();
        assert_eq!(
            names,
            ["outbound-http1", "outbound-mtls-http1", "inbound-mtls-http1", "outbound-mtls-tcp", "inbound-mtls-tcp"]
        );
        for p in PathKind::ALL {
            // The CLI's spelling and the JSON's are the report's.
            assert_eq!(<PathKind as clap::ValueEnum>::from_str(p.name(), false), Ok(p));
            assert_eq!(serde_json::to_value(p).unwrap(), p.name());
        }
        assert_eq!(PathKind::OutboundHttp1.setup(), SetupKind::Weft);
        assert!(PathKind::InboundMtlsTcp.inbound() && !PathKind::OutboundMtlsTcp.inbound());
        assert_eq!(PathKind::InboundMtlsTcp.exchange(), Exchange::Tcp);
    }

    #[test]
    fn dump_paths() {
        assert_eq!(dump_path(Path::new("/d/outbound-http1.out"), 3), PathBuf::from("/d/outbound-http1.out.3"));
    }
}
