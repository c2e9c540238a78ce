//! `weft-bench cp-push`: simulated proxies watching one target's outbound
//! policy (`Policy.WatchOutbound`, one tonic channel, so one HTTP/2
//! connection, each, as proxies have), and policy changes written to the
//! control plane's policy directory. For each change it records when each
//! stream received it, from the moment the file was renamed into place.
//! One JSON [`PushReport`] on stdout.
//!
//! ```text
//!  write policy (tmp + rename) ─► weft-control polls the directory, recomputes
//!    ─► N streams ─► this process: arrival − write time, per stream
//! ```
//!
//! Streams are opened in steps (`--streams 100,1000` opens 100, measures
//! `--changes` changes, then opens 900 more and measures again). It runs
//! on one thread, the control plane's pod being the one measured.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use weft_api::policy::policy_client::PolicyClient;
use weft_api::policy::{OutboundPolicy, OutboundRequest};

/// Flags of `weft-bench cp-push`.
#[derive(clap::Args, Debug, Clone)]
pub struct PushArgs {
    /// The control plane's gRPC URL (`http://IP:8090`).
    #[arg(long)]
    pub url: String,
    /// The watched target, `VIP:port` of a service.
    #[arg(long)]
    pub target: String,
    /// The service the policy targets (its name in the services file).
    #[arg(long)]
    pub service: String,
    /// The policy file to write (inside the control plane's policy directory).
    #[arg(long)]
    pub policy_file: PathBuf,
    /// Cumulative stream counts, e.g. `100,1000`.
    #[arg(long, value_delimiter = ',', required = true)]
    pub streams: Vec<usize>,
    /// Changes measured at each stream count.
    #[arg(long, default_value_t = 5)]
    pub changes: usize,
    /// A change not seen by every stream this long after its write fails.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "20s")]
    pub timeout: Duration,
    /// Quiet time before each change (stragglers drain, the control plane settles).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "200ms")]
    pub pause: Duration,
}

/// One step: `streams` open, `changes` measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PushStep {
    pub streams: usize,
    /// Time to open the new streams and receive the first policy on each.
    pub connect_s: f64,
    /// Openings that failed and were tried again.
    pub open_retries: usize,
    pub first_retry_error: Option<String>,
    pub changes: Vec<PushChange>,
}

/// One policy change.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PushChange {
    /// Per stream, ms from the write to its arrival (sorted; streams that
    /// never got it are left out and counted in `missed`).
    pub arrivals_ms: Vec<f64>,
    pub missed: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PushReport {
    pub target: String,
    pub steps: Vec<PushStep>,
}

enum Msg {
    Policy {
        stream: usize,
        version: u64,
        at: Instant,
    },
    /// An opening failed and is tried again.
    Retried {
        error: String,
    },
    Failed {
        stream: usize,
        error: String,
    },
}

/// Openings of a stream tried before the run fails.
const OPEN_ATTEMPTS: u32 = 5;
/// Streams being opened at once: proxies start over minutes, not all in
/// the same millisecond, and a burst of a thousand connections overflows
/// the control plane's accept queue (SYNs dropped, retried a second later),
/// which is not what this measures.
const OPENING_AT_ONCE: usize = 64;

pub fn run(args: &PushArgs) -> anyhow::Result<()> {
    crate::limits::raise_nofile();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let report = rt.block_on(measure(args))?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// The policy file's content for change `n`: a request timeout that
/// differs at every change.
fn policy(service: &str, n: usize) -> String {
    format!(
        "apiVersion: policy.weft.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {{name: bench-push, namespace: \
         default}}\nspec:\n  targetRef: {{kind: Service, name: {service}}}\n  timeouts: {{request: {}ms}}\n",
        1000 + n
    )
}

fn write_policy(args: &PushArgs, n: usize) -> anyhow::Result<()> {
    let tmp = args.policy_file.with_extension("tmp");
    std::fs::write(&tmp, policy(&args.service, n)).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &args.policy_file).with_context(|| format!("renaming to {}", args.policy_file.display()))
}

/// Opens stream `stream` (retrying the opening like a proxy, with a short
/// backoff), then forwards every policy it receives. The permit bounds the
/// openings in flight and is released at the first policy.
async fn watch(
    url: String,
    target: String,
    stream: usize,
    permit: tokio::sync::OwnedSemaphorePermit,
    tx: mpsc::UnboundedSender<Msg>,
) {
    let mut permit = Some(permit);
    let mut attempt = 0;
    let mut updates = loop {
        attempt += 1;
        match open(&url, &target, stream).await {
            Ok(updates) => break updates,
            Err(e) if attempt < OPEN_ATTEMPTS => {
                let _ = tx.send(Msg::Retried { error: e });
                tokio::time::sleep(Duration::from_millis(100) * attempt).await;
            }
            Err(e) => {
                let _ = tx.send(Msg::Failed { stream, error: format!("{e} (after {attempt} attempts)") });
                return;
            }
        }
    };
    loop {
        match updates.message().await {
            Ok(Some(policy)) => {
                permit.take();
                if tx.send(Msg::Policy { stream, version: policy.version, at: Instant::now() }).is_err() {
                    return;
                }
            }
            Ok(None) => {
                let _ = tx.send(Msg::Failed { stream, error: "the stream ended".to_owned() });
                return;
            }
            Err(e) => {
                let _ = tx.send(Msg::Failed { stream, error: format!("the stream failed: {e}") });
                return;
            }
        }
    }
}

