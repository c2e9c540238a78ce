//! One explicit proxy request: parse its target, resolve it, then forward it
//! in origin form through the transparent path's [`ProxyService`] (same
//! pool, balancer, timeouts and metrics), or open a `CONNECT` tunnel.

use std::convert::Infallible;
use std::sync::Arc;

use http::header::{self, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use super::target::{self, ExplicitTarget};
use crate::control::discovery::Resolution;
use crate::control::target::Target;
use crate::drain;
use crate::http::respond::{ProxyError, error_response};
use crate::http::service::ProxyService;
use crate::http::{ResponseBody, Version};
use crate::metrics::{Direction, OTHER_AUTHORITY};
use crate::proxy::{Ctx, connect_opaque};

/// Addressed to the proxy itself (RFC 9110 §11.7.2, RFC 7230's
/// `Proxy-Connection` legacy): never forwarded. `Proxy-Connection` is also
/// in the transparent path's hop-by-hop list; `Proxy-Authorization` is not,
/// since an intercepted app may be talking to a proxy of its own.
const PROXY_HEADERS: [HeaderName; 2] = [header::PROXY_AUTHORIZATION, HeaderName::from_static("proxy-connection")];

/// Serves the requests of one explicit proxy connection; cloned per request.
#[derive(Clone, Debug)]
pub struct ExplicitService {
    pub ctx: Arc<Ctx>,
    pub drain: drain::Watch,
}

impl ExplicitService {
    pub async fn call(self, req: Request<Incoming>) -> Result<Response<ResponseBody>, Infallible> {
        let start = Instant::now();
        let parsed = match target::parse(req.method(), req.uri()) {
            Ok(parsed) => parsed,
            Err(e) => return Ok(self.refuse(OTHER_AUTHORITY, ProxyError::BadTarget(e), start)),
        };
        let upstream = match self.resolve(&parsed.target).await {
            Ok(upstream) => upstream,
            Err(e) => return Ok(self.refuse(&parsed.authority, e, start)),
        };
        tracing::debug!(target = %parsed.target, ?upstream, tunnel = parsed.tunnel, "explicit proxy request");
        if parsed.tunnel {
            return Ok(self.tunnel(req, &parsed, upstream, start).await);
        }
        let req = match to_origin_form(req, &parsed) {
            Ok(req) => req,
            Err(e) => return Ok(self.refuse(&parsed.authority, e, start)),
        };
        let svc = ProxyService {
            shared: self.ctx.http.clone(),
            upstream,
            version: Version::Http1,
            direction: Direction::Outbound,
            drain: self.drain,
            client_id: None,
            authz: None,
        };
        svc.call(req).await
    }

    /// A mesh service or meshed pod through discovery; an address the mesh
    /// does not know as is; a name it does not know through the system
    /// resolver (a name outside the mesh, such as an external API).
    async fn resolve(&self, target: &Target) -> Result<Resolution, ProxyError> {
        if let Some(resolution) = self.ctx.resolver.lookup(target).await {
            return Ok(resolution);
        }
        match target {
            Target::Addr(addr) => Ok(Resolution::Forward(*addr)),
            Target::Name(name) => {
                let unresolved = |source| ProxyError::Unresolved { host: name.host().to_owned(), source };
                let mut addrs = tokio::time::timeout(
                    self.ctx.config.connect_timeout,
                    tokio::net::lookup_host((name.host(), name.port())),
                )
                .await
                .map_err(|_| unresolved(std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out")))?
                .map_err(unresolved)?;
                let addr = addrs.next().ok_or_else(|| unresolved(std::io::Error::other("no addresses")))?;
                Ok(Resolution::Forward(addr))
            }
        }
    }

    /// `CONNECT`: connect to the chosen endpoint first (so that a failure is
    /// an HTTP error, not a dropped tunnel), answer 200, then splice the
    /// upgraded downstream with it like an opaque connection.
    async fn tunnel(
        &self,
        mut req: Request<Incoming>,
        parsed: &ExplicitTarget,
        upstream: Resolution,
        start: Instant,
    ) -> Response<ResponseBody> {
        let stats = self.ctx.metrics.authority(Direction::Outbound, &parsed.authority);
        stats.request();
        let (up, pick, idle) = match connect_opaque(&upstream, &self.ctx).await {
            Ok(connected) => connected,
            Err(e) => {
                tracing::info!(target = %parsed.target, error = %e, "CONNECT failed");
                let rsp = error_response(&e);
                self.record(&stats, rsp.status(), start);
                return rsp;
            }
        };
        let downstream = hyper::upgrade::on(&mut req);
        // The tunnel outlives this request; it holds a drain watch so that
        // shutdown waits for it (up to the drain deadline), and the pick so
        // that the endpoint counts as busy while it is open.
        let drain = self.drain.clone();
        let metrics = self.ctx.metrics.clone();
        tokio::spawn(async move {
            match downstream.await {
                Ok(down) => {
                    let result = crate::tcp::splice(TokioIo::new(down), up, idle).await;
                    if let Err(e) = &result {
                        metrics.spliced(e);
                    }
                    tracing::debug!(?result, "CONNECT tunnel closed");
                }
                Err(e) => tracing::debug!(error = %e, "CONNECT upgrade did not complete"),
            }
            drop((pick, drain));
        });
        let rsp = Response::new(Either::Right(Full::default()));
        self.record(&stats, rsp.status(), start);
        rsp
    }

    /// Answers with the error, counted like every response.
    fn refuse(&self, authority: &str, err: ProxyError, start: Instant) -> Response<ResponseBody> {
        tracing::info!(%authority, error = %err, "explicit proxy request refused");
        let stats = self.ctx.metrics.authority(Direction::Outbound, authority);
        stats.request();
        let rsp = error_response(&err);
        self.record(&stats, rsp.status(), start);
        rsp
    }

    fn record(&self, stats: &crate::metrics::AuthorityStats, status: StatusCode, start: Instant) {
        stats.response(status.as_u16());
        self.ctx.metrics.record_latency(Direction::Outbound, status.as_u16(), start.elapsed());
    }
}

/// The request as the origin server expects it: origin-form target, `Host`
/// replaced by the target's authority (RFC 9112 §3.2.2), and the headers
/// meant for this proxy removed.
fn to_origin_form(mut req: Request<Incoming>, parsed: &ExplicitTarget) -> Result<Request<Incoming>, ProxyError> {
    let path = req.uri().path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
    *req.uri_mut() = Uri::from(path);
    let host = HeaderValue::from_str(&parsed.authority)
        .map_err(|_| ProxyError::BadTarget(target::TargetError::BadHost(parsed.authority.clone())))?;
    let headers = req.headers_mut();
    headers.insert(header::HOST, host);
    for name in &PROXY_HEADERS {
        headers.remove(name);
    }
    Ok(req)
}
