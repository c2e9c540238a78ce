//! The control plane's own serving certificate, from its own CA.
//!
//! Proxies reach the control plane over TLS 1.3, pin the mesh trust
//! anchors and verify the name [`server_name`] of its namespace
//! (`--namespace`, default `weft-system`); no client certificate is asked
//! for (tokens authenticate). The certificate carries:
//!
//! - DNS `weft-control.NAMESPACE.svc` (the name proxies verify),
//! - the IP of `--grpc-addr` when it is a specific address,
//! - URI `spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/weft-control`,
//!
//! lives `--cert-lifetime` like workload certificates, and is renewed at
//! 70 % of its life, or at once when the issuer changes. The resolver hands
//! each new handshake the current one; open connections keep theirs.

use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rcgen::{KeyPair, SanType};
use rustls::ServerConfig;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::issuer::IssuerError;
use super::{Ca, control_plane_identity};
use crate::shutdown::Shutdown;

/// The name proxies verify the control plane's certificate against, in
/// the default namespace.
pub const SERVER_NAME: &str = "weft-control.weft-system.svc";
/// The control plane's namespace unless `--namespace` says otherwise.
pub const NAMESPACE: &str = "weft-system";
pub const SERVICE_ACCOUNT: &str = "weft-control";

/// The name proxies verify for a control plane in `namespace`: its
/// Service's (what the injector and the chart give the proxies).
pub fn server_name(namespace: &str) -> String {
    format!("{SERVICE_ACCOUNT}.{namespace}.svc")
}
/// ALPN: gRPC is HTTP/2.
pub const ALPN_H2: &[u8] = b"h2";

#[derive(Debug, thiserror::Error)]
pub enum ServingError {
    #[error(transparent)]
    Issuer(#[from] IssuerError),
    #[error("cannot use the serving key: {0}")]
    Tls(#[from] rustls::Error),
    #[error("cannot make the serving key: {0}")]
    Key(#[from] rcgen::Error),
}

/// A serving certificate and its validity.
#[derive(Debug)]
struct Current {
    key: Arc<CertifiedKey>,
    issued_at: SystemTime,
    not_after: SystemTime,
}

/// Hands out the current serving certificate.
#[derive(Debug)]
pub struct ServingCert {
    ca: Ca,
    ip: Option<IpAddr>,
    namespace: String,
    current: RwLock<Current>,
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(|p| p.into_inner()).key.clone())
    }
}

fn issue(ca: &Ca, ip: Option<IpAddr>, namespace: &str, now: SystemTime) -> Result<Current, ServingError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut sans = vec![SanType::DnsName(server_name(namespace).try_into()?)];
    sans.extend(ip.map(SanType::IpAddress));
    sans.push(SanType::URI(control_plane_identity(ca.trust_domain(), namespace).to_string().try_into()?));
    let issuer = ca.issuer();
    let leaf = issuer.sign_leaf(&key, sans, ca.lifetime(), now)?;
    let mut chain = vec![leaf.der];
    chain.extend(issuer.intermediates());
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signer = rustls::crypto::ring::sign::any_ecdsa_type(&der)?;
    Ok(Current { key: Arc::new(CertifiedKey::new(chain, signer)), issued_at: now, not_after: leaf.not_after })
}

impl ServingCert {
    /// Issues the first certificate, for a control plane in `namespace`.
    /// `grpc_addr`'s IP goes into the SANs unless it is unspecified
    /// (0.0.0.0 names no one).
    pub fn new(ca: Ca, grpc_ip: IpAddr, namespace: &str) -> Result<Arc<Self>, ServingError> {
        let ip = (!grpc_ip.is_unspecified()).then_some(grpc_ip);
        let current = issue(&ca, ip, namespace, SystemTime::now())?;
        Ok(Arc::new(Self { ca, ip, namespace: namespace.to_owned(), current: RwLock::new(current) }))
    }

    /// The chain currently served (leaf first), DER.
    pub fn chain(&self) -> Vec<Vec<u8>> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).key.cert.iter().map(|c| c.to_vec()).collect()
    }

    /// The current certificate and key, for the control plane's own
    /// client connections (its EKU includes clientAuth): the proxies' tap.
    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).key.clone()
    }

    /// When the current certificate should be replaced: at 70 % of its life.
    fn renew_in(&self, now: SystemTime) -> Duration {
        let c = self.current.read().unwrap_or_else(|p| p.into_inner());
        let life = c.not_after.duration_since(c.issued_at).unwrap_or_default();
        let at = c.issued_at + life.mul_f64(0.7);
        at.duration_since(now).unwrap_or_default()
    }

    fn renew_now(&self) -> Result<(), ServingError> {
        let next = issue(&self.ca, self.ip, &self.namespace, SystemTime::now())?;
        tracing::debug!(not_after = %super::pki::rfc3339(next.not_after), "serving certificate renewed");
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = next;
        Ok(())
    }

    /// Renews until shutdown: at 70 % of life, and when the issuer changes.
    /// A failure is retried after a second.
    pub async fn run(self: Arc<Self>, mut shutdown: Shutdown) {
        let mut issuer = self.ca.subscribe_issuer();
        issuer.borrow_and_update();
        loop {
            let wait = self.renew_in(SystemTime::now());
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                changed = issuer.changed() => if changed.is_err() { return },
                () = shutdown.signaled() => return,
            }
            issuer.borrow_and_update();
            while let Err(e) = self.renew_now() {
                tracing::error!(error = %e, "cannot renew the control plane's serving certificate; retrying in 1s");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = shutdown.signaled() => return,
                }
            }
        }
    }
}

/// TLS 1.3 only, ring, ALPN h2, no client certificate.
pub fn server_config(resolver: Arc<ServingCert>) -> Result<Arc<ServerConfig>, rustls::Error> {
    // An explicit provider: the process-wide default would depend on which
    // rustls features other crates in the build happen to enable.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}
