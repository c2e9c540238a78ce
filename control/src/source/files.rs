//! The local source: a services file and policy files or directories,
//! polled and reloaded on change.
//!
//! Polling is the ground truth: it sees edits made through editors'
//! rename-over, bind mounts and network file systems alike, costs a read of
//! a few small files per interval, and bounds the reload delay by the
//! interval (250 ms by default). inotify ([`super::wake`]) only makes a
//! poll come early, the moment a watched file is written or replaced.
//!
//! Each file is applied all or nothing. A file whose new content does not
//! parse or validate, or that redefines an object another file already
//! defines, is refused: the error (file, line, field) is logged and
//! recorded, and the objects of its last good content stay in force. Each
//! distinct bad content is counted once, however long it stays. A file
//! removed from a policy directory takes its objects with it; a file named
//! explicitly (`--services`, `--policy FILE`) that becomes unreadable is
//! refused like bad content instead, since its disappearance is more often
//! an editor's save in progress than an intent to delete everything.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::wake::Wake;
use super::{Event, Sink, Source, SourceError};
use crate::index::model::{Service, ServiceName};
use crate::policy::{Resource, ResourceId};
use crate::shutdown::Shutdown;

/// Files larger than this are refused (a policy file is a few KiB).
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FileKind {
    Services,
    Policy,
}

/// An object and its key, whichever file kind it came from.
#[derive(Clone, Debug, PartialEq)]
enum Object {
    Service(Service),
    Policy(Resource),
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Service(ServiceName),
    Policy(ResourceId),
}

impl Object {
    fn key(&self) -> Key {
        match self {
            Object::Service(s) => Key::Service(s.name.clone()),
            Object::Policy(r) => Key::Policy(r.id()),
        }
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Key::Service(n) => write!(f, "service {n}"),
            Key::Policy(id) => write!(f, "{} {}", id.kind, id.ns_name()),
        }
    }
}

#[derive(Debug, PartialEq)]
enum Seen {
    Never,
    /// Reported as unreadable; not reported again until it changes.
    Unreadable,
    Bytes(Vec<u8>),
}

#[derive(Debug)]
struct Tracked {
    /// Named on the command line (not found in a directory).
    explicit: bool,
    /// The content last looked at, good or bad.
    seen: Seen,
    /// Objects of the last good content.
    good: Vec<Object>,
}

impl Tracked {
    fn new(explicit: bool) -> Self {
        Self { explicit, seen: Seen::Never, good: Vec::new() }
    }
}

/// What one poll found.
#[derive(Debug, Default)]
pub struct Outcome {
    pub events: Vec<Event>,
    pub rejected: Vec<SourceError>,
    /// Files that are good now (their refusals, if any, are cleared).
    pub accepted: Vec<PathBuf>,
    /// Files whose new content was applied.
    pub reloaded: Vec<PathBuf>,
}

/// Watches the services file and the policy paths.
#[derive(Debug)]
pub struct LocalFiles {
    services: Option<PathBuf>,
    policy_paths: Vec<PathBuf>,
    interval: Duration,
    files: BTreeMap<PathBuf, Tracked>,
    /// Everything currently published, to compute deletions.
    applied: BTreeMap<Key, Object>,
}

impl LocalFiles {
    pub fn new(services: Option<PathBuf>, policy_paths: Vec<PathBuf>, interval: Duration) -> Self {
        Self { services, policy_paths, interval, files: BTreeMap::new(), applied: BTreeMap::new() }
    }

    /// The files to look at now: explicit ones, and the `*.yaml`/`*.yml`
    /// files directly inside policy directories (hidden files skipped).
    fn enumerate(&self) -> (Vec<(PathBuf, FileKind, bool)>, Vec<SourceError>) {
        let mut out = Vec::new();
        let mut errors = Vec::new();
        if let Some(s) = &self.services {
            out.push((s.clone(), FileKind::Services, true));
        }
        for p in &self.policy_paths {
            if !p.is_dir() {
                // A file, or a missing path: reading it reports which.
                out.push((p.clone(), FileKind::Policy, true));
                continue;
            }
            match std::fs::read_dir(p) {
                Ok(entries) => {
                    let mut found: Vec<PathBuf> = entries
                        .filter_map(Result::ok)
                        .map(|e| e.path())
                        .filter(|p| is_policy_file(p) && p.is_file())
                        .collect();
                    found.sort();
                    out.extend(found.into_iter().map(|f| (f, FileKind::Policy, false)));
                }
                Err(source) => errors.push(SourceError::Read { path: p.clone(), source }),
            }
        }
        (out, errors)
    }

