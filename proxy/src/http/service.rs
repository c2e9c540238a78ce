//! The per-request proxy service: hop-by-hop headers, upgrades, timeout,
//! forwarding over the pool, metrics, and error mapping.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, header};
use http_body_util::Either;
use hyper::body::Incoming;
use tokio::time::Instant;

use super::client::Pool;
use super::headers::{strip_hop_by_hop, wants_upgrade};
use super::respond::{ProxyError, error_response};
use super::{ResponseBody, Version, upgrade};
use crate::drain;
use crate::metrics::{Direction, Metrics};

/// What every request on every connection shares.
#[derive(Debug)]
pub struct Shared {
    pub pool: Pool,
    pub metrics: Arc<Metrics>,
    /// Upstream response-header deadline; `None` waits without limit.
    pub request_timeout: Option<Duration>,
    /// Idle timeout of upgraded (WebSocket, CONNECT) streams.
    pub tcp_idle_timeout: Duration,
}

/// Proxies the requests of one downstream connection to one upstream
/// address. Cloned per request by hyper; cloning is two `Arc` bumps.
#[derive(Clone, Debug)]
pub struct ProxyService {
    pub shared: Arc<Shared>,
    pub upstream: SocketAddr,
    pub version: Version,
    pub direction: Direction,
    pub drain: drain::Watch,
}

impl ProxyService {
    pub async fn call(self, req: Request<Incoming>) -> Result<Response<ResponseBody>, Infallible> {
        let start = Instant::now();
        let stats = self.shared.metrics.authority(self.direction, authority(&req));
        stats.request();

        let upgrade =
            self.version == Version::Http1 && (req.method() == Method::CONNECT || wants_upgrade(req.headers()));
        let result = if upgrade { upgrade::proxy(&self, req).await } else { self.forward(req).await };
        let rsp = match result {
            Ok(rsp) => rsp.map(Either::Left),
            Err(e) => {
                tracing::info!(direction = self.direction.as_str(), upstream = %self.upstream, error = %e, "request failed");
                error_response(&e)
            }
        };
        let status = rsp.status().as_u16();
        stats.response(status);
        self.shared.metrics.record_latency(self.direction, status, start.elapsed());
        Ok(rsp)
    }

    async fn forward(&self, mut req: Request<Incoming>) -> Result<Response<Incoming>, ProxyError> {
        strip_hop_by_hop(req.headers_mut(), false);
        let send = self.shared.pool.send(self.upstream, self.version, req);
        let mut rsp = match self.shared.request_timeout {
            Some(t) => tokio::time::timeout(t, send).await.map_err(|_| ProxyError::ResponseTimeout(t))??,
            None => send.await?,
        };
        strip_hop_by_hop(rsp.headers_mut(), false);
        Ok(rsp)
    }
}

/// The request's authority for metrics: the URI's (HTTP/2, absolute-form)
/// or the Host header's, else "other".
fn authority(req: &Request<Incoming>) -> &str {
    if let Some(a) = req.uri().authority() {
        return a.as_str();
    }
    req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or(crate::metrics::OTHER_AUTHORITY)
}
