//! Tokens: what proves an identity to the CA.
//!
//! ```text
//!  Certify(token) ─► LocalTokens ── renewal token? (issued by a previous Certify)
//!                        │       └─ bootstrap token? (the tokens file, from `weft up`)
//!                        └─ unknown ─► other `TokenVerifier`s, in the order given to
//!                                      `Ca::with_verifier` (Kubernetes: `kubernetes::TokenReviewer`)
//!                                      ─► else refused
//! ```
//!
//! Only SHA-256 hashes of tokens are kept, on disk and in memory; a token
//! is never logged. Both kinds are single use: a token is consumed by the
//! `Certify` that presents it, and a used one is refused as reused even
//! before it expires. Used bootstrap hashes and outstanding renewal hashes
//! are written to `STATE_DIR/token-state.json` (when there is a state
//! directory) so that a restart neither makes a used token usable again nor
//! strands the proxies holding renewal tokens.
//!
//! # The tokens file
//!
//! ```yaml
//! tokens:
//!   - sha256: 5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8
//!     namespace: default
//!     serviceAccount: web
//!     workload: web-0
//!     expires: 2025-06-01T12:00:00Z
//! ```
//!
//! `sha256` is the hex SHA-256 of the token's text (UTF-8, surrounding
//! whitespace trimmed on both sides); the token proves `spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT`.
//! [`new_bootstrap_token`] and [`render_tokens_file`] make both halves.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::pki::{self, RandomUnavailable};
use super::{SpiffeId, write_private_file};
use crate::policy::ParseError;
use crate::policy::de::{Label, ObjectName, Scalar, Validate, checked_vec, scalar_de};

/// Longer tokens are refused unhashed (a Kubernetes JWT is ~1 KiB).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Under the state directory: used and outstanding token hashes.
pub const STATE_FILE: &str = "token-state.json";
/// Renewal tokens start with this, so that logs and errors can say which
/// kind a proxy sent without showing it.
pub const RENEWAL_PREFIX: &str = "weft-renewal.";
/// Suggested prefix for bootstrap tokens ([`new_bootstrap_token`]).
pub const BOOTSTRAP_PREFIX: &str = "weft-bootstrap.";

type Digest = [u8; 32];

/// Why a token proves nothing. Messages never include the token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("a token is required: the bootstrap token `weft up` gave this proxy, or the last renewal token")]
    Missing,
    #[error("the token is longer than {MAX_TOKEN_BYTES} bytes")]
    TooLong,
    #[error("unknown {0}; was the control plane's tokens file rewritten without it, or is it for another mesh?")]
    Unknown(&'static str),
    #[error("the {kind} expired at {at}; get a new one (`weft up` mints bootstrap tokens)")]
    Expired { kind: &'static str, at: String },
    #[error("the {0} was already used; tokens are single use — renew with the renewal token of the last Certify")]
    Reused(&'static str),
    /// A Kubernetes token the API server refused; holds its `status.error`.
    #[error("the Kubernetes API server did not authenticate the token: {0}")]
    NotAuthenticated(String),
    /// A Kubernetes token of a user that is not a service account.
    #[error("the token authenticates `{0}`, not a service account (system:serviceaccount:NAMESPACE:NAME)")]
    NotServiceAccount(String),
    /// A Kubernetes token the API server accepted for other audiences only.
    #[error(
        "the token is not for audience `{audience}` (its audiences: {}); mount a projected service-account token with `audience: {audience}`",
        list(got)
    )]
    WrongAudience { audience: String, got: Vec<String> },
    /// A Kubernetes token not bound to a Pod: it outlives any workload.
    #[error(
        "the token of service account `{service_account}` is not bound to a Pod; use the Pod's projected token (or `kubectl create token SA --bound-object-kind Pod --bound-object-name POD`)"
    )]
    NotBoundToPod { service_account: String },
    /// A Kubernetes token bound to a Pod (`NS/POD`) the control plane does not know.
    #[error(
        "the token is bound to Pod `{0}`, which the control plane does not know; if the Pod was just created, Certify succeeds once the control plane has seen it"
    )]
    PodUnknown(String),
    /// A Kubernetes token bound to a Pod that runs as another service account.
    #[error("Pod `{pod}` runs as service account `{runs_as}`, not `{token_for}` whose token this is")]
    PodServiceAccount { pod: String, runs_as: String, token_for: String },
    /// The Kubernetes API server could not be asked (unreachable, 5xx,
    /// timeout, RBAC): nothing is known of the token; retrying may work.
    #[error("the Kubernetes API server could not be asked to review the token ({0}); Certify can be retried")]
    ReviewFailed(String),
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.iter().map(|a| format!("`{a}`")).collect::<Vec<_>>().join(", ")
    }
}

