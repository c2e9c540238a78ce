//! Run identity: a run of `weft up`/`weft demo` is named by its PID, which
//! is in its state directory (`STATE_ROOT/<pid>`), its network namespaces
//! (`weft-<pid>-…`) and its loopback block. This module says which run a
//! name belongs to, whether that run is alive, where state lives, and how a
//! run's state is removed.
//!
//! A leaf (it uses only [`crate::system`] and the plan's port numbers): the
//! run record, the stale-run sweep and the mesh lifecycle all build on it.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::bail;

use crate::plan::CONTROL_GRPC_PORT;
use crate::system;

/// The run id of a namespace or directory named `weft-<pid>-…`.
pub fn run_id(name: &str) -> Option<u32> {
    name.strip_prefix("weft-")?.split('-').next()?.parse().ok()
}

/// Whether run `pid` is still alive: a live process of that PID whose
/// command line mentions weft (a PID reused by something else does not count).
pub fn run_alive(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| cmdline.windows(4).any(|w| w == b"weft"))
}

/// Where this run keeps its files by default: `/run/weft` as root, else
/// `$XDG_RUNTIME_DIR/weft` or `/tmp/weft-<uid>`.
pub fn default_state_root() -> PathBuf {
    if system::is_root() {
        return PathBuf::from("/run/weft");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("weft"),
        _ => PathBuf::from(format!("/tmp/weft-{}", nix::unistd::getuid())),
    }
}

/// Removes a state directory except its `logs/` (and the directory itself
/// if no logs are left). Whether anything was removed.
pub fn remove_state_keeping_logs(dir: &Path) -> bool {
    let mut removed = false;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_name() == "logs" {
            continue;
        }
        let path = entry.path();
        let gone = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
        removed |= gone.is_ok();
    }
    // Only succeeds when empty, i.e. there were no logs.
    let _ = std::fs::remove_dir(dir.join("logs"));
    removed | std::fs::remove_dir(dir).is_ok()
}

/// Picks a free 127.N.0.0/16 block for a loopback-mode run: the first N,
/// from a PID-derived start, whose control-plane address can be bound.
pub fn choose_loopback_block(run_id: u32) -> anyhow::Result<u8> {
    let start = run_id % 200;
    for i in 0..200 {
        let block = u8::try_from(20 + (start + i) % 200).expect("below 256");
        let addr = SocketAddr::from((Ipv4Addr::new(127, block, 0, 1), CONTROL_GRPC_PORT));
        if std::net::TcpListener::bind(addr).is_ok() {
            return Ok(block);
        }
    }
    bail!("no free 127.N.0.1:{CONTROL_GRPC_PORT} for the control plane (N from 20 to 219)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_from_names() {
        assert_eq!(run_id("weft-123-hub"), Some(123));
        assert_eq!(run_id("weft-123-web-v1-0"), Some(123));
        assert_eq!(run_id("wt-123-hub"), None);
        assert_eq!(run_id("weft-abc-hub"), None);
        // This test binary is weft_cli-<hash>.
        assert!(run_alive(std::process::id()));
        assert!(!run_alive(u32::MAX));
    }

    #[test]
    fn state_removal_keeps_only_logs() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("123");
        std::fs::create_dir_all(dir.join("logs")).unwrap();
        std::fs::write(dir.join("weft"), "binary").unwrap();
        std::fs::write(dir.join("logs/web-0.app.log"), "hello").unwrap();
        assert!(remove_state_keeping_logs(&dir));
        assert!(!dir.join("weft").exists());
        assert!(dir.join("logs/web-0.app.log").exists());

        std::fs::remove_file(dir.join("logs/web-0.app.log")).unwrap();
        std::fs::write(dir.join("services.yaml"), "").unwrap();
        assert!(remove_state_keeping_logs(&dir));
        assert!(!dir.exists(), "without logs nothing is left");
    }

    #[test]
    fn loopback_blocks_are_free_addresses() {
        let block = choose_loopback_block(std::process::id()).unwrap();
        assert!((20..220).contains(&block));
        // Occupy it: the next choice moves on.
        let _held = std::net::TcpListener::bind((Ipv4Addr::new(127, block, 0, 1), CONTROL_GRPC_PORT)).unwrap();
        assert_ne!(choose_loopback_block(std::process::id()).unwrap(), block);
    }
}
