//! The mesh CA: signs each proxy's certificate for the identity its token
//! proves, and publishes the trust anchors.
//!
//! ```text
//!  Certify(identity, csr, token)
//!     │  identity: spiffe://TD/ns/NS/sa/SA of this trust domain?
//!     │  csr:      parses, self-signature, P-256, one URI SAN == identity   (csr)
//!     │  token:    proves an identity (consumed: single use)                (tokens)
//!     │            == identity?
//!     ▼
//!  issuer.sign_leaf ─► chain [leaf, intermediates], anchors, renewal token
//!
//!  --issuer-cert/--issuer-key, or STATE_DIR/ca.{crt,key}   (issuer)
//!  --trust-anchors, or the self-signed issuer              (anchors) ─watch─► WatchTrustAnchors
//!  --tokens                                                (tokens)
//!  Kubernetes service-account tokens (TokenReview)         (kubernetes, via `Ca::with_verifier`)
//!          └── polled by `files::CaFiles`; a bad rewrite is refused, the last good one kept
//! ```
//!
//! The checks are plain functions of their inputs (and of `now`), tested
//! here; `grpc::identity` maps [`Refusal`] to status codes,
//! `serving` turns the CA on the control plane's own gRPC port, and
//! `webhook` decides the injector's serving certificate (kept in a Secret
//! by `source::kubernetes::webhook_cert`).

pub mod anchors;
pub mod bootstrap;
pub mod csr;
pub mod files;
pub mod issuer;
pub mod kubernetes;
pub mod pki;
pub mod serving;
#[cfg(test)]
mod tests;
pub mod tokens;
pub mod webhook;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::SanType;
use rustls::pki_types::CertificateDer;
use tokio::sync::watch;

use self::anchors::{Anchors, AnchorsRx};
use self::csr::CsrError;
use self::issuer::{Issuer, IssuerError, IssuerFiles};
use self::tokens::{LocalTokens, Proof, TokenError, TokenKind, TokenStateError, TokenVerifier};
use crate::source::SourceError;

/// `spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT`: the only shape
/// of workload identity this CA signs.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    trust_domain: String,
    namespace: String,
    service_account: String,
}

impl SpiffeId {
    /// From parts already validated (a tokens file, the config).
    pub fn new(trust_domain: &str, namespace: &str, service_account: &str) -> Self {
        Self {
            trust_domain: trust_domain.to_owned(),
            namespace: namespace.to_owned(),
            service_account: service_account.to_owned(),
        }
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn service_account(&self) -> &str {
        &self.service_account
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spiffe://{}/ns/{}/sa/{}", self.trust_domain, self.namespace, self.service_account)
    }
}

/// A string that is not a workload SPIFFE ID.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a workload identity; expected spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT")]
pub struct SpiffeIdError(String);

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;

    /// Strict: the SPIFFE ID spec's characters (trust domain: lower-case
    /// letters, digits, `.-_`; path segments: letters, digits, `.-_`, not
    /// `.` or `..`), no query, fragment, port, user info or trailing slash.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || SpiffeIdError(s.chars().take(300).collect());
        let rest = s.strip_prefix("spiffe://").ok_or_else(err)?;
        let (td, path) = rest.split_once('/').ok_or_else(err)?;
        let td_ok = !td.is_empty()
            && td.len() <= 255
            && td.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'));
        let segment_ok = |p: &str| {
            !p.is_empty()
                && p.len() <= 253
                && p != "."
                && p != ".."
                && p.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        };
        match path.split('/').collect::<Vec<_>>().as_slice() {
            ["ns", ns, "sa", sa] if td_ok && segment_ok(ns) && segment_ok(sa) => Ok(Self::new(td, ns, sa)),
            _ => Err(err()),
        }
    }
}

