//! Kubernetes service-account tokens prove identities to the mesh CA: the
//! control plane's `TokenReviewer` (`control/src/ca/kubernetes.rs`) against
//! the tests' real API server (`src/kube.rs`), authenticated as the control
//! plane's own service account `weft-control` with exactly the RBAC of
//! `manifests/control-plane-rbac.yaml`.
//!
//! Every token here is a real one: minted by the API server with
//! `kubectl create token`, or signed by the tests with the cluster's own
//! service-account key (`pki/sa.key`) to get one that has already expired.

use std::net::{Ipv4Addr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kube::config::{KubeConfigOptions, Kubeconfig};
use weft_control::ca::kubernetes::{PodCheck, PodLookup, TokenReviewer};
use weft_control::ca::tokens::{TokenError, TokenKind, TokenVerifier};
use weft_control::ca::{Ca, CaSettings, IssuerSource, Reason};
use weft_control::metrics::Metrics;
use weft_tests::KubeCluster;

const TD: &str = "cluster.local";

/// A client of the API server authenticated with a token of service account
/// `ns/sa` (and nothing else: no client certificate).
async fn client_as(cluster: &KubeCluster, ns: &str, sa: &str) -> kube::Client {
    let token = cluster.kubectl(&["create", "token", sa, "-n", ns, "--duration", "1h"]).stdout.trim().to_owned();
    // One file per client: `cargo test` runs these tests in parallel threads
    // sharing one cluster (and its directory).
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let name = format!("{ns}-{sa}-{}", NEXT.fetch_add(1, Ordering::Relaxed));
    let path =
        cluster.token_kubeconfig(cluster.server(), &name, &token, &cluster.dir().join(format!("{name}.kubeconfig")));
    let kubeconfig = Kubeconfig::read_from(&path).expect("the kubeconfig parses");
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.expect("a kube config");
    kube::Client::try_from(config).expect("a kube client")
}

/// The control plane's client: `weft-system/weft-control`, bound to exactly
/// the shipped ClusterRole.
async fn control_plane_client(cluster: &KubeCluster) -> kube::Client {
    let rbac = weft_tests::manifests_dir().join("control-plane-rbac.yaml");
    cluster.kubectl(&["apply", "-f", &rbac.display().to_string()]);
    client_as(cluster, "weft-system", "weft-control").await
}

/// A namespace with ServiceAccount `web` and Pod `web-0` running as it
/// (Pending forever: there is no kubelet).
fn namespace_with_web_0(cluster: &KubeCluster, prefix: &str) -> String {
    let ns = cluster.namespace(prefix);
    // The ServiceAccount first: the admission plugin refuses a Pod whose
    // account does not exist.
    cluster.apply(&ns, "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: web}\n");
    create_pod(cluster, &ns, "web-0", "web");
    ns
}

fn create_pod(cluster: &KubeCluster, ns: &str, name: &str, service_account: &str) {
    cluster.apply(
        ns,
        &format!(
            "apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  serviceAccountName: {service_account}
  automountServiceAccountToken: false
  containers: [{{name: app, image: registry.invalid/weft/never-pulled:1}}]
"
        ),
    );
}

/// `kubectl create token SA -n NS ARGS...`.
fn create_token(cluster: &KubeCluster, ns: &str, sa: &str, args: &[&str]) -> String {
    let mut all = vec!["create", "token", sa, "-n", ns, "--duration", "10m"];
    all.extend_from_slice(args);
    let token = cluster.kubectl(&all).stdout.trim().to_owned();
    assert_eq!(token.split('.').count(), 3, "not a JWT");
    token
}

fn bound_to(pod: &str) -> [&str; 6] {
    ["--audience", "weft", "--bound-object-kind", "Pod", "--bound-object-name", pod]
}

/// The control plane's view of Pods, as the index would answer: every Pod of
/// `ns` runs as `runs_as`.
fn pods_of(ns: &str, runs_as: &str) -> Arc<dyn PodLookup> {
    let (ns, runs_as) = (ns.to_owned(), runs_as.to_owned());
    Arc::new(
        move |namespace: &str, _pod: &str, _uid: &str| {
            if namespace == ns { PodCheck::RunsAs(runs_as.clone()) } else { PodCheck::Unknown }
        },
    )
}

fn not_authenticated(e: &TokenError) -> &str {
    match e {
        TokenError::NotAuthenticated(why) => why,
        other => panic!("not refused by the API server: {other:?} ({other})"),
    }
}

/// A Pod-bound token for audience `weft` proves the Pod's service account,
/// and gets a certificate from the CA; with the wrong Pod view, audience, or
/// binding, or as garbage, it proves nothing and says why. The control plane
/// needs no more RBAC than the manifest gives it, and less does not do.
#[tokio::test]
async fn a_pod_bound_token_proves_its_service_account_and_nothing_else_does() {
    let cluster = KubeCluster::shared();
    let client = control_plane_client(cluster).await;
    let ns = namespace_with_web_0(cluster, "ident");
    let web = format!("spiffe://{TD}/ns/{ns}/sa/web");
    let reviewer = |runs_as: &str| TokenReviewer::new(client.clone(), TD, pods_of(&ns, runs_as));
    let now = SystemTime::now();

    let bound = create_token(cluster, &ns, "web", &bound_to("web-0"));
    let proof = reviewer("web").verify(&bound, now).await.expect("a bound token of web proves web");
    assert_eq!(proof.identity.to_string(), web);
    assert_eq!(proof.kind, TokenKind::ServiceAccount { pod: format!("{ns}/web-0") });

    // Through the CA, as Certify sees it: a certificate for web.
    let state = cluster.dir().join(format!("{ns}-ca-state"));
    let settings = CaSettings {
        trust_domain: TD.to_owned(),
        issuer: IssuerSource::StateDir(state.clone()),
        trust_anchors: None,
        tokens: None,
        state_dir: Some(state),
        lifetime: Duration::from_secs(3600),
    };
    let metrics = Arc::new(Metrics::default());
    let ca = Ca::open(settings, metrics.clone(), now).expect("the CA opens").with_verifier(Arc::new(reviewer("web")));
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("a P-256 key");
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = vec![rcgen::SanType::URI(web.clone().try_into().expect("a URI"))];
    let csr = params.serialize_request(&key).expect("a CSR").der().to_vec();
    let issued = ca.certify(&web, &csr, &bound, now).await.expect("Certify with the bound token");
    assert_eq!(issued.identity.to_string(), web);
    assert_eq!(issued.proven_by, TokenKind::ServiceAccount { pod: format!("{ns}/web-0") });
    // Kubernetes tokens are not single use: the proxy may retry with it.
    ca.certify(&web, &csr, &bound, now).await.expect("the same token again");
    let api = format!("spiffe://{TD}/ns/{ns}/sa/api");
    let e = ca.certify(&api, &csr, &bound, now).await.expect_err("web's token for api");
    assert_eq!(e.reason(), Reason::IdentityMismatch, "{e}");

    // The control plane sees web-0 run as another service account.
    let e = reviewer("api").verify(&bound, now).await.expect_err("web-0 runs as api");
    assert_eq!(
        e,
        TokenError::PodServiceAccount { pod: format!("{ns}/web-0"), runs_as: "api".into(), token_for: "web".into() }
    );

    // A token for another audience: the API server refuses it for ours.
    let other = create_token(
        cluster,
        &ns,
        "web",
        &["--audience", "other", "--bound-object-kind", "Pod", "--bound-object-name", "web-0"],
    );
    let e = reviewer("web").verify(&other, now).await.expect_err("audience other");
    let why = not_authenticated(&e);
    assert!(why.contains(r#"token audiences ["other"] is invalid for the target audiences ["weft"]"#), "{why}");
    let e = ca.certify(&web, &csr, &other, now).await.expect_err("audience other");
    assert_eq!(e.reason(), Reason::TokenRefused, "{e}");

    // A token bound to nothing outlives every Pod: refused.
    let unbound = create_token(cluster, &ns, "web", &["--audience", "weft"]);
    let e = reviewer("web").verify(&unbound, now).await.expect_err("unbound");
    assert_eq!(e, TokenError::NotBoundToPod { service_account: format!("{ns}/web") });
    assert!(e.to_string().contains("--bound-object-kind Pod"), "{e}");

    // Garbage and Weft's own tokens are not sent to the API server.
    for token in ["garbage", "not.a.jwt!", "weft-renewal.00", "weft-bootstrap.a.b"] {
        let started = Instant::now();
        let e = reviewer("web").verify(token, now).await.expect_err(token);
        assert!(matches!(e, TokenError::Unknown(_)), "{token}: {e:?}");
        assert!(started.elapsed() < Duration::from_secs(1), "{token}: {:?}", started.elapsed());
        let started = Instant::now();
        let e = ca.certify(&web, &csr, token, now).await.expect_err(token);
        assert_eq!(e.reason(), Reason::TokenUnknown, "{token}: {e}");
        assert!(started.elapsed() < Duration::from_secs(1), "{token}: {:?}", started.elapsed());
    }

    // Without the control plane's role (the namespace's default account):
    // the review itself is forbidden, and the error says what is missing.
    let unprivileged = client_as(cluster, &ns, "default").await;
    let e = TokenReviewer::new(unprivileged, TD, pods_of(&ns, "web"))
        .verify(&bound, now)
        .await
        .expect_err("no RBAC for tokenreviews");
    let TokenError::ReviewFailed(why) = &e else { panic!("{e:?}") };
    assert!(why.contains("403") && why.contains("tokenreviews"), "{why}");
    assert!(e.to_string().contains("could not be asked"), "{e}");
    assert!(!e.to_string().contains(&bound), "the token is in the error");
    assert_eq!(metrics.certify_refusals(Reason::TokenRefused), 1);
}

/// The API server refuses a token once the Pod it is bound to is gone, even
/// while the control plane's view still has that Pod.
#[tokio::test]
async fn a_token_of_a_deleted_pod_is_refused_by_the_api_server() {
    let cluster = KubeCluster::shared();
    let client = control_plane_client(cluster).await;
    let ns = namespace_with_web_0(cluster, "gone");
    create_pod(cluster, &ns, "web-1", "web");
    let reviewer = TokenReviewer::new(client, TD, pods_of(&ns, "web"));

    // Never reviewed while the Pod lived: refused as soon as it is deleted.
    let token = create_token(cluster, &ns, "web", &bound_to("web-1"));
    cluster.kubectl(&["delete", "pod", "web-1", "-n", &ns, "--wait=true"]);
    let e = reviewer.verify(&token, SystemTime::now()).await.expect_err("the Pod is gone");
    let why = not_authenticated(&e);
    // The API server does not say why (the Pod is gone), only that it is void.
    assert!(why.contains("service account token has been invalidated"), "{why}");

    // Reviewed while the Pod lived: the API server caches a successful review
    // for a while (kube-apiserver's token cache, 10 s), then refuses it too.
    create_pod(cluster, &ns, "web-2", "web");
    let token2 = create_token(cluster, &ns, "web", &bound_to("web-2"));
    reviewer.verify(&token2, SystemTime::now()).await.expect("accepted while web-2 lives");
    cluster.kubectl(&["delete", "pod", "web-2", "-n", &ns, "--wait=true"]);
    let deleted = Instant::now();
    let why = loop {
        match reviewer.verify(&token2, SystemTime::now()).await {
            Err(e) => break not_authenticated(&e).to_owned(),
            Ok(_) if deleted.elapsed() < Duration::from_secs(30) => {
                tokio::time::sleep(Duration::from_millis(250)).await
            }
            Ok(p) => panic!("still accepted 30 s after its Pod was deleted: {p:?}"),
        }
    };
    eprintln!("refused {:?} after the Pod was deleted: {why}", deleted.elapsed());
    assert!(why.contains("service account token has been invalidated"), "{why}");
}

/// A token signed with the cluster's own service-account key: accepted while
/// fresh (so the signature, issuer and claims are right), refused once
/// expired (so the refusal is for the expiry alone).
#[tokio::test]
async fn a_self_minted_token_is_accepted_fresh_and_refused_expired() {
    let cluster = KubeCluster::shared();
    let client = control_plane_client(cluster).await;
    let ns = namespace_with_web_0(cluster, "minted");
    let reviewer = TokenReviewer::new(client, TD, pods_of(&ns, "web"));

    // What the API server puts in its own tokens: the issuer it was started
    // with (OIDC discovery) and the key id of its signing key (a token's header).
    let discovery = cluster.kubectl(&["get", "--raw", "/.well-known/openid-configuration"]);
    let discovery: serde_json::Value = serde_json::from_str(&discovery.stdout).expect("OIDC discovery JSON");
    let issuer = discovery["issuer"].as_str().expect("an issuer").to_owned();
    let real = create_token(cluster, &ns, "web", &bound_to("web-0"));
    let real_header = jsonwebtoken::decode_header(&real).expect("a JWT header");
    assert_eq!(real_header.alg, jsonwebtoken::Algorithm::ES256, "the fixture's key is P-256");
    let uid = |kind: &str, name: &str| {
        cluster.get_json(&ns, &[kind, name])["metadata"]["uid"].as_str().expect("a uid").to_owned()
    };
    let (sa_uid, pod_uid) = (uid("serviceaccount", "web"), uid("pod", "web-0"));

    let pem = std::fs::read(cluster.dir().join("pki/sa.key")).expect("the fixture's sa.key");
    let key = jsonwebtoken::EncodingKey::from_ec_pem(&pem).expect("a PKCS#8 P-256 key");
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = real_header.kid.clone();
    let unix = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs();
    let mint = |issued_at: u64, expires: u64| {
        let claims = serde_json::json!({
            "iss": issuer,
            "aud": ["weft"],
            "sub": format!("system:serviceaccount:{ns}:web"),
            "iat": issued_at,
            "nbf": issued_at,
            "exp": expires,
            "jti": format!("weft-tests-{issued_at}-{expires}"),
            "kubernetes.io": {
                "namespace": ns,
                "serviceaccount": {"name": "web", "uid": sa_uid},
                "pod": {"name": "web-0", "uid": pod_uid},
            },
        });
        jsonwebtoken::encode(&header, &claims, &key).expect("signing")
    };

    let fresh = mint(unix - 10, unix + 600);
    let proof = reviewer.verify(&fresh, SystemTime::now()).await.expect("a fresh self-minted token is accepted");
    assert_eq!(proof.identity.to_string(), format!("spiffe://{TD}/ns/{ns}/sa/web"));

    // Past the API server's leeway for clock skew (a minute).
    let expired = mint(unix - 7200, unix - 3600);
    let e = reviewer.verify(&expired, SystemTime::now()).await.expect_err("expired");
    let why = not_authenticated(&e);
    assert!(why.contains("service account token has expired"), "{why}");
}

/// An API server that cannot be reached, or answers 5xx, is not a verdict
/// on the token: the error says it could not be asked (gRPC UNAVAILABLE,
/// and the proxy retries Certify).
#[tokio::test]
async fn an_unreachable_or_failing_api_server_is_not_a_verdict() {
    let pods = pods_of("default", "web");
    let jwt = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln";

    // Nothing listens on a port just released.
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind").local_addr().expect("addr").port();
    let config = kube::Config::new(format!("http://127.0.0.1:{port}").parse().expect("a URI"));
    let reviewer = TokenReviewer::new(kube::Client::try_from(config).expect("a client"), TD, pods.clone());
    let e = reviewer.verify(jwt, SystemTime::now()).await.expect_err("unreachable");
    assert!(matches!(e, TokenError::ReviewFailed(_)), "{e:?}");
    assert!(e.to_string().contains("could not be asked"), "{e}");
    // Garbage is not sent at all: the same unreachable server is not asked.
    let e = reviewer.verify("garbage", SystemTime::now()).await.expect_err("garbage");
    assert_eq!(e, TokenError::Unknown("token"));

    // An API server that answers 503 to everything.
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        while let Ok((mut conn, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf).await;
            let body = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"etcd is down","reason":"ServiceUnavailable","code":503}"#;
            let head = format!(
                "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(head.as_bytes()).await;
            let _ = conn.write_all(body.as_bytes()).await;
        }
    });
    let mut config = kube::Config::new(format!("http://{addr}").parse().expect("a URI"));
    // kube's default client retries a 503 (up to 15 times, backing off):
    // the review's timeout bounds that.
    let client = kube::Client::try_from(config.clone()).expect("a client");
    let started = Instant::now();
    let e = TokenReviewer::new(client, TD, pods.clone())
        .with_timeout(Duration::from_secs(2))
        .verify(jwt, SystemTime::now())
        .await
        .expect_err("503, retried");
    assert_eq!(e, TokenError::ReviewFailed("no answer within 2s".into()));
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
    // Without kube's retries, the API server's own words.
    config.default_retry = false;
    let client = kube::Client::try_from(config).expect("a client");
    let e = TokenReviewer::new(client, TD, pods).verify(jwt, SystemTime::now()).await.expect_err("503");
    let TokenError::ReviewFailed(why) = &e else { panic!("{e:?}") };
    assert!(why.contains("503") && why.contains("etcd is down"), "{why}");
}
