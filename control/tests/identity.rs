//! The mesh CA end to end, in-process on 127.0.0.1:0: a tonic client
//! over TLS that pins the generated root (`STATE_DIR/ca.crt`) and checks
//! the server name proxies use, a key pair and CSR made with rcgen, a
//! certificate checked with rustls-webpki, a renewal, a reused bootstrap
//! token refused, and a trust bundle pushed when the anchors file changes.

use std::path::Path;
use std::time::{Duration, SystemTime};

use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, UnixTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use weft_api::identity::identity_client::IdentityClient;
use weft_api::identity::{CertifyRequest, CertifyResponse, WatchTrustAnchorsRequest};
use weft_control::ca::issuer::Issuer;
use weft_control::ca::serving::SERVER_NAME;
use weft_control::ca::tokens::{TokenEntry, new_bootstrap_token, render_tokens_file};
use weft_control::{Config, Control};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

const DEADLINE: Duration = Duration::from_secs(10);
const WEB: &str = "spiffe://cluster.local/ns/default/sa/web";

fn write(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

async fn start(dir: &Path) -> Control {
    let config = Config {
        grpc_addr: "127.0.0.1:0".parse().expect("addr"),
        admin_addr: "127.0.0.1:0".parse().expect("addr"),
        state_dir: Some(dir.join("state")),
        tokens: Some(dir.join("tokens.yaml")),
        trust_anchors: Some(dir.join("anchors.pem")),
        cert_lifetime: Duration::from_secs(10),
        reload_interval: Duration::from_millis(20),
        ..Config::default()
    };
    weft_control::start(config).await.expect("control plane starts")
}

/// A channel as a proxy opens it: TLS, the anchors pinned, the name
/// `weft-control.weft-system.svc` verified whatever address is dialled.
async fn tls_channel(control: &Control, anchors_pem: &str) -> Channel {
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(anchors_pem)).domain_name(SERVER_NAME);
    Channel::from_shared(format!("https://{}", control.grpc_addr()))
        .expect("uri")
        .tls_config(tls)
        .expect("tls config")
        .connect()
        .await
        .expect("TLS connect")
}

fn csr(key: &KeyPair, identity: &str) -> Vec<u8> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(identity.try_into().expect("ia5"))];
    params.serialize_request(key).expect("csr").der().to_vec()
}

/// Verifies a Certify answer under its own anchors as rustls would (client
/// and server use) and returns the leaf's SAN URIs and issuer name.
fn check(rsp: &CertifyResponse, anchors: &[Vec<u8>]) -> (Vec<String>, String) {
    let anchors: Vec<CertificateDer<'static>> = anchors.iter().map(|a| CertificateDer::from(a.clone())).collect();
    let anchors: Vec<_> =
        anchors.iter().map(|a| webpki::anchor_from_trusted_cert(a).expect("anchor").to_owned()).collect();
    let chain: Vec<CertificateDer<'static>> =
        rsp.certificate_chain.iter().map(|c| CertificateDer::from(c.clone())).collect();
    let leaf = webpki::EndEntityCert::try_from(&chain[0]).expect("leaf parses");
    let now = UnixTime::now();
    for usage in [webpki::KeyUsage::client_auth(), webpki::KeyUsage::server_auth()] {
        leaf.verify_for_usage(webpki::ALL_VERIFICATION_ALGS, &anchors, &chain[1..], now, usage, None, None)
            .expect("verifies under the anchors");
    }
    let (_, cert) = X509Certificate::from_der(&chain[0]).expect("x509");
    let sans = cert.subject_alternative_name().expect("san").expect("present");
    let uris = sans
        .value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::URI(u) => (*u).to_owned(),
            other => format!("{other:?}"),
        })
        .collect();
    let valid_until = cert.validity().not_after.timestamp();
    assert_eq!(valid_until, rsp.valid_until_unix);
    (uris, cert.issuer().to_string())
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("admin connect");
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut out = String::new();
    tokio::time::timeout(DEADLINE, s.read_to_string(&mut out)).await.expect("admin answers").expect("read");
    out
}

