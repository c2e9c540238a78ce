//! The `weft-proxy` command line, as a library function so that the `weft`
//! CLI can run the proxy from its own binary (`weft proxy run …`) and
//! `cargo run -p weft-cli -- demo` needs no second binary.

use std::ffi::OsString;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "weft-proxy", version, about = "Weft's transparent sidecar proxy")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Install (or remove) the iptables rules that send this network
    /// namespace's TCP through the proxy, as an init container would.
    Init(crate::init::InitArgs),
    /// Run the proxy: inbound, outbound and admin listeners.
    Run(Box<crate::config::RunArgs>),
    /// Wait until the proxy in this pod is ready (a classic sidecar's
    /// postStart hook, holding the app back until then).
    Await(crate::await_ready::AwaitArgs),
}

/// Parses `args` (including the program name) and runs the command. Exits
/// the process with status 2 on invalid flags or configuration, as clap does.
pub fn main(args: impl IntoIterator<Item = OsString>) -> anyhow::Result<()> {
    let cli = Cli::parse_from(args);
    match cli.command {
        Command::Init(args) => {
            crate::init::run(&args).context("weft-proxy init failed")?;
            Ok(())
        }
        Command::Await(args) => crate::await_ready::run(&args),
        Command::Run(args) => {
            let config = match args.into_config() {
                Ok(config) => config,
                Err(errors) => {
                    eprintln!("{errors}");
                    std::process::exit(2);
                }
            };
            crate::telemetry::init_logging(&config.log_filter);
            // Before the runtime's threads: they get arenas set up to purge.
            match crate::alloc::configure() {
                Ok(()) => tracing::debug!(allocator = crate::alloc::NAME, "allocator configured"),
                // The proxy still works; it just keeps a burst's memory longer.
                Err(e) => {
                    tracing::warn!(allocator = crate::alloc::NAME, error = %e, "freed memory may not be returned")
                }
            }
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(config.worker_threads)
                .enable_all()
                .thread_name("weft-proxy")
                .build()
                .context("failed to build the tokio runtime")?;
            runtime.block_on(crate::app::run(config))
        }
    }
}
