//! Kubernetes service-account tokens as proof of identity: a
//! [`TokenVerifier`] that asks the API server (`TokenReview`) who a token
//! is, then checks the Pod it is bound to against the control plane's own
//! view of the cluster.
//!
//! ```text
//!  token ─► weft-renewal.* / weft-bootstrap.* / not a JWT ─► Unknown (never sent)
//!    │
//!    └─► POST authentication.k8s.io/v1 TokenReview {token, audiences: [weft]}
//!           │  no answer, 5xx, RBAC refusal ─────────────► ReviewFailed (Certify is retried)
//!           ▼
//!        review_result(status)                                     (pure, table-tested)
//!           authenticated?            else NotAuthenticated(status.error)
//!           system:serviceaccount:NS:SA?   else NotServiceAccount
//!           status.audiences ∋ weft?  else WrongAudience
//!           extra pod-name, pod-uid?  else NotBoundToPod
//!           PodLookup(NS, POD, UID) runs as SA?  else PodUnknown / PodServiceAccount
//!           ▼
//!        Proof { spiffe://TD/ns/NS/sa/SA, ServiceAccount { pod: NS/POD } }
//! ```
//!
//! Only Pod-bound tokens are accepted: a kubelet-projected token (or one from
//! `kubectl create token SA --bound-object-kind Pod --bound-object-name POD`)
//! carries the Pod's name and UID, and the API server itself refuses it once
//! that Pod is gone or was replaced by one of another UID. An unbound token
//! (a legacy Secret, or `kubectl create token SA`) lives on however long it
//! was minted for, whatever happens to the workload, so it proves too little.
//!
//! The audience matters as much: a token for the API server's own audience
//! (every Pod has one mounted by default) must not be usable here, or anyone
//! who sees such a token could get a mesh certificate for it. Proxies mount
//! a projected token with `audience: weft` (see `--audience`).
//!
//! Kubernetes tokens are not single use: the same projected token is
//! presented again after a failed Certify, and its lifetime (and the Pod's)
//! bounds it instead.
//!
//! The API server caches a successful review for 10 s (kube-apiserver's
//! token cache; measured in `tests/tests/kube_identity.rs`): that long after
//! a Pod is deleted, a token it was already reviewed for still authenticates.
//! The [`PodLookup`] closes that window once the control plane's index has
//! seen the delete.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use kube::api::{Api, PostParams};

use super::SpiffeId;
use super::tokens::{BOOTSTRAP_PREFIX, MAX_TOKEN_BYTES, Proof, RENEWAL_PREFIX, TokenError, TokenKind, TokenVerifier};

/// The audience asked for when none is configured: proxies mount a
/// projected service-account token with `audience: weft`.
pub const DEFAULT_AUDIENCE: &str = "weft";
/// How long one TokenReview may take before Certify is answered with
/// [`TokenError::ReviewFailed`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// `status.user.extra` key of the Pod a token is bound to (set by the API
/// server for Pod-bound tokens).
pub const EXTRA_POD_NAME: &str = "authentication.kubernetes.io/pod-name";
/// `status.user.extra` key of that Pod's UID.
pub const EXTRA_POD_UID: &str = "authentication.kubernetes.io/pod-uid";
/// The username prefix of service accounts: `system:serviceaccount:NS:SA`.
const SA_USER_PREFIX: &str = "system:serviceaccount:";
/// Text from the API server is cut to this many characters in errors.
const MAX_TEXT: usize = 300;

/// What the control plane knows of a Pod a token is bound to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodCheck {
    /// The Pod is in the control plane's view and runs as this service
    /// account (`spec.serviceAccountName`).
    RunsAs(String),
    /// The control plane does not know this Pod (not seen yet, deleted, or
    /// known with another UID).
    Unknown,
}

