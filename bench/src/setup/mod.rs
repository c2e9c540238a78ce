//! The setups under comparison, each a client pod and a server pod of its
//! own on the mesh's bridge, all running at once so that they can be
//! measured interleaved. Each server pod runs the app; what sits between the
//! generator and it differs:
//!
//! ```text
//!  direct        da: load ─────────────────────────────────────────► db: app :8080 :7000
//!  weft          wa: load ─► weft-proxy :4140 ─────────► weft-proxy :4143 ─► wb: app
//!                    (init rules, uid 2102)    plain    (init rules)
//!  weft-mtls     ma: load ─► VIP ─► weft-proxy ══ mTLS ══► weft-proxy ─► mb: app
//!                                  (identities and discovery from weft-control in pod mc)
//!  weft-policy   pa: load ─► VIP ─► weft-proxy ══ mTLS ══► weft-proxy ─► pb: app
//!                                  (as weft-mtls, plus an HTTPRoute and a TrafficPolicy
//!                                   on the service, from weft-control in pod pc)
//!  weft-trace-0, weft-trace-100
//!                as weft-mtls, tracing on: spans to an OTLP sink in the control plane's
//!                pod, sampling ratio 0 or 1 (pods t*, u*)
//!  haproxy-mtls  ha: load ─► haproxy 127.0.0.1 ─TLS 1.3, client certs─► haproxy ─► hb: app
//!  nginx-mtls    na: load ─► nginx 127.0.0.1 ───TLS 1.3, client certs─► nginx ───► nb: app
//! ```
//!
//! A [`Setup`] owns its processes: dropping it kills them (and dropping the
//! mesh deletes the pods).

pub mod control;
pub mod haproxy;
pub mod mtls;
pub mod nginx;
pub mod peer;
pub mod policy;
pub mod trace;
pub mod weft;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;
use weft_tests::{Mesh, Pod, Proc};

use crate::workload::{APP_ECHO_PORT, APP_HTTP_PORT, Workload};

/// Which path the traffic takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SetupKind {
    Direct,
    Weft,
    WeftMtls,
    /// weft-mtls with `--baseline-proxy-bin`: the before of a change.
    WeftMtlsBase,
    WeftPolicy,
    #[value(name = "weft-trace-0")]
    #[serde(rename = "weft-trace-0")]
    WeftTrace0,
    #[value(name = "weft-trace-100")]
    #[serde(rename = "weft-trace-100")]
    WeftTrace100,
    HaproxyMtls,
    NginxMtls,
}

impl SetupKind {
    /// In report order; `direct` first, as the floor the others add to.
    pub const ALL: [SetupKind; 9] = [
        SetupKind::Direct,
        SetupKind::Weft,
        SetupKind::WeftMtls,
        SetupKind::WeftMtlsBase,
        SetupKind::WeftPolicy,
        SetupKind::WeftTrace0,
        SetupKind::WeftTrace100,
        SetupKind::HaproxyMtls,
        SetupKind::NginxMtls,
    ];

    /// What `--quick` and `--full` measure unless `--setups` says otherwise:
    /// the mesh against the direct path and the two peer mTLS pairs
    /// (HAProxy, nginx), which the targets are checked on and whose time
    /// budgets they are held to. `weft-policy` is asked for by name (and
    /// always in `--smoke`).
    pub const DEFAULT: [SetupKind; 5] =
        [SetupKind::Direct, SetupKind::Weft, SetupKind::WeftMtls, SetupKind::HaproxyMtls, SetupKind::NginxMtls];

    /// The peer proxies the targets judge weft against.
    pub const PEERS: [SetupKind; 2] = [SetupKind::HaproxyMtls, SetupKind::NginxMtls];

