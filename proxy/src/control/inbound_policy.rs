//! The inbound policy of each of this workload's ports, streamed from
//! `Policy.WatchInbound` (one stream per port, opened on first use).
//!
//! A port whose policy has not arrived within the discovery timeout (the
//! control plane is down, say) is served under the mesh default, allow-all
//! and permissive, which is also what the control plane answers for a port
//! with no AccessPolicy; the last policy received stays in force while the
//! control plane is away.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use weft_api::policy::policy_client::PolicyClient;
use weft_api::policy::{InboundPolicy, InboundRequest};

use super::ControlPlane;
use super::backoff::Backoff;

#[derive(Debug)]
pub struct InboundPolicies {
    control: ControlPlane,
    /// "name.namespace" of this workload.
    workload: String,
    timeout: Duration,
    ports: Mutex<HashMap<u16, watch::Receiver<Option<Arc<InboundPolicy>>>>>,
}

impl InboundPolicies {
    pub fn new(control: ControlPlane, workload: String, timeout: Duration) -> Self {
        Self { control, workload, timeout, ports: Mutex::default() }
    }

    /// The policy for `port`; `None` when none arrived in time.
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
