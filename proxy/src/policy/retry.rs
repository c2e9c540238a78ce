//! Retry decisions: which outcomes of an attempt are retried, for which
//! requests, and how long to wait before the next attempt.
//!
//! `retry_on` conditions (compiled once into bit sets):
//!
//! | condition | retries |
//! | --- | --- |
//! | `5xx` | responses 500–599, and a per-try timeout (as the 504 it becomes) |
//! | `gateway-error` | 502, 503, 504, and a per-try timeout |
//! | `NNN` | that status (`504` also covers a per-try timeout) |
//! | `connect-failure` | the connection to the endpoint could not be made |
//! | `reset` | the stream or connection was reset before a response head |
//! | `cancelled`, `deadline-exceeded`, `resource-exhausted`, `internal`, `unavailable` | that `grpc-status` in the response head (trailers-only) or trailers |
//!
//! Safety rules, whatever the conditions say: only a request
//! whose whole body is known and at most `max_body_bytes` (default 64 KiB)
//! can be replayed; a method that is not idempotent (RFC 9110 §9.2.2: only
//! GET, HEAD, OPTIONS, TRACE, PUT and DELETE are; POST, PATCH, CONNECT and
//! extension methods are not) is retried only after a connect failure — no
//! byte reached the server — unless `allow_non_idempotent`.
//!
//! A peer's inbound proxy that could not reach its app (refused, timed
//! out, or its app's connection closed before taking the request) answers
//! 502/504 with [`UNPROCESSED_HEADER`]: the app never saw the request. That
//! answer counts as a connect failure ([`response_outcome`]), so the
//! default policy retries it on another endpoint, for any method — the
//! replica whose app exits before its proxy has deregistered (a rolling
//! update: the kubelet signals every container at once) costs the client
//! nothing. A request is kept for that retry only when it has no body
//! ([`RetryPolicy::keeps_copy`]): a head copy, no buffering.
//!
//! Each retry must also be allowed by the target's
//! [`RetryBudget`](super::budget::RetryBudget); that check is the caller's,
//! after [`RetryPolicy::decide`] says [`Decision::Retry`].
//!
//! Without any policy from the control plane, [`RetryPolicy::default`] is
//! the mesh's safe default: 2 retries on connect failures only, 25 ms base
//! and 250 ms max backoff with 50 % jitter, a budget of 20 % + 10/s over
//! 10 s, 64 KiB body limit — the same values the control plane fills in.

use std::time::Duration;

use http::header::HeaderName;
use http::{HeaderMap, Method, StatusCode};
use weft_api::policy as api;

use super::budget::BudgetConfig;

pub const DEFAULT_ATTEMPTS: u32 = 2;
pub const DEFAULT_RETRY_ON: &[&str] = &["connect-failure"];
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(25);
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_millis(250);
pub const DEFAULT_BACKOFF_JITTER: f64 = 0.5;
pub const DEFAULT_MAX_BODY_BYTES: u64 = 64 * 1024;

/// Set by an inbound proxy on its own answer when the request never
/// reached its app; stripped from the app's responses, so only the proxy
/// can say it.
pub const UNPROCESSED_HEADER: HeaderName = HeaderName::from_static("weft-unprocessed");

/// gRPC status names `retry_on` accepts, with their codes.
pub const GRPC_CONDITIONS: [(&str, u32); 5] =
    [("cancelled", 1), ("deadline-exceeded", 4), ("resource-exhausted", 8), ("internal", 13), ("unavailable", 14)];

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RetryConfigError {
    #[error("retry condition `{0}` is unknown to this proxy and is ignored; is the control plane newer?")]
    UnknownCondition(String),
}

/// What became of one attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// No connection could be made to the endpoint.
    ConnectFailure,
    /// Reset (stream or connection) before a response head arrived.
    Reset,
    /// The per-try timeout fired before a response head arrived.
    Timeout,
    /// A response: its status and, for gRPC, the `grpc-status` from the
    /// head or the trailers (see [`grpc_status`]).
    Response { status: StatusCode, grpc_status: Option<u32> },
}

/// The answer of [`RetryPolicy::decide`]; the reasons not to retry are
/// distinct for metrics and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Retry,
    /// The outcome is a success or not among the conditions.
    NotRetryable,
    /// All `attempts` retries have been made.
    Exhausted,
    /// A non-idempotent method after something other than a connect failure.
    NonIdempotent,
    /// The body is too large or of unknown length to replay.
    BodyNotReplayable,
}

