//! The CA as a whole: Certify's decisions (table), what it signs (checked
//! with rustls-webpki, the verifier rustls uses), intermediates, and the
//! reloads that roll a root.

use std::path::Path;
use std::time::{Duration, SystemTime};

use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose, SanType};
use rustls::pki_types::{CertificateDer, UnixTime};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::files::CaFiles;
use super::tokens::{TokenEntry, render_tokens_file};
use super::*;
use crate::index::{Index, MeshConfig};
use crate::metrics::Metrics;
use crate::source::{Diagnostics, Sink};

const TD: &str = "cluster.local";
const WEB: &str = "spiffe://cluster.local/ns/default/sa/web";
const LIFETIME: Duration = Duration::from_secs(10);

fn csr(key: &KeyPair, sans: &[&str]) -> Vec<u8> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = sans
        .iter()
        .map(|s| match s.strip_prefix("dns:") {
            Some(d) => SanType::DnsName((*d).try_into().expect("dns")),
            None => SanType::URI((*s).try_into().expect("uri")),
        })
        .collect();
    params.serialize_request(key).expect("csr").der().to_vec()
}

fn p256() -> KeyPair {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key")
}

fn write(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

fn tokens_file(path: &Path, tokens: &[(&str, &str, SystemTime)]) {
    let entries: Vec<TokenEntry> =
        tokens.iter().map(|(t, sa, exp)| TokenEntry::new(t, "default", sa, &format!("{sa}-0"), *exp)).collect();
    write(path, &render_tokens_file(&entries));
}

fn settings(dir: &Path) -> CaSettings {
    CaSettings {
        trust_domain: TD.into(),
        issuer: IssuerSource::StateDir(dir.join("state")),
        trust_anchors: None,
        tokens: Some(dir.join("tokens.yaml")),
        state_dir: Some(dir.join("state")),
        lifetime: LIFETIME,
    }
}

/// Verifies `chain` (leaf first) under `anchors` at `now` as rustls would,
/// for both client and server use, and returns the leaf's URI SANs.
fn verify(chain: &[CertificateDer<'static>], anchors: &[CertificateDer<'static>], now: SystemTime) -> Vec<String> {
    let anchors: Vec<_> =
        anchors.iter().map(|a| webpki::anchor_from_trusted_cert(a).expect("anchor").to_owned()).collect();
    let leaf = webpki::EndEntityCert::try_from(&chain[0]).expect("leaf parses");
    let time = UnixTime::since_unix_epoch(now.duration_since(SystemTime::UNIX_EPOCH).expect("after 1970"));
    for usage in [webpki::KeyUsage::client_auth(), webpki::KeyUsage::server_auth()] {
        leaf.verify_for_usage(webpki::ALL_VERIFICATION_ALGS, &anchors, &chain[1..], time, usage, None, None)
            .expect("the chain verifies");
    }
    uris(&chain[0])
}

fn uris(der: &[u8]) -> Vec<String> {
    let (_, cert) = X509Certificate::from_der(der).expect("x509");
    let san = cert.subject_alternative_name().expect("san").expect("has san");
    assert!(san.critical, "an empty subject makes the SAN critical");
    san.value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::URI(u) => (*u).to_owned(),
            other => format!("{other:?}"),
        })
        .collect()
}

