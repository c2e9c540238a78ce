//! `weft-bench idle`: opens many connections through a setup and holds them
//! idle, so that the orchestrator can read what each one costs the proxies.
//!
//! Each connection makes one echo round trip (so that the whole path, both
//! proxies and the app, holds it open, past protocol detection), then stays
//! quiet. After each step the generator prints an [`IdleStep`] line on
//! stdout and waits for a line on stdin before the next step; after the
//! last, it waits for stdin to close (or `--hold` to pass) and exits, which
//! closes everything.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt as _;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::client::echo;

/// Flags of `weft-bench idle`.
#[derive(clap::Args, Debug, Clone)]
pub struct IdleArgs {
    /// The echo port of the app or of the local proxy.
    #[arg(long)]
    pub target: SocketAddr,
    /// Cumulative connection counts, e.g. `1000,10000`.
    #[arg(long, value_delimiter = ',', required = true)]
    pub steps: Vec<usize>,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Time allowed for one connection's connect and echo.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub connect_timeout: Duration,
    /// Exit after this long whatever stdin says: bounds a run whose
    /// orchestrator went away.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5m")]
    pub hold: Duration,
}

/// One step's outcome, printed as a JSON line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdleStep {
    /// Connections open and idle now.
    pub open: usize,
    /// Connections that failed to open in this step.
    pub failed: usize,
    pub first_error: Option<String>,
    pub elapsed_s: f64,
}

pub fn run(args: &IdleArgs) -> anyhow::Result<()> {
    crate::limits::raise_nofile();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(hold_idle(args))
}

async fn hold_idle(args: &IdleArgs) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + args.hold;
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut open: Vec<TcpStream> = Vec::new();
    for (i, &want) in args.steps.iter().enumerate() {
        let started = Instant::now();
        let (opened, failed, first_error) = open_more(args, want.saturating_sub(open.len())).await;
        open.extend(opened);
        let step = IdleStep { open: open.len(), failed, first_error, elapsed_s: started.elapsed().as_secs_f64() };
        println!("{}", serde_json::to_string(&step)?);
        if i + 1 < args.steps.len() {
            // Go on when told; stop if stdin closes or the hold time passes.
            match tokio::time::timeout_at(deadline, stdin.next_line()).await {
                Ok(Ok(Some(_))) => {}
                _ => return Ok(()),
            }
        }
    }
    // Hold until stdin closes (or says anything), bounded by --hold.
    let _ = tokio::time::timeout_at(deadline, stdin.next_line()).await;
    drop(open);
    Ok(())
}

async fn open_more(args: &IdleArgs, n: usize) -> (Vec<TcpStream>, usize, Option<String>) {
    let permits = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let mut tasks = JoinSet::new();
    for _ in 0..n {
        let permit = permits.clone().acquire_owned().await.expect("the semaphore is never closed");
        let (target, within) = (args.target, args.connect_timeout);
        tasks.spawn(async move {
            let _permit = permit;
            tokio::time::timeout(within, async {
                let mut stream = TcpStream::connect(target).await.map_err(|e| format!("connect: {e}"))?;
                echo(&mut stream).await.map_err(|e| e.to_string())?;
                Ok::<_, String>(stream)
            })
            .await
            .unwrap_or_else(|_| Err(format!("connect and echo took over {within:?}")))
        });
    }
    let (mut opened, mut failed, mut first_error) = (Vec::with_capacity(n), 0, None);
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(stream)) => opened.push(stream),
            Ok(Err(e)) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e.to_string());
            }
        }
    }
    (opened, failed, first_error)
}
