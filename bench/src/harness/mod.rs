//! The orchestrator: checks the machine, starts every setup in its pods,
//! runs the [`Plan`]'s sections with the setups interleaved, and writes the
//! report.
//!
//! ```text
//!  preflight ─► Mesh + Setup::start (direct, weft, weft-mtls, [weft-policy,] haproxy-mtls, nginx-mtls) ─► idle RSS
//!    ─► latency: for rep { for workload { for rate { for setup ─► run } } }
//!    ─► idle connections ─► knee step-up ─► closed-loop max ─► control plane
//!    ─► Results ─► latest.{json,md,svg}; drop: processes killed, pods deleted
//! ```
//!
//! A run that fails to serve is recorded and the others go on; any such
//! failure makes the exit status non-zero. A setup whose process died is
//! not run again.

mod idle;
pub(crate) mod runs;
mod sections;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;
use weft_tests::Mesh;

use crate::footprint;
use crate::plan::{Mode, Plan, Scenario};
use crate::report::machine::{Machine, loadavg};
use crate::report::model::{ProxyIdle, Results, SetupResult};
use crate::report::{self, targets};
use crate::setup::{Binaries, Setup, SetupKind};
use crate::stop;

/// What the command line asked for.
#[derive(Debug, Clone)]
pub struct Options {
    pub mode: Mode,
    pub only: Vec<Scenario>,
    /// `--setups`; empty: the mode's.
    pub setups: Vec<SetupKind>,
    /// The bench's arguments, for the report.
    pub command: String,
    /// Where `latest.*` go.
    pub out: PathBuf,
    /// A weft-proxy binary to measure; `None`: build the checkout's.
    pub proxy_bin: Option<PathBuf>,
    /// `--baseline-proxy-bin`: adds setup weft-mtls-base.
    pub baseline_proxy_bin: Option<PathBuf>,
    /// A weft-control binary to run; `None`: build the checkout's.
    pub control_bin: Option<PathBuf>,
    /// Endpoints for the control-plane section; `None`: the mode's.
    pub endpoints: Option<usize>,
    /// `--idle-steps`; empty: the mode's.
    pub idle_steps: Vec<usize>,
}

/// The system tools the bench runs, with the Debian package of each.
const TOOLS: &[(&str, &str)] = &[
    ("haproxy", "haproxy"),
    ("nginx", "nginx"),
    ("openssl", "openssl"),
    ("setpriv", "util-linux"),
    ("ip", "iproute2"),
    ("ss", "iproute2"),
    ("iptables", "iptables"),
    ("curl", "curl"),
    ("tcpdump", "tcpdump"),
];

/// Root's tools live in sbin, which a non-login PATH may leave out.
const EXTRA_PATH: &[&str] = &["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"];

fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(EXTRA_PATH.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Every reason the bench cannot run here, at once, with the fix.
pub fn preflight() -> anyhow::Result<()> {
    let mut problems = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        problems.push(
            "weft-bench must run as root: it creates network namespaces and iptables rules (run it with sudo -E, \
             or as root as CI does)"
                .to_owned(),
        );
    }
    let missing: Vec<_> = TOOLS.iter().filter(|(name, _)| find_tool(name).is_none()).collect();
    if !missing.is_empty() {
        let names: Vec<_> = missing.iter().map(|(n, _)| *n).collect();
        let mut packages: Vec<_> = missing.iter().map(|(_, p)| *p).collect();
        packages.dedup();
        problems.push(format!(
            "missing tools: {}; install them with: apt-get install -y {}",
            names.join(", "),
            packages.join(" ")
        ));
    }
    // Debian's nginx builds the stream module (opaque TCP) as a module
    // package of its own, which `nginx` only recommends.
    if find_tool("nginx").is_some()
        && let Err(e) = crate::setup::nginx::installed_stream_module()
    {
        problems.push(format!("{e:#}"));
    }
    anyhow::ensure!(problems.is_empty(), "weft-bench cannot run on this machine:\n  - {}", problems.join("\n  - "));
    Ok(())
}

/// A started setup and whether it still runs.
pub(crate) struct Running {
    pub setup: Setup,
    /// Why it is out of the run, once a process of it died.
    pub dead: Option<String>,
}

