//! Opening upstream TCP connections, with a deadline.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

/// Why an upstream connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connection to {addr} refused; is anything listening on that port?")]
    Refused { addr: SocketAddr },
    #[error("connection to {addr} timed out after {timeout:?}; is a firewall dropping it, or the host down?")]
    Timeout { addr: SocketAddr, timeout: Duration },
    #[error("mesh TLS handshake with {addr} failed: {source}")]
    Tls {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("{addr} proved identity {got}, but discovery expects {expected}; refusing to send it traffic")]
    IdentityMismatch { addr: SocketAddr, expected: String, got: String },
    #[error("connecting to {addr} failed: {source}")]
    Io {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// Connects to `addr`, giving up after `timeout`. Nagle is turned off: the
/// proxy forwards what it receives as soon as it receives it.
pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, ConnectError> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_) => return Err(ConnectError::Timeout { addr, timeout }),
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => return Err(ConnectError::Refused { addr }),
        Ok(Err(source)) => return Err(ConnectError::Io { addr, source }),
        Ok(Ok(s)) => s,
    };
    // Not fatal: the connection works, only with worse latency.
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%addr, error = %e, "could not set TCP_NODELAY");
    }
    Ok(stream)
}
