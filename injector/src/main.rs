//! `weft-injector`: serves the mutating admission webhook.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use weft_injector::mutate::{ProxyDefaults, Settings, Sidecar};
use weft_injector::server::{Injector, serve};
use weft_injector::tls::{self, ServingCert};

#[derive(Parser, Debug)]
#[command(name = "weft-injector", version, about = "Weft's mutating admission webhook: injects the proxy into Pods")]
struct Cli {
    /// HTTPS listen address.
    #[arg(long, env = "WEFT_INJECTOR_LISTEN", default_value = "0.0.0.0:8443")]
    listen: SocketAddr,
    /// The Secret (in --namespace) holding the serving certificate: tls.crt
    /// (leaf, then chain) and tls.key, as the control plane or cert-manager
    /// writes it. Watched: a new certificate is served without a restart.
    #[arg(long, env = "WEFT_INJECTOR_TLS_SECRET", value_name = "NAME", required_unless_present = "cert")]
    tls_secret: Option<String>,
    /// Instead of --tls-secret: the serving certificate chain (PEM file),
    /// read again every 5 s. Needs --key.
    #[arg(long, env = "WEFT_INJECTOR_CERT", requires = "key", conflicts_with = "tls_secret")]
    cert: Option<PathBuf>,
    /// Its private key (PEM file: PKCS#8, SEC1 or PKCS#1).
    #[arg(long, env = "WEFT_INJECTOR_KEY", requires = "cert")]
    key: Option<PathBuf>,
    /// Kubeconfig for reading Namespaces and --tls-secret [default: in-cluster, else $KUBECONFIG].
    #[arg(long, env = "WEFT_INJECTOR_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// The injector's own log filter (tracing EnvFilter syntax).
    #[arg(long, env = "WEFT_INJECTOR_LOG", default_value = "info")]
    log: String,
    /// The image holding weft-proxy.
    #[arg(long, env = "WEFT_INJECTOR_PROXY_IMAGE", default_value = "ghcr.io/weft-mesh/weft-proxy:0.1.0")]
    proxy_image: String,
    /// The injected proxy's log filter (its WEFT_PROXY_LOG) [default: the proxy's own].
    #[arg(long, env = "WEFT_INJECTOR_PROXY_LOG")]
    proxy_log: Option<String>,
    /// The injected proxy's CPU request, unless the Pod's
    /// config.weft.dev/proxy-cpu-request says otherwise (a Kubernetes quantity).
    #[arg(long, env = "WEFT_INJECTOR_PROXY_CPU_REQUEST", default_value = "50m", value_parser = quantity)]
    proxy_cpu_request: String,
    /// Its memory request, unless config.weft.dev/proxy-memory-request.
    #[arg(long, env = "WEFT_INJECTOR_PROXY_MEMORY_REQUEST", default_value = "32Mi", value_parser = quantity)]
    proxy_memory_request: String,
    /// Its memory limit, unless config.weft.dev/proxy-memory-limit.
    #[arg(long, env = "WEFT_INJECTOR_PROXY_MEMORY_LIMIT", default_value = "256Mi", value_parser = quantity)]
    proxy_memory_limit: String,
    /// The control plane's gRPC URL, as proxies reach it.
    #[arg(long, env = "WEFT_INJECTOR_CONTROL_PLANE", default_value = "https://weft-control.weft-system.svc:8090")]
    control_plane: String,
    /// The name the control plane's certificate is checked against.
    #[arg(long, env = "WEFT_INJECTOR_CONTROL_PLANE_NAME", default_value = "weft-control.weft-system.svc")]
    control_plane_name: String,
    #[arg(long, env = "WEFT_INJECTOR_TRUST_DOMAIN", default_value = "cluster.local")]
    trust_domain: String,
    /// Weft's own namespace (never injected; where --tls-secret is).
    #[arg(long, env = "WEFT_INJECTOR_NAMESPACE", default_value = "weft-system")]
    namespace: String,
    /// The mesh's trust anchors (PEM bundle), handed to every proxy to pin
    /// for the control plane's TLS.
    #[arg(long, env = "WEFT_INJECTOR_TRUST_ANCHORS")]
    trust_anchors: Option<PathBuf>,
    /// Lifetime of the projected identity token, seconds (600..=86400).
    #[arg(long, env = "WEFT_INJECTOR_TOKEN_SECONDS", default_value_t = 3600, value_parser = clap::value_parser!(i64).range(600..=86400))]
    token_seconds: i64,
    /// How the proxy runs beside the app: `native` (an init container with
    /// restartPolicy Always, Kubernetes >= 1.29), `classic` (the first
    /// container, holding the app back with a postStart hook), or `auto`
    /// (native unless the API server is older than 1.29).
    #[arg(long, env = "WEFT_INJECTOR_SIDECAR", value_enum, default_value_t = SidecarFlag::Auto)]
    sidecar: SidecarFlag,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum SidecarFlag {
    Auto,
    Native,
    Classic,
}

/// A Kubernetes quantity, checked now: a Pod patched with a bad one would
/// be refused by the API server.
fn quantity(s: &str) -> Result<String, String> {
    if weft_injector::mutate::is_quantity(s) {
        Ok(s.to_owned())
    } else {
        Err(format!("{s:?} is not a Kubernetes quantity (such as 50m, 64Mi, 1)"))
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log).with_context(|| format!("--log {:?}", cli.log))?;
    // Logs go to stderr, colored only on a terminal (as weft-control's).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).try_init();
    let trust_anchors_pem = match &cli.trust_anchors {
        Some(path) => {
            let pem = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            anyhow::ensure!(pem.contains("BEGIN CERTIFICATE"), "{}: no PEM certificate in it", path.display());
            Some(pem)
        }
        None => {
            tracing::warn!("no --trust-anchors: injected proxies can reach only a plaintext control plane");
            None
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async {
        let client = match &cli.kubeconfig {
            Some(path) => {
                let kc = kube::config::Kubeconfig::read_from(path).with_context(|| format!("reading {}", path.display()))?;
                let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
                Some(kube::Client::try_from(config)?)
            }
            None => match kube::Client::try_default().await {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!(error = %e, "no Kubernetes credentials: Namespaces are not read, only Pods' own weft.dev/inject counts");
                    None
                }
            },
        };
        let source = match (&cli.tls_secret, &cli.cert) {
            (Some(name), _) => format!("Secret {}/{name}", cli.namespace),
            (None, Some(cert)) => format!("{} and its key", cert.display()),
            (None, None) => anyhow::bail!("give --tls-secret NAME, or --cert and --key"),
        };
        let cert = ServingCert::new(source)?;
        match (&cli.tls_secret, &cli.cert, &cli.key) {
            (Some(name), _, _) => {
                let client = client.clone().context("--tls-secret needs Kubernetes credentials (in-cluster, --kubeconfig or $KUBECONFIG)")?;
                tokio::spawn(tls::follow_secret(client, cli.namespace.clone(), name.clone(), cert.clone()));
            }
            (None, Some(crt), Some(key)) => {
                // Refuse to start on bad files, as before; later rewrites
                // that are bad are refused and the good one stays.
                let read = |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
                let loaded = tls::load(&read(crt)?, &read(key)?, std::time::SystemTime::now())
                    .with_context(|| format!("{} / {}", crt.display(), key.display()))?;
                cert.set(loaded);
                tokio::spawn(tls::follow_files(crt.clone(), key.clone(), cert.clone()));
            }
            (None, _, _) => anyhow::bail!("--cert needs --key"),
        }
        let tls = tls::server_config(cert.clone())?;
        let settings = Settings {
            proxy_image: cli.proxy_image,
            control_plane: cli.control_plane,
            control_plane_name: cli.control_plane_name,
            trust_domain: cli.trust_domain,
            own_namespace: cli.namespace,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            token_seconds: cli.token_seconds,
            trust_anchors_pem,
            proxy: ProxyDefaults {
                cpu_request: cli.proxy_cpu_request,
                memory_request: cli.proxy_memory_request,
                memory_limit: cli.proxy_memory_limit,
                log: cli.proxy_log,
            },
            sidecar: match (cli.sidecar, &client) {
                (SidecarFlag::Native, _) => Sidecar::Native,
                (SidecarFlag::Classic, _) => Sidecar::Classic,
                (SidecarFlag::Auto, Some(client)) => {
                    let v = client
                        .apiserver_version()
                        .await
                        .context("asking the API server its version for --sidecar auto (or say --sidecar native|classic)")?;
                    Sidecar::for_version(&v.major, &v.minor)
                }
                (SidecarFlag::Auto, None) => {
                    tracing::warn!("--sidecar auto without an API server to ask: native sidecars (Kubernetes >= 1.29)");
                    Sidecar::Native
                }
            },
        };
        tracing::info!(sidecar = ?settings.sidecar, "proxies are injected as {:?} sidecars", settings.sidecar);
        let listener = tokio::net::TcpListener::bind(cli.listen).await.with_context(|| format!("binding {}", cli.listen))?;
        tracing::info!(addr = %listener.local_addr()?, "weft-injector listening");
        serve(listener, tls, Arc::new(Injector { settings, client, cert })).await;
        anyhow::Ok(())
    })
}
