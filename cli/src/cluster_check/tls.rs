//! The webhook's serving certificate, checked as the API server's TLS
//! client would: the chain to the webhook's caBundle at a given time, the
//! name it is called by, and that the key is the certificate's.

use std::time::{Duration, SystemTime};

use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

/// The certificates of a PEM bundle, at least one.
pub fn certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = rustls_pemfile::certs(&mut &pem[..]).collect::<Result<Vec<_>, _>>().map_err(|e| e.to_string())?;
    if certs.is_empty() { Err("no PEM certificate in it".into()) } else { Ok(certs) }
}

/// Is `key_pem` the private key of the chain's first certificate?
pub fn keys_match(chain: &[CertificateDer<'static>], key_pem: &[u8]) -> Result<(), String> {
    let key = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "no PEM private key in it".to_owned())?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| format!("unusable key: {e}"))?;
    match rustls::sign::CertifiedKey::new(chain.to_vec(), signer).keys_match() {
        // A key type that cannot tell its public key: nothing to compare.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(()),
        Err(_) => Err("not the private key of tls.crt".into()),
    }
}

fn rfc3339(t: UnixTime) -> String {
    humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + Duration::from_secs(t.as_secs())).to_string()
}

/// Does `chain` (leaf first) verify under the CAs of `bundle_pem` at `now`,
/// for a server called `host` (a DNS name or an IP address)?
pub fn verify(chain: &[CertificateDer<'static>], bundle_pem: &[u8], host: &str, now: SystemTime) -> Result<(), String> {
    let roots = certs(bundle_pem).map_err(|e| format!("caBundle: {e}"))?;
    let anchors = roots
        .iter()
        .map(|c| webpki::anchor_from_trusted_cert(c).map(|a| a.to_owned()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("caBundle: not a CA certificate ({e:?})"))?;
    let leaf = webpki::EndEntityCert::try_from(&chain[0]).map_err(|e| format!("tls.crt cannot be parsed ({e:?})"))?;
    let since_epoch = now.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    leaf.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &chain[1..],
        UnixTime::since_unix_epoch(since_epoch),
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .map_err(|e| match e {
        webpki::Error::UnknownIssuer => "tls.crt is not signed by a CA of the caBundle".to_owned(),
        webpki::Error::CertExpired { not_after, .. } => format!("tls.crt expired on {}", rfc3339(not_after)),
        webpki::Error::CertNotValidYet { not_before, .. } => {
            format!("tls.crt is not valid before {}", rfc3339(not_before))
        }
        other => format!("tls.crt does not verify under the caBundle ({other:?})"),
    })?;
    let name = ServerName::try_from(host).map_err(|_| format!("{host:?} is not a DNS name or an IP address"))?;
    leaf.verify_is_valid_for_subject_name(&name).map_err(|e| match e {
        webpki::Error::CertNotValidForName(_) => {
            let names = names(&chain[0]);
            let names = if names.is_empty() { "no DNS name or IP address".to_owned() } else { names.join(", ") };
            format!("tls.crt is not valid for {host} (it names {names})")
        }
        other => format!("tls.crt is not valid for {host} ({other:?})"),
    })
}

/// When the certificate ends.
pub fn not_after(cert: &CertificateDer<'_>) -> Result<SystemTime, String> {
    use x509_parser::prelude::FromDer as _;
    let (_, parsed) =
        x509_parser::certificate::X509Certificate::from_der(cert).map_err(|e| format!("cannot be parsed ({e})"))?;
    let secs = parsed.validity().not_after.timestamp();
    Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0)))
}

/// The DNS names and IP addresses a certificate is for (its SANs: the API
/// server, like every Go client since 1.15, ignores the common name).
fn names(cert: &CertificateDer<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    use x509_parser::prelude::FromDer as _;
    let Ok((_, parsed)) = x509_parser::certificate::X509Certificate::from_der(cert) else { return Vec::new() };
    let Ok(Some(san)) = parsed.subject_alternative_name() else { return Vec::new() };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some((*d).to_owned()),
            GeneralName::IPAddress(b) => match b.len() {
                4 => <[u8; 4]>::try_from(*b).ok().map(|a| std::net::IpAddr::from(a).to_string()),
                16 => <[u8; 16]>::try_from(*b).ok().map(|a| std::net::IpAddr::from(a).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}
