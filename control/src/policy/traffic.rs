//! `policy.weft.dev/v1alpha1 TrafficPolicy`: how clients treat traffic to a
//! target — retries, timeouts, circuit breaking, load balancing, local rate
//! limit and fault injection.
//!
//! ```yaml
//! apiVersion: policy.weft.dev/v1alpha1
//! kind: TrafficPolicy
//! metadata: {name: web-retries, namespace: default}
//! spec:
//!   targetRef: {kind: Service, name: web}      # or Mesh, Namespace, HTTPRoute
//!   retries: {attempts: 3, retryOn: [5xx, connect-failure], perTryTimeout: 500ms}
//!   timeouts: {request: 5s}
//! ```
//!
//! Every field is optional: a policy sets only what it names, and the index
//! merges field by field, the most specific target winning
//! (route > service > namespace > mesh). `rateLimit` is enforced by the
//! server-side (inbound) proxies of the target Service, so it cannot target
//! an HTTPRoute.

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

use super::Metadata;
use super::de::{
    Fraction, GwDuration, HeaderName, Label, Percent, Ranged, Scalar, Validate, checked, checked_opt, scalar_de,
};

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TrafficPolicy {
    #[serde(deserialize_with = "super::policy_v1alpha1")]
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    #[serde(deserialize_with = "checked")]
    pub spec: TrafficPolicySpec,
    #[serde(default, skip_serializing)]
    pub status: Option<IgnoredAny>,
}

