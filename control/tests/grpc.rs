//! The control plane in-process on 127.0.0.1:0, driven by real tonic
//! clients: registration → discovery, lease lapse → removal, policy file
//! rewrite → new OutboundPolicy, invalid rewrite → refused, old kept.
//! Every wait is on a stream (or a check) with a deadline; nothing sleeps
//! for a fixed time.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Streaming;
use tonic::transport::Channel;
use weft_api::discovery::discovery_client::DiscoveryClient;
use weft_api::discovery::endpoint_set::Kind;
use weft_api::discovery::{EndpointSet, WatchRequest};
use weft_api::identity::CertifyRequest;
use weft_api::identity::identity_client::IdentityClient;
use weft_api::policy::policy_client::PolicyClient;
use weft_api::policy::{InboundRequest, OutboundPolicy, OutboundRequest};
use weft_api::registry::registry_client::RegistryClient;
use weft_api::registry::{HeartbeatRequest, RegisterRequest, Workload};
use weft_control::{Config, Control};

const DEADLINE: Duration = Duration::from_secs(10);

const SERVICES: &str = "services:
  - name: web
    namespace: default
    virtualIP: 10.96.0.10
    selector: {app: web}
    ports: [{port: 80, targetPort: 8080}]
";

fn traffic_policy(request: &str) -> String {
    format!(
        "apiVersion: policy.weft.dev/v1alpha1
kind: TrafficPolicy
metadata: {{name: web, namespace: default}}
spec:
  targetRef: {{kind: Service, name: web}}
  timeouts: {{request: {request}}}
"
    )
}

/// Writes through a temporary file and a rename, as editors do, so that
/// the poller never reads half a file.
fn write(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

async fn start(dir: &Path) -> Control {
    let config = Config {
        grpc_addr: "127.0.0.1:0".parse().expect("addr"),
        admin_addr: "127.0.0.1:0".parse().expect("addr"),
        services: Some(dir.join("services.yaml")),
        policy_paths: vec![dir.join("policy")],
        reload_interval: Duration::from_millis(20),
        ..Config::default()
    };
    weft_control::start(config).await.expect("control plane starts")
}

async fn channel(control: &Control) -> Channel {
    Channel::from_shared(format!("http://{}", control.grpc_addr())).expect("uri").connect().await.expect("connect")
}

/// The next message of a stream, within the deadline.
async fn next<T>(stream: &mut Streaming<T>) -> T {
    tokio::time::timeout(DEADLINE, stream.message())
        .await
        .expect("a message within the deadline")
        .expect("stream ok")
        .expect("stream open")
}

/// Reads until a message satisfies `check` (snapshots may coalesce).
async fn until<T: std::fmt::Debug>(stream: &mut Streaming<T>, check: impl Fn(&T) -> bool) -> T {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let msg = tokio::time::timeout_at(deadline, stream.message())
            .await
            .expect("the expected message within the deadline")
            .expect("stream ok")
            .expect("stream open");
        if check(&msg) {
            return msg;
        }
    }
}

/// Polls `check` until it holds, for conditions no stream reports.
async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "{what}: not within {DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
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

fn endpoints(set: &EndpointSet) -> Vec<&str> {
    set.endpoints.iter().map(|e| e.address.as_str()).collect()
}

fn request_ms(p: &OutboundPolicy) -> u64 {
    p.timeouts.expect("timeouts").request_ms
}

