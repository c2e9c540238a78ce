//! Opaque TCP to the mesh: balanced per connection under the service's
//! policy, mTLS when the endpoint is meshed, then spliced.

use super::Outbound;
use super::endpoint::connect_opaque;
use crate::control::discovery::Resolution;
use crate::metrics::Direction;
use crate::transport::splice;

/// Splices `io` with an endpoint of `upstream`. The endpoint stays
/// "pending" for the balancer while the connection is open, and its connect
/// time feeds the EWMA.
pub async fn forward<I>(io: I, upstream: &Resolution, outbound: &Outbound)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let dir = Direction::Outbound.as_str();
    let (up, _pick, idle) = match connect_opaque(upstream, outbound).await {
        Ok(connected) => connected,
        Err(e) => {
            // Opaque TCP has no way to say why: the client sees the close.
            tracing::info!(direction = dir, error = %e, "opaque connection failed");
            return;
        }
    };
    match splice::splice(io, up, idle).await {
        Ok(t) => tracing::debug!(direction = dir, ?t, "opaque connection closed"),
        Err(e) => {
            outbound.http.metrics.spliced(&e);
            tracing::debug!(direction = dir, error = %e, "opaque connection ended");
        }
    }
}
