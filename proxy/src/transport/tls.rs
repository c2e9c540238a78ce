//! Mesh TLS on the data path: originating it to meshed endpoints (outbound)
//! and terminating it from meshed clients (inbound).
//!
//! Outbound, the handshake verifies the server's chain against the trust
//! anchors, then its SPIFFE ID against the identity discovery announced for
//! that endpoint; a mismatch fails the connection before any request byte
//! is written. Inbound, the ClientHello is inspected from the bytes
//! detection already read: only hellos offering a Weft ALPN are terminated
//! here (an application's own TLS passes through untouched), and the
//! client's verified identity comes out as a [`Verified`] value.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector, client, server};

use super::connect::ConnectError;
use crate::identity::{ALPN_HTTP, ALPN_OPAQUE, SpiffeId, Verified};

/// How the handshake budget is bounded, on both sides.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// A meshed endpoint to reach: the client configuration to use and the
/// identity the server must prove.
#[derive(Clone, Debug)]
pub struct TlsTarget {
    pub config: Arc<ClientConfig>,
    pub expected: SpiffeId,
}

/// Upgrades `tcp` to mesh TLS and checks the server's identity.
pub async fn connect(
    tcp: TcpStream,
    addr: SocketAddr,
    target: &TlsTarget,
) -> Result<client::TlsStream<TcpStream>, ConnectError> {
    let connector = TlsConnector::from(target.config.clone());
    // The name only keys the session cache: identity is checked below.
    let name = ServerName::IpAddress(addr.ip().into());
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(name, tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(source)) => return Err(ConnectError::Tls { addr, source }),
        Err(_) => return Err(ConnectError::Timeout { addr, timeout: HANDSHAKE_TIMEOUT }),
    };
    let got = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| SpiffeId::from_cert(c.as_ref()));
    match got {
        Some(Ok(id)) if id == target.expected => Ok(tls),
        Some(Ok(id)) => {
            Err(ConnectError::IdentityMismatch { addr, expected: target.expected.to_string(), got: id.to_string() })
        }
        Some(Err(e)) => {
            Err(ConnectError::IdentityMismatch { addr, expected: target.expected.to_string(), got: e.to_string() })
        }
        None => Err(ConnectError::IdentityMismatch {
            addr,
            expected: target.expected.to_string(),
            got: "no certificate".into(),
        }),
    }
}

/// What the first bytes of an inbound connection say about TLS.
#[derive(Debug, PartialEq, Eq)]
pub enum Hello {
    /// Not a TLS record at all.
    NotTls,
    /// A TLS ClientHello that does not offer a Weft ALPN: the app's own TLS.
    Foreign,
    /// A mesh client; the ALPN it asked for.
    Mesh(&'static [u8]),
    /// Looks like TLS but the hello is not complete in these bytes.
    Incomplete,
}

/// Parses the ClientHello in `prefix` with rustls (without consuming the
/// connection: the bytes are replayed to the real handshake).
pub fn inspect(prefix: &[u8]) -> Hello {
    // TLS handshake record: content type 22, legacy version 3.x.
    if prefix.len() < 3 || prefix[0] != 0x16 || prefix[1] != 0x03 {
        return Hello::NotTls;
    }
    let mut acceptor = rustls::server::Acceptor::default();
    let mut rd: &[u8] = prefix;
    // The acceptor reads at most one chunk per call; feed it everything.
    while !rd.is_empty() {
        match acceptor.read_tls(&mut rd) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    match acceptor.accept() {
        Ok(Some(accepted)) => {
            let offers = |p: &[u8]| accepted.client_hello().alpn().is_some_and(|mut it| it.any(|a| a == p));
            if offers(ALPN_OPAQUE) {
                Hello::Mesh(ALPN_OPAQUE)
            } else if offers(ALPN_HTTP) {
                Hello::Mesh(ALPN_HTTP)
            } else {
                Hello::Foreign
            }
        }
        Ok(None) => Hello::Incomplete,
        Err(_) => Hello::Foreign,
    }
}

/// Terminates mesh TLS on `io` (whose first bytes are the ClientHello) and
/// returns the stream and the client's verified identity.
///
/// The stream is boxed, and so is the handshake while it runs: a
/// connection's task then carries a pointer, not a ServerConnection, for
/// as long as the connection lives (issue #14: memory per idle connection).
pub async fn accept<I>(io: I, config: Arc<ServerConfig>) -> io::Result<(Box<server::TlsStream<I>>, Verified)>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let tls = Box::pin(tokio::time::timeout(HANDSHAKE_TIMEOUT, TlsAcceptor::from(config).accept(io)))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
    // The verifier required and checked a client chain; read its identity.
    let id = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or_else(|| io::Error::new(io::ErrorKind::PermissionDenied, "no client certificate"))
        .and_then(|c| {
            SpiffeId::from_cert(c.as_ref()).map_err(|e| io::Error::new(io::ErrorKind::PermissionDenied, e))
        })?;
    Ok((Box::new(tls), Verified::from_tls_handshake(id)))
}

/// An upstream connection, plaintext or mesh TLS.
#[derive(Debug)]
pub enum UpstreamIo {
    Plain(TcpStream),
    Tls(Box<client::TlsStream<TcpStream>>),
}

impl AsyncRead for UpstreamIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamIo::Plain(s) => s.is_write_vectored(),
            UpstreamIo::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Opens an upstream connection: TCP, then mesh TLS when `tls` is given.
pub async fn connect_upstream(
    addr: SocketAddr,
    timeout: Duration,
    tls: Option<&TlsTarget>,
) -> Result<UpstreamIo, ConnectError> {
    let tcp = super::connect::connect(addr, timeout).await?;
    match tls {
        None => Ok(UpstreamIo::Plain(tcp)),
        // The handshake's state (a whole ClientConnection, mid-flight) is
        // boxed for the handshake alone, not carried for the connection's
        // life by every task that awaits this (issue #14).
        Some(target) => Ok(UpstreamIo::Tls(Box::new(Box::pin(connect(tcp, addr, target)).await?))),
    }
}