    pub fn name(self) -> &'static str {
        match self {
            SetupKind::Direct => "direct",
            SetupKind::Weft => "weft",
            SetupKind::WeftMtls => "weft-mtls",
            SetupKind::WeftMtlsBase => "weft-mtls-base",
            SetupKind::WeftPolicy => "weft-policy",
            SetupKind::WeftTrace0 => "weft-trace-0",
            SetupKind::WeftTrace100 => "weft-trace-100",
            SetupKind::HaproxyMtls => "haproxy-mtls",
            SetupKind::NginxMtls => "nginx-mtls",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            SetupKind::Direct => "generator in pod A → app in pod B, no proxy (the floor)",
            SetupKind::Weft => {
                "generator → weft-proxy outbound (pod A) → weft-proxy inbound (pod B) → app, plaintext between the \
                 proxies, interception by `weft-proxy init` rules, proxies as uid 2102"
            }
            SetupKind::WeftMtls => {
                "the weft pair with mutual TLS between the proxies: identities from weft-control's CA (in a pod of \
                 its own), the generator sends to the service's virtual IP, which the outbound proxy resolves \
                 through discovery"
            }
            SetupKind::WeftMtlsBase => {
                "weft-mtls with the weft-proxy binary of `--baseline-proxy-bin`: the before of a change, measured \
                 in the same run, interleaved with the after"
            }
            SetupKind::WeftPolicy => {
                "weft-mtls (same control plane, mTLS and discovery path) plus a full traffic policy on the service, \
                 in force before measuring: an HTTPRoute (PathPrefix / and a user-agent header match, a \
                 RequestHeaderModifier, backendRefs app weight 100 and app-canary weight 0) and a TrafficPolicy \
                 (retries: 2 attempts on 5xx and connect-failure, per-try timeout, backoff, budget; request and \
                 backendRequest timeouts; circuit breaker after 5 consecutive failures). Every request is \
                 route-matched, filtered, split, buffered for replay, timed and recorded by the breaker"
            }
            SetupKind::WeftTrace0 => {
                "weft-mtls with tracing on (spans to an OTLP/gRPC sink in the control plane's pod) and a sampling \
                 ratio of 0: every request is checked for a trace context, none is traced"
            }
            SetupKind::WeftTrace100 => {
                "weft-mtls with tracing on and a sampling ratio of 1: every request is traced (a server span on \
                 each proxy, a client span per attempt) and its spans exported in batches to the OTLP sink"
            }
            SetupKind::HaproxyMtls => {
                "generator → HAProxy on 127.0.0.1 (pod A) → TLS 1.3 with client certificates, kept-alive upstream \
                 connections → HAProxy (pod B) → app on 127.0.0.1"
            }
            SetupKind::NginxMtls => {
                "generator → nginx on 127.0.0.1 (pod A) → TLS 1.3 with client certificates, kept-alive upstream \
                 connections → nginx (pod B) → app on 127.0.0.1 (HTTP/2 on pod A's frontend only: nginx proxies \
                 HTTP/1.1 to its upstreams; opaque TCP through the stream module)"
            }
        }
    }

    /// Whether the setup runs weft-proxy (and so has its `/metrics`).
    pub fn is_weft(self) -> bool {
        matches!(
            self,
            SetupKind::Weft
                | SetupKind::WeftMtls
                | SetupKind::WeftMtlsBase
                | SetupKind::WeftPolicy
                | SetupKind::WeftTrace0
                | SetupKind::WeftTrace100
        )
    }

    /// The control plane's `--trace-sampling` of a tracing setup.
    fn trace_sampling(self) -> Option<&'static str> {
        match self {
            SetupKind::WeftTrace0 => Some("0"),
            SetupKind::WeftTrace100 => Some("1"),
            _ => None,
        }
    }

    /// Pod names: `<prefix>a` (client) and `<prefix>b` (server).
    fn pod_prefix(self) -> &'static str {
        match self {
            SetupKind::Direct => "d",
            SetupKind::Weft => "w",
            SetupKind::WeftMtls => "m",
            SetupKind::WeftMtlsBase => "o",
            SetupKind::WeftPolicy => "p",
            SetupKind::WeftTrace0 => "t",
            SetupKind::WeftTrace100 => "u",
            SetupKind::HaproxyMtls => "h",
            SetupKind::NginxMtls => "n",
        }
    }
}

/// The binaries a run starts.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// This binary: the app and the generator.
    pub exe: PathBuf,
    pub proxy: PathBuf,
    /// The control plane (`weft-mtls`' CA and discovery, the control-plane
    /// section).
    pub control: PathBuf,
    /// `--baseline-proxy-bin`: the proxy of setup `weft-mtls-base`.
    pub baseline_proxy: Option<PathBuf>,
}

/// A binary given with `flag` (`--proxy-bin`, …): checked to exist and made
/// absolute, since it is run inside the pods; `None` when not given.
pub fn given_binary(bin: Option<&Path>, flag: &str) -> anyhow::Result<Option<PathBuf>> {
    bin.map(|bin| {
        anyhow::ensure!(bin.is_file(), "{flag} {}: no such file", bin.display());
        Ok(std::path::absolute(bin)?)
    })
    .transpose()
}

/// A proxy process whose footprint is read from `/proc`.
#[derive(Debug, Clone, Serialize)]
pub struct ProxyProcess {
    /// e.g. `weft-proxy (pod A, outbound)`.
    pub name: String,
    pub pid: u32,
}

/// A running setup.
pub struct Setup {
    pub kind: SetupKind,
    pub client: Pod,
    pub server: Pod,
    pub proxies: Vec<ProxyProcess>,
    /// What the start-up verified (e.g. that HAProxy refuses a client
    /// without a certificate), for the report.
    pub checks: Vec<String>,
    /// The control plane of `weft-mtls` and `weft-policy` (its pod is not
    /// measured: it is off the data path).
    pub control: Option<control::ControlPlane>,
    /// The app and the proxies; killed when the setup is dropped.
    procs: Vec<Proc>,
    /// The tracing setups' OTLP sink: its index in `procs`.
    sink: Option<usize>,
}

