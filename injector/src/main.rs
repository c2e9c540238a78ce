//! `weft-injector`: serves the mutating admission webhook.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use weft_injector::config::{ProxyArgs, SidecarFlag};
use weft_injector::mutate::Sidecar;
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
    /// What goes into injected Pods (shared with `weft inject`).
    #[command(flatten)]
    proxy: ProxyArgs,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log).with_context(|| format!("--log {:?}", cli.log))?;
    // Logs go to stderr, colored only on a terminal (as weft-control's).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).try_init();
    let mut settings = cli.proxy.settings()?;
    if settings.trust_anchors_pem.is_none() {
        tracing::warn!("no --trust-anchors: injected proxies can reach only a plaintext control plane");
    }
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
            (Some(name), _) => format!("Secret {}/{name}", cli.proxy.namespace),
            (None, Some(cert)) => format!("{} and its key", cert.display()),
            (None, None) => anyhow::bail!("give --tls-secret NAME, or --cert and --key"),
        };
        let cert = ServingCert::new(source)?;
        match (&cli.tls_secret, &cli.cert, &cli.key) {
            (Some(name), _, _) => {
                let client = client.clone().context("--tls-secret needs Kubernetes credentials (in-cluster, --kubeconfig or $KUBECONFIG)")?;
                tokio::spawn(tls::follow_secret(client, cli.proxy.namespace.clone(), name.clone(), cert.clone()));
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
        if cli.proxy.sidecar == SidecarFlag::Auto {
            settings.sidecar = match &client {
                Some(client) => {
                    let v = client
                        .apiserver_version()
                        .await
                        .context("asking the API server its version for --sidecar auto (or say --sidecar native|classic)")?;
                    Sidecar::for_version(&v.major, &v.minor)
                }
                None => {
                    tracing::warn!("--sidecar auto without an API server to ask: native sidecars (Kubernetes >= 1.29)");
                    Sidecar::Native
                }
            };
        }
        tracing::info!(sidecar = ?settings.sidecar, "proxies are injected as {:?} sidecars", settings.sidecar);
        let listener = tokio::net::TcpListener::bind(cli.listen).await.with_context(|| format!("binding {}", cli.listen))?;
        tracing::info!(addr = %listener.local_addr()?, "weft-injector listening");
        serve(listener, tls, Arc::new(Injector { settings, client, cert })).await;
        anyhow::Ok(())
    })
}
