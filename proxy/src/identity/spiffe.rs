//! SPIFFE identities: `spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT`.
//!
//! Parsed strictly (these strings come from certificates and policy, both
//! attacker-reachable): lowercase trust domain of DNS-ish characters,
//! exactly the `ns/…/sa/…` path, Kubernetes-name characters in both parts.

use std::fmt;
use std::sync::Arc;

use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// A workload identity, validated.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    uri: Arc<str>,
    /// Byte offsets of the namespace and service account inside `uri`.
    ns: (usize, usize),
    sa: (usize, usize),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeError {
    #[error("{0:?} is not a SPIFFE ID of the form spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT")]
    Malformed(String),
    #[error("the certificate could not be parsed: {0}")]
    Certificate(String),
    #[error("the certificate has no SPIFFE URI SAN")]
    NoSpiffeSan,
    #[error("the certificate has {0} URI SANs; a mesh certificate has exactly one")]
    SeveralUris(usize),
}

impl SpiffeId {
    pub fn new(trust_domain: &str, namespace: &str, service_account: &str) -> Result<Self, SpiffeError> {
        Self::parse(&format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"))
    }

    pub fn parse(s: &str) -> Result<Self, SpiffeError> {
        let bad = || SpiffeError::Malformed(s.chars().take(200).collect());
        let rest = s.strip_prefix("spiffe://").ok_or_else(bad)?;
        let (td, path) = rest.split_once('/').ok_or_else(bad)?;
        let valid_td = !td.is_empty()
            && td.len() <= 255
            && td.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b));
        let parts: Vec<&str> = path.split('/').collect();
        let [ns_kw, ns, sa_kw, sa] = parts.as_slice() else { return Err(bad()) };
        let name_ok = |n: &str| {
            !n.is_empty()
                && n.len() <= 253
                && n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.".contains(&b))
        };
        if !valid_td || *ns_kw != "ns" || *sa_kw != "sa" || !name_ok(ns) || !name_ok(sa) {
            return Err(bad());
        }
        let ns_start = "spiffe://".len() + td.len() + "/ns/".len();
        let sa_start = ns_start + ns.len() + "/sa/".len();
        Ok(Self { uri: s.into(), ns: (ns_start, ns_start + ns.len()), sa: (sa_start, sa_start + sa.len()) })
    }

    pub fn as_str(&self) -> &str {
        &self.uri
    }

    pub fn namespace(&self) -> &str {
        &self.uri[self.ns.0..self.ns.1]
    }

    pub fn service_account(&self) -> &str {
        &self.uri[self.sa.0..self.sa.1]
    }

    /// The identity in a DER certificate: its single SPIFFE URI SAN.
    pub fn from_cert(der: &[u8]) -> Result<Self, SpiffeError> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| SpiffeError::Certificate(e.to_string()))?;
        let san = cert
            .subject_alternative_name()
            .map_err(|e| SpiffeError::Certificate(e.to_string()))?
            .ok_or(SpiffeError::NoSpiffeSan)?;
        let uris: Vec<&str> = san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::URI(u) => Some(*u),
                _ => None,
            })
            .collect();
        match uris.as_slice() {
            [] => Err(SpiffeError::NoSpiffeSan),
            [one] => Self::parse(one),
            many => Err(SpiffeError::SeveralUris(many.len())),
        }
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpiffeId({})", self.uri)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        let ok = [
            ("spiffe://cluster.local/ns/default/sa/web", "default", "web"),
            ("spiffe://td-1/ns/a.b/sa/c-d", "a.b", "c-d"),
        ];
        for (s, ns, sa) in ok {
            let id = SpiffeId::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!((id.namespace(), id.service_account(), id.as_str()), (ns, sa, s));
        }
        let bad = [
            "",
            "spiffe://",
            "http://cluster.local/ns/default/sa/web",
            "spiffe://cluster.local/ns/default",
            "spiffe://cluster.local/ns/default/sa/",
            "spiffe://cluster.local/ns//sa/web",
            "spiffe://cluster.local/ns/default/sa/web/extra",
            "spiffe://Cluster.local/ns/default/sa/web",
            "spiffe://cluster.local/sa/web/ns/default",
            "spiffe://cluster.local/ns/Default/sa/web",
            "spiffe://cluster.local/ns/de fault/sa/web",
            "spiffe:///ns/default/sa/web",
        ];
        for s in bad {
            assert!(SpiffeId::parse(s).is_err(), "{s:?} should be refused");
        }
    }

    #[test]
    fn identity_from_a_certificate() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names =
            vec![rcgen::SanType::URI("spiffe://cluster.local/ns/default/sa/a".try_into().expect("ia5"))];
        let cert = params.self_signed(&key).expect("cert");
        let id = SpiffeId::from_cert(cert.der()).expect("spiffe id");
        assert_eq!(id.as_str(), "spiffe://cluster.local/ns/default/sa/a");

        let mut params = rcgen::CertificateParams::new(vec!["example.com".to_string()]).expect("params");
        let cert = params.self_signed(&key).expect("cert");
        assert_eq!(SpiffeId::from_cert(cert.der()), Err(SpiffeError::NoSpiffeSan));
        params.subject_alt_names = vec![
            rcgen::SanType::URI("spiffe://cluster.local/ns/a/sa/a".try_into().expect("ia5")),
            rcgen::SanType::URI("spiffe://cluster.local/ns/b/sa/b".try_into().expect("ia5")),
        ];
        let cert = params.self_signed(&key).expect("cert");
        assert_eq!(SpiffeId::from_cert(cert.der()), Err(SpiffeError::SeveralUris(2)));
        assert!(SpiffeId::from_cert(b"garbage").is_err());
    }
}
