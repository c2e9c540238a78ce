//! `weft`, the operator's command: a whole mesh on one machine.
//!
//! ```text
//!   weft up -f mesh.yaml ─► meshfile (parse, validate) ─► plan (names, addresses, env)
//!                        ─► runtime (namespaces, processes; supervise) ─► Ctrl-C ─► teardown
//!   weft demo            ─► the same, on examples/demo/mesh.yaml ─► metrics ─► report table
//!   weft check -f mesh.yaml ─► meshfile + policies, validated ─► the policy each service runs with
//!   weft check          ─► the kubeconfig's cluster ─► Linkerd-style checklist (cluster_check)
//!   weft inject FILE|-  ─► each document: a workload? ─► weft_injector::mutate on its pod template ─► stdout
//!   weft rollout …       ─► run.json of the running mesh ─► one HTTPRoute, step by step ─► proxies' metrics
//!   weft proxy|control|example … ─► the built-in programs (embedded)
//!   weft install|uninstall …   ─► the Helm chart's objects, rendered here ─► stdout (| kubectl apply/delete -f -)
//!   weft stat|routes|edges|top|tap ─► the control plane's dashboard API (or a Prometheus) ─► tables, lines
//! ```
//!
//! Modules by stage: [`meshfile`] reads the LocalMesh file, [`plan`] decides
//! everything that will exist (pure), [`hosts`] renders each pod's
//! /etc/hosts, [`identity`] mints the proxies' bootstrap tokens for the mesh
//! CA, [`netns`] and [`system`] touch the machine, [`supervise`]
//! keeps processes running, [`runs`] names runs by PID and tells live ones
//! from dead, [`stop`] counts Ctrl-C, [`runtime`] ties these into a running
//! mesh ([`summary`] says what is up),
//! [`runrecord`] lets other commands find a running mesh,
//! [`probe`] and [`metrics`] read the proxies, [`demo`] is `weft demo`,
//! [`rollout`] is `weft rollout`, [`install`] is `weft install` and
//! `weft uninstall` (Kubernetes; docs/kubernetes.md), [`inject`] is
//! `weft inject`, [`cluster_check`] is `weft check` for a cluster, and
//! [`views`] are `weft stat`, `routes`, `edges`, `top` and `tap`.
//! See `docs/local-mesh.md`.

pub mod check;
pub mod cluster_check;
pub mod demo;
pub mod embedded;
pub mod hosts;
pub mod identity;
pub mod inject;
pub mod install;
pub mod meshfile;
pub mod metrics;
pub mod netns;
pub mod plan;
pub mod probe;
pub mod rollout;
pub mod runrecord;
pub mod runs;
pub mod runtime;
pub mod stop;
pub mod summary;
pub mod supervise;
pub mod system;
pub mod views;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};

use crate::meshfile::LoadedMesh;
use crate::plan::{Mode, MtlsChoice};
use crate::runtime::{LocalMesh, Settings};
use crate::stop::{Interrupted, Stop};

