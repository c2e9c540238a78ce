//! Getting and renewing the proxy's certificate, and following the trust
//! anchors, through the control plane's `Identity` service.
//!
//! The key pair is generated here, in memory, for every certificate; only
//! the CSR leaves the process. The first request spends the bootstrap token
//! that `weft up` (or Kubernetes) handed the proxy; every response carries a
//! single-use renewal token for the next one. Renewal happens at 70 % of the
//! certificate's life (less jitter); failures retry with backoff until the
//! certificate actually expires.

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

/// Gets a certificate, then renews it for as long as the proxy runs.
pub async fn run(control: ControlPlane, handle: IdentityHandle, mut token: String, metrics: std::sync::Arc<Metrics>) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        match certify_once(&control, &handle, &token).await {
            Ok((not_after, next_token)) => {
                backoff.reset();
                token = next_token;
                let (expiry, renewals) = handle.expiry_and_renewals();
                metrics.set_identity(expiry, renewals);
                let remaining = not_after.duration_since(SystemTime::now()).unwrap_or_default();
                let wait = renew_after(remaining, fastrand::f64());
                tracing::info!(identity = %handle.local(), expires_in = ?remaining, renew_in = ?wait, "certificate installed");
                tokio::time::sleep(wait).await;
            }
            Err(e) => {
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
