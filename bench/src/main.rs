//! `weft-bench`: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::Parser as _;
use weft_bench::cli::{Cli, Command};
use weft_bench::harness::{self, Options};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Some(Command::App(args)) => weft_bench::app::run(args).map(|()| true),
        Some(Command::OtlpSink(args)) => weft_bench::setup::trace::run(args).map(|()| true),
        Some(Command::Load(args)) => weft_bench::load::run(args).map(|()| true),
        Some(Command::Idle(args)) => weft_bench::load::idle::run(args).map(|()| true),
        Some(Command::Flood(args)) => weft_bench::chaos::flood(args).map(|()| true),
        Some(Command::CpPush(args)) => weft_bench::cplane::push::run(args).map(|()| true),
        Some(Command::CpRegister(args)) => weft_bench::cplane::register::run(args).map(|()| true),
        Some(Command::Handshakes(args)) => weft_bench::handshake::run(args).map(|()| true),
        Some(Command::KubeScale(args)) => weft_bench::kube_scale::run(args).map(|()| true),
        Some(Command::Callgrind(args)) => weft_bench::callgrind::run(args),
        Some(Command::CallgrindClient(args)) => weft_bench::callgrind::client::run(args).map(|()| true),
        None if cli.bench.soak => weft_bench::soak::run(&weft_bench::soak::Options {
            duration: cli.bench.soak_for,
            out: cli.bench.out(),
            proxy_bin: cli.bench.proxy_bin.clone(),
            control_bin: cli.bench.control_bin.clone(),
            command: std::env::args().skip(1).collect::<Vec<_>>().join(" "),
        }),
        None => harness::run(&Options {
            mode: cli.bench.mode(),
            only: cli.bench.only.clone(),
            setups: cli.bench.setups.clone(),
            command: std::env::args().skip(1).collect::<Vec<_>>().join(" "),
            out: cli.bench.out(),
            proxy_bin: cli.bench.proxy_bin.clone(),
            baseline_proxy_bin: cli.bench.baseline_proxy_bin.clone(),
            control_bin: cli.bench.control_bin.clone(),
            endpoints: cli.bench.endpoints,
            idle_steps: cli.bench.idle_steps.clone(),
        }),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("weft-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}
