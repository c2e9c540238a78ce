//! The inbound policy of each of this workload's ports, streamed from
//! `Policy.WatchInbound` (one stream per port, opened on first use).
//!
//! A port whose policy has not arrived (the control plane is down, say) is
//! decided under the proxy's configured default (`--default-inbound-policy`,
//! which `weft up` sets to the mesh's default access) until it does; the
//! last policy received stays in force while the control plane is away.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use weft_api::policy::inbound_policy::{DefaultAccess, MtlsMode};
use weft_api::policy::policy_client::PolicyClient;
use weft_api::policy::{InboundPolicy, InboundRequest, RateLimit};

use crate::policy::rate_limit::{PortRateLimit, RetryAfter};
use crate::policy::route::RouteTable;

use super::ControlPlane;
use super::backoff::Backoff;

#[derive(Debug)]
pub struct InboundPolicies {
    control: ControlPlane,
    /// "name.namespace" of this workload.
    workload: String,
    timeout: Duration,
    /// Decides while a port's policy is unknown (version 0, no rules).
    fallback: Arc<InboundPolicy>,
    ports: Mutex<HashMap<u16, watch::Receiver<Option<Arc<InboundPolicy>>>>>,
    /// Each port's rate limiter with the settings it was made from: kept
    /// across policy versions that leave the limit as it was, so that an
    /// unrelated policy change does not refill the bucket.
    limiters: Mutex<HashMap<u16, (RateLimit, Arc<PortRateLimit<String>>)>>,
    /// Each port's route table (for route-scoped authorizations), compiled
    /// once per policy version.
    routes: Mutex<HashMap<u16, (u64, Arc<RouteTable>)>>,
}

impl InboundPolicies {
    pub fn new(control: ControlPlane, workload: String, timeout: Duration, default: DefaultAccess) -> Self {
        let fallback = InboundPolicy {
            default_access: default as i32,
            mtls_mode: MtlsMode::Permissive as i32,
            ..Default::default()
        };
        Self {
            control,
            workload,
            timeout,
            fallback: Arc::new(fallback),
            ports: Mutex::default(),
            limiters: Mutex::default(),
            routes: Mutex::default(),
        }
    }

    /// The compiled routes of `policy` (the one in force for `port`).
    pub fn route_table(&self, port: u16, policy: &InboundPolicy) -> Arc<RouteTable> {
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((version, table)) = routes.get(&port)
            && *version == policy.version
        {
            return table.clone();
        }
        let (table, errors) = RouteTable::compile(policy.routes.clone());
        for e in errors {
            tracing::warn!(port, error = %e, "inbound route skipped");
        }
        let table = Arc::new(table);
        routes.insert(port, (policy.version, table.clone()));
        table
    }

    /// Takes a token from `port`'s rate limit (`client`'s own bucket when
    /// the limit is per identity). `Ok` when the port has no limit.
    pub fn rate_limit(&self, port: u16, client: Option<&str>) -> Result<(), RetryAfter> {
        let Some(policy) = self.current(port) else { return Ok(()) };
        let Some(limit) = policy.rate_limit.as_ref().filter(|l| l.requests_per_second > 0) else { return Ok(()) };
        let limiter = {
            let mut limiters = self.limiters.lock().unwrap_or_else(|p| p.into_inner());
            match limiters.get(&port) {
                Some((settings, limiter)) if settings == limit => limiter.clone(),
                _ => {
                    let Some(limiter) = PortRateLimit::from_api(limit, std::time::Instant::now()) else {
                        return Ok(());
                    };
                    let limiter = Arc::new(limiter);
                    limiters.insert(port, (*limit, limiter.clone()));
                    limiter
                }
            }
        };
        let key = if limit.per_identity { client.unwrap_or("unauthenticated").to_owned() } else { String::new() };
        limiter.try_acquire(&key, std::time::Instant::now())
    }

    /// The policy that decides while a port's own is unknown.
    pub fn fallback(&self) -> &Arc<InboundPolicy> {
        &self.fallback
    }

    /// The policy for `port`, waiting (up to the discovery timeout) for the
    /// first one; `None` when none arrived in time.
    pub async fn get(&self, port: u16) -> Option<Arc<InboundPolicy>> {
        let mut rx = {
            let mut ports = self.ports.lock().unwrap_or_else(|p| p.into_inner());
            ports
                .entry(port)
                .or_insert_with(|| {
                    let (tx, rx) = watch::channel(None);
                    tokio::spawn(watch_port(self.control.clone(), self.workload.clone(), port, tx));
                    rx
                })
                .clone()
        };
        match tokio::time::timeout(self.timeout, rx.wait_for(Option::is_some)).await {
            Ok(Ok(policy)) => policy.clone(),
            _ => None,
        }
    }

    /// The policy currently in force for `port`, without waiting.
    pub fn current(&self, port: u16) -> Option<Arc<InboundPolicy>> {
        let ports = self.ports.lock().unwrap_or_else(|p| p.into_inner());
        ports.get(&port).and_then(|rx| rx.borrow().clone())
    }

    /// Policy versions per port, for `/config`.
    pub fn describe(&self) -> serde_json::Value {
        let ports = self.ports.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<_> = ports
            .iter()
            .map(|(port, rx)| {
                let p = rx.borrow().clone();
                serde_json::json!({
                    "port": port,
                    "version": p.as_ref().map(|p| p.version),
                    "authorizations": p.as_ref().map(|p| p.authorizations.iter().map(|a| a.name.clone()).collect::<Vec<_>>()),
                    "mtls_mode": p.as_ref().map(|p| p.mtls_mode().as_str_name()),
                    "default_access": p.as_ref().map(|p| p.default_access().as_str_name()),
                })
            })
            .collect();
        out.sort_by_key(|v| v["port"].as_u64());
        serde_json::Value::Array(out)
    }
}

async fn watch_port(control: ControlPlane, workload: String, port: u16, tx: watch::Sender<Option<Arc<InboundPolicy>>>) {
    let mut backoff = Backoff::default();
    loop {
        let stream = async {
            let mut client = PolicyClient::new(control.channel.clone());
            let request = InboundRequest {
                workload: workload.clone(),
                port: u32::from(port),
                proxy_id: control.proxy_id.clone(),
            };
            let mut stream = client.watch_inbound(request).await?.into_inner();
            while let Some(policy) = stream.message().await? {
                backoff.reset();
                tracing::debug!(port, version = policy.version, "inbound policy update");
                tx.send_replace(Some(Arc::new(policy)));
            }
            Ok::<_, tonic::Status>(())
        };
        tokio::select! {
            _ = tx.closed() => return,
            res = stream => if let Err(e) = res {
                tracing::debug!(port, error = %e, "inbound policy stream ended; keeping the last policy");
            },
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}
