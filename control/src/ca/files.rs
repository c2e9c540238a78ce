//! Reloading the CA's files: the trust anchors (how a root is rolled in
//! and out), the issuer (how the new root's issuer takes over), and the
//! bootstrap tokens (`weft up` rewrites the file as workloads come).
//!
//! Polled like the policy files (see `source::files` for why polling).
//! A rewrite that does not parse, or that would break the mesh (anchors
//! the issuer does not chain to, an issuer that chains to no anchor), is
//! refused: logged, shown on `/state` under `rejected`, and retried at
//! every poll so that it is taken as soon as the other file catches up
//! (writing the issuer before the anchors that admit it is harmless).
//! Within one poll the anchors go first, then the issuer, then the tokens.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::anchors::Anchors;
use super::issuer::{Issuer, IssuerFiles};
use super::tokens::{BootstrapToken, parse_tokens};
use super::{Ca, IssuerSource};
use crate::shutdown::Shutdown;
use crate::source::files::{read, utf8};
use crate::source::{Sink, SourceError};

/// Reads and parses a tokens file.
pub fn read_tokens(path: &Path, trust_domain: &str) -> Result<Vec<BootstrapToken>, SourceError> {
    let bytes = read(path)?;
    parse_tokens_bytes(path, &bytes, trust_domain)
}

fn parse_tokens_bytes(path: &Path, bytes: &[u8], trust_domain: &str) -> Result<Vec<BootstrapToken>, SourceError> {
    let text = utf8(path, bytes)?;
    parse_tokens(text, trust_domain).map_err(|error| SourceError::Invalid { path: path.to_owned(), error })
}

/// One watched input: the content last applied, and the last refusal (so
/// that a refusal is reported once, yet retried at every poll).
#[derive(Debug)]
struct Watched {
    origin: PathBuf,
    applied: Option<Vec<u8>>,
    refused: Option<(Vec<u8>, String)>,
}

impl Watched {
    fn new(origin: PathBuf) -> Self {
        Self { origin, applied: None, refused: None }
    }

    /// Applies `bytes` (or reports `read`'s error) unless already applied.
    fn poll(&mut self, read: Result<Vec<u8>, String>, sink: &Sink, apply: impl FnOnce(&[u8]) -> Result<bool, String>) {
        let origin = self.origin.display().to_string();
        let (bytes, outcome) = match read {
            Ok(b) => {
                if self.applied.as_ref() == Some(&b) {
                    return;
                }
                let r = apply(&b);
                (b, r)
            }
            Err(e) => (Vec::new(), Err(e)),
        };
        match outcome {
            Ok(changed) => {
                if changed {
                    tracing::info!(file = %origin, "reloaded");
                }
                self.applied = Some(bytes);
                self.refused = None;
                sink.clear(&origin);
            }
            Err(error) => {
                let again = self.refused.as_ref().is_some_and(|(b, e)| *b == bytes && *e == error);
                if !again {
                    sink.reject(&origin, &error);
                }
                self.refused = Some((bytes, error));
            }
        }
    }
}

/// Watches the CA's files and applies their changes to the [`Ca`].
#[derive(Debug)]
pub struct CaFiles {
    ca: Ca,
    interval: Duration,
    issuer: Option<(IssuerFiles, Watched)>,
    anchors: Option<Watched>,
    tokens: Option<Watched>,
}

impl CaFiles {
    pub fn new(ca: Ca, interval: Duration) -> Self {
        let s = ca.settings();
        let issuer_files = match &s.issuer {
            IssuerSource::Files(f) => f.clone(),
            IssuerSource::StateDir(d) => IssuerFiles::in_state_dir(d),
        };
        let issuer = Some((issuer_files.clone(), Watched::new(issuer_files.cert)));
        let anchors = s.trust_anchors.clone().map(Watched::new);
        let tokens = s.tokens.clone().map(Watched::new);
        Self { ca, interval, issuer, anchors, tokens }
    }

    /// Looks at every file once. Reads files: run on a blocking thread.
    pub fn poll(&mut self, sink: &Sink, now: SystemTime) {
        let ca = &self.ca;
        if let Some(w) = &mut self.anchors {
            let path = w.origin.clone();
            let read = read(&path).map_err(|e| e.to_string());
            w.poll(read, sink, |bytes| {
                let next = Anchors::parse(bytes, 0).map_err(|e| format!("{}: {e}", path.display()))?;
                let version = ca.set_anchors(next).map_err(|e| format!("{}: refused: {e}", path.display()))?;
                if let Some(version) = version {
                    tracing::info!(version, anchors = ca.anchors().certs.len(), "trust anchors changed");
                }
                Ok(version.is_some())
            });
        }
        if let Some((files, w)) = &mut self.issuer {
            let pair = read(&files.cert).and_then(|c| read(&files.key).map(|k| (c, k))).map_err(|e| e.to_string());
            // One content for the pair: a change to either is a change.
            let joined = pair.as_ref().map(|(c, k)| [c.as_slice(), k].concat()).map_err(Clone::clone);
            let files = files.clone();
            w.poll(joined, sink, |_| {
                let Ok((cert, key)) = &pair else { return Ok(false) };
                let next = Issuer::from_pem(cert, key, &files.cert, &files.key, now).map_err(|e| e.to_string())?;
                if next.info().sha256 == ca.issuer().info().sha256 {
                    return Ok(false);
                }
                let subject = next.info().subject.clone();
                ca.set_issuer(next).map_err(|e| format!("{}: refused: {e}", files.cert.display()))?;
                tracing::info!(%subject, "the CA issuer changed; new certificates are signed by it");
                Ok(true)
            });
        }
        if let Some(w) = &mut self.tokens {
            let path = w.origin.clone();
            let td = ca.trust_domain().to_owned();
            let read = read(&path).map_err(|e| e.to_string());
            w.poll(read, sink, |bytes| {
                let tokens = parse_tokens_bytes(&path, bytes, &td).map_err(|e| e.to_string())?;
                let n = tokens.len();
                let changed = ca.tokens().set_bootstrap(tokens);
                tracing::debug!(tokens = n, changed, "bootstrap tokens loaded");
                Ok(changed)
            });
        }
    }

    /// Polls until shutdown.
    pub async fn run(mut self, sink: Sink, mut shutdown: Shutdown) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.signaled() => return,
            }
            let sink2 = sink.clone();
            let polled = tokio::task::spawn_blocking(move || {
                self.poll(&sink2, SystemTime::now());
                self
            })
            .await;
            match polled {
                Ok(me) => self = me,
                Err(e) => {
                    tracing::error!(error = %e, "the CA file poller panicked; CA files are no longer watched");
                    return;
                }
            }
        }
    }
}
