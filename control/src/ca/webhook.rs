//! The injector's serving certificate, decided without I/O: the names it
//! must carry, whether the certificate in its Secret still does, a fresh
//! one, and whether a webhook's `caBundle` is the trust anchors.
//! `source::kubernetes::webhook_cert` reads the Secret and the
//! MutatingWebhookConfiguration, asks these functions, and writes.
//!
//! The Secret has cert-manager's layout (type `kubernetes.io/tls`), so the
//! injector reads it the same whoever issues it:
//!
//! ```text
//!   tls.crt  the leaf, then the issuer's chain (intermediates, no root)
//!   tls.key  the leaf's key, PKCS#8 PEM
//!   ca.crt   the trust anchors: what every webhook's caBundle holds
//! ```
//!
//! The API server verifies the injector against `caBundle` = the anchors,
//! not against the leaf: renewing the leaf under the same root needs no
//! change to the webhook, so a renewal cannot race the API server.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use rcgen::{KeyPair, PublicKeyData as _, SanType};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::anchors::Anchors;
use super::issuer::{Issuer, IssuerError};
use super::pki;

pub const TLS_CRT: &str = "tls.crt";
pub const TLS_KEY: &str = "tls.key";
pub const CA_CRT: &str = "ca.crt";
/// The Secret type cert-manager writes and `kubectl create secret tls` makes.
pub const SECRET_TYPE: &str = "kubernetes.io/tls";
/// The cluster's DNS domain, for the Service's fully qualified name.
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// A subject alternative name of the injector's certificate.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum San {
    Dns(String),
    Ip(IpAddr),
}

impl fmt::Display for San {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            San::Dns(d) => write!(f, "DNS:{d}"),
            San::Ip(ip) => write!(f, "IP:{ip}"),
        }
    }
}

impl FromStr for San {
    type Err = String;

    /// An IP address, or a DNS name (RFC 1123, lower-cased; no wildcard:
    /// the webhook is called by one exact name).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(San::Ip(ip));
        }
        let name = s.to_ascii_lowercase();
        let label_ok = |l: &str| {
            (1..=63).contains(&l.len())
                && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
            return Err(format!(
                "`{s}` is neither an IP address nor a DNS name (letters, digits, '-' in dot-separated labels of 1 to 63)"
            ));
        }
        Ok(San::Dns(name))
    }
}

impl San {
    fn to_rcgen(&self) -> Result<SanType, rcgen::Error> {
        Ok(match self {
            San::Dns(d) => SanType::DnsName(d.as_str().try_into()?),
            San::Ip(ip) => SanType::IpAddress(*ip),
        })
    }
}

/// `SERVICE.NAMESPACE.svc` (the name the API server dials and verifies),
/// its fully qualified form, then `extra`; sorted, without duplicates.
pub fn desired_sans(service: &str, namespace: &str, extra: &[San]) -> Vec<San> {
    let mut sans = vec![
        San::Dns(format!("{service}.{namespace}.svc")),
        San::Dns(format!("{service}.{namespace}.svc.{CLUSTER_DOMAIN}")),
    ];
    sans.extend(extra.iter().cloned());
    sans.sort();
    sans.dedup();
    sans
}

fn sans_text(sans: &[San]) -> String {
    sans.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// What the Secret holds, by key (absent keys are `None`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Stored<'a> {
    pub tls_crt: Option<&'a [u8]>,
    pub tls_key: Option<&'a [u8]>,
    pub ca_crt: Option<&'a [u8]>,
}

/// Why the Secret is written anew.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Renewal {
    #[error("the Secret does not exist")]
    Missing,
    #[error("the Secret is unusable: {0}")]
    Invalid(String),
    #[error("its certificate does not chain to the trust anchors")]
    NotAnchored,
    #[error("its certificate was not signed by the current issuer, or is sent with another chain")]
    IssuerChanged,
    #[error("its names are [{have}], not [{want}]")]
    SansChanged { have: String, want: String },
    #[error("its ca.crt is not the current trust anchors")]
    AnchorsChanged,
    #[error("it expires at {not_after}, less than a third of its lifetime from now")]
    Expiring { not_after: String },
}

impl Renewal {
    /// Short, for logs.
    pub fn label(&self) -> &'static str {
        match self {
            Renewal::Missing => "missing",
            Renewal::Invalid(_) => "invalid",
            Renewal::NotAnchored => "not_anchored",
            Renewal::IssuerChanged => "issuer_changed",
            Renewal::SansChanged { .. } => "sans_changed",
            Renewal::AnchorsChanged => "anchors_changed",
            Renewal::Expiring { .. } => "expiring",
        }
    }
}

