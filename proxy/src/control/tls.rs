//! TLS to the control plane, trusting the mesh's *current* anchors.
//!
//! The proxy starts with the anchors pinned by `--trust-anchors` and then
//! follows `Identity.WatchTrustAnchors`: every bundle it receives replaces
//! the anchors used for the next connection to the control plane. Without
//! that, a root rotation would strand the proxy: once the control plane's
//! own certificate comes from the new root and the old one is retired, a
//! reconnect verified against the static file would fail forever.
//!
//! tonic's built-in TLS takes fixed roots, so the channel is given this
//! connector instead: it reads the current configuration at each connect.
//! Connections already open keep the configuration they started with.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// ALPN: gRPC is HTTP/2.
const ALPN_H2: &[u8] = b"h2";

#[derive(Debug, thiserror::Error)]
pub enum ControlTlsError {
    #[error("no usable certificate among the control plane's trust anchors")]
    NoAnchors,
    #[error("a control plane trust anchor is not a usable certificate: {0}")]
    BadAnchor(String),
    #[error("the control plane name {0:?} is not a valid DNS name")]
    BadName(String),
    #[error("building the TLS configuration failed: {0}")]
    Tls(#[from] rustls::Error),
}

/// The TLS settings for the control plane channel: its name, and the
/// anchors currently trusted. Cheap to clone; clones share the anchors.
#[derive(Clone, Debug)]
pub struct ControlTls {
    server_name: ServerName<'static>,
    current: Arc<RwLock<Current>>,
}

#[derive(Debug)]
struct Current {
    config: Arc<ClientConfig>,
    /// How many certificates the configuration trusts (for logs).
    anchors: usize,
}

impl ControlTls {
    /// Pins the PEM bundle `anchors_pem` and expects `server_name` in the
    /// control plane's certificate.
    pub fn from_pem(anchors_pem: &str, server_name: &str) -> Result<Self, ControlTlsError> {
        let anchors: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut anchors_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| ControlTlsError::BadAnchor(e.to_string()))?;
        let server_name = ServerName::try_from(server_name.to_owned())
            .map_err(|_| ControlTlsError::BadName(server_name.to_owned()))?;
        let current = Current { config: client_config(&anchors)?, anchors: anchors.len() };
        Ok(Self { server_name, current: Arc::new(RwLock::new(current)) })
    }

    /// Trusts `anchors` from the next connection on. A bundle that yields
    /// no usable configuration is refused and the previous one kept.
    pub fn set_anchors(&self, anchors: &[CertificateDer<'static>]) -> Result<(), ControlTlsError> {
        let next = Current { config: client_config(anchors)?, anchors: anchors.len() };
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = next;
        Ok(())
    }

    /// The number of anchors the next connection trusts.
    pub fn anchor_count(&self) -> usize {
        self.current.read().unwrap_or_else(|p| p.into_inner()).anchors
    }

    fn config(&self) -> Arc<ClientConfig> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).config.clone()
    }

    /// The connector for `Endpoint::connect_with_connector_lazy`.
    pub(super) fn connector(&self) -> Connector {
        Connector { tls: self.clone() }
    }
}

fn client_config(anchors: &[CertificateDer<'static>]) -> Result<Arc<ClientConfig>, ControlTlsError> {
    let mut roots = RootCertStore::empty();
    for anchor in anchors {
        roots.add(anchor.clone()).map_err(|e| ControlTlsError::BadAnchor(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(ControlTlsError::NoAnchors);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// Opens TCP to the URI's host and port, then TLS with the current anchors.
#[derive(Clone, Debug)]
pub struct Connector {
    tls: ControlTls,
}

impl tower::Service<http::Uri> for Connector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let config = self.tls.config();
        let server_name = self.tls.server_name.clone();
        Box::pin(async move {
            let host = uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_owned();
            let port = uri.port_u16().unwrap_or(443);
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let tls = TlsConnector::from(config).connect(server_name, tcp).await?;
            Ok(TokioIo::new(tls))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(name: &str) -> rcgen::Certificate {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).expect("self-signed")
    }

    #[test]
    fn anchors_follow_the_bundle_and_a_bad_bundle_keeps_the_last_good_one() {
        let old = root("old root");
        let tls = ControlTls::from_pem(&old.pem(), "weft-control.weft-system.svc").expect("pinned");
        assert_eq!(tls.anchor_count(), 1);

        let new = root("new root");
        tls.set_anchors(&[old.der().clone(), new.der().clone()]).expect("old + new");
        assert_eq!(tls.anchor_count(), 2);
        // Clones (the channel's connector) see the same anchors.
        assert_eq!(tls.connector().tls.anchor_count(), 2);

        assert!(matches!(tls.set_anchors(&[]), Err(ControlTlsError::NoAnchors)));
        assert!(matches!(tls.set_anchors(&[CertificateDer::from(vec![1, 2, 3])]), Err(ControlTlsError::BadAnchor(_))));
        assert_eq!(tls.anchor_count(), 2, "a refused bundle replaced the last good one");
    }

    #[test]
    fn pinned_files_and_names_are_checked() {
        assert!(matches!(ControlTls::from_pem("no pem here", "weft-control"), Err(ControlTlsError::NoAnchors)));
        let pem = root("r").pem();
        assert!(matches!(ControlTls::from_pem(&pem, "not a name!"), Err(ControlTlsError::BadName(_))));
    }
}
