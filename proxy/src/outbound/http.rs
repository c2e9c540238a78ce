//! The outbound stack's per-request stage: the traffic policy, applied to
//! one request.
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
//! failures (the default) buffers nothing, and copies only the head of a
//! bodiless request: a peer proxy's answer that its app never saw the
//! request (`weft-unprocessed`) is a connect failure, retried after the
//! request was written.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use http::header;
use http::{Request, Response};
use http_body::Body as _;
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;

use super::attempts::{Body, Routed, send_with_retries};
use super::endpoint::{choose, policy_for};
use super::error::{OutboundError, Redirect};
use super::{Outbound, mirror};
use crate::control::discovery::Resolution;
use crate::drain;
use crate::http::body::{RequestBody, tee};
use crate::http::headers::strip_hop_by_hop;
use crate::http::respond::{LocalAnswer, ProxyError, respond};
use crate::http::stack::Stage;
use crate::http::upgrade::Upgrade;
use crate::http::{ResponseBody, Version, streamed};
use crate::metrics::EdgePeer;
use crate::policy::compiled::{BackendRef, CompiledPolicy, RouteRuntime};
use crate::policy::retry::UNPROCESSED_HEADER;
use crate::trace::SpanHandle;

/// The outbound stack for the requests of one downstream connection,
/// whose destination was resolved once for the connection. Cloned per
/// request (a few `Arc` bumps).
#[derive(Clone, Debug)]
pub struct OutboundService {
    pub outbound: Arc<Outbound>,
    pub upstream: Resolution,
    pub version: Version,
    pub drain: drain::Watch,
}

impl Stage for OutboundService {
    async fn serve(self, req: Request<Incoming>) -> Response<ResponseBody> {
        self.answer(req).await
    }
}

impl OutboundService {
    /// The answer to `req`: the upstream's, or the proxy's own when it fails.
    pub async fn answer(&self, req: Request<Incoming>) -> Response<ResponseBody> {
        match forward(self, req).await {
            Ok(rsp) => rsp,
            Err(e) => {
                tracing::info!(direction = "outbound", upstream = ?self.upstream, error = %e, "request failed");
                respond(&e)
            }
        }
    }
}

