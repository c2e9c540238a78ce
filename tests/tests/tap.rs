//! Tap: a real tonic client, holding a certificate the mesh CA issued for
//! the control plane's identity, observes the requests a proxy serves over
//! mTLS; other identities are refused; the match and the rate limit hold.
//!
//! ```text
//! cp: weft-control with a CA (ca.crt, ca.key in its state directory)
//! a: curl + proxy (sa/a) ══ mTLS ══► b: proxy (sa/b) ─► app
//! test ── socket made in b's (or a's) netns ── TLS 1.3 + h2, client cert
//!      spiffe://cluster.local/ns/weft-system/sa/weft-control ──► :4190 Tap/Observe
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, Issuer, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use tonic::Code;
use tonic::transport::{Channel, Endpoint};
use weft_api::tap::tap_client::TapClient;
use weft_api::tap::{Match, ObserveRequest, TapEvent, tap_event::Event};
use weft_tests::{Mesh, MeshCa, Pod, WEB_AND_STORE};

const ID_A: &str = "spiffe://cluster.local/ns/default/sa/a";
const ID_B: &str = "spiffe://cluster.local/ns/default/sa/b";
/// The proxies' default --control-plane-name is weft-control.weft-system.svc.
const CONTROL_ID: &str = "spiffe://cluster.local/ns/weft-system/sa/weft-control";
const TAP_PORT: u16 = 4190;
const DEADLINE: Duration = Duration::from_secs(10);

/// A client certificate for `identity`, signed by the mesh CA (PEM chain
/// and PKCS#8 key), as the control plane's serving certificate would be.
fn client_cert(ca: &MeshCa, identity: &str) -> (Vec<CertificateDer<'static>>, PrivatePkcs8KeyDer<'static>) {
    let read = |f: &str| {
        let path = ca.state_dir.join(f);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
    };
    let ca_key = KeyPair::from_pem(&read("ca.key")).expect("the CA key");
    let issuer = Issuer::from_ca_cert_pem(&read("ca.crt"), ca_key).expect("the CA certificate");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("parameters");
    params.subject_alt_names = vec![SanType::URI(identity.try_into().expect("a URI"))];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("a key");
    let cert = params.signed_by(&key, &issuer).expect("signing");
    (vec![cert.der().clone()], PrivatePkcs8KeyDer::from(key.serialize_der()))
}

/// Accepts the proxy's certificate (it names a SPIFFE ID, no DNS name) and
/// remembers it; what is under test is the proxy checking *our* chain.
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A TCP connection to `addr` made from inside `pod`'s network namespace
/// (a thread of our own enters it, connects, and leaves with the socket).
fn connect_in(pod: &Pod, addr: SocketAddr) -> std::io::Result<std::net::TcpStream> {
    let ns = format!("/run/netns/{}", pod.ns());
    std::thread::spawn(move || {
        let file = std::fs::File::open(&ns)?;
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
        let s = std::net::TcpStream::connect_timeout(&addr, DEADLINE)?;
        s.set_nonblocking(true)?;
        Ok(s)
    })
    .join()
    .expect("the connecting thread")
}