impl TokenError {
    fn unknown(token: &str) -> Self {
        TokenError::Unknown(kind_of(token))
    }
}

fn kind_of(token: &str) -> &'static str {
    if token.starts_with(RENEWAL_PREFIX) { "renewal token" } else { "token" }
}

/// How the identity was proven.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenKind {
    /// A local-mesh bootstrap token for this workload.
    Bootstrap { workload: String },
    /// The renewal token of a previous Certify.
    Renewal,
    /// A Kubernetes service-account token checked with TokenReview, bound
    /// to this Pod (`NAMESPACE/POD`).
    ServiceAccount { pod: String },
}

/// What a verified token proves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proof {
    pub identity: SpiffeId,
    pub kind: TokenKind,
}

/// The boundary between the CA and whatever vouches for tokens: the local
/// store below, and [`super::kubernetes::TokenReviewer`], which asks the
/// Kubernetes API server.
#[tonic::async_trait]
pub trait TokenVerifier: Send + Sync + fmt::Debug {
    /// Checks `token` at `now` and returns what it proves, consuming it if
    /// it is single use. [`TokenError::Unknown`] means "not mine": the CA
    /// then asks the next verifier.
    async fn verify(&self, token: &str, now: SystemTime) -> Result<Proof, TokenError>;
}

/// One bootstrap token of the tokens file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootstrapToken {
    pub sha256: Digest,
    pub identity: SpiffeId,
    pub workload: String,
    pub expires: SystemTime,
}

#[derive(Clone, Debug)]
struct Renewal {
    identity: SpiffeId,
    expires: SystemTime,
    used: bool,
}

#[derive(Debug, Default)]
struct Inner {
    bootstrap: HashMap<Digest, BootstrapToken>,
    /// Bootstrap hashes already consumed (kept even if the file drops them).
    used: HashSet<Digest>,
    renewals: HashMap<Digest, Renewal>,
}

/// Token counts for `/state`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenCounts {
    /// Bootstrap tokens in the tokens file.
    pub bootstrap: usize,
    /// Of those, how many were used.
    pub bootstrap_used: usize,
    /// Renewal tokens issued and not yet used or expired.
    pub renewals_outstanding: usize,
}

/// Bootstrap and renewal tokens of this control plane.
#[derive(Debug)]
pub struct LocalTokens {
    trust_domain: String,
    state_file: Option<PathBuf>,
    inner: Mutex<Inner>,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenStateError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is corrupt ({message}); move it away to start afresh (used bootstrap tokens become usable again)", path.display())]
    Corrupt { path: PathBuf, message: String },
}

/// `token-state.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StateFile {
    #[serde(default)]
    used_bootstrap: Vec<String>,
    #[serde(default)]
    renewals: Vec<RenewalRecord>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RenewalRecord {
    sha256: String,
    identity: String,
    expires_unix: i64,
    used: bool,
}