impl TrafficPolicy {
    /// Policy attachment: a namespaced policy reaches only its own
    /// namespace (Mesh targets excepted).
    pub(crate) fn check_scope(&self) -> Result<(), String> {
        let t = &self.spec.target_ref;
        if t.kind == TargetKind::Namespace && t.name.as_ref() != Some(&self.metadata.namespace) {
            return Err(format!(
                "spec.targetRef.name: a TrafficPolicy in namespace `{}` can only target that namespace",
                self.metadata.namespace.0
            ));
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
pub enum TargetKind {
    Mesh,
    Namespace,
    Service,
    #[serde(rename = "HTTPRoute")]
    HttpRoute,
}

/// What a TrafficPolicy applies to. `name` is in the policy's namespace.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TargetRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    pub kind: TargetKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Label>,
}

impl Validate for TargetRef {
    fn validate(&self) -> Result<(), String> {
        let groups: &[&str] = match self.kind {
            TargetKind::Mesh => &["", super::POLICY_GROUP],
            TargetKind::Namespace | TargetKind::Service => &["", "core"],
            TargetKind::HttpRoute => &[super::GATEWAY_GROUP],
        };
        if let Some(g) = &self.group
            && !groups.contains(&g.as_str())
        {
            return Err(format!("group: `{g}` does not fit kind {:?}; use one of {groups:?}", self.kind));
        }
        match (self.kind, &self.name) {
            (TargetKind::Mesh, Some(_)) => Err("name: must not be set for kind Mesh".into()),
            (TargetKind::Mesh, None) | (_, Some(_)) => Ok(()),
            (k, None) => Err(format!("name: required for kind {k:?}")),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TrafficPolicySpec {
    #[serde(deserialize_with = "checked")]
    pub target_ref: TargetRef,
    #[serde(default, deserialize_with = "checked_opt", skip_serializing_if = "Option::is_none")]
    pub retries: Option<Retries>,
    #[serde(default, deserialize_with = "checked_opt", skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
    #[serde(default, deserialize_with = "checked_opt", skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreaker>,
    #[serde(default, deserialize_with = "checked_opt", skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancer>,
    #[serde(default, deserialize_with = "checked_opt", skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    #[serde(default, deserialize_with = "checked_opt", skip_serializing_if = "Option::is_none")]
    pub faults: Option<Faults>,
}

impl Validate for TrafficPolicySpec {
    fn validate(&self) -> Result<(), String> {
        if self.retries.is_none()
            && self.timeouts.is_none()
            && self.circuit_breaker.is_none()
            && self.load_balancer.is_none()
            && self.rate_limit.is_none()
            && self.faults.is_none()
        {
            return Err("sets nothing: add retries, timeouts, circuitBreaker, loadBalancer, rateLimit or faults".into());
        }
        if self.rate_limit.is_some() && self.target_ref.kind == TargetKind::HttpRoute {
            return Err("rateLimit: is enforced per Service port by the server's proxy; target the Service".into());
        }
        Ok(())
    }
}

/// A retry condition: `5xx`, `gateway-error`, `connect-failure`, `reset`,
/// a status code `100..=599`, or a gRPC status (`cancelled`,
/// `deadline-exceeded`, `internal`, `resource-exhausted`, `unavailable`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct RetryOn(pub String);

/// The named conditions `retryOn` accepts (besides status codes).
pub const RETRY_CONDITIONS: [&str; 9] = [
    "5xx",
    "gateway-error",
    "connect-failure",
    "reset",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

impl Scalar for RetryOn {
    const EXPECTING: &'static str = "a retry condition";
    fn from_str(s: &str) -> Result<Self, String> {
        if RETRY_CONDITIONS.contains(&s)
            || (s.len() == 3
                && s.bytes().all(|b| b.is_ascii_digit())
                && s.parse::<u16>().is_ok_and(|c| (100..=599).contains(&c)))
        {
            Ok(Self(s.to_owned()))
        } else {
            Err(format!("`{s}` is not a retry condition; use a status code 100..=599 or one of {RETRY_CONDITIONS:?}"))
        }
    }
    fn from_u64(v: u64) -> Result<Self, String> {
        Self::from_str(&v.to_string())
    }
}
scalar_de!(RetryOn, deserialize_text);

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Retries {
    /// Retries after the first attempt; 0 disables retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<Ranged<0, 10>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<Vec<RetryOn>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<GwDuration>,
    #[serde(default, deserialize_with = "checked_opt", skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    #[serde(default, deserialize_with = "checked_opt", skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_non_idempotent: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<Ranged<0, { u32::MAX as u64 }>>,
}

impl Validate for Retries {
    fn validate(&self) -> Result<(), String> {
        if let Some(on) = &self.retry_on {
            super::de::check_max("retryOn", on, 32)?;
            super::de::check_unique("retryOn", on.iter().map(|r| r.0.as_str()))?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<GwDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<GwDuration>,
    /// Fraction of the backoff randomized, 0.0..=1.0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<Fraction>,
}

impl Validate for Backoff {
    fn validate(&self) -> Result<(), String> {
        check_base_max(self.base, self.max, "base", "max")
    }
}

fn check_base_max(base: Option<GwDuration>, max: Option<GwDuration>, b: &str, m: &str) -> Result<(), String> {
    match (base, max) {
        (Some(base), Some(max)) if base > max => Err(format!("{b}: {base} must not exceed {m} ({max})")),
        _ => Ok(()),
    }
}

/// Finagle-style retry budget: retries may add at most `ratio` of the
/// original requests over `window`, plus `minRetriesPerSecond`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Budget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio: Option<Fraction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<GwDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_retries_per_second: Option<Ranged<0, 100_000>>,
}

impl Validate for Budget {
    fn validate(&self) -> Result<(), String> {
        match self.window {
            Some(w) if w.0 < std::time::Duration::from_secs(1) || w.0 > std::time::Duration::from_secs(60) => {
                Err(format!("window: must be 1s..=60s, got {w}"))
            }
            _ => Ok(()),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Timeouts {
    /// The whole request, retries included; `0s` disables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<GwDuration>,
    /// One attempt to a backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_request: Option<GwDuration>,
    /// Establishing the TCP connection to a backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect: Option<GwDuration>,
    /// A connection or stream with no traffic this long is closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle: Option<GwDuration>,
}

impl Validate for Timeouts {
    fn validate(&self) -> Result<(), String> {
        super::httproute::check_backend_request(self.request, self.backend_request)?;
        if self.connect.is_some_and(|c| c.0.is_zero()) {
            return Err("connect: must be greater than 0s".into());
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CircuitBreaker {
    /// Eject an endpoint after this many consecutive failures; 0 disables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_failures: Option<Ranged<0, 1000>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ejection: Option<GwDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection: Option<GwDuration>,
    /// Eject when the success rate over `window` falls below this; 0 disables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_success_rate: Option<Fraction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<GwDuration>,
}

impl Validate for CircuitBreaker {
    fn validate(&self) -> Result<(), String> {
        check_base_max(self.base_ejection, self.max_ejection, "baseEjection", "maxEjection")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum LbType {
    /// Power of two choices over peak-EWMA latency.
    Ewma,
    RoundRobin,
    LeastRequest,
    ConsistentHash,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HashOn {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<HeaderName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
}

impl Validate for HashOn {
    fn validate(&self) -> Result<(), String> {
        match (&self.header, &self.cookie) {
            (Some(_), None) => Ok(()),
            (None, Some(c)) if !c.is_empty() => Ok(()),
            _ => Err("set exactly one of header and cookie".into()),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LoadBalancer {
    #[serde(rename = "type")]
    pub kind: LbType,
    #[serde(default, deserialize_with = "checked_opt", skip_serializing_if = "Option::is_none")]
    pub hash_on: Option<HashOn>,
}

impl Validate for LoadBalancer {
    fn validate(&self) -> Result<(), String> {
        match (self.kind, &self.hash_on) {
            (LbType::ConsistentHash, None) => Err("hashOn: required when type is consistentHash".into()),
            (LbType::ConsistentHash, Some(_)) | (_, None) => Ok(()),
            (_, Some(_)) => Err("hashOn: only used when type is consistentHash".into()),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RateLimit {
    pub requests_per_second: Ranged<1, 1_000_000>,
    /// Bucket size; defaults to `requestsPerSecond`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<Ranged<1, 1_000_000>>,
    /// One bucket per client identity instead of one per port.
    #[serde(default)]
    pub per_identity: bool,
}

impl Validate for RateLimit {
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

/// An HTTP status a fault may answer with.
pub type AbortStatus = Ranged<200, 599>;

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DelayFault {
    pub percent: Percent,
    pub fixed_delay: GwDuration,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AbortFault {
    pub percent: Percent,
    pub http_status: AbortStatus,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<DelayFault>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<AbortFault>,
}

impl Validate for Faults {
    fn validate(&self) -> Result<(), String> {
        if self.delay.is_none() && self.abort.is_none() {
            return Err("set delay, abort or both".into());
        }
        Ok(())
    }
}
