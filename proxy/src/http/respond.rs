//! The one place where proxy errors become HTTP responses.
//!
//! Downstream protocol errors (malformed request → 400, header section too
//! large → 431, slow headers → connection closed) are answered by hyper's
//! server itself before a request reaches the proxy service; they are
//! configured in [`super::server`]. Everything that fails *after* a request
//! was accepted is a [`ProxyError`], and [`error_response`] maps it.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{Either, Full};

use super::ResponseBody;
use crate::transport::connect::ConnectError;

/// Which side of the proxied exchange failed (pingora's `ErrorSource`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Downstream,
    Upstream,
    Internal,
}

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
    #[error("service has no ready endpoints")]
    NoEndpoints,
    /// Discovery answered, the service's traffic policy did not: the request
    /// is refused rather than routed without its routes.
    #[error("the service's traffic policy did not arrive from the control plane within {0:?}")]
    PolicyUnavailable(Duration),
    /// A route's backend that discovery does not know (or did not answer for in time).
    #[error("backend {0} of the matched route is not known to the mesh")]
    UnknownBackend(String),
    /// The request body could not be read for buffering (a retryable request).
    #[error("reading the request body failed: {0}")]
    RequestBody(String),
    /// Explicit proxy: the request's target cannot be proxied as sent.
    #[error(transparent)]
    BadTarget(#[from] crate::explicit::target::TargetError),
    /// Explicit proxy: neither the mesh nor the system resolver knows the host.
    #[error("cannot resolve {host:?}: it is not a mesh service, and the system resolver failed: {source}")]
    Unresolved {
        host: String,
        #[source]
        source: std::io::Error,
    },
    /// The chosen destination is this proxy's own outbound listener: sending
    /// the request there would have it proxy itself forever.
    #[error("the destination {0} is this proxy's own outbound listener; refusing to loop")]
    Loop(std::net::SocketAddr),
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
            ProxyError::Downstream(_) | ProxyError::BadTarget(_) | ProxyError::RequestBody(_) => Side::Downstream,
            ProxyError::Loop(_) => Side::Internal,
            _ => Side::Upstream,
        }
    }

    /// Safe to retry on another connection: nothing reached the upstream app.
    /// (Used by the retry layer in a later stage.)
    pub fn is_retryable(&self) -> bool {
        matches!(self, ProxyError::Connect(ConnectError::Refused { .. } | ConnectError::Timeout { .. }))
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::Connect(ConnectError::Timeout { .. }) | ProxyError::ResponseTimeout(_) => {
                StatusCode::GATEWAY_TIMEOUT
            }
            ProxyError::Connect(_) | ProxyError::Handshake { .. } | ProxyError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ProxyError::Downstream(_) | ProxyError::BadTarget(_) | ProxyError::RequestBody(_) => {
                StatusCode::BAD_REQUEST
            }
            ProxyError::NoEndpoints | ProxyError::UnknownBackend(_) | ProxyError::PolicyUnavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::Unresolved { .. } => StatusCode::BAD_GATEWAY,
            // RFC 5842 §7.2: 508 Loop Detected.
            ProxyError::Loop(_) => StatusCode::LOOP_DETECTED,
        }
    }
}

/// The response sent downstream for `err`. The body is a one-line reason;
/// `l5d-proxy-error`-style header lets clients tell proxy errors from app
/// errors, and `connection: close` is set where the exchange is broken.
pub fn error_response(err: &ProxyError) -> Response<ResponseBody> {
    let status = err.status();
    let mut rsp = Response::new(Either::Right(Full::new(Bytes::from(format!("{err}\n")))));
    *rsp.status_mut() = status;
    let headers = rsp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    headers.insert(
        "weft-proxy-error",
        HeaderValue::from_static(match err.side() {
            Side::Downstream => "downstream",
            Side::Upstream => "upstream",
            Side::Internal => "internal",
        }),
    );
    if matches!(err, ProxyError::Downstream(_)) {
        // The request body was cut short: the connection's framing is lost.
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    rsp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_statuses() {
        let addr = "127.0.0.1:8080".parse().expect("addr");
        let cases = [
            (ProxyError::Connect(ConnectError::Refused { addr }), 502, true),
            (ProxyError::Connect(ConnectError::Timeout { addr, timeout: Duration::from_secs(1) }), 504, true),
            (ProxyError::Connect(ConnectError::Io { addr, source: std::io::Error::other("unreachable") }), 502, false),
            (ProxyError::ResponseTimeout(Duration::from_millis(500)), 504, false),
        ];
        for (err, status, retryable) in cases {
            assert_eq!(err.status().as_u16(), status, "{err}");
            assert_eq!(err.is_retryable(), retryable, "{err}");
            let rsp = error_response(&err);
            assert_eq!(rsp.status().as_u16(), status);
            assert_eq!(rsp.headers()["weft-proxy-error"], "upstream");
        }
        let explicit = [
            (ProxyError::BadTarget(crate::explicit::target::TargetError::OriginForm), 400, "downstream"),
            (
                ProxyError::Unresolved { host: "nowhere".into(), source: std::io::Error::other("NXDOMAIN") },
                502,
                "upstream",
            ),
            (ProxyError::Loop(addr), 508, "internal"),
        ];
        for (err, status, side) in explicit {
            let rsp = error_response(&err);
            assert_eq!(rsp.status().as_u16(), status, "{err}");
            assert_eq!(rsp.headers()["weft-proxy-error"], side, "{err}");
            assert!(!rsp.headers().contains_key(header::CONNECTION), "{err}: the connection stays usable");
        }
    }
}
