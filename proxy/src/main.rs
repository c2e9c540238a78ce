//! `weft-proxy`: the sidecar binary. Thin on purpose: it parses the command
//! line, then hands over to the library (`init` installs interception rules,
//! `run` serves traffic).

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
    Init(weft_proxy::init::InitArgs),
    /// Run the proxy: inbound, outbound and admin listeners.
    Run(Box<weft_proxy::config::RunArgs>),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Init(args) => {
            weft_proxy::init::run(&args).context("weft-proxy init failed")?;
            Ok(())
        }
        Command::Run(args) => {
            let config = match args.into_config() {
                Ok(config) => config,
                Err(errors) => {
                    eprintln!("{errors}");
                    std::process::exit(2);
                }
            };
            weft_proxy::telemetry::init_logging(&config.log_filter);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(config.worker_threads)
                .enable_all()
                .thread_name("weft-proxy")
                .build()
                .context("failed to build the tokio runtime")?;
            runtime.block_on(weft_proxy::app::run(config))
        }
    }
}
