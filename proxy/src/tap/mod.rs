//! Tap: a live, filtered, rate-limited stream of the requests this proxy
//! serves, for the control plane (`weft.tap.v1.Tap/Observe`, served by
//! [`server`] on `--tap-addr` over mTLS).
//!
//! ```text
//! record layer ─ is_open()? (one relaxed load) ─ no ─► nothing more
//!                └ yes ─► request(): each subscriber whose match selects it and whose
//!                         rate limit admits it ─► RequestInit (try_send)
//!                   response headers ─► ResponseInit;  body end / reset ─► ResponseEnd
//! subscriber: bounded queue ─► gRPC stream; full: the event is dropped and counted
//!             (weft_tap_events_dropped_total); the caller goes: unsubscribed
//! ```
//!
//! Nothing here ever waits on a subscriber: a request never blocks on tap.

pub mod filter;
pub mod server;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll, ready};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::sync::mpsc;
use weft_api::tap::{RequestInit, ResponseEnd, ResponseInit, TapEvent, tap_event};

use crate::http::ResponseBody;
use crate::identity::SpiffeId;
use crate::metrics::{Direction, EdgePeer, Metrics};
use filter::{Filter, RateLimit};

/// Events queued per subscriber before new ones are dropped.
pub const QUEUE: usize = 1024;

/// Every open tap of this proxy.
#[derive(Debug)]
pub struct Taps {
    /// Subscribers open: the only thing a request reads when it is 0.
    open: AtomicUsize,
    subscribers: RwLock<Vec<Arc<Subscriber>>>,
    next_id: AtomicU64,
    /// This proxy's identity (the server of inbound requests, the client
    /// of outbound mTLS).
    local: Option<SpiffeId>,
    metrics: Arc<Metrics>,
}

/// One `Observe` call.
#[derive(Debug)]
pub struct Subscriber {
    filter: Filter,
    headers: bool,
    limit: Mutex<RateLimit>,
    tx: mpsc::Sender<TapEvent>,
    metrics: Arc<Metrics>,
}

impl Subscriber {
    fn send(&self, event: TapEvent) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(event) {
            self.metrics.tap_dropped.fetch_add(1, Relaxed);
        }
    }
}

/// Unsubscribes when dropped (the gRPC stream went away).
#[derive(Debug)]
pub struct Subscription {
    taps: Arc<Taps>,
    subscriber: Arc<Subscriber>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut subs = self.taps.subscribers.write().unwrap_or_else(|p| p.into_inner());
        subs.retain(|s| !Arc::ptr_eq(s, &self.subscriber));
        self.taps.open.store(subs.len(), Relaxed);
    }
}

/// What the record layer knows of a downstream connection.
#[derive(Clone, Debug, Default)]
pub struct TapConn {
    /// The client's address.
    pub source: Option<SocketAddr>,
    /// Where it connected to (its original destination).
    pub destination: Option<SocketAddr>,
    /// Inbound: the client's verified identity.
    pub client_id: Option<SpiffeId>,
}

impl Taps {
    pub fn new(local: Option<SpiffeId>, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            open: AtomicUsize::new(0),
            subscribers: RwLock::new(Vec::new()),
            next_id: AtomicU64::new(1),
            local,
            metrics,
        })
    }

    /// Whether anyone is tapping: the whole cost of tap when no one is.
    #[inline]
    pub fn is_open(&self) -> bool {
        self.open.load(Relaxed) != 0
    }

    /// A new subscriber and the stream of its events.
    pub fn subscribe(
        self: &Arc<Self>,
        filter: Filter,
        max_rps: u32,
        headers: bool,
    ) -> (Subscription, mpsc::Receiver<TapEvent>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let subscriber = Arc::new(Subscriber {
            filter,
            headers,
            limit: Mutex::new(RateLimit::new(filter::rate(max_rps), Instant::now())),
            tx,
            metrics: self.metrics.clone(),
        });
        let mut subs = self.subscribers.write().unwrap_or_else(|p| p.into_inner());
        subs.push(subscriber.clone());
        self.open.store(subs.len(), Relaxed);
        (Subscription { taps: self.clone(), subscriber }, rx)
    }

    /// At request time, when [`Taps::is_open`]: the request's tap state
    /// when some subscriber selects and admits it (its RequestInit sent).
    pub fn request<B>(&self, direction: Direction, req: &Request<B>, conn: &TapConn) -> Option<Box<Tapped>> {
        let authority = filter::authority(req.uri(), req.headers());
        let now = Instant::now();
        let subscribers: Vec<Arc<Subscriber>> = {
            let subs = self.subscribers.read().unwrap_or_else(|p| p.into_inner());
            subs.iter()
                .filter(|s| !s.tx.is_closed())
                .filter(|s| s.filter.matches(direction, req.method(), authority, req.uri()))
                .filter(|s| s.limit.lock().unwrap_or_else(|p| p.into_inner()).admit(now))
                .cloned()
                .collect()
        };
        if subscribers.is_empty() {
            return None;
        }
        let (client_id, server_id, tls) = match direction {
            Direction::Inbound => {
                let tls = conn.client_id.is_some();
                (id(conn.client_id.as_ref()), if tls { id(self.local.as_ref()) } else { String::new() }, tls)
            }
            // Known once the upstream answers.
            Direction::Outbound => (String::new(), String::new(), false),
        };
        let tapped = Box::new(Tapped {
            subscribers,
            id: self.next_id.fetch_add(1, Relaxed),
            direction,
            source: conn.source.map(|a| a.to_string()).unwrap_or_default(),
            destination: conn.destination.map(|a| a.to_string()).unwrap_or_default(),
            client_id,
            server_id,
            tls,
            local: self.local.clone(),
            start: now,
            bytes: 0,
            grpc_status: -1,
            ended: false,
        });
        let uri = req.uri();
        let init = RequestInit {
            method: req.method().as_str().to_owned(),
            scheme: uri.scheme_str().unwrap_or("http").to_owned(),
            authority: authority.unwrap_or_default().to_owned(),
            path: uri.path_and_query().map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned()),
            headers: Vec::new(),
            route: String::new(),
        };
        tapped.emit(|headers| {
            let mut init = init.clone();
            if headers {
                init.headers = filter::visible_headers(req.headers());
            }
            tap_event::Event::Request(init)
        });
        Some(tapped)
    }
}