#[tokio::test]
async fn certify_renew_refuse_and_rotate_anchors_over_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    // What `weft up` does: make the local root ahead of the control plane
    // (so proxies can pin it), mint one token per workload, write hashes.
    let (root, generated) = Issuer::local_root(&d.join("state"), "cluster.local", SystemTime::now()).expect("root");
    assert!(generated);
    let ca_pem = std::fs::read_to_string(d.join("state/ca.crt")).expect("ca.crt");
    write(&d.join("anchors.pem"), &ca_pem);
    let token = new_bootstrap_token().expect("token");
    let expires = SystemTime::now() + Duration::from_secs(600);
    write(&d.join("tokens.yaml"), &render_tokens_file(&[TokenEntry::new(&token, "default", "web", "web-0", expires)]));

    let control = start(d).await;
    let channel = tls_channel(&control, &ca_pem).await;
    let mut identity = IdentityClient::new(channel.clone());

    // Plaintext gRPC is not spoken any more.
    let plaintext = Channel::from_shared(format!("http://{}", control.grpc_addr())).expect("uri").connect().await;
    if let Ok(ch) = plaintext {
        let e = IdentityClient::new(ch).certify(CertifyRequest::default()).await.expect_err("plaintext refused");
        assert_ne!(e.code(), tonic::Code::PermissionDenied, "{e}");
    }

    // The first certificate, from the bootstrap token.
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let first = identity
        .certify(CertifyRequest { identity: WEB.into(), csr: csr(&key, WEB), token: token.clone() })
        .await
        .expect("certified")
        .into_inner();
    assert_eq!(first.trust_anchors, [root.certs()[0].to_vec()]);
    let (uris, issuer) = check(&first, &first.trust_anchors);
    assert_eq!(uris, [WEB]);
    assert_eq!(issuer, root.info().subject);
    assert_eq!(first.certificate_chain.len(), 1, "the issuer is the root");
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).expect("time").as_secs() as i64;
    assert!(
        (now + 8..=now + 10).contains(&first.valid_until_unix),
        "10s lifetime: {} vs {now}",
        first.valid_until_unix
    );

    // The bootstrap token is spent.
    let e = identity
        .certify(CertifyRequest { identity: WEB.into(), csr: csr(&key, WEB), token: token.clone() })
        .await
        .expect_err("reused");
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    assert!(e.message().contains("already used"), "{}", e.message());
    assert!(!e.message().contains(&token));

    // Extra SANs are refused as invalid, before the token is touched.
    let mut params = CertificateParams::default();
    params.subject_alt_names =
        vec![SanType::URI(WEB.try_into().expect("ia5")), SanType::DnsName("web.default.svc".try_into().expect("dns"))];
    let extra = params.serialize_request(&key).expect("csr").der().to_vec();
    let e = identity
        .certify(CertifyRequest { identity: WEB.into(), csr: extra, token: first.renewal_token.clone() })
        .await
        .expect_err("extra SAN");
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("exactly one SAN"), "{}", e.message());

    // Renewal with the renewal token, with a new key.
    let key2 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let second = identity
        .certify(CertifyRequest { identity: WEB.into(), csr: csr(&key2, WEB), token: first.renewal_token.clone() })
        .await
        .expect("renewed")
        .into_inner();
    assert_eq!(check(&second, &second.trust_anchors).0, [WEB]);
    assert_ne!(second.renewal_token, first.renewal_token);
    let e = identity
        .certify(CertifyRequest { identity: WEB.into(), csr: csr(&key2, WEB), token: first.renewal_token.clone() })
        .await
        .expect_err("renewal token reused");
    assert_eq!(e.code(), tonic::Code::PermissionDenied);

    // The trust bundle: the current one, then the rewritten file's.
    let mut bundles = identity
        .watch_trust_anchors(WatchTrustAnchorsRequest { proxy_id: "web-0.default".into() })
        .await
        .expect("watch")
        .into_inner();
    let b1 = tokio::time::timeout(DEADLINE, bundles.message()).await.expect("in time").expect("ok").expect("open");
    assert_eq!((b1.version, b1.anchors.len()), (1, 1));
    let (next_root, _) = Issuer::local_root(&d.join("next"), "cluster.local", SystemTime::now()).expect("next root");
    let next_pem = std::fs::read_to_string(d.join("next/ca.crt")).expect("next ca.crt");
    write(&d.join("anchors.pem"), &format!("{ca_pem}{next_pem}"));
    let b2 =
        tokio::time::timeout(DEADLINE, bundles.message()).await.expect("pushed in time").expect("ok").expect("open");
    assert_eq!(b2.version, 2);
    assert_eq!(b2.anchors, [root.certs()[0].to_vec(), next_root.certs()[0].to_vec()]);
    // Certify answers carry the new bundle too, and a client pinning only
    // the new root cannot reach the control plane yet (its serving
    // certificate is still from the old root).
    let token2 = new_bootstrap_token().expect("token");
    write(&d.join("tokens.yaml"), &render_tokens_file(&[TokenEntry::new(&token2, "default", "web", "web-1", expires)]));
    let third = eventually_certify(&mut identity, &key, &token2).await;
    assert_eq!(third.trust_anchors.len(), 2);

    // The admin port tells it all, without a token.
    let metrics = http_get(control.admin_addr(), "/metrics").await;
    for line in [
        "weft_control_certificates_issued_total 3",
        "weft_control_certify_refused_total{reason=\"token_reused\"} 2",
        "weft_control_certify_refused_total{reason=\"csr_sans\"} 1",
        "weft_control_streams{kind=\"trust_anchors\"} 1",
    ] {
        assert!(metrics.contains(line), "missing `{line}` in\n{metrics}");
    }
    let state = http_get(control.admin_addr(), "/state").await;
    for want in ["\"issuer\"", &root.info().sha256, &next_root.info().sha256, "\"bootstrapUsed\": 1"] {
        assert!(state.contains(want), "missing {want} in\n{state}");
    }
    assert!(!state.contains(&token) && !state.contains(&token2) && !state.contains(&second.renewal_token));

    control.shutdown().await;
}

