//! The exporter: one task takes finished spans off the queue, batches them
//! (up to [`MAX_BATCH`] spans or every [`INTERVAL`]) and sends each batch
//! with OTLP/gRPC `TraceService.Export` (`opentelemetry-proto`'s
//! generated client over tonic, plaintext HTTP/2) to the collector in
//! force. A batch the collector refuses is dropped and counted: spans are
//! never retried, so a slow collector cannot grow the proxy's memory.

use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use super::{TraceSettings, Tracer};

/// Spans per export call at most.
pub const MAX_BATCH: usize = 512;
/// A batch waits at most this long for more spans.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// One export call's deadline.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// The exporter task, ready to spawn ([`Exporter::run`]).
#[derive(Debug)]
pub struct Exporter {
    rx: mpsc::Receiver<Span>,
    settings: watch::Receiver<TraceSettings>,
    tracer: Tracer,
    /// The resource attributes every batch carries besides `service.name`.
    resource: Vec<KeyValue>,
    default_service: String,
}

/// The collector in force, dialed lazily.
struct Collector {
    client: TraceServiceClient<Channel>,
    resource: Resource,
}

impl Exporter {
    pub(super) fn new(rx: mpsc::Receiver<Span>, settings: watch::Receiver<TraceSettings>, tracer: Tracer) -> Self {
        Self { rx, settings, tracer, resource: Vec::new(), default_service: "weft-proxy".into() }
    }

    /// Names this proxy in the spans' resource: `service.name` (unless the
    /// control plane sets one) and further attributes (`weft.proxy_id`…).
    pub fn with_resource(mut self, service_name: &str, attributes: &[(&'static str, &str)]) -> Self {
        self.default_service = service_name.to_owned();
        self.resource = attributes.iter().map(|(k, v)| kv(k, v)).collect();
        self
    }

    /// A queued span, without running (tests).
    #[cfg(test)]
    pub(crate) fn try_recv(&mut self) -> Option<Span> {
        self.rx.try_recv().ok()
    }

    /// Runs until the tracer is dropped everywhere.
    pub async fn run(mut self) {
        let mut collector = self.collector();
        let mut batch: Vec<Span> = Vec::new();
        let mut deadline = Instant::now() + INTERVAL;
        loop {
            tokio::select! {
                span = self.rx.recv() => match span {
                    Some(span) => {
                        if batch.is_empty() {
                            deadline = Instant::now() + INTERVAL;
                        }
                        batch.push(span);
                        if batch.len() >= MAX_BATCH {
                            self.flush(&mut collector, &mut batch).await;
                        }
                    }
                    None => {
                        self.flush(&mut collector, &mut batch).await;
                        return;
                    }
                },
                changed = self.settings.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    // Spans already queued go to the collector they were
                    // recorded for.
                    self.flush(&mut collector, &mut batch).await;
                    collector = self.collector();
                }
                () = tokio::time::sleep_until(deadline), if !batch.is_empty() => {
                    self.flush(&mut collector, &mut batch).await;
                }
            }
        }
    }

    fn collector(&mut self) -> Option<Collector> {
        let settings = self.settings.borrow_and_update().clone();
        let addr = settings.collector?;
        let url = if addr.contains("://") { addr.clone() } else { format!("http://{addr}") };
        let endpoint = match Endpoint::from_shared(url) {
            Ok(e) => e.connect_timeout(Duration::from_secs(1)).tcp_nodelay(true),
            Err(e) => {
                tracing::warn!(collector = %addr, error = %e, "invalid trace collector address; spans are dropped");
                return None;
            }
        };
        tracing::info!(collector = %addr, ratio = settings.sampling_ratio, "exporting spans");
        let service = if settings.service_name.is_empty() { &self.default_service } else { &settings.service_name };
        let mut attributes = vec![kv("service.name", service)];
        attributes.extend(self.resource.iter().cloned());
        Some(Collector {
            client: TraceServiceClient::new(endpoint.connect_lazy()),
            resource: Resource { attributes, ..Default::default() },
        })
    }

    async fn flush(&self, collector: &mut Option<Collector>, batch: &mut Vec<Span>) {
        if batch.is_empty() {
            return;
        }
        let spans = std::mem::take(batch);
        let n = spans.len();
        let Some(c) = collector else {
            self.tracer.count_dropped(n);
            return;
        };
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(c.resource.clone()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "weft-proxy".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        ..Default::default()
                    }),
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        match tokio::time::timeout(EXPORT_TIMEOUT, c.client.export(request)).await {
            Ok(Ok(rsp)) => {
                let rejected = rsp
                    .into_inner()
                    .partial_success
                    .map_or(0, |p| usize::try_from(p.rejected_spans).unwrap_or(n))
                    .min(n);
                self.tracer.count_exported(n - rejected);
                self.tracer.count_dropped(rejected);
            }
            Ok(Err(status)) => {
                self.tracer.count_dropped(n);
                tracing::info!(code = ?status.code(), message = status.message(), spans = n, "the trace collector refused a batch; dropped");
            }
            Err(_) => {
                self.tracer.count_dropped(n);
                tracing::info!(
                    spans = n,
                    "the trace collector did not answer within {EXPORT_TIMEOUT:?}; batch dropped"
                );
            }
        }
    }
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.to_owned())) }),
    }
}