#[tokio::test]
async fn certify_decides_signs_and_renews() {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = SystemTime::now();
    let soon = now + Duration::from_secs(3600);
    tokens_file(
        &dir.path().join("tokens.yaml"),
        &[
            ("tok-web", "web", soon),
            ("tok-web-2", "web", soon),
            ("tok-api", "api", soon),
            ("tok-old", "web", now - Duration::from_secs(1)),
        ],
    );
    let metrics = Arc::new(Metrics::default());
    let ca = Ca::open(settings(dir.path()), metrics.clone(), now).expect("CA opens");
    assert_eq!(ca.anchors().certs, ca.issuer().certs(), "a self-signed issuer is its own anchor");
    let key = p256();
    let good = csr(&key, &[WEB]);

    // Refusals, in order. None consumes `tok-web`: the identity and CSR
    // are checked before the token. A valid token presented for another
    // identity (`tok-api`) is spent, like any token that was looked up.
    let cases: Vec<(&str, &str, Vec<u8>, &str, Reason, &str)> = vec![
        ("not a SPIFFE ID", "web", good.clone(), "tok-web", Reason::IdentityInvalid, "not a workload identity"),
        (
            "another trust domain",
            "spiffe://evil.example/ns/default/sa/web",
            csr(&key, &["spiffe://evil.example/ns/default/sa/web"]),
            "tok-web",
            Reason::IdentityMismatch,
            "not in this mesh's trust domain",
        ),
        (
            "a CSR for another identity",
            WEB,
            csr(&key, &["spiffe://cluster.local/ns/default/sa/admin"]),
            "tok-web",
            Reason::IdentityMismatch,
            "asks for `spiffe://cluster.local/ns/default/sa/admin`",
        ),
        ("extra SANs", WEB, csr(&key, &[WEB, "dns:web.default.svc"]), "tok-web", Reason::CsrSans, "exactly one SAN"),
        ("garbage CSR", WEB, b"junk".to_vec(), "tok-web", Reason::CsrInvalid, "not a DER PKCS#10"),
        ("no token", WEB, good.clone(), "", Reason::TokenMissing, "a token is required"),
        ("unknown token", WEB, good.clone(), "guess", Reason::TokenUnknown, "unknown token"),
        ("expired token", WEB, good.clone(), "tok-old", Reason::TokenExpired, "expired at"),
        (
            "another workload's token",
            WEB,
            good.clone(),
            "tok-api",
            Reason::IdentityMismatch,
            "the token proves `spiffe://cluster.local/ns/default/sa/api`, not",
        ),
    ];
    for (name, identity, csr_der, token, reason, msg) in &cases {
        let e = ca.certify(identity, csr_der, token, now).await.expect_err(name);
        assert_eq!(e.reason(), *reason, "{name}: {e}");
        assert!(e.to_string().contains(msg), "{name}: `{e}` lacks `{msg}`");
        assert!(!e.to_string().contains("tok-"), "{name}: a token in `{e}`");
    }
    assert_eq!(metrics.certify_refusals(Reason::IdentityMismatch), 3);
    assert_eq!(metrics.certificates_issued(), 0);

    // The bootstrap token gets a certificate...
    let issued = ca.certify(WEB, &good, "tok-web", now).await.expect("issued");
    assert_eq!(issued.chain.len(), 1, "a root issuer: the leaf alone");
    assert_eq!(verify(&issued.chain, &issued.anchors.certs, now), [WEB]);
    assert_eq!(issued.not_after, pki::truncate_to_second(now) + LIFETIME);
    let (_, leaf) = X509Certificate::from_der(&issued.chain[0]).expect("x509");
    assert!(!leaf.is_ca());
    assert_eq!(leaf.issuer().to_string(), ca.issuer().info().subject);
    assert_eq!(
        leaf.validity().not_before.timestamp(),
        pki::unix_seconds(pki::truncate_to_second(now) - issuer::CLOCK_SKEW),
        "backdated a minute for clock skew"
    );
    assert!(leaf.key_usage().expect("ku").expect("present").value.digital_signature());
    assert_eq!(leaf.public_key().subject_public_key.data.as_ref(), key.public_key_raw(), "the CSR's key");
    // ...once.
    let e = ca.certify(WEB, &good, "tok-web", now).await.expect_err("reused");
    assert_eq!(e.reason(), Reason::TokenReused);

    // The renewal token renews, once, for the same identity only.
    let renewal = issued.renewal_token.clone();
    let api_key = p256();
    let e = ca
        .certify(
            "spiffe://cluster.local/ns/default/sa/api",
            &csr(&api_key, &["spiffe://cluster.local/ns/default/sa/api"]),
            &renewal,
            now,
        )
        .await
        .expect_err("bound to web");
    assert_eq!(e.reason(), Reason::IdentityMismatch);
    let e = ca.certify(WEB, &good, &renewal, now).await.expect_err("consumed by the refused attempt");
    assert_eq!(e.reason(), Reason::TokenReused);
    let issued = ca.certify(WEB, &good, "tok-web-2", now).await.expect("issued");
    let later = now + Duration::from_secs(7);
    let renewed = ca.certify(WEB, &csr(&key, &[WEB]), &issued.renewal_token, later).await.expect("renewed");
    assert_eq!(verify(&renewed.chain, &renewed.anchors.certs, later), [WEB]);
    assert_ne!(renewed.renewal_token, issued.renewal_token);
    assert_ne!(renewed.chain[0], issued.chain[0], "a fresh serial");
    // A renewal token outlives its certificate by half a lifetime.
    let late = renewed.not_after + LIFETIME / 2 - Duration::from_secs(1);
    ca.certify(WEB, &good, &renewed.renewal_token, late).await.expect("a late renewal still works");
    assert_eq!(metrics.certificates_issued(), 4);

    let state = ca.state_json(now);
    assert_eq!(state["tokens"]["bootstrap"], 4);
    assert_eq!(state["tokens"]["bootstrapUsed"], 3, "tok-api was spent on the wrong identity");
    assert_eq!(state["trustAnchors"]["anchors"][0]["sha256"], ca.issuer().info().sha256);
    assert!(!state.to_string().contains("tok-"), "{state}");

    // A restart keeps the root and remembers used tokens.
    drop(ca);
    let ca = Ca::open(settings(dir.path()), metrics, now).expect("CA reopens");
    let e = ca.certify(WEB, &good, "tok-web", now).await.expect_err("still used");
    assert_eq!(e.reason(), Reason::TokenReused);
    assert_eq!(verify(&renewed.chain, &ca.anchors().certs, later), [WEB], "same root");
}

