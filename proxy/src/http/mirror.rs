//! `RequestMirror`: a fire-and-forget copy of a request to another service.
//!
//! The copy goes out beside the real request and never delays it: it runs
//! in its own task, its response is read and thrown away, and it gives up
//! after [`MIRROR_TIMEOUT`]. Copies are bounded: at most
//! [`MAX_MIRRORS_IN_FLIGHT`] at once per proxy, the rest skipped and
//! counted, so a slow shadow service cannot make the proxy hold memory
//! without bound. Only bodies the proxy buffered (known length, at most the
//! route's `maxBodyBytes`) are mirrored; a streamed body is sent once, to
//! the real backend only.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt as _, Either, Full};

use super::outbound::clone_head;
use super::service::ProxyService;
use crate::control::target::{NameTarget, Target};
use crate::policy::filters::Mirror;

/// Copies in flight per proxy, at most.
pub const MAX_MIRRORS_IN_FLIGHT: usize = 64;
/// A copy's whole exchange, response body included.
pub const MIRROR_TIMEOUT: Duration = Duration::from_secs(5);

fn count(c: &AtomicU64) {
    c.fetch_add(1, Relaxed);
}

/// Sends a copy of the request (`parts` and its buffered `body`) to the
/// mirror's service, unless too many copies are in flight already.
pub fn spawn(svc: &ProxyService, mirror: &Mirror, parts: &http::request::Parts, body: Bytes) {
    let shared = svc.shared.clone();
    let Ok(permit) = shared.mirrors.clone().try_acquire_owned() else {
        count(&shared.metrics.policy.mirror_skipped);
        return;
    };
    let Some(target) = NameTarget::new(&mirror.service, mirror.port).map(Target::Name) else {
        count(&shared.metrics.policy.mirror_skipped);
        return;
    };
    let head = clone_head(parts);
    let version = svc.version;
    tokio::spawn(async move {
        let _permit = permit;
        let exchange = async {
            let upstream = shared.resolver.lookup(&target).await?;
            let (addr, pick) = shared.pick(&upstream).ok()?;
            let tls = pick.as_ref().and_then(|p| shared.tls_target(&p.endpoint, false));
            let req = Request::from_parts(head, Either::Right(Full::new(body)));
            let rsp = shared.pool.send(addr, version, req, tls).await.ok()?;
            // Read it whole so that the connection can carry the next request.
            let status = rsp.status();
            rsp.into_body().collect().await.ok()?;
            Some(status)
        };
        match tokio::time::timeout(MIRROR_TIMEOUT, exchange).await {
            Ok(Some(status)) => {
                count(&shared.metrics.policy.mirrored);
                tracing::trace!(%target, %status, "mirrored");
            }
            _ => {
                count(&shared.metrics.policy.mirror_failed);
                tracing::debug!(%target, "mirror copy failed or timed out");
            }
        }
    });
}
