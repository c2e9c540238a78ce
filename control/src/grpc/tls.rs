//! TLS on the gRPC listener: accepted TCP connections are handshaken on
//! their own tasks (a slow or silent client holds up no one) and handed to
//! tonic as they complete.
//!
//! ```text
//!  listener ─accept─► task: handshake (≤ 10 s) ─mpsc─► tonic's incoming stream
//! ```

use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

use crate::shutdown::Shutdown;

/// A client that has not finished its handshake by then is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub type Incoming = ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>>;

/// Accepts on `listener` until shutdown and yields TLS streams.
pub fn incoming(listener: TcpListener, config: Arc<ServerConfig>, mut shutdown: Shutdown) -> Incoming {
    let (tx, rx) = mpsc::channel(64);
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "gRPC accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = shutdown.signaled() => return,
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => tracing::info!(
                        %peer,
                        error = %e,
                        "TLS handshake with a proxy failed; it must connect with TLS, pin the mesh trust anchors and verify the name weft-control.NAMESPACE.svc (this control plane's --namespace)"
                    ),
                    Err(_) => tracing::info!(%peer, "TLS handshake timed out after {HANDSHAKE_TIMEOUT:?}"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
