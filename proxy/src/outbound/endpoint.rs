//! Where a request, an upgrade, an opaque connection, a tunnel or a mirror
//! copy goes: the one endpoint-picking entry point of the outbound side,
//! after routing and backend choice, before any transport.

use std::net::SocketAddr;
use std::time::Duration;

use http::HeaderMap;

use super::{Outbound, OutboundError};
use crate::balance::{Pick, PickOptions};
use crate::control::discovery::Resolution;
use crate::policy::compiled::{Balance, CompiledPolicy};
use crate::transport::tls::{self, UpstreamIo};

/// The fixed destination, or the service's balancer under `policy` (the
/// route's balancer kind, the circuit breaker's ejections, `avoid`: the
/// endpoint the last attempt failed on). Refuses this proxy's own outbound
/// listener: an explicit proxy request for it (or a service endpoint
/// registered there) would otherwise have the proxy connect to itself,
/// recursively.
pub fn choose(
    outbound: &Outbound,
    upstream: &Resolution,
    policy: &CompiledPolicy,
    balance: &Balance,
    headers: &HeaderMap,
    avoid: Option<SocketAddr>,
) -> Result<(SocketAddr, Option<Pick>), OutboundError> {
    let (addr, pick) = match upstream {
        Resolution::Forward(addr) => (*addr, None),
        Resolution::Service(target) => {
            let options = PickOptions { balance, headers, circuit: policy.circuit.as_ref(), avoid };
            let pick = target.balancer.pick_with(&options).ok_or(OutboundError::NoEndpoints)?;
            (pick.addr(), Some(pick))
        }
    };
    if is_listener(outbound.listener, addr) {
        return Err(OutboundError::Loop(addr));
    }
    Ok((addr, pick))
}

/// The policy a request (or connection) to `upstream` runs under: the
/// service's, waited for up to the policy timeout (a mesh service is never
/// routed without it), or the proxy's defaults for destinations outside the
/// mesh.
pub async fn policy_for(
    outbound: &Outbound,
    upstream: &Resolution,
) -> Result<std::sync::Arc<CompiledPolicy>, OutboundError> {
    match upstream {
        Resolution::Service(target) => target
            .policy_within(outbound.policy_timeout)
            .await
            .ok_or(OutboundError::PolicyUnavailable(outbound.policy_timeout)),
        Resolution::Forward(_) => Ok(outbound.fallback_policy.clone()),
    }
}

/// Chooses an endpoint for an opaque stream (a connection, or an explicit
/// proxy's CONNECT tunnel) under the service's policy (its balancer kind
/// and circuit breaker: routes, being HTTP, do not apply) and connects to
/// it, with mesh TLS when it is meshed, under the policy's connect timeout.
/// Keep the returned pick while the stream is open; close the stream after
/// the returned idle time without a byte (the policy's, or
/// `--tcp-idle-timeout`).
pub async fn connect_opaque(
    upstream: &Resolution,
    outbound: &Outbound,
) -> Result<(UpstreamIo, Option<Pick>, Duration), OutboundError> {
    let policy = policy_for(outbound, upstream).await?;
    let timeouts = policy.default.timeouts;
    let (addr, pick) = choose(outbound, upstream, &policy, &policy.default.balance, &HeaderMap::new(), None)?;
    let tls = pick.as_ref().and_then(|p| outbound.http.tls_target(&p.endpoint, true));
    let connect_timeout = timeouts.connect.unwrap_or(outbound.config.connect_timeout);
    let up =
        tls::connect_upstream(addr, connect_timeout, tls.as_ref()).await.map_err(|e| OutboundError::Proxy(e.into()))?;
    if let Some(pick) = &pick {
        pick.observe();
    }
    Ok((up, pick, timeouts.idle.unwrap_or(outbound.config.tcp_idle_timeout)))
}

/// Whether connecting to `addr` reaches `listener` (bound to it, or to the
/// unspecified address on its port, which loopback and local addresses reach).
fn is_listener(listener: SocketAddr, addr: SocketAddr) -> bool {
    let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
    let (listener, addr) = (canonical(listener), canonical(addr));
    if listener.port() != addr.port() {
        return false;
    }
    listener.ip() == addr.ip()
        || (listener.ip().is_unspecified() && (addr.ip().is_loopback() || addr.ip().is_unspecified()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_own_listener_is_never_a_destination() {
        let cases = [
            ("127.9.1.2:4140", "127.9.1.2:4140", true),
            ("127.9.1.2:4140", "127.9.1.3:4140", false),
            ("127.9.1.2:4140", "127.9.1.2:8080", false),
            ("127.0.0.1:4140", "[::ffff:127.0.0.1]:4140", true),
            ("0.0.0.0:4140", "127.0.0.1:4140", true),
            ("0.0.0.0:4140", "198.18.1.2:4140", false),
            ("[::]:4140", "[::1]:4140", true),
        ];
        for (listener, addr, want) in cases {
            let got = is_listener(listener.parse().expect("addr"), addr.parse().expect("addr"));
            assert_eq!(got, want, "{addr} via {listener}");
        }
    }
}