#[tokio::test]
async fn registration_lease_lapse_and_policy_reload() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("policy")).expect("mkdir");
    write(&dir.path().join("services.yaml"), SERVICES);
    let policy_file = dir.path().join("policy/web.yaml");
    write(&policy_file, &traffic_policy("5s"));
    let control = start(dir.path()).await;
    let channel = channel(&control).await;

    // Discovery: the service exists, with no endpoint yet.
    let mut discovery = DiscoveryClient::new(channel.clone())
        .watch(WatchRequest {
            target: "web:80".into(),
            proxy_id: "client-0.default".into(),
            namespace: "default".into(),
        })
        .await
        .expect("watch")
        .into_inner();
    let first = next(&mut discovery).await;
    assert_eq!(first.kind, Kind::Service as i32);
    assert_eq!(first.service, "web.default");
    assert!(first.endpoints.is_empty());

    // A workload registers with a short lease: its endpoint appears.
    let mut registry = RegistryClient::new(channel.clone());
    let lease = registry
        .register(RegisterRequest {
            workload: Some(Workload {
                name: "web-0".into(),
                namespace: "default".into(),
                service_account: "web".into(),
                labels: [("app".to_string(), "web".to_string())].into(),
                address: "127.0.0.2".into(),
                ports: vec![8080],
                meshed: true,
                ready: true,
                zone: String::new(),
            }),
            ttl_ms: 300,
        })
        .await
        .expect("register")
        .into_inner();
    assert_eq!(lease.ttl_ms, 300);
    let with = until(&mut discovery, |s| !s.endpoints.is_empty()).await;
    assert_eq!(endpoints(&with), ["127.0.0.2:8080"]);
    assert_eq!(with.endpoints[0].identity, "spiffe://cluster.local/ns/default/sa/web");
    assert!(with.version >= lease.version);

    // The VIP resolves to the same set.
    let mut by_vip = DiscoveryClient::new(channel.clone())
        .watch(WatchRequest {
            target: "10.96.0.10:80".into(),
            proxy_id: "client-1.default".into(),
            namespace: String::new(),
        })
        .await
        .expect("watch")
        .into_inner();
    assert_eq!(endpoints(&next(&mut by_vip).await), ["127.0.0.2:8080"]);

    // No heartbeat: the lease lapses and the endpoint leaves.
    let without = until(&mut discovery, |s| s.endpoints.is_empty()).await;
    assert!(without.version > with.version);
    let err = registry
        .heartbeat(HeartbeatRequest { lease_id: lease.id.clone(), ready: true })
        .await
        .expect_err("lapsed lease");
    assert_eq!(err.code(), tonic::Code::NotFound, "{err}");

    // Outbound policy: the file's value, then the rewritten one.
    let mut policy = PolicyClient::new(channel.clone());
    let mut outbound = policy
        .watch_outbound(OutboundRequest {
            target: "10.96.0.10:80".into(),
            proxy_id: "client-0.default".into(),
            namespace: "default".into(),
        })
        .await
        .expect("watch outbound")
        .into_inner();
    let p = next(&mut outbound).await;
    assert_eq!(p.service, "web.default");
    assert_eq!(request_ms(&p), 5_000);
    assert_eq!(p.sources, ["TrafficPolicy/default/web"]);

    write(&policy_file, &traffic_policy("7s"));
    let p = until(&mut outbound, |p| request_ms(p) != 5_000).await;
    assert_eq!(request_ms(&p), 7_000);

    // An invalid rewrite is refused and the previous content stays.
    write(&policy_file, &traffic_policy("1.5s"));
    let diagnostics = control.diagnostics().clone();
    eventually("the invalid file is refused", || !diagnostics.rejections().is_empty()).await;
    let rejection = diagnostics.rejections().into_values().next().expect("rejection");
    assert!(
        rejection.error.contains("web.yaml:6:") && rejection.error.contains("spec.timeouts.request: `1.5s`"),
        "{}",
        rejection.error
    );
    // Prove the old policy is still in force with the next change: the
    // push it causes still carries 7s.
    write(
        &dir.path().join("policy/retries.yaml"),
        "apiVersion: policy.weft.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: web-retries}
spec:
  targetRef: {kind: Service, name: web}
  retries: {attempts: 4}
",
    );
    let p = until(&mut outbound, |p| p.retry.as_ref().is_some_and(|r| r.attempts == 4)).await;
    assert_eq!(request_ms(&p), 7_000, "the refused rewrite changed nothing");

    // The admin port reports it all.
    let metrics = http_get(control.admin_addr(), "/metrics").await;
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    for line in [
        "weft_control_policy_rejected_total 1",
        "weft_control_rejected_files 1",
        "weft_control_streams{kind=\"discovery\"} 2",
        "weft_control_streams{kind=\"outbound\"} 1",
        "weft_control_connected_proxies 2",
        "weft_control_workloads 0",
        "weft_control_push_latency_seconds_count ",
    ] {
        assert!(metrics.contains(line), "missing `{line}` in\n{metrics}");
    }
    let state = http_get(control.admin_addr(), "/state").await;
    assert!(state.contains("\"rejected\"") && state.contains("web.yaml"), "{state}");
    assert!(http_get(control.admin_addr(), "/ready").await.starts_with("HTTP/1.1 200"));

    // Fixing the file clears the refusal.
    write(&policy_file, &traffic_policy("3s"));
    let p = until(&mut outbound, |p| request_ms(p) == 3_000).await;
    assert_eq!(p.retry.expect("retry").attempts, 4);
    eventually("the refusal is cleared", || diagnostics.rejections().is_empty()).await;

    control.shutdown().await;
}