/// The control plane's view of Pods, asked for the Pod a token is bound to:
/// `pod(namespace, name, uid)`. A plain function of the index, so that
/// [`review_result`] stays a pure function of its inputs.
///
/// The control plane plugs in its index: Pods are `Workload`s named
/// `NAMESPACE/POD` with their `service_account`; a lookup that does not keep
/// UIDs may ignore `uid` (the API server has already checked that the Pod of
/// that name has that UID). Any `Fn(&str, &str, &str) -> PodCheck` is one.
pub trait PodLookup: Send + Sync {
    fn pod(&self, namespace: &str, name: &str, uid: &str) -> PodCheck;
}

impl<F> PodLookup for F
where
    F: Fn(&str, &str, &str) -> PodCheck + Send + Sync,
{
    fn pod(&self, namespace: &str, name: &str, uid: &str) -> PodCheck {
        self(namespace, name, uid)
    }
}

/// Checks Kubernetes service-account tokens with `TokenReview`. Give it to
/// the CA with [`super::Ca::with_verifier`].
pub struct TokenReviewer {
    client: kube::Client,
    trust_domain: String,
    audience: String,
    timeout: Duration,
    pods: Arc<dyn PodLookup>,
}

impl fmt::Debug for TokenReviewer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenReviewer")
            .field("trust_domain", &self.trust_domain)
            .field("audience", &self.audience)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl TokenReviewer {
    /// Reviews tokens with `client` (which must be allowed to create
    /// `tokenreviews.authentication.k8s.io`, as
    /// `manifests/control-plane-rbac.yaml` grants), for audience
    /// [`DEFAULT_AUDIENCE`], proving identities of `trust_domain`; `pods` is
    /// the control plane's view of Pods.
    ///
    /// kube's default client retries 429, 503 and 504 answers itself (up
    /// to 15 times, backing off); the review's timeout bounds that, and
    /// Certify then fails as retryable.
    pub fn new(client: kube::Client, trust_domain: &str, pods: Arc<dyn PodLookup>) -> Self {
        Self {
            client,
            trust_domain: trust_domain.to_owned(),
            audience: DEFAULT_AUDIENCE.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            pods,
        }
    }

    /// The audience the tokens must be for (default [`DEFAULT_AUDIENCE`]).
    pub fn with_audience(mut self, audience: &str) -> Self {
        audience.clone_into(&mut self.audience);
        self
    }

    /// How long one review may take (default [`DEFAULT_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// Posts the TokenReview; the API server's status, or why it could not
    /// be had.
    async fn review(&self, token: &str) -> Result<Option<TokenReviewStatus>, TokenError> {
        let review = TokenReview {
            spec: TokenReviewSpec { token: token.to_owned(), audiences: Some(vec![self.audience.clone()]) },
            ..TokenReview::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        match tokio::time::timeout(self.timeout, api.create(&PostParams::default(), &review)).await {
            Ok(Ok(reviewed)) => Ok(reviewed.status),
            Ok(Err(e)) => Err(TokenError::ReviewFailed(describe_kube_error(&e))),
            Err(_) => Err(TokenError::ReviewFailed(format!("no answer within {:?}", self.timeout))),
        }
    }
}

#[tonic::async_trait]
impl TokenVerifier for TokenReviewer {
    async fn verify(&self, token: &str, _now: SystemTime) -> Result<Proof, TokenError> {
        // Expiry is the API server's to judge, on its own clock.
        let token = token.trim();
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLong);
        }
        if !sendable(token) {
            return Err(TokenError::Unknown(if token.starts_with(RENEWAL_PREFIX) { "renewal token" } else { "token" }));
        }
        let status = self.review(token).await?;
        review_result(status.as_ref(), &self.audience, &self.trust_domain, &*self.pods)
    }
}

