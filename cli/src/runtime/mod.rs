//! A running local mesh: creates what the [`Plan`] says, keeps it running,
//! and removes all of it again.
//!
//! ```text
//!   start:    sweep stale runs → state dir (+ empty tokens file) → hub netns + bridge
//!             → control plane, with the mesh CA (/ready) → copy its ca.crt for the proxies
//!             → per pod: netns + veth + hosts file → `weft proxy init`
//!             → fresh bootstrap token → proxy (/ready: it holds its certificate)
//!             → serving apps (until registered) → client apps (no ports) → run.json (the run record)
//!   shutdown: client apps → serving apps → proxies → control plane (SIGTERM, SIGKILL after a grace period)
//!             → namespaces (and anything still inside) → /etc/netns/<pod> → state dir
//! ```
//!
//! Everything created is recorded before it is created, so removal covers a
//! half-finished start too. [`LocalMesh::shutdown`] is the orderly path;
//! dropping a mesh that was not shut down (an error, a panic) kills its
//! processes at once and removes the rest all the same.
//!
//! This module is the lifecycle (the order above, readiness waits,
//! teardown); the parts it orders live beside it: `sweep` (runs that died),
//! `pods` (network-namespace plumbing), `specs` (each process's command
//! line, a pure mapping from the plan). Run identity is in [`crate::runs`],
//! stop signals in [`crate::stop`].

mod pods;
mod specs;

pub use specs::CONTROL_DASHBOARD_PORT;
mod sweep;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail};

use self::pods::{Created, PodSetup};
use self::specs::Specs;
use crate::identity::{self, TOKEN_TTL, TOKENS_RELOAD, Tokens};
use crate::meshfile::LoadedMesh;
use crate::netns::Ip;
use crate::plan::{CONTROL_ADMIN_PORT, Mode, MtlsChoice, PROXY_ADMIN_PORT, PROXY_UID, Plan, PodPlan};
use crate::probe;
use crate::runrecord::{PodRecord, RunMode, RunRecord, ServiceRecord};
use crate::runs::remove_state_keeping_logs;
use crate::stop::{Interrupted, Stop};
use crate::supervise::{Phase, Prepare, Spec, Supervisor};
use crate::system::{self, Tools};

/// How long a stopping process gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How long the control plane and each proxy get to answer `/ready`.
const READY_DEADLINE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);

/// What a run needs to know besides the mesh file.
#[derive(Debug, Clone)]
pub struct Settings {
    pub mode: Mode,
    /// Present in network-namespace mode.
    pub tools: Option<Tools>,
    /// The parent of this run's state directory.
    pub state_root: PathBuf,
    /// Log filter for the control plane and the proxies.
    pub log: String,
    /// `--mtls`.
    pub mtls: MtlsChoice,
}

/// One run of a local mesh.
pub struct LocalMesh {
    pub plan: Plan,
    pub state_dir: PathBuf,
    pub logs_dir: PathBuf,
    run_id: u32,
    state_root: PathBuf,
    /// The weft binary the mesh's processes run (a copy in the state
    /// directory in network-namespace mode, which the proxy's UID can read).
    exe: PathBuf,
    base_dir: PathBuf,
    mesh_file: PathBuf,
    policies: Vec<PathBuf>,
    /// Set when the mesh file names no policy directory: an empty one in
    /// the state directory, so that generated policy (`weft rollout`) has
    /// somewhere to go.
    own_policy_dir: Option<PathBuf>,
    tools: Option<Tools>,
    log: String,
    /// With mTLS: the bootstrap tokens of this run.
    tokens: Option<Arc<Tokens>>,
    supervisor: Supervisor,
    created: Mutex<Created>,
    finished: bool,
}

