//! `weft-injector`: the mutating admission webhook that puts Weft's proxy in
//! new Pods.
//!
//! ```text
//!  kube-apiserver ── POST /inject (AdmissionReview, TLS) ──► server.rs
//!                                                            │ review.rs: parse, answer
//!                                                            │ mutate.rs: the decision (pure)
//!                    ◄── allowed, JSONPatch (base64) ────────┘ patch.rs: RFC 6902 ops
//!
//!  Secret weft-injector-tls (watched) or --cert/--key ──► tls.rs: the serving
//!                                                         certificate, swapped live
//! ```
//!
//! `config.rs` holds the proxy's settings as flags, shared with `weft
//! inject`, which runs the same `mutate` over manifests.

pub mod config;
pub mod mutate;
pub mod patch;
pub mod review;
pub mod server;
pub mod tls;
