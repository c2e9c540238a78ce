//! `weft-tests`: the end-to-end harness for Weft's proxy.
//!
//! A test builds a [`Mesh`] (a hub network namespace with a bridge), adds
//! [`Pod`]s (one network namespace each, with an address in 198.18.0.0/15),
//! starts real workloads in them (the `weft-testkit` binary, Redis, curl,
//! nghttp) and the real proxy with the real interception rules
//! ([`Pod::run_proxy`]), then asserts on what the clients got, what the apps
//! saw and what the proxies counted ([`Proxy::metrics`]).
//!
//! ```text
//!  pod a                                          pod b
//!  curl ─► iptables OUTPUT ─► proxy :4140 ─────►  iptables PREROUTING ─► proxy :4143 ─► app 127.0.0.1:PORT
//!          (REDIRECT)         (uid 2102,          (REDIRECT)
//!                              not intercepted)
//! ```
//!
//! Everything runs as separate processes, so a failing test shows the logs of
//! every process it started (see [`Mesh`]). See `tests/README.md`.

pub mod browser;
mod control;
mod curl;
mod env;
mod eventually;
pub mod hostile;
pub mod injector;
mod kube;
pub mod kubelet;
mod load;
mod mesh;
mod metrics;
mod pair;
mod process;
mod proxy;
pub mod weft;
pub mod workload;

pub use control::{CONTROL_ADMIN, ControlPlane, GRPC_PORT, MeshCa, WEB_AND_STORE, WEB_SERVICE};
pub use curl::{CURL_MAX_TIME, Curl, Head, parse_heads};
pub use env::{control_bin, injector_bin, preflight, profile_dir, proxy_bin, testkit_bin, tool, weft_bin};
pub use eventually::eventually;
pub use kube::{
    APISERVER_READY, CONTROLLERS, KUBECTL_TIMEOUT, KubeCluster, SERVICE_CIDR, cert_manager_crds, cert_manager_version,
    free_port, gateway_api_crds, gateway_api_version, kube_bin, kube_bin_dir, kube_version, manifests_dir,
};
pub use load::{BENCH_APP_PORT, Load, LoadReport, bench_bin};
pub use mesh::{EXEC_TIMEOUT, Mesh, Pod};
pub use metrics::{Metrics, Sample};
pub use nix::sys::signal::Signal;
pub use pair::{APP_PORT, Pair};
pub use process::{Proc, Run, run_logged};
pub use proxy::{ADMIN, ENV_PROXY_LOG, PROXY_UID, Proxy};

/// SHA-256 of `bytes`, as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("{:x}", sha2::Sha256::digest(bytes))
}

/// SHA-256 of a file, as lowercase hex (by `sha256sum`, which is much faster
/// than a debug build of the `sha2` crate on multi-MiB bodies).
#[track_caller]
pub fn sha256_file(path: &std::path::Path) -> String {
    let out = std::process::Command::new(tool("sha256sum")).arg(path).output().expect("running sha256sum (coreutils)");
    assert!(out.status.success(), "sha256sum {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().expect("sha256sum prints a digest").to_owned()
}

/// Writes `n` pseudo-random bytes (xorshift64 from `seed`) to `path`:
/// incompressible, and different for every seed.
pub fn write_random_file(path: &std::path::Path, n: usize, seed: u64) {
    let mut state = seed | 1;
    let mut bytes = Vec::with_capacity(n + 8);
    while bytes.len() < n {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(n);
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}