    /// Looks at every file once and returns what changed. Pure apart from
    /// reading files, so it can run on a blocking thread.
    pub fn poll(&mut self) -> Outcome {
        let mut outcome = Outcome::default();
        let (present, errors) = self.enumerate();
        outcome.rejected.extend(errors);
        let mut changed = false;

        // Files that left a policy directory take their objects with them.
        let gone: Vec<PathBuf> = self
            .files
            .iter()
            .filter(|(p, t)| !t.explicit && !present.iter().any(|(q, _, _)| q == *p))
            .map(|(p, _)| p.clone())
            .collect();
        for p in gone {
            self.files.remove(&p);
            outcome.accepted.push(p);
            changed = true;
        }

        for (path, kind, explicit) in present {
            let bytes = match read(&path) {
                Ok(b) => b,
                Err(e) => {
                    // Only explicit files get here with a real problem; a
                    // directory entry that vanished mid-poll is gone next time.
                    let t = self.files.entry(path).or_insert_with(|| Tracked::new(explicit));
                    if explicit && t.seen != Seen::Unreadable {
                        t.seen = Seen::Unreadable;
                        outcome.rejected.push(e);
                    }
                    continue;
                }
            };
            if self.files.get(&path).is_some_and(|t| matches!(&t.seen, Seen::Bytes(b) if *b == bytes)) {
                continue;
            }
            let parsed = parse(&path, kind, &bytes).and_then(|objects| {
                // The same object in two files would make deleting one file
                // delete the other's: refuse the newcomer.
                for o in &objects {
                    let key = o.key();
                    if let Some((other, _)) =
                        self.files.iter().find(|(p, t)| **p != path && t.good.iter().any(|g| g.key() == key))
                    {
                        return Err(SourceError::Conflict {
                            path: path.clone(),
                            message: format!("{key} is already defined in {}; names must be unique", other.display()),
                        });
                    }
                }
                Ok(objects)
            });
            let t = self.files.entry(path.clone()).or_insert_with(|| Tracked::new(explicit));
            t.seen = Seen::Bytes(bytes);
            match parsed {
                Ok(objects) => {
                    if t.good != objects {
                        t.good = objects;
                        changed = true;
                        outcome.reloaded.push(path.clone());
                    }
                    outcome.accepted.push(path);
                }
                Err(e) => outcome.rejected.push(e),
            }
        }

        if changed {
            let mut next: BTreeMap<Key, Object> = BTreeMap::new();
            for t in self.files.values() {
                for o in &t.good {
                    next.insert(o.key(), o.clone());
                }
            }
            for (k, _) in self.applied.iter().filter(|(k, _)| !next.contains_key(k)) {
                outcome.events.push(match k {
                    Key::Service(n) => Event::ServiceDeleted(n.clone()),
                    Key::Policy(id) => Event::PolicyDeleted(id.clone()),
                });
            }
            for (k, o) in &next {
                if self.applied.get(k) != Some(o) {
                    outcome.events.push(match o {
                        Object::Service(s) => Event::ServiceApplied(s.clone()),
                        Object::Policy(r) => Event::PolicyApplied(r.clone()),
                    });
                }
            }
            self.applied = next;
        }
        outcome
    }

    /// Publishes a poll's outcome and its diagnostics.
    pub fn publish(outcome: Outcome, sink: &Sink) {
        if !outcome.events.is_empty() {
            let n = outcome.events.len();
            let version = sink.apply(outcome.events);
            for p in &outcome.reloaded {
                tracing::info!(file = %p.display(), version, "applied");
            }
            tracing::debug!(changes = n, version, "local files published");
        }
        for p in &outcome.accepted {
            sink.clear(&p.display().to_string());
        }
        for e in &outcome.rejected {
            sink.reject(&e.path().display().to_string(), &e.to_string());
        }
    }
}

