//! The issuer: the certificate and key that sign workload certificates.
//!
//! Either from files (`--issuer-cert`, `--issuer-key`: PEM, a root or an
//! intermediate, optionally followed by the intermediates above it), or —
//! for the local mesh — a self-signed ECDSA P-256 root generated on first
//! start under the state directory (`ca.crt`, `ca.key` with mode 0600, the
//! directory 0700) and reused afterwards. The key is loaded here and never
//! leaves the process.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, PublicKeyData, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::pki::{self, CertInfo, RandomUnavailable};
use super::{write_file, write_private_file};

pub const CA_CERT_FILE: &str = "ca.crt";
pub const CA_KEY_FILE: &str = "ca.key";
/// Lifetime of a generated local-mesh root.
pub const LOCAL_ROOT_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
/// Certificates start this long before they are signed, so that a peer
/// whose clock is a little behind does not refuse a fresh certificate.
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum IssuerError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
    #[error(transparent)]
    Random(#[from] RandomUnavailable),
    #[error("signing failed: {0}")]
    Sign(#[from] rcgen::Error),
}

/// The files an issuer was loaded from, to watch for changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuerFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl IssuerFiles {
    pub fn in_state_dir(dir: &Path) -> Self {
        Self { cert: dir.join(CA_CERT_FILE), key: dir.join(CA_KEY_FILE) }
    }
}

/// A loaded issuer.
pub struct Issuer {
    signer: rcgen::Issuer<'static, KeyPair>,
    /// The issuer certificate, then the certificates above it as given in
    /// the file.
    certs: Vec<CertificateDer<'static>>,
    info: CertInfo,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Issuer").field("subject", &self.info.subject).field("not_after", &self.info.not_after).finish()
    }
}

/// A signed certificate and the end of its validity.
#[derive(Clone, Debug)]
pub struct Signed {
    pub der: CertificateDer<'static>,
    pub not_after: SystemTime,
}

impl Issuer {
    /// Parses an issuer from PEM texts, checking that the key matches the
    /// certificate and that the certificate may sign certificates and is
    /// valid at `now`. `cert_path` and `key_path` name the files in errors.
    pub fn from_pem(
        cert_pem: &[u8],
        key_pem: &[u8],
        cert_path: &Path,
        key_path: &Path,
        now: SystemTime,
    ) -> Result<Self, IssuerError> {
        let invalid = |path: &Path, message: String| IssuerError::Invalid { path: path.to_owned(), message };
        let certs = pki::pem_certs(cert_pem).map_err(|m| invalid(cert_path, m))?;
        let info = CertInfo::parse(&certs[0]).map_err(|m| invalid(cert_path, m))?;
        if !info.can_sign_certificates {
            return Err(invalid(
                cert_path,
                format!(
                    "`{}` is not a CA certificate (basicConstraints cA=true and keyCertSign are needed)",
                    info.subject
                ),
            ));
        }
        if info.not_after <= now {
            return Err(invalid(
                cert_path,
                format!("`{}` expired at {}; give a current issuer", info.subject, pki::rfc3339(info.not_after)),
            ));
        }
        let key = load_key(key_pem).map_err(|m| invalid(key_path, m))?;
        let cert_key = pki::public_key_bits(&certs[0]).map_err(|m| invalid(cert_path, m))?;
        if key.der_bytes() != cert_key.as_slice() {
            return Err(invalid(
                key_path,
                format!("this key does not belong to the certificate in {}", cert_path.display()),
            ));
        }
        let signer = rcgen::Issuer::from_ca_cert_der(&certs[0], key).map_err(|e| invalid(cert_path, e.to_string()))?;
        Ok(Self { signer, certs, info })
    }

    /// Loads `files`.
    pub fn load(files: &IssuerFiles, now: SystemTime) -> Result<Self, IssuerError> {
        let cert = read(&files.cert)?;
        let key = read(&files.key)?;
        Self::from_pem(&cert, &key, &files.cert, &files.key, now)
    }

