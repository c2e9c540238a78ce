//! Distributed tracing: read the caller's trace context, record a server
//! span per request on each side and a client span per outbound attempt,
//! export them over OTLP/gRPC to the collector the control plane names.
//!
//! ```text
//! record (both stacks) ── Tracer::server_span ── enabled? (one relaxed load) ─ no ─► untouched
//!   │ yes: context.rs extract ─► sampled? (caller's decision, else the ratio) ─ no ─► untouched
//!   │ yes: span.rs ServerSpan; the request carries its SpanHandle; headers rewritten
//!   ├─► outbound attempts: SpanHandle::attempt ─► ClientSpan, headers for the next hop
//!   └─► finished spans ──try_send──► mpsc(SPAN_QUEUE) ──► export.rs: one task, batches ─► OTLP collector
//! ```
//!
//! No collector configured: the stacks test one atomic and allocate
//! nothing. A full queue drops the span and counts it; a request never
//! waits for the exporter.

pub mod context;
pub mod export;
pub mod span;
pub mod watch;

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};

use tokio::sync::mpsc;

pub use self::span::{ClientSpan, ServerSpan, SpanHandle};

/// Finished spans waiting for the exporter; past this they are dropped.
pub const SPAN_QUEUE: usize = 1024;

/// Where spans go and which requests are traced.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TraceSettings {
    /// The OTLP/gRPC collector, `host:port`; `None`: tracing off.
    pub collector: Option<String>,
    /// The share of requests without a trace context that start a trace
    /// (0.0–1.0). A caller's own decision is always followed.
    pub sampling_ratio: f64,
    /// `service.name` of the spans' resource; empty: the proxy's default.
    pub service_name: String,
}

/// The proxy's tracer, cheap to clone; changes apply to the next request.
#[derive(Clone, Debug)]
pub struct Tracer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    enabled: AtomicBool,
    /// `ratio × 2³²`: a request without context is traced when a random
    /// u32 falls below it.
    threshold: AtomicU64,
    tx: mpsc::Sender<opentelemetry_proto::tonic::trace::v1::Span>,
    settings: tokio::sync::watch::Sender<TraceSettings>,
    exported: AtomicU64,
    dropped: AtomicU64,
}

impl Default for Tracer {
    /// Off, with no exporter: for stacks built in tests.
    fn default() -> Self {
        Self::new().0
    }
}

impl Tracer {
    /// A tracer, off until [`Tracer::apply`] names a collector, and the
    /// exporter that must be spawned for its spans to leave.
    pub fn new() -> (Self, export::Exporter) {
        let (tx, rx) = mpsc::channel(SPAN_QUEUE);
        let (settings, settings_rx) = tokio::sync::watch::channel(TraceSettings::default());
        let inner = Arc::new(Inner {
            enabled: AtomicBool::new(false),
            threshold: AtomicU64::new(0),
            tx,
            settings,
            exported: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        });
        let tracer = Self { inner };
        let exporter = export::Exporter::new(rx, settings_rx, tracer.clone());
        (tracer, exporter)
    }

    /// Applies new settings: the exporter redials, the stacks see the
    /// switch and ratio on their next request.
    pub fn apply(&self, settings: TraceSettings) {
        let ratio = if settings.sampling_ratio.is_finite() { settings.sampling_ratio.clamp(0.0, 1.0) } else { 0.0 };
        self.inner.threshold.store((ratio * 4_294_967_296.0) as u64, Relaxed);
        self.inner.enabled.store(settings.collector.is_some(), Relaxed);
        self.inner.settings.send_if_modified(|s| {
            let changed = *s != settings;
            *s = settings;
            changed
        });
    }

    /// The settings in force.
    pub fn settings(&self) -> TraceSettings {
        self.inner.settings.borrow().clone()
    }

    /// Whether a collector is configured: the whole cost of tracing when
    /// it is not.
    #[inline]
    pub fn enabled(&self) -> bool {
        self.inner.enabled.load(Relaxed)
    }

    /// Whether a request without a trace context starts one.
    fn sample_new(&self) -> bool {
        let threshold = self.inner.threshold.load(Relaxed);
        threshold > 0 && u64::from(fastrand::u32(..)) < threshold
    }

    /// Queues a finished span, or drops and counts it when the queue is full
    /// or tracing was switched off meanwhile.
    fn emit(&self, span: opentelemetry_proto::tonic::trace::v1::Span) {
        if !self.enabled() || self.inner.tx.try_send(span).is_err() {
            self.inner.dropped.fetch_add(1, Relaxed);
        }
    }

    pub(crate) fn count_exported(&self, n: usize) {
        self.inner.exported.fetch_add(n as u64, Relaxed);
    }

    pub(crate) fn count_dropped(&self, n: usize) {
        self.inner.dropped.fetch_add(n as u64, Relaxed);
    }

    pub fn exported(&self) -> u64 {
        self.inner.exported.load(Relaxed)
    }

    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Relaxed)
    }

    /// Appends the exporter's counters in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let _ = write!(
            out,
            "# HELP weft_trace_spans_exported_total Spans the collector accepted.\n\
             # TYPE weft_trace_spans_exported_total counter\n\
             weft_trace_spans_exported_total {}\n\
             # HELP weft_trace_spans_dropped_total Spans dropped: queue full, tracing switched off, or the export failed.\n\
             # TYPE weft_trace_spans_dropped_total counter\n\
             weft_trace_spans_dropped_total {}\n",
            self.exported(),
            self.dropped(),
        );
    }
}