#[tokio::test]
async fn inbound_identity_and_bad_requests() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("policy")).expect("mkdir");
    write(&dir.path().join("services.yaml"), SERVICES);
    write(
        &dir.path().join("policy/access.yaml"),
        "apiVersion: policy.weft.dev/v1alpha1
kind: AccessPolicy
metadata: {name: web}
spec:
  targetRef: {kind: Service, name: web}
  from: {namespaces: [default]}
",
    );
    let control = start(dir.path()).await;
    let channel = channel(&control).await;

    let mut inbound = PolicyClient::new(channel.clone())
        .watch_inbound(InboundRequest {
            workload: "web-0.default".into(),
            port: 8080,
            proxy_id: "web-0.default".into(),
        })
        .await
        .expect("watch inbound")
        .into_inner();
    let p = next(&mut inbound).await;
    assert!(p.authorizations.is_empty(), "web-0 is not registered yet: nothing serves it");
    RegistryClient::new(channel.clone())
        .register(RegisterRequest {
            workload: Some(Workload {
                name: "web-0".into(),
                namespace: "default".into(),
                labels: [("app".to_string(), "web".to_string())].into(),
                address: "127.0.0.2".into(),
                ports: vec![8080],
                meshed: true,
                ready: true,
                ..Default::default()
            }),
            ttl_ms: 0,
        })
        .await
        .expect("register");
    let p = until(&mut inbound, |p| !p.authorizations.is_empty()).await;
    assert_eq!(p.authorizations[0].namespaces, ["default"]);

    // Without a state directory or issuer files the CA is off (and gRPC
    // is plaintext): Certify says how to turn it on.
    let err = IdentityClient::new(channel.clone()).certify(CertifyRequest::default()).await.expect_err("CA off");
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert!(err.message().contains("--state-dir"), "{}", err.message());

    let err = DiscoveryClient::new(channel.clone())
        .watch(WatchRequest { target: "web".into(), ..Default::default() })
        .await
        .expect_err("no port");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let err = RegistryClient::new(channel.clone())
        .register(RegisterRequest {
            workload: Some(Workload { name: "web-1".into(), address: "not-an-ip".into(), ..Default::default() }),
            ttl_ms: 0,
        })
        .await
        .expect_err("invalid workload");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    // Shutdown ends open streams with UNAVAILABLE, so proxies reconnect.
    control.shutdown().await;
    let end = tokio::time::timeout(DEADLINE, inbound.message()).await.expect("stream ends");
    match end {
        Err(status) => assert_eq!(status.code(), tonic::Code::Unavailable),
        Ok(None) => {}
        Ok(Some(m)) => panic!("unexpected message after shutdown: {m:?}"),
    }
}

#[tokio::test]
async fn refuses_to_start_on_invalid_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("policy")).expect("mkdir");
    write(&dir.path().join("services.yaml"), "services:\n  - name: web\n    ports: [{port: 70000}]\n");
    let config = Config {
        grpc_addr: "127.0.0.1:0".parse().expect("addr"),
        admin_addr: "127.0.0.1:0".parse().expect("addr"),
        services: Some(dir.path().join("services.yaml")),
        policy_paths: vec![dir.path().join("policy"), dir.path().join("missing")],
        ..Config::default()
    };
    let err = weft_control::start(config).await.expect_err("invalid");
    let msg = err.to_string();
    assert!(msg.contains("services.yaml:3:") && msg.contains("services[0].ports[0].port: must be 1..=65535"), "{msg}");
    assert!(msg.contains("missing"), "{msg}");
}