/// Where the CA counts the outcome of each `Certify`. The control plane's
/// `metrics::Metrics` implements it; the CA names only this trait, so the
/// metrics module can depend on the CA (for [`Reason`]) and not the reverse.
pub trait CertifyCounter: fmt::Debug + Send + Sync {
    /// A certificate was signed.
    fn issued(&self);
    /// A request was refused, for `reason`.
    fn refused(&self, reason: Reason);
}

/// Why `Certify` was refused, as a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    CaOff,
    IdentityInvalid,
    IdentityMismatch,
    TokenMissing,
    TokenUnknown,
    TokenExpired,
    TokenReused,
    TokenRefused,
    TokenReviewFailed,
    CsrInvalid,
    CsrSans,
    Internal,
}

impl Reason {
    pub const ALL: [Reason; 12] = [
        Reason::CaOff,
        Reason::IdentityInvalid,
        Reason::IdentityMismatch,
        Reason::TokenMissing,
        Reason::TokenUnknown,
        Reason::TokenExpired,
        Reason::TokenReused,
        Reason::TokenRefused,
        Reason::TokenReviewFailed,
        Reason::CsrInvalid,
        Reason::CsrSans,
        Reason::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::CaOff => "ca_off",
            Reason::IdentityInvalid => "identity_invalid",
            Reason::IdentityMismatch => "identity_mismatch",
            Reason::TokenMissing => "token_missing",
            Reason::TokenUnknown => "token_unknown",
            Reason::TokenExpired => "token_expired",
            Reason::TokenReused => "token_reused",
            Reason::TokenRefused => "token_refused",
            Reason::TokenReviewFailed => "token_review_failed",
            Reason::CsrInvalid => "csr_invalid",
            Reason::CsrSans => "csr_sans",
            Reason::Internal => "internal",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// A refused `Certify`. Messages say what to fix and never hold a token.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error(
        "the mesh CA is off: start weft-control with --state-dir DIR (local mesh: a root is generated there) or with --issuer-cert FILE and --issuer-key FILE"
    )]
    Off,
    #[error("identity: {0}")]
    Identity(#[from] SpiffeIdError),
    #[error("`{asked}` is not in this mesh's trust domain `{trust_domain}`")]
    ForeignTrustDomain { asked: String, trust_domain: String },
    #[error("csr: {0}")]
    Csr(#[from] CsrError),
    #[error("token: {0}")]
    Token(#[from] TokenError),
    #[error("the token proves `{proven}`, not `{asked}`")]
    IdentityMismatch { asked: String, proven: String },
    #[error("the CA could not sign: {0}")]
    Internal(String),
}

impl Refusal {
    pub fn reason(&self) -> Reason {
        match self {
            Refusal::Off => Reason::CaOff,
            Refusal::Identity(_) => Reason::IdentityInvalid,
            Refusal::ForeignTrustDomain { .. }
            | Refusal::IdentityMismatch { .. }
            | Refusal::Csr(CsrError::OtherIdentity { .. }) => Reason::IdentityMismatch,
            Refusal::Csr(CsrError::NoSan { .. } | CsrError::ExtraSans { .. }) => Reason::CsrSans,
            Refusal::Csr(_) => Reason::CsrInvalid,
            Refusal::Token(TokenError::Missing) => Reason::TokenMissing,
            Refusal::Token(TokenError::Unknown(_) | TokenError::TooLong) => Reason::TokenUnknown,
            Refusal::Token(TokenError::Expired { .. }) => Reason::TokenExpired,
            Refusal::Token(TokenError::Reused(_)) => Reason::TokenReused,
            Refusal::Token(
                TokenError::NotAuthenticated(_)
                | TokenError::NotServiceAccount(_)
                | TokenError::WrongAudience { .. }
                | TokenError::NotBoundToPod { .. }
                | TokenError::PodUnknown(_)
                | TokenError::PodServiceAccount { .. },
            ) => Reason::TokenRefused,
            Refusal::Token(TokenError::ReviewFailed(_)) => Reason::TokenReviewFailed,
            Refusal::Internal(_) => Reason::Internal,
        }
    }
}

/// A signed certificate and what goes with it.
#[derive(Clone, Debug)]
pub struct Issued {
    pub identity: SpiffeId,
    /// The leaf, then intermediates; DER.
    pub chain: Vec<CertificateDer<'static>>,
    pub not_after: SystemTime,
    pub anchors: Arc<Anchors>,
    pub renewal_token: String,
    pub proven_by: TokenKind,
}

/// Why the CA cannot start.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error(transparent)]
    Issuer(#[from] IssuerError),
    #[error("{}: {message}", path.display())]
    Anchors { path: PathBuf, message: String },
    #[error(
        "--trust-anchors is required: the issuer `{subject}` is not self-signed, so the roots it chains to must be given"
    )]
    NoAnchors { subject: String },
    #[error("{0}")]
    Unanchored(String),
    #[error(transparent)]
    Tokens(#[from] SourceError),
    #[error(transparent)]
    TokenState(#[from] TokenStateError),
}

/// Where the issuer comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IssuerSource {
    /// `--issuer-cert`, `--issuer-key`.
    Files(IssuerFiles),
    /// Generated (once) under the state directory.
    StateDir(PathBuf),
}

/// The CA's settings, from [`crate::Config`].
#[derive(Clone, Debug)]
pub struct CaSettings {
    pub trust_domain: String,
    pub issuer: IssuerSource,
    pub trust_anchors: Option<PathBuf>,
    pub tokens: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub lifetime: Duration,
}

/// The running CA. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Ca {
    inner: Arc<Inner>,
    /// Asked in order after the local tokens ([`Ca::with_verifier`]).
    /// Empty: only local tokens are accepted.
    verifiers: Arc<[Arc<dyn TokenVerifier>]>,
}

