//! The attempts of one outbound request: pick an endpoint, send over the
//! pool under the per-try timeout, feed the circuit breaker, and retry
//! while the policy, its budget and the body allow.
//!
//! A request that was never written (a connect failure) comes back from
//! the pool whole ([`SendError::unsent`]) and is retried as it is; after
//! it was written, only a buffered body can be sent again (a copy of the
//! head per attempt); that includes a peer proxy's answer that its app
//! never saw the request (`weft-unprocessed`, a connect failure for the
//! retry conditions).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;

use super::Outbound;
use super::endpoint::choose;
use super::error::OutboundError;
use crate::control::discovery::Resolution;
use crate::http::Version;
use crate::http::body::RequestBody;
use crate::http::client::SendError;
use crate::http::respond::{LocalAnswer as _, ProxyError};
use crate::metrics::EdgePeer;
use crate::policy::compiled::{CompiledPolicy, RouteRuntime};
use crate::policy::retry::{Decision, response_outcome};
use crate::trace::SpanHandle;

/// Where one request goes, decided before its first attempt: the policy
/// version it runs under, its route, and the backend it resolved to.
#[derive(Clone, Copy, Debug)]
pub struct Routed<'a> {
    pub outbound: &'a Outbound,
    pub version: Version,
    pub policy: &'a CompiledPolicy,
    pub rt: &'a RouteRuntime,
    pub upstream: &'a Resolution,
}

/// The attempts of one request: the first, then retries while the policy,
/// the budget and the body allow. A retry sends the request itself when it
/// never left (a connect failure), else a copy of the buffered original
/// (only `replayable` requests keep one: the head is copied per attempt).
pub async fn send_with_retries(
    to: &Routed<'_>,
    parts: http::request::Parts,
    body: Body,
    replayable: bool,
) -> Result<Response<Incoming>, OutboundError> {
    let metrics = &to.outbound.http.metrics;
    let rt = to.rt;
    let retry = &rt.retry;
    // The outbound server span, when this request is traced: each attempt
    // gets a client span under it.
    let span = parts.extensions.get::<Arc<SpanHandle>>().cloned();
    let span = span.as_ref();
    if retry.attempts == 0 {
        return attempt(to, None, Request::from_parts(parts, body.into()), span, 0).await.result;
    }
    rt.budget.deposit(std::time::Instant::now());
    let method = parts.method.clone();
    let (mut req, replay) = match body {
        Body::Buffered(bytes) if replayable => {
            let req = Request::from_parts(clone_head(&parts), RequestBody::buffered(bytes.clone()));
            (req, Some((parts, bytes)))
        }
        body => (Request::from_parts(parts, body.into()), None),
    };
    let body_len = replay.as_ref().map(|(_, bytes)| bytes.len() as u64);
    let mut avoid = None;
    let mut retries = 0u32;
    loop {
        let Attempt { result, addr, unsent, from_peer_proxy } = attempt(to, avoid, req, span, retries).await;
        let outcome = match &result {
            Ok(rsp) => response_outcome(rsp.status(), rsp.headers(), from_peer_proxy),
            Err(e) => e.retry_outcome(),
        };
        // What the retry would send: the request itself, or a copy.
        let (next, decision) = match (unsent, &replay) {
            (Some(unsent), _) => (Some(unsent), retry.decide(retries, &method, Some(0), &outcome)),
            (None, Some((parts, bytes))) => {
                let decision = retry.decide(retries, &method, body_len, &outcome);
                let copy = || Request::from_parts(clone_head(parts), RequestBody::buffered(bytes.clone()));
                (matches!(decision, Decision::Retry).then(copy), decision)
            }
            (None, None) => return result,
        };
        match (decision, next) {
            (Decision::Retry, Some(next)) if rt.budget.try_withdraw(std::time::Instant::now()) => {
                retries += 1;
                metrics.policy.retries.fetch_add(1, Relaxed);
                if let Some(span) = span {
                    span.set_int("weft.retry_count", i64::from(retries));
                }
                tracing::debug!(route = %rt.name, ?outcome, retry = retries, "retrying");
                avoid = addr;
                req = next;
                let delay = retry.backoff.delay(retries, fastrand::u32(..));
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
            }
            (Decision::Retry, Some(_)) => {
                metrics.policy.retry_budget_exhausted.fetch_add(1, Relaxed);
                return result;
            }
            _ => return result,
        }
    }
}

