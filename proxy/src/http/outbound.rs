//! The outbound traffic policy, applied to one request:
//!
//! ```text
//! policy (the service's, waited for on a first request; 503 if it never comes)
//! ─► route (404 when none matches) ─► filters (redirect answers here; headers, rewrite)
//!   ─► fault (delay / abort) ─► backend by weight ─► upgrade? dedicated connection to the chosen endpoint
//!   ─► request timeout
//!     ─► attempt: balancer (kind, circuit breaker, avoid the last failure) ─► endpoint, per-try timeout
//!        └─ retryable outcome, budget allows, body replayable ─► backoff ─► next attempt
//! ```
//!
//! The request takes the compiled policy current when it starts
//! (`Arc<CompiledPolicy>`) and keeps it to the end: a policy change never
//! alters a request in flight. Without a policy (no control plane, or a
//! destination the mesh does not know) the proxy's own safe defaults
//! apply: budgeted retries on connect failure and the proxy's request
//! timeout.
//!
//! A request that was never written (a connect failure) comes back from
//! the pool whole and is retried as it is. Retries after it was written
//! replay only bodies of known length up to the policy's limit (64 KiB by
//! default), buffered before the first attempt with a copy of the head;
//! anything else streams once. A policy that retries only on connect
//! failures (the default) buffers and copies nothing.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::{BodyExt as _, Either, Full, Limited};
use hyper::body::Incoming;

use super::ResponseBody;
use super::body::RequestBody;
use super::client::SendError;
use super::headers::strip_hop_by_hop;
use super::respond::ProxyError;
use super::service::ProxyService;
use super::upgrade::Upgrade;
use crate::control::discovery::Resolution;
use crate::policy::compiled::{BackendRef, CompiledPolicy, RouteRuntime};
use crate::policy::retry::{Decision, Outcome, grpc_status};

