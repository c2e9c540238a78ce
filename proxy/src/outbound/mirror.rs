//! `RequestMirror`: a fire-and-forget copy of a request to another service.
//!
//! The copy goes out beside the real request and never delays it: it runs
//! in its own task, its response is read and thrown away, and it gives up
//! after [`MIRROR_TIMEOUT`]. Copies are bounded: at most
//! [`MAX_MIRRORS_IN_FLIGHT`] at once per proxy, the rest skipped and
//! counted, so a slow shadow service cannot make the proxy hold memory
//! without bound. A body the proxy buffered (for retries) is copied whole;
//! a streamed one is teed frame by frame (`body::tee`), and its copy is
//! given up when it falls more than `body::MAX_MIRROR_QUEUED` behind.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use http::Request;
use http_body_util::BodyExt as _;
use tokio::sync::OwnedSemaphorePermit;

use super::Outbound;
use super::attempts::clone_head;
use super::endpoint::{choose, policy_for};
use crate::http::Version;
use crate::http::body::RequestBody;
use crate::policy::filters::Mirror;
use crate::transport::target::{NameTarget, Target};

/// Copies in flight per proxy, at most.
pub const MAX_MIRRORS_IN_FLIGHT: usize = 64;
/// A copy's whole exchange, response body included.
pub const MIRROR_TIMEOUT: Duration = Duration::from_secs(5);

fn count(c: &AtomicU64) {
    c.fetch_add(1, Relaxed);
}

/// Room for one copy: a slot among the [`MAX_MIRRORS_IN_FLIGHT`] and the
/// mirror's service.
pub struct Slot {
    permit: OwnedSemaphorePermit,
    target: Target,
}

/// A slot for a copy of a request to `mirror`'s service; `None` (counted
/// as skipped) when too many copies are in flight already.
pub fn reserve(outbound: &Outbound, mirror: &Mirror) -> Option<Slot> {
    let shared = &outbound.http;
    let Ok(permit) = outbound.mirrors.clone().try_acquire_owned() else {
        count(&shared.metrics.policy.mirror_skipped);
        return None;
    };
    let Some(target) = NameTarget::new(&mirror.service, mirror.port).map(Target::Name) else {
        count(&shared.metrics.policy.mirror_skipped);
        return None;
    };
    Some(Slot { permit, target })
}

impl Slot {
    /// Sends a copy of the request (`parts`, and `body`: a buffered copy
    /// or a teed stream's) in a task of its own.
    pub fn send(self, outbound: &Arc<Outbound>, version: Version, parts: &http::request::Parts, body: RequestBody) {
        let Slot { permit, target } = self;
        let outbound = outbound.clone();
        let head = clone_head(parts);
        tokio::spawn(async move {
            let _permit = permit;
            let exchange = async {
                let upstream = outbound.resolver.lookup(&target).await?;
                let policy = policy_for(&outbound, &upstream).await.ok()?;
                let balance = &policy.default.balance;
                let (addr, pick) = choose(&outbound, &upstream, &policy, balance, &head.headers, None).ok()?;
                let tls = pick.as_ref().and_then(|p| outbound.http.tls_target(&p.endpoint, false));
                let req = Request::from_parts(head, body);
                let rsp = outbound.http.pool.send(addr, version, req, tls).await.ok()?;
                // Read it whole so that the connection can carry the next request.
                let status = rsp.status();
                rsp.into_body().collect().await.ok()?;
                Some(status)
            };
            match tokio::time::timeout(MIRROR_TIMEOUT, exchange).await {
                Ok(Some(status)) => {
                    count(&outbound.http.metrics.policy.mirrored);
                    tracing::trace!(%target, %status, "mirrored");
                }
                _ => {
                    count(&outbound.http.metrics.policy.mirror_failed);
                    tracing::debug!(%target, "mirror copy failed or timed out");
                }
            }
        });
    }
}
