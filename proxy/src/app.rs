//! Starting and stopping the proxy: bind the listeners, serve until SIGTERM,
//! SIGINT or `/shutdown`, then drain.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::admin::{self, Admin};
use crate::config::Config;
use crate::control::certify;
use crate::control::discovery::Resolver;
use crate::control::inbound_policy::InboundPolicies;
use crate::control::registry::{self, Registration};
use crate::control::{ControlPlane, ControlTls};
use crate::drain;
use crate::http::client::Pool;
use crate::http::shared::Shared;
use crate::identity::IdentityHandle;
use crate::inbound::Inbound;
use crate::listen::{Stacks, accept_loop};
use crate::metrics::{Direction, Metrics};
use crate::outbound::Outbound;
use crate::outbound::mirror::MAX_MIRRORS_IN_FLIGHT;
use crate::policy::compiled::CompiledPolicy;
use crate::tap::{self, Taps};
use crate::trace::Tracer;

/// Runs the proxy until it is asked to stop and has drained.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let bind = |addr, what: &'static str| async move {
        TcpListener::bind(addr).await.with_context(|| {
            format!("cannot bind the {what} listener on {addr}; is another proxy running in this namespace?")
        })
    };
    let inbound = bind(config.inbound_addr, "inbound").await?;
    let outbound = bind(config.outbound_addr, "outbound").await?;
    let admin_listener = bind(config.admin_addr, "admin").await?;

    let metrics = Metrics::new();
    let control = match &config.control {
        Some(c) => {
            let tls = c
                .trust_anchors_pem
                .as_deref()
                .filter(|_| c.url.starts_with("https://"))
                .map(|pem| ControlTls::from_pem(pem, &c.control_plane_name))
                .transpose()
                .context("--trust-anchors")?;
            Some(ControlPlane::new(&c.url, c.proxy_id.clone(), c.namespace.clone(), tls)?)
        }
        None => None,
    };
    // mTLS: get a certificate (and the trust anchors) before serving.
    let identity = match (&control, config.control.as_ref().and_then(|c| c.identity.clone())) {
        (Some(control), Some((id, token))) => {
            let handle = IdentityHandle::new(id);
            let token_file = config.control.as_ref().and_then(|c| c.identity_token_file.clone());
            let tokens = certify::Tokens::new(token, token_file);
            tokio::spawn(certify::run(control.clone(), handle.clone(), tokens, metrics.clone()));
            tokio::spawn(certify::watch_anchors(control.clone(), handle.clone()));
            Some(handle)
        }
        _ => None,
    };
    let discovery_timeout = config.control.as_ref().map_or(Duration::from_secs(1), |c| c.discovery_timeout);
    let resolver = Resolver::new(control.clone(), discovery_timeout);
    // Inbound authorization needs to know which workload this is.
    let inbound_policies = match (&control, config.control.as_ref()) {
        (Some(control), Some(c)) => c.workload_name.as_ref().map(|name| {
            Arc::new(InboundPolicies::new(
                control.clone(),
                format!("{name}.{}", c.namespace),
                discovery_timeout,
                c.default_inbound_policy,
            ))
        }),
        _ => None,
    };
    let registration = Arc::new(Registration::default());
    let registrar = match (&control, config.control.as_ref().and_then(|c| c.workload.clone())) {
        (Some(control), Some(workload)) => {
            let (control, registration, identity) = (control.clone(), registration.clone(), identity.clone());
            Some(tokio::spawn(async move {
                // Peers will open mTLS to this workload as soon as it is
                // discoverable: have the certificate first.
                if let Some(identity) = identity {
                    identity.ready().await;
                }
                registry::run(control, workload, registration).await
            }))
        }
        _ => None,
    };
    // Tracing: off until the control plane names a collector.
    let (trace, exporter) = Tracer::new();
    {
        let c = config.control.as_ref();
        let service = c.and_then(|c| c.workload_name.clone()).unwrap_or_else(|| "weft-proxy".into());
        let proxy_id = c.map_or("", |c| c.proxy_id.as_str());
        let namespace = c.map_or("", |c| c.namespace.as_str());
        let exporter =
            exporter.with_resource(&service, &[("weft.proxy_id", proxy_id), ("k8s.namespace.name", namespace)]);
        tokio::spawn(exporter.run());
    }
    if let (Some(control), Some(c)) = (&control, config.control.as_ref()) {
        let workload = c.workload_name.clone().unwrap_or_default();
        tokio::spawn(crate::trace::watch::run(control.clone(), workload, trace.clone()));
    }
    let (mut signal, watch) = drain::channel();
    let admin = Arc::new(Admin {
        metrics: metrics.clone(),
        config: config.clone(),
        ready: AtomicBool::new(false),
        shutdown: signal.trigger(),
        resolver: resolver.clone(),
        registration: registration.clone(),
        identity: identity.clone(),
        inbound_policies: inbound_policies.clone(),
        trace: trace.clone(),
    });
    let taps = Taps::new(identity.as_ref().map(|i| i.local().clone()), metrics.clone());
    let http = Arc::new(Shared {
        pool: Pool::new(config.connect_timeout, config.http.pool_idle_timeout),
        taps: taps.clone(),
        metrics: metrics.clone(),
        request_timeout: config.http.request_timeout,
        tcp_idle_timeout: config.tcp_idle_timeout,
        identity: identity.clone(),
        trace,
    });
    let stacks = Arc::new(Stacks {
        inbound: Arc::new(Inbound {
            config: config.clone(),
            http: http.clone(),
            policies: inbound_policies.clone(),
            namespace: config.control.as_ref().map_or("default", |c| c.namespace.as_str()).to_string(),
            admission: crate::inbound::admit::Admission::new(config.max_connections),
        }),
        outbound: Arc::new(Outbound {
            config: config.clone(),
            http,
            resolver,
            listener: outbound.local_addr().context("reading the outbound listener's address")?,
            fallback_policy: Arc::new(CompiledPolicy::fallback(config.http.request_timeout)),
            policy_timeout: config.control.as_ref().map_or(Duration::from_secs(3), |c| c.policy_timeout),
            mirrors: Arc::new(Semaphore::new(MAX_MIRRORS_IN_FLIGHT)),
        }),
        limit: Arc::new(Semaphore::new(config.max_connections)),
    });

    tokio::spawn(admin::serve(admin_listener, admin.clone()));
    if let Some(identity) = &identity {
        tracing::info!(identity = %identity.local(), "waiting for a certificate before serving");
        identity.ready().await;
    }
    start_tap(&config, identity.as_ref(), taps).await;
    tokio::spawn(accept_loop(inbound, Direction::Inbound, stacks.clone(), watch.clone()));
    tokio::spawn(accept_loop(outbound, Direction::Outbound, stacks, watch));
    admin.ready.store(true, Ordering::Release);
    tracing::info!(
        inbound = %config.inbound_addr,
        outbound = %config.outbound_addr,
        admin = %config.admin_addr,
        "weft-proxy ready"
    );

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot install the SIGTERM handler")?;
    tokio::select! {
        _ = sigterm.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        _ = signal.requested() => {}
    }
    // Leave discovery first, so that peers stop choosing this workload
    // before its listeners close.
    if let Some(registrar) = registrar {
        registrar.abort();
        if let (Some(control), Some(c)) = (&control, &config.control)
            && registry::deregister(control, &registration, Duration::from_secs(1)).await
        {
            tokio::time::sleep(c.deregister_grace).await;
        }
    }
    admin.shutdown.fire();
    tracing::info!(deadline = ?config.drain_timeout, "draining: listeners closed, finishing in-flight work");
    match tokio::time::timeout(config.drain_timeout, signal.drain()).await {
        Ok(()) => tracing::info!("drained; exiting"),
        Err(_) => {
            tracing::warn!(deadline = ?config.drain_timeout, "drain deadline passed; closing remaining connections")
        }
    }
    Ok(())
}

/// Starts the tap server when the proxy has a mesh identity and a tap
/// address. A tap port that cannot be bound is logged, not fatal: tap is
/// for observing, and the data path does not need it.
async fn start_tap(config: &Config, identity: Option<&IdentityHandle>, taps: Arc<Taps>) {
    let Some(addr) = config.tap_addr else {
        return;
    };
    let Some(identity) = identity else {
        tracing::info!("no mesh identity: the tap listener is not started (tap needs mTLS)");
        return;
    };
    let control_plane_name = config.control.as_ref().map_or("", |c| c.control_plane_name.as_str());
    let Some(allowed) = tap::server::control_identity(identity.local(), control_plane_name) else {
        tracing::warn!(
            control_plane_name,
            "cannot tell the control plane's identity from --control-plane-name (weft-control.NAMESPACE.svc): the tap listener is not started"
        );
        return;
    };
    match TcpListener::bind(addr).await {
        Ok(listener) => {
            tracing::info!(%addr, %allowed, "tap listening");
            tokio::spawn(tap::server::serve(listener, taps, identity.clone(), allowed));
        }
        Err(e) => tracing::warn!(%addr, error = %e, "cannot bind the tap listener; tap is off"),
    }
}