/// Sends `req` under the outbound policy of the service it resolved to.
pub(super) async fn forward(
    svc: &ProxyService,
    mut req: Request<Incoming>,
) -> Result<Response<ResponseBody>, ProxyError> {
    let shared = &svc.shared;
    let policy: Arc<CompiledPolicy> = shared.policy_for(&svc.upstream).await?;
    let upgrade = Upgrade::take(&mut req, svc.version);
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers, upgrade.as_ref().is_some_and(Upgrade::keeps_headers));

    let (rt, prefix): (&RouteRuntime, Option<&str>) = if policy.routes.is_empty() {
        (&policy.default, None)
    } else {
        match policy.routes.find_parts(&parts) {
            Some(m) => match policy.route_runtime.get(m.index) {
                Some(rt) => (rt, m.path_prefix),
                None => (&policy.default, None),
            },
            None => {
                shared.metrics.policy.no_route.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return Ok(local(StatusCode::NOT_FOUND, "no route of this service matches the request\n"));
            }
        }
    };

    // Filters: a redirect answers the client itself.
    if let Some(redirect) = &rt.filters.redirect {
        let host = parts.headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let location = redirect.location(&parts.uri, host, prefix);
        let mut rsp = local(redirect.status, "");
        if let Ok(v) = HeaderValue::from_str(&location) {
            rsp.headers_mut().insert(header::LOCATION, v);
        }
        return Ok(rsp);
    }
    if let Some(m) = &rt.filters.request_headers {
        m.apply(&mut parts.headers);
    }
    if let Some(rewrite) = &rt.filters.rewrite {
        rewrite.apply(&mut parts.uri, &mut parts.headers, prefix);
    }

    if let Some(fault) = &rt.fault {
        let decision = fault.decide(fastrand::u32(..), fastrand::u32(..));
        if let Some(delay) = decision.delay {
            shared.metrics.policy.faults_delayed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tokio::time::sleep(delay).await;
        }
        if let Some(status) = decision.abort {
            shared.metrics.policy.faults_aborted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Ok(local(status, "fault injected by the mesh's traffic policy\n"));
        }
    }

    // Gateway API: a route whose backends all weigh 0 answers 500.
    let Some(chosen) = rt.split.pick(fastrand::u32(..)) else {
        return Ok(local(StatusCode::INTERNAL_SERVER_ERROR, "every backend of the matched route has weight 0\n"));
    };
    let backend = rt.backends.get(chosen);
    let upstream = match backend {
        Some(b) if !b.is_parent => resolve_backend(svc, b).await?,
        _ => svc.upstream.clone(),
    };
    if let Some(b) = backend {
        if let Some(m) = &b.filters.request_headers {
            m.apply(&mut parts.headers);
        }
        if let Some(rewrite) = &b.filters.rewrite {
            rewrite.apply(&mut parts.uri, &mut parts.headers, prefix);
        }
    }

    // An upgrade is routed like any request; only its transport differs (a
    // connection of its own, no retries: its body is the stream itself).
    if let Some(upgrade) = upgrade {
        let (addr, pick) = shared.choose(&upstream, &policy, &rt.balance, &parts.headers, None)?;
        let tls = pick.as_ref().and_then(|p| shared.tls_target(&p.endpoint, false));
        let req = Request::from_parts(parts, RequestBody::from(body));
        let rsp = upgrade.proxy(shared, svc.drain.clone(), req, addr, pick, tls).await?;
        return Ok(rsp.map(|b| super::streamed(b, None)));
    }

    // Buffer the body when a retry may need to send it again after it was
    // written, or a mirror needs a copy; otherwise it streams once. (A
    // request that was never written comes back whole for a retry.)
    let body_len = body.size_hint().exact();
    let replayable =
        rt.retry.attempts > 0 && !rt.retry.retries_only_unsent() && rt.retry.may_retry(&parts.method, body_len);
    let mirror = rt
        .filters
        .mirror
        .as_ref()
        .or_else(|| backend.and_then(|b| b.filters.mirror.as_ref()))
        .filter(|m| crate::policy::fault::hit(m.percent, fastrand::u32(..)));
    let body = if replayable {
        let limit = usize::try_from(rt.retry.max_body_bytes).unwrap_or(usize::MAX);
        let collected =
            Limited::new(body, limit).collect().await.map_err(|e| ProxyError::RequestBody(e.to_string()))?;
        Body::Buffered(collected.to_bytes())
    } else {
        Body::Streaming(RequestBody::Streamed(body))
    };
    // The mirror gets the buffered body, or a tee of the streamed one.
    let body = match (body, mirror.and_then(|m| super::mirror::reserve(svc, m))) {
        (Body::Buffered(bytes), Some(slot)) => {
            slot.send(svc, &parts, RequestBody::buffered(bytes.clone()));
            Body::Buffered(bytes)
        }
        (Body::Streaming(RequestBody::Streamed(incoming)), Some(slot)) => {
            let (teed, copy) = super::body::tee(incoming);
            slot.send(svc, &parts, RequestBody::Mirrored(copy));
            Body::Streaming(RequestBody::Teed(teed))
        }
        (body, _) => body,
    };

    let deadline = rt.timeouts.request.or(shared.request_timeout);
    let attempts = send_with_retries(svc, &policy, rt, &upstream, parts, body, replayable);
    let result = match deadline {
        Some(t) => match tokio::time::timeout(t, attempts).await {
            Ok(r) => r,
            Err(_) => {
                shared.metrics.policy.request_timeouts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Err(ProxyError::ResponseTimeout(t))
            }
        },
        None => attempts.await,
    };
    // Counted per route and backend whatever the outcome: a backend that
    // refuses connections or times out fails a canary as surely as a 5xx.
    if let Some(b) = backend {
        let status = match &result {
            Ok(rsp) => rsp.status(),
            Err(e) => e.status(),
        };
        let stats = b.stats.get_or_init(|| shared.metrics.policy.route(&rt.name, &b.label));
        stats.response(status.as_u16());
    }
    let mut rsp = result?;
    strip_hop_by_hop(rsp.headers_mut(), false);
    if let Some(m) = &rt.filters.response_headers {
        m.apply(rsp.headers_mut());
    }
    if let Some(m) = backend.and_then(|b| b.filters.response_headers.as_ref()) {
        m.apply(rsp.headers_mut());
    }
    Ok(rsp.map(|b| super::streamed(b, rt.timeouts.idle.map(|t| (t, &shared.metrics)))))
}

/// A backend other than the parent service, through discovery.
async fn resolve_backend(svc: &ProxyService, b: &BackendRef) -> Result<Resolution, ProxyError> {
    let target = b.discovery.as_ref().ok_or_else(|| ProxyError::UnknownBackend(b.label.to_string()))?;
    svc.shared.resolver.lookup(target).await.ok_or_else(|| ProxyError::UnknownBackend(b.label.to_string()))
}

