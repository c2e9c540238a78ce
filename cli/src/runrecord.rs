//! The run record: what another `weft` command needs to find and reach a
//! running local mesh.
//!
//! ```text
//!   weft up / weft demo ──write──► STATE_ROOT/<pid>/run.json (0644, removed with the state dir)
//!   weft rollout ──discover(STATE_ROOT, --run)──► the one live record ──► pods' admin, policy dir
//! ```
//!
//! A record is live while its `weft` process is ([`runs::run_alive`]); the
//! record of a run that died without cleaning up (SIGKILL) is ignored, and
//! swept by the next `weft up` with the rest of its state.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::runs;

/// The file name inside a run's state directory.
pub const RUN_RECORD: &str = "run.json";

/// How the run's pods are isolated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunMode {
    Netns,
    Loopback,
}

/// One running local mesh, as `weft up` or `weft demo` describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    /// The PID of `weft up`/`weft demo`: the run's id.
    pub pid: u32,
    pub mode: RunMode,
    /// The LocalMesh file (`examples/demo/mesh.yaml` for the built-in demo).
    pub mesh_file: PathBuf,
    /// The policy files and directories the control plane watches, absolute.
    pub policies: Vec<PathBuf>,
    pub services: Vec<ServiceRecord>,
    pub pods: Vec<PodRecord>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceRecord {
    pub name: String,
    pub namespace: String,
    /// The service ports (what clients call).
    pub ports: Vec<u16>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodRecord {
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    /// The pod's network namespace; `None` in loopback mode.
    pub netns: Option<String>,
    /// The proxy's admin address, reached from inside `netns` when set.
    pub admin: SocketAddr,
}

impl RunRecord {
    /// The first policy path that is a directory: where generated
    /// resources (`weft rollout`'s route) go.
    pub fn policy_dir(&self) -> Option<&Path> {
        self.policies.iter().map(PathBuf::as_path).find(|p| p.is_dir())
    }

    pub fn service(&self, namespace: &str, name: &str) -> Option<&ServiceRecord> {
        self.services.iter().find(|s| s.name == name && s.namespace == namespace)
    }

    /// Writes the record into `state_dir` (0644: readable by anyone who may
    /// read the state directory).
    pub fn write(&self, state_dir: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt as _;
        let path = state_dir.join(RUN_RECORD);
        let json = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(&path, json + "\n")?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
    }
}

/// Why no single run was found.
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    #[error(
        "no running local mesh under {}: start one with `weft up -f mesh.yaml` or `weft demo`, or give the \
         state directory it uses with --state-dir",
        .root.display()
    )]
    None { root: PathBuf },
    #[error("several local meshes are running under {} (weft PIDs {}); choose one with --run PID", .root.display(), list(.pids))]
    Several { root: PathBuf, pids: Vec<u32> },
    #[error("no running local mesh with PID {pid} under {} (running: {})", .root.display(), list_or_none(.running))]
    NotRunning { root: PathBuf, pid: u32, running: Vec<u32> },
    #[error("cannot read the run record {}: {source}", .path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("the run record {} is not valid: {source}", .path.display())]
    Parse { path: PathBuf, source: serde_json::Error },
}

fn list(pids: &[u32]) -> String {
    pids.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
}

fn list_or_none(pids: &[u32]) -> String {
    if pids.is_empty() { "none".into() } else { list(pids) }
}

/// Finds the run to act on under `root`: the one given by `pid`, or else
/// the only live one. Records whose process is gone are ignored.
pub fn discover(root: &Path, pid: Option<u32>) -> Result<RunRecord, DiscoverError> {
    discover_with(root, pid, runs::run_alive)
}

