//! Real TLS handshakes on loopback sockets between configurations built
//! from certificates of a throwaway CA.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256};
use rustls::client::Resumption;
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::transport::connect::ConnectError;
use crate::transport::tls::{self, Hello, TlsTarget};

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn ca() -> Ca {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let cert = params.self_signed(&key).expect("ca");
    Ca { cert, key }
}

/// Signs a leaf for `id` from a CSR, as the control plane does.
fn issue(ca: &Ca, id: &str) -> Credentials {
    issue_valid(ca, id, None)
}

/// Like [`issue`], with the validity period given (`Some((from, to))`).
fn issue_valid(ca: &Ca, id: &str, validity: Option<(time::OffsetDateTime, time::OffsetDateTime)>) -> Credentials {
    let (key, csr) = key_and_csr(id).expect("csr");
    let mut req = rcgen::CertificateSigningRequestParams::from_der(&csr.into()).expect("parse csr");
    req.params.extended_key_usages =
        vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    if let Some((from, to)) = validity {
        req.params.not_before = from;
        req.params.not_after = to;
    }
    let issuer = rcgen::Issuer::from_ca_cert_der(ca.cert.der(), &ca.key).expect("issuer");
    let cert = req.signed_by(&issuer).expect("sign");
    Credentials {
        chain: vec![cert.der().clone()],
        key: PrivatePkcs8KeyDer::from(key.serialize_der()),
        not_after: SystemTime::now() + Duration::from_secs(3600),
    }
}

fn configs(ca: &Ca, id: &str) -> TlsConfigs {
    configs_from(ca, issue(ca, id))
}

fn configs_from(ca: &Ca, credentials: Credentials) -> TlsConfigs {
    let bundle = TrustBundle { version: 1, anchors: vec![CertificateDer::from(ca.cert.der().to_vec())] };
    build_configs(&credentials, &bundle, Arc::new(Resumption::in_memory_sessions(16))).expect("configs")
}

const A: &str = "spiffe://cluster.local/ns/default/sa/a";
const B: &str = "spiffe://cluster.local/ns/default/sa/b";

/// Serves one TLS connection on loopback; returns what the server saw.
async fn server(
    config: Arc<rustls::ServerConfig>,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<std::io::Result<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let mut prefix = vec![0u8; 4096];
        // Peek the hello the way inbound detection does.
        let n = tcp.peek(&mut prefix).await?;
        assert!(matches!(tls::inspect(&prefix[..n]), Hello::Mesh(_) | Hello::Incomplete));
        let (mut stream, peer) = tls::accept(tcp, config).await?;
        let mut buf = [0u8; 5];
        stream.read_exact(&mut buf).await?;
        stream.write_all(b"world").await?;
        stream.shutdown().await?;
        Ok(format!("{} said {}", peer.id(), String::from_utf8_lossy(&buf)))
    });
    (addr, task)
}

#[tokio::test]
async fn mutual_tls_between_mesh_identities() {
    let ca = ca();
    let (a, b) = (configs(&ca, A), configs(&ca, B));
    let (addr, task) = server(b.server.clone()).await;
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let target = TlsTarget { config: a.client_http.clone(), expected: SpiffeId::parse(B).expect("id") };
    let mut stream = tls::connect(tcp, addr, &target).await.expect("handshake");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(ALPN_HTTP));
    assert_eq!(stream.get_ref().1.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
    stream.write_all(b"hello").await.expect("write");
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await.expect("read");
    assert_eq!(reply, "world");
    assert_eq!(task.await.expect("join").expect("server"), format!("{A} said hello"));
}