    /// The local mesh's root under `dir`: loaded if `ca.crt` and `ca.key`
    /// are there, generated (and saved) if not. Returns whether it was
    /// generated.
    pub fn local_root(dir: &Path, trust_domain: &str, now: SystemTime) -> Result<(Self, bool), IssuerError> {
        ensure_private_dir(dir)?;
        let files = IssuerFiles::in_state_dir(dir);
        match (files.cert.exists(), files.key.exists()) {
            (true, true) => {
                check_private(&files.key)?;
                Ok((Self::load(&files, now)?, false))
            }
            (true, false) => Err(IssuerError::Invalid {
                path: files.key.clone(),
                message: format!(
                    "missing, but {} exists; restore the key, or remove both to generate a new root (every proxy then needs its trust anchors again)",
                    files.cert.display()
                ),
            }),
            // A key without a certificate is an interrupted first start:
            // nothing was ever signed with it.
            (false, _) => {
                let (cert_pem, key_pem) = generate_root(trust_domain, now)?;
                write_private_file(&files.key, key_pem.as_bytes())
                    .map_err(|source| IssuerError::Write { path: files.key.clone(), source })?;
                // The certificate is public; the directory (0700) still
                // keeps others out, so `weft up` copies it for proxies.
                write_file(&files.cert, cert_pem.as_bytes(), 0o644)
                    .map_err(|source| IssuerError::Write { path: files.cert.clone(), source })?;
                Ok((Self::from_pem(cert_pem.as_bytes(), key_pem.as_bytes(), &files.cert, &files.key, now)?, true))
            }
        }
    }

    pub fn info(&self) -> &CertInfo {
        &self.info
    }

    /// The issuer certificate and those above it, as loaded.
    pub fn certs(&self) -> &[CertificateDer<'static>] {
        &self.certs
    }

    /// What follows a leaf in the chain it is sent with: the issuer and
    /// the intermediates above it, roots left out (peers have those as
    /// trust anchors; sending them only costs bytes).
    pub fn intermediates(&self) -> Vec<CertificateDer<'static>> {
        self.certs.iter().filter(|c| !CertInfo::parse(c).is_ok_and(|i| i.self_signed)).cloned().collect()
    }

    /// Signs a leaf for `public_key` with `sans`, valid from `now` minus
    /// the clock skew allowance until `now + lifetime` (or the issuer's own
    /// end, if sooner). Key usage digitalSignature; EKU serverAuth and
    /// clientAuth (every proxy is both); not a CA; empty subject, so the
    /// SAN extension is critical (RFC 5280 §4.2.1.6).
    pub fn sign_leaf(
        &self,
        public_key: &impl PublicKeyData,
        sans: Vec<SanType>,
        lifetime: Duration,
        now: SystemTime,
    ) -> Result<Signed, IssuerError> {
        let now = pki::truncate_to_second(now);
        let not_after = (now + lifetime).min(self.info.not_after);
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = sans;
        params.not_before = (now - CLOCK_SKEW).into();
        params.not_after = not_after.into();
        params.serial_number = Some(pki::random_serial()?);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        // The authority key identifier picks the right issuer when an old
        // and a new root share a subject name during a rotation.
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(public_key, &self.signer)?;
        Ok(Signed { der: cert.der().clone(), not_after })
    }
}

fn read(path: &Path) -> Result<Vec<u8>, IssuerError> {
    std::fs::read(path).map_err(|source| IssuerError::Read { path: path.to_owned(), source })
}

/// A PKCS#8 key, with a hint for the usual other encodings.
fn load_key(pem: &[u8]) -> Result<KeyPair, String> {
    let der = PrivateKeyDer::from_pem_slice(pem).map_err(|e| format!("no private key found ({e})"))?;
    match der {
        PrivateKeyDer::Pkcs8(k) => KeyPair::try_from(&k).map_err(|e| format!("unusable PKCS#8 key ({e})")),
        PrivateKeyDer::Sec1(_) | PrivateKeyDer::Pkcs1(_) => Err(
            "the key is in SEC1/PKCS#1 form (`BEGIN EC PRIVATE KEY` / `BEGIN RSA PRIVATE KEY`); convert it with `openssl pkcs8 -topk8 -nocrypt -in KEY -out KEY.pk8`"
                .into(),
        ),
        _ => Err("unsupported private key encoding; give an unencrypted PKCS#8 key (`BEGIN PRIVATE KEY`)".into()),
    }
}

/// A self-signed ECDSA P-256 root for the local mesh, as PEM (cert, key).
fn generate_root(trust_domain: &str, now: SystemTime) -> Result<(String, String), IssuerError> {
    let now = pki::truncate_to_second(now);
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "weft");
    dn.push(DnType::CommonName, format!("weft local mesh root ({trust_domain})"));
    params.distinguished_name = dn;
    params.not_before = (now - CLOCK_SKEW).into();
    params.not_after = (now + LOCAL_ROOT_LIFETIME).into();
    params.serial_number = Some(pki::random_serial()?);
    // This root signs workload certificates directly, never another CA.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Creates `dir` with mode 0700, or tightens an existing one to it.
