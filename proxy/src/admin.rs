//! The admin server: `/ready`, `/live`, `/metrics`, `/config`, `/shutdown`.
//!
//! It binds to loopback by default and additionally refuses non-loopback
//! peers for `/shutdown` and `/config`, so that a misconfigured bind address
//! does not let another pod stop this one or read its settings. It runs on
//! the same runtime but does no work on the data path: metrics are rendered
//! only here, when scraped.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::config::Config;
use crate::control::discovery::Resolver;
use crate::control::registry::Registration;
use crate::drain;
use crate::metrics::Metrics;

/// Shared state the admin endpoints read.
#[derive(Debug)]
pub struct Admin {
    pub metrics: Arc<Metrics>,
    pub config: Config,
    /// Set once the proxy's listeners are bound.
    pub ready: AtomicBool,
    pub shutdown: drain::Trigger,
    pub resolver: Arc<Resolver>,
    pub registration: Arc<Registration>,
    pub identity: Option<crate::identity::IdentityHandle>,
    pub inbound_policies: Option<Arc<crate::control::inbound_policy::InboundPolicies>>,
    pub trace: crate::trace::Tracer,
}

pub async fn serve(listener: TcpListener, admin: Arc<Admin>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(handle(&admin, peer, &req)) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "admin connection ended");
            }
        });
    }
}

fn handle(admin: &Admin, peer: SocketAddr, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let loopback = peer.ip().is_loopback();
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/live") => text(StatusCode::OK, "live\n"),
        (&Method::GET, "/ready") => {
            if admin.ready.load(Ordering::Acquire) && !admin.shutdown.is_fired() {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            }
        }
        (&Method::GET, "/metrics") => {
            let mut text = crate::metrics::render(&admin.metrics);
            crate::metrics::render_circuits(&mut text, &admin.resolver.circuits());
            admin.trace.render(&mut text);
            let mut rsp = Response::new(Full::new(Bytes::from(text)));
            rsp.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            rsp
        }
        (_, "/config" | "/shutdown") if !loopback => text(StatusCode::FORBIDDEN, "only from loopback\n"),
        (&Method::GET, "/config") => {
            let body = serde_json::json!({
                "version": env!("CARGO_PKG_VERSION"),
                "settings": format!("{:?}", admin.config),
                "lease": admin.registration.lease_id(),
                "identity": admin.identity.as_ref().map(|i| i.describe()),
                "inbound_policies": admin.inbound_policies.as_ref().map(|p| p.describe()),
                "discovery": admin.resolver.describe(),
                "tracing": {
                    "collector": admin.trace.settings().collector,
                    "sampling_ratio": admin.trace.settings().sampling_ratio,
                },
            });
            let mut rsp = text(StatusCode::OK, &format!("{body:#}\n"));
            rsp.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
            rsp
        }
        (&Method::POST, "/shutdown") => {
            tracing::info!("shutdown requested through the admin endpoint");
            admin.shutdown.fire();
            text(StatusCode::OK, "shutting down\n")
        }
        (_, "/shutdown") => text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n"),
        (_, "/live" | "/ready" | "/metrics" | "/config") => text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n"),
        _ => text(StatusCode::NOT_FOUND, "not found; try /ready, /live, /metrics, /config or POST /shutdown\n"),
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut rsp = Response::new(Full::new(Bytes::copy_from_slice(body.as_bytes())));
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain; charset=utf-8"));
    rsp
}
