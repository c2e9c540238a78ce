//! Checking a certificate signing request before anything is signed.
//!
//! The CSR is untrusted bytes from the network. Only its public key is
//! carried into the certificate; everything else the leaf holds (SAN, key
//! usage, validity, basic constraints) is decided here, so a CSR asking for
//! `cA=true` or extra usages gets a plain leaf anyway. What is checked:
//!
//! - it parses as PKCS#10 DER and its self-signature verifies (proof that
//!   the caller holds the private key);
//! - the key is ECDSA P-256 (what every proxy makes, and what the mesh's
//!   TLS configuration expects);
//! - it asks for exactly one SAN, a URI equal to the identity asked for —
//!   no DNS, IP, e-mail or second URI, which would let one workload's
//!   certificate speak for another name.

use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

use super::SpiffeId;

/// CSRs larger than this are refused unread (a P-256 CSR is ~300 bytes).
pub const MAX_CSR_BYTES: usize = 16 * 1024;

/// Why a CSR was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CsrError {
    #[error("the CSR is empty; send a DER PKCS#10 request (rcgen `CertificateParams::serialize_request`)")]
    Empty,
    #[error("the CSR is {0} bytes; at most {MAX_CSR_BYTES}")]
    TooLarge(usize),
    #[error("the CSR is not a DER PKCS#10 request ({0}); send DER, not PEM")]
    Unparsable(String),
    #[error("the CSR's signature does not verify with its own public key")]
    BadSignature,
    #[error("the CSR's key must be ECDSA P-256 ({0})")]
    Key(String),
    #[error("the CSR must ask for exactly one SAN, the URI `{identity}`; it asks for none")]
    NoSan { identity: String },
    #[error("the CSR must ask for exactly one SAN, the URI `{identity}`; it asks for {}", .sans.join(", "))]
    ExtraSans { identity: String, sans: Vec<String> },
    #[error("the CSR asks for `{asked}`, but the request is for `{identity}`")]
    OtherIdentity { identity: String, asked: String },
}

/// A CSR that passed every check: the key to certify, as rcgen wants it.
#[derive(Debug)]
pub struct CheckedCsr {
    pub public_key: rcgen::SubjectPublicKeyInfo,
}

/// Checks `der` as a request for `identity`'s certificate.
pub fn check(der: &[u8], identity: &SpiffeId) -> Result<CheckedCsr, CsrError> {
    if der.is_empty() {
        return Err(CsrError::Empty);
    }
    if der.len() > MAX_CSR_BYTES {
        return Err(CsrError::TooLarge(der.len()));
    }
    let csr = match X509CertificationRequest::from_der(der) {
        Ok(([], csr)) => csr,
        Ok(_) => return Err(CsrError::Unparsable("trailing bytes".into())),
        Err(e) => return Err(CsrError::Unparsable(e.to_string())),
    };
    csr.verify_signature().map_err(|_| CsrError::BadSignature)?;

    // Matches the whole AlgorithmIdentifier, curve included: a P-384 key
    // signed with SHA-256 is not mistaken for P-256.
    let spki = &csr.certification_request_info.subject_pki;
    let public_key = rcgen::SubjectPublicKeyInfo::from_der(spki.raw)
        .map_err(|_| CsrError::Key(format!("unsupported algorithm {}", spki.algorithm.algorithm)))?;
    if rcgen::PublicKeyData::algorithm(&public_key) != &rcgen::PKCS_ECDSA_P256_SHA256 {
        return Err(CsrError::Key(format!("got {:?}", rcgen::PublicKeyData::algorithm(&public_key))));
    }

    let mut sans = Vec::new();
    for ext in csr.requested_extensions().into_iter().flatten() {
        match ext {
            ParsedExtension::SubjectAlternativeName(san) => sans.extend(san.general_names.iter().map(describe)),
            ParsedExtension::ParseError { error } => {
                return Err(CsrError::Unparsable(format!("a requested extension: {error}")));
            }
            // Key usages, basic constraints and the like are ignored: the
            // leaf's are fixed by the CA.
            _ => {}
        }
    }
    let want = identity.to_string();
    match sans.as_slice() {
        [] => Err(CsrError::NoSan { identity: want }),
        [San::Uri(u)] if *u == want => Ok(CheckedCsr { public_key }),
        [San::Uri(u)] => Err(CsrError::OtherIdentity { identity: want, asked: u.clone() }),
        _ => Err(CsrError::ExtraSans { identity: want, sans: sans.iter().map(ToString::to_string).collect() }),
    }
}

#[derive(Debug)]
enum San {
    Uri(String),
    Other(String),
}

