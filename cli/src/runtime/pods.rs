//! Network-namespace plumbing for one run (network-namespace mode only):
//! each pod's namespace and veth, its `/etc/netns/<pod>` files and the
//! `weft proxy init` that installs its interception rules; and removing
//! them again.
//!
//! ```text
//!   create_pod: record ns → ip netns add + veth (netns::Ip) → /etc/netns/<pod>/{hosts,resolv.conf}
//!               → ip netns exec <pod> weft proxy init (log: <pod>.init.log)
//!   remove_pods: namespaces, last created first (the hub last) → /etc/netns/<pod> → /etc/netns if ours and empty
//! ```
//!
//! Every namespace and directory is recorded in [`Created`] before it is
//! created, so that removal covers a half-finished start too.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use anyhow::{Context as _, bail};

use crate::hosts;
use crate::netns::{ETC_NETNS, Ip};
use crate::plan::{Plan, PodPlan};
use crate::system;

/// What this run created and must remove.
#[derive(Default)]
pub(super) struct Created {
    pub netns: Vec<String>,
    pub hosts_dirs: Vec<PathBuf>,
    pub etc_netns: bool,
    pub state_root: bool,
    pub state_dir: bool,
}

/// The record, also after a panic elsewhere: what was created stays true.
pub(super) fn lock(created: &Mutex<Created>) -> MutexGuard<'_, Created> {
    created.lock().unwrap_or_else(|e| e.into_inner())
}

/// What [`create_pod`] needs besides the pod.
pub(super) struct PodSetup<'a> {
    pub ip: &'a Ip,
    /// The hub's namespace, whose bridge the pod joins.
    pub hub: &'a str,
    /// For the hosts file: every pod's and service's name.
    pub plan: &'a Plan,
    /// The weft binary that runs `proxy init`.
    pub exe: &'a Path,
    pub created: &'a Mutex<Created>,
}

/// Creates `pod`'s namespace joined to the hub, its `/etc/netns` files,
/// and runs `weft proxy init` in it, logging to `log_path`.
pub(super) async fn create_pod(setup: &PodSetup<'_>, pod: &PodPlan, log_path: &Path) -> anyhow::Result<()> {
    let PodSetup { ip, hub, plan, exe, created } = *setup;
    lock(created).netns.push(pod.netns.clone());
    ip.create_pod(hub, pod).with_context(|| format!("creating pod {}", pod.name))?;

    let etc = Path::new(ETC_NETNS);
    if !etc.exists() {
        lock(created).etc_netns = true;
    }
    let dir = etc.join(&pod.netns);
    lock(created).hosts_dirs.push(dir.clone());
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join("hosts"), hosts::render(plan, pod))
        .with_context(|| format!("writing {}/hosts", dir.display()))?;
    // No DNS server in a pod: names come from the hosts file, and an
    // unknown name fails at once instead of querying the host's resolver.
    std::fs::write(dir.join("resolv.conf"), "# weft local mesh: names come from /etc/hosts\noptions attempts:1\n")
        .with_context(|| format!("writing {}/resolv.conf", dir.display()))?;

    let log = std::fs::File::create(log_path)?;
    let status = tokio::process::Command::new(ip.bin())
        .args(["netns", "exec", &pod.netns])
        .arg(exe)
        .args(["proxy", "init"])
        .env_clear()
        .env("PATH", system::search_path())
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .await
        .context("running weft proxy init")?;
    if !status.success() {
        bail!(
            "`weft proxy init` failed in pod {} ({status}):\n{}",
            pod.name,
            std::fs::read_to_string(log_path).unwrap_or_default().trim_end()
        );
    }
    Ok(())
}

/// Removes the namespaces (with anything still inside) and `/etc/netns`
/// directories in `created`; what could not be removed goes to `problems`.
pub(super) fn remove_pods(ip: Option<&Ip>, created: &Created, problems: &mut Vec<String>) {
    if let Some(ip) = ip {
        // Pods first, the hub (created first) last.
        for ns in created.netns.iter().rev() {
            match ip.destroy(ns) {
                Ok(pids) if !pids.is_empty() => {
                    tracing::warn!("killed processes {pids:?} that were still in {ns} after the mesh stopped")
                }
                Ok(_) => {}
                Err(e) => problems.push(format!("network namespace {ns}: {e}")),
            }
        }
    }
    for dir in &created.hosts_dirs {
        match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => problems.push(format!("{}: {e}", dir.display())),
            _ => {}
        }
    }
    if created.etc_netns {
        // Only if empty: another run may have put its pods there since.
        let _ = std::fs::remove_dir(ETC_NETNS);
    }
}