fn id(id: Option<&SpiffeId>) -> String {
    id.map(|i| i.as_str().to_owned()).unwrap_or_default()
}

/// One tapped request, from its RequestInit to its ResponseEnd.
#[derive(Debug)]
pub struct Tapped {
    subscribers: Vec<Arc<Subscriber>>,
    id: u64,
    direction: Direction,
    source: String,
    destination: String,
    client_id: String,
    server_id: String,
    tls: bool,
    local: Option<SpiffeId>,
    start: Instant,
    bytes: u64,
    grpc_status: i32,
    ended: bool,
}

impl Tapped {
    /// Sends an event to each subscriber (`headers`: whether it asked for them).
    fn emit(&self, event: impl Fn(bool) -> tap_event::Event) {
        let timestamp_unix_nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        for s in &self.subscribers {
            s.send(TapEvent {
                id: self.id,
                direction: self.direction.as_str().to_owned(),
                source: self.source.clone(),
                destination: self.destination.clone(),
                client_id: self.client_id.clone(),
                server_id: self.server_id.clone(),
                tls: self.tls,
                timestamp_unix_nanos,
                event: Some(event(s.headers)),
            });
        }
    }

    /// The response headers are here: ResponseInit, with who answered.
    pub fn response<B>(&mut self, rsp: &Response<B>, edge: Option<&EdgePeer>) {
        if let (Direction::Outbound, Some(edge)) = (self.direction, edge) {
            self.tls = edge.tls();
            self.server_id = edge.peer_id().to_owned();
            if self.tls {
                self.client_id = id(self.local.as_ref());
            }
            if let Some(addr) = edge.addr {
                self.destination = addr.to_string();
            }
        }
        let (route, backend) = edge
            .and_then(|e| e.route.as_ref())
            .map(|(r, b)| {
                let r = if r.is_empty() { crate::metrics::DEFAULT_ROUTE } else { &**r };
                (r.to_owned(), b.to_string())
            })
            .unwrap_or_default();
        let latency_us = filter::micros(self.start.elapsed());
        let status = u32::from(rsp.status().as_u16());
        self.emit(|headers| {
            tap_event::Event::Response(ResponseInit {
                status,
                latency_us,
                headers: if headers { filter::visible_headers(rsp.headers()) } else { Vec::new() },
                route: route.clone(),
                backend: backend.clone(),
            })
        });
    }

    fn data(&mut self, n: usize) {
        self.bytes = self.bytes.saturating_add(n as u64);
    }

    fn trailers(&mut self, trailers: &HeaderMap) {
        if let Some(s) = trailers.get("grpc-status").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()) {
            self.grpc_status = s;
        }
    }

    /// ResponseEnd, once: `reason` empty when the body ended normally.
    fn end(&mut self, reason: &str) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        let end = ResponseEnd {
            duration_us: filter::micros(self.start.elapsed()),
            response_bytes: self.bytes,
            grpc_status: self.grpc_status,
            reason: reason.to_owned(),
        };
        self.emit(|_| tap_event::Event::End(end.clone()));
    }
}

pin_project! {
    /// The response body sent downstream: the stack's, and when the request
    /// is tapped, its bytes and trailers watched for ResponseEnd. Untapped,
    /// it is the inner body and an empty `Option`: no allocation.
    pub struct TapBody {
        #[pin]
        inner: ResponseBody,
        tapped: Option<Box<Tapped>>,
    }

    impl PinnedDrop for TapBody {
        fn drop(this: Pin<&mut Self>) {
            if let Some(t) = this.project().tapped.as_mut() {
                t.end("reset");
            }
        }
    }
}

impl TapBody {
    pub fn new(inner: ResponseBody, tapped: Option<Box<Tapped>>) -> Self {
        let mut body = Self { inner, tapped };
        // A response without a body ends with its headers.
        if let Some(t) = body.tapped.as_mut()
            && body.inner.is_end_stream()
        {
            t.end("");
        }
        body
    }
}

impl Body for TapBody {
    type Data = Bytes;
    type Error = <ResponseBody as Body>::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        if let Some(t) = this.tapped.as_mut() {
            match &frame {
                Some(Ok(f)) => {
                    if let Some(data) = f.data_ref() {
                        t.data(data.len());
                    } else if let Some(trailers) = f.trailers_ref() {
                        t.trailers(trailers);
                    }
                    // HTTP/1 stops polling a body of known length once it
                    // says it has ended.
                    if this.inner.is_end_stream() {
                        t.end("");
                    }
                }
                Some(Err(e)) => {
                    let reason = e.to_string();
                    t.end(&reason);
                }
                None => t.end(""),
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