impl LocalMesh {
    /// Plans the run; creates nothing yet. Fails if a workload's program
    /// cannot be found.
    pub fn new(mesh: &LoadedMesh, settings: Settings) -> anyhow::Result<LocalMesh> {
        let run_id = std::process::id();
        let state_dir = settings.state_root.join(run_id.to_string());
        let exe = match settings.mode {
            Mode::Netns => state_dir.join("weft"),
            Mode::Loopback { .. } => std::env::current_exe().context("cannot find the weft binary's own path")?,
        };
        let inherited: Vec<(String, String)> =
            std::env::vars().map(|(k, v)| if k == "PATH" { (k, system::search_path()) } else { (k, v) }).collect();
        let mut plan = Plan::new(&mesh.file, settings.mode, run_id, &exe, &inherited);
        let (mtls, warnings) =
            crate::plan::decide_mtls(settings.mtls, settings.mode, &mesh.file.spec.mtls).map_err(anyhow::Error::msg)?;
        for warning in warnings {
            tracing::warn!("{warning}");
        }
        plan.mtls = mtls;
        let tokens = plan.mtls.is_some().then(|| {
            Arc::new(Tokens::new(state_dir.join("tokens.yaml"), state_dir.join("identity"), PROXY_UID, TOKEN_TTL))
        });
        // Resolve each program now: a typo is reported before anything starts.
        for (i, w) in mesh.file.spec.workloads.iter().enumerate() {
            for pod in plan.pods.iter_mut().filter(|p| p.workload == w.name) {
                let program = &pod.command[0];
                if Path::new(program) == exe {
                    continue; // `weft`: copied into the state directory at start
                }
                let found = if program.contains('/') {
                    let path = mesh.dir.join(program);
                    path.is_file().then_some(path)
                } else {
                    system::find(program)
                };
                let Some(found) = found else {
                    bail!(
                        "spec.workloads[{i}].command[0]: {program:?} is not an executable file{}",
                        if program.contains('/') { String::new() } else { " in PATH".into() }
                    );
                };
                pod.command[0] = found.to_string_lossy().into_owned();
            }
        }
        let mut policies = mesh.file.spec.policies.clone();
        let own_policy_dir = (!policies.iter().any(|p| p.is_dir())).then(|| state_dir.join("policies"));
        policies.extend(own_policy_dir.clone());
        Ok(LocalMesh {
            plan,
            logs_dir: state_dir.join("logs"),
            state_dir,
            run_id,
            state_root: settings.state_root,
            exe,
            base_dir: mesh.dir.clone(),
            mesh_file: std::path::absolute(&mesh.path).unwrap_or_else(|_| mesh.path.clone()),
            policies,
            own_policy_dir,
            tools: settings.tools,
            log: settings.log,
            tokens,
            supervisor: Supervisor::default(),
            created: Mutex::default(),
            finished: false,
        })
    }

    fn ip(&self) -> Option<Ip> {
        self.tools.as_ref().map(|t| Ip::new(t.ip.clone()))
    }