#[tokio::test]
async fn the_server_must_prove_the_expected_identity() {
    let ca = ca();
    let (a, b) = (configs(&ca, A), configs(&ca, B));
    let (addr, _task) = server(b.server.clone()).await;
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let target = TlsTarget { config: a.client_http.clone(), expected: SpiffeId::parse(A).expect("id") };
    let err = tls::connect(tcp, addr, &target).await.expect_err("wrong identity");
    assert!(matches!(err, ConnectError::IdentityMismatch { ref got, .. } if got == B), "{err}");
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused_both_ways() {
    let (ca1, ca2) = (ca(), ca());
    let (a, b_foreign) = (configs(&ca1, A), configs(&ca2, B));
    // Client from CA 1 to a server from CA 2: the client refuses.
    let (addr, _task) = server(b_foreign.server.clone()).await;
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let target = TlsTarget { config: a.client_http.clone(), expected: SpiffeId::parse(B).expect("id") };
    assert!(matches!(tls::connect(tcp, addr, &target).await, Err(ConnectError::Tls { .. })));
    // Client from CA 2 to a server from CA 1: the server refuses.
    let b = configs(&ca1, B);
    let (addr, task) = server(b.server.clone()).await;
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let target = TlsTarget { config: b_foreign.client_http.clone(), expected: SpiffeId::parse(B).expect("id") };
    let _ = tls::connect(tcp, addr, &target).await;
    assert!(task.await.expect("join").is_err(), "the server accepted a foreign client");
}

#[tokio::test]
async fn an_expired_peer_certificate_is_refused_both_ways() {
    let ca = ca();
    let now = time::OffsetDateTime::now_utc();
    let past = Some((now - time::Duration::hours(2), now - time::Duration::hours(1)));
    let (a, b) = (configs(&ca, A), configs(&ca, B));
    let (a_expired, b_expired) =
        (configs_from(&ca, issue_valid(&ca, A, past)), configs_from(&ca, issue_valid(&ca, B, past)));

    // A server presenting an expired certificate: the client refuses.
    let (addr, _task) = server(b_expired.server.clone()).await;
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let target = TlsTarget { config: a.client_http.clone(), expected: SpiffeId::parse(B).expect("id") };
    let err = tls::connect(tcp, addr, &target).await.expect_err("expired server certificate");
    assert!(format!("{err}").contains("xpired"), "{err}");

    // A client presenting an expired certificate: the server refuses.
    let (addr, task) = server(b.server.clone()).await;
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let target = TlsTarget { config: a_expired.client_http.clone(), expected: SpiffeId::parse(B).expect("id") };
    let _ = tls::connect(tcp, addr, &target).await;
    let err = task.await.expect("join").expect_err("the server accepted an expired client certificate");
    assert!(err.to_string().contains("xpired"), "{err}");
}

#[test]
fn client_hello_inspection() {
    assert_eq!(tls::inspect(b"GET / HTTP/1.1\r\n"), Hello::NotTls);
    assert_eq!(tls::inspect(&[0x16, 0x03]), Hello::NotTls);
    assert_eq!(tls::inspect(&[0x16, 0x03, 0x01, 0x00, 0x50, 0x01]), Hello::Incomplete);
    // A complete record holding a ServerHello: not a client, not ours.
    assert_eq!(tls::inspect(&[0x16, 0x03, 0x01, 0x00, 0x04, 0x02, 0x00, 0x00, 0x00]), Hello::Foreign);
}

#[test]
fn renewal_is_scheduled_at_most_70_percent_into_the_lifetime() {
    let life = Duration::from_secs(100);
    assert_eq!(renew_after(life, 0.0), Duration::from_secs(70));
    assert_eq!(renew_after(life, 1.0), Duration::from_secs(60));
}

/// One handshake driven in memory; returns how the client saw it.
fn handshake_kind(client: Arc<rustls::ClientConfig>, server: Arc<rustls::ServerConfig>) -> rustls::HandshakeKind {
    let name = rustls::pki_types::ServerName::try_from("mesh.weft").expect("name");
    let mut c = rustls::ClientConnection::new(client, name).expect("client");
    let mut s = rustls::ServerConnection::new(server).expect("server");
    fn pump(
        from: &mut impl std::ops::DerefMut<Target = rustls::ConnectionCommon<impl Sized>>,
        to: &mut impl std::ops::DerefMut<Target = rustls::ConnectionCommon<impl Sized>>,
    ) {
        let mut buf = Vec::new();
        while from.wants_write() {
            from.write_tls(&mut buf).expect("write_tls");
        }
        let mut rest = &buf[..];
        while !rest.is_empty() {
            to.read_tls(&mut rest).expect("read_tls");
            to.process_new_packets().expect("handshake");
        }
    }
    // Bounded: a TLS 1.3 handshake plus its tickets takes 3 flights.
    for _ in 0..10 {
        pump(&mut c, &mut s);
        pump(&mut s, &mut c);
        if !c.is_handshaking() && !s.is_handshaking() && !c.wants_write() && !s.wants_write() {
            break;
        }
    }
    assert!(!c.is_handshaking(), "the handshake did not finish");
    c.handshake_kind().expect("handshake kind")
}

#[test]
fn inbound_resumption_survives_a_certificate_renewal() {
    let ca = ca();
    let bundle = || TrustBundle { version: 1, anchors: vec![CertificateDer::from(ca.cert.der().to_vec())] };
    let client = configs(&ca, A).client_http;

    // The proxy's handle: the ticket keys outlive the server configuration.
    let server = IdentityHandle::new(SpiffeId::parse(B).expect("id"));
    server.set_bundle(bundle()).expect("bundle");
    server.set_credentials(issue(&ca, B)).expect("credentials");
    let first = server.configs().expect("configs").server.clone();
    assert_eq!(handshake_kind(client.clone(), first.clone()), rustls::HandshakeKind::Full);
    assert_eq!(handshake_kind(client.clone(), first), rustls::HandshakeKind::Resumed);
    server.set_credentials(issue(&ca, B)).expect("renewal");
    let renewed = server.configs().expect("configs").server.clone();
    assert_eq!(
        handshake_kind(client.clone(), renewed),
        rustls::HandshakeKind::Resumed,
        "a renewal cost every client a full handshake"
    );

    // Without shared ticket keys a new configuration forgets the sessions.
    let plain =
        |id| build_configs(&issue(&ca, id), &bundle(), Arc::new(Resumption::in_memory_sessions(16))).expect("configs");
    let client = plain(A).client_http;
    let (s1, s2) = (plain(B).server, plain(B).server);
    assert_eq!(handshake_kind(client.clone(), s1.clone()), rustls::HandshakeKind::Full);
    assert_eq!(handshake_kind(client.clone(), s1), rustls::HandshakeKind::Resumed);
    assert_eq!(handshake_kind(client, s2), rustls::HandshakeKind::Full);
}

/// An HTTP/1 server on loopback answering 200 to everything, over mesh TLS
/// as `server` when given, else in plaintext.
async fn http_server(server: Option<Arc<rustls::ServerConfig>>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let server = server.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(
                        hyper::Response::new(http_body_util::Empty::<bytes::Bytes>::new()),
                    )
                });
                let http = hyper::server::conn::http1::Builder::new();
                let _ = match server {
                    Some(config) => match tls::accept(tcp, config).await {
                        Ok((stream, _)) => http.serve_connection(hyper_util::rt::TokioIo::new(stream), svc).await,
                        Err(_) => return,
                    },
                    None => http.serve_connection(hyper_util::rt::TokioIo::new(tcp), svc).await,
                };
            });
        }
    });
    addr
}