/// A root and an intermediate under it, written as PEM files in `dir`:
/// `root.crt`, `int.crt`, `int.key`.
fn root_and_intermediate(dir: &Path, name: &str) {
    let now = SystemTime::now();
    let root_key = p256();
    let mut root = CertificateParams::default();
    root.distinguished_name = DistinguishedName::new();
    root.distinguished_name.push(DnType::CommonName, format!("{name} root"));
    root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    root.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    root.not_before = (now - Duration::from_secs(60)).into();
    root.not_after = (now + Duration::from_secs(86400)).into();
    let root_cert = root.self_signed(&root_key).expect("root");
    let int_key = p256();
    let mut int = root.clone();
    int.distinguished_name = DistinguishedName::new();
    int.distinguished_name.push(DnType::CommonName, format!("{name} intermediate"));
    int.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    int.use_authority_key_identifier_extension = true;
    let int_cert = int.signed_by(&int_key, &rcgen::Issuer::new(root, root_key)).expect("intermediate");
    write(&dir.join(format!("{name}-root.crt")), &root_cert.pem());
    write(&dir.join(format!("{name}-int.crt")), &int_cert.pem());
    write(&dir.join(format!("{name}-int.key")), &int_key.serialize_pem());
}

fn files_settings(dir: &Path, name: &str, anchors: Option<&str>) -> CaSettings {
    CaSettings {
        trust_domain: TD.into(),
        issuer: IssuerSource::Files(IssuerFiles {
            cert: dir.join(format!("{name}-int.crt")),
            key: dir.join(format!("{name}-int.key")),
        }),
        trust_anchors: anchors.map(|a| dir.join(a)),
        tokens: Some(dir.join("tokens.yaml")),
        state_dir: None,
        lifetime: LIFETIME,
    }
}

