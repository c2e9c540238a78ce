//! The trust anchors: the root certificates proxies accept peers (and the
//! control plane) under. Published as a versioned bundle on a
//! `tokio::sync::watch` channel, which `WatchTrustAnchors` streams follow.
//!
//! A root is rolled without restarting workloads in three steps, each one
//! a rewrite of the `--trust-anchors` file that the control plane picks up:
//!
//! ```text
//!   1. anchors = old + new   proxies accept both; wait until all have it
//!   2. issuer  = new         new certificates chain to the new root
//!                            (wait one certificate lifetime: all renewed)
//!   3. anchors = new         the old root is gone
//! ```
//!
//! The control plane refuses a bundle that its current issuer does not
//! chain to, and an issuer that does not chain to the current bundle: in
//! either case every certificate it signs would be refused by every peer.

use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use weft_api::identity::TrustBundle;

use super::pki::{self, CertInfo};

/// One version of the trust bundle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Anchors {
    /// Starts at 1; each change adds one.
    pub version: u64,
    pub certs: Vec<CertificateDer<'static>>,
    pub info: Vec<CertInfo>,
}

impl Anchors {
    /// Parses a PEM bundle: at least one certificate, each a CA.
    pub fn parse(pem: &[u8], version: u64) -> Result<Self, String> {
        let certs = pki::pem_certs(pem)?;
        let mut info = Vec::with_capacity(certs.len());
        for (i, c) in certs.iter().enumerate() {
            let ci = CertInfo::parse(c).map_err(|e| format!("certificate {}: {e}", i + 1))?;
            if !ci.can_sign_certificates {
                return Err(format!(
                    "certificate {} (`{}`) is not a CA certificate; list root certificates only",
                    i + 1,
                    ci.subject
                ));
            }
            if info.iter().any(|o: &CertInfo| o.sha256 == ci.sha256) {
                return Err(format!("certificate {} (`{}`) is listed twice", i + 1, ci.subject));
            }
            info.push(ci);
        }
        Ok(Self { version, certs, info })
    }

    /// The bundle made of one certificate (a self-signed issuer).
    pub fn single(cert: CertificateDer<'static>, info: CertInfo) -> Self {
        Self { version: 1, certs: vec![cert], info: vec![info] }
    }

    /// Same certificates, whatever the versions.
    pub fn same_certs(&self, other: &Anchors) -> bool {
        self.certs == other.certs
    }

    pub fn to_api(&self) -> TrustBundle {
        TrustBundle { version: self.version, anchors: self.der() }
    }

    pub fn der(&self) -> Vec<Vec<u8>> {
        self.certs.iter().map(|c| c.to_vec()).collect()
    }
}

/// The published bundle.
pub type AnchorsRx = tokio::sync::watch::Receiver<Arc<Anchors>>;

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::ca::issuer::Issuer;

    #[test]
    fn parses_bundles_of_roots() {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = SystemTime::now();
        let (a, _) = Issuer::local_root(&dir.path().join("a"), "cluster.local", now).expect("root a");
        let (b, _) = Issuer::local_root(&dir.path().join("b"), "cluster.local", now).expect("root b");
        let pem = |i: &Issuer| pki::to_pem("CERTIFICATE", &i.certs()[0]);

        let both = Anchors::parse(format!("{}{}", pem(&a), pem(&b)).as_bytes(), 3).expect("two roots");
        assert_eq!((both.version, both.certs.len()), (3, 2));
        assert_eq!(both.info[0].sha256, a.info().sha256);
        assert_eq!(both.to_api().anchors[1], b.certs()[0].to_vec());

        let e = Anchors::parse(format!("{}{}", pem(&a), pem(&a)).as_bytes(), 1).expect_err("twice");
        assert!(e.contains("listed twice"), "{e}");
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let leaf = a.sign_leaf(&key, vec![], Duration::from_secs(60), now).expect("leaf");
        let e = Anchors::parse(pki::to_pem("CERTIFICATE", &leaf.der).as_bytes(), 1).expect_err("leaf");
        assert!(e.contains("certificate 1 (``) is not a CA certificate"), "{e}");
        assert!(Anchors::parse(b"", 1).is_err());
    }
}
