//! The inbound stack's per-request stage: authorization (route-scoped
//! where an AccessPolicy names the route), the port's rate limit, the
//! caller's verified identity for the app, then the app itself.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use http::header::{HeaderName, HeaderValue};
use http::{Request, Response};
use hyper::body::Incoming;

use super::authorize::ConnAuthz;
use super::{Inbound, InboundError};
use crate::drain;
use crate::http::body::RequestBody;
use crate::http::headers::strip_hop_by_hop;
use crate::http::respond::{ProxyError, respond};
use crate::http::stack::Stage;
use crate::http::upgrade::Upgrade;
use crate::http::{ResponseBody, Version, streamed};
use crate::identity::SpiffeId;
use crate::metrics::EdgePeer;
use crate::policy::retry::UNPROCESSED_HEADER;
use crate::trace::SpanHandle;

/// The header that tells the app who called it.
pub const CLIENT_ID_HEADER: HeaderName = HeaderName::from_static("weft-client-id");

/// The inbound stack for the requests of one downstream connection.
/// Cloned per request (a few `Arc` bumps).
#[derive(Clone, Debug)]
pub struct InboundService {
    pub inbound: Arc<Inbound>,
    /// The app, on loopback at the port the client addressed.
    pub app: SocketAddr,
    pub version: Version,
    pub drain: drain::Watch,
    /// The client's verified mesh identity, sent to the app as
    /// `weft-client-id` (any such header from the client is dropped).
    pub client_id: Option<HeaderValue>,
    /// The same identity, for metrics and tap.
    pub peer_id: Option<SpiffeId>,
    /// Authorization, decided under the current policy; `None` for a proxy
    /// that serves no registered workload (no inbound policies).
    pub authz: Option<Arc<ConnAuthz>>,
}

impl Stage for InboundService {
    async fn serve(self, req: Request<Incoming>) -> Response<ResponseBody> {
        let mut rsp = match self.forward(req).await {
            Ok(rsp) => rsp.map(|b| streamed(b, None)),
            Err(e) => {
                if let InboundError::Proxy(_) = e {
                    tracing::info!(direction = "inbound", app = %self.app, error = %e, "request failed");
                }
                respond(&e)
            }
        };
        // Who asked, for the record layer (edges, tap): every answer,
        // the proxy's own refusals included.
        rsp.extensions_mut().insert(EdgePeer::client(self.peer_id.clone()));
        rsp
    }
}

impl InboundService {
    /// Authorizes `req` and sends it to the app, under the proxy's request
    /// timeout (an upgrade on a connection of its own).
    async fn forward(&self, mut req: Request<Incoming>) -> Result<Response<Incoming>, InboundError> {
        if let Some(authz) = &self.authz {
            let decided = authz.decide_request(req.method(), req.uri(), req.headers());
            decided.count();
            if !decided.decision.allowed {
                return Err(InboundError::Forbidden(decided.decision.clone()));
            }
            if let Err(wait) = authz.rate_limit() {
                self.inbound.http.metrics.policy.rate_limited.fetch_add(1, Relaxed);
                return Err(InboundError::RateLimited { retry_after_secs: wait.secs_ceil() });
            }
        }
        // Only the TLS handshake may say who the client is.
        req.headers_mut().remove(&CLIENT_ID_HEADER);
        if let Some(id) = &self.client_id {
            req.headers_mut().insert(CLIENT_ID_HEADER, id.clone());
            if let (Some(span), Ok(id)) = (req.extensions().get::<Arc<SpanHandle>>(), id.to_str()) {
                span.set("weft.peer_id", id);
            }
        }
        let upgrade = Upgrade::take(&mut req, self.version);
        strip_hop_by_hop(req.headers_mut(), upgrade.as_ref().is_some_and(Upgrade::keeps_headers));
        let http = &self.inbound.http;
        let req = req.map(RequestBody::from);
        if let Some(upgrade) = upgrade {
            return Ok(upgrade.proxy(http, self.drain.clone(), req, self.app, None, None).await?);
        }
        let send = http.pool.send(self.app, self.version, req, None);
        let mut rsp = match http.request_timeout {
            Some(t) => tokio::time::timeout(t, send).await.map_err(|_| ProxyError::ResponseTimeout(t))??,
            None => send.await?,
        };
        strip_hop_by_hop(rsp.headers_mut(), false);
        // Only this proxy may tell a peer that the app never saw a request.
        rsp.headers_mut().remove(UNPROCESSED_HEADER);
        Ok(rsp)
    }
}
