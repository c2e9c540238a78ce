//! `weft-bench cp-register`: registers endpoints with the control plane
//! (`Registry.Register`, as a proxy registers its workload), spread over
//! services, and exits; the leases outlive it (up to their TTL, 5 minutes
//! at most), which is when the control plane's RSS is read. One JSON
//! [`RegisterReport`] on stdout.
//!
//! With `--watch N` it first opens N `Discovery.Watch` streams, one per
//! service in turn (as the proxies calling those services would), and
//! after the last registration waits until each has received its
//! service's every endpoint: registering then costs what recomputing the
//! watchers of the changed service costs, and the streams prove they kept
//! up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use weft_api::discovery::WatchRequest;
use weft_api::discovery::discovery_client::DiscoveryClient;
use weft_api::registry::registry_client::RegistryClient;
use weft_api::registry::{RegisterRequest, Workload};

/// Flags of `weft-bench cp-register`.
#[derive(clap::Args, Debug, Clone)]
pub struct RegisterArgs {
    /// The control plane's gRPC URL (`http://IP:8090`).
    #[arg(long)]
    pub url: String,
    /// Endpoints to register.
    #[arg(long)]
    pub count: usize,
    /// Services they are spread over (label `app=svc-<i mod services>`).
    #[arg(long, default_value_t = 100)]
    pub services: usize,
    /// Registrations in flight at once (on one connection).
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Lease time-to-live asked for (the control plane caps it at 5 min).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "300s")]
    pub ttl: Duration,
    /// Discovery watch streams opened before registering, one per service
    /// in turn (0: none).
    #[arg(long, default_value_t = 0)]
    pub watch: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterReport {
    pub registered: usize,
    pub failed: usize,
    pub first_error: Option<String>,
    pub took_s: f64,
    /// (registrations done, seconds since the first was sent) at every
    /// tenth of the count: whether registering slows as the table grows.
    pub progress: Vec<(usize, f64)>,
    /// Discovery streams open while registering.
    #[serde(default)]
    pub watchers: usize,
    /// Messages they received in all (snapshots included).
    #[serde(default)]
    pub watch_messages: u64,
    /// From the last registration's answer until every watcher had all of
    /// its service's endpoints, ms; `None` if some never did within 10 s.
    #[serde(default)]
    pub watch_converged_ms: Option<f64>,
}

/// The label value of endpoint `i`'s service.
pub fn service_of(i: usize, services: usize) -> String {
    format!("svc-{}", i % services.max(1))
}

/// The virtual IP of service `j` in the bench's services file.
pub fn service_vip(j: usize) -> String {
    format!("10.96.{}.{}", j / 250, j % 250 + 1)
}

/// Endpoint `i`'s address: 10.1.0.0/16 onwards, one per endpoint.
fn address(i: usize) -> String {
    format!("10.{}.{}.{}", 1 + i / 65_536, (i / 256) % 256, i % 256)
}

fn workload(i: usize, services: usize) -> Workload {
    let service = service_of(i, services);
    Workload {
        name: format!("ep-{i}"),
        namespace: "default".to_owned(),
        service_account: service.clone(),
        labels: [("app".to_owned(), service)].into_iter().collect(),
        address: address(i),
        ports: vec![8080],
        meshed: true,
        ready: true,
        zone: String::new(),
    }
}

