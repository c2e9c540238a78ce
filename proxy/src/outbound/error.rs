//! Every way an outbound request can fail or be answered by the proxy
//! itself, and the one mapping of each to a status and a reason word.

use std::net::SocketAddr;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, StatusCode, header};

use crate::http::respond::{LocalAnswer, ProxyError};
use crate::policy::retry::Outcome;

#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    /// The upstream could not be reached, or failed mid-exchange.
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    /// Discovery answered, the service's traffic policy did not: the request
    /// is refused rather than routed without its routes.
    #[error("the service's traffic policy did not arrive from the control plane within {0:?}")]
    PolicyUnavailable(Duration),
    /// The service has routes and none matches.
    #[error("no route of this service matches the request")]
    NoRoute,
    /// Gateway API: a route whose backends all weigh 0 answers 500.
    #[error("every backend of the matched route has weight 0")]
    NoBackend,
    /// A fault policy aborted the request with this status.
    #[error("fault injected by the mesh's traffic policy")]
    Fault(StatusCode),
    /// A route's backend that discovery does not know (or did not answer for in time).
    #[error("backend {0} of the matched route is not known to the mesh")]
    UnknownBackend(String),
    #[error("service has no ready endpoints")]
    NoEndpoints,
    /// The chosen destination is this proxy's own outbound listener: sending
    /// the request there would have it proxy itself forever.
    #[error("the destination {0} is this proxy's own outbound listener; refusing to loop")]
    Loop(SocketAddr),
    /// Explicit proxy: the request's target cannot be proxied as sent.
    #[error(transparent)]
    BadTarget(#[from] TargetError),
    /// Explicit proxy: neither the mesh nor the system resolver knows the host.
    #[error("cannot resolve {host:?}: it is not a mesh service, and the system resolver failed: {source}")]
    Unresolved {
        host: String,
        #[source]
        source: std::io::Error,
    },
}

impl OutboundError {
    /// What kind of failure this is for the retry conditions: no endpoint
    /// counts as a connect failure (nothing was sent); the transport errors
    /// say for themselves; the proxy's own refusals are final.
    pub fn retry_outcome(&self) -> Outcome {
        match self {
            OutboundError::Proxy(e) => e.retry_outcome(),
            OutboundError::NoEndpoints => Outcome::ConnectFailure,
            _ => Outcome::Reset,
        }
    }
}

impl LocalAnswer for OutboundError {
    fn status(&self) -> StatusCode {
        match self {
            OutboundError::Proxy(e) => e.status(),
            OutboundError::NoRoute => StatusCode::NOT_FOUND,
            OutboundError::NoBackend => StatusCode::INTERNAL_SERVER_ERROR,
            OutboundError::Fault(status) => *status,
            OutboundError::PolicyUnavailable(_) | OutboundError::UnknownBackend(_) | OutboundError::NoEndpoints => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            // RFC 5842 §7.2: 508 Loop Detected.
            OutboundError::Loop(_) => StatusCode::LOOP_DETECTED,
            OutboundError::BadTarget(_) => StatusCode::BAD_REQUEST,
            OutboundError::Unresolved { .. } => StatusCode::BAD_GATEWAY,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            OutboundError::Proxy(e) => e.reason(),
            OutboundError::PolicyUnavailable(_) => "policy-unavailable",
            OutboundError::NoRoute => "no-route",
            OutboundError::NoBackend => "no-backend",
            OutboundError::Fault(_) => "fault-injected",
            OutboundError::UnknownBackend(_) => "unknown-backend",
            OutboundError::NoEndpoints => "no-endpoints",
            OutboundError::Loop(_) => "loop",
            OutboundError::BadTarget(_) => "bad-target",
            OutboundError::Unresolved { .. } => "unresolved",
        }
    }

    fn extra_headers(&self, headers: &mut HeaderMap) {
        if let OutboundError::Proxy(e) = self {
            e.extra_headers(headers);
        }
    }
}

