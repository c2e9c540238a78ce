//! The scraper: every interval, `GET http://ADDR:4191/metrics` of each
//! meshed pod, at most `concurrency` at once, each within `timeout`; the
//! result (samples or the error) goes to the store.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use http::{Request, header};
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::rt::TokioIo;

use super::{Telemetry, now, pods};
use crate::shutdown::Shutdown;

/// A `/metrics` page larger than this is refused.
const MAX_BODY: usize = 16 << 20;

/// `GET http://addr/metrics`: the body, or why not.
pub async fn fetch(addr: SocketAddr, timeout: Duration) -> Result<String, String> {
    let exchange = async {
        let stream =
            tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("GET http://{addr}/metrics: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let request = Request::get("/metrics")
            .header(header::HOST, addr.to_string())
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = sender.send_request(request).await.map_err(|e| format!("GET http://{addr}/metrics: {e}"))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| format!("GET http://{addr}/metrics: {e}"))?
            .to_bytes();
        if !status.is_success() {
            return Err(format!("GET http://{addr}/metrics answered {status}"));
        }
        Ok(String::from_utf8_lossy(&body).into_owned())
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("GET http://{addr}/metrics: no answer within {timeout:?}")))
}

impl Telemetry {
    /// One round: refreshes the store's pods from the index, then scrapes
    /// every meshed one.
    pub async fn scrape_once(&self) {
        let pods = pods(&self.index.state(), &self.settings.extra);
        self.store.set_pods(&pods);
        let (timeout, port) = (self.settings.timeout, self.settings.admin_port);
        futures_util::stream::iter(pods.into_iter().filter(|p| p.meshed))
            .map(|pod| async move {
                let at = now();
                let result = fetch(SocketAddr::new(pod.address, port), timeout).await.map(|t| super::prom::parse(&t));
                if let Err(e) = &result {
                    tracing::debug!(pod = %pod.name, error = %e, "scrape failed");
                }
                self.store.record(&pod.name, at, result);
            })
            .buffer_unordered(self.settings.concurrency.max(1))
            .collect::<()>()
            .await;
    }

    /// Scrapes every interval until shutdown (not at all with a zero
    /// interval).
    pub async fn run(self, mut shutdown: Shutdown) {
        if self.settings.interval.is_zero() {
            tracing::info!("telemetry is off (--telemetry-interval 0)");
            return;
        }
        let mut tick = tokio::time::interval(self.settings.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.signaled() => return,
            }
            tokio::select! {
                () = self.scrape_once() => {}
                () = shutdown.signaled() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::index::{Event, Index, MeshConfig, NsName, Workload};
    use crate::telemetry::Settings;

    /// A `/metrics` server answering `body` to every request, on loopback.
    async fn serve(body: &'static str) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |_req| async move {
                        Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                            Bytes::from_static(body.as_bytes()),
                        )))
                    });
                    let _ =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
        addr
    }

    fn workload(name: &str, address: &str, meshed: bool) -> Workload {
        Workload {
            name: NsName::new("default", name),
            service_account: "web".into(),
            labels: BTreeMap::from([("app".into(), "web".into())]),
            address: address.parse().unwrap(),
            ports: vec![8080],
            meshed,
            ready: true,
            zone: String::new(),
            opaque_ports: Vec::new(),
        }
    }

    #[tokio::test]
    async fn scrapes_meshed_pods_and_keeps_errors() {
        let addr = serve("weft_responses_total{direction=\"inbound\",classification=\"success\"} 7\n").await;
        // Nothing listens on 127.0.0.3 at that port: refused at once.
        let index = Index::new(MeshConfig::default());
        index.apply([
            Event::WorkloadApplied(workload("web-0", "127.0.0.1", true)),
            Event::WorkloadApplied(workload("web-1", "127.0.0.3", true)),
            Event::WorkloadApplied(workload("plain-0", "127.0.0.1", false)),
        ]);
        let settings = Settings {
            admin_port: addr.port(),
            timeout: Duration::from_secs(5),
            extra: vec!["default/load-0/load=127.0.0.1".parse().unwrap()],
            ..Settings::default()
        };
        let telemetry = Telemetry::new(index, settings);
        telemetry.scrape_once().await;
        let view = telemetry.store.view();
        let brief: Vec<(&str, usize, bool, bool)> = view
            .entries
            .iter()
            .map(|e| (&*e.pod.name.name, e.history.len(), e.last_scrape.is_some(), e.last_error.is_some()))
            .collect();
        assert_eq!(
            brief,
            [
                ("load-0", 1, true, false),
                ("plain-0", 0, false, false),
                ("web-0", 1, true, false),
                ("web-1", 0, true, true)
            ]
        );
        assert_eq!(view.entries[0].pod.identity, "spiffe://cluster.local/ns/default/sa/load");
        assert_eq!(view.entries[2].history[0].samples[0].value, 7.0);
        let error = view.entries[3].last_error.as_deref().unwrap();
        assert!(error.contains("127.0.0.3"), "{error}");
    }

    #[test]
    fn extra_targets_parse() {
        let t: super::super::ExtraTarget = "shop/load-0/load=198.18.1.5".parse().unwrap();
        assert_eq!(
            (t.name.to_string(), t.service_account.as_str(), t.address.to_string()),
            ("load-0.shop".into(), "load", "198.18.1.5".into())
        );
        for bad in ["shop/load-0=1.2.3.4", "a/b/c=nope", "a/b/c", "/b/c=1.2.3.4", "a/b/c/d=1.2.3.4"] {
            assert!(bad.parse::<super::super::ExtraTarget>().is_err(), "{bad}");
        }
    }
}