/// A proxy's opening of its watch: a connection of its own, then the call.
async fn open(url: &str, target: &str, stream: usize) -> Result<tonic::Streaming<OutboundPolicy>, String> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("connecting: {e}"))?;
    let request = OutboundRequest {
        target: target.to_owned(),
        proxy_id: format!("bench-proxy-{stream}"),
        namespace: "default".to_owned(),
    };
    let response =
        PolicyClient::new(channel).watch_outbound(request).await.map_err(|e| format!("WatchOutbound: {e}"))?;
    Ok(response.into_inner())
}

/// What the messages so far say.
#[derive(Default)]
struct Seen {
    /// Per stream, the newest policy version received.
    versions: Vec<Option<u64>>,
    retries: Vec<String>,
}

impl Seen {
    /// Applies one message: the stream and arrival time of a new version;
    /// an error for a failed stream.
    fn apply(&mut self, msg: Msg) -> anyhow::Result<Option<(usize, Instant)>> {
        match msg {
            Msg::Policy { stream, version, at } => {
                let v = &mut self.versions[stream];
                let newer = v.is_none_or(|old| version > old);
                if newer {
                    *v = Some(version);
                }
                Ok(newer.then_some((stream, at)))
            }
            Msg::Retried { error } => {
                self.retries.push(error);
                Ok(None)
            }
            Msg::Failed { stream, error } => anyhow::bail!("stream {stream}: {error}"),
        }
    }
}

async fn measure(args: &PushArgs) -> anyhow::Result<PushReport> {
    anyhow::ensure!(args.streams.windows(2).all(|w| w[0] < w[1]), "--streams must increase");
    let mut change = 0;
    // A policy in place before the first stream: every measured change is
    // an edit of it.
    write_policy(args, change)?;
    tokio::time::sleep(args.pause).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut seen = Seen::default();
    let mut steps = Vec::new();
    for &n in &args.streams {
        let opened = seen.versions.len();
        seen.versions.resize(n, None);
        let retried = seen.retries.len();
        let started = Instant::now();
        let opening = std::sync::Arc::new(tokio::sync::Semaphore::new(OPENING_AT_ONCE));
        for stream in opened..n {
            let permit = opening.clone().acquire_owned().await?;
            tokio::spawn(watch(args.url.clone(), args.target.clone(), stream, permit, tx.clone()));
        }
        let deadline = tokio::time::Instant::now() + args.timeout;
        while seen.versions.iter().any(Option::is_none) {
            let msg = tokio::time::timeout_at(deadline, rx.recv()).await.map_err(|_| {
                let waiting = seen.versions.iter().filter(|v| v.is_none()).count();
                anyhow::anyhow!("{waiting} of {n} streams had no policy {:?} after they were opened", args.timeout)
            })?;
            seen.apply(msg.context("every stream ended")?)?;
        }
        let connect_s = started.elapsed().as_secs_f64();
        let mut changes = Vec::new();
        for _ in 0..args.changes {
            tokio::time::sleep(args.pause).await;
            while let Ok(msg) = rx.try_recv() {
                seen.apply(msg)?;
            }
            change += 1;
            write_policy(args, change)?;
            let written = Instant::now();
            let mut arrived: Vec<Option<f64>> = vec![None; n];
            let deadline = tokio::time::Instant::now() + args.timeout;
            while arrived.iter().any(Option::is_none) {
                let Ok(msg) = tokio::time::timeout_at(deadline, rx.recv()).await else {
                    break;
                };
                if let Some((stream, at)) = seen.apply(msg.context("every stream ended")?)? {
                    let slot = &mut arrived[stream];
                    if slot.is_none() {
                        *slot = Some(at.saturating_duration_since(written).as_secs_f64() * 1e3);
                    }
                }
            }
            let mut arrivals_ms: Vec<f64> = arrived.iter().flatten().copied().collect();
            arrivals_ms.sort_by(f64::total_cmp);
            let missed = n - arrivals_ms.len();
            changes.push(PushChange { arrivals_ms, missed });
        }
        steps.push(PushStep {
            streams: n,
            connect_s,
            open_retries: seen.retries.len() - retried,
            first_retry_error: seen.retries.get(retried).cloned(),
            changes,
        });
    }
    Ok(PushReport { target: args.target.clone(), steps })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_change_differs() {
        assert_ne!(policy("app", 1), policy("app", 2));
        assert!(policy("app", 3).contains("name: app}") && policy("app", 3).contains("request: 1003ms"));
    }
}