#[derive(Parser, Debug)]
#[command(
    name = "weft",
    version,
    about = "Weft service mesh: run a mesh on this machine, or install, inject and check it on Kubernetes",
    after_help = "The local mesh runs the proxy, the control plane and the demo workloads from this same \
                  binary (`weft proxy …`, `weft control …`, `weft example …`). See docs/local-mesh.md."
)]
struct Cli {
    /// Log filter (tracing EnvFilter syntax) for weft itself, the control
    /// plane and the proxies.
    #[arg(long, global = true, env = "WEFT_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start the control plane and every workload of a LocalMesh file, each
    /// replica with its own proxy; Ctrl-C stops and removes everything.
    Up(UpArgs),
    /// Run the micro-service demo: a counter web service (two versions), its
    /// Redis store, and a load generator, with a report from the proxies.
    Demo(DemoArgs),
    /// With -f: validate a LocalMesh file and its policies as the control
    /// plane would, and print the policy every service port runs with
    /// (built-in defaults included). Without: check Weft in the cluster of
    /// the kubeconfig (control plane ready, webhook reachable with a valid
    /// certificate, every pod meant to be injected has the proxy, proxies'
    /// versions). Exits 1 if anything is refused or fails.
    Check(CheckArgs),
    /// Roll a new version of a service out on the running local mesh
    /// (canary, ramped, blue-green or A/B) by rewriting one HTTPRoute, and
    /// roll back by itself when the new version's requests fail. Exits 1
    /// after a rollback.
    Rollout(Box<rollout::RolloutArgs>),
    /// Print the manifests of Weft on Kubernetes (the Helm chart's objects:
    /// CRDs, namespace, RBAC, the issuer's Secret, the control plane, the
    /// injector and its webhook, in apply order) for a namespace and values:
    /// `weft install | kubectl apply -f -`. Generates a new trust anchor
    /// and issuer unless --identity-external-issuer.
    Install(install::ValuesArgs),
    /// Print the objects `weft install` with the same flags created, to
    /// delete them: `weft uninstall | kubectl delete -f -` (the webhook
    /// configuration first, the CRDs and with them every policy last).
    Uninstall(install::UninstallArgs),
    /// Add the proxy to the workloads of Kubernetes manifests (Pods,
    /// Deployments, StatefulSets, DaemonSets, ReplicaSets,
    /// ReplicationControllers, Jobs, CronJobs, and those in Lists) and print
    /// them, with every other object as it came.
    #[command(long_about = INJECT_ABOUT)]
    Inject(Box<inject::InjectArgs>),
    /// Golden metrics per workload or service (MESHED SUCCESS RPS
    /// LATENCY_P50/P95/P99 TCP_CONN, a row per version), from the control
    /// plane's dashboard API or a Prometheus.
    Stat(views::StatArgs),
    /// Per HTTPRoute rule and backend of a service: weight, success, rate
    /// and latency, from its callers' proxies.
    Routes(views::RoutesArgs),
    /// Who calls whom: source and destination workloads, their identities
    /// and whether the connection is mTLS.
    Edges(views::EdgesArgs),
    /// The busiest paths, live, from the proxies' tap (refreshing; --once
    /// DURATION prints one table).
    Top(views::TopArgs),
    /// The live stream of requests and responses from the proxies' tap.
    Tap(views::TapArgs),
}

const INJECT_ABOUT: &str = "Add the proxy to the workloads of Kubernetes manifests and print them (multi-document \
YAML, in the input's order), with the injector's own decision and patch: Pods, Deployments, StatefulSets, DaemonSets, \
ReplicaSets, ReplicationControllers, Jobs and CronJobs, also inside Lists, get the proxy in their pod template; every \
other object, and every workload left alone, is printed exactly as it came. Injected output can be injected again \
(nothing changes) and the webhook leaves its Pods alone.

weft inject reads no cluster, so it cannot see Namespaces: every workload counts as opted in, as if its Namespace \
said weft.dev/inject: enabled, even when the Namespace you apply it to says disabled. It leaves alone a workload \
whose own metadata or pod template says weft.dev/inject: disabled, hostNetwork Pods, Pods that already run a \
proxy, and objects whose metadata.namespace is kube-system, kube-public, kube-node-lease or Weft's own \
(--namespace); an object without metadata.namespace is injected wherever you apply it.

Malformed YAML, or a document that is not a Kubernetes object, stops it with an error naming the document (counted \
from 1) and nothing on stdout. The flags are the injector's (with the same WEFT_INJECTOR_* environment twins); \
see docs/injection.md.";

#[derive(clap::Args, Debug)]
struct CheckArgs {
    /// The LocalMesh file to check; without it, the cluster is checked.
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    #[command(flatten)]
    cluster: cluster_check::ClusterArgs,
}

#[derive(clap::Args, Debug)]
struct UpArgs {
    /// The LocalMesh file.
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
    #[command(flatten)]
    mesh: MeshArgs,
}

#[derive(clap::Args, Debug)]
struct DemoArgs {
    /// Stop by itself after measuring this long (e.g. 30s), print the
    /// report and exit 0 only if the demo traffic succeeded. Default: run
    /// until Ctrl-C.
    #[arg(long)]
    duration: Option<humantime::Duration>,
    /// Requests per second from the load generator.
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    #[command(flatten)]
    mesh: MeshArgs,
}