#[tokio::test]
async fn an_intermediate_issuer_and_a_root_rotation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let now = SystemTime::now();
    let soon = now + Duration::from_secs(3600);
    tokens_file(&d.join("tokens.yaml"), &[("t1", "web", soon), ("t2", "web", soon), ("t3", "web", soon)]);
    root_and_intermediate(d, "old");
    root_and_intermediate(d, "new");
    let metrics = Arc::new(Metrics::default());

    let e = Ca::open(files_settings(d, "old", None), metrics.clone(), now).expect_err("intermediate alone");
    assert!(e.to_string().contains("--trust-anchors is required"), "{e}");
    let e = Ca::open(files_settings(d, "old", Some("new-root.crt")), metrics.clone(), now).expect_err("wrong root");
    assert!(e.to_string().contains("does not chain to any trust anchor"), "{e}");

    std::fs::copy(d.join("old-root.crt"), d.join("anchors.pem")).expect("copy");
    let ca = Ca::open(files_settings(d, "old", Some("anchors.pem")), metrics, now).expect("opens");
    let key = p256();
    let issued = ca.certify(WEB, &csr(&key, &[WEB]), "t1", now).await.expect("issued");
    assert_eq!(issued.chain.len(), 2, "leaf and intermediate");
    assert_eq!(issued.chain[1], ca.issuer().certs()[0]);
    assert_eq!(verify(&issued.chain, &issued.anchors.certs, now), [WEB]);

    // Rolling to the new root, through the files, as an operator would.
    let diag = Arc::new(Diagnostics::default());
    let sink = Sink::new(Index::new(MeshConfig::default()), diag.clone());
    let diagnostics = || diag.rejections().len();
    let mut files = CaFiles::new(ca.clone(), Duration::from_millis(10));
    files.poll(&sink, now);
    assert_eq!((ca.anchors().version, diagnostics()), (1, 0), "the first poll changes nothing");

    // The new issuer before its root is in the anchors: refused, retried.
    let new_issuer = |name: &str| {
        std::fs::copy(d.join(format!("{name}-int.crt")), d.join("old-int.crt")).expect("copy");
        std::fs::copy(d.join(format!("{name}-int.key")), d.join("old-int.key")).expect("copy");
    };
    new_issuer("new");
    files.poll(&sink, now);
    assert_eq!(diagnostics(), 1, "refused: it chains to no anchor");
    assert!(ca.issuer().info().subject.contains("old"));
    // Removing the old root while the old issuer is in force: refused too.
    let old_root = std::fs::read_to_string(d.join("old-root.crt")).expect("read");
    let new_root = std::fs::read_to_string(d.join("new-root.crt")).expect("read");
    // Step 1: old + new. The waiting issuer is taken in the same poll.
    let watch = ca.subscribe_anchors();
    write(&d.join("anchors.pem"), &format!("{old_root}{new_root}"));
    files.poll(&sink, now);
    assert_eq!((ca.anchors().version, ca.anchors().certs.len()), (2, 2));
    assert!(watch.has_changed().expect("open"));
    assert!(ca.issuer().info().subject.contains("new"), "{}", ca.issuer().info().subject);
    assert_eq!(diagnostics(), 0, "refusals clear once accepted");
    let renewed = ca.certify(WEB, &csr(&key, &[WEB]), &issued.renewal_token, now).await.expect("renewed");
    assert_eq!(verify(&renewed.chain, &renewed.anchors.certs, now), [WEB]);
    assert_eq!(verify(&issued.chain, &renewed.anchors.certs, now), [WEB], "old certificates still verify");

    // Step 3: new only.
    write(&d.join("anchors.pem"), &new_root);
    files.poll(&sink, now);
    assert_eq!((ca.anchors().version, ca.anchors().certs.len()), (3, 1));
    // Going back to the old root alone would strand the new issuer.
    write(&d.join("anchors.pem"), &old_root);
    files.poll(&sink, now);
    assert_eq!((ca.anchors().version, diagnostics()), (3, 1));
    let e = ca.set_anchors(Anchors::parse(old_root.as_bytes(), 0).expect("parses")).expect_err("stranded");
    assert!(e.contains("does not chain to any trust anchor"), "{e}");

    // Tokens reload; a broken tokens file keeps the previous tokens.
    tokens_file(&d.join("tokens.yaml"), &[("t4", "api", soon)]);
    files.poll(&sink, now);
    assert_eq!(ca.tokens().counts(now).bootstrap, 1);
    write(&d.join("tokens.yaml"), "tokens: [{token: oops}]\n");
    files.poll(&sink, now);
    assert_eq!(ca.tokens().counts(now).bootstrap, 1);
    assert_eq!(diagnostics(), 2, "anchors and tokens refused");
    let messages: Vec<String> = diag.rejections().into_values().map(|r| r.error).collect();
    assert!(
        messages.iter().any(|m| m.contains("tokens.yaml:1:") && m.contains("unknown field `token`")),
        "{messages:?}"
    );
}

