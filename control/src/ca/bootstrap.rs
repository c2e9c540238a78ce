//! A new mesh PKI for a Kubernetes install (`weft install`, as `linkerd
//! install` does): a self-signed trust anchor, and the issuer — an
//! intermediate CA signed by it — that the control plane signs workload
//! certificates with.
//!
//! ```text
//!   trust anchor (root, 10 y) ── signs ──► issuer (1 y, pathlen 0) ── signs ──► workloads (--cert-lifetime)
//!   key dropped after signing              key → Secret weft-identity-issuer (tls.key), for the control plane
//! ```
//!
//! The anchor's key is dropped as soon as the issuer is signed: nothing
//! else is ever signed with it, so it is never written anywhere. Rolling
//! the issuer later means a new anchor too (the rotation the tests show in
//! `tests/tests/rotation.rs`), or bringing your own PKI.

use std::time::{Duration, SystemTime};

use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose};

use super::issuer::{CLOCK_SKEW, IssuerError};
use super::pki;

/// Lifetime of a generated trust anchor.
pub const ANCHOR_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Lifetime of a generated issuer.
pub const ISSUER_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// A generated trust anchor and issuer, as PEM.
pub struct MeshPki {
    /// The anchor's certificate: the proxies' trust anchors (`ca.crt`).
    pub trust_anchors_pem: String,
    /// The issuer's certificate (`tls.crt`).
    pub issuer_cert_pem: String,
    /// The issuer's PKCS#8 key (`tls.key`).
    pub issuer_key_pem: String,
}

impl std::fmt::Debug for MeshPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("MeshPki").finish_non_exhaustive()
    }
}

/// ECDSA P-256 throughout, like the local mesh's root and the proxies'
/// keys: every TLS stack the mesh meets speaks it.
pub fn generate(trust_domain: &str, now: SystemTime) -> Result<MeshPki, IssuerError> {
    let now = pki::truncate_to_second(now);
    let ca = |cn: String, path_len: u8, lifetime: Duration| -> Result<CertificateParams, IssuerError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "weft");
        dn.push(DnType::CommonName, cn);
        params.distinguished_name = dn;
        params.not_before = (now - CLOCK_SKEW).into();
        params.not_after = (now + lifetime).into();
        params.serial_number = Some(pki::random_serial()?);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        Ok(params)
    };
    let anchor_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    // The anchor signs one issuer, which signs only leaves.
    let anchor_params = ca(format!("weft trust anchor ({trust_domain})"), 1, ANCHOR_LIFETIME)?;
    let anchor = anchor_params.self_signed(&anchor_key)?;
    let trust_anchors_pem = anchor.pem();

    let issuer_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut issuer_params = ca(format!("weft issuer ({trust_domain})"), 0, ISSUER_LIFETIME)?;
    issuer_params.use_authority_key_identifier_extension = true;
    let signer = rcgen::Issuer::new(anchor_params, anchor_key);
    let issuer = issuer_params.signed_by(&issuer_key, &signer)?;
    Ok(MeshPki { trust_anchors_pem, issuer_cert_pem: issuer.pem(), issuer_key_pem: issuer_key.serialize_pem() })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use rcgen::SanType;

    use super::*;
    use crate::ca::issuer::Issuer;

    /// The control plane loads the generated issuer as it would from the
    /// Secret, it chains to the anchor, and what it signs chains too.
    #[test]
    fn the_issuer_loads_chains_to_the_anchor_and_signs() {
        let now = SystemTime::now();
        let generated = generate("example.org", now).expect("generate");
        let issuer = Issuer::from_pem(
            generated.issuer_cert_pem.as_bytes(),
            generated.issuer_key_pem.as_bytes(),
            Path::new("tls.crt"),
            Path::new("tls.key"),
            now,
        )
        .expect("the control plane loads the issuer");
        assert!(generated.issuer_key_pem.starts_with("-----BEGIN PRIVATE KEY-----"), "PKCS#8");
        let anchors = pki::pem_certs(generated.trust_anchors_pem.as_bytes()).expect("anchors");
        assert_eq!(anchors.len(), 1);
        let anchor = pki::CertInfo::parse(&anchors[0]).expect("anchor");
        assert!(anchor.self_signed && anchor.can_sign_certificates, "{anchor:?}");
        assert_eq!(anchor.subject, "O=weft, CN=weft trust anchor (example.org)");
        let info = issuer.info();
        assert!(!info.self_signed && info.can_sign_certificates, "{info:?}");
        assert_eq!(info.issuer, anchor.subject);
        assert!(pki::chains_to(issuer.certs(), &anchors), "the issuer chains to the anchor");
        let life = |i: &pki::CertInfo| i.not_after.duration_since(now).expect("in the future");
        assert!(life(info) <= ISSUER_LIFETIME && life(info) > ISSUER_LIFETIME - Duration::from_secs(2));
        assert!(life(&anchor) <= ANCHOR_LIFETIME && life(&anchor) > ANCHOR_LIFETIME - Duration::from_secs(2));

        let leaf_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let uri = "spiffe://example.org/ns/shop/sa/web".try_into().expect("uri");
        let leaf = issuer.sign_leaf(&leaf_key, vec![SanType::URI(uri)], Duration::from_secs(3600), now).expect("sign");
        let mut chain = vec![leaf.der];
        chain.extend(issuer.intermediates());
        assert_eq!(chain.len(), 2, "the leaf travels with the issuer, not the anchor");
        assert!(pki::chains_to(&chain, &anchors));

        // Two runs, two meshes.
        let other = generate("example.org", now).expect("generate");
        assert_ne!(other.trust_anchors_pem, generated.trust_anchors_pem);
        assert!(!pki::chains_to(issuer.certs(), &pki::pem_certs(other.trust_anchors_pem.as_bytes()).expect("pem")));
    }
}