#[derive(clap::Args, Debug)]
struct MeshArgs {
    /// `netns`: a network namespace per pod with transparent interception
    /// (needs root); `loopback`: pods on 127.x.y.z addresses, apps use their
    /// proxy as HTTP_PROXY; `auto`: netns as root, else loopback.
    #[arg(long, value_enum, default_value = "auto")]
    mode: ModeChoice,
    /// Mutual TLS between the pods' proxies, each with an identity from the
    /// control plane's CA. `auto`: as the mesh file's `spec.mtls` says (on
    /// by default) with network namespaces; loopback mode never has it.
    #[arg(long, value_enum, default_value = "auto")]
    mtls: MtlsFlag,
    /// Keep the processes' logs after the mesh stops (they are always kept
    /// when something failed).
    #[arg(long)]
    keep_logs: bool,
    /// Parent of the run's state directory (logs, generated files).
    /// Default: /run/weft as root, else $XDG_RUNTIME_DIR/weft or /tmp/weft-<uid>.
    #[arg(long)]
    state_dir: Option<PathBuf>,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum MtlsFlag {
    Auto,
    On,
    Off,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum ModeChoice {
    Auto,
    Netns,
    Loopback,
}

/// Runs `weft` with `args` (including the program name).
pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let args: Vec<OsString> = args.into_iter().collect();
    if let Some(name) = args.get(1).and_then(|a| a.to_str()).filter(|a| embedded::PROGRAMS.contains(a)) {
        return exit(embedded::run(name, args[2..].to_vec()).map(|()| true));
    }
    let cli = Cli::parse_from(args);
    let filter = match tracing_subscriber::EnvFilter::try_new(&cli.log) {
        Ok(filter) => filter,
        Err(e) => return exit(Err(anyhow::anyhow!("invalid --log filter {:?}: {e}", cli.log))),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return exit(Err(anyhow::Error::new(e).context("building the tokio runtime"))),
    };
    exit(runtime.block_on(async {
        match cli.command {
            Command::Up(args) => up(args, &cli.log).await,
            Command::Check(args) => match &args.file {
                Some(file) => check::run(file),
                None => cluster_check::run(&args.cluster).await,
            },
            Command::Rollout(args) => rollout::run(*args).await,
            Command::Install(args) => install::install(&args),
            Command::Uninstall(args) => install::uninstall(&args),
            Command::Inject(args) => inject::run(&args),
            Command::Stat(args) => views::stat(args).await,
            Command::Routes(args) => views::routes(args).await,
            Command::Edges(args) => views::edges(args).await,
            Command::Top(args) => views::top(args).await,
            Command::Tap(args) => views::tap(args).await,
            Command::Demo(args) => {
                let settings = settings(&args.mesh, &cli.log)?;
                demo::run(settings, args.rate, args.duration.map(Into::into), args.mesh.keep_logs).await
            }
        }
    }))
}

fn exit(result: anyhow::Result<bool>) -> ExitCode {
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("weft: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `--mode auto`: network namespaces when this process can make them, or
/// the one line that says why the mesh runs in loopback mode instead.
fn auto_mode(root: bool, tools: Result<system::Tools, system::MissingTools>) -> Result<system::Tools, String> {
    const LOOPBACK: &str = "running in loopback mode instead (pods on 127.x.y.z, apps use their proxy as \
                            HTTP_PROXY, no mTLS; docs/local-mesh.md)";
    match (root, tools) {
        (false, _) => Err(format!(
            "weft: not root, so no network namespaces or interception: {LOOPBACK}; run as root for the real thing"
        )),
        (true, Err(missing)) => Err(format!("weft: {missing}: {LOOPBACK}")),
        (true, Ok(tools)) => Ok(tools),
    }
}

/// Decides the mode (and checks that it can run here).
fn settings(args: &MeshArgs, log: &str) -> anyhow::Result<Settings> {
    let root = system::is_root();
    let netns = match args.mode {
        ModeChoice::Netns if !root => anyhow::bail!(
            "--mode netns needs root (it creates network namespaces and iptables rules); run as root, or use --mode loopback"
        ),
        ModeChoice::Netns => true,
        ModeChoice::Loopback => false,
        ModeChoice::Auto => match auto_mode(root, system::Tools::find()) {
            Ok(_) => true,
            Err(why) => {
                eprintln!("{why}");
                false
            }
        },
    };
    let (mode, tools) = if netns {
        (Mode::Netns, Some(system::Tools::find()?))
    } else {
        (Mode::Loopback { block: runs::choose_loopback_block(std::process::id())? }, None)
    };
    Ok(Settings {
        mode,
        tools,
        state_root: args.state_dir.clone().unwrap_or_else(runs::default_state_root),
        log: log.to_owned(),
        mtls: match args.mtls {
            MtlsFlag::Auto => MtlsChoice::Auto,
            MtlsFlag::On => MtlsChoice::On,
            MtlsFlag::Off => MtlsChoice::Off,
        },
    })
}

/// `weft up`: runs until Ctrl-C or SIGTERM.
async fn up(args: UpArgs, log: &str) -> anyhow::Result<bool> {
    let mesh = LoadedMesh::load(&args.file)?;
    for warning in &mesh.warnings {
        eprintln!("weft: warning: {warning}");
    }
    let settings = settings(&args.mesh, log)?;
    let stop = Stop::install().context("cannot handle signals")?;
    let mut local = LocalMesh::new(&mesh, settings)?;
    if let Err(e) = local.start(&stop).await {
        let interrupted = e.is::<Interrupted>();
        demo::report_leftovers(local.shutdown(!interrupted || args.mesh.keep_logs, &stop).await);
        if interrupted {
            eprintln!("weft: stopped before the mesh was up; everything it had created is removed");
            return Ok(true);
        }
        return Err(e.context(format!("the mesh did not start; logs kept in {}", local.logs_dir.display())));
    }
    println!("{}", local.summary());
    let (dashboard, forwarder) = demo::dashboard(&local).await;
    println!("Dashboard: {dashboard} (weft stat, routes, edges, top and tap read it too)");
    println!("Press Ctrl-C to stop the mesh and remove everything it created.");
    stop.wait().await;
    if let Some(f) = forwarder {
        f.abort();
    }
    eprintln!("weft: stopping…");
    let started = std::time::Instant::now();
    let problems = local.shutdown(args.mesh.keep_logs, &stop).await;
    let clean = problems.is_empty();
    demo::report_leftovers(problems);
    eprintln!(
        "weft: stopped in {:.1?}{}",
        started.elapsed().max(Duration::from_millis(1)),
        if args.mesh.keep_logs { format!("; logs kept in {}", local.logs_dir.display()) } else { String::new() }
    );
    Ok(clean)
}

#[cfg(test)]
mod tests {
    use super::system::{MissingTools, Tools};

    #[test]
    fn auto_mode_falls_back_to_loopback_with_one_line_saying_why() {
        let tools = || Ok(Tools { ip: "/sbin/ip".into(), setpriv: "/bin/setpriv".into() });
        let missing = || Err(MissingTools::of(&[&("iptables", "iptables")]));
        let cases = [
            (true, tools(), None),
            (
                false,
                tools(),
                Some("weft: not root, so no network namespaces or interception: running in loopback mode"),
            ),
            (false, missing(), Some("weft: not root")),
            (
                true,
                missing(),
                Some(
                    "weft: the network-namespace mode needs iptables, which is not installed: apt-get install -y \
                     iptables: running in loopback mode instead (pods on 127.x.y.z",
                ),
            ),
        ];
        for (root, found, want) in cases {
            match (super::auto_mode(root, found), want) {
                (Ok(_), None) => {}
                (Err(line), Some(want)) => {
                    assert!(line.starts_with(want), "root={root}: {line}");
                    assert!(!line.contains('\n'), "one line: {line}");
                }
                (got, want) => panic!("root={root}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn clap_definition_is_valid() {
        use clap::CommandFactory as _;
        super::Cli::command().debug_assert();
    }
}
