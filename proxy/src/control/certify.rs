//! Getting and renewing the proxy's certificate, and following the trust
//! anchors, through the control plane's `Identity` service.
//!
//! The key pair is generated here, in memory, for every certificate; only
//! the CSR leaves the process. The first request spends the bootstrap token
//! that `weft up` (or Kubernetes) handed the proxy; every response carries a
//! single-use renewal token for the next one. Renewal happens at 70 % of the
//! certificate's life (less jitter); failures retry with backoff until the
//! certificate actually expires.
//!
//! A renewal token is known only to the control-plane process that issued
//! it (and its state directory). On Kubernetes the control plane runs as
//! several replicas and is restarted by every rollout, so when a renewal
//! token is refused the proxy reads its token file again and presents that:
//! a projected service-account token, rotated in place by the kubelet,
//! which any replica checks with TokenReview. (A `weft up` bootstrap token
//! is single use: presenting it again is refused too, and says so.)

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use weft_api::identity::identity_client::IdentityClient;
use weft_api::identity::{CertifyRequest, WatchTrustAnchorsRequest};

use super::ControlPlane;
use super::backoff::Backoff;
use crate::identity::{Credentials, IdentityError, IdentityHandle, TrustBundle, key_and_csr, renew_after};
use crate::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum CertifyError {
    #[error("generating the key pair or CSR failed: {0}")]
    Csr(#[from] rcgen::Error),
    #[error("the control plane refused to certify {identity}: {status}")]
    Refused { identity: String, status: tonic::Status },
    #[error("the control plane returned no certificate")]
    Empty,
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

/// The tokens a `Certify` can present: the last renewal token, else the
/// identity token (from its file, read again each time it is needed).
#[derive(Debug)]
pub struct Tokens {
    renewal: Option<String>,
    /// The identity token as last read.
    identity: String,
    file: Option<PathBuf>,
}

impl Tokens {
    /// `identity` was read from `file` (if any) at start.
    pub fn new(identity: String, file: Option<PathBuf>) -> Self {
        Self { renewal: None, identity, file }
    }

    /// The token for the next attempt.
    fn next(&mut self) -> String {
        if let Some(renewal) = &self.renewal {
            return renewal.clone();
        }
        if let Some(file) = &self.file {
            match std::fs::read_to_string(file) {
                Ok(t) if !t.trim().is_empty() => self.identity = t.trim().to_string(),
                Ok(_) => {
                    tracing::warn!(file = %file.display(), "the identity token file is empty; presenting the last token read")
                }
                Err(e) => {
                    tracing::warn!(file = %file.display(), "cannot read the identity token file ({e}); presenting the last token read")
                }
            }
        }
        self.identity.clone()
    }

    /// A `Certify` succeeded: the next one presents `renewal`.
    fn renewed(&mut self, renewal: String) {
        self.renewal = Some(renewal).filter(|t| !t.is_empty());
    }

    /// A `Certify` failed with `code`: a refused renewal token is dropped,
    /// so the next attempt presents the identity token.
    fn failed(&mut self, code: Option<tonic::Code>) {
        if self.renewal.is_some() && drops_renewal(code) {
            tracing::warn!(
                "the control plane refused the renewal token (another replica issued it, or it restarted without it); presenting the identity token next"
            );
            self.renewal = None;
        }
    }
}

/// Whether a `Certify` failure with `code` (`None`: not a gRPC status)
/// means the token was refused, rather than that the control plane could
/// not be asked: only then is a renewal token worth giving up.
fn drops_renewal(code: Option<tonic::Code>) -> bool {
    matches!(code, Some(tonic::Code::PermissionDenied | tonic::Code::Unauthenticated))
}

/// Gets a certificate, then renews it for as long as the proxy runs.
pub async fn run(control: ControlPlane, handle: IdentityHandle, mut tokens: Tokens, metrics: std::sync::Arc<Metrics>) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        let token = tokens.next();
        match certify_once(&control, &handle, &token).await {
            Ok((not_after, next_token)) => {
                backoff.reset();
                tokens.renewed(next_token);
                let (expiry, renewals) = handle.expiry_and_renewals();
                metrics.set_identity(expiry, renewals);
                let remaining = not_after.duration_since(SystemTime::now()).unwrap_or_default();
                let wait = renew_after(remaining, fastrand::f64());
                tracing::info!(identity = %handle.local(), expires_in = ?remaining, renew_in = ?wait, "certificate installed");
                tokio::time::sleep(wait).await;
            }
            Err(e) => {
                tokens.failed(match &e {
                    CertifyError::Refused { status, .. } => Some(status.code()),
                    _ => None,
                });
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, retry_in = ?delay, "certificate request failed");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

async fn certify_once(
    control: &ControlPlane,
    handle: &IdentityHandle,
    token: &str,
) -> Result<(SystemTime, String), CertifyError> {
    let identity = handle.local().as_str().to_string();
    let (key, csr) = key_and_csr(&identity)?;
    let mut client = IdentityClient::new(control.channel.clone());
    let rsp = client
        .certify(CertifyRequest { identity: identity.clone(), csr, token: token.to_string() })
        .await
        .map_err(|status| CertifyError::Refused { identity, status })?
        .into_inner();
    if rsp.certificate_chain.is_empty() {
        return Err(CertifyError::Empty);
    }
    let not_after = UNIX_EPOCH + Duration::from_secs(u64::try_from(rsp.valid_until_unix).unwrap_or(0));
    // The anchors stream is authoritative; these only bootstrap it.
    if !rsp.trust_anchors.is_empty() && !handle.has_bundle() {
        handle.set_bundle(TrustBundle {
            version: 0,
            anchors: rsp.trust_anchors.into_iter().map(CertificateDer::from).collect(),
        })?;
    }
    handle.set_credentials(Credentials {
        chain: rsp.certificate_chain.into_iter().map(CertificateDer::from).collect(),
        key: PrivatePkcs8KeyDer::from(key.serialize_der()),
        not_after,
    })?;
    Ok((not_after, rsp.renewal_token))
}

/// Follows `Identity.WatchTrustAnchors` so a rotated root is trusted (and a
/// retired one dropped) without a restart.
pub async fn watch_anchors(control: ControlPlane, handle: IdentityHandle) {
    let mut backoff = Backoff::default();
    loop {
        let mut client = IdentityClient::new(control.channel.clone());
        let result = async {
            let mut stream = client
                .watch_trust_anchors(WatchTrustAnchorsRequest { proxy_id: control.proxy_id.clone() })
                .await?
                .into_inner();
            while let Some(bundle) = stream.message().await? {
                backoff.reset();
                let anchors: Vec<CertificateDer<'static>> =
                    bundle.anchors.into_iter().map(CertificateDer::from).collect();
                match handle.set_bundle(TrustBundle { version: bundle.version, anchors: anchors.clone() }) {
                    Ok(()) => tracing::info!(version = bundle.version, "trust anchors updated"),
                    Err(e) => {
                        tracing::warn!(error = %e, "ignoring an unusable trust bundle");
                        continue;
                    }
                }
                // The next connection to the control plane trusts them too.
                if let Some(tls) = &control.tls
                    && let Err(e) = tls.set_anchors(&anchors)
                {
                    tracing::warn!(error = %e, "the control plane connection keeps its previous anchors");
                }
            }
            Ok::<_, tonic::Status>(())
        }
        .await;
        if let Err(e) = result {
            tracing::debug!(error = %e, "trust anchor stream ended");
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_refusal_gives_up_the_renewal_token() {
        for (code, drops) in [
            (Some(tonic::Code::PermissionDenied), true),
            (Some(tonic::Code::Unauthenticated), true),
            (Some(tonic::Code::Unavailable), false),
            (Some(tonic::Code::DeadlineExceeded), false),
            (Some(tonic::Code::InvalidArgument), false),
            (Some(tonic::Code::Internal), false),
            (None, false),
        ] {
            assert_eq!(drops_renewal(code), drops, "{code:?}");
        }
    }

    #[test]
    fn a_refused_renewal_token_falls_back_to_the_token_file_read_again() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let file = dir.path().join("token");
        std::fs::write(&file, "first\n").expect("writing the token");
        let mut tokens = Tokens::new("first".into(), Some(file.clone()));
        assert_eq!(tokens.next(), "first");
        tokens.renewed("weft-renewal.1".into());
        assert_eq!(tokens.next(), "weft-renewal.1");
        // The control plane cannot be asked: the renewal token is kept.
        tokens.failed(Some(tonic::Code::Unavailable));
        assert_eq!(tokens.next(), "weft-renewal.1");
        // It is refused: the file, rotated meanwhile by the kubelet, is read.
        std::fs::write(&file, "rotated\n").expect("rotating the token");
        tokens.failed(Some(tonic::Code::PermissionDenied));
        assert_eq!(tokens.next(), "rotated");
        // A file that cannot be read leaves the last token read.
        std::fs::remove_file(&file).expect("removing the token");
        assert_eq!(tokens.next(), "rotated");
        // Without a file, the token given at start.
        let mut fixed = Tokens::new("boot".into(), None);
        fixed.renewed("weft-renewal.2".into());
        fixed.failed(Some(tonic::Code::Unauthenticated));
        assert_eq!(fixed.next(), "boot");
    }
}
