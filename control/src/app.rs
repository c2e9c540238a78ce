//! Wiring: sources → index → gRPC streams, the mesh CA, plus the admin
//! server.
//!
//! [`start`] loads the files once (refusing to start on invalid ones, so a
//! typo is seen at once rather than in a log), opens the CA (generating the
//! local root on a first start with a state directory), binds both
//! listeners, and spawns the tasks; the returned [`Control`] knows the
//! bound addresses (tests bind port 0) and shuts everything down.
//!
//! With `--source kubernetes` it also connects to the API server, plugs the
//! TokenReview verifier into the CA, and starts the watches; gRPC is served
//! and `/ready` turns 200 once every kind has been listed (with the files
//! source, at once). Until then, connections wait in the listen backlog.
//! With the CA on it also keeps the injector's serving certificate and its
//! webhook's caBundle (`source::kubernetes::webhook_cert`), unless
//! `--webhook-cert external` says cert-manager does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::admin::Admin;
use crate::ca::files::CaFiles;
use crate::ca::kubernetes::{PodCheck, TokenReviewer};
use crate::ca::serving::{ServingCert, ServingError};
use crate::ca::{Ca, CaError};
use crate::config::Config;
use crate::config::SourceKind;
use crate::grpc::watch::Streams;
use crate::index::{Index, MeshConfig};
use crate::metrics::Metrics;
use crate::shutdown::{self, Trigger};
use crate::source::files::LocalFiles;
use crate::source::kubernetes::webhook_cert::WebhookCert;
use crate::source::kubernetes::{KubeError, Kubernetes};
use crate::source::registry::Registry;
use crate::source::{Diagnostics, Sink, Source, SourceError};
use crate::telemetry::Telemetry;
use crate::telemetry::tap::TapClient;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} for {what}: {source}; is another control plane running?")]
    Bind {
        addr: SocketAddr,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("refusing to start with invalid input; fix these files:\n  {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  "))]
    Invalid(Vec<SourceError>),
    #[error("cannot start the mesh CA: {0}")]
    Ca(#[from] CaError),
    #[error("cannot serve gRPC over TLS: {0}")]
    Tls(#[from] ServingError),
    #[error("--source kubernetes: {0}")]
    Kube(#[from] KubeError),
}

/// A running control plane.
#[derive(Debug)]
pub struct Control {
    grpc_addr: SocketAddr,
    admin_addr: SocketAddr,
    dashboard_addr: Option<SocketAddr>,
    telemetry: Telemetry,
    index: Index,
    registry: Registry,
    metrics: Arc<Metrics>,
    diagnostics: Arc<Diagnostics>,
    ca: Option<Ca>,
    serving: Option<Arc<ServingCert>>,
    trigger: Trigger,
    tasks: Vec<JoinHandle<()>>,
    trace: tokio::sync::watch::Sender<Arc<crate::grpc::config::TraceSettings>>,
}

impl Control {
    /// Changes the proxies' tracing settings (collector `None`: off); every
    /// connected proxy gets them on its `ProxyConfig.Watch` stream.
    pub fn set_tracing(&self, collector: Option<String>, sampling_ratio: f64) {
        self.trace.send_modify(|s| {
            *s = Arc::new(crate::grpc::config::TraceSettings {
                version: s.version + 1,
                collector,
                sampling_ratio,
                service_name: s.service_name.clone(),
            });
        });
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Where the dashboard and its JSON API listen, when on.
    pub fn dashboard_addr(&self) -> Option<SocketAddr> {
        self.dashboard_addr
    }

    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    pub fn index(&self) -> &Index {
        &self.index
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn diagnostics(&self) -> &Arc<Diagnostics> {
        &self.diagnostics
    }

    /// The mesh CA, when on.
    pub fn ca(&self) -> Option<&Ca> {
        self.ca.as_ref()
    }

    /// The certificate chain the gRPC port serves (leaf first, DER), when
    /// the CA is on.
    pub fn serving_chain(&self) -> Option<Vec<Vec<u8>>> {
        self.serving.as_ref().map(|s| s.chain())
    }

    /// Ends every stream (with UNAVAILABLE, so proxies reconnect), stops
    /// the listeners and sources, and waits for the tasks (at most 5 s).
    pub async fn shutdown(self) {
        self.trigger.fire();
        let all = futures_join(self.tasks);
        if tokio::time::timeout(Duration::from_secs(5), all).await.is_err() {
            tracing::warn!("some tasks did not stop within 5s");
        }
    }
}

async fn futures_join(tasks: Vec<JoinHandle<()>>) {
    for t in tasks {
        let _ = t.await;
    }
}

/// Starts the control plane described by `config`.
pub async fn start(config: Config) -> Result<Control, StartError> {
    let mesh = MeshConfig {
        trust_domain: config.trust_domain.clone(),
        default_access: config.default_access,
        mtls_mode: config.mtls_mode,
        ..MeshConfig::default()
    };
    let index = Index::new(mesh);
    let diagnostics = Arc::new(Diagnostics::default());
    let sink = Sink::new(index.clone(), diagnostics.clone());
    let metrics = Arc::new(Metrics::default());
    let (trigger, shutdown) = shutdown::channel();

    // First load: refuse to start on invalid files.
    let mut files = LocalFiles::new(config.services.clone(), config.policy_paths.clone(), config.reload_interval);
    let (files, first) = tokio::task::spawn_blocking(move || {
        let outcome = files.poll();
        (files, outcome)
    })
    .await
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    if !first.rejected.is_empty() {
        return Err(StartError::Invalid(first.rejected));
    }
    LocalFiles::publish(first, &sink);

    let kubernetes = match config.source {
        SourceKind::Files => None,
        SourceKind::Kubernetes => {
            let client = crate::source::kubernetes::client(config.kubeconfig.as_deref()).await?;
            Some(Kubernetes::new(client))
        }
    };
    // Serve nothing before the cluster has been listed once: an empty
    // index would tell the first proxies that no Service exists.
    let synced: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> = match &kubernetes {
        Some(k) => Box::pin(k.synced()),
        None => Box::pin(std::future::ready(())),
    };

    let ca = match config.ca() {
        Some(settings) => {
            let metrics = metrics.clone();
            let mut opened = tokio::task::spawn_blocking(move || Ca::open(settings, metrics, SystemTime::now()))
                .await
                .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
            if let Some(k) = &kubernetes {
                // Projected service-account tokens, checked with TokenReview,
                // for Pods this control plane has seen.
                let pods = k.pods();
                let lookup = move |ns: &str, name: &str, uid: &str| match pods.get(ns, name) {
                    Some(p) if uid.is_empty() || p.uid == uid => PodCheck::RunsAs(p.service_account),
                    _ => PodCheck::Unknown,
                };
                let reviewer = TokenReviewer::new(k.client(), &config.trust_domain, Arc::new(lookup))
                    .with_audience(&config.token_audience);
                opened = opened.with_verifier(Arc::new(reviewer));
            }
            Some(opened)
        }
        None => {
            tracing::warn!(
                "the mesh CA is off (no --state-dir, no --issuer-cert/--issuer-key): Certify answers UNAVAILABLE and gRPC is served in plaintext"
            );
            None
        }
    };

    let webhook_cert = match (&kubernetes, config.webhook_cert(), &ca) {
        (Some(k), Some(settings), Some(ca)) => Some(WebhookCert::new(k.client(), ca.clone(), settings)),
        (Some(_), Some(_), None) => {
            tracing::warn!(
                "the injector's serving certificate is not kept: the mesh CA is off (give --issuer-cert and --issuer-key, or --webhook-cert external when cert-manager keeps it)"
            );
            None
        }
        _ => None,
    };

    let grpc = TcpListener::bind(config.grpc_addr).await.map_err(|source| StartError::Bind {
        addr: config.grpc_addr,
        what: "gRPC",
        source,
    })?;
    let admin_listener = TcpListener::bind(config.admin_addr).await.map_err(|source| StartError::Bind {
        addr: config.admin_addr,
        what: "admin",
        source,
    })?;
    let grpc_addr =
        grpc.local_addr().map_err(|source| StartError::Bind { addr: config.grpc_addr, what: "gRPC", source })?;
    let admin_addr = admin_listener.local_addr().map_err(|source| StartError::Bind {
        addr: config.admin_addr,
        what: "admin",
        source,
    })?;

    let (serving, tls) = match &ca {
        Some(ca) => {
            let serving = ServingCert::new(ca.clone(), grpc_addr.ip(), &config.namespace)?;
            let tls = crate::ca::serving::server_config(serving.clone()).map_err(ServingError::from)?;
            (Some(serving), Some(tls))
        }
        None => (None, None),
    };

    let registry = Registry::new(sink.clone(), config.lease_ttl);
    let admin = Arc::new(Admin {
        index: index.clone(),
        registry: registry.clone(),
        metrics: metrics.clone(),
        diagnostics: diagnostics.clone(),
        ca: ca.clone(),
        ready: false.into(),
    });
    let streams = Streams { index: index.clone(), metrics: metrics.clone(), shutdown: shutdown.clone() };
    // The proxies' tracing settings, streamed by `ProxyConfig.Watch`; kept
    // in `Control` so that a running control plane can change them.
    let (trace, trace_rx) = tokio::sync::watch::channel(Arc::new(crate::grpc::config::TraceSettings {
        version: 1,
        collector: config.trace_collector.clone(),
        sampling_ratio: config.trace_sampling,
        service_name: String::new(),
    }));

    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(files.run(sink.clone(), shutdown.clone())));
    tasks.push(tokio::spawn(registry.clone().reap(shutdown.clone())));
    tasks.push(tokio::spawn(crate::admin::serve(admin_listener, admin.clone(), shutdown.clone())));
    if let Some(k) = kubernetes {
        tasks.push(tokio::spawn(k.run(sink.clone(), shutdown.clone())));
    }
    if let Some(w) = webhook_cert {
        tasks.push(tokio::spawn(w.run(shutdown.clone())));
    }
    if let Some(ca) = &ca {
        tasks.push(tokio::spawn(CaFiles::new(ca.clone(), config.reload_interval).run(sink.clone(), shutdown.clone())));
    }
    if let Some(serving) = &serving {
        tasks.push(tokio::spawn(serving.clone().run(shutdown.clone())));
    }
    let telemetry = Telemetry::new(index.clone(), config.telemetry.clone());
    tasks.push(tokio::spawn(telemetry.clone().run(shutdown.clone())));
    // The dashboard is a view: a port already taken is a warning, not a
    // reason to stop serving the proxies.
    let mut dashboard_addr = None;
    if let Some(addr) = config.dashboard_addr {
        match TcpListener::bind(addr).await.and_then(|l| Ok((l.local_addr()?, l))) {
            Ok((bound, listener)) => {
                dashboard_addr = Some(bound);
                let tap = match (&ca, &serving) {
                    (Some(ca), Some(serving)) => Some(TapClient {
                        ca: ca.clone(),
                        serving: serving.clone(),
                        port: config.telemetry.tap_port,
                        connect_timeout: Duration::from_secs(2),
                    }),
                    _ => None,
                };
                let dashboard = Arc::new(crate::dashboard::Dashboard { telemetry: telemetry.clone(), tap });
                tasks.push(tokio::spawn(crate::dashboard::serve(listener, dashboard, shutdown.clone())));
            }
            Err(e) => {
                tracing::warn!(%addr, error = %e, "cannot listen for the dashboard; it is off (--dashboard-addr)")
            }
        }
    }
    {
        let (registry, mut shutdown, ca, admin, index) =
            (registry.clone(), shutdown.clone(), ca.clone(), admin.clone(), index.clone());
        let tls_on = serving.is_some();
        tasks.push(tokio::spawn(async move {
            tokio::select! {
                () = synced => {}
                () = shutdown.signaled() => return,
            }
            admin.ready.store(true, Ordering::Release);
            let dashboard = dashboard_addr.map_or_else(|| "off".to_owned(), |a| format!("http://{a}/"));
            tracing::info!(%grpc_addr, %admin_addr, %dashboard, version = index.state().version, tls = tls_on, "control plane ready");
            if let Err(e) = crate::grpc::serve(grpc, streams, registry, ca, tls, trace_rx, shutdown).await {
                tracing::error!(error = %e, "the gRPC server failed");
            }
        }));
    }
    Ok(Control {
        grpc_addr,
        admin_addr,
        dashboard_addr,
        telemetry,
        index,
        registry,
        metrics,
        diagnostics,
        ca,
        serving,
        trigger,
        tasks,
        trace,
    })
}

/// Runs until SIGINT or SIGTERM, then shuts down.
pub async fn run(config: Config) -> Result<(), StartError> {
    let control = start(config).await?;
    wait_for_signal().await;
    tracing::info!("shutting down");
    control.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the control plane");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
