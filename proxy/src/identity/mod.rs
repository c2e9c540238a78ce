//! The proxy's workload identity and the TLS configurations built from it.
//!
//! ```text
//! control::certify ──(key pair in memory, CSR, token)──► Identity.Certify ──► Credentials
//! control::certify::watch_anchors ◄── Identity.WatchTrustAnchors ◄── control plane
//!        │ install()                                     │
//!        ▼                                               ▼
//!   IdentityHandle: current (credentials, anchors) → rustls client/server configs
//! ```
//!
//! Configurations are rebuilt and swapped whole on every renewal or anchor
//! change; connections already open keep the configuration they started
//! with, new ones take the new one. The private key never leaves memory.

pub mod peer;
pub mod spiffe;
pub mod verify;

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rcgen::{CertificateParams, DistinguishedName, KeyPair, PKCS_ECDSA_P256_SHA256, SanType};
use rustls::client::Resumption;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, TrustAnchor};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::sync::watch;

pub use peer::{Peer, Verified};
pub use spiffe::SpiffeId;

/// ALPN for mesh connections whose decrypted stream carries HTTP (detected
/// again by the inbound proxy).
pub const ALPN_HTTP: &[u8] = b"weft.http/1";
/// ALPN for mesh connections that carry opaque TCP: spliced, no detection.
pub const ALPN_OPAQUE: &[u8] = b"weft.opaque/1";

/// A signed certificate and its key.
pub struct Credentials {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivatePkcs8KeyDer<'static>,
    pub not_after: SystemTime,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Credentials").field("certs", &self.chain.len()).field("not_after", &self.not_after).finish()
    }
}