impl Setup {
    /// Creates the pods and starts everything of `kind`; `dir` is a private
    /// directory for configs and keys.
    pub fn start(kind: SetupKind, mesh: &Mesh, bins: &Binaries, dir: &Path) -> anyhow::Result<Setup> {
        Setup::start_holding(kind, mesh, bins, dir, DEFAULT_HELD)
    }

    /// [`Setup::start`] for a run that holds up to `held` idle connections
    /// through the setup at once (the largest idle step): what nginx sizes
    /// its connection table for.
    pub fn start_holding(
        kind: SetupKind,
        mesh: &Mesh,
        bins: &Binaries,
        dir: &Path,
        held: usize,
    ) -> anyhow::Result<Setup> {
        let exe = &bins.exe;
        let client = mesh.pod(&format!("{}a", kind.pod_prefix()));
        let server = mesh.pod(&format!("{}b", kind.pod_prefix()));
        for pod in [&client, &server] {
            tune(pod)?;
        }
        let mut app = server.spawn(
            "app",
            exe,
            &["app", "--http", &format!("0.0.0.0:{APP_HTTP_PORT}"), "--echo", &format!("0.0.0.0:{APP_ECHO_PORT}")],
        );
        wait_listening(&server, &mut app, &[APP_HTTP_PORT, APP_ECHO_PORT])?;
        let mut setup = Setup {
            kind,
            client,
            server,
            proxies: Vec::new(),
            checks: Vec::new(),
            control: None,
            procs: vec![app],
            sink: None,
        };
        match kind {
            SetupKind::Direct => {}
            SetupKind::Weft => {
                for (pod, role) in [(&setup.client, "pod A, outbound"), (&setup.server, "pod B, inbound")] {
                    let proc = weft::start(pod, &bins.proxy, &[])?;
                    setup.proxies.push(ProxyProcess { name: format!("weft-proxy ({role})"), pid: proc.pid() });
                    setup.procs.push(proc);
                }
            }
            SetupKind::WeftMtls
            | SetupKind::WeftMtlsBase
            | SetupKind::WeftPolicy
            | SetupKind::WeftTrace0
            | SetupKind::WeftTrace100 => {
                let baseline;
                let bins = if kind == SetupKind::WeftMtlsBase {
                    let proxy =
                        bins.baseline_proxy.clone().context("setup weft-mtls-base needs --baseline-proxy-bin")?;
                    baseline = Binaries { proxy, ..bins.clone() };
                    &baseline
                } else {
                    bins
                };
                let cp_pod = mesh.pod(&format!("{}c", kind.pod_prefix()));
                let services =
                    if kind == SetupKind::WeftPolicy { policy::services_yaml() } else { mtls::services_yaml() };
                let mut control_extra = Vec::new();
                if let Some(ratio) = kind.trace_sampling() {
                    let (sink, collector) = trace::start_sink(&cp_pod, &bins.exe)?;
                    setup.sink = Some(setup.procs.len());
                    setup.procs.push(sink);
                    control_extra =
                        vec!["--trace-collector".to_owned(), collector, "--trace-sampling".into(), ratio.into()];
                }
                let control_extra: Vec<&str> = control_extra.iter().map(String::as_str).collect();
                let started = mtls::start(
                    &setup.client,
                    &setup.server,
                    &cp_pod,
                    bins,
                    &dir.join(kind.name()),
                    &services,
                    &control_extra,
                )?;
                for (proc, role) in [(started.client, "pod A, outbound"), (started.server, "pod B, inbound")] {
                    setup.proxies.push(ProxyProcess { name: format!("weft-proxy ({role})"), pid: proc.pid() });
                    setup.procs.push(proc);
                }
                setup.checks = started.checks;
                if kind == SetupKind::WeftPolicy {
                    let checks = policy::apply(&started.control.policy_dir, &setup.client)?;
                    setup.checks.extend(checks);
                }
                setup.control = Some(started.control);
            }
            SetupKind::HaproxyMtls => {
                let started = haproxy::start(&setup.client, &setup.server, &dir.join("haproxy"))?;
                setup
                    .proxies
                    .push(ProxyProcess { name: "haproxy (pod A, client side)".into(), pid: started.client.pid() });
                setup
                    .proxies
                    .push(ProxyProcess { name: "haproxy (pod B, server side)".into(), pid: started.server.pid() });
                setup.procs.extend([started.client, started.server]);
                setup.checks = started.checks;
            }
            SetupKind::NginxMtls => {
                let started = nginx::start(&setup.client, &setup.server, &dir.join("nginx"), held)?;
                setup
                    .proxies
                    .push(ProxyProcess { name: "nginx (pod A, client side)".into(), pid: started.client.pid() });
                setup
                    .proxies
                    .push(ProxyProcess { name: "nginx (pod B, server side)".into(), pid: started.server.pid() });
                setup.procs.extend([started.client, started.server]);
                setup.checks = started.checks;
            }
        }
        Ok(setup)
    }