    fn created(&self) -> std::sync::MutexGuard<'_, Created> {
        pods::lock(&self.created)
    }

    pub fn hub(&self) -> String {
        format!("{}-hub", self.plan.prefix)
    }

    pub fn control_admin(&self) -> SocketAddr {
        SocketAddr::from((self.plan.control_ip, CONTROL_ADMIN_PORT))
    }

    /// Where `pod`'s proxy admin listens, and the namespace to reach it from.
    pub fn proxy_admin<'a>(&self, pod: &'a PodPlan) -> (Option<&'a str>, SocketAddr) {
        match self.plan.mode {
            Mode::Netns => (Some(pod.netns.as_str()), SocketAddr::from((Ipv4Addr::LOCALHOST, PROXY_ADMIN_PORT))),
            Mode::Loopback { .. } => (None, SocketAddr::from((pod.ip, PROXY_ADMIN_PORT))),
        }
    }

    /// What `weft rollout` and other commands need to find this run
    /// (`run.json` in the state directory).
    pub fn record(&self) -> RunRecord {
        let plan = &self.plan;
        RunRecord {
            pid: self.run_id,
            mode: match plan.mode {
                Mode::Netns => RunMode::Netns,
                Mode::Loopback { .. } => RunMode::Loopback,
            },
            mesh_file: self.mesh_file.clone(),
            // `absolute` also drops `.` components (`/srv/./policy`).
            policies: self.policies.iter().map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone())).collect(),
            services: plan
                .services
                .iter()
                .map(|s| ServiceRecord {
                    name: s.name.clone(),
                    namespace: s.namespace.clone(),
                    ports: s.ports.iter().map(|p| p.port).collect(),
                })
                .collect(),
            pods: plan
                .pods
                .iter()
                .map(|pod| {
                    let (netns, admin) = self.proxy_admin(pod);
                    PodRecord {
                        name: pod.name.clone(),
                        namespace: pod.namespace.clone(),
                        labels: pod.labels.clone(),
                        netns: netns.map(str::to_owned),
                        admin,
                    }
                })
                .collect(),
        }
    }

    pub fn log_path(&self, label: &str) -> PathBuf {
        specs::log_path(&self.logs_dir, label)
    }

    /// The mesh CA's directory (with mTLS): `ca.crt`, `ca.key`, used tokens.
    pub fn ca_dir(&self) -> PathBuf {
        identity::ca_dir(&self.state_dir)
    }

    /// The copy of the CA's certificate that the proxies pin.
    pub fn anchors_path(&self) -> PathBuf {
        specs::anchors_path(&self.state_dir)
    }

    /// Creates and starts everything. On an error or a stop request the
    /// caller shuts the mesh down (or drops it), which removes what exists.
    pub async fn start(&self, stop: &Stop) -> anyhow::Result<()> {
        if let Some(ip) = self.ip() {
            for removed in sweep::sweep_stale(&ip, &self.state_root, self.run_id) {
                tracing::info!("removed {removed}, left by a weft run that is gone");
            }
        }
        self.create_state_dir()?;
        stop.check()?;
        let hub = self.hub();
        if let Some(ip) = self.ip() {
            self.created().netns.push(hub.clone());
            ip.create_hub(&hub).context("creating the hub network namespace")?;
        }
        self.supervisor.spawn(Phase::Control, self.control_spec());
        let mut control = Wait::ready("the control plane", self.plan.mode.netns_of_hub(&hub), self.control_admin());
        // Nothing works without it: if it exits, say why at once.
        control.fail_on_exit = Some("control");
        self.wait(control, self.log_path("control"), stop).await?;
        if self.tokens.is_some() {
            identity::copy_anchors(&self.ca_dir(), &self.anchors_path(), Duration::from_secs(5)).await?;
        }

        for pod in &self.plan.pods {
            stop.check()?;
            if let Some(ip) = self.ip() {
                let setup = PodSetup { ip: &ip, hub: &hub, plan: &self.plan, exe: &self.exe, created: &self.created };
                pods::create_pod(&setup, pod, &self.log_path(&format!("{}.init", pod.name))).await?;
            }
            self.supervisor.spawn(Phase::Proxy, self.proxy_spec(pod));
        }
        // An app starts even if its proxy is not ready in time: the
        // supervisor keeps restarting the proxy, and the warning says why.
        self.wait_all(
            self.plan.pods.iter().map(|pod| {
                let (netns, addr) = self.proxy_admin(pod);
                (Wait::ready(&format!("{}'s proxy", pod.name), netns, addr), format!("{}.proxy", pod.name))
            }),
            stop,
        )
        .await?;

        // Serving apps first; apps that only call others (no ports: a
        // client, the load generator) once every server is registered, so
        // that their first requests find endpoints, as Kubernetes' readiness
        // gates would arrange.
        stop.check()?;
        let (servers, clients): (Vec<&PodPlan>, Vec<&PodPlan>) =
            self.plan.pods.iter().partition(|p| !p.ports.is_empty());
        for pod in &servers {
            self.supervisor.spawn(Phase::Server, self.app_spec(pod));
        }
        self.wait_all(
            servers.iter().map(|pod| {
                let (netns, addr) = self.proxy_admin(pod);
                let wait = Wait {
                    failure: format!(
                        "{}'s proxy did not register the workload (is the app listening on {:?}?)",
                        pod.name, pod.ports
                    ),
                    netns,
                    addr,
                    path: "/config",
                    check: registered,
                    fail_on_exit: None,
                };
                (wait, format!("{}.app", pod.name))
            }),
            stop,
        )
        .await?;
        stop.check()?;
        for pod in &clients {
            self.supervisor.spawn(Phase::Client, self.app_spec(pod));
        }
        // Last: a run is discoverable (`weft rollout`) once it is up.
        self.record().write(&self.state_dir).context("writing the run record")?;
        Ok(())
    }

    fn create_state_dir(&self) -> anyhow::Result<()> {
        use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
        {
            let mut created = self.created();
            created.state_root = !self.state_root.exists();
            created.state_dir = true;
        }
        // 0755 all the way down: the proxies run as an unprivileged UID and
        // execute the binary copied here.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&self.logs_dir)
            .with_context(|| format!("creating the state directory {}", self.state_dir.display()))?;
        std::fs::set_permissions(&self.state_dir, std::fs::Permissions::from_mode(0o755))?;
        if self.plan.mode == Mode::Netns {
            // /proc/self/exe is the running binary even if cargo has
            // rebuilt the file at current_exe() since.
            std::fs::copy("/proc/self/exe", &self.exe)
                .with_context(|| format!("copying the weft binary to {}", self.exe.display()))?;
            std::fs::set_permissions(&self.exe, std::fs::Permissions::from_mode(0o755))?;
        }
        std::fs::write(self.state_dir.join("services.yaml"), self.plan.services_yaml())
            .context("writing the control plane's services file")?;
        if let Some(dir) = &self.own_policy_dir {
            std::fs::DirBuilder::new()
                .mode(0o755)
                .create(dir)
                .with_context(|| format!("creating the policy directory {}", dir.display()))?;
        }
        if let Some(tokens) = &self.tokens {
            tokens.create()?;
        }
        Ok(())
    }

    /// The command lines of this run's processes.
    fn specs(&self) -> Specs<'_> {
        Specs {
            plan: &self.plan,
            hub: self.hub(),
            state_dir: &self.state_dir,
            logs_dir: &self.logs_dir,
            exe: &self.exe,
            base_dir: &self.base_dir,
            policies: &self.policies,
            log: &self.log,
            tools: self.tools.as_ref(),
            tokens: self.tokens.as_deref(),
        }
    }

    fn control_spec(&self) -> Spec {
        self.specs().control()
    }

    fn proxy_spec(&self, pod: &PodPlan) -> Spec {
        let mut spec = self.specs().proxy(pod);
        if let Some(tokens) = &self.tokens {
            // Tokens are single use: a fresh one before every start.
            let (tokens, pod) = (Arc::clone(tokens), pod.clone());
            spec.prepare = Some(Prepare::new(move || {
                let (tokens, pod) = (Arc::clone(&tokens), pod.clone());
                async move {
                    tokio::task::spawn_blocking(move || tokens.mint(&pod, SystemTime::now()))
                        .await
                        .context("minting a bootstrap token")??;
                    tokio::time::sleep(TOKENS_RELOAD).await;
                    Ok(())
                }
            }));
        }
        spec
    }

    fn app_spec(&self, pod: &PodPlan) -> Spec {
        self.specs().app(pod)
    }

    /// Polls until `wait` holds; after [`READY_DEADLINE`], fails with its
    /// message and the end of `log`.
    async fn wait(&self, wait: Wait<'_>, log: PathBuf, stop: &Stop) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            let last = tokio::select! {
                result = probe::get(wait.netns, wait.addr, wait.path, Duration::from_secs(2)) => match result {
                    Ok((status, body)) if status.is_success() => match (wait.check)(&body) {
                        Ok(()) => return Ok(()),
                        Err(e) => e,
                    },
                    Ok((status, body)) => format!("{} answered {status}: {}", wait.path, body.trim()),
                    Err(e) => e.to_string(),
                },
                () = stop.wait() => return Err(Interrupted.into()),
            };
            if wait.fail_on_exit.is_some_and(|label| self.supervisor.restarts(label) > 0) {
                bail!("{}: it exited; the end of {}:\n{}", wait.failure, log.display(), tail(&log, 20));
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} within {READY_DEADLINE:?} ({last}); the end of {}:\n{}",
                    wait.failure,
                    log.display(),
                    tail(&log, 20)
                );
            }
            tokio::select! {
                () = tokio::time::sleep(POLL) => {},
                () = stop.wait() => return Err(Interrupted.into()),
            }
        }
    }

    /// Waits for all of `waits` (each with the label of the log to show);
    /// failures are warnings, a stop request is an error.
    async fn wait_all<'a>(&self, waits: impl Iterator<Item = (Wait<'a>, String)>, stop: &Stop) -> anyhow::Result<()> {
        let waits = waits.map(|(wait, label)| self.wait(wait, self.log_path(&label), stop));
        for result in futures_util::future::join_all(waits).await {
            match result {
                Err(e) if e.is::<Interrupted>() => return Err(e),
                Err(e) => tracing::warn!("{e:#}"),
                Ok(()) => {}
            }
        }
        Ok(())
    }

    /// PIDs of the processes running now (tests and diagnostics).
    pub fn pids(&self) -> Vec<i32> {
        self.supervisor.pids()
    }

    /// Stops every process in order and removes everything this run
    /// created. With `keep_logs`, the logs stay in [`LocalMesh::logs_dir`].
    /// A stop signal arriving meanwhile (an impatient second Ctrl-C) kills
    /// what is left at once. Returns what could not be removed (normally
    /// nothing).
    pub async fn shutdown(&mut self, keep_logs: bool, stop: &Stop) -> Vec<String> {
        let signals = stop.signals();
        tokio::select! {
            () = self.supervisor.shutdown(STOP_GRACE) => {},
            () = stop.wait_beyond(signals) => {
                eprintln!("weft: stopping at once");
                self.supervisor.kill_all_now();
            }
        }
        self.finished = true;
        self.remove_everything(keep_logs)
    }

    fn remove_everything(&self, keep_logs: bool) -> Vec<String> {
        let mut problems = Vec::new();
        let created = std::mem::take(&mut *self.created());
        pods::remove_pods(self.ip().as_ref(), &created, &mut problems);
        if created.state_dir {
            if keep_logs {
                remove_state_keeping_logs(&self.state_dir);
            } else if let Err(e) = std::fs::remove_dir_all(&self.state_dir) {
                problems.push(format!("{}: {e}", self.state_dir.display()));
            }
        }
        if created.state_root {
            // Only if empty: other runs, or kept logs, may be in it.
            let _ = std::fs::remove_dir(&self.state_root);
        }
        problems
    }
}