/// The attempts of one request: the first, then retries while the policy,
/// the budget and the body allow. A retry sends the request itself when it
/// never left (a connect failure), else a copy of the buffered original
/// (only `replayable` requests keep one: the head is copied per attempt).
async fn send_with_retries(
    svc: &ProxyService,
    policy: &CompiledPolicy,
    rt: &RouteRuntime,
    upstream: &Resolution,
    parts: http::request::Parts,
    body: Body,
    replayable: bool,
) -> Result<Response<Incoming>, ProxyError> {
    let shared = &svc.shared;
    let retry = &rt.retry;
    if retry.attempts == 0 {
        return attempt(svc, policy, rt, upstream, None, Request::from_parts(parts, body.into())).await.result;
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
        let Attempt { result, addr, unsent } = attempt(svc, policy, rt, upstream, avoid, req).await;
        let outcome = match &result {
            Ok(rsp) => Outcome::Response { status: rsp.status(), grpc_status: grpc_status(rsp.headers()) },
            Err(e) => classify(e),
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
                shared.metrics.policy.retries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::debug!(route = %rt.name, ?outcome, retry = retries, "retrying");
                avoid = addr;
                req = next;
                let delay = retry.backoff.delay(retries, fastrand::u32(..));
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
            }
            (Decision::Retry, Some(_)) => {
                shared.metrics.policy.retry_budget_exhausted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return result;
            }
            _ => return result,
        }
    }
}

/// How one attempt went.
struct Attempt {
    result: Result<Response<Incoming>, ProxyError>,
    /// The endpoint it went to.
    addr: Option<std::net::SocketAddr>,
    /// The request, when it was never written.
    unsent: Option<Request<RequestBody>>,
}

/// One attempt: pick an endpoint, send, apply the per-try timeout, feed
/// the circuit breaker.
async fn attempt(
    svc: &ProxyService,
    policy: &CompiledPolicy,
    rt: &RouteRuntime,
    upstream: &Resolution,
    avoid: Option<std::net::SocketAddr>,
    req: Request<RequestBody>,
) -> Attempt {
    let shared = &svc.shared;
    let (addr, pick) = match shared.choose(upstream, policy, &rt.balance, req.headers(), avoid) {
        Ok(p) => p,
        Err(e) => return Attempt { result: Err(e), addr: None, unsent: Some(req) },
    };
    let tls = pick.as_ref().and_then(|p| shared.tls_target(&p.endpoint, false));
    let send = shared.pool.try_send(addr, svc.version, req, tls, rt.timeouts.connect);
    let sent = match rt.timeouts.per_try {
        Some(t) => match tokio::time::timeout(t, send).await {
            Ok(r) => r,
            Err(_) => {
                shared.metrics.policy.per_try_timeouts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Err(SendError { error: ProxyError::ResponseTimeout(t), unsent: None })
            }
        },
        None => send.await,
    };
    let (result, unsent) = match sent {
        Ok(rsp) => (Ok(rsp), None),
        Err(SendError { error, unsent }) => (Err(error), unsent),
    };
    if let Some(pick) = pick {
        if let (Some(cfg), Resolution::Service(target)) = (&policy.circuit, upstream) {
            let success = result.as_ref().is_ok_and(|r| !r.status().is_server_error());
            let others = if success { 0 } else { target.balancer.healthy_others(addr) };
            if pick.endpoint.record(cfg, success, others) {
                shared.metrics.policy.ejections.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(endpoint = %addr, "circuit breaker ejected the endpoint");
            }
        }
        if result.is_ok() {
            pick.complete();
        }
    }
    Attempt { result, addr: Some(addr), unsent }
}

/// A request body, as it will be sent.
enum Body {
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

/// What kind of failure an error is, for the retry conditions.
fn classify(e: &ProxyError) -> Outcome {
    match e {
        ProxyError::Connect(_) | ProxyError::Handshake { .. } | ProxyError::NoEndpoints => Outcome::ConnectFailure,
        ProxyError::ResponseTimeout(_) => Outcome::Timeout,
        _ => Outcome::Reset,
    }
}

/// A copy of a request head for another attempt (extensions are not
/// carried: nothing downstream of the proxy reads them).
pub(super) fn clone_head(parts: &http::request::Parts) -> http::request::Parts {
    let mut req = Request::new(());
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    req.into_parts().0
}

/// A response the proxy writes itself.
fn local(status: StatusCode, body: &'static str) -> Response<ResponseBody> {
    let mut rsp = Response::new(Either::Right(Full::new(Bytes::from_static(body.as_bytes()))));
    *rsp.status_mut() = status;
    if !body.is_empty() {
        rsp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    }
    rsp
}
