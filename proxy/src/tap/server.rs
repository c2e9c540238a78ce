//! The tap's gRPC server: `weft.tap.v1.Tap/Observe` over mTLS (TLS 1.3,
//! ALPN `h2`) with the proxy's mesh certificate, clients verified against
//! the mesh's trust anchors.
//!
//! ```text
//! --tap-addr ─accept─► task: TLS handshake (≤ 10 s), the client's SPIFFE ID read from its chain
//!            ─► tonic ─► Observe: the control plane's identity? ─ no ─► PERMISSION_DENIED
//!                                   └ yes ─► subscribe ─► events until the caller goes
//! ```
//!
//! Any mesh identity completes the handshake; only the control plane's
//! (`spiffe://TD/ns/NS/sa/weft-control`, NS from `--control-plane-name`
//! `weft-control.NS.svc`) may observe.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;
use tonic::{Request, Response, Status};
use weft_api::tap::tap_server::{Tap, TapServer};
use weft_api::tap::{ObserveRequest, TapEvent};

use super::filter::Filter;
use super::{Subscription, Taps};
use crate::identity::{IdentityHandle, SpiffeId};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The service account the control plane runs as.
pub const CONTROL_SERVICE_ACCOUNT: &str = "weft-control";

/// The identity allowed to tap: the control plane's, in the trust domain of
/// `local` and the namespace of `control_plane_name` (`weft-control.NS.svc`).
pub fn control_identity(local: &SpiffeId, control_plane_name: &str) -> Option<SpiffeId> {
    let trust_domain = local.as_str().strip_prefix("spiffe://")?.split('/').next()?;
    let mut labels = control_plane_name.split('.');
    let namespace = match (labels.next(), labels.next()) {
        (Some(_), Some(ns)) if !ns.is_empty() => ns,
        _ => return None,
    };
    SpiffeId::new(trust_domain, namespace, CONTROL_SERVICE_ACCOUNT).ok()
}

/// Who is on the other end of a tap connection (a request extension).
#[derive(Clone, Debug)]
pub struct TapPeer {
    pub id: Option<SpiffeId>,
    pub addr: SocketAddr,
}

/// A TLS connection and its verified client.
pub struct TapIo {
    io: TlsStream<TcpStream>,
    peer: TapPeer,
}

impl Connected for TapIo {
    type ConnectInfo = TapPeer;

    fn connect_info(&self) -> TapPeer {
        self.peer.clone()
    }
}

impl AsyncRead for TapIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for TapIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Serves tap on `listener` for as long as the proxy runs.
pub async fn serve(listener: TcpListener, taps: Arc<Taps>, identity: IdentityHandle, allowed: SpiffeId) {
    let (tx, mut rx) = mpsc::channel::<io::Result<TapIo>>(16);
    tokio::spawn(accept(listener, identity, tx));
    let incoming = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let service = TapServer::new(TapService { taps, allowed });
    let server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)));
    if let Err(e) = server.serve_with_incoming(service, incoming).await {
        tracing::warn!(error = %e, "the tap server stopped");
    }
}

/// Accepts and handshakes (each on its own task) with the current certificate.
async fn accept(listener: TcpListener, identity: IdentityHandle, tx: mpsc::Sender<io::Result<TapIo>>) {
    loop {
        let (tcp, addr) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "tap accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(configs) = identity.configs() else {
            continue;
        };
        // The mesh server configuration (this proxy's certificate, clients
        // verified against the anchors), speaking gRPC's ALPN.
        let mut config = (*configs.server).clone();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let tx = tx.clone();
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let tls =
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, TlsAcceptor::from(Arc::new(config)).accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => return tracing::info!(%addr, error = %e, "tap TLS handshake failed"),
                    Err(_) => return tracing::info!(%addr, "tap TLS handshake timed out"),
                };
            let id = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| SpiffeId::from_cert(c.as_ref()).ok());
            let _ = tx.send(Ok(TapIo { io: tls, peer: TapPeer { id, addr } })).await;
        });
    }
}

struct TapService {
    taps: Arc<Taps>,
    allowed: SpiffeId,
}

/// A subscriber's events; dropping it (the caller went) unsubscribes.
pub struct Events {
    rx: mpsc::Receiver<TapEvent>,
    _subscription: Subscription,
}

impl Stream for Events {
    type Item = Result<TapEvent, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().rx.poll_recv(cx).map(|e| e.map(Ok))
    }
}

#[tonic::async_trait]
impl Tap for TapService {
    type ObserveStream = Events;

    async fn observe(&self, req: Request<ObserveRequest>) -> Result<Response<Events>, Status> {
        let peer = req.extensions().get::<TapPeer>().cloned();
        let caller = peer.as_ref().and_then(|p| p.id.as_ref());
        if caller != Some(&self.allowed) {
            let who = caller.map_or("a client without a mesh identity".to_owned(), |id| id.to_string());
            tracing::info!(caller = %who, addr = ?peer.map(|p| p.addr), "tap refused");
            return Err(Status::permission_denied(format!(
                "only {} may tap this proxy; the caller is {who}",
                self.allowed
            )));
        }
        let req = req.into_inner();
        let filter = Filter::from_api(req.r#match.as_ref()).map_err(Status::invalid_argument)?;
        tracing::info!(?filter, max_rps = req.max_rps, headers = req.extract_headers, "tap opened");
        let (subscription, rx) = self.taps.subscribe(filter, req.max_rps, req.extract_headers);
        Ok(Response::new(Events { rx, _subscription: subscription }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_control_plane_identity_comes_from_its_name() {
        let local = SpiffeId::parse("spiffe://example.org/ns/shop/sa/web").expect("id");
        let cases = [
            ("weft-control.weft-system.svc", Some("spiffe://example.org/ns/weft-system/sa/weft-control")),
            ("weft-control.mesh.svc", Some("spiffe://example.org/ns/mesh/sa/weft-control")),
            ("weft-control", None),
            ("weft-control..svc", None),
        ];
        for (name, want) in cases {
            let got = control_identity(&local, name);
            assert_eq!(got.as_ref().map(SpiffeId::as_str), want, "{name}");
        }
    }
}