pub fn run(args: &RegisterArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let report = rt.block_on(register(args))?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

async fn register(args: &RegisterArgs) -> anyhow::Result<RegisterReport> {
    let channel = tonic::transport::Endpoint::from_shared(args.url.clone())?
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
        .with_context(|| format!("connecting to {}", args.url))?;
    let watchers = Watchers::open(&channel, args.watch, args.services).await?;
    let client = RegistryClient::new(channel);
    let permits = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let ttl_ms = u64::try_from(args.ttl.as_millis()).unwrap_or(u64::MAX);
    let started = Instant::now();
    let mut report = RegisterReport {
        registered: 0,
        failed: 0,
        first_error: None,
        took_s: 0.0,
        progress: Vec::new(),
        watchers: args.watch,
        watch_messages: 0,
        watch_converged_ms: None,
    };
    let tenth = (args.count / 10).max(1);
    let count = |report: &mut RegisterReport, result: Result<(), String>| {
        match result {
            Ok(()) => report.registered += 1,
            Err(e) => {
                report.failed += 1;
                report.first_error.get_or_insert(e);
            }
        }
        let done = report.registered + report.failed;
        if done.is_multiple_of(tenth) {
            report.progress.push((done, started.elapsed().as_secs_f64()));
        }
    };
    let mut tasks = JoinSet::new();
    for i in 0..args.count {
        let permit = permits.clone().acquire_owned().await?;
        let mut client = client.clone();
        let request = RegisterRequest { workload: Some(workload(i, args.services)), ttl_ms };
        tasks.spawn(async move {
            let result = client.register(request).await;
            drop(permit);
            result.map(|_| ()).map_err(|e| format!("ep-{i}: {e}"))
        });
        // Reap as we go so that the set stays small.
        while let Some(done) = tasks.try_join_next() {
            count(&mut report, done?);
        }
    }
    while let Some(done) = tasks.join_next().await {
        count(&mut report, done?);
    }
    report.took_s = started.elapsed().as_secs_f64();
    if args.watch > 0 {
        let done = Instant::now();
        // Endpoint i joins service i mod services.
        let wanted =
            |j: usize| args.count / args.services + usize::from(j % args.services < args.count % args.services);
        if watchers.converge(wanted, Duration::from_secs(10)).await {
            report.watch_converged_ms = Some(done.elapsed().as_secs_f64() * 1e3);
        }
        report.watch_messages = watchers.messages();
    }
    Ok(report)
}

/// Open discovery streams and what each last received.
struct Watchers {
    /// Per stream: (its service's index, endpoints in its latest message).
    latest: Vec<(usize, tokio::sync::watch::Receiver<usize>)>,
    messages: Arc<std::sync::atomic::AtomicU64>,
}

impl Watchers {
    /// Opens `n` streams over `channel`, stream j watching service
    /// j mod `services`, and waits for each one's first message.
    async fn open(channel: &tonic::transport::Channel, n: usize, services: usize) -> anyhow::Result<Watchers> {
        let messages = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut latest = Vec::with_capacity(n);
        for j in 0..n {
            let service = j % services.max(1);
            let request = WatchRequest {
                target: format!("{}:80", service_vip(service)),
                proxy_id: format!("bench-watcher-{j}"),
                namespace: "default".to_owned(),
            };
            let mut stream = DiscoveryClient::new(channel.clone())
                .watch(request)
                .await
                .with_context(|| format!("opening discovery watch {j}"))?
                .into_inner();
            let first = tokio::time::timeout(Duration::from_secs(10), stream.message())
                .await
                .with_context(|| format!("discovery watch {j}: no snapshot within 10 s"))?
                .with_context(|| format!("discovery watch {j}"))?
                .with_context(|| format!("discovery watch {j} ended before its snapshot"))?;
            let (tx, rx) = tokio::sync::watch::channel(first.endpoints.len());
            let counter = messages.clone();
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tokio::spawn(async move {
                while let Ok(Some(set)) = stream.message().await {
                    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if tx.send(set.endpoints.len()).is_err() {
                        break;
                    }
                }
            });
            latest.push((service, rx));
        }
        Ok(Watchers { latest, messages })
    }

    /// Whether every stream reaches `wanted(service)` endpoints within `limit`.
    async fn converge(&self, wanted: impl Fn(usize) -> usize, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        for (service, rx) in &self.latest {
            let mut rx = rx.clone();
            let want = wanted(*service);
            if tokio::time::timeout_at(deadline, rx.wait_for(|&n| n == want)).await.is_err() {
                return false;
            }
        }
        true
    }

    fn messages(&self) -> u64 {
        self.messages.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_distinct_and_spread() {
        assert_eq!(address(0), "10.1.0.0");
        assert_eq!(address(9_999), "10.1.39.15");
        assert_eq!(address(70_000), "10.2.17.112");
        assert_eq!(service_of(250, 100), "svc-50");
        let w = workload(7, 100);
        assert_eq!((w.name.as_str(), w.labels["app"].as_str()), ("ep-7", "svc-7"));
    }
}