/// How one attempt went.
struct Attempt {
    result: Result<Response<Incoming>, OutboundError>,
    /// The endpoint it went to.
    addr: Option<std::net::SocketAddr>,
    /// The request, when it was never written.
    unsent: Option<Request<RequestBody>>,
    /// Sent over mTLS to a verified mesh identity: the answer's
    /// unprocessed mark is the peer proxy's.
    from_peer_proxy: bool,
}

/// One attempt: pick an endpoint, send, apply the per-try timeout, feed
/// the circuit breaker; traced as a client span of `span` when the request
/// is (`retry`: how many attempts came before).
async fn attempt(
    to: &Routed<'_>,
    avoid: Option<std::net::SocketAddr>,
    mut req: Request<RequestBody>,
    span: Option<&Arc<SpanHandle>>,
    retry: u32,
) -> Attempt {
    let Routed { outbound, version, policy, rt, upstream } = *to;
    let shared = &outbound.http;
    let (addr, pick) = match choose(outbound, upstream, policy, &rt.balance, req.headers(), avoid) {
        Ok(p) => p,
        Err(e) => return Attempt { result: Err(e), addr: None, unsent: Some(req), from_peer_proxy: false },
    };
    let tls = pick.as_ref().and_then(|p| shared.tls_target(&p.endpoint, false));
    let client_span = span.map(|s| s.attempt(req.headers_mut(), addr, retry));
    let peer_id = tls.as_ref().map(|t| t.expected.clone());
    let from_peer_proxy = tls.is_some();
    let send = shared.pool.try_send(addr, version, req, tls, rt.timeouts.connect);
    let sent = match rt.timeouts.per_try {
        Some(t) => match tokio::time::timeout(t, send).await {
            Ok(r) => r,
            Err(_) => {
                shared.metrics.policy.per_try_timeouts.fetch_add(1, Relaxed);
                Err(SendError { error: ProxyError::ResponseTimeout(t), unsent: None })
            }
        },
        None => send.await,
    };
    let (result, unsent): (Result<_, OutboundError>, _) = match sent {
        Ok(mut rsp) => {
            // Who answered, for the record layer (edges, tap); the peer's
            // name and the route are added by the stage.
            rsp.extensions_mut().insert(EdgePeer::upstream(peer_id.clone(), addr));
            (Ok(rsp), None)
        }
        Err(SendError { error, unsent }) => (Err(error.into()), unsent),
    };
    if let Some(client_span) = client_span {
        let peer = peer_id.as_ref().map(|id| id.as_str());
        match &result {
            Ok(rsp) => client_span.finish(Ok(rsp.status().as_u16()), peer),
            Err(e) => client_span.finish(Err((e.status().as_u16(), &e.to_string())), peer),
        }
    }
    if let Some(pick) = pick {
        if let (Some(cfg), Resolution::Service(target)) = (&policy.circuit, upstream) {
            let success = result.as_ref().is_ok_and(|r| !r.status().is_server_error());
            let others = if success { 0 } else { target.balancer.healthy_others(addr) };
            if pick.endpoint.record(cfg, success, others) {
                shared.metrics.policy.ejections.fetch_add(1, Relaxed);
                tracing::info!(endpoint = %addr, "circuit breaker ejected the endpoint");
            }
        }
        if result.is_ok() {
            pick.complete();
        }
    }
    Attempt { result, addr: Some(addr), unsent, from_peer_proxy }
}

/// A request body, as it will be sent.
pub enum Body {
    /// Read whole (small, of known length): can be sent again or copied.
    Buffered(Bytes),
    /// Streams from the client, once (teed when mirrored).
    Streaming(RequestBody),
}

impl From<Body> for RequestBody {
    fn from(body: Body) -> Self {
        match body {
            Body::Buffered(bytes) => RequestBody::buffered(bytes),
            Body::Streaming(body) => body,
        }
    }
}

/// A copy of a request head for another attempt (extensions are not
/// carried: nothing downstream of the proxy reads them).
pub fn clone_head(parts: &http::request::Parts) -> http::request::Parts {
    let mut req = Request::new(());
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    req.into_parts().0
}