/// Sends one GET through `pool` and reads the response whole (so that the
/// connection goes back to the pool); the status, or the error.
async fn get(
    pool: &crate::http::client::Pool,
    addr: std::net::SocketAddr,
    tls: Option<TlsTarget>,
) -> Result<u16, crate::http::respond::ProxyError> {
    use http_body_util::BodyExt as _;
    let req = hyper::Request::get("/").body(crate::http::RequestBody::buffered(bytes::Bytes::new())).expect("req");
    let rsp = pool.send(addr, crate::http::Version::Http1, req, tls).await?;
    let status = rsp.status().as_u16();
    rsp.into_body().collect().await.expect("body");
    Ok(status)
}

/// Waits (bounded) until `pool` holds an idle connection to `addr`.
async fn pooled(pool: &crate::http::client::Pool, addr: std::net::SocketAddr) {
    for _ in 0..200 {
        if pool.idle_h1(addr) > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("the connection to {addr} never went back to the pool");
}

#[tokio::test]
async fn a_pooled_plaintext_connection_is_not_reused_for_a_request_that_must_be_mtls() {
    let ca = ca();
    let a = configs(&ca, A);
    let pool = crate::http::client::Pool::new(Duration::from_secs(1), Duration::from_secs(30));
    // A plaintext server: what a meshed address looked like before discovery answered.
    let addr = http_server(None).await;
    assert_eq!(get(&pool, addr, None).await.expect("plaintext request"), 200);
    pooled(&pool, addr).await;
    // Now the request must be mTLS to sa/b there: never the plaintext connection.
    let target = TlsTarget { config: a.client_http.clone(), expected: SpiffeId::parse(B).expect("id") };
    let err = get(&pool, addr, Some(target)).await.expect_err("a plaintext server cannot complete mTLS");
    assert!(matches!(err, crate::http::respond::ProxyError::Connect(_)), "{err}");
}

#[tokio::test]
async fn a_connection_verified_as_one_identity_is_not_reused_for_another() {
    let ca = ca();
    let (a, b) = (configs(&ca, A), configs(&ca, B));
    let pool = crate::http::client::Pool::new(Duration::from_secs(1), Duration::from_secs(30));
    let addr = http_server(Some(b.server.clone())).await;
    let as_b = TlsTarget { config: a.client_http.clone(), expected: SpiffeId::parse(B).expect("id") };
    assert_eq!(get(&pool, addr, Some(as_b.clone())).await.expect("request to sa/b"), 200);
    pooled(&pool, addr).await;
    // Discovery now says sa/c serves this address: the sa/b connection must not carry it.
    let c = "spiffe://cluster.local/ns/default/sa/c";
    let as_c = TlsTarget { config: a.client_http.clone(), expected: SpiffeId::parse(c).expect("id") };
    let err = get(&pool, addr, Some(as_c)).await.expect_err("the server is sa/b, not sa/c");
    assert!(matches!(err, crate::http::respond::ProxyError::Connect(ConnectError::IdentityMismatch { .. })), "{err}");
    // The sa/b connection is still there for sa/b.
    assert_eq!(get(&pool, addr, Some(as_b)).await.expect("sa/b again"), 200);
}
