//! `/api/tap` against a fake proxy tap server (a real tonic `Tap` service
//! over mTLS, with a certificate from the control plane's own CA for
//! `spiffe://cluster.local/ns/default/sa/web`, requiring a client
//! certificate from the mesh anchors):
//!
//! - the relay dials it with the control plane's serving certificate
//!   (the server sees `…/ns/weft-system/sa/weft-control`), passes the
//!   filter and its share of `max_rps`, and streams its events as SSE JSON;
//! - a pod whose proxy proves another identity gets an `event: error`;
//! - when the HTTP client goes, the RPC is cancelled on the proxy.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::Stream;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use rcgen::{KeyPair, SanType};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::sync::{mpsc, oneshot};
use weft_api::tap::tap_server::{Tap, TapServer};
use weft_api::tap::{ObserveRequest, RequestInit, ResponseInit, TapEvent, tap_event};
use weft_control::index::{Event, NsName, Workload};
use weft_control::{Config, Control};

const DEADLINE: Duration = Duration::from_secs(10);
const WEB: &str = "spiffe://cluster.local/ns/default/sa/web";
const CONTROL_ID: &str = "spiffe://cluster.local/ns/weft-system/sa/weft-control";

/// What the fake proxy saw: the request and the client's identity; and
/// a signal when the caller cancelled.
#[derive(Default)]
struct Seen {
    requests: Vec<(ObserveRequest, Vec<String>)>,
    cancelled: Option<oneshot::Sender<()>>,
}

struct FakeTap(Arc<Mutex<Seen>>);

type Events = Pin<Box<dyn Stream<Item = Result<TapEvent, tonic::Status>> + Send>>;

fn uris(der: &[u8]) -> Vec<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).expect("a certificate");
    let names =
        cert.subject_alternative_name().ok().flatten().map(|s| s.value.general_names.clone()).unwrap_or_default();
    names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::URI(u) => Some((*u).to_owned()),
            _ => None,
        })
        .collect()
}

#[tonic::async_trait]
impl Tap for FakeTap {
    type ObserveStream = Events;

