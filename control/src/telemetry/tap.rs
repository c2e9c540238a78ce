//! The tap client, and its relay as Server-Sent Events (`/api/tap`).
//!
//! ```text
//!   GET /api/tap?namespace=&workload=|service=&… ─► the selected meshed pods
//!     └─► per pod: gRPC Tap.Observe to POD_IP:4190 over mTLS (TLS 1.3, h2):
//!           client certificate = the control plane's serving certificate (EKU clientAuth),
//!           server verified against the mesh trust anchors AND as the pod's SPIFFE ID;
//!           max_rps split between the pods
//!     └─► each TapEvent → `data: {json}\n\n` on one channel ─► the HTTP response body
//! ```
//!
//! A pod that cannot be tapped (no tap listener, refused, denied) sends
//! one `event: error` with its name and why; the others go on, and the
//! response ends once every pod's stream has. When the
//! HTTP client goes, the body (the channel's receiver) is dropped, and
//! every pod's task ends, cancelling its RPC; a comment every few seconds
//! makes a silent stream notice a client that left.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use http::{Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use rustls::client::ResolvesClientCert;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, SignatureScheme};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;
use weft_api::tap::tap_client::TapClient as Grpc;
use weft_api::tap::{Match, ObserveRequest, TapEvent, tap_event};

use super::aggregate::Pod;
use super::{pods, services};
use crate::ca::Ca;
use crate::ca::serving::{ALPN_H2, ServingCert};
use crate::dashboard::api::Query;
use crate::dashboard::{Body, Dashboard, error, with_type};

/// The most events per second a tap asks for in all (the proxies cap each
/// stream at 100).
pub const MAX_RPS: u32 = 100;
/// Between keep-alive comments on a quiet stream.
const KEEPALIVE: Duration = Duration::from_secs(5);

/// Dials proxies' tap ports as the control plane.
#[derive(Clone, Debug)]
pub struct TapClient {
    pub ca: Ca,
    pub serving: Arc<ServingCert>,
    /// The proxies' tap port (4190; tests use others).
    pub port: u16,
    pub connect_timeout: Duration,
}

#[derive(Debug)]
struct ServingAsClient(Arc<ServingCert>);

impl ResolvesClientCert for ServingAsClient {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.certified_key())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A proxy's certificate: chains to the mesh anchors (for server auth)
/// and names exactly `identity` as a SPIFFE URI SAN.
#[derive(Debug)]
struct ProxyVerifier {
    anchors: Vec<rustls::pki_types::TrustAnchor<'static>>,
    identity: String,
    provider: Arc<CryptoProvider>,
}

fn invalid(e: impl std::fmt::Display) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(std::io::Error::other(
        e.to_string(),
    )))))
}

impl ServerCertVerifier for ProxyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = webpki::EndEntityCert::try_from(end_entity).map_err(invalid)?;
        cert.verify_for_usage(
            self.provider.signature_verification_algorithms.all,
            &self.anchors,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .map_err(invalid)?;
        let (_, parsed) = x509_parser::parse_x509_certificate(end_entity).map_err(invalid)?;
        let names = parsed.subject_alternative_name().ok().flatten();
        let ok = names.is_some_and(|san| {
            san.value
                .general_names
                .iter()
                .any(|n| matches!(n, x509_parser::extensions::GeneralName::URI(uri) if *uri == self.identity.as_str()))
        });
        if !ok {
            return Err(invalid(format!("the proxy's certificate does not name {}", self.identity)));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls13RequiredForQuic))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// TCP then mTLS to one proxy, for tonic.
#[derive(Clone)]
struct Connector {
    config: Arc<ClientConfig>,
    addr: SocketAddr,
    timeout: Duration,
}

impl tower::Service<http::Uri> for Connector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let tcp = tokio::time::timeout(this.timeout, TcpStream::connect(this.addr))
                .await
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
            tcp.set_nodelay(true)?;
            let name = ServerName::IpAddress(this.addr.ip().into());
            let tls = tokio::time::timeout(this.timeout, TlsConnector::from(this.config).connect(name, tcp))
                .await
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
            Ok(TokioIo::new(tls))
        })
    }
}

impl TapClient {
    fn config(&self, identity: &str) -> Result<Arc<ClientConfig>, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let anchors = self.ca.anchors();
        let anchors = anchors
            .certs
            .iter()
            .map(|c| webpki::anchor_from_trusted_cert(c).map(|a| a.to_owned()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("a trust anchor is unusable: {e}"))?;
        let verifier = ProxyVerifier { anchors, identity: identity.to_owned(), provider: provider.clone() };
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_cert_resolver(Arc::new(ServingAsClient(self.serving.clone())));
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(Arc::new(config))
    }

