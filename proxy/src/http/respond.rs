//! Answers the proxy writes itself, and the transport errors both
//! directions share.
//!
//! Every answer that does not come from the app carries
//! `weft-proxy-error: <reason>`: one lower-case word per cause, so that a
//! client (or an operator reading an access log) tells the mesh's answers
//! from the app's. The words are listed in ARCHITECTURE.md ("Answers the
//! proxy writes itself").
//!
//! ```text
//! inbound::InboundError ──┐  (inbound/error.rs: status + reason)
//! outbound::OutboundError ┼─► LocalAnswer ─► respond() ─► status, weft-proxy-error, one-line body
//! ProxyError (here) ──────┘  (transport failures, shared)
//! ```
//!
//! Downstream protocol errors (malformed request → 400, header section too
//! large → 431, slow headers → connection closed) are answered by hyper's
//! server itself before a request reaches a stack; they are configured in
//! [`super::server`].

use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderName;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_body_util::{Either, Full};

use super::ResponseBody;
use crate::policy::retry::Outcome;
use crate::transport::connect::ConnectError;

/// The header that marks an answer as the proxy's, with its reason word.
pub const PROXY_ERROR_HEADER: HeaderName = HeaderName::from_static("weft-proxy-error");

/// Which side of the proxied exchange failed (pingora's `ErrorSource`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Downstream,
    Upstream,
    Internal,
}

/// An answer the proxy writes itself: a status, a reason word for
/// `weft-proxy-error`, and a one-line body (the `Display` text).
pub trait LocalAnswer: std::fmt::Display {
    fn status(&self) -> StatusCode;
    /// The `weft-proxy-error` value: one lower-case word, hyphenated.
    fn reason(&self) -> &'static str;
    /// Headers the answer needs besides the marker (`Retry-After`,
    /// `Location`, `Connection: close`).
    fn extra_headers(&self, _headers: &mut HeaderMap) {}
}

/// The response for `answer`: its status, `weft-proxy-error: <reason>`,
/// and its text as a plain-text body.
pub fn respond(answer: &(impl LocalAnswer + ?Sized)) -> Response<ResponseBody> {
    let text = answer.to_string();
    let body = if text.is_empty() { Bytes::new() } else { Bytes::from(format!("{text}\n")) };
    let has_body = !body.is_empty();
    let mut rsp = Response::new(Either::Right(Full::new(body)));
    *rsp.status_mut() = answer.status();
    let headers = rsp.headers_mut();
    if has_body {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    }
    headers.insert(PROXY_ERROR_HEADER, HeaderValue::from_static(answer.reason()));
    answer.extra_headers(headers);
    rsp
}

/// A request that failed on its way to or from the upstream: the failures
/// both directions share. Each direction's error type wraps it.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("HTTP handshake with upstream {addr} failed: {source}")]
    Handshake {
        addr: std::net::SocketAddr,
        #[source]
        source: hyper::Error,
    },
    #[error("upstream did not send response headers within {0:?}")]
    ResponseTimeout(Duration),
    #[error("upstream request failed: {0}")]
    Upstream(#[source] hyper::Error),
    #[error("the downstream request failed: {0}")]
    Downstream(#[source] hyper::Error),
    /// The request body could not be read for buffering (a retryable request).
    #[error("reading the request body failed: {0}")]
    RequestBody(String),
}

impl ProxyError {
    /// Classifies a hyper client error: the request body streams from the
    /// downstream, so a body read failure is the client's doing.
    pub fn from_send(e: hyper::Error) -> Self {
        let downstream_body = std::error::Error::source(&e)
            .and_then(|s| s.downcast_ref::<hyper::Error>())
            .is_some_and(|inner| inner.is_incomplete_message() || inner.is_body_write_aborted());
        if e.is_user() || downstream_body { Self::Downstream(e) } else { Self::Upstream(e) }
    }

    pub fn side(&self) -> Side {
        match self {
            ProxyError::Downstream(_) | ProxyError::RequestBody(_) => Side::Downstream,
            _ => Side::Upstream,
        }
    }

    /// What kind of failure this is for the retry conditions
    /// ([`crate::policy::retry`] decides whether that kind may be retried):
    /// the one place that says which failures left the upstream app
    /// untouched. A connect or handshake failure never reached the app; a
    /// timeout may have; anything else broke an exchange in progress.
    pub fn retry_outcome(&self) -> Outcome {
        match self {
            ProxyError::Connect(_) | ProxyError::Handshake { .. } => Outcome::ConnectFailure,
            ProxyError::ResponseTimeout(_) => Outcome::Timeout,
            _ => Outcome::Reset,
        }
    }
}

impl LocalAnswer for ProxyError {
    fn status(&self) -> StatusCode {
        match self {
            ProxyError::Connect(ConnectError::Timeout { .. }) | ProxyError::ResponseTimeout(_) => {
                StatusCode::GATEWAY_TIMEOUT
            }
            ProxyError::Connect(_) | ProxyError::Handshake { .. } | ProxyError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ProxyError::Downstream(_) | ProxyError::RequestBody(_) => StatusCode::BAD_REQUEST,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            ProxyError::Connect(ConnectError::Refused { .. }) => "connect-refused",
            ProxyError::Connect(ConnectError::Timeout { .. }) => "connect-timeout",
            ProxyError::Connect(ConnectError::Tls { .. } | ConnectError::IdentityMismatch { .. }) => "tls-failed",
            ProxyError::Connect(ConnectError::Io { .. }) => "connect-failed",
            ProxyError::Handshake { .. } => "upstream-handshake",
            ProxyError::ResponseTimeout(_) => "response-timeout",
            ProxyError::Upstream(_) => "upstream-failed",
            ProxyError::Downstream(_) => "downstream-failed",
            ProxyError::RequestBody(_) => "request-body",
        }
    }

    fn extra_headers(&self, headers: &mut HeaderMap) {
        if matches!(self, ProxyError::Downstream(_)) {
            // The request body was cut short: the connection's framing is lost.
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_errors_map_to_statuses_reasons_and_retry_kinds() {
        let addr = "127.0.0.1:8080".parse().expect("addr");
        let io = || std::io::Error::other("unreachable");
        let cases = [
            (ProxyError::Connect(ConnectError::Refused { addr }), 502, "connect-refused", Outcome::ConnectFailure),
            (
                ProxyError::Connect(ConnectError::Timeout { addr, timeout: Duration::from_secs(1) }),
                504,
                "connect-timeout",
                Outcome::ConnectFailure,
            ),
            (
                ProxyError::Connect(ConnectError::Io { addr, source: io() }),
                502,
                "connect-failed",
                Outcome::ConnectFailure,
            ),
            (ProxyError::Connect(ConnectError::Tls { addr, source: io() }), 502, "tls-failed", Outcome::ConnectFailure),
            (ProxyError::ResponseTimeout(Duration::from_millis(500)), 504, "response-timeout", Outcome::Timeout),
            (ProxyError::RequestBody("cut".into()), 400, "request-body", Outcome::Reset),
        ];
        for (err, status, reason, outcome) in cases {
            assert_eq!(err.status().as_u16(), status, "{err}");
            assert_eq!(err.retry_outcome(), outcome, "{err}");
            let rsp = respond(&err);
            assert_eq!(rsp.status().as_u16(), status);
            assert_eq!(rsp.headers()[PROXY_ERROR_HEADER], reason, "{err}");
            assert!(!rsp.headers().contains_key(header::CONNECTION), "{err}: the connection stays usable");
        }
    }
}
