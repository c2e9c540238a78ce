//! Spans: a server span per request on each side, opened by the record
//! layer at accept, and a client span per outbound attempt, children of
//! the outbound server span (so retries are siblings).
//!
//! Attributes follow OpenTelemetry's HTTP semantic conventions
//! (`http.request.method`, `url.path`, `url.scheme`, `server.address`,
//! `server.port`, `network.protocol.version`, `http.response.status_code`,
//! `error.type`) plus Weft's own (`weft.direction`, `weft.route`,
//! `weft.backend`, `weft.peer_id`, `weft.retry_count`). No header value is
//! ever copied into a span, and the query string is left out, so
//! credentials cannot leak through a trace.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use http::{HeaderMap, Request};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::{Span, Status, status};

use super::Tracer;
use super::context::{self, Format, SpanId, TraceId};
use crate::metrics::Direction;

/// The server span of one request, carried in its extensions so that the
/// stages can add what they learn (route, backend, peer) and open the
/// attempts' client spans under it.
#[derive(Debug)]
pub struct SpanHandle {
    tracer: Tracer,
    format: Format,
    /// The caller's W3C flags, passed on.
    flags: u8,
    trace_id: TraceId,
    span_id: SpanId,
    method: http::Method,
    /// Attributes the stages add while the request runs.
    extra: Mutex<Vec<KeyValue>>,
}

impl SpanHandle {
    /// Adds (or replaces) a string attribute of the server span.
    pub fn set(&self, key: &'static str, value: &str) {
        self.set_kv(kv(key, value));
    }

    /// Adds (or replaces) an integer attribute of the server span.
    pub fn set_int(&self, key: &'static str, value: i64) {
        self.set_kv(kv_int(key, value));
    }

    fn set_kv(&self, new: KeyValue) {
        let mut extra = self.extra.lock().unwrap_or_else(|p| p.into_inner());
        match extra.iter_mut().find(|k| k.key == new.key) {
            Some(old) => *old = new,
            None => extra.push(new),
        }
    }

    /// Opens the client span of one attempt to `addr` and writes it into
    /// the request's headers as the next hop's parent, in the caller's
    /// format. `retry` is 0 for the first attempt.
    pub fn attempt(self: &Arc<Self>, headers: &mut HeaderMap, addr: SocketAddr, retry: u32) -> ClientSpan {
        let span_id = context::new_span_id();
        context::inject(headers, self.format, &self.trace_id, &span_id, Some(&self.span_id), true, self.flags);
        let mut attributes = vec![
            kv("http.request.method", self.method.as_str()),
            kv("server.address", &addr.ip().to_string()),
            kv_int("server.port", i64::from(addr.port())),
            kv("network.peer.address", &addr.ip().to_string()),
            kv_int("weft.retry_count", i64::from(retry)),
        ];
        // The route and backend chosen before the first attempt.
        let extra = self.extra.lock().unwrap_or_else(|p| p.into_inner());
        attributes.extend(extra.iter().filter(|k| k.key == "weft.route" || k.key == "weft.backend").cloned());
        drop(extra);
        ClientSpan {
            handle: self.clone(),
            span: Some(Span {
                trace_id: self.trace_id.to_vec(),
                span_id: span_id.to_vec(),
                parent_span_id: self.span_id.to_vec(),
                name: self.method.as_str().to_owned(),
                kind: SpanKind::Client as i32,
                start_time_unix_nano: now(),
                attributes,
                ..Default::default()
            }),
        }
    }
}

/// A request's server span, finished when its response headers are ready
/// (or, if the request is dropped first, as cancelled).
#[derive(Debug)]
pub struct ServerSpan {
    handle: Arc<SpanHandle>,
    span: Option<Span>,
}

