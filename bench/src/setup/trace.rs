//! The `weft-trace-0` and `weft-trace-100` setups: the `weft-mtls` pair
//! with tracing on, the control plane naming an OTLP sink in its own pod
//! (`weft-bench otlp-sink`: it counts the spans and answers at once), and
//! a sampling ratio of 0 (every request pays the check and the context
//! lookup, none is traced) or 1 (every request is traced: a server span
//! per proxy and a client span per attempt, exported in batches). Against
//! `weft-mtls` they give the cost of tracing at the same rate.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use anyhow::Context as _;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use weft_tests::{Pod, Proc};

/// The sink's OTLP/gRPC port in the control plane's pod.
pub const OTLP_PORT: u16 = 4317;

/// `weft-bench otlp-sink`.
#[derive(clap::Args, Debug)]
pub struct SinkArgs {
    /// Where to serve OTLP/gRPC.
    #[arg(long)]
    pub listen: SocketAddr,
}

/// Starts the sink in `pod` and waits until it serves; returns it and the
/// address proxies export to.
pub fn start_sink(pod: &Pod, exe: &std::path::Path) -> anyhow::Result<(Proc, String)> {
    let addr = format!("{}:{OTLP_PORT}", pod.ip());
    let mut proc = pod.spawn("otlp-sink", exe, &["otlp-sink", "--listen", &addr]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !proc.stdout().contains("listening") {
        if let Some(status) = proc.try_status() {
            anyhow::bail!("the OTLP sink exited ({status}):\n{}", proc.stderr());
        }
        anyhow::ensure!(std::time::Instant::now() < deadline, "the OTLP sink did not start:\n{}", proc.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((proc, addr))
}

/// The spans the sink has received so far (its last `spans N` line).
pub fn received(sink: &Proc) -> u64 {
    sink.stdout().lines().rev().find_map(|l| l.strip_prefix("spans ")?.trim().parse().ok()).unwrap_or(0)
}

struct Sink {
    spans: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let n: usize = req.get_ref().resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum();
        let total = self.spans.fetch_add(n as u64, Relaxed) + n as u64;
        println!("spans {total}");
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// Serves until killed.
pub fn run(args: &SinkArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("tokio runtime")?;
    runtime.block_on(async {
        let listener =
            tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("bind {}", args.listen))?;
        println!("listening {}", args.listen);
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        // Tonic's router needs its `router` feature; one service needs none.
        tonic::transport::Server::builder()
            .serve_with_incoming(TraceServiceServer::new(Sink { spans: Arc::default() }), incoming)
            .await
            .context("serving OTLP")
    })
}