impl Drop for LocalMesh {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // Not shut down in order (an error or a panic): kill at once, then
        // remove the rest; keep the logs, which say what went wrong.
        self.supervisor.kill_all_now();
        for problem in self.remove_everything(true) {
            eprintln!("weft: could not remove {problem}");
        }
    }
}

/// A condition polled over HTTP: `GET path` answers 200 and `check` accepts the body.
struct Wait<'a> {
    /// What did not happen, for the error: `web-0's proxy was not ready`.
    failure: String,
    netns: Option<&'a str>,
    addr: SocketAddr,
    path: &'static str,
    check: fn(&str) -> Result<(), String>,
    /// Give up as soon as the process with this label has exited once.
    fail_on_exit: Option<&'static str>,
}

impl<'a> Wait<'a> {
    /// `GET /ready` answers 200.
    fn ready(what: &str, netns: Option<&'a str>, addr: SocketAddr) -> Wait<'a> {
        Wait {
            failure: format!("{what} was not ready"),
            netns,
            addr,
            path: "/ready",
            check: |_| Ok(()),
            fail_on_exit: None,
        }
    }
}

/// Whether a proxy's `/config` shows a registration lease.
fn registered(config: &str) -> Result<(), String> {
    let value: serde_json::Value = serde_json::from_str(config).map_err(|e| format!("/config is not JSON: {e}"))?;
    if value["lease"].is_string() { Ok(()) } else { Err("no lease yet".into()) }
}

/// The last `lines` lines of a log file.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| format!("(cannot read it: {e})"));
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, "1\n2\n3\n").unwrap();
        assert_eq!(tail(&path, 2), "2\n3");
        assert!(tail(&dir.path().join("nope"), 2).contains("cannot read"));
    }

    const MESH: &str = "apiVersion: weft.dev/v1alpha1\nkind: LocalMesh\nspec:\n  MTLS\n  services:\n    \
                        - {name: web, selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}\n  workloads:\n    \
                        - {name: web, labels: {app: web}, serviceAccount: web, command: [weft], ports: [8080]}\n    \
                        - {name: client, namespace: shop, command: [weft]}\n";

    fn local(mtls_spec: &str, mode: Mode, mtls: MtlsChoice) -> anyhow::Result<LocalMesh> {
        let text = MESH.replace("MTLS", mtls_spec);
        let mesh = LoadedMesh::parse(&text, Path::new("m.yaml"), PathBuf::from("/")).unwrap();
        let tools = (mode == Mode::Netns).then(|| Tools { ip: "/sbin/ip".into(), setpriv: "/bin/setpriv".into() });
        let settings = Settings { mode, tools, state_root: "/run/weft".into(), log: "info".into(), mtls };
        LocalMesh::new(&mesh, settings)
    }

    fn args(spec: &Spec) -> Vec<String> {
        spec.args.iter().map(|a| a.to_string_lossy().into_owned()).collect()
    }

    /// The value after `flag`, if present.
    fn flag<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
        args.iter().position(|a| a == flag).map(|i| args[i + 1].as_str())
    }

    #[test]
    fn with_mtls_the_control_plane_runs_the_ca_and_every_proxy_gets_an_identity() {
        let mesh = local(
            "mtls: {mode: strict, certLifetime: 1h}\n  defaultAccess: allow-authenticated",
            Mode::Netns,
            MtlsChoice::Auto,
        )
        .unwrap();
        let state = format!("/run/weft/{}", std::process::id());
        let control = args(&mesh.control_spec());
        assert_eq!(flag(&control, "--state-dir"), Some(format!("{state}/ca").as_str()));
        assert_eq!(flag(&control, "--tokens"), Some(format!("{state}/tokens.yaml").as_str()));
        assert_eq!(flag(&control, "--trust-domain"), Some("cluster.local"));
        assert_eq!(flag(&control, "--mtls-mode"), Some("strict"));
        assert_eq!(flag(&control, "--cert-lifetime"), Some("1h"));
        assert_eq!(flag(&control, "--default-access"), Some("allow-authenticated"));

        for (i, (pod, sa)) in [("web-0", "web"), ("client-0", "default")].into_iter().enumerate() {
            let spec = mesh.proxy_spec(&mesh.plan.pods[i]);
            let proxy = args(&spec);
            assert_eq!(flag(&proxy, "--control-plane"), Some("https://198.18.0.1:8090"), "{pod}");
            assert_eq!(flag(&proxy, "--trust-anchors"), Some(format!("{state}/anchors.pem").as_str()), "{pod}");
            let token = format!("{state}/identity/{pod}.token");
            assert_eq!(flag(&proxy, "--identity-token-file"), Some(token.as_str()), "{pod}");
            assert_eq!(flag(&proxy, "--service-account"), Some(sa), "{pod}");
            assert!(spec.prepare.is_some(), "{pod}: a fresh token before every start");
            assert!(!proxy.iter().any(|a| a.starts_with("weft-bootstrap.")), "no token on a command line");
            // setpriv: the proxy runs as its own UID.
            assert!(proxy.contains(&"--reuid=2102".to_owned()), "{proxy:?}");
        }
        assert_eq!(mesh.plan.pods[1].identity(), "spiffe://cluster.local/ns/shop/sa/default");
        assert!(mesh.control_spec().prepare.is_none());
    }

    #[test]
    fn without_mtls_nothing_of_it_is_passed() {
        for mesh in [
            local("mtls: {enabled: false}", Mode::Netns, MtlsChoice::Auto).unwrap(),
            local("", Mode::Netns, MtlsChoice::Off).unwrap(),
            local("", Mode::Loopback { block: 33 }, MtlsChoice::Auto).unwrap(),
        ] {
            assert!(mesh.plan.mtls.is_none());
            let control = args(&mesh.control_spec());
            for absent in ["--state-dir", "--tokens", "--mtls-mode", "--default-access"] {
                assert_eq!(flag(&control, absent), None, "{control:?}");
            }
            let spec = mesh.proxy_spec(&mesh.plan.pods[0]);
            let proxy = args(&spec);
            assert!(flag(&proxy, "--control-plane").is_some_and(|url| url.starts_with("http://")), "{proxy:?}");
            assert_eq!(flag(&proxy, "--identity-token-file"), None);
            assert!(spec.prepare.is_none());
            // Only loopback mode, where nothing intercepts, serves HTTP_PROXY clients.
            let loopback = matches!(mesh.plan.mode, Mode::Loopback { .. });
            assert_eq!(proxy.contains(&"--explicit-proxy".to_owned()), loopback, "{proxy:?}");
        }
        let on = local("mtls: {enabled: false}", Mode::Netns, MtlsChoice::On).unwrap();
        assert!(on.plan.mtls.is_some(), "--mtls on wins over the file");
        let e = local("", Mode::Loopback { block: 33 }, MtlsChoice::On).err().expect("no mTLS on loopback");
        assert!(e.to_string().contains("--mtls on needs network namespaces"), "{e}");
    }

    #[test]
    fn registration_is_read_from_the_proxys_config() {
        assert_eq!(registered(r#"{"version":"0.1.0","lease":"abc-1","discovery":[]}"#), Ok(()));
        assert_eq!(registered(r#"{"lease":null}"#), Err("no lease yet".into()));
        assert!(registered("not json").is_err());
    }
}