    /// Where the generator in the client pod sends `workload`.
    pub fn target(&self, workload: Workload) -> SocketAddr {
        match self.kind {
            // The app's own address: interception (weft) is transparent.
            SetupKind::Direct | SetupKind::Weft => self.server.addr(workload.app_port()),
            // The service's virtual IP, resolved by the outbound proxy.
            SetupKind::WeftMtls
            | SetupKind::WeftMtlsBase
            | SetupKind::WeftPolicy
            | SetupKind::WeftTrace0
            | SetupKind::WeftTrace100 => SocketAddr::from((mtls::VIP, workload.app_port())),
            // The peer pairs' frontends on loopback in pod A.
            SetupKind::HaproxyMtls | SetupKind::NginxMtls => {
                SocketAddr::from((Ipv4Addr::LOCALHOST, peer::frontend_port(workload)))
            }
        }
    }

    /// What the proxies counted over the run (weft only: from `/metrics`),
    /// and the control plane's RSS (weft-mtls, weft-policy).
    pub fn accounting(&self) -> Vec<String> {
        if !self.kind.is_weft() {
            return Vec::new();
        }
        let mut out: Vec<String> = [(&self.client, 0), (&self.server, 1)]
            .into_iter()
            .filter_map(|(pod, i)| self.proxies.get(i).map(|p| weft::accounting(pod, &p.name)))
            .collect();
        if let Some(cp) = &self.control {
            let rss = crate::footprint::memory(cp.proc.pid())
                .map(|m| format!("{:.1} MiB", m.rss_kib as f64 / 1024.0))
                .unwrap_or_else(|e| format!("unknown ({e:#})"));
            out.push(format!("weft-control (pod C, off the data path) had an RSS of {rss}"));
        }
        if let Some(sink) = self.sink.and_then(|i| self.procs.get(i)) {
            out.push(format!("the OTLP sink received {} spans", trace::received(sink)));
        }
        out
    }

    /// An error naming the first of the setup's processes that has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        let control = self.control.as_mut().map(|c| &mut c.proc);
        for proc in self.procs.iter_mut().chain(control) {
            if let Some(status) = proc.try_status() {
                anyhow::bail!(
                    "{} of setup {} exited ({status}); its log:\n{}",
                    proc.label(),
                    self.kind.name(),
                    proc.stderr()
                );
            }
        }
        Ok(())
    }
}

/// Per-pod kernel settings for connection-heavy runs (these sysctls are per
/// network namespace, so only our pods change): a wide ephemeral port range
/// and TIME_WAIT reuse, or the connection-per-request workload at a few
/// thousand per second runs out of source ports within a minute.
fn tune(pod: &Pod) -> anyhow::Result<()> {
    let script = "echo '10000 65000' > /proc/sys/net/ipv4/ip_local_port_range && \
                  echo 1 > /proc/sys/net/ipv4/tcp_tw_reuse";
    let run = pod.exec("sh", &["-c", script]);
    anyhow::ensure!(run.status.success(), "tuning pod {}: {run}", pod.name());
    Ok(())
}

/// Waits until `proc` listens on every port in `ports` (as `ss` in the pod
/// sees it); fails at once, with its log, if it exits first.
pub fn wait_listening(pod: &Pod, proc: &mut Proc, ports: &[u16]) -> anyhow::Result<()> {
    let deadline = Instant::now() + LISTEN_TIMEOUT;
    for port in ports {
        let filter = format!("sport = :{port}");
        loop {
            if let Some(status) = proc.try_status() {
                anyhow::bail!("{} exited ({status}) before listening on {port}:\n{}", proc.label(), proc.stderr());
            }
            let run = pod.exec("ss", &["-Hltn", &filter]);
            if !run.stdout.trim().is_empty() {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{} does not listen on {port} after {LISTEN_TIMEOUT:?}",
                proc.label()
            );
            std::thread::sleep(POLL);
        }
    }
    Ok(())
}

/// Idle connections a setup is sized for when the run does not say (the
/// chaos and soak runs, which open none).
const DEFAULT_HELD: usize = 1000;

/// How long a process may take to listen.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);
/// How often readiness is polled.
const POLL: Duration = Duration::from_millis(25);

/// Runs a command on the host (not in a pod) and fails with its stderr.
pub fn host_ok(cmd: &mut std::process::Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    anyhow::ensure!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}
