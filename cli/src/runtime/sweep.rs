//! Sweeping what dead runs left behind: a `weft up` killed with SIGKILL (or
//! a lost shell) never removes its network namespaces, `/etc/netns`
//! directories or state; the next run removes them before it starts.
//!
//! Which run a name belongs to, and whether it is alive, comes from
//! [`crate::runs`]; the namespaces are removed through [`crate::netns::Ip`].

use std::path::Path;

use crate::netns::{ETC_NETNS, Ip};
use crate::runs::{remove_state_keeping_logs, run_alive, run_id};

/// Removes the namespaces, `/etc/netns` directories and state of runs
/// whose `weft up` is gone. Returns one line per thing removed.
pub fn sweep_stale(ip: &Ip, state_root: &Path, own: u32) -> Vec<String> {
    let stale = |name: &str| run_id(name).is_some_and(|pid| pid != own && !run_alive(pid));
    let mut removed = Vec::new();
    // Pods first, the hub last (its bridge holds the veth ends).
    let mut names: Vec<String> = ip.list().into_iter().filter(|n| stale(n)).collect();
    names.sort_by_key(|n| n.ends_with("-hub"));
    for ns in names {
        match ip.destroy(&ns) {
            Ok(pids) if pids.is_empty() => removed.push(format!("network namespace {ns}")),
            Ok(pids) => removed.push(format!("network namespace {ns} (killed leftover processes {pids:?})")),
            Err(e) => tracing::warn!("cannot remove stale {ns}: {e}"),
        }
    }
    let mut etc_removed = false;
    for entry in std::fs::read_dir(ETC_NETNS).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if stale(&name) && std::fs::remove_dir_all(entry.path()).is_ok() {
            removed.push(entry.path().display().to_string());
            etc_removed = true;
        }
    }
    if etc_removed {
        // That run probably created /etc/netns too; gone if now empty.
        let _ = std::fs::remove_dir(ETC_NETNS);
    }
    // State directories are named by the bare PID; logs stay for a post-mortem.
    for entry in std::fs::read_dir(state_root).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(pid) = name.parse::<u32>() else { continue };
        if pid != own && !run_alive(pid) && remove_state_keeping_logs(&entry.path()) {
            removed.push(format!("{} (logs kept)", entry.path().display()));
        }
    }
    removed
}
