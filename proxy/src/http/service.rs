//! The per-request proxy service: hop-by-hop headers, upgrades, timeout,
//! forwarding over the pool, metrics, and error mapping.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Request, Response, header};
use http_body_util::Either;
use hyper::body::Incoming;
use tokio::time::Instant;

use super::client::Pool;
use super::headers::strip_hop_by_hop;
use super::respond::{ProxyError, error_response};
use super::upgrade::Upgrade;
use super::{ResponseBody, Version};
use crate::authz::Decision;
use crate::balance::{Endpoint, Pick, PickOptions};
use crate::control::discovery::{Resolution, Resolver};
use crate::drain;
use crate::identity::IdentityHandle;
use crate::inbound::ConnAuthz;
use crate::metrics::{Direction, Metrics};
use crate::policy::compiled::Balance;
use crate::policy::compiled::CompiledPolicy;
use crate::transport::tls::TlsTarget;

/// What every request on every connection shares.
#[derive(Debug)]
pub struct Shared {
    pub pool: Pool,
    pub metrics: Arc<Metrics>,
    /// Upstream response-header deadline; `None` waits without limit.
    pub request_timeout: Option<Duration>,
    /// Idle timeout of upgraded (WebSocket, CONNECT) streams.
    pub tcp_idle_timeout: Duration,
    /// The proxy's mesh identity; `None` runs without mTLS.
    pub identity: Option<IdentityHandle>,
    /// The outbound listener's address: never a destination (see [`Shared::pick`]).
    pub outbound_listener: SocketAddr,
    /// Resolves route backends other than the destination itself.
    pub resolver: Arc<Resolver>,
    /// The policy of destinations without one (no control plane, unknown
    /// to the mesh): the proxy's safe defaults.
    pub fallback_policy: Arc<CompiledPolicy>,
    /// Bounds the RequestMirror copies in flight.
    pub mirrors: Arc<tokio::sync::Semaphore>,
    /// How long a mesh service's first request waits for its policy.
    pub policy_timeout: Duration,
}

impl Shared {
    /// The policy a request (or connection) to `upstream` runs under: the
    /// service's, waited for up to the policy timeout (a mesh service is
    /// never routed without it), or the proxy's defaults for destinations
    /// outside the mesh.
    pub async fn policy_for(&self, upstream: &Resolution) -> Result<Arc<CompiledPolicy>, ProxyError> {
        match upstream {
            Resolution::Service(target) => target
                .policy_within(self.policy_timeout)
                .await
                .ok_or(ProxyError::PolicyUnavailable(self.policy_timeout)),
            Resolution::Forward(_) => Ok(self.fallback_policy.clone()),
        }
    }

    /// Mesh TLS parameters for a meshed endpoint, when this proxy has an
    /// identity; `None` means plaintext (documented: unmeshed destinations).
    pub fn tls_target(&self, endpoint: &Endpoint, opaque: bool) -> Option<TlsTarget> {
        let expected = endpoint.spiffe.clone()?;
        let configs = self.identity.as_ref()?.configs()?;
        let config = if opaque { configs.client_opaque.clone() } else { configs.client_http.clone() };
        Some(TlsTarget { config, expected })
    }

    /// The one way every protocol (HTTP requests, upgrades, opaque
    /// connections, tunnels, mirror copies) picks an endpoint: the fixed
    /// destination, or the service's balancer under `policy` (its kind,
    /// the circuit breaker's ejections, `avoid`: the endpoint the last
    /// attempt failed on). Refuses this proxy's own outbound listener: an
    /// explicit proxy request for it (or a service endpoint registered
    /// there) would otherwise have the proxy connect to itself, recursively.
    pub fn choose(
        &self,
        upstream: &Resolution,
        policy: &CompiledPolicy,
        balance: &Balance,
        headers: &HeaderMap,
        avoid: Option<SocketAddr>,
    ) -> Result<(SocketAddr, Option<Pick>), ProxyError> {
        let picked = match upstream {
            Resolution::Forward(addr) => Some((*addr, None)),
            Resolution::Service(target) => {
                let options = PickOptions { balance, headers, circuit: policy.circuit.as_ref(), avoid };
                target.balancer.pick_with(&options).map(|p| (p.addr(), Some(p)))
            }
        };
        let (addr, pick) = picked.ok_or(ProxyError::NoEndpoints)?;
        if is_listener(self.outbound_listener, addr) {
            return Err(ProxyError::Loop(addr));
        }
        Ok((addr, pick))
    }
}

/// Whether connecting to `addr` reaches `listener` (bound to it, or to the
/// unspecified address on its port, which loopback and local addresses reach).
fn is_listener(listener: SocketAddr, addr: SocketAddr) -> bool {
    let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
    let (listener, addr) = (canonical(listener), canonical(addr));
    if listener.port() != addr.port() {
        return false;
    }
    listener.ip() == addr.ip()
        || (listener.ip().is_unspecified() && (addr.ip().is_loopback() || addr.ip().is_unspecified()))
}

/// Proxies the requests of one downstream connection to its resolved
/// destination, choosing an endpoint per request. Cloned per request by
/// hyper; cloning is a few `Arc` bumps.
#[derive(Clone, Debug)]
pub struct ProxyService {
    pub shared: Arc<Shared>,
    pub upstream: Resolution,
    pub version: Version,
    pub direction: Direction,
    pub drain: drain::Watch,
    /// Inbound only: the client's verified mesh identity, sent to the app
    /// as `weft-client-id` (any such header from the client is dropped).
    pub client_id: Option<HeaderValue>,
    /// Inbound only: authorization, decided under the current policy.
    pub authz: Option<Arc<ConnAuthz>>,
}