/// Whether `token` may be sent to the API server: a JWT (three non-empty
/// base64url segments), and none of Weft's own tokens, which would only
/// leak a secret to another system for nothing.
pub fn sendable(token: &str) -> bool {
    if token.starts_with(RENEWAL_PREFIX) || token.starts_with(BOOTSTRAP_PREFIX) {
        return false;
    }
    let segments: Vec<&str> = token.split('.').collect();
    segments.len() == 3
        && segments
            .iter()
            .all(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
}

/// What a TokenReview's `status` proves, for tokens of `audience`, as an
/// identity of `trust_domain`, given the control plane's view of Pods.
pub fn review_result(
    status: Option<&TokenReviewStatus>,
    audience: &str,
    trust_domain: &str,
    pods: &dyn PodLookup,
) -> Result<Proof, TokenError> {
    let Some(status) = status else {
        return Err(TokenError::ReviewFailed("the TokenReview came back without a status".to_owned()));
    };
    if status.authenticated != Some(true) {
        let error = status.error.as_deref().filter(|e| !e.is_empty()).unwrap_or("no reason given");
        return Err(TokenError::NotAuthenticated(bounded(error)));
    }
    let user = status.user.as_ref();
    let username = user.and_then(|u| u.username.as_deref()).unwrap_or_default();
    let Some((namespace, service_account)) = service_account_of(username) else {
        return Err(TokenError::NotServiceAccount(bounded(username)));
    };
    let identity: SpiffeId = format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}")
        .parse()
        .map_err(|_| TokenError::NotServiceAccount(bounded(username)))?;
    let audiences = status.audiences.as_deref().unwrap_or_default();
    if !audiences.iter().any(|a| a == audience) {
        return Err(TokenError::WrongAudience {
            audience: audience.to_owned(),
            got: audiences.iter().take(10).map(|a| bounded(a)).collect(),
        });
    }
    let extra = |key: &str| -> Option<&str> {
        match user?.extra.as_ref()?.get(key)?.as_slice() {
            [one] if !one.is_empty() => Some(one),
            _ => None,
        }
    };
    let (Some(pod), Some(uid)) = (extra(EXTRA_POD_NAME), extra(EXTRA_POD_UID)) else {
        return Err(TokenError::NotBoundToPod { service_account: format!("{namespace}/{service_account}") });
    };
    let pod_name = format!("{namespace}/{}", bounded(pod));
    match pods.pod(namespace, pod, uid) {
        PodCheck::RunsAs(sa) if sa == service_account => {
            Ok(Proof { identity, kind: TokenKind::ServiceAccount { pod: pod_name } })
        }
        PodCheck::RunsAs(sa) => Err(TokenError::PodServiceAccount {
            pod: pod_name,
            runs_as: bounded(&sa),
            token_for: service_account.to_owned(),
        }),
        PodCheck::Unknown => Err(TokenError::PodUnknown(pod_name)),
    }
}

/// `system:serviceaccount:NS:SA` → `(NS, SA)`.
fn service_account_of(username: &str) -> Option<(&str, &str)> {
    let (ns, sa) = username.strip_prefix(SA_USER_PREFIX)?.split_once(':')?;
    (!ns.is_empty() && !sa.is_empty() && !sa.contains(':')).then_some((ns, sa))
}

fn bounded(text: &str) -> String {
    text.chars().take(MAX_TEXT).collect()
}