/// Exponential backoff: retry `n` (1-based) waits `min(max, base × 2^(n-1))`
/// less a random share of up to `jitter` of it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
    /// 0.0..=1.0.
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { base: DEFAULT_BACKOFF_BASE, max: DEFAULT_BACKOFF_MAX, jitter: DEFAULT_BACKOFF_JITTER }
    }
}

impl Backoff {
    /// The wait before retry `retry` (1 for the first retry; 0 waits
    /// nothing), given a uniformly random `random`.
    pub fn delay(&self, retry: u32, random: u32) -> Duration {
        if retry == 0 || self.base.is_zero() {
            return Duration::ZERO;
        }
        let base = self.base.as_nanos();
        let full = base.saturating_mul(1u128 << (retry - 1).min(64)).min(self.max.as_nanos().max(base));
        // full × jitter × random / 2^32, in integers (jitter in millionths).
        let jitter_ppm = (self.jitter.clamp(0.0, 1.0) * 1e6).round() as u128;
        let cut = (full.saturating_mul(jitter_ppm) / 1_000_000 * u128::from(random)) >> 32;
        Duration::from_nanos(u64::try_from(full - cut.min(full)).unwrap_or(u64::MAX))
    }
}

/// Status codes 0..=639 as bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct StatusSet([u64; 10]);

impl StatusSet {
    fn insert(&mut self, code: u16) {
        if let Some(w) = self.0.get_mut(usize::from(code / 64)) {
            *w |= 1 << (code % 64);
        }
    }

    fn contains(&self, code: u16) -> bool {
        self.0.get(usize::from(code / 64)).is_some_and(|w| w & (1 << (code % 64)) != 0)
    }

    fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }
}

/// A compiled `Retry`.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt; 0 disables retries.
    pub attempts: u32,
    statuses: StatusSet,
    /// Bit `c` set: retry gRPC status `c`.
    grpc: u32,
    connect_failure: bool,
    reset: bool,
    pub per_try_timeout: Option<Duration>,
    pub backoff: Backoff,
    /// Without a budget from the control plane, the default one: retries
    /// are never unbounded.
    pub budget: BudgetConfig,
    pub allow_non_idempotent: bool,
    pub max_body_bytes: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        let mut p = Self {
            attempts: DEFAULT_ATTEMPTS,
            statuses: StatusSet::default(),
            grpc: 0,
            connect_failure: false,
            reset: false,
            per_try_timeout: None,
            backoff: Backoff::default(),
            budget: BudgetConfig::default(),
            allow_non_idempotent: false,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        };
        for c in DEFAULT_RETRY_ON {
            let _ = p.add_condition(c);
        }
        p
    }
}

/// RFC 9110 §9.2.2.
pub fn is_idempotent(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE)
}

/// What a response head says of its attempt. A peer proxy's answer marked
/// [`UNPROCESSED_HEADER`] is a connect failure: nothing reached the app, so
/// another endpoint may take the request whatever its method. The mark is
/// believed only over mTLS to a verified mesh identity (`from_peer_proxy`),
/// whose inbound proxy strips it from its app's answers; any other
/// upstream could set it on a request it did process.
pub fn response_outcome(status: StatusCode, headers: &HeaderMap, from_peer_proxy: bool) -> Outcome {
    if from_peer_proxy && headers.contains_key(UNPROCESSED_HEADER) {
        Outcome::ConnectFailure
    } else {
        Outcome::Response { status, grpc_status: grpc_status(headers) }
    }
}

/// The `grpc-status` of a response head (trailers-only) or its trailers.
pub fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    std::str::from_utf8(headers.get("grpc-status")?.as_bytes()).ok()?.trim().parse().ok()
}