impl Source for LocalFiles {
    async fn run(mut self, sink: Sink, mut shutdown: Shutdown) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut wake = Wake::new(self.services.as_deref(), &self.policy_paths);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = wake.changed() => tick.reset(),
                () = shutdown.signaled() => return,
            }
            let polled = tokio::task::spawn_blocking(move || {
                let outcome = self.poll();
                (self, outcome)
            })
            .await;
            match polled {
                Ok((me, outcome)) => {
                    self = me;
                    Self::publish(outcome, &sink);
                }
                Err(e) => {
                    tracing::error!(error = %e, "the file poller panicked; local files are no longer watched");
                    return;
                }
            }
        }
    }
}

pub(crate) fn is_policy_file(p: &Path) -> bool {
    let hidden = p.file_name().and_then(|n| n.to_str()).is_none_or(|n| n.starts_with('.'));
    let yaml = p.extension().and_then(|e| e.to_str()).is_some_and(|e| e == "yaml" || e == "yml");
    yaml && !hidden
}

/// Reads a watched file, refusing one over [`MAX_FILE_BYTES`].
pub(crate) fn read(path: &Path) -> Result<Vec<u8>, SourceError> {
    let meta = std::fs::metadata(path).map_err(|source| SourceError::Read { path: path.into(), source })?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(SourceError::TooLarge { path: path.into(), max: MAX_FILE_BYTES });
    }
    std::fs::read(path).map_err(|source| SourceError::Read { path: path.into(), source })
}

/// A watched file's bytes as text, or an error naming the file.
pub(crate) fn utf8<'a>(path: &Path, bytes: &'a [u8]) -> Result<&'a str, SourceError> {
    std::str::from_utf8(bytes).map_err(|e| SourceError::Invalid {
        path: path.into(),
        error: crate::policy::ParseError {
            line: None,
            column: None,
            document: 0,
            object: None,
            message: format!("not UTF-8 text ({e})"),
        },
    })
}