#[derive(Debug)]
struct Inner {
    settings: CaSettings,
    issuer: watch::Sender<Arc<Issuer>>,
    anchors: watch::Sender<Arc<Anchors>>,
    tokens: Arc<LocalTokens>,
    counter: Arc<dyn CertifyCounter>,
}

/// `spiffe://TD/ns/NAMESPACE/sa/weft-control`.
pub fn control_plane_identity(trust_domain: &str, namespace: &str) -> SpiffeId {
    SpiffeId::new(trust_domain, namespace, serving::SERVICE_ACCOUNT)
}

impl Ca {
    /// Loads (or, in a state directory, creates) the issuer, the anchors
    /// and the tokens. Reads files: call from a blocking thread.
    pub fn open(settings: CaSettings, counter: Arc<dyn CertifyCounter>, now: SystemTime) -> Result<Self, CaError> {
        let issuer = match &settings.issuer {
            IssuerSource::Files(files) => Issuer::load(files, now)?,
            IssuerSource::StateDir(dir) => {
                let (issuer, generated) = Issuer::local_root(dir, &settings.trust_domain, now)?;
                if generated {
                    tracing::info!(
                        cert = %dir.join(issuer::CA_CERT_FILE).display(),
                        sha256 = %issuer.info().sha256,
                        "generated the local mesh root; proxies pin this certificate"
                    );
                }
                issuer
            }
        };
        let anchors = match &settings.trust_anchors {
            Some(path) => {
                let pem =
                    std::fs::read(path).map_err(|e| CaError::Anchors { path: path.clone(), message: e.to_string() })?;
                Anchors::parse(&pem, 1).map_err(|message| CaError::Anchors { path: path.clone(), message })?
            }
            None if issuer.info().self_signed => Anchors::single(issuer.certs()[0].clone(), issuer.info().clone()),
            None => return Err(CaError::NoAnchors { subject: issuer.info().subject.clone() }),
        };
        check_anchored(&issuer, &anchors).map_err(CaError::Unanchored)?;
        warn_if_expiring(&issuer, now);

        // With issuer files the state directory holds only the token state;
        // it must exist before the first Certify writes there, or a restart
        // would forget every renewal token.
        if let Some(dir) = &settings.state_dir {
            issuer::ensure_private_dir(dir)?;
        }
        let tokens = LocalTokens::open(&settings.trust_domain, settings.state_dir.as_deref())?;
        if let Some(path) = &settings.tokens {
            tokens.set_bootstrap(files::read_tokens(path, &settings.trust_domain)?);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                issuer: watch::Sender::new(Arc::new(issuer)),
                anchors: watch::Sender::new(Arc::new(anchors)),
                tokens: Arc::new(tokens),
                counter,
                settings,
            }),
            verifiers: Arc::new([]),
        })
    }

    /// This CA, also accepting the tokens that `verifier` vouches for: it is
    /// asked after the local tokens and the verifiers added before it, for
    /// the tokens they answer [`TokenError::Unknown`]. Add verifiers right
    /// after [`Ca::open`]: clones made earlier keep the verifiers they had.
    pub fn with_verifier(mut self, verifier: Arc<dyn TokenVerifier>) -> Self {
        self.verifiers = self.verifiers.iter().cloned().chain([verifier]).collect();
        self
    }

    pub fn settings(&self) -> &CaSettings {
        &self.inner.settings
    }

    pub fn trust_domain(&self) -> &str {
        &self.inner.settings.trust_domain
    }

    pub fn lifetime(&self) -> Duration {
        self.inner.settings.lifetime
    }

    pub fn tokens(&self) -> &Arc<LocalTokens> {
        &self.inner.tokens
    }

    pub fn issuer(&self) -> Arc<Issuer> {
        self.inner.issuer.borrow().clone()
    }

    pub fn subscribe_issuer(&self) -> watch::Receiver<Arc<Issuer>> {
        self.inner.issuer.subscribe()
    }

    pub fn anchors(&self) -> Arc<Anchors> {
        self.inner.anchors.borrow().clone()
    }

    pub fn subscribe_anchors(&self) -> AnchorsRx {
        self.inner.anchors.subscribe()
    }

    /// Replaces the trust bundle if its certificates changed, bumping the
    /// version. Refused if the current issuer does not chain to it.
    pub fn set_anchors(&self, next: Anchors) -> Result<Option<u64>, String> {
        check_anchored(&self.issuer(), &next)?;
        let mut version = None;
        self.inner.anchors.send_if_modified(|cur| {
            if cur.same_certs(&next) {
                return false;
            }
            let v = cur.version + 1;
            *cur = Arc::new(Anchors { version: v, ..next });
            version = Some(v);
            true
        });
        Ok(version)
    }

    /// Replaces the issuer. Refused if it does not chain to the current
    /// anchors.
    pub fn set_issuer(&self, next: Issuer) -> Result<(), String> {
        check_anchored(&next, &self.anchors())?;
        warn_if_expiring(&next, SystemTime::now());
        self.inner.issuer.send_replace(Arc::new(next));
        Ok(())
    }

    /// Checks a request and signs its certificate; counts the outcome.
    pub async fn certify(&self, identity: &str, csr: &[u8], token: &str, now: SystemTime) -> Result<Issued, Refusal> {
        let result = self.try_certify(identity, csr, token, now).await;
        match &result {
            Ok(_) => self.inner.counter.issued(),
            Err(r) => self.inner.counter.refused(r.reason()),
        }
        result
    }

    async fn try_certify(&self, identity: &str, csr: &[u8], token: &str, now: SystemTime) -> Result<Issued, Refusal> {
        let td = self.trust_domain();
        let asked: SpiffeId = identity.parse()?;
        if asked.trust_domain() != td {
            return Err(Refusal::ForeignTrustDomain { asked: asked.to_string(), trust_domain: td.to_owned() });
        }
        // The CSR first: a malformed request does not burn its token.
        let checked = csr::check(csr, &asked)?;
        let proof = self.verify_token(token, now).await?;
        if proof.identity != asked {
            return Err(Refusal::IdentityMismatch { asked: asked.to_string(), proven: proof.identity.to_string() });
        }
        let issuer = self.issuer();
        let uri = SanType::URI(asked.to_string().try_into().map_err(|e| Refusal::Internal(format!("{e}")))?);
        let leaf = issuer
            .sign_leaf(&checked.public_key, vec![uri], self.lifetime(), now)
            .map_err(|e| Refusal::Internal(e.to_string()))?;
        // Valid a while past the certificate, so that a proxy that renews
        // late (at 70 % of life, with retries) still can.
        let renewal_until = leaf.not_after + self.lifetime() / 2;
        let renewal_token = self
            .inner
            .tokens
            .issue_renewal(&asked, renewal_until, now)
            .map_err(|e| Refusal::Internal(e.to_string()))?;
        let mut chain = vec![leaf.der];
        chain.extend(issuer.intermediates());
        Ok(Issued {
            identity: asked,
            chain,
            not_after: leaf.not_after,
            anchors: self.anchors(),
            renewal_token,
            proven_by: proof.kind,
        })
    }

    async fn verify_token(&self, token: &str, now: SystemTime) -> Result<Proof, TokenError> {
        let mut result = self.inner.tokens.verify(token, now).await;
        for v in self.verifiers.iter() {
            if !matches!(result, Err(TokenError::Unknown(_))) {
                break;
            }
            result = v.verify(token, now).await;
        }
        result
    }

    /// What `/state` shows: never a token, never the key.
    pub fn state_json(&self, now: SystemTime) -> serde_json::Value {
        let issuer = self.issuer();
        let anchors = self.anchors();
        let s = &self.inner.settings;
        serde_json::json!({
            "enabled": true,
            "trustDomain": s.trust_domain,
            "certLifetimeSeconds": s.lifetime.as_secs(),
            "issuer": {
                "source": match &s.issuer {
                    IssuerSource::Files(f) => f.cert.display().to_string(),
                    IssuerSource::StateDir(d) => d.join(issuer::CA_CERT_FILE).display().to_string(),
                },
                "subject": issuer.info().subject,
                "notAfter": pki::rfc3339(issuer.info().not_after),
                "sha256": issuer.info().sha256,
                "selfSigned": issuer.info().self_signed,
            },
            "trustAnchors": {
                "version": anchors.version,
                "source": s.trust_anchors.as_ref().map_or_else(|| "the issuer".to_owned(), |p| p.display().to_string()),
                "anchors": anchors.info,
            },
            "tokens": self.inner.tokens.counts(now),
        })
    }
}

