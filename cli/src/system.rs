//! What the local mesh needs from the machine: root, and the system tools by
//! absolute path (a non-login root shell may lack `/usr/sbin` in `PATH`).

use std::path::{Path, PathBuf};

/// Directories searched after `PATH`.
const EXTRA_PATH: &[&str] = &["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"];

/// The tools the network-namespace mode runs, with the Debian package of each.
const NETNS_TOOLS: &[(&str, &str)] = &[("ip", "iproute2"), ("iptables", "iptables"), ("setpriv", "util-linux")];

/// The absolute path of `name`, searched in `PATH` and then the usual
/// system directories.
pub fn find(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        return Path::new(name).is_file().then(|| name.into());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(EXTRA_PATH.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// `PATH` for the processes we start: ours, plus the system directories.
pub fn search_path() -> String {
    let mut dirs: Vec<PathBuf> =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    for extra in EXTRA_PATH {
        if !dirs.iter().any(|d| d == Path::new(extra)) {
            dirs.push(extra.into());
        }
    }
    std::env::join_paths(dirs).map(|p| p.to_string_lossy().into_owned()).unwrap_or_else(|_| EXTRA_PATH.join(":"))
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The tools of the network-namespace mode.
#[derive(Debug, Clone)]
pub struct Tools {
    pub ip: PathBuf,
    pub setpriv: PathBuf,
}

/// Tools that are not installed.
#[derive(Debug, thiserror::Error)]
#[error("the network-namespace mode needs {names}, which {verb} not installed: apt-get install -y {packages}")]
pub struct MissingTools {
    names: String,
    verb: &'static str,
    packages: String,
}

impl Tools {
    pub fn find() -> Result<Tools, MissingTools> {
        let missing: Vec<&(&str, &str)> = NETNS_TOOLS.iter().filter(|(name, _)| find(name).is_none()).collect();
        if !missing.is_empty() {
            return Err(MissingTools::of(&missing));
        }
        let get = |name| find(name).expect("checked above");
        Ok(Tools { ip: get("ip"), setpriv: get("setpriv") })
    }
}

impl MissingTools {
    /// The error for these (command, Debian package) pairs.
    pub fn of(missing: &[&(&str, &str)]) -> MissingTools {
        let names: Vec<&str> = missing.iter().map(|(n, _)| *n).collect();
        let mut packages: Vec<&str> = missing.iter().map(|(_, p)| *p).collect();
        packages.dedup();
        MissingTools {
            names: names.join(", "),
            verb: if names.len() == 1 { "is" } else { "are" },
            packages: packages.join(" "),
        }
    }
}
