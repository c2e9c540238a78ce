//! `weft-bench`: what the mesh costs, measured side by side with the direct
//! path and an HAProxy mTLS pair, in one run, against the targets in
//! `bench/README.md`.
//!
//! One binary plays every part. Run without a subcommand it is the
//! orchestrator ([`harness`]): it builds network-namespace pods with the
//! end-to-end harness (`weft-tests`), starts every setup at once, then runs
//! itself inside the pods as the workload (`weft-bench app`, [`app`]) and as
//! the load generator (`weft-bench load` / `idle`, [`load`]), which report
//! back as JSON on stdout.
//!
//! ```text
//!  direct        pod da: load ─────────────────────────────────────────────► pod db: app
//!  weft          pod wa: load ─► outbound proxy ──────────► inbound proxy ─► pod wb: app
//!                        (iptables OUTPUT)        plain     (PREROUTING)
//!  weft-mtls     pod ma: load ─► VIP ─► outbound proxy ══ mTLS ══► inbound proxy ─► pod mb: app
//!                        (identities and discovery from weft-control in pod mc)
//!  haproxy-mtls  pod ha: load ─► haproxy 127.0.0.1 ─ TLS 1.3 ─► haproxy ──► pod hb: app
//!                                                  client certs
//! ```
//!
//! Setups are measured interleaved (direct, weft, weft-mtls, haproxy,
//! direct, …) so that drift on a shared machine hits all of them alike. The
//! control plane is measured last, in pods of its own ([`cplane`]: policy
//! push to many watch streams, RSS with many endpoints). Results go to
//! `results/latest.{md,json,svg}` ([`report`]).
//!
//! `weft-bench handshakes` ([`handshake`]) is a micro-benchmark beside
//! it: the CPU cost of the proxy's mTLS handshakes, full and resumed, on one
//! core, driven in memory; it writes `results/handshakes.{md,json}`.
//! `weft-bench callgrind` ([`callgrind`]) counts the instructions one proxy
//! executes per request under valgrind, and CI holds them to a baseline.
//!
//! Errors are `anyhow` throughout: this crate is a test tool, like
//! `weft-tests`, and every error ends the run with a message for a person.

pub mod app;
pub mod callgrind;
pub mod chaos;
pub mod cli;
pub mod cplane;
pub mod footprint;
pub mod handshake;
pub mod harness;
pub mod hist;
pub mod kube_scale;
pub mod limits;
pub mod load;
pub mod plan;
pub mod report;
pub mod setup;
pub mod soak;
pub mod stop;
pub mod tcp_opens;
pub mod workload;
