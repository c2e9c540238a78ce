//! `weft example load`: calls a URL at a steady rate and logs what came back
//! (status classes, latency quantiles, and which pod answered, from the demo
//! web app's `"pod"` field, so that load balancing is visible in its log).
//!
//! ```text
//!   ticker (rate/s) ──► permit (≤ concurrency in flight) ──► pooled HTTP/1 connection ──► target
//!                                                              or the explicit proxy (HTTP_PROXY)
//! ```
//!
//! Like any HTTP client it honours `HTTP_PROXY`/`NO_PROXY`: with a proxy,
//! requests go to it in absolute form (`GET http://web/ HTTP/1.1`), which is
//! how workloads use the mesh in the local mesh's loopback mode. Without
//! one, it dials the target's host (resolved through /etc/hosts, which the
//! local mesh points at the service's virtual IP).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt as _, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// Flags of `weft example load`.
#[derive(clap::Args, Debug, Clone)]
pub struct LoadArgs {
    /// The URL to call (http only), e.g. `http://web/`.
    #[arg(long)]
    pub target: Uri,
    /// Requests per second.
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// Most requests in flight at once; past it the rate drops instead of
    /// requests piling up.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Time allowed for one request, response body included.
    #[arg(long, default_value = "2s")]
    pub timeout: humantime::Duration,
    /// Stop after this long. Default: until SIGTERM or Ctrl-C.
    #[arg(long)]
    pub duration: Option<humantime::Duration>,
    /// How often to log a progress line.
    #[arg(long, default_value = "10s")]
    pub report_every: humantime::Duration,
    /// An explicit HTTP proxy, `http://HOST:PORT`.
    #[arg(long, env = "HTTP_PROXY")]
    pub proxy: Option<Uri>,
    /// Hosts reached without the proxy (comma list; `.example` matches
    /// subdomains, `*` everything).
    #[arg(long, env = "NO_PROXY", value_delimiter = ',')]
    pub no_proxy: Vec<String>,
}

/// Why one request failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("the target must be an http:// URL with a host, not {0}")]
    BadTarget(Uri),
    #[error("the proxy must be http://HOST[:PORT], not {0}")]
    BadProxy(Uri),
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: String, source: std::io::Error },
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("no response within {0:?}")]
    Timeout(Duration),
    #[error("building the request: {0}")]
    Request(#[from] http::Error),
}

/// Where requests go and in which form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// `HOST:PORT` to dial.
    pub dial: String,
    /// The request target: absolute form through a proxy, else origin form.
    pub uri: Uri,
    /// The Host header.
    pub host: String,
}

/// `host:port` of an http URL, with the default port 80.
fn authority(uri: &Uri) -> Option<(String, String)> {
    if uri.scheme_str() != Some("http") {
        return None;
    }
    let host = uri.host()?.to_owned();
    let port = uri.port_u16().unwrap_or(80);
    let host_header = uri.authority()?.as_str().to_owned();
    Some((format!("{host}:{port}"), host_header))
}

fn no_proxy_matches(no_proxy: &[String], host: &str) -> bool {
    no_proxy.iter().map(|e| e.trim()).filter(|e| !e.is_empty()).any(|entry| {
        entry == "*" || {
            let entry = entry.trim_start_matches('.');
            host == entry || host.strip_suffix(entry).is_some_and(|rest| rest.ends_with('.'))
        }
    })
}

impl Route {
    /// Decides how to reach `target`, honouring the proxy settings.
    pub fn new(target: &Uri, proxy: Option<&Uri>, no_proxy: &[String]) -> Result<Route, LoadError> {
        let (dial, host) = authority(target).ok_or_else(|| LoadError::BadTarget(target.clone()))?;
        let target_host = target.host().unwrap_or_default();
        match proxy {
            Some(proxy) if !no_proxy_matches(no_proxy, target_host) => {
                let (proxy_dial, _) = authority(proxy).ok_or_else(|| LoadError::BadProxy(proxy.clone()))?;
                Ok(Route { dial: proxy_dial, uri: target.clone(), host })
            }
            _ => {
                let path = target.path_and_query().map_or("/", |p| p.as_str());
                let uri = path.parse().map_err(|_| LoadError::BadTarget(target.clone()))?;
                Ok(Route { dial, uri, host })
            }
        }
    }
}

/// Idle HTTP/1 connections to the dial address.
struct Client {
    route: Route,
    idle: Mutex<Vec<SendRequest<Empty<Bytes>>>>,
}