/// [`discover`] with the liveness check passed in (tests).
pub fn discover_with(root: &Path, pid: Option<u32>, alive: impl Fn(u32) -> bool) -> Result<RunRecord, DiscoverError> {
    let mut running: Vec<u32> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| root.join(p.to_string()).join(RUN_RECORD).is_file() && alive(p))
        .collect();
    running.sort_unstable();
    let chosen = match (pid, running.as_slice()) {
        (Some(p), _) if running.contains(&p) => p,
        (Some(p), _) => return Err(DiscoverError::NotRunning { root: root.into(), pid: p, running }),
        (None, []) => return Err(DiscoverError::None { root: root.into() }),
        (None, [one]) => *one,
        (None, _) => return Err(DiscoverError::Several { root: root.into(), pids: running }),
    };
    let path = root.join(chosen.to_string()).join(RUN_RECORD);
    let text = std::fs::read_to_string(&path).map_err(|source| DiscoverError::Read { path: path.clone(), source })?;
    serde_json::from_str(&text).map_err(|source| DiscoverError::Parse { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(pid: u32) -> RunRecord {
        RunRecord {
            pid,
            mode: RunMode::Netns,
            mesh_file: "/srv/mesh.yaml".into(),
            policies: vec!["/srv/policy".into()],
            services: vec![ServiceRecord { name: "web".into(), namespace: "default".into(), ports: vec![80] }],
            pods: vec![PodRecord {
                name: "web-0".into(),
                namespace: "default".into(),
                labels: [("app".to_owned(), "web".to_owned())].into(),
                netns: Some(format!("weft-{pid}-web-0")),
                admin: "127.0.0.1:4191".parse().unwrap(),
            }],
        }
    }

    fn write(root: &Path, pid: u32) {
        let dir = root.join(pid.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        record(pid).write(&dir).unwrap();
    }

    #[test]
    fn records_round_trip_and_are_world_readable() {
        use std::os::unix::fs::PermissionsExt as _;
        let root = tempfile::tempdir().unwrap();
        write(root.path(), 7);
        let path = root.path().join("7/run.json");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o644);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"meshFile\": \"/srv/mesh.yaml\""), "{text}");
        assert!(text.contains("\"mode\": \"netns\""), "{text}");
        assert_eq!(serde_json::from_str::<RunRecord>(&text).unwrap(), record(7));
    }

    #[test]
    fn discovery() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        let alive = |pids: &'static [u32]| move |p: u32| pids.contains(&p);

        let e = discover_with(root, None, alive(&[])).unwrap_err();
        assert!(matches!(e, DiscoverError::None { .. }), "{e}");
        assert!(e.to_string().contains("weft up -f mesh.yaml"), "{e}");

        // A state directory without a record (a run still starting, or kept logs) does not count.
        std::fs::create_dir_all(root.join("5/logs")).unwrap();
        write(root, 10);
        assert_eq!(discover_with(root, None, alive(&[5, 10])).unwrap().pid, 10);
        assert_eq!(discover_with(root, Some(10), alive(&[10])).unwrap().pid, 10);

        // Stale: its weft is gone.
        write(root, 20);
        assert_eq!(discover_with(root, None, alive(&[10])).unwrap().pid, 10, "20 is stale");
        let e = discover_with(root, Some(20), alive(&[10])).unwrap_err();
        assert_eq!(e.to_string(), format!("no running local mesh with PID 20 under {} (running: 10)", root.display()));

        let e = discover_with(root, None, alive(&[10, 20])).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "several local meshes are running under {} (weft PIDs 10, 20); choose one with --run PID",
                root.display()
            )
        );
        assert_eq!(discover_with(root, Some(20), alive(&[10, 20])).unwrap().pid, 20);

        std::fs::write(root.join("10/run.json"), "{").unwrap();
        let e = discover_with(root, None, alive(&[10])).unwrap_err();
        assert!(matches!(e, DiscoverError::Parse { .. }), "{e}");

        // The real liveness check: this test process is a live weft (its name is weft_cli-…).
        write(root, std::process::id());
        assert_eq!(discover(root, Some(std::process::id())).unwrap().pid, std::process::id());
        assert!(discover(root, Some(u32::MAX)).is_err());

        let missing = discover_with(&root.join("nope"), None, alive(&[])).unwrap_err();
        assert!(matches!(missing, DiscoverError::None { .. }));
    }

    #[test]
    fn the_policy_dir_is_the_first_directory() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("extra.yaml");
        std::fs::write(&file, "").unwrap();
        let mut r = record(1);
        r.policies = vec![file, dir.path().join("missing"), dir.path().to_owned()];
        assert_eq!(r.policy_dir(), Some(dir.path()));
        r.policies.pop();
        assert_eq!(r.policy_dir(), None);
    }
}