/// What to do with the Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It will do. Look again at `renew_at`; `None` when a new certificate
    /// would end no later than this one (the issuer itself ends then).
    Keep {
        serial: String,
        renew_at: Option<SystemTime>,
    },
    Renew(Renewal),
}

/// The facts of a stored certificate that the verdict needs.
struct Existing {
    chain: Vec<CertificateDer<'static>>,
    sans: Vec<San>,
    not_after: SystemTime,
    serial: String,
    ca: Vec<CertificateDer<'static>>,
}

/// Decides whether the stored certificate still does for `want` (from
/// [`desired_sans`]) under `issuer` and `anchors` at `now`. The first
/// reason found wins, in the order of [`Renewal`]. It is renewed when less
/// than a third of `lifetime` is left, unless a new one could not end any
/// later (the issuer's own end).
pub fn judge(
    stored: Option<&Stored<'_>>,
    want: &[San],
    issuer: &Issuer,
    anchors: &Anchors,
    lifetime: Duration,
    now: SystemTime,
) -> Verdict {
    let Some(stored) = stored else { return Verdict::Renew(Renewal::Missing) };
    let e = match existing(stored) {
        Ok(e) => e,
        Err(why) => return Verdict::Renew(Renewal::Invalid(why)),
    };
    if !pki::chains_to(&e.chain, &anchors.certs) {
        return Verdict::Renew(Renewal::NotAnchored);
    }
    if !pki::issued_by(&e.chain[0], &issuer.certs()[0]) || e.chain[1..] != issuer.intermediates()[..] {
        return Verdict::Renew(Renewal::IssuerChanged);
    }
    if e.sans != want {
        return Verdict::Renew(Renewal::SansChanged { have: sans_text(&e.sans), want: sans_text(want) });
    }
    if e.ca != anchors.certs {
        return Verdict::Renew(Renewal::AnchorsChanged);
    }
    let renew_at = e.not_after.checked_sub(lifetime / 3).unwrap_or(SystemTime::UNIX_EPOCH);
    let can_do_better = issuer.info().not_after > e.not_after;
    if now >= renew_at && can_do_better {
        return Verdict::Renew(Renewal::Expiring { not_after: pki::rfc3339(e.not_after) });
    }
    Verdict::Keep { serial: e.serial, renew_at: can_do_better.then_some(renew_at) }
}

fn existing(s: &Stored<'_>) -> Result<Existing, String> {
    let crt = s.tls_crt.ok_or_else(|| format!("no {TLS_CRT}"))?;
    let key = s.tls_key.ok_or_else(|| format!("no {TLS_KEY}"))?;
    let chain = pki::pem_certs(crt).map_err(|e| format!("{TLS_CRT}: {e}"))?;
    let (sans, not_after, serial) = leaf_facts(&chain[0]).map_err(|e| format!("{TLS_CRT}: {e}"))?;
    let key = match PrivateKeyDer::from_pem_slice(key) {
        Ok(PrivateKeyDer::Pkcs8(k)) => KeyPair::try_from(&k).map_err(|e| format!("{TLS_KEY}: unusable key ({e})"))?,
        Ok(_) => return Err(format!("{TLS_KEY} is not a PKCS#8 key (`BEGIN PRIVATE KEY`)")),
        Err(e) => return Err(format!("{TLS_KEY}: no private key ({e})")),
    };
    if pki::public_key_bits(&chain[0])? != key.der_bytes() {
        return Err(format!("{TLS_KEY} does not belong to the certificate in {TLS_CRT}"));
    }
    // An unreadable ca.crt is the same as a wrong one: rewritten.
    let ca = s.ca_crt.and_then(|c| pki::pem_certs(c).ok()).unwrap_or_default();
    Ok(Existing { chain, sans, not_after, serial, ca })
}