impl LocalTokens {
    /// A store that keeps its state under `state_dir`, if given, reloading
    /// what an earlier run left there.
    pub fn open(trust_domain: &str, state_dir: Option<&Path>) -> Result<Self, TokenStateError> {
        let state_file = state_dir.map(|d| d.join(STATE_FILE));
        let mut inner = Inner::default();
        if let Some(path) = &state_file {
            match std::fs::read(path) {
                Ok(bytes) => load_state(path, &bytes, &mut inner)?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(TokenStateError::Read { path: path.clone(), source }),
            }
        }
        Ok(Self { trust_domain: trust_domain.to_owned(), state_file, inner: Mutex::new(inner) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces the bootstrap tokens (the tokens file was (re)loaded);
    /// returns whether they changed.
    pub fn set_bootstrap(&self, tokens: Vec<BootstrapToken>) -> bool {
        let next: HashMap<Digest, BootstrapToken> = tokens.into_iter().map(|t| (t.sha256, t)).collect();
        let mut inner = self.lock();
        let changed = inner.bootstrap != next;
        inner.bootstrap = next;
        changed
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn counts(&self, now: SystemTime) -> TokenCounts {
        let inner = self.lock();
        TokenCounts {
            bootstrap: inner.bootstrap.len(),
            bootstrap_used: inner.bootstrap.keys().filter(|h| inner.used.contains(*h)).count(),
            renewals_outstanding: inner.renewals.values().filter(|r| !r.used && r.expires > now).count(),
        }
    }

    /// Mints a renewal token for `identity`, valid until `expires`.
    pub fn issue_renewal(
        &self,
        identity: &SpiffeId,
        expires: SystemTime,
        now: SystemTime,
    ) -> Result<String, RandomUnavailable> {
        let token = format!("{RENEWAL_PREFIX}{}", pki::hex(&pki::random::<32>()?));
        let mut inner = self.lock();
        inner.renewals.retain(|_, r| r.expires > now);
        inner.renewals.insert(hash(&token), Renewal { identity: identity.clone(), expires, used: false });
        self.persist(&inner);
        Ok(token)
    }

    /// Writes the state file. Called with the lock held so that writes
    /// land in the order of the changes they record; Certify is rare
    /// enough (once per proxy per renewal) for that to cost nothing.
    fn persist(&self, inner: &Inner) {
        let Some(path) = &self.state_file else { return };
        let mut state = StateFile {
            used_bootstrap: inner.used.iter().map(|h| pki::hex(h)).collect(),
            renewals: inner
                .renewals
                .iter()
                .map(|(h, r)| RenewalRecord {
                    sha256: pki::hex(h),
                    identity: r.identity.to_string(),
                    expires_unix: pki::unix_seconds(r.expires),
                    used: r.used,
                })
                .collect(),
        };
        state.used_bootstrap.sort();
        state.renewals.sort_by(|a, b| a.sha256.cmp(&b.sha256));
        let mut bytes = serde_json::to_vec_pretty(&state).unwrap_or_default();
        bytes.push(b'\n');
        if let Err(e) = write_private_file(path, &bytes) {
            // Refusing Certify for this would stop every renewal over a
            // full disk; the in-memory state is still right.
            tracing::error!(file = %path.display(), error = %e, "cannot save used tokens; a restart would forget them");
        }
    }
}

fn load_state(path: &Path, bytes: &[u8], inner: &mut Inner) -> Result<(), TokenStateError> {
    let corrupt = |message: String| TokenStateError::Corrupt { path: path.to_owned(), message };
    let state: StateFile = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
    for h in &state.used_bootstrap {
        inner.used.insert(pki::parse_sha256_hex(h).ok_or_else(|| corrupt(format!("bad hash `{h}`")))?);
    }
    for r in state.renewals {
        let h = pki::parse_sha256_hex(&r.sha256).ok_or_else(|| corrupt(format!("bad hash `{}`", r.sha256)))?;
        let identity = r.identity.parse().map_err(|e| corrupt(format!("{e}")))?;
        let expires =
            SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(r.expires_unix).unwrap_or(0));
        inner.renewals.insert(h, Renewal { identity, expires, used: r.used });
    }
    Ok(())
}

fn hash(token: &str) -> Digest {
    pki::sha256(token.as_bytes())
}

/// Checks length and presence; returns the token as hashed (surrounding
/// whitespace dropped: a token read from a file keeps its newline).
fn normalize(token: &str) -> Result<&str, TokenError> {
    let token = token.trim();
    if token.is_empty() {
        return Err(TokenError::Missing);
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::TooLong);
    }
    Ok(token)
}

#[tonic::async_trait]
impl TokenVerifier for LocalTokens {
    async fn verify(&self, token: &str, now: SystemTime) -> Result<Proof, TokenError> {
        self.verify_now(token, now)
    }
}

impl LocalTokens {
    /// [`TokenVerifier::verify`], synchronously.
    pub fn verify_now(&self, token: &str, now: SystemTime) -> Result<Proof, TokenError> {
        let token = normalize(token)?;
        let h = hash(token);
        let mut inner = self.lock();
        if let Some(r) = inner.renewals.get_mut(&h) {
            if r.used {
                return Err(TokenError::Reused("renewal token"));
            }
            if r.expires <= now {
                return Err(TokenError::Expired { kind: "renewal token", at: pki::rfc3339(r.expires) });
            }
            r.used = true;
            let proof = Proof { identity: r.identity.clone(), kind: TokenKind::Renewal };
            self.persist(&inner);
            return Ok(proof);
        }
        if inner.used.contains(&h) {
            return Err(TokenError::Reused("bootstrap token"));
        }
        let Some(b) = inner.bootstrap.get(&h) else { return Err(TokenError::unknown(token)) };
        if b.expires <= now {
            return Err(TokenError::Expired { kind: "bootstrap token", at: pki::rfc3339(b.expires) });
        }
        let proof = Proof { identity: b.identity.clone(), kind: TokenKind::Bootstrap { workload: b.workload.clone() } };
        inner.used.insert(h);
        self.persist(&inner);
        Ok(proof)
    }
}

// ---- the tokens file ----

/// A SHA-256 in hex.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Sha256Hex(Digest);

impl Scalar for Sha256Hex {
    const EXPECTING: &'static str = "64 hex digits";
    fn from_str(s: &str) -> Result<Self, String> {
        pki::parse_sha256_hex(s).map(Self).ok_or_else(|| {
            format!("`{s}` is not a SHA-256 (64 hex digits); store the token's hash, never the token itself")
        })
    }
}
scalar_de!(Sha256Hex, deserialize_text);

/// An RFC 3339 timestamp (`2025-06-01T12:00:00Z`, offsets allowed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Timestamp(SystemTime);

impl Scalar for Timestamp {
    const EXPECTING: &'static str = "an RFC 3339 time";
    fn from_str(s: &str) -> Result<Self, String> {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .map(|t| Self(t.into()))
            .map_err(|e| format!("`{s}` is not an RFC 3339 time like 2025-06-01T12:00:00Z ({e})"))
    }
}
scalar_de!(Timestamp, deserialize_text);

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TokenSpec {
    sha256: Sha256Hex,
    namespace: Label,
    service_account: ObjectName,
    workload: ObjectName,
    expires: Timestamp,
}

impl Validate for TokenSpec {
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default, deserialize_with = "checked_vec")]
    tokens: Vec<TokenSpec>,
}

