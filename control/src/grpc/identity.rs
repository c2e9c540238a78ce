//! `Identity.Certify` and `Identity.WatchTrustAnchors`: the mesh CA
//! (`crate::ca`) behind a gRPC face. This is where refusals become status
//! codes:
//!
//! | refusal | code |
//! | --- | --- |
//! | CA off | UNAVAILABLE (with how to turn it on) |
//! | the Kubernetes API server could not review the token | UNAVAILABLE (the proxy retries) |
//! | bad, expired or reused token; a Kubernetes token refused; identity not the token's, or not of this trust domain | PERMISSION_DENIED |
//! | unparsable identity or CSR, wrong key type, missing or extra SANs | INVALID_ARGUMENT |
//! | signing failed | INTERNAL |

use std::time::SystemTime;

use tonic::{Code, Request, Response, Status};
use weft_api::identity::identity_server::Identity;
use weft_api::identity::{CertifyRequest, CertifyResponse, TrustBundle, WatchTrustAnchorsRequest};

use super::watch::{Streams, Updates};
use crate::ca::csr::CsrError;
use crate::ca::tokens::{TokenError, TokenKind};
use crate::ca::{Ca, Refusal, pki};
use crate::metrics::StreamKind;

#[derive(Debug)]
pub struct IdentityService {
    /// `None` when the CA is off (no issuer, no state directory).
    pub ca: Option<Ca>,
    pub streams: Streams,
}

fn code(r: &Refusal) -> Code {
    match r {
        Refusal::Off | Refusal::Token(TokenError::ReviewFailed(_)) => Code::Unavailable,
        Refusal::Token(_)
        | Refusal::IdentityMismatch { .. }
        | Refusal::ForeignTrustDomain { .. }
        | Refusal::Csr(CsrError::OtherIdentity { .. }) => Code::PermissionDenied,
        Refusal::Identity(_) | Refusal::Csr(_) => Code::InvalidArgument,
        Refusal::Internal(_) => Code::Internal,
    }
}

fn status(r: &Refusal) -> Status {
    Status::new(code(r), r.to_string())
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn certify(&self, req: Request<CertifyRequest>) -> Result<Response<CertifyResponse>, Status> {
        let peer = super::proxy_name(&req, "");
        let CertifyRequest { identity, csr, token } = req.into_inner();
        let Some(ca) = &self.ca else {
            self.streams.metrics.certify_refused(Refusal::Off.reason());
            return Err(status(&Refusal::Off));
        };
        match ca.certify(&identity, &csr, &token, SystemTime::now()).await {
            Ok(issued) => {
                let until = pki::rfc3339(issued.not_after);
                match &issued.proven_by {
                    TokenKind::Bootstrap { workload } => {
                        tracing::info!(identity = %issued.identity, %workload, %peer, not_after = %until, "certificate issued (bootstrap)");
                    }
                    TokenKind::ServiceAccount { pod } => {
                        tracing::info!(identity = %issued.identity, %pod, %peer, not_after = %until, "certificate issued (service-account token)");
                    }
                    _ => tracing::debug!(identity = %issued.identity, %peer, not_after = %until, "certificate renewed"),
                }
                Ok(Response::new(CertifyResponse {
                    certificate_chain: issued.chain.iter().map(|c| c.to_vec()).collect(),
                    valid_until_unix: pki::unix_seconds(issued.not_after),
                    trust_anchors: issued.anchors.der(),
                    renewal_token: issued.renewal_token,
                }))
            }
            Err(refusal) => {
                // The identity asked for is the caller's claim: logged,
                // bounded. The token never is.
                let asked: String = identity.chars().take(200).collect();
                tracing::warn!(reason = refusal.reason().as_str(), %asked, %peer, error = %refusal, "certify refused");
                Err(status(&refusal))
            }
        }
    }

    type WatchTrustAnchorsStream = Updates<TrustBundle>;

    async fn watch_trust_anchors(
        &self,
        req: Request<WatchTrustAnchorsRequest>,
    ) -> Result<Response<Self::WatchTrustAnchorsStream>, Status> {
        let proxy = super::proxy_name(&req, &req.get_ref().proxy_id);
        let Some(ca) = &self.ca else { return Err(status(&Refusal::Off)) };
        tracing::debug!(%proxy, "trust anchors watch");
        let stream = self.streams.open_on(
            ca.subscribe_anchors(),
            |_| None,
            StreamKind::TrustAnchors,
            proxy,
            |_| None::<()>,
            |a| a.to_api(),
        );
        Ok(Response::new(stream))
    }
}
