//! Pods as network namespaces on a bridge, built with `ip` (iproute2).
//!
//! ```text
//!   netns weft-<pid>-hub                        netns weft-<pid>-web-v1-0
//!   ┌──────────────────────────────────┐        ┌───────────────────────────────────┐
//!   │ br0 198.18.0.1/16 ── p0 ─────────┼─veth───┼─ eth0 198.18.1.1/16               │
//!   │  │  control plane :8090, :9990   │        │ default via 198.18.0.1; lo        │
//!   │  └─ p1 ──────────────────────────┼─veth─► │ iptables (weft proxy init), proxy │
//!   └──────────────────────────────────┘   …    │ (uid 2102), app                   │
//!                                               └───────────────────────────────────┘
//! ```
//!
//! Every interface is created from inside the hub (`ip -n HUB link add p0
//! type veth peer name eth0 netns POD`), so nothing is ever created in the
//! root namespace and runs cannot collide on a name. Names carry the PID of
//! `weft up` (see `runs`); `runtime::sweep` removes what a run that
//! died (SIGKILL, power loss of the shell) left behind.
//!
//! Below the mesh lifecycle: this module knows the plan's addresses and
//! nothing of runs, processes or probes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::plan::{HUB_IP, POD_PREFIX_LEN, PodPlan};

/// Where `ip netns` keeps its namespaces.
const NETNS_DIR: &str = "/run/netns";
/// Where `ip netns exec` finds a namespace's own /etc files.
pub const ETC_NETNS: &str = "/etc/netns";
/// The bridge in the hub.
const BRIDGE: &str = "br0";

/// A failed `ip` command or namespace operation.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("cannot run {program}: {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed { command: String, status: std::process::ExitStatus, stderr: String },
    #[error("cannot enter network namespace {netns}: {source}")]
    Enter { netns: String, source: std::io::Error },
}

/// `ip`, by absolute path.
#[derive(Debug, Clone)]
pub struct Ip {
    bin: PathBuf,
}

impl Ip {
    pub fn new(bin: PathBuf) -> Ip {
        Ip { bin }
    }

    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// Runs `ip ARGS` to completion; its stdout on success.
    pub fn run(&self, args: &[&str]) -> Result<String, NetnsError> {
        let out = Command::new(&self.bin)
            .args(args)
            .output()
            .map_err(|source| NetnsError::Spawn { program: self.bin.display().to_string(), source })?;
        if !out.status.success() {
            return Err(NetnsError::Failed {
                command: format!("ip {}", args.join(" ")),
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The hub: a namespace with `lo` up and the bridge at 198.18.0.1/16.
    pub fn create_hub(&self, hub: &str) -> Result<(), NetnsError> {
        self.run(&["netns", "add", hub])?;
        self.run(&["-n", hub, "link", "set", "lo", "up"])?;
        self.run(&["-n", hub, "link", "add", BRIDGE, "type", "bridge"])?;
        self.run(&["-n", hub, "addr", "add", &format!("{HUB_IP}/{POD_PREFIX_LEN}"), "dev", BRIDGE])?;
        self.run(&["-n", hub, "link", "set", BRIDGE, "up"])?;
        Ok(())
    }

    /// A pod: its namespace joined to the hub's bridge by a veth pair, with
    /// its address, `lo`, and a default route through the hub (so that
    /// connections to service virtual IPs route, and are then redirected
    /// to the proxy by the interception rules).
    pub fn create_pod(&self, hub: &str, pod: &PodPlan) -> Result<(), NetnsError> {
        let ns = pod.netns.as_str();
        self.run(&["netns", "add", ns])?;
        self.run(&["-n", ns, "link", "set", "lo", "up"])?;
        self.run(&["-n", hub, "link", "add", &pod.veth, "type", "veth", "peer", "name", "eth0", "netns", ns])?;
        self.run(&["-n", hub, "link", "set", &pod.veth, "master", BRIDGE])?;
        self.run(&["-n", hub, "link", "set", &pod.veth, "up"])?;
        self.run(&["-n", ns, "addr", "add", &format!("{}/{POD_PREFIX_LEN}", pod.ip), "dev", "eth0"])?;
        self.run(&["-n", ns, "link", "set", "eth0", "up"])?;
        self.run(&["-n", ns, "route", "add", "default", "via", &HUB_IP.to_string()])?;
        Ok(())
    }

    /// Every network namespace's name.
    pub fn list(&self) -> Vec<String> {
        self.run(&["netns", "list"])
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
            .collect()
    }

    /// PIDs of the processes in namespace `ns`.
    pub fn pids(&self, ns: &str) -> Vec<i32> {
        self.run(&["netns", "pids", ns]).unwrap_or_default().split_whitespace().filter_map(|p| p.parse().ok()).collect()
    }

    /// Kills what still runs in `ns` (SIGKILL: this is after the orderly
    /// stop, or the remains of a dead run) and deletes it. Returns the PIDs
    /// killed. A missing namespace is not an error.
    pub fn destroy(&self, ns: &str) -> Result<Vec<i32>, NetnsError> {
        if !Path::new(NETNS_DIR).join(ns).exists() {
            return Ok(Vec::new());
        }
        let pids = self.pids(ns);
        for &pid in &pids {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
        self.run(&["netns", "del", ns])?;
        Ok(pids)
    }
}

/// A TCP connection to `addr` from inside network namespace `netns` (or
/// from here when `None`). The socket is made on a short-lived thread that
/// has entered the namespace (`setns` changes only the calling thread, and
/// a socket stays in the namespace it was made in), so the async runtime's
/// own threads never move.
pub async fn connect_in(
    netns: Option<&str>,
    addr: SocketAddr,
    timeout: Duration,
) -> std::io::Result<tokio::net::TcpStream> {
    let Some(netns) = netns else {
        return tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr))
            .await
            .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()));
    };
    let path = Path::new(NETNS_DIR).join(netns);
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new().name("weft-netns".into()).spawn(move || {
        let connect = || -> std::io::Result<std::net::TcpStream> {
            let file = std::fs::File::open(&path)?;
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
            let stream = std::net::TcpStream::connect_timeout(&addr, timeout)?;
            stream.set_nonblocking(true)?;
            Ok(stream)
        };
        let _ = tx.send(connect());
    })?;
    let stream = rx.await.map_err(|_| std::io::Error::other("the namespace thread died"))??;
    tokio::net::TcpStream::from_std(stream)
}
