//! HTTP/1 protocol upgrades (`Upgrade: websocket`, RFC 9110 §7.8) and
//! `CONNECT` tunnels. Routing and the endpoint are decided first, like for
//! any request (outbound: route, backend, balancer and circuit breaker);
//! only the transport differs: the request goes upstream on a dedicated
//! connection, and if the upstream switches (101, or 2xx for CONNECT) both
//! sides become a plain byte stream that is spliced like opaque TCP.

use std::net::SocketAddr;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::headers::{strip_hop_by_hop, wants_upgrade};
use super::respond::ProxyError;
use super::shared::Shared;
use super::{RequestBody, Version};
use crate::balance::Pick;
use crate::drain;
use crate::transport::tls::TlsTarget;

/// A request that asks to switch protocols, holding the downstream half
/// of the switch.
pub struct Upgrade {
    downstream: OnUpgrade,
    connect: bool,
}

impl Upgrade {
    /// `Some` when `req` asks for an upgrade or a tunnel (HTTP/1 only: HTTP/2
    /// has neither in this form).
    pub fn take(req: &mut Request<Incoming>, version: Version) -> Option<Self> {
        let connect = req.method() == Method::CONNECT;
        if version != Version::Http1 || !(connect || wants_upgrade(req.headers())) {
            return None;
        }
        Some(Self { downstream: hyper::upgrade::on(req), connect })
    }

    /// Whether the `Upgrade` header goes on to the next hop (not for
    /// CONNECT, which names no protocol).
    pub fn keeps_headers(&self) -> bool {
        !self.connect
    }

    /// Sends `req` (its hop-by-hop headers already stripped) to `addr` on a
    /// dedicated connection; when the upstream switches, splices both sides
    /// in a task of its own that holds a drain watch (shutdown waits for it,
    /// up to the drain deadline).
    pub async fn proxy(
        self,
        shared: &Shared,
        drain: drain::Watch,
        req: Request<RequestBody>,
        addr: SocketAddr,
        pick: Option<Pick>,
        tls: Option<TlsTarget>,
    ) -> Result<Response<Incoming>, ProxyError> {
        let mut tx = shared.pool.connect_for_upgrade(addr, tls.as_ref()).await?;
        let mut rsp = tx.send_request(req).await.map_err(ProxyError::from_send)?;
        if let Some(pick) = pick {
            pick.complete();
        }
        let switched =
            if self.connect { rsp.status().is_success() } else { rsp.status() == StatusCode::SWITCHING_PROTOCOLS };
        strip_hop_by_hop(rsp.headers_mut(), switched && !self.connect);
        if switched {
            let upstream = hyper::upgrade::on(&mut rsp);
            let idle = shared.tcp_idle_timeout;
            let downstream = self.downstream;
            tokio::spawn(async move {
                let (down, up) = match tokio::try_join!(downstream, upstream) {
                    Ok(pair) => pair,
                    Err(e) => {
                        tracing::debug!(error = %e, "upgrade did not complete");
                        return;
                    }
                };
                let result = crate::transport::splice::splice(TokioIo::new(down), TokioIo::new(up), idle).await;
                tracing::debug!(?result, "upgraded stream closed");
                drop(drain);
            });
        }
        Ok(rsp)
    }
}
