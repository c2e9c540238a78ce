//! `weft-injector`: serves the mutating admission webhook.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use weft_injector::config::ProxyArgs;
use weft_injector::server::{Injector, serve};

#[derive(Parser, Debug)]
#[command(name = "weft-injector", version, about = "Weft's mutating admission webhook: injects the proxy into Pods")]
struct Cli {
    /// HTTPS listen address.
    #[arg(long, env = "WEFT_INJECTOR_LISTEN", default_value = "0.0.0.0:8443")]
    listen: SocketAddr,
    /// Serving certificate chain (PEM).
    #[arg(long, env = "WEFT_INJECTOR_CERT")]
    cert: PathBuf,
    /// Its private key (PEM).
    #[arg(long, env = "WEFT_INJECTOR_KEY")]
    key: PathBuf,
    /// Kubeconfig for reading Namespaces [default: in-cluster, else $KUBECONFIG].
    #[arg(long, env = "WEFT_INJECTOR_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// What goes into injected Pods (shared with `weft inject`).
    #[command(flatten)]
    proxy: ProxyArgs,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _ = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::new("info")).try_init();
    let tls = tls_config(&cli.cert, &cli.key)?;
    let settings = cli.proxy.settings()?;
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
        let listener = tokio::net::TcpListener::bind(cli.listen).await.with_context(|| format!("binding {}", cli.listen))?;
        tracing::info!(addr = %listener.local_addr()?, "weft-injector ready");
        serve(listener, tls, Arc::new(Injector { settings, client })).await;
        anyhow::Ok(())
    })
}

fn tls_config(cert: &PathBuf, key: &PathBuf) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(cert).with_context(|| format!("opening {}", cert.display()))?,
    ))
    .collect::<Result<Vec<_>, _>>()
    .with_context(|| format!("reading {}", cert.display()))?;
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(
        std::fs::File::open(key).with_context(|| format!("opening {}", key.display()))?,
    ))?
    .with_context(|| format!("{}: no private key", key.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
