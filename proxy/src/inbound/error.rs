//! Every way an inbound request can fail or be refused by the proxy, and
//! the one mapping of each to a status and a reason word.

use http::{HeaderMap, HeaderValue, StatusCode, header};

use crate::http::respond::{LocalAnswer, ProxyError};
use crate::policy::authz::Decision;
use crate::policy::retry::{Outcome, UNPROCESSED_HEADER};

#[derive(Debug, thiserror::Error)]
pub enum InboundError {
    /// Authorization refused the request; the app never sees it.
    #[error("forbidden: {} (policy {})", .0.reason, .0.policy)]
    Forbidden(Decision),
    /// The port's rate limit is exhausted; retry after this many seconds.
    #[error("too many requests: this port's rate limit is exhausted")]
    RateLimited { retry_after_secs: u64 },
    /// The app could not be reached, or failed mid-exchange.
    #[error(transparent)]
    Proxy(#[from] ProxyError),
}

impl LocalAnswer for InboundError {
    fn status(&self) -> StatusCode {
        match self {
            InboundError::Forbidden(_) => StatusCode::FORBIDDEN,
            InboundError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            InboundError::Proxy(e) => e.status(),
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            InboundError::Forbidden(_) => "forbidden",
            InboundError::RateLimited { .. } => "rate-limited",
            InboundError::Proxy(e) => e.reason(),
        }
    }

    fn extra_headers(&self, headers: &mut HeaderMap) {
        match self {
            InboundError::RateLimited { retry_after_secs } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            InboundError::Proxy(e) => {
                e.extra_headers(headers);
                // The app never saw the request: the client's proxy may
                // send it to another replica, whatever its method.
                if e.retry_outcome() == Outcome::ConnectFailure {
                    headers.insert(UNPROCESSED_HEADER, HeaderValue::from_static("1"));
                }
            }
            InboundError::Forbidden(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::respond::{PROXY_ERROR_HEADER, respond};

    #[test]
    fn every_inbound_refusal_has_its_status_reason_and_body() {
        let denied =
            Decision { allowed: false, audit: false, policy: "default/web-from-a".into(), reason: "unauthorized" };
        let rsp = respond(&InboundError::Forbidden(denied.clone()));
        assert_eq!(rsp.status(), StatusCode::FORBIDDEN);
        assert_eq!(rsp.headers()[PROXY_ERROR_HEADER], "forbidden");
        assert_eq!(InboundError::Forbidden(denied).to_string(), "forbidden: unauthorized (policy default/web-from-a)");

        let rsp = respond(&InboundError::RateLimited { retry_after_secs: 2 });
        assert_eq!(rsp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(rsp.headers()[PROXY_ERROR_HEADER], "rate-limited");
        assert_eq!(rsp.headers()[header::RETRY_AFTER], "2");

        let addr = "127.0.0.1:8080".parse().expect("addr");
        let refused = ProxyError::Connect(crate::transport::connect::ConnectError::Refused { addr });
        let rsp = respond(&InboundError::Proxy(refused));
        assert_eq!(rsp.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(rsp.headers()[PROXY_ERROR_HEADER], "connect-refused");
        assert_eq!(rsp.headers()[UNPROCESSED_HEADER], "1", "the app never saw it");
        let timeout = ProxyError::ResponseTimeout(std::time::Duration::from_secs(1));
        let rsp = respond(&InboundError::Proxy(timeout));
        assert!(!rsp.headers().contains_key(UNPROCESSED_HEADER), "the app may have seen it");
        let rsp = respond(&InboundError::RateLimited { retry_after_secs: 1 });
        assert!(!rsp.headers().contains_key(UNPROCESSED_HEADER), "a refusal is final");
    }
}
