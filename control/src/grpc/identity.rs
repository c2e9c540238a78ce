//! `Identity.Certify`: defined in the contract, served once the mesh CA
//! exists (issue 5). Until then proxies run without mTLS and the inbound
//! default is permissive.

use tonic::{Request, Response, Status};
use weft_api::identity::identity_server::Identity;
use weft_api::identity::{CertifyRequest, CertifyResponse, TrustBundle, WatchTrustAnchorsRequest};

#[derive(Debug)]
pub struct IdentityService;

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn certify(&self, _req: Request<CertifyRequest>) -> Result<Response<CertifyResponse>, Status> {
        Err(Status::unimplemented(
            "the mesh CA is not available yet: mTLS lands in issue 5; run proxies without mTLS until then",
        ))
    }

    type WatchTrustAnchorsStream = tokio_stream::Empty<Result<TrustBundle, Status>>;

    async fn watch_trust_anchors(
        &self,
        _req: Request<WatchTrustAnchorsRequest>,
    ) -> Result<Response<Self::WatchTrustAnchorsStream>, Status> {
        Err(Status::unimplemented("the mesh CA is not available yet: mTLS lands in issue 5"))
    }
}