impl Tracer {
    /// Opens the server span of `req` when tracing is on and the request
    /// is sampled (by its caller, or by the ratio when it has no context);
    /// then the request carries the span's handle and, towards the next
    /// hop, this span as its parent. `None` otherwise, untouched.
    pub fn server_span<B>(&self, direction: Direction, req: &mut Request<B>) -> Option<ServerSpan> {
        if !self.enabled() {
            return None;
        }
        let caller = context::extract(req.headers());
        let (format, flags, trace_id, parent) = match caller {
            Some(c) if c.sampled => (c.format, c.flags, c.trace_id, Some(c.parent_id)),
            // The caller decided not to trace: follow it.
            Some(_) => return None,
            // A trace of our own; its id is random (W3C Level 2 flag).
            None if self.sample_new() => (Format::W3c, 2, context::new_trace_id(), None),
            None => return None,
        };
        let span_id = context::new_span_id();
        context::inject(req.headers_mut(), format, &trace_id, &span_id, parent.as_ref(), true, flags);
        let attributes = request_attributes(direction, req);
        let handle = Arc::new(SpanHandle {
            tracer: self.clone(),
            format,
            flags,
            trace_id,
            span_id,
            method: req.method().clone(),
            extra: Mutex::default(),
        });
        req.extensions_mut().insert(handle.clone());
        let span = Span {
            trace_id: trace_id.to_vec(),
            span_id: span_id.to_vec(),
            parent_span_id: parent.map(|p| p.to_vec()).unwrap_or_default(),
            name: req.method().as_str().to_owned(),
            kind: SpanKind::Server as i32,
            start_time_unix_nano: now(),
            attributes,
            ..Default::default()
        };
        Some(ServerSpan { handle, span: Some(span) })
    }
}

impl ServerSpan {
    /// Ends the span with the response's status (5xx is an error on the
    /// server side).
    pub fn finish(mut self, status: u16) {
        if let Some(span) = self.span.take() {
            self.end(span, Some(status));
        }
    }

    fn end(&self, mut span: Span, status: Option<u16>) {
        span.end_time_unix_nano = now();
        span.attributes.extend(self.handle.extra.lock().unwrap_or_else(|p| p.into_inner()).drain(..));
        match status {
            Some(code) => {
                span.attributes.push(kv_int("http.response.status_code", i64::from(code)));
                if code >= 500 {
                    span.attributes.push(kv("error.type", &code.to_string()));
                    span.status = Some(Status { code: status::StatusCode::Error as i32, message: String::new() });
                }
            }
            None => {
                span.attributes.push(kv("error.type", "cancelled"));
                span.status = Some(Status {
                    code: status::StatusCode::Error as i32,
                    message: "the client went away before the response".into(),
                });
            }
        }
        self.handle.tracer.emit(span);
    }
}

impl Drop for ServerSpan {
    fn drop(&mut self) {
        if let Some(span) = self.span.take() {
            self.end(span, None);
        }
    }
}

/// One attempt's client span.
#[derive(Debug)]
pub struct ClientSpan {
    handle: Arc<SpanHandle>,
    span: Option<Span>,
}

impl ClientSpan {
    /// Ends the span: the upstream's status, or the proxy's error (`Err`
    /// with the status the client will see and why).
    pub fn finish(mut self, outcome: Result<u16, (u16, &str)>, peer_id: Option<&str>) {
        let Some(mut span) = self.span.take() else { return };
        span.end_time_unix_nano = now();
        if let Some(id) = peer_id {
            span.attributes.push(kv("weft.peer_id", id));
        }
        match outcome {
            Ok(code) => {
                span.attributes.push(kv_int("http.response.status_code", i64::from(code)));
                // On the client side 4xx is an error too (semconv).
                if code >= 400 {
                    span.attributes.push(kv("error.type", &code.to_string()));
                    span.status = Some(Status { code: status::StatusCode::Error as i32, message: String::new() });
                }
            }
            Err((code, why)) => {
                span.attributes.push(kv("error.type", "weft.proxy_error"));
                span.attributes.push(kv_int("weft.proxy_status", i64::from(code)));
                span.status = Some(Status { code: status::StatusCode::Error as i32, message: why.to_owned() });
            }
        }
        self.handle.tracer.emit(span);
    }
}

