//! One explicit proxy request: parse its target, resolve it, then forward it
//! in origin form through the transparent path's stage
//! ([`OutboundService`]: same policy, pool, balancer and timeouts), or open
//! a `CONNECT` tunnel.

use std::sync::Arc;

use http::header::{self, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, Uri};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::target::{self, ExplicitTarget};
use crate::control::discovery::Resolution;
use crate::drain;
use crate::http::respond::respond;
use crate::http::stack::Stage;
use crate::http::{ResponseBody, Version};
use crate::outbound::endpoint::connect_opaque;
use crate::outbound::error::TargetError;
use crate::outbound::http::OutboundService;
use crate::outbound::{Outbound, OutboundError};
use crate::transport::splice::splice;
use crate::transport::target::Target;

/// Addressed to the proxy itself (RFC 9110 §11.7.2, RFC 7230's
/// `Proxy-Connection` legacy): never forwarded. `Proxy-Connection` is also
/// in the transparent path's hop-by-hop list; `Proxy-Authorization` is not,
/// since an intercepted app may be talking to a proxy of its own.
const PROXY_HEADERS: [HeaderName; 2] = [header::PROXY_AUTHORIZATION, HeaderName::from_static("proxy-connection")];

/// Serves the requests of one explicit proxy connection; cloned per request.
#[derive(Clone, Debug)]
pub struct ExplicitService {
    pub outbound: Arc<Outbound>,
    pub drain: drain::Watch,
}

impl Stage for ExplicitService {
    async fn serve(self, req: Request<Incoming>) -> Response<ResponseBody> {
        self.forward(req).await.unwrap_or_else(|e| {
            tracing::info!(error = %e, "explicit proxy request refused");
            respond(&e)
        })
    }
}

impl ExplicitService {
    async fn forward(self, req: Request<Incoming>) -> Result<Response<ResponseBody>, OutboundError> {
        let parsed = target::parse(req.method(), req.uri())?;
        let upstream = self.resolve(&parsed.target).await?;
        tracing::debug!(target = %parsed.target, ?upstream, tunnel = parsed.tunnel, "explicit proxy request");
        if parsed.tunnel {
            return self.tunnel(req, &parsed, upstream).await;
        }
        let req = to_origin_form(req, &parsed)?;
        let svc = OutboundService { outbound: self.outbound, upstream, version: Version::Http1, drain: self.drain };
        Ok(svc.answer(req).await)
    }

    /// A mesh service or meshed pod through discovery; an address the mesh
    /// does not know as is; a name it does not know through the system
    /// resolver (a name outside the mesh, such as an external API).
    async fn resolve(&self, target: &Target) -> Result<Resolution, OutboundError> {
        if let Some(resolution) = self.outbound.resolver.lookup(target).await {
            return Ok(resolution);
        }
        match target {
            Target::Addr(addr) => Ok(Resolution::Forward(*addr)),
            Target::Name(name) => {
                let unresolved = |source| OutboundError::Unresolved { host: name.host().to_owned(), source };
                let mut addrs = tokio::time::timeout(
                    self.outbound.config.connect_timeout,
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
    ) -> Result<Response<ResponseBody>, OutboundError> {
        let (up, pick, idle) = connect_opaque(&upstream, &self.outbound).await.inspect_err(|e| {
            tracing::info!(target = %parsed.target, error = %e, "CONNECT failed");
        })?;
        let downstream = hyper::upgrade::on(&mut req);
        // The tunnel outlives this request; it holds a drain watch so that
        // shutdown waits for it (up to the drain deadline), and the pick so
        // that the endpoint counts as busy while it is open.
        let drain = self.drain.clone();
        let metrics = self.outbound.http.metrics.clone();
        tokio::spawn(async move {
            match downstream.await {
                Ok(down) => {
                    let result = splice(TokioIo::new(down), up, idle).await;
                    if let Err(e) = &result {
                        metrics.spliced(e);
                    }
                    tracing::debug!(?result, "CONNECT tunnel closed");
                }
                Err(e) => tracing::debug!(error = %e, "CONNECT upgrade did not complete"),
            }
            drop((pick, drain));
        });
        Ok(Response::new(Either::Right(Full::default())))
    }
}

/// The request as the origin server expects it: origin-form target, `Host`
/// replaced by the target's authority (RFC 9112 §3.2.2), and the headers
/// meant for this proxy removed.
fn to_origin_form(mut req: Request<Incoming>, parsed: &ExplicitTarget) -> Result<Request<Incoming>, OutboundError> {
    let path = req.uri().path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
    *req.uri_mut() = Uri::from(path);
    let host = HeaderValue::from_str(&parsed.authority).map_err(|_| TargetError::BadHost(parsed.authority.clone()))?;
    let headers = req.headers_mut();
    headers.insert(header::HOST, host);
    for name in &PROXY_HEADERS {
        headers.remove(name);
    }
    Ok(req)
}