/// Sends `req` under the outbound policy of the service it resolved to.
async fn forward(svc: &OutboundService, mut req: Request<Incoming>) -> Result<Response<ResponseBody>, OutboundError> {
    let start = std::time::Instant::now();
    let outbound = &*svc.outbound;
    let metrics = &outbound.http.metrics;
    let policy: Arc<CompiledPolicy> = policy_for(outbound, &svc.upstream).await?;
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
                metrics.policy.no_route.fetch_add(1, Relaxed);
                return Err(OutboundError::NoRoute);
            }
        }
    };

    // Filters: a redirect answers the client itself.
    if let Some(redirect) = &rt.filters.redirect {
        let host = parts.headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let location = redirect.location(&parts.uri, host, prefix);
        return Ok(respond(&Redirect { status: redirect.status, location }));
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
            metrics.policy.faults_delayed.fetch_add(1, Relaxed);
            tokio::time::sleep(delay).await;
        }
        if let Some(status) = decision.abort {
            metrics.policy.faults_aborted.fetch_add(1, Relaxed);
            return Err(OutboundError::Fault(status));
        }
    }

    let chosen = rt.split.pick(fastrand::u32(..)).ok_or(OutboundError::NoBackend)?;
    let backend = rt.backends.get(chosen);
    let upstream = match backend {
        Some(b) if !b.is_parent => resolve_backend(outbound, b).await?,
        _ => svc.upstream.clone(),
    };
    if let Some(span) = parts.extensions.get::<Arc<SpanHandle>>() {
        span.set("weft.route", if rt.name.is_empty() { "default" } else { &rt.name });
        let service = backend.map_or(policy.service.as_str(), |b| b.service.as_str());
        if !service.is_empty() {
            span.set("weft.backend", service);
        }
    }
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
        let (addr, pick) = choose(outbound, &upstream, &policy, &rt.balance, &parts.headers, None)?;
        let tls = pick.as_ref().and_then(|p| outbound.http.tls_target(&p.endpoint, false));
        let req = Request::from_parts(parts, RequestBody::from(body));
        let tls_id = tls.as_ref().map(|t| t.expected.clone());
        let mut rsp = upgrade.proxy(&outbound.http, svc.drain.clone(), req, addr, pick, tls).await?;
        let mut edge = EdgePeer::upstream(tls_id, addr);
        edge.peer = peer_name(&policy, backend);
        rsp.extensions_mut().insert(edge);
        return Ok(rsp.map(|b| streamed(b, None)));
    }

    // Buffer the body when a retry may need to send it again after it was
    // written (`keeps_copy`: also an empty one, for a peer proxy's
    // unprocessed answer), or a mirror needs a copy; otherwise it streams
    // once. (A request that was never written comes back whole for a retry.)
    let body_len = body.size_hint().exact();
    let replayable = rt.retry.keeps_copy(&parts.method, body_len);
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
    let body = match (body, mirror.and_then(|m| mirror::reserve(outbound, m))) {
        (Body::Buffered(bytes), Some(slot)) => {
            slot.send(&svc.outbound, svc.version, &parts, RequestBody::buffered(bytes.clone()));
            Body::Buffered(bytes)
        }
        (Body::Streaming(RequestBody::Streamed(incoming)), Some(slot)) => {
            let (teed, copy) = tee(incoming);
            slot.send(&svc.outbound, svc.version, &parts, RequestBody::Mirrored(copy));
            Body::Streaming(RequestBody::Teed(teed))
        }
        (body, _) => body,
    };

    let deadline = rt.timeouts.request.or(outbound.http.request_timeout);
    let routed = Routed { outbound, version: svc.version, policy: &policy, rt, upstream: &upstream };
    let attempts = send_with_retries(&routed, parts, body, replayable);
    let mut result = match deadline {
        Some(t) => match tokio::time::timeout(t, attempts).await {
            Ok(r) => r,
            Err(_) => {
                metrics.policy.request_timeouts.fetch_add(1, Relaxed);
                Err(ProxyError::ResponseTimeout(t).into())
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
        let stats = b.stats.get_or_init(|| metrics.policy.route(&rt.name, &b.label));
        stats.response_timed(status.as_u16(), start.elapsed());
    }
    // Name who answered for the record layer (the attempt set its identity).
    if let Ok(rsp) = &mut result
        && let Some(edge) = rsp.extensions_mut().get_mut::<EdgePeer>()
    {
        edge.peer = peer_name(&policy, backend);
        edge.route = backend.map(|b| (rt.name.clone(), b.label.clone()));
    }
    let mut rsp = result?;
    strip_hop_by_hop(rsp.headers_mut(), false);
    // The peer proxy's word to this one, not to the client.
    rsp.headers_mut().remove(UNPROCESSED_HEADER);
    if let Some(m) = &rt.filters.response_headers {
        m.apply(rsp.headers_mut());
    }
    if let Some(m) = backend.and_then(|b| b.filters.response_headers.as_ref()) {
        m.apply(rsp.headers_mut());
    }
    Ok(rsp.map(|b| streamed(b, rt.timeouts.idle.map(|t| (t, metrics)))))
}

/// The edge's `peer`: the backend's service (`name.namespace`), else the
/// policy's; `None` (unknown) outside the mesh.
fn peer_name(policy: &CompiledPolicy, backend: Option<&BackendRef>) -> Option<Arc<str>> {
    let name = backend.map_or(policy.service.as_str(), |b| b.service.as_str());
    (!name.is_empty()).then(|| Arc::from(name))
}

/// A backend other than the parent service, through discovery.
async fn resolve_backend(outbound: &Outbound, b: &BackendRef) -> Result<Resolution, OutboundError> {
    let unknown = || OutboundError::UnknownBackend(b.label.to_string());
    let target = b.discovery.as_ref().ok_or_else(unknown)?;
    outbound.resolver.lookup(target).await.ok_or_else(unknown)
}
