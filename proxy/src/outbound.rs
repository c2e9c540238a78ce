//! Outbound: connections from the app, redirected by OUTPUT. The original
//! destination is resolved through the control plane
//! ([`crate::control::discovery`]): a service's virtual IP becomes a
//! balanced set of endpoints; anything else goes where the app sent it.
//! mTLS to meshed endpoints slots in between the pick and the connect.

use crate::control::discovery::{Resolution, Resolver};
use crate::transport::orig_dst::OrigDstAddr;

/// Where an outbound connection (or its requests) is forwarded.
pub async fn upstream(resolver: &Resolver, orig: OrigDstAddr) -> Resolution {
    resolver.resolve(orig.0).await
}