    /// Opens `Tap.Observe` on the proxy at `ip`, which must prove `identity`.
    pub async fn observe(
        &self,
        ip: std::net::IpAddr,
        identity: &str,
        request: ObserveRequest,
    ) -> Result<tonic::Streaming<TapEvent>, String> {
        let addr = SocketAddr::new(ip, self.port);
        let connector = Connector { config: self.config(identity)?, addr, timeout: self.connect_timeout };
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| e.to_string())?
            .connect_timeout(self.connect_timeout);
        let channel = endpoint
            .connect_with_connector(connector)
            .await
            .map_err(|e| format!("cannot reach the tap port {addr}: {}", chain(&e)))?;
        let response = Grpc::new(channel)
            .observe(request)
            .await
            .map_err(|s| format!("tap on {addr} answered {:?}: {}", s.code(), s.message()))?;
        Ok(response.into_inner())
    }
}

/// An error and its sources, `: `-joined.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn headers(h: &[weft_api::tap::Header]) -> Value {
    h.iter().map(|h| json!({ "name": h.name, "value": String::from_utf8_lossy(&h.value) })).collect()
}

/// A TapEvent as the API's JSON, with the pod's workload added.
pub fn event_json(pod: &Pod, e: &TapEvent) -> Value {
    let mut v = json!({
        "workload": pod.workload,
        "pod": pod.name.name,
        "namespace": pod.name.namespace,
        "id": e.id,
        "direction": e.direction,
        "source": e.source,
        "destination": e.destination,
        "client_id": e.client_id,
        "server_id": e.server_id,
        "tls": e.tls,
        "timestamp_unix_nanos": e.timestamp_unix_nanos,
    });
    match &e.event {
        Some(tap_event::Event::Request(r)) => {
            v["request"] = json!({
                "method": r.method, "scheme": r.scheme, "authority": r.authority, "path": r.path,
                "headers": headers(&r.headers), "route": r.route,
            });
        }
        Some(tap_event::Event::Response(r)) => {
            v["response"] = json!({
                "status": r.status, "latency_us": r.latency_us, "headers": headers(&r.headers),
                "route": r.route, "backend": r.backend,
            });
        }
        Some(tap_event::Event::End(r)) => {
            v["end"] = json!({
                "duration_us": r.duration_us, "response_bytes": r.response_bytes,
                "grpc_status": r.grpc_status, "reason": r.reason,
            });
        }
        None => {}
    }
    v
}

fn sse(event: Option<&str>, data: &Value) -> Bytes {
    let mut out = String::new();
    if let Some(event) = event {
        out.push_str("event: ");
        out.push_str(event);
        out.push('\n');
    }
    out.push_str("data: ");
    out.push_str(&data.to_string());
    out.push_str("\n\n");
    Bytes::from(out)
}

/// The tap's request from the query: `max_rps` is the total; each of `n`
/// pods gets its share (at least 1).
pub fn observe_request(q: &Query, n: usize) -> Result<ObserveRequest, String> {
    let total: u32 = match q.get("max_rps") {
        None => 10,
        Some(v) => v.parse().map_err(|_| format!("max_rps={v:?}: expected a number"))?,
    };
    let total = total.clamp(1, MAX_RPS);
    let per = (total / u32::try_from(n.max(1)).unwrap_or(u32::MAX)).max(1);
    let direction = q.get("direction").unwrap_or_default();
    if !matches!(direction, "" | "inbound" | "outbound") {
        return Err(format!("direction={direction:?}: expected inbound or outbound"));
    }
    let field = |k: &str| q.get(k).unwrap_or_default().to_owned();
    Ok(ObserveRequest {
        max_rps: per,
        r#match: Some(Match {
            direction: direction.to_owned(),
            method: field("method"),
            authority: field("authority"),
            path_prefix: field("path"),
        }),
        extract_headers: matches!(q.get("headers"), Some("true" | "1")),
    })
}

