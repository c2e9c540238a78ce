//! Recovering a redirected connection's original destination.
//!
//! iptables `REDIRECT` rewrites the destination to our listener; conntrack
//! remembers the original, which `SO_ORIGINAL_DST` (IPv4) or
//! `IP6T_SO_ORIGINAL_DST` (IPv6) returns. A connection that reached the
//! listener directly (no redirect) reports the listener's own address; proxying
//! it would connect the proxy to itself forever, so it is refused.

use std::fmt;
use std::io;
use std::net::SocketAddr;

use socket2::SockRef;
use tokio::net::TcpStream;

/// Where the client meant to connect before iptables redirected it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OrigDstAddr(pub SocketAddr);

impl fmt::Display for OrigDstAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OrigDstError {
    #[error(
        "reading the original destination (SO_ORIGINAL_DST) failed: {0}; was the connection redirected by `weft-proxy init`'s iptables rules?"
    )]
    Lookup(#[source] io::Error),
    #[error(
        "connection to {0} was not redirected by iptables (it targets the proxy's own listener); refusing it to avoid a loop"
    )]
    NotRedirected(SocketAddr),
}

/// Returns the original destination of an accepted, redirected connection.
pub fn orig_dst(stream: &TcpStream) -> Result<OrigDstAddr, OrigDstError> {
    let local = stream.local_addr().map_err(OrigDstError::Lookup)?;
    let sock = SockRef::from(stream);
    let addr = if local.is_ipv4() { sock.original_dst_v4() } else { sock.original_dst_v6() };
    let addr = addr
        .map_err(OrigDstError::Lookup)?
        .as_socket()
        .ok_or_else(|| OrigDstError::Lookup(io::Error::other("not an IP address")))?;
    check_redirected(addr, local)
}

/// A connection is looped when its original destination is the socket it
/// arrived on (`local`): nothing redirected it.
fn check_redirected(orig: SocketAddr, local: SocketAddr) -> Result<OrigDstAddr, OrigDstError> {
    if normalize(orig) == normalize(local) {
        return Err(OrigDstError::NotRedirected(orig));
    }
    Ok(OrigDstAddr(orig))
}

fn normalize(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => addr,
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_to_the_listener_itself_is_refused() {
        let cases = [
            ("198.18.0.2:80", "198.18.0.2:4143", true),
            ("127.0.0.1:4140", "127.0.0.1:4140", false),
            ("198.18.0.2:4143", "198.18.0.2:4143", false),
            ("[::ffff:198.18.0.2]:4143", "198.18.0.2:4143", false),
            ("[::1]:8080", "[::1]:4140", true),
        ];
        for (orig, local, ok) in cases {
            let got = check_redirected(orig.parse().expect("addr"), local.parse().expect("addr"));
            assert_eq!(got.is_ok(), ok, "{orig} via {local}: {got:?}");
        }
    }
}
