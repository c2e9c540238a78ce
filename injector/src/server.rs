//! The HTTPS server: `POST /inject` (AdmissionReview), `GET /ready` (200
//! once a valid serving certificate is loaded, else 503 saying why).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::core::v1::Namespace;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::mutate::{NamespaceInfo, Settings};
use crate::review;
use crate::tls::ServingCert;

/// An AdmissionReview of a large Pod is well under this.
const MAX_BODY: usize = 3 * 1024 * 1024;
/// How long the Namespace lookup may take (the API server gives the whole
/// webhook call 10 s).
const NAMESPACE_TIMEOUT: Duration = Duration::from_secs(3);

pub struct Injector {
    pub settings: Settings,
    /// Reads Namespaces (their `weft.dev/inject`); `None`: only Pods that
    /// say `weft.dev/inject: enabled` themselves are injected.
    pub client: Option<kube::Client>,
    /// The certificate served, for `/ready`.
    pub cert: Arc<ServingCert>,
}

impl std::fmt::Debug for Injector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Injector").field("settings", &self.settings).finish_non_exhaustive()
    }
}

/// Serves until the task is dropped.
pub async fn serve(listener: TcpListener, tls: Arc<rustls::ServerConfig>, injector: Arc<Injector>) {
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (acceptor, injector) = (acceptor.clone(), injector.clone());
        tokio::spawn(async move {
            let mut changes = injector.cert.changes();
            changes.borrow_and_update();
            let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
            };
            // The certificate this connection was (all but surely) made
            // with, for the admission log.
            let serial: Arc<str> = injector.cert.current().map_or_else(|| "none".into(), |c| c.serial.as_str().into());
            let service = service_fn(move |req| handle(req, injector.clone(), peer, serial.clone()));
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let mut conn = std::pin::pin!(builder.serve_connection(TokioIo::new(tls), service));
            let ended = tokio::select! {
                ended = conn.as_mut() => ended,
                // A new certificate: finish what is in flight, then close
                // (GOAWAY), so the client's next handshake gets it.
                Ok(()) = changes.changed() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
        });
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

async fn handle(
    req: Request<Incoming>,
    injector: Arc<Injector>,
    peer: SocketAddr,
    serial: Arc<str>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/ready") => {
            return Ok(match injector.cert.readiness(std::time::SystemTime::now()) {
                Ok(()) => text(StatusCode::OK, "ready\n".into()),
                Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
            });
        }
        (&Method::POST, "/inject") => {}
        (_, "/inject") => return Ok(text(StatusCode::METHOD_NOT_ALLOWED, "POST an AdmissionReview\n".into())),
        _ => return Ok(text(StatusCode::NOT_FOUND, "POST /inject or GET /ready\n".into())),
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Ok(text(
                StatusCode::BAD_REQUEST,
                format!("cannot read the body (at most {MAX_BODY} bytes): {e}\n"),
            ));
        }
    };
    let request = match review::parse(&body) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(%peer, error = %e, "refused a request that is not an AdmissionReview");
            return Ok(text(StatusCode::BAD_REQUEST, format!("{e}\n")));
        }
    };
    let ns = namespace(&injector, &request.namespace).await;
    let (review, said) = review::answer(&request, &ns, &injector.settings);
    tracing::info!(uid = %request.uid, namespace = %request.namespace, decision = %said, %serial, "admission");
    let mut r = Response::new(Full::new(Bytes::from(serde_json::to_vec(&review).unwrap_or_default())));
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    Ok(r)
}

/// The Namespace's labels and annotations; empty when they cannot be read
/// (then only the Pod's own `weft.dev/inject` counts).
async fn namespace(injector: &Injector, name: &str) -> NamespaceInfo {
    let mut info = NamespaceInfo { name: name.to_owned(), ..Default::default() };
    let Some(client) = &injector.client else { return info };
    let api: kube::Api<Namespace> = kube::Api::all(client.clone());
    match tokio::time::timeout(NAMESPACE_TIMEOUT, api.get(name)).await {
        Ok(Ok(ns)) => {
            info.labels = ns.metadata.labels.unwrap_or_default();
            info.annotations = ns.metadata.annotations.unwrap_or_default();
        }
        Ok(Err(e)) => {
            tracing::warn!(namespace = %name, error = %e, "cannot read the namespace; deciding on the pod alone")
        }
        Err(_) => tracing::warn!(namespace = %name, "the namespace lookup timed out; deciding on the pod alone"),
    }
    info
}