impl std::fmt::Display for San {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            San::Uri(u) => write!(f, "URI `{u}`"),
            San::Other(o) => f.write_str(o),
        }
    }
}

fn describe(name: &GeneralName<'_>) -> San {
    match name {
        GeneralName::URI(u) => San::Uri((*u).to_owned()),
        GeneralName::DNSName(d) => San::Other(format!("DNS `{d}`")),
        GeneralName::RFC822Name(e) => San::Other(format!("e-mail `{e}`")),
        GeneralName::IPAddress(ip) => San::Other(match ip.len() {
            4 => format!("IP {}", std::net::Ipv4Addr::from([ip[0], ip[1], ip[2], ip[3]])),
            16 => {
                let mut b = [0u8; 16];
                b.copy_from_slice(ip);
                format!("IP {}", std::net::Ipv6Addr::from(b))
            }
            _ => "an IP address".to_owned(),
        }),
        GeneralName::DirectoryName(n) => San::Other(format!("directory name `{n}`")),
        GeneralName::OtherName(oid, _) => San::Other(format!("otherName {oid}")),
        GeneralName::RegisteredID(oid) => San::Other(format!("registered ID {oid}")),
        _ => San::Other("an unsupported name".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType};

    use super::*;

    fn id(s: &str) -> SpiffeId {
        s.parse().expect("spiffe id")
    }

    fn csr_with(key: &KeyPair, sans: Vec<SanType>, tweak: impl FnOnce(&mut CertificateParams)) -> Vec<u8> {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = sans;
        tweak(&mut params);
        params.serialize_request(key).expect("csr").der().to_vec()
    }

    fn uri(s: &str) -> SanType {
        SanType::URI(s.try_into().expect("ia5"))
    }

    #[test]
    fn table() {
        let me = "spiffe://cluster.local/ns/default/sa/web";
        let p256 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let p384 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("key");
        let ed = KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("key");
        let good = csr_with(&p256, vec![uri(me)], |_| {});
        let mut tampered = good.clone();
        let n = tampered.len();
        tampered[n - 3] ^= 0x55;

        let cases: Vec<(&str, Vec<u8>, Result<(), &str>)> = vec![
            ("good", good.clone(), Ok(())),
            (
                "a CSR asking for certificate signing passes: only its key is used",
                csr_with(&p256, vec![uri(me)], |p| p.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign]),
                Ok(()),
            ),
            ("empty", Vec::new(), Err("is empty")),
            ("garbage", b"hello".to_vec(), Err("not a DER PKCS#10")),
            ("PEM", b"-----BEGIN CERTIFICATE REQUEST-----\n".to_vec(), Err("send DER, not PEM")),
            ("tampered signature", tampered, Err("does not verify")),
            ("P-384 key", csr_with(&p384, vec![uri(me)], |_| {}), Err("must be ECDSA P-256")),
            ("Ed25519 key", csr_with(&ed, vec![uri(me)], |_| {}), Err("must be ECDSA P-256")),
            ("no SAN", csr_with(&p256, vec![], |_| {}), Err("it asks for none")),
            (
                "another identity",
                csr_with(&p256, vec![uri("spiffe://cluster.local/ns/default/sa/admin")], |_| {}),
                Err("asks for `spiffe://cluster.local/ns/default/sa/admin`, but the request is for"),
            ),
            (
                "an extra DNS SAN",
                csr_with(&p256, vec![uri(me), SanType::DnsName("web.default.svc".try_into().expect("dns"))], |_| {}),
                Err("it asks for URI `spiffe://cluster.local/ns/default/sa/web`, DNS `web.default.svc`"),
            ),
            (
                "an IP SAN",
                csr_with(&p256, vec![SanType::IpAddress([10, 0, 0, 1].into())], |_| {}),
                Err("it asks for IP 10.0.0.1"),
            ),
            (
                "two URIs",
                csr_with(&p256, vec![uri(me), uri("spiffe://cluster.local/ns/kube-system/sa/admin")], |_| {}),
                Err("exactly one SAN"),
            ),
        ];
        for (name, der, want) in cases {
            let got = check(&der, &id(me));
            match (got, want) {
                (Ok(c), Ok(())) => {
                    assert_eq!(rcgen::PublicKeyData::der_bytes(&c.public_key), p256.public_key_raw(), "{name}");
                }
                (Err(e), Err(w)) => assert!(e.to_string().contains(w), "{name}: got `{e}`, want `{w}`"),
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
        assert!(matches!(check(&vec![0u8; MAX_CSR_BYTES + 1], &id(me)), Err(CsrError::TooLarge(_))));
    }
}
