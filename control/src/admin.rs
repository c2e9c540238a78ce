//! The admin server: `/live`, `/ready`, `/metrics` and `/state`.
//!
//! `/state` dumps the index (services, workloads, policies in force), the
//! registry's leases, the refused files and the CA (issuer, expiry, trust
//! anchor fingerprints, token counts — never a token or key), as JSON, for
//! debugging and for `weft check`. It binds to loopback by default and refuses non-loopback
//! peers for `/state`, which shows every workload's address.

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

use crate::ca::Ca;
use crate::index::Index;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::source::Diagnostics;
use crate::source::registry::Registry;

/// What the admin endpoints read.
#[derive(Debug)]
pub struct Admin {
    pub index: Index,
    pub registry: Registry,
    pub metrics: Arc<Metrics>,
    pub diagnostics: Arc<Diagnostics>,
    /// The mesh CA, when on.
    pub ca: Option<Ca>,
    /// Set once the sources' first load is published and gRPC is bound.
    pub ready: AtomicBool,
}

pub async fn serve(listener: TcpListener, admin: Arc<Admin>, mut shutdown: Shutdown) {
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.signaled() => return,
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
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/live") => text(StatusCode::OK, "live\n"),
        (&Method::GET, "/ready") => {
            if admin.ready.load(Ordering::Acquire) {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            }
        }
        (&Method::GET, "/metrics") => {
            let body = admin.metrics.render(&admin.index.state(), &admin.diagnostics, admin.registry.len());
            with_type(Response::new(Full::new(Bytes::from(body))), "text/plain; version=0.0.4; charset=utf-8")
        }
        (&Method::GET, "/state") if !peer.ip().is_loopback() => text(StatusCode::FORBIDDEN, "only from loopback\n"),
        (&Method::GET, "/state") => {
            let mut state = admin.index.state().to_json();
            state["leases"] = serde_json::to_value(admin.registry.leases()).unwrap_or_default();
            state["rejected"] = serde_json::to_value(admin.diagnostics.rejections()).unwrap_or_default();
            state["rejectedTotal"] = admin.diagnostics.rejected_total().into();
            state["ca"] = match &admin.ca {
                Some(ca) => ca.state_json(std::time::SystemTime::now()),
                None => serde_json::json!({ "enabled": false }),
            };
            let mut body = serde_json::to_vec_pretty(&state).unwrap_or_default();
            body.push(b'\n');
            with_type(Response::new(Full::new(Bytes::from(body))), "application/json")
        }
        (_, "/live" | "/ready" | "/metrics" | "/state") => text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n"),
        _ => text(StatusCode::NOT_FOUND, "not found; try /ready, /live, /metrics or /state\n"),
    }
}

fn with_type(mut rsp: Response<Full<Bytes>>, content_type: &'static str) -> Response<Full<Bytes>> {
    rsp.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    rsp
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut rsp = with_type(Response::new(Full::new(Bytes::from_static(body.as_bytes()))), "text/plain; charset=utf-8");
    *rsp.status_mut() = status;
    rsp
}