fn check_anchored(issuer: &Issuer, anchors: &Anchors) -> Result<(), String> {
    if pki::chains_to(issuer.certs(), &anchors.certs) {
        return Ok(());
    }
    let list = anchors.info.iter().map(|a| format!("`{}` ({})", a.subject, &a.sha256[..16])).collect::<Vec<_>>();
    Err(format!(
        "the issuer `{}` does not chain to any trust anchor ({}); every certificate it signs would be refused. \
         Roll roots in three steps: anchors old+new, then the new issuer, then anchors new only",
        issuer.info().subject,
        list.join(", ")
    ))
}

fn warn_if_expiring(issuer: &Issuer, now: SystemTime) {
    const SOON: Duration = Duration::from_secs(30 * 24 * 3600);
    if issuer.info().not_after < now + SOON {
        tracing::warn!(
            subject = %issuer.info().subject,
            not_after = %pki::rfc3339(issuer.info().not_after),
            "the CA issuer expires within 30 days; certificates will not outlive it — rotate it"
        );
    }
}

/// Writes `bytes` to `path` with mode 0600, atomically.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_file(path, bytes, 0o600)
}

/// Writes `bytes` to `path` with `mode`, atomically (a temporary file in
/// the same directory, synced, then renamed over).
pub fn write_file(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    // A leftover from a crash may have other permissions: start anew.
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
    // Exactly `mode`, whatever the umask.
    f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}