/// A leaf's DNS and IP SANs (sorted), its end, and its serial (upper-case
/// hex, as `openssl x509 -serial` prints it).
fn leaf_facts(der: &[u8]) -> Result<(Vec<San>, SystemTime, String), String> {
    let cert = match X509Certificate::from_der(der) {
        Ok(([], c)) => c,
        Ok(_) => return Err("trailing bytes after the certificate".into()),
        Err(e) => return Err(format!("not an X.509 certificate ({e})")),
    };
    let mut sans = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for name in &ext.value.general_names {
            match name {
                GeneralName::DNSName(d) => sans.push(San::Dns(d.to_ascii_lowercase())),
                GeneralName::IPAddress(b) => match b.len() {
                    4 => sans.push(San::Ip(IpAddr::from(<[u8; 4]>::try_from(*b).unwrap_or_default()))),
                    16 => sans.push(San::Ip(IpAddr::from(<[u8; 16]>::try_from(*b).unwrap_or_default()))),
                    _ => return Err("an IP address SAN of neither 4 nor 16 bytes".into()),
                },
                _ => {}
            }
        }
    }
    sans.sort();
    sans.dedup();
    let info = pki::CertInfo::parse(der)?;
    Ok((sans, info.not_after, pki::hex(cert.raw_serial()).to_uppercase()))
}

/// A freshly issued certificate, as the Secret's values.
#[derive(Clone, Debug)]
pub struct Fresh {
    pub tls_crt: String,
    pub tls_key: String,
    pub ca_crt: String,
    pub serial: String,
    pub not_after: SystemTime,
}

/// Signs a new leaf for `sans` with a new ECDSA P-256 key: valid from a
/// minute before `now` (clock skew) for `lifetime`, never past the
/// issuer's own end; EKU serverAuth (and clientAuth, as every leaf of this
/// CA). The key is made here and goes only into the Secret.
pub fn issue(
    issuer: &Issuer,
    anchors: &Anchors,
    sans: &[San],
    lifetime: Duration,
    now: SystemTime,
) -> Result<Fresh, IssuerError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let sans = sans.iter().map(San::to_rcgen).collect::<Result<Vec<_>, _>>()?;
    let leaf = issuer.sign_leaf(&key, sans, lifetime, now)?;
    let mut tls_crt = pki::to_pem("CERTIFICATE", &leaf.der);
    for c in issuer.intermediates() {
        tls_crt.push_str(&pki::to_pem("CERTIFICATE", &c));
    }
    let serial = leaf_facts(&leaf.der).map(|(_, _, s)| s).unwrap_or_default();
    Ok(Fresh { tls_crt, tls_key: key.serialize_pem(), ca_crt: ca_bundle(anchors), serial, not_after: leaf.not_after })
}

/// The anchors as one PEM text: `ca.crt`, and every webhook's `caBundle`.
pub fn ca_bundle(anchors: &Anchors) -> String {
    anchors.certs.iter().map(|c| pki::to_pem("CERTIFICATE", c)).collect()
}

/// Whether a webhook's `caBundle` holds exactly the anchors, in order
/// (however the PEM is laid out).
pub fn bundle_matches(bundle: &[u8], anchors: &Anchors) -> bool {
    pki::pem_certs(bundle).is_ok_and(|certs| certs == anchors.certs)
}

