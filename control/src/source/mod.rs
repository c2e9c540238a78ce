//! Sources: where the index's objects come from.
//!
//! ```text
//!   LocalFiles (services file, policy files/dirs; polled)  ─┐
//!   Registry   (workloads with leases; fed by gRPC)         ├─► Sink ─► Index
//!   Kubernetes (API server watches; --source kubernetes)    ─┘     └─► Diagnostics (/state, /metrics)
//! ```
//!
//! A source turns whatever it watches into [`Event`]s and hands them to a
//! [`Sink`] in batches; a batch is published atomically. A source that
//! refuses input (a file that does not parse) reports it with
//! [`Sink::reject`] and keeps its previous good objects in force; the
//! rejection shows on `/state` and in `weft_control_policy_rejected_total`.
//!
//! The Kubernetes source ([`kubernetes`]) turns watch events of Services,
//! EndpointSlices, Pods and policy objects into the same `Event`s; the
//! proxies' API does not know which source fed the index.

pub mod files;
pub mod kubernetes;
pub mod registry;
pub mod services;
pub mod wake;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::Serialize;

pub use crate::index::Event;
use crate::index::Index;
use crate::policy::ParseError;
use crate::shutdown::Shutdown;

/// Something that feeds the index until shutdown.
pub trait Source: Send + 'static {
    /// Runs until `shutdown` fires, publishing through `sink`.
    fn run(self, sink: Sink, shutdown: Shutdown) -> impl Future<Output = ()> + Send;
}

/// Refused inputs, by origin (a file path), for `/state` and `/metrics`.
#[derive(Debug, Default)]
pub struct Diagnostics {
    rejected_total: AtomicU64,
    rejections: Mutex<BTreeMap<String, Rejection>>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rejection {
    pub error: String,
    /// Unix seconds of the first refusal of this content.
    pub since_unix: u64,
}

impl Diagnostics {
    /// Inputs refused since start (each distinct bad content counts once).
    pub fn rejected_total(&self) -> u64 {
        self.rejected_total.load(Ordering::Relaxed)
    }

    /// Inputs refused right now, by origin.
    pub fn rejections(&self) -> BTreeMap<String, Rejection> {
        self.rejections.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A source's handle on the index and the diagnostics. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Sink {
    index: Index,
    diagnostics: Arc<Diagnostics>,
}

impl Sink {
    pub fn new(index: Index, diagnostics: Arc<Diagnostics>) -> Self {
        Self { index, diagnostics }
    }

    pub fn index(&self) -> &Index {
        &self.index
    }

    /// Publishes a batch; returns the version in force afterwards.
    pub fn apply(&self, events: impl IntoIterator<Item = Event>) -> u64 {
        self.index.apply(events)
    }

    /// Records that `origin`'s new content was refused; its previous good
    /// content stays in force.
    pub fn reject(&self, origin: &str, error: &str) {
        tracing::warn!(%origin, %error, "refused; the previous good content stays in force");
        self.diagnostics.rejected_total.fetch_add(1, Ordering::Relaxed);
        let since_unix = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut r = self.diagnostics.rejections.lock().unwrap_or_else(|p| p.into_inner());
        r.insert(origin.to_owned(), Rejection { error: error.to_owned(), since_unix });
    }

    /// Clears a refusal once `origin` is good again (or gone).
    pub fn clear(&self, origin: &str) {
        let mut r = self.diagnostics.rejections.lock().unwrap_or_else(|p| p.into_inner());
        if r.remove(origin).is_some() {
            tracing::info!(%origin, "accepted again");
        }
    }
}

/// Why a source refused an input.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// `FILE:LINE:COLUMN: [KIND NS/NAME: ]FIELD: PROBLEM`, the form editors
    /// and terminals link to.
    #[error("{}", invalid(path, error))]
    Invalid { path: PathBuf, error: ParseError },
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Conflict { path: PathBuf, message: String },
    #[error("{}: larger than {max} bytes; split it", path.display())]
    TooLarge { path: PathBuf, max: u64 },
}

impl SourceError {
    pub fn path(&self) -> &std::path::Path {
        match self {
            SourceError::Invalid { path, .. }
            | SourceError::Read { path, .. }
            | SourceError::Conflict { path, .. }
            | SourceError::TooLarge { path, .. } => path,
        }
    }
}

fn invalid(path: &std::path::Path, e: &ParseError) -> String {
    let mut out = path.display().to_string();
    match (e.line, e.column) {
        (Some(l), Some(c)) => out.push_str(&format!(":{l}:{c}: ")),
        _ => out.push_str(&format!(": document {}: ", e.document + 1)),
    }
    if let Some(o) = &e.object {
        out.push_str(o);
        out.push_str(": ");
    }
    out.push_str(&e.message);
    out
}