impl Client {
    async fn connection(&self) -> Result<SendRequest<Empty<Bytes>>, LoadError> {
        loop {
            let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let Some(mut sender) = idle else { break };
            if sender.ready().await.is_ok() {
                return Ok(sender);
            }
        }
        let connect = |source| LoadError::Connect { addr: self.route.dial.clone(), source };
        let stream = TcpStream::connect(&self.route.dial).await.map_err(connect)?;
        stream.set_nodelay(true).map_err(connect)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// One GET: the status and the pod that answered, if the body says.
    async fn get(&self) -> Result<(StatusCode, Option<String>), LoadError> {
        let mut sender = self.connection().await?;
        let request = Request::get(self.route.uri.clone()).header(header::HOST, &self.route.host).body(Empty::new())?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).push(sender);
        Ok((status, pod_of(&body)))
    }
}

/// The `"pod"` field of the demo web app's answer.
fn pod_of(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let rest = &text[text.find("\"pod\":\"")? + 7..];
    Some(rest[..rest.find('"')?].to_owned())
}

/// Counts since the last report and since the start.
#[derive(Default)]
struct Stats {
    period: Tally,
    total: Tally,
}

struct Tally {
    /// Responses below 500 (a 4xx is the server answering correctly).
    ok: u64,
    failed: u64,
    by_pod: BTreeMap<String, u64>,
    last_error: Option<String>,
    latency_us: hdrhistogram::Histogram<u64>,
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            ok: 0,
            failed: 0,
            by_pod: BTreeMap::new(),
            last_error: None,
            latency_us: hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
        }
    }
}

impl Tally {
    fn record(&mut self, outcome: &Result<(StatusCode, Option<String>), LoadError>, elapsed: Duration) {
        match outcome {
            Ok((status, pod)) if !status.is_server_error() => {
                self.ok += 1;
                if let Some(pod) = pod {
                    *self.by_pod.entry(pod.clone()).or_default() += 1;
                }
            }
            Ok((status, _)) => {
                self.failed += 1;
                self.last_error = Some(format!("HTTP {status}"));
            }
            Err(e) => {
                self.failed += 1;
                self.last_error = Some(e.to_string());
            }
        }
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.latency_us.saturating_record(us.max(1));
    }

    fn line(&self, over: Duration) -> String {
        let n = self.ok + self.failed;
        let q = |q: f64| Duration::from_micros(self.latency_us.value_at_quantile(q));
        let mut line = format!(
            "{n} requests in {:.1}s ({:.1}/s): {} ok, {} failed",
            over.as_secs_f64(),
            n as f64 / over.as_secs_f64().max(1e-3),
            self.ok,
            self.failed
        );
        if n > 0 {
            line += &format!("; latency p50 {:?} p99 {:?}", q(0.5), q(0.99));
        }
        if !self.by_pod.is_empty() {
            let pods: Vec<String> = self.by_pod.iter().map(|(pod, n)| format!("{pod} {n}")).collect();
            line += &format!("; answered by {}", pods.join(", "));
        }
        if let Some(e) = &self.last_error {
            line += &format!("; last error: {e}");
        }
        line
    }
}

