//! Wakes the local-files poller the moment a watched file is written,
//! renamed into place or removed (inotify), so that a change is in force in
//! milliseconds rather than up to one poll interval later (`weft rollout`
//! steps, a policy edit).
//!
//! Polling stays the ground truth: inotify misses changes made on network
//! file systems or behind a bind mount, and the kernel may refuse watches
//! (`fs.inotify.max_user_watches`). So a wake-up only triggers a poll early;
//! when no watch can be set, the poller just keeps its interval.
//!
//! Directories are watched, not files: an editor's save (a new file renamed
//! over the old one) or a ConfigMap update (the `..data` symlink swapped)
//! replaces the inode a file watch would hold. Only what a writer finishes
//! wakes the poller: `CLOSE_WRITE`, not every `MODIFY`, so that a file
//! truncated and then rewritten is never read half way (an empty policy
//! file would briefly delete that file's objects).

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use futures_util::StreamExt as _;
use inotify::{EventMask, EventStream, Inotify, WatchDescriptor, WatchMask};

use super::files::is_policy_file;

/// Kubernetes mounts a ConfigMap's files as symlinks through `..data`,
/// which it swaps atomically on update.
const CONFIGMAP_DATA: &str = "..data";

/// What a watched directory is watched for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interest {
    /// These files in it (the services file, policy files named on the
    /// command line).
    pub names: Vec<OsString>,
    /// Any policy file in it (it is a policy directory).
    pub policy_files: bool,
}

impl Interest {
    /// Whether an event on `name` in the directory may change what the
    /// poller reads. An event without a name (the directory itself went
    /// away) always may.
    pub fn wants(&self, name: Option<&OsStr>) -> bool {
        let Some(name) = name else { return true };
        name == CONFIGMAP_DATA
            || self.names.iter().any(|n| n == name)
            || (self.policy_files && is_policy_file(Path::new(name)))
    }
}

/// The directories to watch for a services file and policy paths, each
/// with what it is watched for, in first-mention order. Pure: `is_dir`
/// says which policy paths are directories.
pub fn plan(
    services: Option<&Path>,
    policy_paths: &[PathBuf],
    is_dir: impl Fn(&Path) -> bool,
) -> Vec<(PathBuf, Interest)> {
    fn entry(out: &mut Vec<(PathBuf, Interest)>, dir: PathBuf) -> &mut Interest {
        let at = match out.iter().position(|(d, _)| *d == dir) {
            Some(at) => at,
            None => {
                out.push((dir, Interest::default()));
                out.len() - 1
            }
        };
        &mut out[at].1
    }
    let mut out = Vec::new();
    for (path, named_dir) in
        services.map(|s| (s, false)).into_iter().chain(policy_paths.iter().map(|p| (p.as_path(), is_dir(p))))
    {
        if named_dir {
            entry(&mut out, path.to_path_buf()).policy_files = true;
            continue;
        }
        let Some(name) = path.file_name() else { continue };
        // A bare file name lives in the working directory.
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        entry(&mut out, dir).names.push(name.to_os_string());
    }
    out
}

/// inotify watches on the planned directories.
pub struct Wake {
    /// `None` when no watch could be set: [`Wake::changed`] never fires.
    stream: Option<EventStream<Vec<u8>>>,
    watched: Vec<(WatchDescriptor, Interest)>,
}

impl Wake {
    /// Sets the watches; a directory that cannot be watched (missing, a
    /// limit reached) is left to polling, and said once in the log.
    pub fn new(services: Option<&Path>, policy_paths: &[PathBuf]) -> Self {
        let none = Self { stream: None, watched: Vec::new() };
        let inotify = match Inotify::init() {
            Ok(i) => i,
            Err(e) => {
                tracing::info!(error = %e, "inotify unavailable; local files are polled only");
                return none;
            }
        };
        let mask = WatchMask::CLOSE_WRITE | WatchMask::MOVED_TO | WatchMask::MOVED_FROM | WatchMask::DELETE;
        let mut watched = Vec::new();
        for (dir, interest) in plan(services, policy_paths, Path::is_dir) {
            match inotify.watches().add(&dir, mask) {
                Ok(wd) => watched.push((wd, interest)),
                Err(e) => tracing::info!(dir = %dir.display(), error = %e, "not watching with inotify; polled only"),
            }
        }
        if watched.is_empty() {
            return none;
        }
        match inotify.into_event_stream(vec![0u8; 4096]) {
            Ok(stream) => Self { stream: Some(stream), watched },
            Err(e) => {
                tracing::info!(error = %e, "inotify unavailable; local files are polled only");
                none
            }
        }
    }

    /// Resolves at the next event that may change what the poller reads;
    /// pending forever when nothing is watched (or the watch broke).
    pub async fn changed(&mut self) {
        loop {
            let Some(stream) = self.stream.as_mut() else { return std::future::pending().await };
            match stream.next().await {
                Some(Ok(event)) => {
                    let overflow = event.mask.contains(EventMask::Q_OVERFLOW);
                    let wanted = self
                        .watched
                        .iter()
                        .find(|(wd, _)| *wd == event.wd)
                        .is_none_or(|(_, interest)| interest.wants(event.name.as_deref()));
                    if overflow || wanted {
                        return;
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "inotify failed; local files are polled only from now on");
                    self.stream = None;
                }
                None => self.stream = None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(names: &[&str]) -> Interest {
        Interest { names: names.iter().map(OsString::from).collect(), policy_files: false }
    }

    fn policy_dir(names: &[&str]) -> Interest {
        Interest { policy_files: true, ..files(names) }
    }

    #[test]
    fn wants_only_what_the_poller_reads() {
        let cases: &[(Interest, Option<&str>, bool)] = &[
            (files(&["services.yaml"]), Some("services.yaml"), true),
            (files(&["services.yaml"]), Some(".services.yaml.swp"), false),
            (files(&["services.yaml"]), Some("other.yaml"), false),
            (files(&["services.yaml"]), Some("..data"), true),
            (files(&["services.yaml"]), None, true),
            (policy_dir(&[]), Some("routes.yaml"), true),
            (policy_dir(&[]), Some("routes.yml"), true),
            (policy_dir(&[]), Some(".routes.yaml"), false),
            (policy_dir(&[]), Some("routes.yaml~"), false),
            (policy_dir(&[]), Some("notes.txt"), false),
            (policy_dir(&[]), Some("..data"), true),
            (policy_dir(&[]), None, true),
            (policy_dir(&["odd.conf"]), Some("odd.conf"), true),
            (policy_dir(&["odd.conf"]), Some("other.conf"), false),
        ];
        for (interest, name, want) in cases {
            assert_eq!(interest.wants(name.map(OsStr::new)), *want, "{interest:?} {name:?}");
        }
    }

    #[test]
    fn plans_one_watch_per_directory() {
        let dirs = ["/etc/weft/policy"];
        let is_dir = |p: &Path| dirs.iter().any(|d| Path::new(d) == p);
        let plan = plan(
            Some(Path::new("/etc/weft/services.yaml")),
            &[
                PathBuf::from("/etc/weft/policy"),
                PathBuf::from("/etc/weft/extra.yaml"),
                PathBuf::from("local.yaml"),
                PathBuf::from("/etc/weft/policy/odd.conf"),
            ],
            is_dir,
        );
        assert_eq!(
            plan,
            vec![
                (PathBuf::from("/etc/weft"), files(&["services.yaml", "extra.yaml"])),
                (PathBuf::from("/etc/weft/policy"), policy_dir(&["odd.conf"])),
                (PathBuf::from("."), files(&["local.yaml"])),
            ],
        );
    }
}