/// A gRPC channel to `pod`'s tap port over mTLS as `identity`.
async fn tap_channel(pod: &Pod, ca: &MeshCa, identity: &str) -> Channel {
    let (chain, key) = client_cert(ca, identity);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
        .with_client_auth_cert(chain, PrivateKeyDer::Pkcs8(key))
        .expect("client auth");
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let pod = pod.clone();
    let addr = SocketAddr::new(pod.ip().into(), TAP_PORT);
    Endpoint::from_static("http://tap.weft")
        .connect_timeout(DEADLINE)
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let (connector, pod) = (connector.clone(), pod.clone());
            async move {
                let tcp = tokio::net::TcpStream::from_std(connect_in(&pod, addr)?)?;
                let name = ServerName::try_from("tap.weft").expect("a name");
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
        .await
        .expect("connecting to the tap port")
}

/// One request's events, by kind.
#[derive(Debug, Default)]
struct Seen {
    events: Vec<TapEvent>,
}

impl Seen {
    fn request(&self) -> Option<&weft_api::tap::RequestInit> {
        self.events.iter().find_map(|e| match &e.event {
            Some(Event::Request(r)) => Some(r),
            _ => None,
        })
    }
    fn response(&self) -> Option<&weft_api::tap::ResponseInit> {
        self.events.iter().find_map(|e| match &e.event {
            Some(Event::Response(r)) => Some(r),
            _ => None,
        })
    }
    fn end(&self) -> Option<&weft_api::tap::ResponseEnd> {
        self.events.iter().find_map(|e| match &e.event {
            Some(Event::End(r)) => Some(r),
            _ => None,
        })
    }
}

/// Reads events until `done` says so, within the deadline; by request id.
async fn read_until(
    stream: &mut tonic::Streaming<TapEvent>,
    what: &str,
    mut done: impl FnMut(&BTreeMap<u64, Seen>) -> bool,
) -> BTreeMap<u64, Seen> {
    let mut seen: BTreeMap<u64, Seen> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !done(&seen) {
        match tokio::time::timeout_at(deadline, stream.message()).await {
            Ok(Ok(Some(e))) => seen.entry(e.id).or_default().events.push(e),
            Ok(other) => panic!("the tap stream ended waiting for {what}: {other:?}; seen {seen:#?}"),
            Err(_) => panic!("no {what} within {DEADLINE:?}; seen {seen:#?}"),
        }
    }
    seen
}

fn path_of(s: &Seen) -> &str {
    s.request().map_or("", |r| r.path.as_str())
}

#[test]
fn the_control_plane_taps_exactly_the_matching_requests_others_are_refused() {
    let mesh = Mesh::new();
    let cp = mesh.pod("cp").run_control_with_ca(WEB_AND_STORE, &[]);
    let (b, _apps, _proxy_b) = mesh.web_and_store_pod(&cp);
    let a = mesh.pod("a");
    let _proxy_a = a.run_meshed_proxy(&cp, "a", None, &[]);
    let ca = cp.ca.clone().expect("the CA");
    let rt = tokio::runtime::Runtime::new().expect("a runtime");

    rt.block_on(async {
        // Another mesh identity completes the handshake and is refused.
        let mut other = TapClient::new(tap_channel(&b, &ca, ID_A).await);
        let refused = other.observe(ObserveRequest::default()).await.expect_err("a workload identity may not tap");
        assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");

        let mut inbound = TapClient::new(tap_channel(&b, &ca, CONTROL_ID).await);
        let mut stream = inbound
            .observe(ObserveRequest {
                max_rps: 100,
                r#match: Some(Match { direction: "inbound".into(), path_prefix: "/t".into(), ..Default::default() }),
                extract_headers: true,
            })
            .await
            .expect("the control plane may tap")
            .into_inner();

        // Two that match, two that do not, then a last one that does: the
        // stream must hold exactly the three that match.
        let secret = "authorization: Bearer TAP-SECRET";
        for url in ["http://198.18.0.200/tap/1?q=x", "http://198.18.0.200/other", "http://198.18.0.200/x/tap"] {
            let curl = a.curl(&["-H", secret, "-H", "x-tap-test: yes", url]);
            assert_eq!(curl.status(), 200, "{}", curl.run);
        }
        let curl = a.curl(&["--http2-prior-knowledge", "http://198.18.0.200/trailers"]);
        assert_eq!(curl.status(), 200, "{}", curl.run);
        let curl = a.curl(&["http://198.18.0.200/tap/last"]);
        assert_eq!(curl.status(), 200, "{}", curl.run);
        let seen = read_until(&mut stream, "the last request's end", |s| {
            s.values().any(|r| path_of(r) == "/tap/last" && r.end().is_some())
        })
        .await;
        let paths: Vec<&str> = seen.values().map(path_of).collect();
        assert_eq!(paths, ["/tap/1?q=x", "/trailers", "/tap/last"], "{seen:#?}");
        for (id, r) in &seen {
            let kinds: Vec<&str> = r
                .events
                .iter()
                .map(|e| match e.event {
                    Some(Event::Request(_)) => "request",
                    Some(Event::Response(_)) => "response",
                    Some(Event::End(_)) => "end",
                    None => "none",
                })
                .collect();
            assert_eq!(kinds, ["request", "response", "end"], "request {id}: {r:#?}");
            for e in &r.events {
                assert_eq!(e.direction, "inbound");
                assert!(e.tls, "{e:?}");
                assert_eq!(e.client_id, ID_A);
                assert_eq!(e.server_id, ID_B);
                assert!(e.source.starts_with(&format!("{}:", a.ip())), "{e:?}");
                assert!(e.timestamp_unix_nanos > 0);
            }
            let (req, rsp, end) = (r.request().expect("req"), r.response().expect("rsp"), r.end().expect("end"));
            assert_eq!(req.method, "GET");
            assert_eq!(rsp.status, 200);
            assert!(end.duration_us >= rsp.latency_us, "{r:#?}");
            assert!(end.response_bytes > 0, "{r:#?}");
            assert_eq!(end.reason, "");
        }
        let first = &seen.values().next().expect("first");
        let req = first.request().expect("req");
        assert_eq!(req.authority, "198.18.0.200");
        let names: Vec<&str> = req.headers.iter().map(|h| h.name.as_str()).collect();
        assert!(names.contains(&"x-tap-test"), "headers were asked for: {names:?}");
        assert!(!names.contains(&"authorization"), "a credential reached the tap: {names:?}");
        assert!(!format!("{first:?}").contains("TAP-SECRET"), "{first:#?}");
        // The app's body length, and gRPC status from the trailers.
        let trailers = seen.values().find(|r| path_of(r) == "/trailers").expect("trailers");
        assert_eq!(trailers.end().expect("end").grpc_status, 0, "{trailers:#?}");
        assert_eq!(trailers.end().expect("end").response_bytes, "weft-trailers\n".len() as u64);
        assert_eq!(first.end().expect("end").grpc_status, -1);

        // Outbound, on a's proxy: the route and the server identity.
        let mut outbound = TapClient::new(tap_channel(&a, &ca, CONTROL_ID).await);
        let mut out = outbound
            .observe(ObserveRequest {
                max_rps: 0,
                r#match: Some(Match { direction: "outbound".into(), ..Default::default() }),
                extract_headers: false,
            })
            .await
            .expect("tap a")
            .into_inner();
        let curl = a.curl(&["http://198.18.0.200/out"]);
        assert_eq!(curl.status(), 200, "{}", curl.run);
        let seen = read_until(&mut out, "the outbound request's end", |s| s.values().any(|r| r.end().is_some())).await;
        let r = seen.values().next().expect("one request");
        let rsp = r.response().expect("response");
        assert_eq!((rsp.route.as_str(), rsp.backend.as_str()), ("default", "web.default:80"), "{r:#?}");
        assert!(r.request().expect("req").headers.is_empty(), "headers were not asked for");
        let end_event = r.events.last().expect("events");
        assert_eq!((end_event.client_id.as_str(), end_event.server_id.as_str()), (ID_A, ID_B), "{r:#?}");
        assert!(end_event.destination.starts_with(&format!("{}:8080", b.ip())), "{end_event:?}");

        // The rate limit: a tap of 2 a second beside an unlimited one sees at
        // most its burst plus 2 a second of 20 requests sent as fast as
        // curl can.
        let mut limited = inbound
            .observe(ObserveRequest { max_rps: 2, r#match: None, extract_headers: false })
            .await
            .expect("tap b, limited")
            .into_inner();
        let mut all = inbound
            .observe(ObserveRequest { max_rps: 100, r#match: None, extract_headers: false })
            .await
            .expect("tap b")
            .into_inner();
        let started = Instant::now();
        let urls: Vec<String> = (0..20).map(|i| format!("http://198.18.0.200/burst/{i}")).collect();
        let mut args: Vec<&str> = vec!["-s", "-o", "/dev/null"];
        args.extend(urls.iter().map(String::as_str));
        let run = a.exec("curl", &args);
        assert!(run.status.success(), "{run}");
        let seen_all =
            read_until(&mut all, "20 ends", |s| s.values().filter(|r| r.end().is_some()).count() == 20).await;
        let elapsed = started.elapsed();
        assert_eq!(seen_all.len(), 20, "the unlimited tap missed some: {seen_all:#?}");
        // Everything the limited tap admitted was sent by now: read what is
        // in flight until it has been quiet for a moment.
        let mut admitted = std::collections::BTreeSet::new();
        while let Ok(Ok(Some(e))) = tokio::time::timeout(Duration::from_millis(500), limited.message()).await {
            admitted.insert(e.id);
        }
        let bound = 2 + (2.0 * elapsed.as_secs_f64()).ceil() as usize;
        assert!(
            !admitted.is_empty() && admitted.len() <= bound,
            "a 2/s tap saw {} of 20 requests in {elapsed:?} (at most {bound})",
            admitted.len()
        );
    });
}