impl RetryPolicy {
    /// Compiles a `Retry`. Unknown conditions are skipped and reported;
    /// the rest of the policy still applies. `max_body_bytes` is taken as
    /// sent (the control plane fills the 64 KiB default; 0 means only
    /// bodiless requests are retried).
    pub fn from_api(r: &api::Retry) -> (Self, Vec<RetryConfigError>) {
        let ms = |v: u64| (v > 0).then(|| Duration::from_millis(v));
        let mut p = Self {
            attempts: r.attempts,
            statuses: StatusSet::default(),
            grpc: 0,
            connect_failure: false,
            reset: false,
            per_try_timeout: ms(r.per_try_timeout_ms),
            backoff: Backoff {
                base: Duration::from_millis(r.backoff_base_ms),
                // Unset max: 10 × base, as Envoy does.
                max: ms(r.backoff_max_ms).unwrap_or(Duration::from_millis(r.backoff_base_ms.saturating_mul(10))),
                jitter: if r.backoff_jitter.is_finite() { r.backoff_jitter.clamp(0.0, 1.0) } else { 0.0 },
            },
            budget: r.budget.as_ref().map(BudgetConfig::from_api).unwrap_or_default(),
            allow_non_idempotent: r.allow_non_idempotent,
            max_body_bytes: u64::from(r.max_body_bytes),
        };
        let errors = r.retry_on.iter().filter_map(|c| p.add_condition(c).err()).collect();
        (p, errors)
    }

    fn add_condition(&mut self, c: &str) -> Result<(), RetryConfigError> {
        match c {
            "5xx" => (500..=599).for_each(|s| self.statuses.insert(s)),
            "gateway-error" => [502, 503, 504].into_iter().for_each(|s| self.statuses.insert(s)),
            "connect-failure" => self.connect_failure = true,
            "reset" => self.reset = true,
            _ => match (c.parse::<u16>(), GRPC_CONDITIONS.iter().find(|(n, _)| *n == c)) {
                (Ok(s), _) if (100..=599).contains(&s) => self.statuses.insert(s),
                (_, Some((_, code))) => self.grpc |= 1 << code,
                _ => return Err(RetryConfigError::UnknownCondition(c.to_owned())),
            },
        }
        Ok(())
    }

    /// Whether the outcome is among the conditions (method and body aside).
    pub fn is_retryable_outcome(&self, outcome: &Outcome) -> bool {
        match *outcome {
            Outcome::ConnectFailure => self.connect_failure,
            Outcome::Reset => self.reset,
            Outcome::Timeout => self.statuses.contains(504),
            Outcome::Response { status, grpc_status } => {
                self.statuses.contains(status.as_u16())
                    || grpc_status.is_some_and(|g| g < 32 && self.grpc & (1 << g) != 0)
            }
        }
    }

    /// Whether every condition is a connect failure: a retry then only
    /// ever sends a request that was never written, which comes back whole
    /// from the pool, so nothing needs buffering or copying up front (the
    /// default policy's case).
    pub fn retries_only_unsent(&self) -> bool {
        self.connect_failure && !self.reset && self.grpc == 0 && self.statuses.is_empty()
    }

    /// Whether this request could be retried at all (so whether to buffer
    /// its body for replay). `body_len` is the whole body's length, `None`
    /// when unknown (streaming with no `content-length`).
    pub fn may_retry(&self, method: &Method, body_len: Option<u64>) -> bool {
        self.attempts > 0
            && body_len.is_some_and(|n| n <= self.max_body_bytes)
            && (self.connect_failure || self.allow_non_idempotent || is_idempotent(method))
    }

    /// Whether to keep the request (a copy of its head, its body buffered)
    /// before the first attempt, for a retry after it was written: when the
    /// policy may retry it on a response or a reset, or when it has no body
    /// and connect failures are retried (a peer proxy's unprocessed answer
    /// comes after the request was written, so the pool cannot hand it
    /// back; an empty body costs only the head's copy).
    pub fn keeps_copy(&self, method: &Method, body_len: Option<u64>) -> bool {
        self.attempts > 0
            && ((self.connect_failure && body_len == Some(0))
                || (!self.retries_only_unsent() && self.may_retry(method, body_len)))
    }

