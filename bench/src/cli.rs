//! The command line: the bench itself (no subcommand), the parts it runs
//! inside the pods (`app`, `load`, `idle`, `cp-*`), and the handshake
//! micro-benchmark (`handshakes`), and the instruction counts per request
//! (`callgrind`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::plan::{Mode, Scenario};
use crate::setup::SetupKind;

#[derive(Parser, Debug)]
#[command(
    name = "weft-bench",
    version,
    about = "Latency, throughput and footprint of Weft beside the direct path and HAProxy and nginx mTLS pairs",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(flatten)]
    pub bench: BenchArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Flags of the bench run.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// A few seconds: every setup starts and serves a handful of requests
    /// (what CI runs); nothing about speed is asserted.
    #[arg(long, group = "mode")]
    pub smoke: bool,
    /// Under 4 minutes: one rate, short runs (the default).
    #[arg(long, group = "mode")]
    pub quick: bool,
    /// Under 20 minutes: 500, 1,000 and 2,000 requests/s, three runs each,
    /// for committed results.
    /// Run it on a quiet machine.
    #[arg(long, group = "mode")]
    pub full: bool,
    /// 30 minutes (`--soak-for`) at 1,000 requests/s through the weft mTLS
    /// pair while a second replica is stopped and started every 10 s and
    /// the service's TrafficPolicy changes every minute: failed requests,
    /// latency per 5-minute window, RSS, descriptors and threads. Writes
    /// soak.{md,json}.
    #[arg(long, group = "mode")]
    pub soak: bool,
    /// How long `--soak` runs.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30m", requires = "soak")]
    pub soak_for: std::time::Duration,
    /// About 2 minutes: good HTTP/1.1 load (500/s) through the weft-mtls
    /// pair, quiet and while a third pod floods the server proxy's inbound
    /// port (garbage, half-open TLS handshakes, silent connections at
    /// 1,000/s); writes chaos.{md,json}.
    #[arg(long, group = "mode")]
    pub chaos: bool,
    /// Only these parts (repeat or comma-separate): http1, http2, tcp, conn
    /// (latency workloads), knee, max, idle, control.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Scenario>,
    /// Measure these setups (repeat or comma-separate): direct, weft,
    /// weft-mtls, weft-mtls-base, weft-policy, weft-trace-0, weft-trace-100,
    /// haproxy-mtls, nginx-mtls [default: all but weft-mtls-base,
    /// weft-policy and weft-trace-*; all in --smoke, weft-mtls-base only
    /// with --baseline-proxy-bin].
    #[arg(long, value_enum, value_delimiter = ',')]
    pub setups: Vec<SetupKind>,
    /// Directory for latest.md, latest.json and latest.svg
    /// [default: bench/results in this checkout].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Measure this weft-proxy binary instead of building the checkout's
    /// (with the bench's profile): an exact build, or a tree in flux.
    #[arg(long, env = "WEFT_BENCH_PROXY_BIN")]
    pub proxy_bin: Option<PathBuf>,
    /// A second weft-proxy binary, the before of a change: adds setup
    /// weft-mtls-base (weft-mtls with this binary), measured interleaved
    /// with the others, so that before and after share one run.
    #[arg(long)]
    pub baseline_proxy_bin: Option<PathBuf>,
    /// Endpoints the control-plane section registers [default: 200 in
    /// --smoke, 10,000 in --quick and --full].
    #[arg(long)]
    pub endpoints: Option<usize>,
    /// Idle connections to open, cumulative steps (comma-separated), e.g.
    /// `10000` for the burst of issue #14 in a --quick run [default: 20 in
    /// --smoke, 1000 in --quick, 1000,10000 in --full].
    #[arg(long, value_delimiter = ',')]
    pub idle_steps: Vec<usize>,
    /// Run this weft-control binary (the CA and discovery of weft-mtls, the
    /// control-plane section) instead of building the checkout's.
    #[arg(long, env = "WEFT_BENCH_CONTROL_BIN")]
    pub control_bin: Option<PathBuf>,
}

impl BenchArgs {
    pub fn mode(&self) -> Mode {
        if self.smoke {
            Mode::Smoke
        } else if self.full {
            Mode::Full
        } else if self.chaos {
            Mode::Chaos
        } else {
            Mode::Quick
        }
    }

    pub fn out(&self) -> PathBuf {
        self.out.clone().unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/results")))
    }
}

