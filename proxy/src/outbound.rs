//! Outbound: connections from the app, redirected by OUTPUT. For now each
//! goes to its original destination. Discovery (service IP → endpoints),
//! load balancing and mTLS replace [`upstream`] with a resolution step in a
//! later stage; detection and the HTTP/TCP stacks stay as they are.

use std::net::SocketAddr;

use crate::transport::orig_dst::OrigDstAddr;

/// Where an outbound connection is forwarded.
pub fn upstream(orig: OrigDstAddr) -> SocketAddr {
    orig.0
}
