//! Inbound: connections from other pods, redirected by PREROUTING. They go
//! to the application on loopback at the port they were addressed to, so
//! the app sees them coming from the proxy (127.0.0.1), never redirected
//! again (OUTPUT rules skip loopback).
//!
//! mTLS termination and authorization slot in here (a later stage) before
//! any byte reaches the app.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::control::discovery::Resolution;
use crate::transport::orig_dst::OrigDstAddr;

/// Where an inbound connection is forwarded.
pub fn upstream(orig: OrigDstAddr) -> Resolution {
    Resolution::Forward(app_addr(orig))
}

/// The app, on loopback, in the address family the client used.
pub fn app_addr(orig: OrigDstAddr) -> SocketAddr {
    let ip = if orig.0.is_ipv4() { Ipv4Addr::LOCALHOST.into() } else { Ipv6Addr::LOCALHOST.into() };
    SocketAddr::new(ip, orig.0.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbound_goes_to_loopback_at_the_original_port() {
        let v4 = OrigDstAddr("198.18.0.12:8080".parse().expect("addr"));
        assert_eq!(app_addr(v4), "127.0.0.1:8080".parse().expect("addr"));
        let v6 = OrigDstAddr("[2001:db8::2]:80".parse().expect("addr"));
        assert_eq!(app_addr(v6), "[::1]:80".parse().expect("addr"));
    }
}
