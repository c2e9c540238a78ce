//! Weft's sidecar proxy, as a library that `main.rs` and the tests drive.
//!
//! ```text
//!               app (same pod)                         peer pod
//!   app ──► iptables OUTPUT ──► outbound :4140 ──────────────► peer's inbound
//!   peer ─► iptables PREROUTING ─► inbound :4143 ──► app on 127.0.0.1:<port>
//!                                  admin 127.0.0.1:4191 (/ready /live /metrics /shutdown)
//! ```
//!
//! Every accepted connection goes through the same stages:
//! [`transport::orig_dst`] (where was it going?) → [`transport::detect`]
//! (HTTP/1, HTTP/2 or opaque, one bounded read that is replayed) → either
//! [`http`] (per-request proxying over pooled upstream connections) or
//! [`tcp`] (a bidirectional splice). [`inbound`] and [`outbound`] differ only
//! in how they pick the upstream for a connection. With `--explicit-proxy`,
//! connections that reached the outbound listener without a redirect are
//! served by [`explicit`], an HTTP forward proxy (`HTTP_PROXY`).

pub mod admin;
pub mod app;
pub mod authz;
pub mod balance;
pub mod cli;
pub mod config;
pub mod control;
pub mod drain;
pub mod explicit;
pub mod http;
pub mod identity;
pub mod inbound;
pub mod init;
pub mod metrics;
pub mod outbound;
pub mod policy;
pub mod proxy;
pub mod tcp;
pub mod telemetry;
pub mod transport;