#[test]
fn spiffe_ids() {
    let id: SpiffeId = WEB.parse().expect("valid");
    assert_eq!((id.trust_domain(), id.namespace(), id.service_account()), (TD, "default", "web"));
    assert_eq!(id.to_string(), WEB);
    assert_eq!(
        "spiffe://td/ns/a.b/sa/c_d-1".parse::<SpiffeId>().map(|i| i.to_string()).as_deref(),
        Ok("spiffe://td/ns/a.b/sa/c_d-1")
    );
    for bad in [
        "",
        "web",
        "https://cluster.local/ns/default/sa/web",
        "spiffe://Cluster.local/ns/default/sa/web",
        "spiffe:///ns/default/sa/web",
        "spiffe://cluster.local/ns/default/sa/web/",
        "spiffe://cluster.local/ns/default/sa/",
        "spiffe://cluster.local/ns/default/sa/web?x=1",
        "spiffe://cluster.local/ns/../sa/web",
        "spiffe://cluster.local:8443/ns/default/sa/web",
        "spiffe://cluster.local/sa/web/ns/default",
        "spiffe://cluster.local/ns/default/sa/web/extra/x",
    ] {
        assert!(bad.parse::<SpiffeId>().is_err(), "{bad}");
    }
}

#[tokio::test]
async fn the_serving_certificate_names_the_control_plane() {
    let dir = tempfile::tempdir().expect("tempdir");
    tokens_file(&dir.path().join("tokens.yaml"), &[]);
    let ca = Ca::open(settings(dir.path()), Arc::new(Metrics::default()), SystemTime::now()).expect("opens");
    let serving =
        serving::ServingCert::new(ca.clone(), "10.0.0.7".parse().expect("ip"), "weft-system").expect("issued");
    let chain: Vec<CertificateDer<'static>> = serving.chain().into_iter().map(CertificateDer::from).collect();
    verify(&chain, &ca.anchors().certs, SystemTime::now());
    let leaf = webpki::EndEntityCert::try_from(&chain[0]).expect("leaf");
    for name in [serving::SERVER_NAME, "10.0.0.7"] {
        let name = rustls::pki_types::ServerName::try_from(name).expect("name");
        leaf.verify_is_valid_for_subject_name(&name).expect("valid for the name proxies use");
    }
    let other = rustls::pki_types::ServerName::try_from("weft-control.default.svc").expect("name");
    assert!(leaf.verify_is_valid_for_subject_name(&other).is_err());
    let all = uris(&chain[0]);
    assert!(all.contains(&"spiffe://cluster.local/ns/weft-system/sa/weft-control".to_owned()), "{all:?}");
    // 0.0.0.0 names no one and is left out.
    let serving = serving::ServingCert::new(ca.clone(), "0.0.0.0".parse().expect("ip"), "weft-system").expect("issued");
    let all = uris(&serving.chain()[0]);
    assert_eq!(all.len(), 2, "{all:?}");

    // Installed in another namespace, the control plane is named after it
    // (the chart gives proxies `weft-control.NAMESPACE.svc`).
    let serving = serving::ServingCert::new(ca, "0.0.0.0".parse().expect("ip"), "mesh").expect("issued");
    let chain: Vec<CertificateDer<'static>> = serving.chain().into_iter().map(CertificateDer::from).collect();
    let leaf = webpki::EndEntityCert::try_from(&chain[0]).expect("leaf");
    let mesh = rustls::pki_types::ServerName::try_from("weft-control.mesh.svc").expect("name");
    leaf.verify_is_valid_for_subject_name(&mesh).expect("valid for its own namespace's name");
    let default = rustls::pki_types::ServerName::try_from(serving::SERVER_NAME).expect("name");
    assert!(leaf.verify_is_valid_for_subject_name(&default).is_err(), "not for weft-system's");
    assert!(uris(&chain[0]).contains(&"spiffe://cluster.local/ns/mesh/sa/weft-control".to_owned()));
}

#[tokio::test]
async fn with_issuer_files_a_restart_keeps_the_renewal_tokens_in_the_state_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let now = SystemTime::now();
    tokens_file(&d.join("tokens.yaml"), &[("t1", "web", now + Duration::from_secs(3600))]);
    root_and_intermediate(d, "old");
    // A state directory that does not exist yet: issuer files do not create it.
    let state = d.join("state");
    let settings = || CaSettings { state_dir: Some(state.clone()), ..files_settings(d, "old", Some("old-root.crt")) };
    let ca = Ca::open(settings(), Arc::new(Metrics::default()), now).expect("opens");
    let key = p256();
    let issued = ca.certify(WEB, &csr(&key, &[WEB]), "t1", now).await.expect("issued");
    drop(ca);

    let restarted = Ca::open(settings(), Arc::new(Metrics::default()), now).expect("reopens");
    let renewed = restarted.certify(WEB, &csr(&key, &[WEB]), &issued.renewal_token, now).await;
    assert!(renewed.is_ok(), "the renewal token was forgotten across the restart: {renewed:?}");
    let e = restarted.certify(WEB, &csr(&key, &[WEB]), "t1", now).await.expect_err("bootstrap token reused");
    assert!(e.to_string().contains("already used"), "{e}");
}