/// Parts the bench runs inside the pods (hidden; they print JSON on
/// stdout), and `handshakes`, run by hand.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// The app: HTTP (1.1 and 2) with 1 KiB responses, and a TCP echo.
    #[command(hide = true)]
    App(crate::app::AppArgs),
    /// The load generator: one run, its report as JSON.
    #[command(hide = true)]
    Load(crate::load::LoadArgs),
    /// Opens connections step by step and holds them idle.
    #[command(hide = true)]
    Idle(crate::load::idle::IdleArgs),
    /// A hostile client for `--chaos`: floods a port, prints what became of
    /// its connections as JSON.
    #[command(hide = true)]
    Flood(crate::chaos::FloodArgs),
    /// Simulated proxies watching a policy, and policy changes.
    #[command(hide = true)]
    CpPush(crate::cplane::push::PushArgs),
    /// Registers endpoints with the control plane.
    #[command(hide = true)]
    CpRegister(crate::cplane::register::RegisterArgs),
    /// An OTLP/gRPC trace sink that counts spans (`weft-trace-*` setups).
    #[command(hide = true)]
    OtlpSink(crate::setup::trace::SinkArgs),
    /// mTLS handshake cost on one core: full and resumed handshakes per
    /// second, and the client's and the server's CPU µs per handshake, with
    /// the proxy's TLS configurations driven in memory. Writes
    /// handshakes.{md,json}; needs no root.
    Handshakes(crate::handshake::HandshakeArgs),
    /// The control plane as a Kubernetes controller at size (1,000 Services,
    /// 10,000 endpoints by default) on the tests' real API server: ready
    /// time, RSS, and EndpointSlice change → watching stream. Writes
    /// kube-scale.{md,json}; needs the binaries of `bash tests/kube/build.sh`.
    KubeScale(crate::kube_scale::KubeScaleArgs),
    /// Instructions per request of one weft-proxy at a time under valgrind's
    /// callgrind (outbound plaintext HTTP/1, outbound and inbound over
    /// mTLS, opaque TCP over mTLS): figures that repeat on a noisy machine.
    /// Writes callgrind.{md,json}; `--check` compares them with a baseline
    /// (what CI runs). Needs root and valgrind.
    Callgrind(crate::callgrind::CallgrindArgs),
    /// The client of `callgrind`: sequential requests on one connection,
    /// paced by the orchestrator on stdin.
    #[command(hide = true)]
    CallgrindClient(crate::callgrind::client::ClientArgs),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_and_only() {
        let cli = Cli::try_parse_from(["weft-bench"]).unwrap();
        assert_eq!(cli.bench.mode(), Mode::Quick);
        assert!(cli.bench.out().ends_with("bench/results"));
        let cli = Cli::try_parse_from(["weft-bench", "--full", "--only", "http1,knee", "--out", "/tmp/x"]).unwrap();
        assert_eq!(cli.bench.mode(), Mode::Full);
        assert_eq!(cli.bench.only, vec![Scenario::Http1, Scenario::Knee]);
        assert_eq!(cli.bench.out(), PathBuf::from("/tmp/x"));
        assert!(Cli::try_parse_from(["weft-bench", "--smoke", "--full"]).is_err());
        assert!(Cli::try_parse_from(["weft-bench", "--only", "nope"]).is_err());
        let cli =
            Cli::try_parse_from(["weft-bench", "--setups", "weft-mtls,weft-policy", "--setups", "direct"]).unwrap();
        assert_eq!(cli.bench.setups, [SetupKind::WeftMtls, SetupKind::WeftPolicy, SetupKind::Direct]);
        let cli = Cli::try_parse_from(["weft-bench", "--setups", "weft-trace-0,weft-trace-100"]).unwrap();
        assert_eq!(cli.bench.setups, [SetupKind::WeftTrace0, SetupKind::WeftTrace100]);
        assert!(Cli::try_parse_from(["weft-bench", "--setups", "nope"]).is_err());
    }

    #[test]
    fn handshakes_flags() {
        let cli = Cli::try_parse_from(["weft-bench", "handshakes"]).unwrap();
        let Some(Command::Handshakes(args)) = cli.command else { panic!("not handshakes") };
        assert_eq!((args.duration, args.rounds, args.cpu), (std::time::Duration::from_secs(3), 5, None));
        assert!(args.out().ends_with("bench/results"));
        let cli = Cli::try_parse_from(["weft-bench", "handshakes", "--duration", "10s", "--rounds", "7", "--cpu", "0"])
            .unwrap();
        let Some(Command::Handshakes(args)) = cli.command else { panic!("not handshakes") };
        assert_eq!((args.duration, args.rounds, args.cpu), (std::time::Duration::from_secs(10), 7, Some(0)));
        assert!(Cli::try_parse_from(["weft-bench", "handshakes", "--rounds", "0"]).is_err());
    }

    #[test]
    fn callgrind_flags() {
        use crate::callgrind::PathKind;
        let cli = Cli::try_parse_from(["weft-bench", "callgrind"]).unwrap();
        let Some(Command::Callgrind(args)) = cli.command else { panic!("not callgrind") };
        assert_eq!((args.requests, args.warmup, args.runs, args.update_baseline), (200, 50, 3, false));
        assert!(args.paths.is_empty() && args.check.is_none());
        assert!(args.out().ends_with("bench/results"));
        let cli = Cli::try_parse_from([
            "weft-bench",
            "callgrind",
            "--paths",
            "inbound-mtls-http1,outbound-http1",
            "--runs",
            "1",
            "--check",
            "b.json",
            "--update-baseline",
        ])
        .unwrap();
        let Some(Command::Callgrind(args)) = cli.command else { panic!("not callgrind") };
        assert_eq!(args.paths, [PathKind::InboundMtlsHttp1, PathKind::OutboundHttp1]);
        assert_eq!((args.runs, args.update_baseline), (1, true));
        assert!(Cli::try_parse_from(["weft-bench", "callgrind", "--update-baseline"]).is_err());
        assert!(Cli::try_parse_from(["weft-bench", "callgrind", "--requests", "0"]).is_err());
        assert!(Cli::try_parse_from(["weft-bench", "callgrind", "--paths", "nope"]).is_err());
    }
}