/// Root certificates peers must chain to.
#[derive(Debug, Clone)]
pub struct TrustBundle {
    pub version: u64,
    pub anchors: Vec<CertificateDer<'static>>,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("the trust bundle is empty")]
    NoAnchors,
    #[error("a trust anchor is not a usable certificate: {0}")]
    BadAnchor(String),
    #[error("building the TLS configuration failed: {0}")]
    Tls(#[from] rustls::Error),
    #[error("building the client certificate verifier failed: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// Client configurations per ALPN, and the server configuration.
#[derive(Debug)]
pub struct TlsConfigs {
    pub client_http: Arc<ClientConfig>,
    pub client_opaque: Arc<ClientConfig>,
    pub server: Arc<ServerConfig>,
}

#[derive(Debug)]
struct State {
    credentials: Option<Arc<Credentials>>,
    bundle: Option<TrustBundle>,
    configs: Option<Arc<TlsConfigs>>,
    renewals: u64,
}

/// Shared handle to the proxy's identity; cheap to clone.
#[derive(Clone, Debug)]
pub struct IdentityHandle {
    local: SpiffeId,
    state: Arc<RwLock<State>>,
    ready: watch::Sender<bool>,
    /// Client-side session cache shared by every configuration generation,
    /// so that a renewal does not throw resumption tickets away.
    resumption: Arc<Resumption>,
    /// Server side: stateless session tickets under keys that outlive a
    /// renewal (rotated every 6 hours by rustls), so an inbound proxy can
    /// resume any number of clients without holding sessions in memory.
    ticketer: Option<Arc<dyn rustls::server::ProducesTickets>>,
}

impl IdentityHandle {
    pub fn new(local: SpiffeId) -> Self {
        Self {
            local,
            state: Arc::new(RwLock::new(State { credentials: None, bundle: None, configs: None, renewals: 0 })),
            ready: watch::channel(false).0,
            resumption: Arc::new(Resumption::in_memory_sessions(1024)),
            ticketer: match rustls::crypto::ring::Ticketer::new() {
                Ok(t) => Some(t),
                Err(e) => {
                    tracing::warn!(error = %e, "no session ticket keys; inbound resumption uses a 256-session cache");
                    None
                }
            },
        }
    }

    pub fn local(&self) -> &SpiffeId {
        &self.local
    }

    /// The current configurations; `None` until the first certificate.
    pub fn configs(&self) -> Option<Arc<TlsConfigs>> {
        self.state.read().unwrap_or_else(|p| p.into_inner()).configs.clone()
    }

    /// Resolves once the proxy has a certificate.
    pub async fn ready(&self) {
        let mut rx = self.ready.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }

    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Installs new credentials (a first certificate or a renewal).
    pub fn set_credentials(&self, credentials: Credentials) -> Result<(), IdentityError> {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        let credentials = Arc::new(credentials);
        if let Some(bundle) = &state.bundle {
            state.configs = Some(Arc::new(self.build(&credentials, bundle)?));
        }
        if state.credentials.is_some() {
            state.renewals += 1;
        }
        state.credentials = Some(credentials);
        self.mark_ready(&state);
        Ok(())
    }

    pub fn has_bundle(&self) -> bool {
        self.state.read().unwrap_or_else(|p| p.into_inner()).bundle.is_some()
    }

    /// Installs a trust bundle (replacing the current one).
    pub fn set_bundle(&self, bundle: TrustBundle) -> Result<(), IdentityError> {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        if let Some(credentials) = &state.credentials {
            state.configs = Some(Arc::new(self.build(credentials, &bundle)?));
        }
        state.bundle = Some(bundle);
        self.mark_ready(&state);
        Ok(())
    }

    fn mark_ready(&self, state: &State) {
        if state.configs.is_some() {
            self.ready.send_replace(true);
        }
    }

    /// Seconds since the epoch when the certificate expires, and renewals so far.
    pub fn expiry_and_renewals(&self) -> (Option<u64>, u64) {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        let expiry = state
            .credentials
            .as_ref()
            .and_then(|c| c.not_after.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map(|d| d.as_secs());
        (expiry, state.renewals)
    }

    /// For the admin `/config`: identity, expiry, anchor fingerprints.
    pub fn describe(&self) -> serde_json::Value {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        let fingerprints: Vec<String> =
            state.bundle.iter().flat_map(|b| b.anchors.iter()).map(|a| hex(ring_sha256(a.as_ref()).as_ref())).collect();
        let expiry = state.credentials.as_ref().map(|c| humantime::format_rfc3339_seconds(c.not_after).to_string());
        // Which CA signed the certificate in use: how an operator (and the
        // rotation test) sees a new issuer take over.
        let issuer = state.credentials.as_ref().and_then(|c| c.chain.first()).and_then(|leaf| {
            x509_parser::parse_x509_certificate(leaf.as_ref()).ok().map(|(_, cert)| cert.issuer().to_string())
        });
        serde_json::json!({
            "identity": self.local.as_str(),
            "ready": *self.ready.borrow(),
            "expires": expiry,
            "issuer": issuer,
            "renewals": state.renewals,
            "trust_bundle_version": state.bundle.as_ref().map(|b| b.version),
            "trust_anchor_sha256": fingerprints,
        })
    }

    fn build(&self, credentials: &Credentials, bundle: &TrustBundle) -> Result<TlsConfigs, IdentityError> {
        build_configs_sharing(credentials, bundle, self.resumption.clone(), self.ticketer.clone())
    }
}

fn ring_sha256(data: &[u8]) -> ring::digest::Digest {
    ring::digest::digest(&ring::digest::SHA256, data)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Builds TLS 1.3-only configurations presenting `credentials` and trusting
/// the bundle's anchors.
pub fn build_configs(
    credentials: &Credentials,
    bundle: &TrustBundle,
    resumption: Arc<Resumption>,
) -> Result<TlsConfigs, IdentityError> {
    build_configs_sharing(credentials, bundle, resumption, None)
}

/// [`build_configs`], the server issuing stateless session tickets with
/// `ticketer` when given (rustls's 256-session in-memory cache otherwise).
pub fn build_configs_sharing(
    credentials: &Credentials,
    bundle: &TrustBundle,
    resumption: Arc<Resumption>,
    ticketer: Option<Arc<dyn rustls::server::ProducesTickets>>,
) -> Result<TlsConfigs, IdentityError> {
    if bundle.anchors.is_empty() {
        return Err(IdentityError::NoAnchors);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let anchors: Vec<TrustAnchor<'static>> = bundle
        .anchors
        .iter()
        .map(|a| {
            webpki::anchor_from_trusted_cert(a)
                .map(|t| t.to_owned())
                .map_err(|e| IdentityError::BadAnchor(e.to_string()))
        })
        .collect::<Result<_, _>>()?;
    let mut roots = RootCertStore::empty();
    roots.extend(anchors.iter().cloned());

    let key = || PrivateKeyDer::Pkcs8(credentials.key.clone_key());
    let client = |alpn: &[u8]| -> Result<Arc<ClientConfig>, IdentityError> {
        let verifier = Arc::new(verify::MeshServerVerifier::new(anchors.clone(), provider.clone()));
        let mut config = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(credentials.chain.clone(), key())?;
        config.alpn_protocols = vec![alpn.to_vec()];
        config.resumption = (*resumption).clone();
        Ok(Arc::new(config))
    };
    let client_verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build()?;
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(credentials.chain.clone(), key())?;
    server.alpn_protocols = vec![ALPN_HTTP.to_vec(), ALPN_OPAQUE.to_vec()];
    if let Some(ticketer) = ticketer {
        server.ticketer = ticketer;
    }
    Ok(TlsConfigs { client_http: client(ALPN_HTTP)?, client_opaque: client(ALPN_OPAQUE)?, server: Arc::new(server) })
}

/// When to renew a certificate valid from now until `not_after`: at 70 % of
/// its remaining life, less up to 10 % jitter so that proxies started
/// together do not renew together.
/// A fresh key pair and a CSR asking for exactly `identity`.
pub fn key_and_csr(identity: &str) -> Result<(KeyPair, Vec<u8>), rcgen::Error> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(identity.try_into()?)];
    let csr = params.serialize_request(&key)?;
    Ok((key, csr.der().to_vec()))
}

pub fn renew_after(remaining: Duration, jitter: f64) -> Duration {
    remaining.mul_f64(0.7 - 0.1 * jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests;