/// Why the explicit proxy cannot forward a request as it was sent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error(
        "this is an explicit HTTP proxy (HTTP_PROXY): send requests in absolute form (GET http://host/path) or \
         CONNECT host:port"
    )]
    OriginForm,
    #[error("{0}:// requests are not proxied in absolute form; use CONNECT host:port for TLS")]
    Scheme(String),
    #[error("the request target names no host")]
    MissingHost,
    #[error("CONNECT needs host:port, not {0:?}")]
    ConnectWithoutPort(String),
    #[error("{0:?} is not a valid host name or IP address")]
    BadHost(String),
    #[error("port 0 is not a destination")]
    BadPort,
}

/// A route's RequestRedirect filter: answered by the proxy, not the app.
#[derive(Debug)]
pub struct Redirect {
    pub status: StatusCode,
    pub location: String,
}

impl std::fmt::Display for Redirect {
    fn fmt(&self, _f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No body: clients follow `Location`.
        Ok(())
    }
}

impl LocalAnswer for Redirect {
    fn status(&self) -> StatusCode {
        self.status
    }

    fn reason(&self) -> &'static str {
        "redirect"
    }

    fn extra_headers(&self, headers: &mut HeaderMap) {
        if let Ok(v) = HeaderValue::from_str(&self.location) {
            headers.insert(header::LOCATION, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::respond::{PROXY_ERROR_HEADER, respond};

    #[test]
    fn every_outbound_answer_has_its_status_and_reason() {
        let addr = "127.0.0.1:4140".parse().expect("addr");
        let cases = [
            (OutboundError::PolicyUnavailable(Duration::from_secs(3)), 503, "policy-unavailable"),
            (OutboundError::NoRoute, 404, "no-route"),
            (OutboundError::NoBackend, 500, "no-backend"),
            (OutboundError::Fault(StatusCode::IM_A_TEAPOT), 418, "fault-injected"),
            (OutboundError::UnknownBackend("web-v3.default:80".into()), 503, "unknown-backend"),
            (OutboundError::NoEndpoints, 503, "no-endpoints"),
            (OutboundError::Loop(addr), 508, "loop"),
            (OutboundError::BadTarget(TargetError::OriginForm), 400, "bad-target"),
            (
                OutboundError::Unresolved { host: "nowhere".into(), source: std::io::Error::other("NXDOMAIN") },
                502,
                "unresolved",
            ),
            (OutboundError::Proxy(ProxyError::ResponseTimeout(Duration::from_secs(1))), 504, "response-timeout"),
        ];
        for (err, status, reason) in cases {
            let rsp = respond(&err);
            assert_eq!(rsp.status().as_u16(), status, "{err}");
            assert_eq!(rsp.headers()[PROXY_ERROR_HEADER], reason, "{err}");
        }
        let redirect = respond(&Redirect { status: StatusCode::FOUND, location: "https://web/x".into() });
        assert_eq!(redirect.status(), StatusCode::FOUND);
        assert_eq!(redirect.headers()[header::LOCATION], "https://web/x");
        assert_eq!(redirect.headers()[PROXY_ERROR_HEADER], "redirect");
        assert!(!redirect.headers().contains_key(header::CONTENT_TYPE), "a redirect has no body");
    }

    #[test]
    fn only_failures_that_sent_nothing_count_as_connect_failures() {
        let addr = "127.0.0.1:8080".parse().expect("addr");
        let refused = ProxyError::Connect(crate::transport::connect::ConnectError::Refused { addr });
        assert_eq!(OutboundError::Proxy(refused).retry_outcome(), Outcome::ConnectFailure);
        assert_eq!(OutboundError::NoEndpoints.retry_outcome(), Outcome::ConnectFailure);
        assert_eq!(
            OutboundError::Proxy(ProxyError::ResponseTimeout(Duration::from_secs(1))).retry_outcome(),
            Outcome::Timeout
        );
        assert_eq!(OutboundError::NoRoute.retry_outcome(), Outcome::Reset);
    }
}