impl Drop for ClientSpan {
    fn drop(&mut self) {
        if let Some(mut span) = self.span.take() {
            span.end_time_unix_nano = now();
            span.attributes.push(kv("error.type", "cancelled"));
            span.status = Some(Status { code: status::StatusCode::Error as i32, message: "cancelled".into() });
            self.handle.tracer.emit(span);
        }
    }
}

/// The semantic-convention attributes known from the request head.
fn request_attributes<B>(direction: Direction, req: &Request<B>) -> Vec<KeyValue> {
    let mut attrs = Vec::with_capacity(10);
    attrs.push(kv("weft.direction", direction.as_str()));
    attrs.push(kv("http.request.method", req.method().as_str()));
    attrs.push(kv("url.path", req.uri().path()));
    let authority = match req.uri().authority() {
        Some(a) => Some((a.host().to_owned(), a.port_u16())),
        None => host_header(req.headers()),
    };
    if let Some((host, port)) = authority {
        attrs.push(kv("server.address", &host));
        if let Some(port) = port {
            attrs.push(kv_int("server.port", i64::from(port)));
        }
    }
    attrs.push(kv("url.scheme", req.uri().scheme_str().unwrap_or("http")));
    let version = match req.version() {
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_11 => "1.1",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "0.9",
    };
    attrs.push(kv("network.protocol.version", version));
    attrs
}

fn host_header(headers: &HeaderMap) -> Option<(String, Option<u16>)> {
    let host = headers.get(http::header::HOST)?.to_str().ok()?;
    let a: http::uri::Authority = host.parse().ok()?;
    Some((a.host().to_owned(), a.port_u16()))
}

fn kv(key: &'static str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.to_owned())) }),
    }
}

fn kv_int(key: &'static str, value: i64) -> KeyValue {
    KeyValue { key: key.to_owned(), value: Some(AnyValue { value: Some(any_value::Value::IntValue(value)) }) }
}