#[cfg(test)]
mod tests {
    use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyUsagePurpose};

    use super::*;

    const L: Duration = Duration::from_secs(3000);

    /// A CA: its PEM and key.
    struct TestCa {
        pem: String,
        key: KeyPair,
    }

    fn ca(name: &str, parent: Option<&TestCa>, lifetime: Duration, now: SystemTime) -> TestCa {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = (now - Duration::from_secs(60)).into();
        params.not_after = (now + lifetime).into();
        params.use_authority_key_identifier_extension = parent.is_some();
        let cert = match parent {
            None => params.self_signed(&key).expect("root"),
            Some(p) => {
                let signer = rcgen::Issuer::from_ca_cert_pem(&p.pem, &p.key).expect("parent");
                params.signed_by(&key, &signer).expect("intermediate")
            }
        };
        TestCa { pem: cert.pem(), key }
    }

    fn issuer(ca: &TestCa, chain_above: &[&TestCa], now: SystemTime) -> Issuer {
        let mut pem = ca.pem.clone();
        for c in chain_above {
            pem.push_str(&c.pem);
        }
        let path = std::path::Path::new("issuer");
        Issuer::from_pem(pem.as_bytes(), ca.key.serialize_pem().as_bytes(), path, path, now).expect("issuer")
    }

    fn anchors(cas: &[&TestCa]) -> Anchors {
        Anchors::parse(cas.iter().map(|c| c.pem.as_str()).collect::<String>().as_bytes(), 1).expect("anchors")
    }

    fn sans(list: &[&str]) -> Vec<San> {
        let mut v: Vec<San> = list.iter().map(|s| s.parse().expect("san")).collect();
        v.sort();
        v
    }

    #[test]
    fn sans_parse_and_the_desired_list() {
        let rows: &[(&str, Result<San, &str>)] = &[
            ("127.0.0.1", Ok(San::Ip("127.0.0.1".parse().expect("ip")))),
            ("::1", Ok(San::Ip("::1".parse().expect("ip")))),
            ("Weft-Injector.Example.COM", Ok(San::Dns("weft-injector.example.com".into()))),
            ("a", Ok(San::Dns("a".into()))),
            ("*.example.com", Err("neither an IP address nor a DNS name")),
            ("a..b", Err("neither")),
            ("-a.b", Err("neither")),
            ("a-.b", Err("neither")),
            ("", Err("neither")),
            ("a_b.c", Err("neither")),
            ("https://x", Err("neither")),
        ];
        for (text, want) in rows {
            match (text.parse::<San>(), want) {
                (Ok(got), Ok(want)) => assert_eq!(&got, want, "{text}"),
                (Err(e), Err(want)) => assert!(e.contains(want), "{text}: {e}"),
                (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
            }
        }
        let long = format!("{}.b", "a".repeat(64));
        assert!(long.parse::<San>().is_err(), "a 64-character label");
        assert!(format!("{}.b", "a".repeat(63)).parse::<San>().is_ok());

        let d = |s: &str| San::Dns(s.into());
        let ip = |s: &str| San::Ip(s.parse().expect("ip"));
        let rows: &[(&str, &str, Vec<San>, Vec<San>)] = &[
            (
                "weft-injector",
                "weft-system",
                vec![],
                vec![d("weft-injector.weft-system.svc"), d("weft-injector.weft-system.svc.cluster.local")],
            ),
            (
                "inj",
                "mesh",
                vec![ip("127.0.0.1"), d("inj.mesh.svc"), ip("127.0.0.1"), d("a.example")],
                vec![d("a.example"), d("inj.mesh.svc"), d("inj.mesh.svc.cluster.local"), ip("127.0.0.1")],
            ),
        ];
        for (service, ns, extra, want) in rows {
            assert_eq!(&desired_sans(service, ns, extra), want, "{service}.{ns} + {extra:?}");
        }
    }

    #[test]
    fn when_the_secret_is_renewed() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let year = Duration::from_secs(365 * 86400);
        let root_a = ca("root a", None, year, now);
        let root_b = ca("root b", None, year, now);
        let int_a = ca("int a", Some(&root_a), year, now);
        let (issuer_a, issuer_b, issuer_int) =
            (issuer(&root_a, &[], now), issuer(&root_b, &[], now), issuer(&int_a, &[&root_a], now));
        let (only_a, a_and_b) = (anchors(&[&root_a]), anchors(&[&root_a, &root_b]));
        let want = desired_sans("weft-injector", "weft-system", &["127.0.0.1".parse().expect("ip")]);
        let fewer = desired_sans("weft-injector", "weft-system", &[]);

        let fresh = |iss: &Issuer, anchors: &Anchors, sans: &[San], lifetime: Duration| {
            issue(iss, anchors, sans, lifetime, now).expect("issue")
        };
        let good = fresh(&issuer_a, &only_a, &want, L);
        let under_b = fresh(&issuer_b, &a_and_b, &want, L);
        let under_int = fresh(&issuer_int, &only_a, &want, L);
        let other_key = fresh(&issuer_a, &only_a, &want, L).tls_key;
        let sec1 = pki::to_pem("EC PRIVATE KEY", &[0x30, 0x03, 0x02, 0x01, 0x01]);
        // Clamped to the issuer's end (a year): a new one would end no later.
        let long = fresh(&issuer_a, &only_a, &want, 2 * year);
        let few = fresh(&issuer_a, &only_a, &fewer, L);
        let leaf_only = under_int.tls_crt.split_inclusive("-----END CERTIFICATE-----\n").next().expect("leaf");

        fn stored(f: &Fresh) -> Stored<'_> {
            Stored {
                tls_crt: Some(f.tls_crt.as_bytes()),
                tls_key: Some(f.tls_key.as_bytes()),
                ca_crt: Some(f.ca_crt.as_bytes()),
            }
        }
        let renew_at = good.not_after - L / 3;
        let keep = |f: &Fresh, at: Option<SystemTime>| Verdict::Keep { serial: f.serial.clone(), renew_at: at };
        let invalid = |why: &str| Verdict::Renew(Renewal::Invalid(why.into()));
        let ca_junk = "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n";
        let b_pem = root_b.pem.clone();

        // (what, stored, wanted names, issuer, anchors, lifetime, now, verdict)
        let rows: Vec<(&str, Option<Stored<'_>>, &[San], &Issuer, &Anchors, Duration, SystemTime, Verdict)> = vec![
            ("none", None, &want[..], &issuer_a, &only_a, L, now, Verdict::Renew(Renewal::Missing)),
            ("fresh", Some(stored(&good)), &want[..], &issuer_a, &only_a, L, now, keep(&good, Some(renew_at))),
            (
                "just before a third is left",
                Some(stored(&good)),
                &want[..],
                &issuer_a,
                &only_a,
                L,
                renew_at - Duration::from_secs(1),
                keep(&good, Some(renew_at)),
            ),
            (
                "a third left",
                Some(stored(&good)),
                &want[..],
                &issuer_a,
                &only_a,
                L,
                renew_at,
                Verdict::Renew(Renewal::Expiring { not_after: pki::rfc3339(good.not_after) }),
            ),
            (
                "expired",
                Some(stored(&good)),
                &want[..],
                &issuer_a,
                &only_a,
                L,
                good.not_after + Duration::from_secs(1),
                Verdict::Renew(Renewal::Expiring { not_after: pki::rfc3339(good.not_after) }),
            ),
            (
                "near the issuer's end: a new one would be no better",
                Some(stored(&long)),
                &want[..],
                &issuer_a,
                &only_a,
                2 * year,
                long.not_after - Duration::from_secs(10),
                keep(&long, None),
            ),
            ("no tls.crt", Some(Stored { tls_crt: None, ..stored(&good) }), &want[..], &issuer_a, &only_a, L, now, invalid("no tls.crt")),
            ("no tls.key", Some(Stored { tls_key: None, ..stored(&good) }), &want[..], &issuer_a, &only_a, L, now, invalid("no tls.key")),
            (
                "tls.crt not PEM",
                Some(Stored { tls_crt: Some(b"junk"), ..stored(&good) }),
                &want[..],
                &issuer_a,
                &only_a,
                L,
                now,
                invalid("tls.crt: no `-----BEGIN CERTIFICATE-----` block found"),
            ),
            (
                "another leaf's key",
                Some(Stored { tls_key: Some(other_key.as_bytes()), ..stored(&good) }),
                &want[..],
                &issuer_a,
                &only_a,
                L,
                now,
                invalid("tls.key does not belong to the certificate in tls.crt"),
            ),
            (
                "a SEC1 key",
                Some(Stored { tls_key: Some(sec1.as_bytes()), ..stored(&good) }),
                &want[..],
                &issuer_a,
                &only_a,
                L,
                now,
                invalid("tls.key is not a PKCS#8 key (`BEGIN PRIVATE KEY`)"),
            ),
            (
                "signed under a root that is no longer an anchor",
                Some(stored(&under_b)),
                &want[..],
                &issuer_a,
                &only_a,
                L,
                now,
                Verdict::Renew(Renewal::NotAnchored),
            ),
            (
                "an intermediate left out of tls.crt",
                Some(Stored { tls_crt: Some(leaf_only.as_bytes()), ..stored(&under_int) }),
                &want[..],
                &issuer_int,
                &only_a,
                L,
                now,
                Verdict::Renew(Renewal::NotAnchored),
            ),
            (
                "another issuer under a current anchor",
                Some(stored(&under_b)),
                &want[..],
                &issuer_a,
                &a_and_b,
                L,
                now,
                Verdict::Renew(Renewal::IssuerChanged),
            ),
            (
                "the issuer became an intermediate of the same root",
                Some(stored(&good)),
                &want[..],
                &issuer_int,
                &only_a,
                L,
                now,
                Verdict::Renew(Renewal::IssuerChanged),
            ),
            ("leaf and intermediate", Some(stored(&under_int)), &want[..], &issuer_int, &only_a, L, now, keep(&under_int, Some(renew_at))),
            (
                "a SAN was added",
                Some(stored(&few)),
                &want[..],
                &issuer_a,
                &only_a,
                L,
                now,
                Verdict::Renew(Renewal::SansChanged {
                    have: "DNS:weft-injector.weft-system.svc, DNS:weft-injector.weft-system.svc.cluster.local".into(),
                    want: "DNS:weft-injector.weft-system.svc, DNS:weft-injector.weft-system.svc.cluster.local, IP:127.0.0.1"
                        .into(),
                }),
            ),
            (
                "a SAN was removed",
                Some(stored(&good)),
                &fewer[..],
                &issuer_a,
                &only_a,
                L,
                now,
                Verdict::Renew(Renewal::SansChanged {
                    have: "DNS:weft-injector.weft-system.svc, DNS:weft-injector.weft-system.svc.cluster.local, IP:127.0.0.1"
                        .into(),
                    want: "DNS:weft-injector.weft-system.svc, DNS:weft-injector.weft-system.svc.cluster.local".into(),
                }),
            ),
            (
                "a root was added to the anchors",
                Some(stored(&good)),
                &want[..],
                &issuer_a,
                &a_and_b,
                L,
                now,
                Verdict::Renew(Renewal::AnchorsChanged),
            ),
            (
                "no ca.crt",
                Some(Stored { ca_crt: None, ..stored(&good) }),
                &want[..],
                &issuer_a,
                &only_a,
                L,
                now,
                Verdict::Renew(Renewal::AnchorsChanged),
            ),
            (
                "ca.crt unreadable",
                Some(Stored { ca_crt: Some(ca_junk.as_bytes()), ..stored(&good) }),
                &want[..],
                &issuer_a,
                &only_a,
                L,
                now,
                Verdict::Renew(Renewal::AnchorsChanged),
            ),
            (
                "ca.crt is another root",
                Some(Stored { ca_crt: Some(b_pem.as_bytes()), ..stored(&good) }),
                &want[..],
                &issuer_a,
                &only_a,
                L,
                now,
                Verdict::Renew(Renewal::AnchorsChanged),
            ),
        ];
        for (what, stored, want, issuer, anchors, lifetime, at, verdict) in rows {
            assert_eq!(judge(stored.as_ref(), want, issuer, anchors, lifetime, at), verdict, "{what}");
        }
    }

    #[test]
    fn what_is_issued() {
        let now = SystemTime::now();
        let root = ca("root", None, Duration::from_secs(86400), now);
        let int = ca("int", Some(&root), Duration::from_secs(86400), now);
        let iss = issuer(&int, &[&root], now);
        let anchors = anchors(&[&root]);
        let want = sans(&["weft-injector.weft-system.svc", "::1", "127.0.0.1"]);
        let f = issue(&iss, &anchors, &want, L, now).expect("issue");
        let chain = pki::pem_certs(f.tls_crt.as_bytes()).expect("chain");
        assert_eq!(chain.len(), 2, "leaf, then the intermediate");
        assert_eq!(chain[1], iss.certs()[0]);
        assert!(pki::chains_to(&chain, &anchors.certs));
        let (got, not_after, serial) = leaf_facts(&chain[0]).expect("leaf");
        assert_eq!(got, want);
        assert_eq!(not_after, f.not_after);
        assert_eq!((serial.len(), serial.clone()), (32, f.serial.clone()), "16 random bytes");
        assert_eq!(not_after, pki::truncate_to_second(now) + L);
        assert!(f.tls_key.starts_with("-----BEGIN PRIVATE KEY-----"), "PKCS#8");
        assert_eq!(pki::pem_certs(f.ca_crt.as_bytes()).expect("ca.crt"), anchors.certs);
        let again = issue(&iss, &anchors, &want, L, now).expect("issue");
        assert_ne!(again.serial, f.serial, "a new serial each time");
        assert_ne!(again.tls_key, f.tls_key, "a new key each time");
    }

    #[test]
    fn ca_bundles() {
        let now = SystemTime::now();
        let a = ca("a", None, Duration::from_secs(86400), now);
        let b = ca("b", None, Duration::from_secs(86400), now);
        let ab = anchors(&[&a, &b]);
        // The same certificates with CRLF line ends still match.
        let crlf = ca_bundle(&ab).replace('\n', "\r\n");
        let rows: Vec<(&str, String, bool)> = vec![
            ("ours", ca_bundle(&ab), true),
            ("CRLF", crlf, true),
            ("empty", String::new(), false),
            ("one of two", a.pem.clone(), false),
            ("reversed", format!("{}{}", b.pem, a.pem), false),
            ("junk", "junk".into(), false),
        ];
        for (what, bundle, want) in rows {
            assert_eq!(bundle_matches(bundle.as_bytes(), &ab), want, "{what}");
        }
    }
}