/// Runs `weft example load`.
pub async fn run(args: LoadArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.rate > 0.0 && args.rate.is_finite(),
        "--rate must be a positive number of requests per second"
    );
    anyhow::ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    let route = Route::new(&args.target, args.proxy.as_ref(), &args.no_proxy)?;
    tracing::info!(
        "calling {} at {}/s via {}{}",
        args.target,
        args.rate,
        route.dial,
        if route.uri.scheme().is_some() { " (explicit proxy)" } else { "" }
    );
    let client = Arc::new(Client { route, idle: Mutex::new(Vec::new()) });
    let stats = Arc::new(Mutex::new(Stats::default()));
    let permits = Arc::new(Semaphore::new(args.concurrency));
    let timeout = *args.timeout;

    let start = Instant::now();
    let stop = async {
        match args.duration {
            Some(d) => tokio::select! {
                () = tokio::time::sleep(*d) => {},
                () = crate::shutdown_signal() => {},
            },
            None => crate::shutdown_signal().await,
        }
    };
    tokio::pin!(stop);
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut reports = tokio::time::interval_at(tokio::time::Instant::now() + *args.report_every, *args.report_every);
    let mut last_report = Instant::now();
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = reports.tick() => {
                let mut stats = stats.lock().unwrap_or_else(|e| e.into_inner());
                tracing::info!("{}", stats.period.line(last_report.elapsed()));
                stats.period = Tally::default();
                last_report = Instant::now();
            }
            _ = ticks.tick() => {
                let Ok(permit) = permits.clone().acquire_owned().await else { break };
                let (client, stats) = (client.clone(), stats.clone());
                tokio::spawn(async move {
                    let started = Instant::now();
                    let outcome = tokio::time::timeout(timeout, client.get())
                        .await
                        .unwrap_or(Err(LoadError::Timeout(timeout)));
                    let elapsed = started.elapsed();
                    let mut stats = stats.lock().unwrap_or_else(|e| e.into_inner());
                    stats.period.record(&outcome, elapsed);
                    stats.total.record(&outcome, elapsed);
                    drop(permit);
                });
            }
        }
    }
    // Let requests in flight finish (each is bounded by the timeout).
    let _ = tokio::time::timeout(timeout, permits.acquire_many(args.concurrency as u32)).await;
    let stats = stats.lock().unwrap_or_else(|e| e.into_inner());
    let summary = stats.total.line(start.elapsed());
    tracing::info!("total: {summary}");
    anyhow::ensure!(stats.total.ok > 0 || stats.total.failed == 0, "no request succeeded: {summary}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_direct_and_through_a_proxy() {
        let target: Uri = "http://web/count?x=1".parse().unwrap();
        let proxy: Uri = "http://127.1.0.2:4140".parse().unwrap();
        assert_eq!(
            Route::new(&target, None, &[]).unwrap(),
            Route { dial: "web:80".into(), uri: "/count?x=1".parse().unwrap(), host: "web".into() }
        );
        assert_eq!(
            Route::new(&target, Some(&proxy), &[]).unwrap(),
            Route { dial: "127.1.0.2:4140".into(), uri: target.clone(), host: "web".into() }
        );
        for no_proxy in [&["web"][..], &[".web"], &["*"], &["other", " web "]] {
            let no_proxy: Vec<String> = no_proxy.iter().map(|s| s.to_string()).collect();
            assert_eq!(Route::new(&target, Some(&proxy), &no_proxy).unwrap().dial, "web:80", "{no_proxy:?}");
        }
        let sub: Uri = "http://a.web:8080/".parse().unwrap();
        assert_eq!(Route::new(&sub, Some(&proxy), &[".web".into()]).unwrap().dial, "a.web:8080");
        assert_eq!(Route::new(&sub, Some(&proxy), &["eb".into()]).unwrap().dial, "127.1.0.2:4140");
        assert!(matches!(Route::new(&"https://web/".parse().unwrap(), None, &[]), Err(LoadError::BadTarget(_))));
    }

    #[test]
    fn pods_are_read_from_the_demo_answer() {
        assert_eq!(pod_of(br#"{"pod":"web-v1-0","version":"v1","count":3}"#), Some("web-v1-0".into()));
        assert_eq!(pod_of(b"hello"), None);
    }

    #[tokio::test]
    async fn calls_a_server_at_the_rate() {
        let store = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let store_addr = store.local_addr().unwrap();
        tokio::spawn(crate::store::serve(store, std::future::pending()));
        let web = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let web_addr = web.local_addr().unwrap();
        let app = crate::web::App::new(&crate::web::WebArgs {
            listen: web_addr,
            store: store_addr.to_string(),
            pod_name: "p".into(),
            app_version: "v1".into(),
            key: "k".into(),
            delay: Duration::ZERO.into(),
            store_timeout: Duration::from_secs(1).into(),
        });
        tokio::spawn(crate::web::serve(web, Arc::new(app), std::future::pending()));

        let args = LoadArgs {
            target: format!("http://{web_addr}/").parse().unwrap(),
            rate: 100.0,
            concurrency: 4,
            timeout: Duration::from_secs(2).into(),
            duration: Some(Duration::from_millis(300).into()),
            report_every: Duration::from_secs(10).into(),
            proxy: None,
            no_proxy: Vec::new(),
        };
        run(args).await.unwrap();
        let client = crate::store::client::StoreClient::new(store_addr.to_string(), Duration::from_secs(1));
        let count = client.incr("k").await.unwrap() - 1;
        // 31 ticks at most (the first is immediate); a busy machine may skip some.
        assert!((5..=32).contains(&count), "about 30 requests in 300 ms at 100/s, got {count}");
    }
}