fn now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use http::header::HeaderValue;

    use super::*;
    use crate::trace::{SPAN_QUEUE, TraceSettings};

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn on(ratio: f64) -> (Tracer, crate::trace::export::Exporter) {
        let (tracer, exporter) = Tracer::new();
        tracer.apply(TraceSettings {
            collector: Some("127.0.0.1:4317".into()),
            sampling_ratio: ratio,
            ..Default::default()
        });
        (tracer, exporter)
    }

    fn request(traceparent: Option<&str>) -> Request<()> {
        let mut req = Request::get("http://web.default/a/b?token=x").body(()).expect("request");
        if let Some(tp) = traceparent {
            req.headers_mut().insert(context::TRACEPARENT, HeaderValue::from_str(tp).expect("value"));
        }
        req
    }

    fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a any_value::Value> {
        span.attributes.iter().find(|k| k.key == key).and_then(|k| k.value.as_ref()?.value.as_ref())
    }

    #[test]
    fn off_or_unsampled_leaves_the_request_alone() {
        let cases: &[(&str, Option<f64>, Option<&str>)] = &[
            ("no collector", None, Some(TP)),
            ("caller says unsampled", Some(1.0), Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")),
            ("no context, ratio 0", Some(0.0), None),
        ];
        for (what, ratio, tp) in cases {
            let tracer = match ratio {
                Some(r) => on(*r).0,
                None => Tracer::default(),
            };
            let mut req = request(*tp);
            let before = req.headers().clone();
            assert!(tracer.server_span(Direction::Inbound, &mut req).is_none(), "{what}");
            assert_eq!(req.headers(), &before, "{what}");
            assert!(req.extensions().get::<Arc<SpanHandle>>().is_none(), "{what}");
        }
    }

    #[test]
    fn a_sampled_request_gets_a_server_span_and_its_attempts_client_spans() {
        let (tracer, mut exporter) = on(0.0);
        let mut req = request(Some(TP));
        let server = tracer.server_span(Direction::Outbound, &mut req).expect("sampled");
        let handle = req.extensions().get::<Arc<SpanHandle>>().expect("handle").clone();
        handle.set("weft.route", "default/web#0");
        handle.set_int("weft.retry_count", 1);
        // Towards the next hop this span is the parent.
        let ctx = context::extract(req.headers()).expect("context");
        assert_eq!(ctx.parent_id, handle.span_id);
        let mut headers = req.headers().clone();
        let a0 = handle.attempt(&mut headers, "10.0.0.1:8080".parse().expect("addr"), 0);
        let first = context::extract(&headers).expect("context").parent_id;
        a0.finish(Ok(503), Some("spiffe://td/ns/default/sa/web"));
        let a1 = handle.attempt(&mut headers, "10.0.0.2:8080".parse().expect("addr"), 1);
        a1.finish(Err((504, "timed out")), None);
        server.finish(200);

        let spans: Vec<Span> = std::iter::from_fn(|| exporter.try_recv()).collect();
        assert_eq!(spans.len(), 3);
        let (a0, a1, server) = (&spans[0], &spans[1], &spans[2]);
        assert_eq!(server.parent_span_id, ctx_bytes("00f067aa0ba902b7"));
        assert_eq!(server.kind, SpanKind::Server as i32);
        assert_eq!(a0.span_id, first.to_vec());
        for a in [a0, a1] {
            assert_eq!(
                (a.kind, &a.parent_span_id, &a.trace_id),
                (SpanKind::Client as i32, &server.span_id, &server.trace_id)
            );
            assert_eq!(attr(a, "weft.route"), Some(&any_value::Value::StringValue("default/web#0".into())));
        }
        assert_eq!(attr(a0, "http.response.status_code"), Some(&any_value::Value::IntValue(503)));
        assert_eq!(a0.status.as_ref().map(|s| s.code), Some(status::StatusCode::Error as i32));
        assert_eq!(attr(a1, "weft.retry_count"), Some(&any_value::Value::IntValue(1)));
        assert_eq!(a1.status.as_ref().map(|s| s.message.as_str()), Some("timed out"));
        assert_eq!(attr(server, "url.path"), Some(&any_value::Value::StringValue("/a/b".into())));
        assert_eq!(attr(server, "server.address"), Some(&any_value::Value::StringValue("web.default".into())));
        assert_eq!(attr(server, "weft.retry_count"), Some(&any_value::Value::IntValue(1)));
        assert_eq!(attr(server, "http.response.status_code"), Some(&any_value::Value::IntValue(200)));
        assert!(server.status.is_none());
        assert!(!format!("{spans:?}").contains("token"), "the query string stays out");
    }

    #[test]
    fn the_ratio_starts_w3c_traces_and_a_full_queue_drops_and_counts() {
        let (tracer, _exporter) = on(1.0);
        let mut req = request(None);
        let span = tracer.server_span(Direction::Inbound, &mut req).expect("ratio 1 traces everything");
        let ctx = context::extract(req.headers()).expect("a new W3C context");
        assert_eq!((ctx.format, ctx.sampled), (Format::W3c, true));
        drop(span);
        // The cancelled span above took one place.
        for _ in 0..SPAN_QUEUE + 4 {
            let mut req = request(None);
            tracer.server_span(Direction::Inbound, &mut req).expect("sampled").finish(200);
        }
        assert_eq!(tracer.dropped(), 5, "the queue holds {SPAN_QUEUE}; the rest are dropped");
        // Switched off: nothing is recorded any more.
        tracer.apply(TraceSettings::default());
        assert!(tracer.server_span(Direction::Inbound, &mut request(Some(TP))).is_none());
    }

    fn ctx_bytes(hex: &str) -> Vec<u8> {
        (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex")).collect()
    }
}
