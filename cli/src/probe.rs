//! Small HTTP GETs to the admin endpoints of the control plane and of the
//! proxies (`/ready`, `/metrics`), made from inside the pod's network
//! namespace when there is one: those endpoints listen on the pod's
//! loopback, which is exactly where an operator's `curl` would run.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;

use crate::netns::connect_in;

/// Why a GET failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot connect to {addr}{}: {source}", in_netns(.netns))]
    Connect { addr: SocketAddr, netns: Option<String>, source: std::io::Error },
    #[error("GET http://{addr}{path}: {source}")]
    Http { addr: SocketAddr, path: String, source: hyper::Error },
    #[error("GET http://{addr}{path}: no answer within {timeout:?}")]
    Timeout { addr: SocketAddr, path: String, timeout: Duration },
}

fn in_netns(netns: &Option<String>) -> String {
    netns.as_ref().map(|n| format!(" in network namespace {n}")).unwrap_or_default()
}

/// `GET http://addr/path` from `netns` (or from here): status and body.
pub async fn get(
    netns: Option<&str>,
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<(StatusCode, String), ProbeError> {
    let exchange = async {
        let stream = connect_in(netns, addr, timeout).await.map_err(|source| ProbeError::Connect {
            addr,
            netns: netns.map(str::to_owned),
            source,
        })?;
        let http = |source| ProbeError::Http { addr, path: path.to_owned(), source };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(http)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let request = Request::get(path)
            .header(header::HOST, addr.to_string())
            .body(Empty::<Bytes>::new())
            .expect("a path and a host make a valid request");
        let response = sender.send_request(request).await.map_err(http)?;
        let status = response.status();
        let body = response.into_body().collect().await.map_err(http)?.to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or_else(|_| Err(ProbeError::Timeout { addr, path: path.to_owned(), timeout }))
}

/// The parsed `/metrics` of `pod`'s proxy (at `addr`, inside `netns` when
/// there is one); `None`, with a warning, when the scrape fails: a report
/// goes on without one pod rather than fail.
pub async fn proxy_metrics(
    pod: &str,
    netns: Option<&str>,
    addr: SocketAddr,
    timeout: Duration,
) -> Option<Vec<crate::metrics::Sample>> {
    match get(netns, addr, "/metrics", timeout).await {
        Ok((status, body)) if status.is_success() => Some(crate::metrics::parse(&body)),
        Ok((status, _)) => {
            tracing::warn!("{pod}'s proxy answered {status} to /metrics");
            None
        }
        Err(e) => {
            tracing::warn!("cannot read {pod}'s proxy metrics: {e}");
            None
        }
    }
}

/// The outbound policy versions `pod`'s proxy runs for Service `service`
/// (`name.namespace`) on `port`, one per target that resolves to it (its
/// virtual IP, its names); `None` when `/config` cannot be read.
pub async fn policy_versions(
    netns: Option<&str>,
    addr: SocketAddr,
    service: &str,
    port: u16,
    timeout: Duration,
) -> Option<Vec<u64>> {
    match get(netns, addr, "/config", timeout).await {
        Ok((status, body)) if status.is_success() => Some(versions_in_config(&body, service, port)),
        _ => None,
    }
}

/// [`policy_versions`] from a `/config` document.
pub fn versions_in_config(config: &str, service: &str, port: u16) -> Vec<u64> {
    let Ok(config) = serde_json::from_str::<serde_json::Value>(config) else { return Vec::new() };
    let suffix = format!(":{port}");
    let targets = config["discovery"]["targets"].as_array().cloned().unwrap_or_default();
    targets
        .iter()
        .filter(|t| t["service"] == service && t["target"].as_str().is_some_and(|s| s.ends_with(&suffix)))
        .filter_map(|t| t["policy_version"].as_u64())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    #[tokio::test]
    async fn gets_status_and_body() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).await.unwrap();
            assert!(buf[..n].starts_with(b"GET /ready HTTP/1.1\r\n"));
            s.write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 9\r\n\r\ndraining\n").await.unwrap();
        });
        let (status, body) = get(None, addr, "/ready", Duration::from_secs(2)).await.unwrap();
        assert_eq!((status, body.as_str()), (StatusCode::SERVICE_UNAVAILABLE, "draining\n"));

        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        let err = get(None, closed, "/ready", Duration::from_secs(2)).await.unwrap_err();
        assert!(matches!(err, ProbeError::Connect { .. }), "{err}");
    }
}