fn parse(path: &Path, kind: FileKind, bytes: &[u8]) -> Result<Vec<Object>, SourceError> {
    let text = utf8(path, bytes)?;
    let invalid = |error| SourceError::Invalid { path: path.into(), error };
    match kind {
        FileKind::Services => {
            Ok(super::services::parse(text).map_err(invalid)?.into_iter().map(Object::Service).collect())
        }
        FileKind::Policy => Ok(crate::policy::parse(text).map_err(invalid)?.into_iter().map(Object::Policy).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTE: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web}
spec:
  parentRefs: [{group: core, kind: Service, name: web}]
";

    fn write(p: &Path, s: &str) {
        std::fs::write(p, s).expect("write");
    }

    #[test]
    fn reloads_refuses_and_keeps_the_last_good_content() {
        let dir = tempfile::tempdir().expect("tempdir");
        let policy = dir.path().join("policy");
        std::fs::create_dir(&policy).expect("mkdir");
        let services = dir.path().join("services.yaml");
        write(&services, "services: [{name: web, selector: {app: web}, ports: [{port: 80}]}]\n");
        write(&policy.join("web.yaml"), ROUTE);
        write(&policy.join("notes.txt"), "not a policy");
        let mut files = LocalFiles::new(Some(services.clone()), vec![policy.clone()], Duration::from_millis(10));

        let o = files.poll();
        assert!(o.rejected.is_empty(), "{:?}", o.rejected);
        assert_eq!(o.events.len(), 2, "{:?}", o.events);
        assert!(files.poll().events.is_empty(), "unchanged files publish nothing");

        // A broken rewrite is refused, once, and nothing is deleted.
        write(&policy.join("web.yaml"), &ROUTE.replace("kind: Service", "kind: Gateway"));
        let o = files.poll();
        assert!(o.events.is_empty());
        assert_eq!(o.rejected.len(), 1);
        let msg = o.rejected[0].to_string();
        assert!(msg.contains("web.yaml:5:") && msg.contains("spec.parentRefs[0]: kind: only `Service`"), "{msg}");
        assert!(files.poll().rejected.is_empty(), "the same bad content is not counted again");

        // The same route in a second file is a conflict.
        write(&policy.join("web.yaml"), ROUTE);
        assert!(files.poll().rejected.is_empty());
        write(&policy.join("copy.yaml"), ROUTE);
        let o = files.poll();
        assert_eq!(o.rejected.len(), 1);
        assert!(o.rejected[0].to_string().contains("HTTPRoute default/web is already defined in"), "{:?}", o.rejected);

        // Removing a file from the directory deletes its objects.
        std::fs::remove_file(policy.join("copy.yaml")).expect("rm");
        std::fs::remove_file(policy.join("web.yaml")).expect("rm");
        let o = files.poll();
        assert!(matches!(&o.events[..], [Event::PolicyDeleted(id)] if id.name == "web"), "{:?}", o.events);

        // An explicit file that vanishes is refused, its services kept.
        std::fs::remove_file(&services).expect("rm");
        let o = files.poll();
        assert!(o.events.is_empty());
        assert_eq!(o.rejected.len(), 1, "{:?}", o.rejected);
    }

    #[test]
    fn missing_paths_are_reported() {
        let mut files = LocalFiles::new(None, vec!["/nonexistent/weft-policy".into()], Duration::from_millis(10));
        let o = files.poll();
        assert_eq!(o.rejected.len(), 1);
        assert!(o.rejected[0].to_string().contains("/nonexistent/weft-policy"));
    }

    /// With a poll interval of a minute, only inotify can apply an edit
    /// within the deadline: a rename into a policy directory, a rewrite of
    /// the services file in place, and a removal.
    #[tokio::test]
    async fn inotify_applies_changes_before_the_next_poll() {
        use std::sync::Arc;

        use crate::index::{Index, MeshConfig};
        use crate::source::Diagnostics;

        let dir = tempfile::tempdir().expect("tempdir");
        let policy = dir.path().join("policy");
        std::fs::create_dir(&policy).expect("mkdir");
        let services = dir.path().join("services.yaml");
        write(&services, "services: [{name: web, selector: {app: web}, ports: [{port: 80}]}]\n");
        let index = Index::new(MeshConfig::default());
        let sink = Sink::new(index.clone(), Arc::new(Diagnostics::default()));
        let mut files = LocalFiles::new(Some(services.clone()), vec![policy.clone()], Duration::from_secs(60));
        LocalFiles::publish(files.poll(), &sink);
        let (trigger, shutdown) = crate::shutdown::channel();
        let task = tokio::spawn(files.run(sink, shutdown));
        let state = index.subscribe();
        // The first tick polls at once; let it pass before editing.
        tokio::time::sleep(Duration::from_millis(100)).await;

        let until = |what: &'static str, done: fn(&crate::index::State) -> bool| {
            let mut state = state.clone();
            async move {
                let waited = tokio::time::timeout(Duration::from_secs(2), state.wait_for(|s| done(s))).await;
                assert!(waited.is_ok_and(|r| r.is_ok()), "{what} not applied within 2 s of the write");
            }
        };
        let tmp = dir.path().join("web.yaml.tmp");
        write(&tmp, ROUTE);
        std::fs::rename(&tmp, policy.join("web.yaml")).expect("rename");
        until("a policy renamed into the directory", |s| s.policies.len() == 1).await;

        write(
            &services,
            "services: [{name: web, selector: {app: web}, ports: [{port: 80}]}, {name: api, selector: {app: api}, ports: [{port: 80}]}]\n",
        );
        until("a services file rewritten in place", |s| s.services.len() == 2).await;

        std::fs::remove_file(policy.join("web.yaml")).expect("rm");
        until("a policy removed", |s| s.policies.is_empty()).await;

        trigger.fire();
        task.await.expect("the poller stops");
    }
}