/// Parses a tokens file for `trust_domain`. An empty file means no tokens.
pub fn parse_tokens(text: &str, trust_domain: &str) -> Result<Vec<BootstrapToken>, ParseError> {
    let file: Option<TokensFile> = Option::deserialize(serde_yaml_ng::Deserializer::from_str(text))
        .map_err(|e| ParseError::from_yaml(&e, 0, None))?;
    let specs = file.map(|f| f.tokens).unwrap_or_default();
    let mut seen: HashMap<Digest, usize> = HashMap::new();
    let mut out = Vec::with_capacity(specs.len());
    for (i, s) in specs.into_iter().enumerate() {
        if let Some(first) = seen.insert(s.sha256.0, i) {
            return Err(ParseError {
                line: None,
                column: None,
                document: 0,
                object: None,
                message: format!(
                    "tokens[{i}].sha256: the same hash as tokens[{first}]; each token is for one workload"
                ),
            });
        }
        out.push(BootstrapToken {
            sha256: s.sha256.0,
            identity: SpiffeId::new(trust_domain, &s.namespace.0, &s.service_account.0),
            workload: s.workload.0,
            expires: s.expires.0,
        });
    }
    Ok(out)
}

/// One entry to write into a tokens file (for `weft up`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenEntry {
    /// [`token_sha256`] of the token.
    pub sha256: String,
    pub namespace: String,
    pub service_account: String,
    pub workload: String,
    /// RFC 3339, UTC.
    pub expires: String,
}