    /// Whether to retry after `retries_done` retries ended in `outcome`.
    pub fn decide(&self, retries_done: u32, method: &Method, body_len: Option<u64>, outcome: &Outcome) -> Decision {
        if !self.is_retryable_outcome(outcome) {
            Decision::NotRetryable
        } else if retries_done >= self.attempts {
            Decision::Exhausted
        } else if body_len.is_none_or(|n| n > self.max_body_bytes) {
            Decision::BodyNotReplayable
        } else if *outcome != Outcome::ConnectFailure && !self.allow_non_idempotent && !is_idempotent(method) {
            Decision::NonIdempotent
        } else {
            Decision::Retry
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(on: &[&str], f: impl FnOnce(&mut api::Retry)) -> RetryPolicy {
        let mut r = api::Retry {
            attempts: 3,
            retry_on: on.iter().map(|s| (*s).to_owned()).collect(),
            backoff_base_ms: 10,
            backoff_max_ms: 100,
            max_body_bytes: 65536,
            ..Default::default()
        };
        f(&mut r);
        let (p, errors) = RetryPolicy::from_api(&r);
        assert!(errors.is_empty(), "{errors:?}");
        p
    }

    fn resp(status: u16) -> Outcome {
        Outcome::Response { status: StatusCode::from_u16(status).unwrap(), grpc_status: None }
    }

    fn grpc(code: u32) -> Outcome {
        Outcome::Response { status: StatusCode::OK, grpc_status: Some(code) }
    }

    #[test]
    fn only_connect_failures_need_no_copy_of_the_request() {
        assert!(RetryPolicy::default().retries_only_unsent(), "the default policy");
        assert!(policy(&["connect-failure"], |_| {}).retries_only_unsent());
        for other in ["5xx", "503", "gateway-error", "reset", "unavailable"] {
            assert!(!policy(&["connect-failure", other], |_| {}).retries_only_unsent(), "{other}");
        }
        assert!(!policy(&[], |_| {}).retries_only_unsent(), "no condition retries nothing");
    }

    #[test]
    fn a_peer_proxys_unprocessed_answer_is_a_connect_failure() {
        let marked = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(UNPROCESSED_HEADER, http::HeaderValue::from_static(v));
            h
        };
        let grpc14 = {
            let mut h = HeaderMap::new();
            h.insert("grpc-status", http::HeaderValue::from_static("14"));
            h
        };
        let s = |c| StatusCode::from_u16(c).unwrap();
        // (status, headers, over mTLS to a mesh peer, outcome)
        let cases = [
            (502, marked("1"), true, Outcome::ConnectFailure),
            (504, marked("1"), true, Outcome::ConnectFailure),
            // Not from a verified peer proxy: the upstream's own header.
            (502, marked("1"), false, resp(502)),
            (502, HeaderMap::new(), true, resp(502)),
            (200, HeaderMap::new(), true, resp(200)),
            (200, grpc14.clone(), true, grpc(14)),
            (200, grpc14, false, grpc(14)),
        ];
        for (status, headers, peer, want) in cases {
            assert_eq!(response_outcome(s(status), &headers, peer), want, "{status} {headers:?} peer={peer}");
        }
        // And the default policy retries it, whatever the method.
        let p = RetryPolicy::default();
        assert_eq!(p.decide(0, &Method::POST, Some(0), &Outcome::ConnectFailure), Decision::Retry);
    }

    #[test]
    fn which_requests_are_kept_for_a_retry_after_they_were_written() {
        let default = RetryPolicy::default();
        let statuses = policy(&["connect-failure", "5xx"], |_| {});
        let none = policy(&["connect-failure"], |r| r.attempts = 0);
        let resets_only = policy(&["reset"], |_| {});
        // (policy, method, body length, keep a copy)
        let cases = [
            (&default, Method::GET, Some(0), true),
            (&default, Method::POST, Some(0), true),
            (&default, Method::GET, Some(10), false),
            (&default, Method::GET, None, false),
            (&none, Method::GET, Some(0), false),
            (&statuses, Method::GET, Some(10), true),
            (&statuses, Method::POST, Some(10), true),
            (&statuses, Method::GET, Some(1 << 20), false),
            (&statuses, Method::GET, None, false),
            (&resets_only, Method::GET, Some(0), true),
            (&resets_only, Method::POST, Some(0), false),
        ];
        for (p, method, len, want) in cases {
            assert_eq!(p.keeps_copy(&method, len), want, "{method} {len:?} under {p:?}");
        }
    }

    #[test]
    fn conditions() {
        use Outcome::*;
        // (retry_on, outcome, retryable)
        let cases: &[(&[&str], Outcome, bool)] = &[
            (&["5xx"], resp(500), true),
            (&["5xx"], resp(503), true),
            (&["5xx"], resp(599), true),
            (&["5xx"], resp(499), false),
            (&["5xx"], resp(200), false),
            (&["5xx"], Timeout, true),
            (&["5xx"], ConnectFailure, false),
            (&["5xx"], Reset, false),
            (&["gateway-error"], resp(502), true),
            (&["gateway-error"], resp(503), true),
            (&["gateway-error"], resp(504), true),
            (&["gateway-error"], resp(500), false),
            (&["gateway-error"], resp(501), false),
            (&["gateway-error"], Timeout, true),
            (&["503"], resp(503), true),
            (&["503"], resp(502), false),
            (&["503"], Timeout, false),
            (&["504"], Timeout, true),
            (&["429"], resp(429), true),
            (&["connect-failure"], ConnectFailure, true),
            (&["connect-failure"], resp(503), false),
            (&["reset"], Reset, true),
            (&["reset"], ConnectFailure, false),
            (&["unavailable"], grpc(14), true),
            (&["unavailable"], grpc(13), false),
            (&["cancelled"], grpc(1), true),
            (&["deadline-exceeded"], grpc(4), true),
            (&["resource-exhausted"], grpc(8), true),
            (&["internal"], grpc(13), true),
            (&["internal"], grpc(0), false),
            (&["unavailable"], resp(503), false),
            // An HTTP status condition still applies to a gRPC response.
            (&["503"], Response { status: StatusCode::SERVICE_UNAVAILABLE, grpc_status: Some(14) }, true),
            (&["unavailable"], Response { status: StatusCode::OK, grpc_status: Some(u32::MAX) }, false),
            (&[], resp(503), false),
            (&[], ConnectFailure, false),
            (&["5xx", "connect-failure", "reset"], Reset, true),
        ];
        for (on, outcome, want) in cases {
            assert_eq!(policy(on, |_| {}).is_retryable_outcome(outcome), *want, "{on:?} {outcome:?}");
        }
    }

    #[test]
    fn decisions() {
        use Decision::*;
        let all = &["5xx", "connect-failure", "reset"][..];
        let p = policy(all, |_| {});
        let allow = policy(all, |r| r.allow_non_idempotent = true);
        let zero_body = policy(all, |r| r.max_body_bytes = 0);
        let off = policy(all, |r| r.attempts = 0);
        let (get, post, patch, connect, put) = (Method::GET, Method::POST, Method::PATCH, Method::CONNECT, Method::PUT);
        let custom = Method::from_bytes(b"PURGE").unwrap();
        // (policy, retries done, method, body, outcome, decision)
        let cases: &[(&RetryPolicy, u32, &Method, Option<u64>, Outcome, Decision)] = &[
            (&p, 0, &get, Some(0), resp(503), Retry),
            (&p, 2, &get, Some(0), resp(503), Retry),
            (&p, 3, &get, Some(0), resp(503), Exhausted),
            (&p, 0, &get, Some(0), resp(200), NotRetryable),
            (&p, 3, &get, Some(0), resp(200), NotRetryable),
            (&p, 0, &put, Some(65536), resp(503), Retry),
            (&p, 0, &put, Some(65537), resp(503), BodyNotReplayable),
            (&p, 0, &put, None, resp(503), BodyNotReplayable),
            (&p, 0, &put, None, Outcome::ConnectFailure, BodyNotReplayable),
            (&p, 0, &post, Some(10), resp(503), NonIdempotent),
            (&p, 0, &post, Some(10), Outcome::Reset, NonIdempotent),
            (&p, 0, &post, Some(10), Outcome::Timeout, NonIdempotent),
            (&p, 0, &post, Some(10), Outcome::ConnectFailure, Retry),
            (&p, 0, &patch, Some(10), resp(503), NonIdempotent),
            (&p, 0, &connect, Some(0), resp(503), NonIdempotent),
            (&p, 0, &custom, Some(0), resp(503), NonIdempotent),
            (&allow, 0, &post, Some(10), resp(503), Retry),
            (&allow, 0, &patch, Some(10), Outcome::Reset, Retry),
            (&allow, 0, &post, Some(65537), resp(503), BodyNotReplayable),
            (&zero_body, 0, &get, Some(0), resp(503), Retry),
            (&zero_body, 0, &put, Some(1), resp(503), BodyNotReplayable),
            (&off, 0, &get, Some(0), resp(503), Exhausted),
        ];
        for (i, (pol, done, method, body, outcome, want)) in cases.iter().enumerate() {
            assert_eq!(pol.decide(*done, method, *body, outcome), *want, "case {i}: {method} {body:?} {outcome:?}");
        }
        assert!(p.may_retry(&get, Some(0)));
        assert!(p.may_retry(&post, Some(0)), "connect failures make any method retryable");
        assert!(!p.may_retry(&get, None));
        assert!(!off.may_retry(&get, Some(0)));
        assert!(!policy(&["5xx"], |_| {}).may_retry(&post, Some(0)));
    }

    #[test]
    fn backoff() {
        let ms = Duration::from_millis;
        let b = Backoff { base: ms(25), max: ms(250), jitter: 0.0 };
        let no_jitter: Vec<_> = (0..7).map(|n| b.delay(n, u32::MAX)).collect();
        assert_eq!(no_jitter, [0, 25, 50, 100, 200, 250, 250].map(ms));
        assert_eq!(b.delay(u32::MAX, 0), ms(250), "no overflow at huge retry numbers");
        let half = Backoff { jitter: 0.5, ..b };
        // (retry, random, delay)
        let cases =
            [(1, 0, ms(25)), (3, 0, ms(100)), (3, 1 << 31, ms(75)), (3, u32::MAX, ms(50)), (6, 1 << 31, ms(188))];
        for (n, r, want) in cases {
            let got = half.delay(n, r);
            assert!(got.abs_diff(want) < ms(1), "retry {n} random {r}: {got:?}, want {want:?}");
        }
        let full = Backoff { jitter: 1.0, ..b };
        assert!(full.delay(2, u32::MAX) < Duration::from_micros(1));
        assert_eq!(Backoff { base: Duration::ZERO, ..b }.delay(3, 0), Duration::ZERO);
        // Max below base: base wins (the control plane keeps max ≥ base).
        assert_eq!(Backoff { base: ms(30), max: ms(10), jitter: 0.0 }.delay(3, 0), ms(30));
        // Unset max from the API: 10 × base.
        assert_eq!(policy(&[], |r| r.backoff_max_ms = 0).backoff.max, ms(100));
        // Jitter outside 0..=1 is clamped, NaN ignored.
        assert_eq!(policy(&[], |r| r.backoff_jitter = f64::NAN).backoff.jitter, 0.0);
        assert_eq!(policy(&[], |r| r.backoff_jitter = 7.0).backoff.jitter, 1.0);
    }

    #[test]
    fn defaults_are_safe_and_match_the_control_plane() {
        let d = RetryPolicy::default();
        assert_eq!(d.attempts, 2);
        assert!(d.is_retryable_outcome(&Outcome::ConnectFailure));
        for o in [resp(500), resp(503), Outcome::Reset, Outcome::Timeout, grpc(14)] {
            assert!(!d.is_retryable_outcome(&o), "{o:?}");
        }
        assert_eq!(d.decide(0, &Method::POST, Some(0), &Outcome::ConnectFailure), Decision::Retry);
        assert_eq!(
            d.backoff,
            Backoff { base: Duration::from_millis(25), max: Duration::from_millis(250), jitter: 0.5 }
        );
        assert_eq!(d.budget, BudgetConfig::default());
        assert_eq!(policy(&[], |r| r.budget = None).budget, BudgetConfig::default(), "never unbounded");
        assert_eq!(d.max_body_bytes, 64 * 1024);
        // What the control plane sends by default compiles to the same policy.
        let sent = api::Retry {
            attempts: 2,
            retry_on: vec!["connect-failure".into()],
            per_try_timeout_ms: 0,
            backoff_base_ms: 25,
            backoff_max_ms: 250,
            backoff_jitter: 0.5,
            budget: Some(api::RetryBudget { ratio: 0.2, window_ms: 10_000, min_retries_per_second: 10 }),
            allow_non_idempotent: false,
            max_body_bytes: 64 * 1024,
        };
        assert_eq!(RetryPolicy::from_api(&sent), (d, Vec::new()));
    }

    #[test]
    fn unknown_conditions_are_reported_not_fatal() {
        let r = api::Retry {
            attempts: 1,
            retry_on: vec!["5xx".into(), "retriable-4xx".into(), "600".into(), "99".into(), "".into()],
            ..Default::default()
        };
        let (p, errors) = RetryPolicy::from_api(&r);
        assert_eq!(
            errors,
            ["retriable-4xx", "600", "99", ""].map(|c| RetryConfigError::UnknownCondition(c.into())).to_vec()
        );
        assert!(p.is_retryable_outcome(&resp(500)));
        assert!(errors[0].to_string().contains("retriable-4xx"));
    }

    #[test]
    fn grpc_status_header() {
        let cases = [("14", Some(14)), (" 0 ", Some(0)), ("x", None), ("-1", None), ("", None)];
        for (v, want) in cases {
            let mut h = HeaderMap::new();
            h.insert("grpc-status", v.parse().unwrap());
            assert_eq!(grpc_status(&h), want, "{v:?}");
        }
        assert_eq!(grpc_status(&HeaderMap::new()), None);
    }
}