/// `GET /api/tap`: Server-Sent Events from the selected pods' proxies.
pub fn relay(d: &Dashboard, q: &Query) -> Response<Body> {
    let Some(client) = d.tap.clone() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "tap needs mesh identity: the control plane's CA is off, so it has no certificate to call the proxies with",
        );
    };
    let state = d.telemetry.index.state();
    let all = pods(&state, &d.telemetry.settings.extra);
    let namespace = q.get("namespace").unwrap_or("default");
    let selected: Vec<Pod> = match (q.get("workload"), q.get("service")) {
        (Some(w), None) => {
            all.iter().filter(|p| p.meshed && p.name.namespace == namespace && p.workload == w).cloned().collect()
        }
        (None, Some(s)) => services(&state, &all)
            .into_iter()
            .filter(|x| x.name.namespace == namespace && x.name.name == s)
            .flat_map(|x| x.pods)
            .map(|i| all[i].clone())
            .filter(|p| p.meshed)
            .collect(),
        (None, None) => all.iter().filter(|p| p.meshed && p.name.namespace == namespace).cloned().collect(),
        (Some(_), Some(_)) => return error(StatusCode::BAD_REQUEST, "give workload= or service=, not both"),
    };
    if selected.is_empty() {
        return error(
            StatusCode::NOT_FOUND,
            &format!("no meshed pod to tap in namespace {namespace} for that selection"),
        );
    }
    let request = match observe_request(q, selected.len()) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    for pod in selected {
        let (client, tx, request) = (client.clone(), tx.clone(), request.clone());
        tokio::spawn(async move {
            let opened = tokio::select! {
                r = client.observe(pod.address, &pod.identity, request) => r,
                () = tx.closed() => return,
            };
            let mut stream = match opened {
                Ok(s) => s,
                Err(e) => {
                    let body = json!({ "workload": pod.workload, "pod": pod.name.name, "namespace": pod.name.namespace, "error": e });
                    let _ = tx.send(sse(Some("error"), &body)).await;
                    return;
                }
            };
            loop {
                tokio::select! {
                    m = stream.message() => match m {
                        Ok(Some(event)) => {
                            if tx.send(sse(None, &event_json(&pod, &event))).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => return,
                        Err(s) => {
                            let body = json!({
                                "workload": pod.workload, "pod": pod.name.name, "namespace": pod.name.namespace,
                                "error": format!("the tap stream ended: {:?}: {}", s.code(), s.message()),
                            });
                            let _ = tx.send(sse(Some("error"), &body)).await;
                            return;
                        }
                    },
                    () = tx.closed() => return,
                }
            }
        });
    }
    // Keep-alive comments: a write is how a silent stream learns that
    // its client left. Once every pod's stream has ended (each refused,
    // say), so does the response.
    tokio::spawn(async move {
        let mut quiet = Duration::ZERO;
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if tx.strong_count() <= 1 {
                return;
            }
            quiet += Duration::from_millis(200);
            if quiet >= KEEPALIVE {
                quiet = Duration::ZERO;
                if tx.send(Bytes::from_static(b": keep-alive\n\n")).await.is_err() {
                    return;
                }
            }
        }
    });
    let body =
        StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx).map(|b| Ok::<_, Infallible>(Frame::data(b))));
    let mut rsp = with_type(Response::new(BodyExt::boxed(body)), "text/event-stream");
    rsp.headers_mut()
        .insert(header::HeaderName::from_static("x-accel-buffering"), header::HeaderValue::from_static("no"));
    rsp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_split_the_rate_and_carry_the_match() {
        let q = Query::parse("max_rps=30&direction=inbound&method=GET&path=/api&headers=true");
        let r = observe_request(&q, 4).unwrap();
        assert_eq!(r.max_rps, 7);
        let m = r.r#match.unwrap();
        assert_eq!(
            (m.direction.as_str(), m.method.as_str(), m.path_prefix.as_str(), m.authority.as_str()),
            ("inbound", "GET", "/api", "")
        );
        assert!(r.extract_headers);
        assert_eq!(observe_request(&Query::parse(""), 20).unwrap().max_rps, 1, "at least one each");
        assert_eq!(observe_request(&Query::parse("max_rps=5000"), 1).unwrap().max_rps, MAX_RPS);
        assert!(observe_request(&Query::parse("direction=sideways"), 1).is_err());
        assert!(observe_request(&Query::parse("max_rps=lots"), 1).is_err());
    }

    #[test]
    fn events_as_json() {
        let pod = Pod {
            name: crate::index::NsName::new("default", "web-v1-0"),
            workload: "web-v1".into(),
            labels: Default::default(),
            address: "10.0.0.1".parse().unwrap(),
            meshed: true,
            identity: String::new(),
        };
        let e = TapEvent {
            id: 7,
            direction: "inbound".into(),
            source: "10.0.0.2:5555".into(),
            destination: "10.0.0.1:8080".into(),
            tls: true,
            event: Some(tap_event::Event::Response(weft_api::tap::ResponseInit {
                status: 200,
                latency_us: 1500,
                headers: vec![weft_api::tap::Header { name: "content-type".into(), value: b"text/plain".to_vec() }],
                route: "default/web#0".into(),
                backend: "web-v1.default".into(),
            })),
            ..TapEvent::default()
        };
        let v = event_json(&pod, &e);
        assert_eq!(
            (v["workload"].as_str(), v["id"].as_u64(), v["tls"].as_bool()),
            (Some("web-v1"), Some(7), Some(true))
        );
        assert_eq!(v["response"]["status"], 200);
        assert_eq!(v["response"]["headers"][0]["value"], "text/plain");
        assert!(v.get("request").is_none());
        assert_eq!(sse(Some("error"), &json!({"a": 1})), Bytes::from_static(b"event: error\ndata: {\"a\":1}\n\n"));
    }
}
