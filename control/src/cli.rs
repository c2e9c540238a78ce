//! The `weft-control` command line, as a library function so that the
//! `weft` CLI can run the control plane from its own binary (`weft up`).
//!
//! [`main`] builds its own tokio runtime: call it from a plain thread or
//! process, not from inside a runtime. Inside one, use [`crate::start`]
//! with a [`crate::Config`] instead.

use std::ffi::OsString;

use anyhow::Context as _;
use clap::Parser;

use crate::config::ControlArgs;

#[derive(Parser, Debug)]
#[command(
    name = "weft-control",
    version,
    about = "Weft's control plane: discovery, policy, the workload registry and the mesh CA"
)]
struct Cli {
    #[command(flatten)]
    args: ControlArgs,
}

/// Parses `args` (including the program name), then serves until SIGINT or
/// SIGTERM. Exits the process with status 2 on invalid flags, as clap does.
pub fn main(args: impl IntoIterator<Item = OsString>) -> anyhow::Result<()> {
    let cli = Cli::parse_from(args);
    let config = match cli.args.into_config() {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("weft-control: {errors}");
            std::process::exit(2);
        }
    };
    init_logging(&config.log_filter);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("weft-control")
        .build()
        .context("failed to build the tokio runtime")?;
    runtime.block_on(crate::app::run(config))?;
    Ok(())
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| "info".into());
    // A second init (the `weft` binary set one up already) is fine.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).try_init();
}
