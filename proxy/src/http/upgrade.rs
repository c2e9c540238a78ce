//! HTTP/1 protocol upgrades (`Upgrade: websocket`, RFC 9110 §7.8) and
//! `CONNECT` tunnels: the request goes upstream on a dedicated connection;
//! if the upstream switches (101, or 2xx for CONNECT), both sides become a
//! plain byte stream that is spliced like opaque TCP.

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::headers::strip_hop_by_hop;
use super::respond::ProxyError;
use super::service::ProxyService;

pub async fn proxy(svc: &ProxyService, mut req: Request<Incoming>) -> Result<Response<Incoming>, ProxyError> {
    let is_connect = req.method() == Method::CONNECT;
    let downstream = hyper::upgrade::on(&mut req);
    strip_hop_by_hop(req.headers_mut(), !is_connect);

    let (addr, pick) = svc.pick()?;
    let tls = pick.as_ref().and_then(|p| svc.shared.tls_target(&p.endpoint, false));
    let mut tx = svc.shared.pool.connect_for_upgrade(addr, tls.as_ref()).await?;
    let mut rsp = tx.send_request(req.map(super::RequestBody::from)).await.map_err(ProxyError::from_send)?;
    if let Some(pick) = pick {
        pick.complete();
    }

    let switched = if is_connect { rsp.status().is_success() } else { rsp.status() == StatusCode::SWITCHING_PROTOCOLS };
    strip_hop_by_hop(rsp.headers_mut(), switched && !is_connect);
    if switched {
        let upstream = hyper::upgrade::on(&mut rsp);
        let idle = svc.shared.tcp_idle_timeout;
        // The tunnel outlives this request; it holds a drain watch so that
        // shutdown waits for it (up to the drain deadline).
        let drain = svc.drain.clone();
        tokio::spawn(async move {
            let (down, up) = match tokio::try_join!(downstream, upstream) {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::debug!(error = %e, "upgrade did not complete");
                    return;
                }
            };
            let result = crate::tcp::splice(TokioIo::new(down), TokioIo::new(up), idle).await;
            tracing::debug!(?result, "upgraded stream closed");
            drop(drain);
        });
    }
    Ok(rsp)
}
