//! Small X.509 helpers over x509-parser and ring: PEM bundles, what
//! `/state` shows of a certificate, fingerprints, signature checks between
//! two certificates, and randomness.

use std::time::{Duration, SystemTime};

use ring::rand::{SecureRandom, SystemRandom};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::Serialize;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Decodes 64 hex digits (either case) into a SHA-256 digest.
pub fn parse_sha256_hex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in s.as_bytes().chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The operating system's randomness failed: nothing secret can be made.
#[derive(Clone, Copy, Debug, thiserror::Error)]
#[error("the system random number generator failed")]
pub struct RandomUnavailable;

pub fn random<const N: usize>() -> Result<[u8; N], RandomUnavailable> {
    let mut out = [0u8; N];
    SystemRandom::new().fill(&mut out).map_err(|_| RandomUnavailable)?;
    Ok(out)
}

/// A random positive serial number: 16 bytes, top bit clear (RFC 5280
/// §4.1.2.2 wants positive and at most 20 octets; unpredictable serials are
/// CA/B practice). Without one, rcgen derives the serial from the public
/// key, and every renewal with the same key would repeat it.
pub fn random_serial() -> Result<rcgen::SerialNumber, RandomUnavailable> {
    let mut bytes = random::<16>()?;
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    Ok(rcgen::SerialNumber::from_slice(&bytes))
}

/// Whole seconds: X.509 times have no fraction, so keep the clock we
/// report equal to the one in the certificate.
pub fn truncate_to_second(t: SystemTime) -> SystemTime {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    SystemTime::UNIX_EPOCH + Duration::from_secs(since.as_secs())
}

pub fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

fn from_unix(secs: i64) -> SystemTime {
    if secs >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// PEM-encodes `der` under `label` (`CERTIFICATE`, `PRIVATE KEY`).
pub fn to_pem(label: &str, der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = Vec::with_capacity(der.len().div_ceil(3) * 4);
    for c in der.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(c.get(1).copied().unwrap_or(0)) << 8)
            | u32::from(c.get(2).copied().unwrap_or(0));
        for i in 0..4 {
            b64.push(if i <= c.len() { ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] } else { b'=' });
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Every `CERTIFICATE` block of a PEM text, in order. Other blocks (a key
/// stored in the same file) are skipped.
pub fn pem_certs(bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate bundle ({e})"))?;
    if certs.is_empty() {
        return Err("no `-----BEGIN CERTIFICATE-----` block found".into());
    }
    Ok(certs)
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, String> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err("trailing bytes after the certificate".into()),
        Err(e) => Err(format!("not an X.509 certificate ({e})")),
    }
}

/// What operators (and `/state`) need to know about a certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CertInfo {
    pub subject: String,
    pub issuer: String,
    #[serde(serialize_with = "ser_time")]
    pub not_before: SystemTime,
    #[serde(serialize_with = "ser_time")]
    pub not_after: SystemTime,
    /// SHA-256 of the DER, lower-case hex (`openssl x509 -fingerprint
    /// -sha256` prints the same digits, upper-case with colons).
    pub sha256: String,
    pub self_signed: bool,
    /// basicConstraints cA=true, and keyCertSign if key usage is present.
    pub can_sign_certificates: bool,
}

fn ser_time<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*t))
}

impl CertInfo {
    pub fn parse(der: &[u8]) -> Result<Self, String> {
        let cert = parse(der)?;
        let ca = cert.basic_constraints().ok().flatten().is_some_and(|b| b.value.ca);
        let key_cert_sign = match cert.key_usage() {
            Ok(Some(ku)) => ku.value.key_cert_sign(),
            Ok(None) => true,
            Err(_) => false,
        };
        let self_signed = cert.subject() == cert.issuer() && cert.verify_signature(None).is_ok();
        Ok(Self {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            not_before: from_unix(cert.validity().not_before.timestamp()),
            not_after: from_unix(cert.validity().not_after.timestamp()),
            sha256: hex(&sha256(der)),
            self_signed,
            can_sign_certificates: ca && key_cert_sign,
        })
    }
}

/// The raw public key (the BIT STRING of the SubjectPublicKeyInfo).
pub fn public_key_bits(der: &[u8]) -> Result<Vec<u8>, String> {
    Ok(parse(der)?.public_key().subject_public_key.data.to_vec())
}

/// Whether `parent` issued `child`: names match and `parent`'s key
/// verifies `child`'s signature.
pub fn issued_by(child: &[u8], parent: &[u8]) -> bool {
    let (Ok(child), Ok(parent)) = (parse(child), parse(parent)) else { return false };
    child.issuer() == parent.subject() && child.verify_signature(Some(parent.public_key())).is_ok()
}

/// Whether a chain (leaf-most first) ends at, or right under, one of
/// `anchors`. Intermediate links are checked too.
pub fn chains_to(chain: &[CertificateDer<'_>], anchors: &[CertificateDer<'_>]) -> bool {
    let Some(top) = chain.last() else { return false };
    let links_ok = chain.windows(2).all(|w| issued_by(&w[0], &w[1]));
    links_ok && (anchors.iter().any(|a| a.as_ref() == top.as_ref()) || anchors.iter().any(|a| issued_by(top, a)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let d = sha256(b"abc");
        let h = hex(&d);
        assert_eq!(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(parse_sha256_hex(&h), Some(d));
        assert_eq!(parse_sha256_hex(&h.to_uppercase()), Some(d));
        assert_eq!(parse_sha256_hex(&h[1..]), None);
        assert_eq!(parse_sha256_hex(&format!("{}g", &h[1..])), None);
        assert_eq!(parse_sha256_hex(&"é".repeat(32)), None);
    }

    #[test]
    fn serials_are_positive_and_distinct() {
        let a = random_serial().expect("random").to_bytes();
        let b = random_serial().expect("random").to_bytes();
        assert_ne!(a, b);
        assert!(a[0] & 0x80 == 0 && a[0] != 0);
    }

    #[test]
    fn pem_bundles() {
        for len in [0usize, 1, 2, 3, 47, 48, 49, 100] {
            let der: Vec<u8> = (0..len).map(|i| (i * 37 % 256) as u8).collect();
            let pem = to_pem("CERTIFICATE", &der);
            let back: Vec<Vec<u8>> =
                CertificateDer::pem_slice_iter(pem.as_bytes()).map(|c| c.expect("decodes").to_vec()).collect();
            assert_eq!(back, [der], "{len}: {pem}");
        }
        assert!(pem_certs(b"").is_err());
        assert!(pem_certs(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").is_err());
    }
}
