//! The dashboard listener (`--dashboard-addr`, HTTP/1.1): the static page
//! compiled into the binary, and the JSON API it (and `weft stat`,
//! `weft routes`, `weft edges`, `weft top`, `weft tap`) reads.
//!
//! ```text
//!   GET /, /assets/<file>          the page (assets/, include_str!)
//!   GET /api/stat|routes|edges|series|workloads|prometheus/sd   JSON (api.rs) from telemetry
//!   GET /api/tap                   Server-Sent Events relayed from the proxies' tap (telemetry::tap)
//! ```
//!
//! Errors are `{"error": "..."}` with a 4xx/5xx status.

pub mod api;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::shutdown::Shutdown;
use crate::telemetry::Telemetry;
use crate::telemetry::tap::TapClient;

pub type Body = BoxBody<Bytes, Infallible>;

/// What the dashboard reads.
#[derive(Debug, Clone)]
pub struct Dashboard {
    pub telemetry: Telemetry,
    /// Dials the proxies' tap; `None` without mesh identity (no CA).
    pub tap: Option<TapClient>,
}

/// The static files: `(path, content type, contents)`.
const ASSETS: &[(&str, &str, &str)] = &[
    ("/", "text/html; charset=utf-8", include_str!("assets/index.html")),
    ("/assets/app.js", "text/javascript; charset=utf-8", include_str!("assets/app.js")),
    ("/assets/style.css", "text/css; charset=utf-8", include_str!("assets/style.css")),
    (
        "/assets/vendor/uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/vendor/uPlot.iife.min.js"),
    ),
    ("/assets/vendor/uPlot.min.css", "text/css; charset=utf-8", include_str!("assets/vendor/uPlot.min.css")),
];

pub async fn serve(listener: TcpListener, dashboard: Arc<Dashboard>, mut shutdown: Shutdown) {
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "dashboard accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.signaled() => return,
        };
        let (dashboard, mut shutdown) = (dashboard.clone(), shutdown.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let dashboard = dashboard.clone();
                async move { Ok::<_, Infallible>(handle(&dashboard, req).await) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                r = conn => if let Err(e) = r {
                    tracing::debug!(error = %e, "dashboard connection ended");
                },
                // Tap streams never end by themselves.
                () = shutdown.signaled() => {}
            }
        });
    }
}

async fn handle(d: &Dashboard, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path();
    if req.method() != Method::GET {
        return error(StatusCode::METHOD_NOT_ALLOWED, "use GET");
    }
    if let Some(host) = req.headers().get(header::HOST)
        && !host.to_str().is_ok_and(host_allowed)
    {
        return error(
            StatusCode::FORBIDDEN,
            "the dashboard answers only requests for an IP address or localhost (Host header)",
        );
    }
    if let Some((_, content_type, body)) = ASSETS.iter().find(|(p, ..)| *p == path) {
        return with_type(full(Bytes::from_static(body.as_bytes())), content_type);
    }
    let query = api::Query::parse(req.uri().query().unwrap_or(""));
    let answer = match path {
        "/api/stat" => api::stat(&d.telemetry, &query),
        "/api/routes" => api::routes(&d.telemetry, &query),
        "/api/edges" => api::edges(&d.telemetry, &query),
        "/api/series" => api::series(&d.telemetry, &query),
        "/api/workloads" => Ok(api::workloads(&d.telemetry)),
        "/api/prometheus/sd" => Ok(api::prometheus_sd(&d.telemetry)),
        "/api/tap" => return crate::telemetry::tap::relay(d, &query),
        _ if path.starts_with("/api/") => Err(api::ApiError::NotFound(format!("no API at {path}"))),
        _ => {
            let mut rsp =
                with_type(full(Bytes::from_static(b"not found; the dashboard is at /\n")), "text/plain; charset=utf-8");
            *rsp.status_mut() = StatusCode::NOT_FOUND;
            return rsp;
        }
    };
    match answer {
        Ok(value) => json(StatusCode::OK, &value),
        Err(e) => error(e.status(), &e.to_string()),
    }
}

/// Whether a request's Host names the dashboard by IP address or as
/// `localhost` (with any port). A web page loaded from elsewhere could point
/// a DNS name of its own at 127.0.0.1 (DNS rebinding) and read the API, tap
/// included, through the user's browser; it cannot make the browser send an
/// address or `localhost` as that page's Host, so those are all we answer.
fn host_allowed(host: &str) -> bool {
    let Ok(authority) = host.parse::<http::uri::Authority>() else { return false };
    let name = authority.host();
    let bare = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')).unwrap_or(name);
    bare.parse::<std::net::IpAddr>().is_ok() || name.eq_ignore_ascii_case("localhost")
}

pub fn full(bytes: Bytes) -> Response<Body> {
    Response::new(Full::new(bytes).boxed())
}

pub fn with_type(mut rsp: Response<Body>, content_type: &str) -> Response<Body> {
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        rsp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    rsp.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    rsp
}

pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut body = serde_json::to_vec(value).unwrap_or_default();
    body.push(b'\n');
    let mut rsp = with_type(full(Bytes::from(body)), "application/json");
    *rsp.status_mut() = status;
    rsp
}

pub fn error(status: StatusCode, message: &str) -> Response<Body> {
    json(status, &serde_json::json!({ "error": message }))
}

#[cfg(test)]
mod tests {
    use super::host_allowed;

    #[test]
    fn only_addresses_and_localhost_are_answered() {
        for (host, allowed) in [
            ("127.0.0.1:8084", true),
            ("127.0.0.1", true),
            ("198.18.0.1:8084", true),
            ("[::1]:8084", true),
            ("[::1]", true),
            ("localhost:8084", true),
            ("LOCALHOST", true),
            ("evil.example:8084", false),
            ("localhost.evil.example", false),
            ("127.0.0.1.nip.io:8084", false),
            ("", false),
            ("not a host", false),
        ] {
            assert_eq!(host_allowed(host), allowed, "{host:?}");
        }
    }
}
