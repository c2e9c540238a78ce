//! Registering this proxy's workload with the control plane (universal
//! mode) and keeping its lease alive.
//!
//! The workload is registered once one of its ports accepts connections (a
//! readiness probe: no traffic is sent to an app that is not listening
//! yet), probed where peers will reach it: see [`probe_ip`]. Heartbeats renew the lease every third of its TTL; a
//! `NOT_FOUND` (lease lapsed, or the control plane restarted and forgot it)
//! registers again. On shutdown the proxy deregisters first, so peers stop
//! choosing it before it drains.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::Code;
use weft_api::registry::registry_client::RegistryClient;
use weft_api::registry::{HeartbeatRequest, Lease, RegisterRequest, Workload};

use super::ControlPlane;
use super::backoff::Backoff;

/// The workload this proxy runs beside, as configured by flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadConfig {
    pub name: String,
    pub service_account: String,
    pub labels: BTreeMap<String, String>,
    pub address: IpAddr,
    pub ports: Vec<u16>,
}

/// The current lease, shared with `/config` and shutdown.
#[derive(Debug, Default)]
pub struct Registration {
    lease: Mutex<Option<Lease>>,
}

impl Registration {
    pub fn lease_id(&self) -> Option<String> {
        self.lease.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(|l| l.id.clone())
    }

    fn set(&self, lease: Option<Lease>) {
        *self.lease.lock().unwrap_or_else(|p| p.into_inner()) = lease;
    }
}

/// Registers and heartbeats until the task is dropped.
pub async fn run(control: ControlPlane, workload: WorkloadConfig, registration: Arc<Registration>) {
    wait_until_listening(probe_ip(workload.address), &workload.ports).await;
    let mut client = RegistryClient::new(control.channel.clone());
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        let request = RegisterRequest {
            workload: Some(Workload {
                name: workload.name.clone(),
                namespace: control.namespace.clone(),
                service_account: workload.service_account.clone(),
                labels: workload.labels.clone().into_iter().collect(),
                address: workload.address.to_string(),
                ports: workload.ports.iter().map(|p| u32::from(*p)).collect(),
                meshed: true,
                ready: true,
                zone: String::new(),
            }),
            ttl_ms: 0,
        };
        let lease = match client.register(request).await {
            Ok(rsp) => rsp.into_inner(),
            Err(e) => {
                tracing::warn!(control_plane = %control.url, error = %e, "registration failed; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        tracing::info!(lease = %lease.id, ttl_ms = lease.ttl_ms, "workload registered");
        backoff.reset();
        let period = Duration::from_millis(lease.ttl_ms.max(300) / 3);
        let id = lease.id.clone();
        registration.set(Some(lease));
        // Heartbeat until the lease is lost.
        loop {
            tokio::time::sleep(period).await;
            match client.heartbeat(HeartbeatRequest { lease_id: id.clone(), ready: true }).await {
                Ok(rsp) => registration.set(Some(rsp.into_inner())),
                Err(e) if e.code() == Code::NotFound => {
                    tracing::warn!(lease = %id, "lease lost; registering again");
                    registration.set(None);
                    break;
                }
                // A transient failure: the lease outlives a few missed beats.
                Err(e) => tracing::debug!(error = %e, "heartbeat failed"),
            }
        }
    }
}

/// Deregisters at shutdown; best effort, bounded by `timeout`. Returns
/// whether a lease was given up (so the caller can let that news spread).
pub async fn deregister(control: &ControlPlane, registration: &Registration, timeout: Duration) -> bool {
    let Some(id) = registration.lease_id() else { return false };
    let mut client = RegistryClient::new(control.channel.clone());
    let call = client.deregister(HeartbeatRequest { lease_id: id.clone(), ready: false });
    let done = match tokio::time::timeout(timeout, call).await {
        Ok(Ok(_)) => {
            tracing::info!(lease = %id, "deregistered");
            true
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "deregistration failed; the lease will lapse");
            false
        }
        Err(_) => {
            tracing::warn!("deregistration timed out; the lease will lapse");
            false
        }
    };
    registration.set(None);
    done
}

/// Where the app's ports are probed. A pod with its own network namespace
/// (Kubernetes, `weft up` as root) has the inbound proxy forward to the app
/// on 127.0.0.1, so that is where the app must listen. A workload whose
/// address is itself a loopback address (the local mesh's loopback mode:
/// every pod on its own 127.N.x.y of one shared namespace) is reached by
/// peers straight at that address, and its app listens only there.
fn probe_ip(address: IpAddr) -> IpAddr {
    if address.is_loopback() { address } else { IpAddr::V4(Ipv4Addr::LOCALHOST) }
}

/// Polls until one of `ports` accepts a connection on `ip`.
async fn wait_until_listening(ip: IpAddr, ports: &[u16]) {
    if ports.is_empty() {
        return;
    }
    let mut logged = false;
    loop {
        for port in ports {
            let addr = SocketAddr::new(ip, *port);
            if let Ok(Ok(_)) =
                tokio::time::timeout(Duration::from_millis(200), tokio::net::TcpStream::connect(addr)).await
            {
                return;
            }
        }
        if !logged {
            tracing::info!(%ip, ?ports, "waiting for the workload to listen before registering it");
            logged = true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_where_peers_reach_the_app() {
        let cases = [
            ("198.18.1.2", "127.0.0.1"),
            ("10.0.0.7", "127.0.0.1"),
            ("127.0.0.1", "127.0.0.1"),
            ("127.42.1.3", "127.42.1.3"),
            ("::1", "::1"),
            ("fd00::7", "127.0.0.1"),
        ];
        for (address, want) in cases {
            let got = probe_ip(address.parse().expect("ip"));
            assert_eq!(got, want.parse::<IpAddr>().expect("ip"), "{address}");
        }
    }

    #[tokio::test]
    async fn waits_for_the_app_on_its_own_loopback_address() {
        // Listening on 127.0.0.1 only must not satisfy a probe of 127.x.y.z.
        let decoy = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = decoy.local_addr().expect("addr").port();
        let own: IpAddr = "127.77.1.9".parse().expect("ip");
        let probe = tokio::spawn(async move { wait_until_listening(own, &[port]).await });
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(!probe.is_finished(), "registered while the app listened elsewhere");
        let _app = tokio::net::TcpListener::bind((own, port)).await.expect("bind 127.77.1.9");
        tokio::time::timeout(Duration::from_secs(5), probe).await.expect("probe sees the app").expect("task");
    }
}
