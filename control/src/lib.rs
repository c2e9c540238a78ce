//! `weft-control`: the control plane of the Weft mesh.
//!
//! ```text
//!   services file ─┐                              ┌─► Discovery.Watch
//!   policy YAML  ──┼─► sources ─► index ─watch──► ├─► Policy.WatchOutbound
//!   Registry RPCs ─┘   (source)  (index)  (grpc)  └─► Policy.WatchInbound
//!   (Kubernetes later)             │
//!                                  └─► admin: /ready /live /metrics /state
//! ```
//!
//! - [`source`]: where objects come from — the local files (polled), the
//!   workload registry (leases), and the [`source::Source`] boundary the
//!   Kubernetes watcher will implement.
//! - [`policy`]: parsing and validation of HTTPRoute, TrafficPolicy and
//!   AccessPolicy YAML, with file/line/field errors.
//! - [`index`]: the versioned state and the pure functions that answer the
//!   proxies (resolve a target, outbound policy, inbound policy).
//! - [`grpc`]: the tonic services; each watch stream is a task over a
//!   `tokio::sync::watch` receiver that sends only changed answers.
//! - [`admin`] and [`metrics`]: the control plane's own observability.
//!
//! Entry points: [`cli::main`] (the whole binary, used by `weft up`) and
//! [`start`] (in-process, used by tests).

pub mod admin;
pub mod app;
pub mod cli;
pub mod config;
pub mod grpc;
pub mod index;
pub mod metrics;
pub mod policy;
pub mod shutdown;
pub mod source;

pub use app::{Control, StartError, run, start};
pub use config::Config;