pub(super) fn ensure_private_dir(dir: &Path) -> Result<(), IssuerError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let write = |source| IssuerError::Write { path: dir.to_owned(), source };
    if !dir.exists() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(write)?;
    }
    let mode = std::fs::metadata(dir).map_err(write)?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::info!(dir = %dir.display(), mode = format!("{:o}", mode & 0o777), "restricting the state directory to its owner (0700)");
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(write)?;
    }
    Ok(())
}

/// Refuses a key file others can read, as ssh does.
fn check_private(key: &Path) -> Result<(), IssuerError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(key)
        .map_err(|source| IssuerError::Read { path: key.to_owned(), source })?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(IssuerError::Invalid {
            path: key.to_owned(),
            message: format!(
                "the CA key is accessible by others (mode {:o}); run `chmod 600 {}`",
                mode & 0o777,
                key.display()
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777
    }

    #[test]
    fn local_root_is_generated_private_and_reused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("state");
        let now = SystemTime::now();
        let (root, generated) = Issuer::local_root(&dir, "cluster.local", now).expect("generate");
        assert!(generated);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(CA_KEY_FILE)), 0o600);
        assert_eq!(mode(&dir.join(CA_CERT_FILE)), 0o644);
        let info = root.info();
        assert!(info.self_signed && info.can_sign_certificates, "{info:?}");
        assert_eq!(info.subject, "O=weft, CN=weft local mesh root (cluster.local)");
        let year = info.not_after.duration_since(now).expect("future");
        assert!(year > LOCAL_ROOT_LIFETIME - Duration::from_secs(2) && year <= LOCAL_ROOT_LIFETIME, "{year:?}");
        assert!(root.intermediates().is_empty(), "a root is not sent with leaves");

        let (again, generated) = Issuer::local_root(&dir, "cluster.local", now).expect("reuse");
        assert!(!generated);
        assert_eq!(again.info().sha256, info.sha256, "the same root");

        std::fs::set_permissions(dir.join(CA_KEY_FILE), std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = Issuer::local_root(&dir, "cluster.local", now).expect_err("world-readable key");
        assert!(e.to_string().contains("chmod 600"), "{e}");
        std::fs::set_permissions(dir.join(CA_KEY_FILE), std::fs::Permissions::from_mode(0o600)).expect("chmod");

        // A loose directory is tightened.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        Issuer::local_root(&dir, "cluster.local", now).expect("reuse");
        assert_eq!(mode(&dir), 0o700);

        std::fs::remove_file(dir.join(CA_KEY_FILE)).expect("rm");
        let e = Issuer::local_root(&dir, "cluster.local", now).expect_err("cert without key");
        assert!(e.to_string().contains("restore the key"), "{e}");
    }

    #[test]
    fn refuses_mismatched_expired_and_non_ca_issuers() {
        let now = SystemTime::now();
        let (cert, key) = generate_root("cluster.local", now).expect("root");
        let (_, other_key) = generate_root("cluster.local", now).expect("root");
        let (c, k) = (Path::new("issuer.crt"), Path::new("issuer.key"));
        Issuer::from_pem(cert.as_bytes(), key.as_bytes(), c, k, now).expect("valid");

        let e = Issuer::from_pem(cert.as_bytes(), other_key.as_bytes(), c, k, now).expect_err("mismatch");
        assert!(e.to_string().starts_with("issuer.key: this key does not belong"), "{e}");
        let later = now + LOCAL_ROOT_LIFETIME + Duration::from_secs(1);
        let e = Issuer::from_pem(cert.as_bytes(), key.as_bytes(), c, k, later).expect_err("expired");
        assert!(e.to_string().contains("expired at"), "{e}");
        let e = Issuer::from_pem(b"junk", key.as_bytes(), c, k, now).expect_err("junk");
        assert!(e.to_string().starts_with("issuer.crt: no `-----BEGIN CERTIFICATE-----`"), "{e}");
        let sec1 = pki::to_pem("EC PRIVATE KEY", &[0x30, 0x03, 0x02, 0x01, 0x01]);
        let e = Issuer::from_pem(cert.as_bytes(), sec1.as_bytes(), c, k, now).expect_err("sec1");
        assert!(e.to_string().contains("openssl pkcs8 -topk8"), "{e}");

        // A leaf certificate cannot be an issuer.
        let root = Issuer::from_pem(cert.as_bytes(), key.as_bytes(), c, k, now).expect("valid");
        let leaf_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let leaf = root.sign_leaf(&leaf_key, vec![], Duration::from_secs(60), now).expect("leaf");
        let pem = pki::to_pem("CERTIFICATE", &leaf.der);
        let e = Issuer::from_pem(pem.as_bytes(), leaf_key.serialize_pem().as_bytes(), c, k, now).expect_err("leaf");
        assert!(e.to_string().contains("is not a CA certificate"), "{e}");
    }
}
