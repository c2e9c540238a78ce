//! `weft-bench cp-register`: registers endpoints with the control plane
//! (`Registry.Register`, as a proxy registers its workload), spread over
//! services, and exits; the leases outlive it (up to their TTL, 5 minutes
//! at most), which is when the control plane's RSS is read. One JSON
//! [`RegisterReport`] on stdout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
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
}

/// The label value of endpoint `i`'s service.
pub fn service_of(i: usize, services: usize) -> String {
    format!("svc-{}", i % services.max(1))
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
    let client = RegistryClient::new(channel);
    let permits = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let ttl_ms = u64::try_from(args.ttl.as_millis()).unwrap_or(u64::MAX);
    let started = Instant::now();
    let mut report = RegisterReport { registered: 0, failed: 0, first_error: None, took_s: 0.0, progress: Vec::new() };
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
    Ok(report)
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