/// A verifier that knows one token per answer, and counts what it is asked.
#[derive(Debug)]
struct Scripted {
    answers: Vec<(&'static str, Result<Proof, TokenError>)>,
    asked: std::sync::Mutex<Vec<String>>,
}

#[tonic::async_trait]
impl TokenVerifier for Scripted {
    async fn verify(&self, token: &str, _now: SystemTime) -> Result<Proof, TokenError> {
        self.asked.lock().expect("lock").push(token.to_owned());
        self.answers.iter().find(|(t, _)| *t == token).map_or(Err(TokenError::Unknown("token")), |(_, a)| a.clone())
    }
}

/// Verifiers added with `with_verifier` are asked, in order, only for the
/// tokens no one before them knows; their proofs and refusals are the CA's.
#[tokio::test]
async fn added_verifiers_answer_for_tokens_the_ca_does_not_know() {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = SystemTime::now();
    tokens_file(&dir.path().join("tokens.yaml"), &[("tok-web", "web", now + Duration::from_secs(60))]);
    let metrics = Arc::new(Metrics::default());
    let sa = |ns: &str, name: &str| Proof {
        identity: SpiffeId::new(TD, ns, name),
        kind: TokenKind::ServiceAccount { pod: format!("{ns}/{name}-0") },
    };
    let first = Arc::new(Scripted {
        answers: vec![
            ("jwt-web", Ok(sa("default", "web"))),
            ("jwt-down", Err(TokenError::ReviewFailed("connection refused".into()))),
            ("jwt-expired", Err(TokenError::NotAuthenticated("token has expired".into()))),
        ],
        asked: Default::default(),
    });
    let second = Arc::new(Scripted { answers: vec![("jwt-api", Ok(sa("default", "api")))], asked: Default::default() });
    let ca = Ca::open(settings(dir.path()), metrics.clone(), now)
        .expect("CA opens")
        .with_verifier(first.clone())
        .with_verifier(second.clone());
    let good = csr(&p256(), &[WEB]);

    let issued = ca.certify(WEB, &good, "jwt-web", now).await.expect("the first verifier proves web");
    assert_eq!(issued.proven_by, TokenKind::ServiceAccount { pod: "default/web-0".into() });
    let e = ca.certify(WEB, &good, "jwt-api", now).await.expect_err("the second proves api, not web");
    assert_eq!(e.reason(), Reason::IdentityMismatch, "{e}");
    let e = ca.certify(WEB, &good, "jwt-down", now).await.expect_err("unreachable");
    assert_eq!(e.reason(), Reason::TokenReviewFailed, "{e}");
    assert!(e.to_string().contains("could not be asked to review the token (connection refused)"), "{e}");
    let e = ca.certify(WEB, &good, "jwt-expired", now).await.expect_err("refused");
    assert_eq!(e.reason(), Reason::TokenRefused, "{e}");
    let e = ca.certify(WEB, &good, "nobody's", now).await.expect_err("unknown to all");
    assert_eq!(e.reason(), Reason::TokenUnknown, "{e}");
    // A local token never leaves the CA.
    ca.certify(WEB, &good, "tok-web", now).await.expect("bootstrap");

    let asked = |v: &Scripted| v.asked.lock().expect("lock").clone();
    assert_eq!(asked(&first), ["jwt-web", "jwt-api", "jwt-down", "jwt-expired", "nobody's"]);
    assert_eq!(asked(&second), ["jwt-api", "nobody's"]);
    assert_eq!(metrics.certify_refusals(Reason::TokenRefused), 1);
    assert_eq!(metrics.certify_refusals(Reason::TokenReviewFailed), 1);
}