/// Runs the whole bench; `Ok(false)` when some run failed to serve.
pub fn run(opts: &Options) -> anyhow::Result<bool> {
    if opts.mode == Mode::Chaos {
        return crate::chaos::run(opts);
    }
    preflight()?;
    stop::install()?;
    let nofile = crate::limits::raise_nofile();
    let mut plan = Plan::new(opts.mode, &opts.only);
    if let Some(n) = opts.endpoints {
        plan.set_endpoints(n);
    }
    plan.set_setups(&opts.setups);
    match (&opts.baseline_proxy_bin, plan.setups.contains(&SetupKind::WeftMtlsBase)) {
        (Some(_), false) => plan.add_setup(SetupKind::WeftMtlsBase),
        (None, true) => anyhow::bail!("setup weft-mtls-base measures the proxy of --baseline-proxy-bin: give it"),
        _ => {}
    }
    plan.set_idle_steps(&opts.idle_steps);
    let mut notes: Vec<String> = plan.cap_idle_steps(nofile).into_iter().collect();
    let exe = std::env::current_exe().context("finding this executable")?;
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    // Builds weft-proxy and weft-control with this profile if they are not
    // up to date (unless given); the clock starts after it.
    let given = |bin: &Option<PathBuf>, flag| crate::setup::given_binary(bin.as_deref(), flag);
    let proxy_bin = given(&opts.proxy_bin, "--proxy-bin")?.unwrap_or_else(|| weft_tests::proxy_bin().to_owned());
    let control_bin =
        given(&opts.control_bin, "--control-bin")?.unwrap_or_else(|| weft_tests::control_bin().to_owned());
    let baseline_proxy = given(&opts.baseline_proxy_bin, "--baseline-proxy-bin")?;
    if let Some(b) = &baseline_proxy {
        notes.push(format!("weft-mtls-base runs the baseline weft-proxy {}", b.display()));
    }
    let bins = Binaries { exe: exe.clone(), proxy: proxy_bin, control: control_bin, baseline_proxy };
    let started = Instant::now();
    let mut machine = Machine::read(&workspace, &bins.proxy, &bins.control);
    for note in &notes {
        eprintln!("weft-bench: note: {note}");
    }
    eprintln!(
        "weft-bench: --{} run of about {} s (at most), setups {}; RLIMIT_NOFILE {nofile}; results to {}",
        plan.mode.name(),
        plan.estimate().as_secs(),
        plan.setups.iter().map(|k| k.name()).collect::<Vec<_>>().join(", "),
        opts.out.display()
    );

    let mesh = Mesh::new();
    let dir = mesh.dir().to_owned();
    let mut setups = Vec::new();
    let mut setup_results = Vec::new();
    for &kind in &plan.setups {
        stop::check()?;
        let held = plan.idle_steps.last().copied().unwrap_or(0);
        let setup = Setup::start_holding(kind, &mesh, &bins, &dir, held)
            .with_context(|| format!("starting setup {}", kind.name()))?;
        eprintln!("weft-bench: {} started ({} proxy processes)", kind.name(), setup.proxies.len());
        // Idle: after start-up, before any traffic.
        let mut proxies = Vec::new();
        for p in &setup.proxies {
            let m = footprint::memory(p.pid).with_context(|| format!("reading the memory of {}", p.name))?;
            proxies.push(ProxyIdle {
                name: p.name.clone(),
                idle_rss_kib: m.rss_kib,
                idle_anon_kib: m.anon_kib,
                end_rss_kib: None,
            });
        }
        setup_results.push(SetupResult {
            name: kind.name(),
            kind,
            description: kind.describe(),
            proxies,
            checks: setup.checks.clone(),
            accounting: Vec::new(),
        });
        setups.push(Running { setup, dead: None });
    }

    let mut bench = sections::Bench::new(&plan, exe, dir.clone(), setups);
    bench.latency()?;
    // Before the overload of the step-up and the closed loop, whose
    // connection storms leave the proxies' heaps grown: the per-connection
    // slope is read on a heap that has served ordinary load only.
    bench.idle_connections()?;
    bench.knee()?;
    bench.max_throughput()?;
    // Last, on a quiet data path: the control plane in pods of its own.
    let control_plane = match &plan.control {
        Some(c) => {
            stop::check()?;
            eprintln!("weft-bench: control plane: {:?} streams, {} endpoints", c.streams, c.endpoints);
            Some(crate::cplane::measure(&mesh, &bins, &dir, c)?)
        }
        None => None,
    };
    for running in bench.setups() {
        if let Some(result) = setup_results.iter_mut().find(|r| r.kind == running.setup.kind) {
            result.accounting = running.setup.accounting();
            for (p, mem) in running.setup.proxies.iter().zip(result.proxies.iter_mut()) {
                mem.end_rss_kib = footprint::memory(p.pid).ok().map(|m| m.rss_kib);
            }
        }
    }
    let sections::Outcome { latency, knee, max_throughput, idle_connections, mut failures } = bench.finish();
    failures.extend(control_plane.iter().flat_map(crate::cplane::failures));

    machine.host.loadavg_end = loadavg();
    let mut preliminary = Vec::new();
    match plan.mode {
        Mode::Full => {}
        Mode::Quick => preliminary.push("a `--quick` run: short runs, one rate".to_owned()),
        Mode::Smoke => preliminary.push("a `--smoke` run: it checks that setups serve, not how fast".to_owned()),
        // Runs `crate::chaos` instead (above).
        Mode::Chaos => {}
    }
    if machine.host.loadavg_start[0] > 0.5 {
        preliminary.push(format!(
            "the machine was busy before the run started (1-minute load {:.2} on {} cores)",
            machine.host.loadavg_start[0], machine.host.cores
        ));
    }
    if machine.proxy_profile == "debug" || !machine.bench_optimized {
        preliminary.push("unoptimized builds (use `cargo run --release`)".to_owned());
    }
    let policy_stack = report::model::policy_stack(&latency);
    let mut results = Results {
        command: opts.command.clone(),
        plan: plan.clone(),
        machine,
        preliminary,
        duration_s: started.elapsed().as_secs_f64(),
        setups: setup_results,
        latency,
        knee,
        max_throughput,
        idle_connections,
        control_plane,
        policy_stack,
        targets: Vec::new(),
        notes,
        failures,
    };
    results.targets = targets::check(&results);
    let written = report::write(&results, &opts.out)?;
    println!("{}", report::markdown::render(&results));
    eprintln!(
        "weft-bench: wrote {}, {} and {} in {:.0} s",
        written.markdown.display(),
        written.json.display(),
        written.svg.display(),
        results.duration_s
    );
    for f in &results.failures {
        eprintln!("weft-bench: FAILED: {f}");
    }
    // Setups, then the mesh (pods) are dropped here: processes killed,
    // namespaces deleted.
    Ok(results.failures.is_empty())
}