/// The header that tells the app who called it.
pub const CLIENT_ID_HEADER: HeaderName = HeaderName::from_static("weft-client-id");

impl ProxyService {
    pub async fn call(self, mut req: Request<Incoming>) -> Result<Response<ResponseBody>, Infallible> {
        if let Some(authz) = self.authz.as_ref().map(|a| a.decide_request(req.method(), req.uri(), req.headers())) {
            authz.count();
            if !authz.decision.allowed {
                let stats = self.shared.metrics.authority(self.direction, authority(&req));
                stats.request();
                stats.response(403);
                return Ok(forbidden(&authz.decision));
            }
        }
        if let Some(Err(wait)) = self.authz.as_ref().map(|a| a.rate_limit()) {
            self.shared.metrics.policy.rate_limited.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let stats = self.shared.metrics.authority(self.direction, authority(&req));
            stats.request();
            stats.response(429);
            return Ok(too_many_requests(wait.secs_ceil()));
        }
        if self.direction == Direction::Inbound {
            // Only the TLS handshake may say who the client is.
            req.headers_mut().remove(&CLIENT_ID_HEADER);
            if let Some(id) = &self.client_id {
                req.headers_mut().insert(CLIENT_ID_HEADER, id.clone());
            }
        }
        let start = Instant::now();
        let stats = self.shared.metrics.authority(self.direction, authority(&req));
        stats.request();

        let result = if self.direction == Direction::Outbound {
            super::outbound::forward(&self, req).await
        } else {
            self.forward(req).await.map(|r| r.map(|b| super::streamed(b, None)))
        };
        let rsp = match result {
            Ok(rsp) => rsp,
            Err(e) => {
                tracing::info!(direction = self.direction.as_str(), upstream = ?self.upstream, error = %e, "request failed");
                error_response(&e)
            }
        };
        let status = rsp.status().as_u16();
        stats.response(status);
        self.shared.metrics.record_latency(self.direction, status, start.elapsed());
        Ok(rsp)
    }

    /// Inbound: straight to the app, under the proxy's request timeout (an
    /// upgrade on a connection of its own).
    async fn forward(&self, mut req: Request<Incoming>) -> Result<Response<Incoming>, ProxyError> {
        let upgrade = Upgrade::take(&mut req, self.version);
        strip_hop_by_hop(req.headers_mut(), upgrade.as_ref().is_some_and(Upgrade::keeps_headers));
        let policy = &self.shared.fallback_policy;
        let (addr, pick) = self.shared.choose(&self.upstream, policy, &policy.default.balance, req.headers(), None)?;
        let tls = pick.as_ref().and_then(|p| self.shared.tls_target(&p.endpoint, false));
        if let Some(upgrade) = upgrade {
            let req = req.map(super::RequestBody::from);
            return upgrade.proxy(&self.shared, self.drain.clone(), req, addr, pick, tls).await;
        }
        let send = self.shared.pool.send(addr, self.version, req.map(super::RequestBody::from), tls);
        let mut rsp = match self.shared.request_timeout {
            Some(t) => tokio::time::timeout(t, send).await.map_err(|_| ProxyError::ResponseTimeout(t))??,
            None => send.await?,
        };
        if let Some(pick) = pick {
            pick.complete();
        }
        strip_hop_by_hop(rsp.headers_mut(), false);
        Ok(rsp)
    }
}

/// 403 with a one-line reason; the app never sees the request.
fn forbidden(d: &Decision) -> Response<ResponseBody> {
    let body = format!("forbidden: {} (policy {})\n", d.reason, d.policy);
    let mut rsp = Response::new(Either::Right(http_body_util::Full::new(bytes::Bytes::from(body))));
    *rsp.status_mut() = http::StatusCode::FORBIDDEN;
    rsp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    rsp
}

/// 429 with `Retry-After` in whole seconds; the app never sees the request.
fn too_many_requests(retry_after_secs: u64) -> Response<ResponseBody> {
    let body = "too many requests: this port's rate limit is exhausted\n";
    let mut rsp = Response::new(Either::Right(http_body_util::Full::new(bytes::Bytes::from_static(body.as_bytes()))));
    *rsp.status_mut() = http::StatusCode::TOO_MANY_REQUESTS;
    rsp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    rsp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
    rsp
}

/// The request's authority for metrics: the URI's (HTTP/2, absolute-form)
/// or the Host header's, else "other".
fn authority(req: &Request<Incoming>) -> &str {
    if let Some(a) = req.uri().authority() {
        return a.as_str();
    }
    req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or(crate::metrics::OTHER_AUTHORITY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_own_listener_is_never_a_destination() {
        let cases = [
            ("127.9.1.2:4140", "127.9.1.2:4140", true),
            ("127.9.1.2:4140", "127.9.1.3:4140", false),
            ("127.9.1.2:4140", "127.9.1.2:8080", false),
            ("127.0.0.1:4140", "[::ffff:127.0.0.1]:4140", true),
            ("0.0.0.0:4140", "127.0.0.1:4140", true),
            ("0.0.0.0:4140", "198.18.1.2:4140", false),
            ("[::]:4140", "[::1]:4140", true),
        ];
        for (listener, addr, want) in cases {
            let got = is_listener(listener.parse().expect("addr"), addr.parse().expect("addr"));
            assert_eq!(got, want, "{addr} via {listener}");
        }
    }
}