impl TokenEntry {
    pub fn new(token: &str, namespace: &str, service_account: &str, workload: &str, expires: SystemTime) -> Self {
        Self {
            sha256: token_sha256(token),
            namespace: namespace.to_owned(),
            service_account: service_account.to_owned(),
            workload: workload.to_owned(),
            expires: pki::rfc3339(expires),
        }
    }
}

/// A fresh bootstrap token: `weft-bootstrap.` and 64 hex digits (256
/// random bits). Hand it to one proxy; write only [`token_sha256`] of it.
pub fn new_bootstrap_token() -> Result<String, RandomUnavailable> {
    Ok(format!("{BOOTSTRAP_PREFIX}{}", pki::hex(&pki::random::<32>()?)))
}

/// The hex SHA-256 that a tokens file stores for `token`.
pub fn token_sha256(token: &str) -> String {
    pki::hex(&hash(token.trim()))
}

/// A tokens file holding `entries`.
pub fn render_tokens_file(entries: &[TokenEntry]) -> String {
    #[derive(Serialize)]
    struct File<'a> {
        tokens: &'a [TokenEntry],
    }
    let mut out = String::from("# Bootstrap tokens (hashes only): weft-control --tokens\n");
    out.push_str(&serde_yaml_ng::to_string(&File { tokens: entries }).unwrap_or_default());
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const TD: &str = "cluster.local";

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn store_with(dir: Option<&Path>, tokens: &[(&str, &str, SystemTime)]) -> LocalTokens {
        let store = LocalTokens::open(TD, dir).expect("open");
        let entries: Vec<TokenEntry> =
            tokens.iter().map(|(t, sa, exp)| TokenEntry::new(t, "default", sa, &format!("{sa}-0"), *exp)).collect();
        store.set_bootstrap(parse_tokens(&render_tokens_file(&entries), TD).expect("rendered file parses"));
        store
    }

    #[test]
    fn bootstrap_tokens_are_single_use_and_expire() {
        let store = store_with(None, &[("tok-a", "web", at(100)), ("tok-b", "api", at(100))]);
        let web = SpiffeId::new(TD, "default", "web");
        let cases: Vec<(&str, &str, u64, Result<Proof, TokenError>)> = vec![
            ("unknown", "nope", 0, Err(TokenError::Unknown("token"))),
            ("unknown renewal", "weft-renewal.00", 0, Err(TokenError::Unknown("renewal token"))),
            ("missing", "  ", 0, Err(TokenError::Missing)),
            (
                "first use (with a trailing newline)",
                "tok-a\n",
                10,
                Ok(Proof { identity: web, kind: TokenKind::Bootstrap { workload: "web-0".into() } }),
            ),
            ("reused before expiry", "tok-a", 11, Err(TokenError::Reused("bootstrap token"))),
            (
                "expired",
                "tok-b",
                100,
                Err(TokenError::Expired { kind: "bootstrap token", at: "2023-11-14T22:15:00Z".into() }),
            ),
        ];
        for (name, token, t, want) in cases {
            assert_eq!(store.verify_now(token, at(t)), want, "{name}");
        }
        assert_eq!(store.verify_now(&"x".repeat(MAX_TOKEN_BYTES + 1), at(0)), Err(TokenError::TooLong));
        assert_eq!(store.counts(at(0)), TokenCounts { bootstrap: 2, bootstrap_used: 1, renewals_outstanding: 0 });

        // Dropping a used token from the file does not make it unknown.
        store.set_bootstrap(Vec::new());
        assert_eq!(store.verify_now("tok-a", at(12)), Err(TokenError::Reused("bootstrap token")));
    }

    #[test]
    fn renewal_tokens_are_bound_single_use_and_expire() {
        let store = store_with(None, &[]);
        let web = SpiffeId::new(TD, "default", "web");
        let r1 = store.issue_renewal(&web, at(50), at(0)).expect("token");
        assert!(r1.starts_with(RENEWAL_PREFIX) && r1.len() == RENEWAL_PREFIX.len() + 64);
        let r2 = store.issue_renewal(&web, at(50), at(0)).expect("token");
        assert_ne!(r1, r2);
        assert_eq!(store.counts(at(0)).renewals_outstanding, 2);
        assert_eq!(store.verify_now(&r1, at(10)), Ok(Proof { identity: web.clone(), kind: TokenKind::Renewal }));
        assert_eq!(store.verify_now(&r1, at(11)), Err(TokenError::Reused("renewal token")));
        assert!(matches!(store.verify_now(&r2, at(50)), Err(TokenError::Expired { kind: "renewal token", .. })));
        // Expired renewals are forgotten at the next issue.
        let _r3 = store.issue_renewal(&web, at(200), at(100)).expect("token");
        assert_eq!(store.verify_now(&r1, at(101)), Err(TokenError::Unknown("renewal token")));
    }

    #[test]
    fn used_tokens_survive_a_restart_under_the_state_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        let web = SpiffeId::new(TD, "default", "web");
        let renewal = {
            let store = store_with(Some(dir.path()), &[("tok-a", "web", at(100))]);
            store.verify_now("tok-a", at(1)).expect("first use");
            store.issue_renewal(&web, at(100), at(1)).expect("token")
        };
        let text = std::fs::read_to_string(dir.path().join(STATE_FILE)).expect("state file");
        assert!(!text.contains("tok-a") && !text.contains(&renewal), "only hashes are stored:\n{text}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(STATE_FILE)).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }

        let store = store_with(Some(dir.path()), &[("tok-a", "web", at(100))]);
        assert_eq!(store.verify_now("tok-a", at(2)), Err(TokenError::Reused("bootstrap token")));
        assert_eq!(store.verify_now(&renewal, at(2)).map(|p| p.identity), Ok(web));

        std::fs::write(dir.path().join(STATE_FILE), "{not json").expect("write");
        let e = LocalTokens::open(TD, Some(dir.path())).expect_err("corrupt");
        assert!(e.to_string().contains("is corrupt"), "{e}");
    }

    #[test]
    fn tokens_file_errors_name_line_and_field() {
        let good = "tokens:\n  - sha256: 5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8\n    namespace: default\n    serviceAccount: web\n    workload: web-0\n    expires: 2030-01-01T00:00:00+02:00\n";
        let t = parse_tokens(good, TD).expect("valid");
        assert_eq!(t[0].identity.to_string(), "spiffe://cluster.local/ns/default/sa/web");
        assert_eq!(t[0].workload, "web-0");
        assert_eq!(t[0].expires, SystemTime::UNIX_EPOCH + Duration::from_secs(1_893_448_800));
        assert!(parse_tokens("", TD).expect("empty").is_empty());
        assert!(parse_tokens("tokens: []\n", TD).expect("none").is_empty());

        let cases = [
            (good.replace("5e88", "zz88"), (2, "tokens[0].sha256: `zz88")),
            (good.replace("sha256", "token"), (2, "tokens[0]: unknown field `token`")),
            (
                good.replace("namespace: default", "namespace: Default"),
                (3, "tokens[0].namespace: `Default` is not a DNS label"),
            ),
            (
                good.replace("2030-01-01T00:00:00+02:00", "tomorrow"),
                (6, "tokens[0].expires: `tomorrow` is not an RFC 3339 time"),
            ),
            (good.replace("    workload: web-0\n", ""), (2, "tokens[0]: missing field `workload`")),
        ];
        for (text, (line, want)) in cases {
            let e = parse_tokens(&text, TD).expect_err(&text);
            assert_eq!(e.line, Some(line), "{text}\n{e}");
            assert!(e.message.contains(want), "{text}\ngot:  {}\nwant: {want}", e.message);
        }
        let twice = format!("{good}{}", good.trim_start_matches("tokens:\n"));
        let e = parse_tokens(&twice, TD).expect_err("duplicate");
        assert!(e.message.contains("tokens[1].sha256: the same hash as tokens[0]"), "{e}");
    }

    #[test]
    fn minted_tokens_and_their_hashes() {
        let t = new_bootstrap_token().expect("token");
        assert!(t.starts_with(BOOTSTRAP_PREFIX) && t.len() == BOOTSTRAP_PREFIX.len() + 64);
        assert_ne!(t, new_bootstrap_token().expect("token"));
        assert_eq!(token_sha256("password"), "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8");
        assert_eq!(token_sha256("password\n"), token_sha256("password"));
    }
}