/// Certify with a token from a tokens file just rewritten: the control
/// plane picks the file up within a poll or two.
async fn eventually_certify(identity: &mut IdentityClient<Channel>, key: &KeyPair, token: &str) -> CertifyResponse {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let r =
            identity.certify(CertifyRequest { identity: WEB.into(), csr: csr(key, WEB), token: token.into() }).await;
        match r {
            Ok(rsp) => return rsp.into_inner(),
            Err(e) if e.message().contains("unknown token") && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("certify: {e}"),
        }
    }
}

#[tokio::test]
async fn a_client_that_does_not_pin_the_mesh_root_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    Issuer::local_root(&d.join("state"), "cluster.local", SystemTime::now()).expect("root");
    write(&d.join("anchors.pem"), &std::fs::read_to_string(d.join("state/ca.crt")).expect("ca.crt"));
    write(&d.join("tokens.yaml"), "");
    let control = start(d).await;
    Issuer::local_root(&d.join("other"), "cluster.local", SystemTime::now()).expect("root");
    let other = std::fs::read_to_string(d.join("other/ca.crt")).expect("other ca.crt");
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(other)).domain_name(SERVER_NAME);
    let r = Channel::from_shared(format!("https://{}", control.grpc_addr()))
        .expect("uri")
        .tls_config(tls)
        .expect("tls config")
        .connect()
        .await;
    assert!(r.is_err(), "a root other than the mesh's must not verify the control plane");
    control.shutdown().await;
}
