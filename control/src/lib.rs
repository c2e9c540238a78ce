//! `weft-control`: the control plane of the Weft mesh.
//!
//! ```text
//!   services file ─┐                              ┌─► Discovery.Watch
//!   policy YAML  ──┼─► sources ─► index ─watch──► ├─► Policy.WatchOutbound
//!   Registry RPCs ─┤   (source)  (index)  (grpc)  ├─► Policy.WatchInbound
//!   API server ────┘ (--source kubernetes)        │
//!                                  │              │
//!   issuer, anchors, tokens ─► ca ─┼────────────► └─► Identity.Certify / WatchTrustAnchors
//!                                  └─► admin: /ready /live /metrics /state
//!
//!   proxies' /metrics ─scrape─► telemetry (history, aggregation) ─► dashboard: page + /api/*
//!   proxies' tap (4190, mTLS) ─► telemetry::tap ─► /api/tap (Server-Sent Events)
//!
//!   (gRPC is TLS 1.3 with a serving certificate from the CA when it is on)
//! ```
//!
//! - [`source`]: where objects come from — the local files (polled), the
//!   workload registry (leases), or the Kubernetes API server (watches,
//!   with status written back), all behind the [`source::Source`] boundary.
//! - [`policy`]: parsing and validation of HTTPRoute, TrafficPolicy and
//!   AccessPolicy YAML, with file/line/field errors.
//! - [`index`]: the versioned state and the pure functions that answer the
//!   proxies (resolve a target, outbound policy, inbound policy).
//! - [`grpc`]: the tonic services; each watch stream is a task over a
//!   `tokio::sync::watch` receiver that sends only changed answers.
//! - [`ca`]: the mesh CA — `Identity.Certify` checks a token and a CSR and
//!   signs a SPIFFE certificate; trust anchors are streamed; the gRPC port
//!   itself is served over TLS with a certificate from the CA.
//! - [`admin`] and [`metrics`]: the control plane's own observability.
//! - [`telemetry`] and [`dashboard`]: the mesh's — the proxies' metrics
//!   scraped and aggregated, the tap relayed, served as a page and a JSON
//!   API on `--dashboard-addr`.
//!
//! Entry points: [`cli::main`] (the whole binary, used by `weft up`) and
//! [`start`] (in-process, used by tests).

pub mod admin;
pub mod app;
pub mod ca;
pub mod cli;
pub mod config;
pub mod dashboard;
pub mod grpc;
pub mod index;
pub mod metrics;
pub mod policy;
pub mod shutdown;
pub mod source;
pub mod telemetry;

pub use app::{Control, StartError, run, start};
pub use config::Config;
