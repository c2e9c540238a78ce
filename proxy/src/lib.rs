//! Weft's sidecar proxy, as a library that `main.rs` and the tests drive.
//!
//! ```text
//!               app (same pod)                         peer pod
//!   app ──► iptables OUTPUT ──► outbound :4140 ──────────────► peer's inbound
//!   peer ─► iptables PREROUTING ─► inbound :4143 ──► app on 127.0.0.1:<port>
//!                                  admin 127.0.0.1:4191 (/ready /live /metrics /shutdown)
//! ```
//!
//! Read by folder: [`listen`] accepts and hands each connection to its
//! direction's stack, [`inbound`] or [`outbound`], each one file per stage
//! (accept → detect → authorize / route → balance → connect). Below them,
//! shared by both: [`transport`] (original destination, detection, TLS,
//! splicing), [`http`] (server, middleware, pool, the proxy's own answers),
//! [`identity`] (certificates, the verified peer), [`policy`] and
//! [`balance`] (pure, table-tested decisions), [`metrics`] and [`control`]
//! (the control plane's streams). [`app`] wires them at start; [`admin`]
//! serves `/ready`, `/metrics`, `/config`; [`init`] installs the iptables
//! rules.

pub mod admin;
pub mod alloc;
pub mod app;
pub mod await_ready;
pub mod balance;
pub mod cli;
pub mod config;
pub mod control;
pub mod drain;
pub mod http;
pub mod identity;
pub mod inbound;
pub mod init;
pub mod listen;
pub mod metrics;
pub mod outbound;
pub mod policy;
pub mod tap;
pub mod telemetry;
pub mod trace;
pub mod transport;