/// Why the API server could not be asked, for an operator: the HTTP status
/// and the API server's message, or the transport error and its causes.
fn describe_kube_error(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) if s.code == 401 || s.code == 403 => format!(
            "the API server answered {} {}: {}; the control plane's service account needs `create` on \
             tokenreviews.authentication.k8s.io (manifests/control-plane-rbac.yaml)",
            s.code,
            s.reason,
            bounded(&s.message)
        ),
        kube::Error::Api(s) => format!("the API server answered {} {}: {}", s.code, s.reason, bounded(&s.message)),
        other => {
            let mut text = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(s) = source {
                let next = s.to_string();
                if !text.contains(&next) {
                    text.push_str(": ");
                    text.push_str(&next);
                }
                source = s.source();
            }
            bounded(&text)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::authentication::v1::UserInfo;

    use super::*;

    const TD: &str = "cluster.local";

    /// A status as the API server answers for a token of `user`, for
    /// `audiences`, bound to Pod `pod` (name, uid) if given.
    fn status(user: &str, audiences: &[&str], pod: Option<(&str, &str)>) -> TokenReviewStatus {
        let mut extra = BTreeMap::new();
        extra.insert("authentication.kubernetes.io/credential-id".to_owned(), vec!["JTI=1234".to_owned()]);
        if let Some((name, uid)) = pod {
            extra.insert(EXTRA_POD_NAME.to_owned(), vec![name.to_owned()]);
            extra.insert(EXTRA_POD_UID.to_owned(), vec![uid.to_owned()]);
        }
        TokenReviewStatus {
            authenticated: Some(true),
            audiences: Some(audiences.iter().map(|a| (*a).to_owned()).collect()),
            error: None,
            user: Some(UserInfo {
                username: Some(user.to_owned()),
                uid: Some("c0ffee".to_owned()),
                groups: Some(vec!["system:serviceaccounts".to_owned(), "system:authenticated".to_owned()]),
                extra: Some(extra),
            }),
        }
    }

    /// The index of the table: web-0 runs as web; api-0 as api.
    fn pods(namespace: &str, name: &str, _uid: &str) -> PodCheck {
        match (namespace, name) {
            ("shop", "web-0") => PodCheck::RunsAs("web".to_owned()),
            ("shop", "api-0") => PodCheck::RunsAs("api".to_owned()),
            _ => PodCheck::Unknown,
        }
    }

    #[test]
    fn a_review_proves_a_pods_service_account_or_says_why_not() {
        let web = "system:serviceaccount:shop:web";
        let bound = Some(("web-0", "uid-1"));
        let refused = |error: Option<&str>| TokenReviewStatus {
            authenticated: Some(false),
            error: error.map(str::to_owned),
            ..TokenReviewStatus::default()
        };
        let mut two_pods = status(web, &["weft"], bound);
        if let Some(extra) = two_pods.user.as_mut().and_then(|u| u.extra.as_mut()) {
            extra.insert(EXTRA_POD_NAME.to_owned(), vec!["web-0".to_owned(), "web-1".to_owned()]);
        }
        let cases: Vec<(&str, Option<TokenReviewStatus>, Result<Proof, TokenError>)> = vec![
            (
                "bound to a Pod that runs as its service account",
                Some(status(web, &["weft"], bound)),
                Ok(Proof {
                    identity: SpiffeId::new(TD, "shop", "web"),
                    kind: TokenKind::ServiceAccount { pod: "shop/web-0".into() },
                }),
            ),
            (
                "also for other audiences",
                Some(status(web, &["other", "weft"], bound)),
                Ok(Proof {
                    identity: SpiffeId::new(TD, "shop", "web"),
                    kind: TokenKind::ServiceAccount { pod: "shop/web-0".into() },
                }),
            ),
            (
                "refused by the API server",
                Some(refused(Some("[invalid bearer token, service account token has expired]"))),
                Err(TokenError::NotAuthenticated("[invalid bearer token, service account token has expired]".into())),
            ),
            (
                "refused without a reason",
                Some(refused(None)),
                Err(TokenError::NotAuthenticated("no reason given".into())),
            ),
            (
                "authenticated unset",
                Some(TokenReviewStatus { authenticated: None, ..status(web, &["weft"], bound) }),
                Err(TokenError::NotAuthenticated("no reason given".into())),
            ),
            (
                "a person, not a service account",
                Some(status("alice@example.com", &["weft"], bound)),
                Err(TokenError::NotServiceAccount("alice@example.com".into())),
            ),
            (
                "a node",
                Some(status("system:node:n1", &["weft"], bound)),
                Err(TokenError::NotServiceAccount("system:node:n1".into())),
            ),
            (
                "a malformed service-account name",
                Some(status("system:serviceaccount:shop", &["weft"], bound)),
                Err(TokenError::NotServiceAccount("system:serviceaccount:shop".into())),
            ),
            (
                "a name that cannot be a SPIFFE path segment",
                Some(status("system:serviceaccount:shop:w/eb", &["weft"], bound)),
                Err(TokenError::NotServiceAccount("system:serviceaccount:shop:w/eb".into())),
            ),
            (
                "no username",
                Some(TokenReviewStatus { user: None, ..status(web, &["weft"], bound) }),
                Err(TokenError::NotServiceAccount(String::new())),
            ),
            (
                "for the API server's audience (an audience-unaware answer)",
                Some(status(web, &[], bound)),
                Err(TokenError::WrongAudience { audience: "weft".into(), got: vec![] }),
            ),
            (
                "for another audience",
                Some(status(web, &["vault"], bound)),
                Err(TokenError::WrongAudience { audience: "weft".into(), got: vec!["vault".into()] }),
            ),
            (
                "not bound to a Pod",
                Some(status(web, &["weft"], None)),
                Err(TokenError::NotBoundToPod { service_account: "shop/web".into() }),
            ),
            (
                "a Pod name but no UID",
                Some({
                    let mut s = status(web, &["weft"], bound);
                    if let Some(extra) = s.user.as_mut().and_then(|u| u.extra.as_mut()) {
                        extra.remove(EXTRA_POD_UID);
                    }
                    s
                }),
                Err(TokenError::NotBoundToPod { service_account: "shop/web".into() }),
            ),
            ("two Pod names", Some(two_pods), Err(TokenError::NotBoundToPod { service_account: "shop/web".into() })),
            (
                "a Pod the control plane does not know",
                Some(status(web, &["weft"], Some(("web-9", "uid-9")))),
                Err(TokenError::PodUnknown("shop/web-9".into())),
            ),
            (
                "a Pod that runs as another service account",
                Some(status(web, &["weft"], Some(("api-0", "uid-2")))),
                Err(TokenError::PodServiceAccount {
                    pod: "shop/api-0".into(),
                    runs_as: "api".into(),
                    token_for: "web".into(),
                }),
            ),
            ("no status", None, Err(TokenError::ReviewFailed("the TokenReview came back without a status".into()))),
        ];
        for (name, status, want) in cases {
            assert_eq!(review_result(status.as_ref(), "weft", TD, &pods), want, "{name}");
        }
    }

    #[test]
    fn refusals_say_what_to_fix() {
        let cases = [
            (
                TokenError::NotAuthenticated("token has expired".into()),
                "did not authenticate the token: token has expired",
            ),
            (TokenError::NotServiceAccount("alice".into()), "`alice`, not a service account"),
            (
                TokenError::WrongAudience { audience: "weft".into(), got: vec![] },
                "not for audience `weft` (its audiences: none",
            ),
            (TokenError::NotBoundToPod { service_account: "shop/web".into() }, "--bound-object-kind Pod"),
            (TokenError::PodUnknown("shop/web-9".into()), "Pod `shop/web-9`"),
            (
                TokenError::PodServiceAccount {
                    pod: "shop/api-0".into(),
                    runs_as: "api".into(),
                    token_for: "web".into(),
                },
                "runs as service account `api`, not `web`",
            ),
            (TokenError::ReviewFailed("connection refused".into()), "could not be asked"),
        ];
        for (e, want) in cases {
            assert!(e.to_string().contains(want), "{e}\nwant: {want}");
        }
    }

    #[test]
    fn only_jwts_that_are_not_weft_tokens_are_sent() {
        let cases = [
            ("eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln-_", true),
            ("weft-renewal.00.11", false),
            ("weft-bootstrap.aa.bb", false),
            ("garbage", false),
            ("a.b", false),
            ("a..c", false),
            ("a.b.c.d", false),
            ("a.b=.c", false),
            ("a.b c.d", false),
        ];
        for (token, want) in cases {
            assert_eq!(sendable(token), want, "{token}");
        }
    }

    #[test]
    fn a_closure_is_a_pod_lookup() {
        let lookup: Arc<dyn PodLookup> =
            Arc::new(
                |ns: &str, name: &str, _: &str| {
                    if ns == "a" && name == "b" { PodCheck::RunsAs("c".into()) } else { PodCheck::Unknown }
                },
            );
        assert_eq!(lookup.pod("a", "b", "u"), PodCheck::RunsAs("c".into()));
        assert_eq!(lookup.pod("a", "x", "u"), PodCheck::Unknown);
    }
}