    async fn observe(&self, request: tonic::Request<ObserveRequest>) -> Result<tonic::Response<Events>, tonic::Status> {
        let ids = request.peer_certs().and_then(|c| c.first().map(|c| uris(c))).unwrap_or_default();
        let cancelled = {
            let mut seen = self.0.lock().unwrap();
            seen.requests.push((request.into_inner(), ids));
            seen.cancelled.take()
        };
        let (tx, rx) = mpsc::channel(8);
        let base = TapEvent {
            id: 1,
            direction: "inbound".into(),
            source: "127.0.0.9:5555".into(),
            destination: "127.0.7.2:8080".into(),
            client_id: "spiffe://cluster.local/ns/default/sa/load".into(),
            server_id: WEB.into(),
            tls: true,
            timestamp_unix_nanos: 1,
            event: None,
        };
        let events = vec![
            TapEvent {
                event: Some(tap_event::Event::Request(RequestInit {
                    method: "GET".into(),
                    authority: "web".into(),
                    path: "/count".into(),
                    ..Default::default()
                })),
                ..base.clone()
            },
            TapEvent {
                event: Some(tap_event::Event::Response(ResponseInit {
                    status: 200,
                    latency_us: 1234,
                    ..Default::default()
                })),
                ..base
            },
        ];
        tokio::spawn(async move {
            for e in events {
                let _ = tx.send(Ok(e)).await;
            }
            // Then nothing more, until the caller goes.
            tx.closed().await;
            if let Some(c) = cancelled {
                let _ = c.send(());
            }
        });
        Ok(tonic::Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}

/// A tap server on `addr` proving `WEB` with a certificate from the
/// control plane's CA, requiring a client certificate chaining to its
/// anchors.
async fn fake_proxy(control: &Control, addr: SocketAddr, seen: Arc<Mutex<Seen>>) {
    let ca = control.ca().expect("the CA is on");
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let issuer = ca.issuer();
    let leaf = issuer
        .sign_leaf(&key, vec![SanType::URI(WEB.try_into().unwrap())], Duration::from_secs(3600), SystemTime::now())
        .expect("a leaf");
    let mut chain = vec![leaf.der];
    chain.extend(issuer.intermediates());
    let mut roots = rustls::RootCertStore::empty();
    for a in &ca.anchors().certs {
        roots.add(a.clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build().unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())))
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let (_trigger, shutdown) = weft_control::shutdown::channel();
    let incoming = weft_control::grpc::tls::incoming(listener, Arc::new(config), shutdown);
    tokio::spawn(async move {
        let _keep = _trigger;
        let _ = tonic::transport::Server::builder()
            .serve_with_incoming_shutdown(TapServer::new(FakeTap(seen)), incoming, std::future::pending::<()>())
            .await;
    });
}

fn workload(name: &str, ip: &str, sa: &str) -> Event {
    Event::WorkloadApplied(Workload {
        name: NsName::new("default", name),
        service_account: sa.into(),
        labels: [("app".to_owned(), "web".to_owned())].into(),
        address: ip.parse().unwrap(),
        ports: vec![8080],
        meshed: true,
        ready: true,
        zone: String::new(),
        opaque_ports: Vec::new(),
    })
}

/// Reads SSE blocks from a response body until `n` have come.
async fn read_events(body: &mut hyper::body::Incoming, n: usize) -> Vec<String> {
    let mut text = String::new();
    let mut events: Vec<String> = Vec::new();
    while events.len() < n {
        let frame =
            tokio::time::timeout(DEADLINE, body.frame()).await.expect("an event in time").expect("not ended").unwrap();
        if let Ok(data) = frame.into_data() {
            text.push_str(&String::from_utf8_lossy(&data));
            while let Some(end) = text.find("\n\n") {
                let block: String = text.drain(..end + 2).collect();
                if !block.starts_with(':') {
                    events.push(block.trim_end().to_owned());
                }
            }
        }
    }
    events
}

#[tokio::test]
async fn the_relay_taps_proxies_over_mtls_as_the_control_plane() {
    let dir = tempfile::tempdir().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (cancel_tx, cancel_rx) = oneshot::channel();
    seen.lock().unwrap().cancelled = Some(cancel_tx);

    // The tap port is a setting of the control plane, and the fake
    // proxies need its CA: pick a free port first.
    let probe = tokio::net::TcpListener::bind("127.0.7.2:0").await.unwrap();
    let port = probe.local_addr().unwrap().port();
    drop(probe);
    let config = Config {
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        admin_addr: "127.0.0.1:0".parse().unwrap(),
        dashboard_addr: Some("127.0.0.1:0".parse().unwrap()),
        state_dir: Some(dir.path().join("state")),
        telemetry: weft_control::telemetry::Settings { interval: Duration::ZERO, tap_port: port, ..Default::default() },
        ..Config::default()
    };
    let control = weft_control::start(config).await.expect("control plane starts");
    fake_proxy(&control, SocketAddr::from(([127, 0, 7, 2], port)), seen.clone()).await;
    fake_proxy(&control, SocketAddr::from(([127, 0, 7, 3], port)), Arc::new(Mutex::new(Seen::default()))).await;
    control.index().apply([workload("web-v1-0", "127.0.7.2", "web"), workload("other-0", "127.0.7.3", "other")]);
    let addr = control.dashboard_addr().unwrap();

    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    let conn = tokio::spawn(conn);
    let request = http::Request::get("/api/tap?workload=web-v1&max_rps=30&method=GET&path=/c")
        .header("host", addr.to_string())
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();
    let events = read_events(&mut body, 2).await;
    let json: Vec<serde_json::Value> =
        events.iter().map(|e| serde_json::from_str(e.strip_prefix("data: ").expect("a data event")).unwrap()).collect();
    assert_eq!((json[0]["workload"].as_str(), json[0]["pod"].as_str()), (Some("web-v1"), Some("web-v1-0")));
    assert_eq!(json[0]["request"]["path"], "/count");
    assert_eq!((json[1]["response"]["status"].as_u64(), json[1]["id"].as_u64()), (Some(200), Some(1)));
    {
        let seen = seen.lock().unwrap();
        let (req, ids) = &seen.requests[0];
        assert_eq!(ids, &[CONTROL_ID.to_owned()], "the relay calls as the control plane");
        assert_eq!(req.max_rps, 30);
        let m = req.r#match.clone().unwrap();
        assert_eq!((m.method.as_str(), m.path_prefix.as_str()), ("GET", "/c"));
    }

    // The client goes: the proxy's stream is cancelled.
    drop(body);
    drop(sender);
    conn.abort();
    tokio::time::timeout(DEADLINE, cancel_rx).await.expect("the RPC cancelled when the client left").unwrap();

    // A proxy that proves another identity than its pod's: an error event.
    let (status, text) = get_stream(addr, "/api/tap?workload=other").await;
    assert_eq!(status, 200);
    assert!(text.starts_with("event: error\ndata: {"), "{text}");
    assert!(
        text.contains("\"pod\":\"other-0\"")
            && text.contains("does not name spiffe://cluster.local/ns/default/sa/other"),
        "{text}"
    );
    control.shutdown().await;
}

/// A whole (ending) event stream.
async fn get_stream(addr: SocketAddr, path: &str) -> (u16, String) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let request = http::Request::get(path).header("host", addr.to_string()).body(Empty::<Bytes>::new()).unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let body = tokio::time::timeout(DEADLINE, response.into_body().collect()).await.expect("the stream ends").unwrap();
    (status, String::from_utf8_lossy(&body.to_bytes()).into_owned())
}
