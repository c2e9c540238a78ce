//! The workloads of `weft demo`, run by the `weft` binary as
//! `weft example web|store|load …` so that a fresh clone needs no other
//! program:
//!
//! ```text
//!   load ──HTTP──► web (v1 ×2, v2 ×1) ──RESP──► store (redis-server, or ours)
//! ```
//!
//! - [`web`]: the counter service; answers with its pod name, version and
//!   the counter it incremented in the store;
//! - [`store`]: a small Redis-protocol server (PING, GET, SET, INCR, DEL, …)
//!   used when Debian's `redis-server` is not installed, and the client the
//!   web app uses against either;
//! - [`load`]: a steady-rate HTTP load generator that honours `HTTP_PROXY`;
//! - [`DEMO_MESH`]: the demo as a LocalMesh file, which `weft demo` runs and
//!   which `weft up -f examples/demo/mesh.yaml` runs too, with its canary
//!   route ([`DEMO_POLICIES`]).
//!
//! None of them knows about the mesh: they listen on plain ports and dial
//! services by name, which is the point of a transparent proxy.

pub mod load;
pub mod resp;
pub mod store;
pub mod web;

use std::ffi::OsString;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

/// The demo's mesh file (`examples/demo/mesh.yaml`).
pub const DEMO_MESH: &str = include_str!("../demo/mesh.yaml");
/// The demo's policy files (`examples/demo/policy/`), by file name: the
/// canary route, 90 % to web-v1 and 10 % to web-v2.
pub const DEMO_POLICIES: [(&str, &str); 1] = [("web-canary.yaml", include_str!("../demo/policy/web-canary.yaml"))];

#[derive(Parser, Debug)]
#[command(name = "weft example", about = "The demo workloads of `weft demo`")]
struct Cli {
    /// Log filter in tracing's EnvFilter syntax.
    #[arg(long, global = true, env = "WEFT_EXAMPLE_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    example: Example,
}

#[derive(Subcommand, Debug)]
enum Example {
    /// The counter web service.
    Web(web::WebArgs),
    /// A small Redis-protocol store.
    Store(store::StoreArgs),
    /// A steady-rate HTTP load generator.
    Load(load::LoadArgs),
}

/// Parses `args` (including the program name) and runs the example until it
/// finishes or receives SIGTERM or SIGINT.
pub fn main(args: impl IntoIterator<Item = OsString>) -> anyhow::Result<()> {
    let cli = Cli::parse_from(args);
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log).context("invalid --log filter")?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("building the tokio runtime")?;
    runtime.block_on(async {
        match cli.example {
            Example::Web(args) => web::run(args).await,
            Example::Store(args) => store::run(args).await,
            Example::Load(args) => load::run(args).await,
        }
    })
}

/// Completes on SIGTERM or SIGINT: the examples stop when the local mesh
/// (or Kubernetes) asks them to.
pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        // Without signal handlers the default action (exit) applies anyway.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn clap_definition_is_valid() {
        use clap::CommandFactory as _;
        super::Cli::command().debug_assert();
    }
}
