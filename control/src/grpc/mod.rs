//! The gRPC API (`weft-api`): thin handlers that parse requests, map errors
//! to status codes, and start watch streams over the index.
//!
//! | service | handler | answers from |
//! | --- | --- | --- |
//! | `Discovery.Watch` | [`discovery`] | `State::resolve` |
//! | `Policy.WatchOutbound` / `WatchInbound` | [`policy`] | `State::outbound` / `State::inbound` |
//! | `Registry.Register/Heartbeat/Deregister` | [`registry`] | the lease table (`source::registry`) |
//! | `Identity.Certify` / `WatchTrustAnchors` | [`identity`] | the mesh CA (`crate::ca`) |
//! | `ProxyConfig.Watch` | [`config`] | the tracing flags (`--trace-collector`, `--trace-sampling`) |
//!
//! Streams that ask the same question share one answer per change
//! ([`answers`]).
//!
//! With the CA on, the listener speaks TLS 1.3 ([`tls`]) with a serving
//! certificate from the CA; with it off, plaintext HTTP/2.

pub mod answers;
pub mod config;
pub mod discovery;
pub mod identity;
pub mod policy;
pub mod registry;
pub mod tls;
pub mod watch;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::body::Body;
use tonic::codegen::Service;
use tonic::server::NamedService;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use weft_api::config::proxy_config_server::ProxyConfigServer;
use weft_api::discovery::discovery_server::DiscoveryServer;
use weft_api::identity::identity_server::IdentityServer;
use weft_api::policy::policy_server::PolicyServer;
use weft_api::registry::registry_server::RegistryServer;

use crate::ca::Ca;
use crate::shutdown::Shutdown;
use crate::source::registry::Registry;

/// The name a request's proxy goes by in logs and metrics: its `proxy_id`,
/// or its peer address when it sent none.
fn proxy_name<T>(req: &tonic::Request<T>, proxy_id: &str) -> String {
    if !proxy_id.is_empty() {
        return proxy_id.to_owned();
    }
    req.remote_addr().map_or_else(|| "unknown".to_owned(), |a| a.to_string())
}

/// Serves the gRPC API on `listener` until `shutdown` fires: over TLS
/// with `tls`, else plaintext.
pub async fn serve(
    listener: TcpListener,
    streams: watch::Streams,
    registry: Registry,
    ca: Option<Ca>,
    tls: Option<Arc<rustls::ServerConfig>>,
    trace: tokio::sync::watch::Receiver<Arc<config::TraceSettings>>,
    shutdown: Shutdown,
) -> Result<(), tonic::transport::Error> {
    let api = Api {
        config: ProxyConfigServer::new(config::ConfigService { streams: streams.clone(), settings: trace }),
        discovery: DiscoveryServer::new(discovery::DiscoveryService::new(streams.clone())),
        policy: PolicyServer::new(policy::PolicyService::new(streams.clone())),
        registry: RegistryServer::new(registry::RegistryService { registry }),
        identity: IdentityServer::new(identity::IdentityService { ca, streams }),
    };
    let server = Server::builder()
        // Watch streams idle for long stretches: keepalives find dead peers
        // (a proxy whose pod vanished) and keep NATs from forgetting live ones.
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)));
    let mut signal = shutdown.clone();
    let signal = async move { signal.signaled().await };
    match tls {
        Some(config) => {
            let incoming = tls::incoming(listener, config, shutdown);
            server.serve_with_incoming_shutdown(api, incoming, signal).await
        }
        None => {
            let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
            server.serve_with_incoming_shutdown(api, incoming, signal).await
        }
    }
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

/// Routes `/<package.Service>/<Method>` to the five services. Tonic's own
/// router needs its `router` feature, which pulls in axum for four prefix
/// matches; this is the whole of what we need from it.
#[derive(Clone)]
struct Api {
    discovery: DiscoveryServer<discovery::DiscoveryService>,
    policy: PolicyServer<policy::PolicyService>,
    registry: RegistryServer<registry::RegistryService>,
    identity: IdentityServer<identity::IdentityService>,
    config: ProxyConfigServer<config::ConfigService>,
}

fn call<S>(svc: &mut S, req: http::Request<Body>) -> BoxFuture
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    Box::pin(svc.call(req))
}

fn is<S: NamedService>(_: &S, path: &str) -> bool {
    path.strip_prefix('/').and_then(|p| p.strip_prefix(S::NAME)).is_some_and(|rest| rest.starts_with('/'))
}

impl Service<http::Request<Body>> for Api {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The generated servers are always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> BoxFuture {
        let path = req.uri().path().to_owned();
        if is(&self.discovery, &path) {
            call(&mut self.discovery, req)
        } else if is(&self.policy, &path) {
            call(&mut self.policy, req)
        } else if is(&self.registry, &path) {
            call(&mut self.registry, req)
        } else if is(&self.identity, &path) {
            call(&mut self.identity, req)
        } else if is(&self.config, &path) {
            call(&mut self.config, req)
        } else {
            let status = tonic::Status::unimplemented(format!("no such service: {path}"));
            Box::pin(std::future::ready(Ok(status.into_http())))
        }
    }
}
