//! The mesh's built-in policy: what applies when no TrafficPolicy says
//! otherwise. A `TrafficPolicy` with `targetRef: {kind: Mesh}` overrides any
//! of these field by field.
//!
//! | setting | default | why |
//! | --- | --- | --- |
//! | request timeout | 15 s, until the response headers | a hung backend must not hold a client forever (Envoy's route default); it bounds the wait for the response *headers* only, so streaming bodies, server-sent events and gRPC streams that answer headers promptly are not cut; `request: 0s` turns it off |
//! | backend request timeout | none | as above |
//! | connect timeout | 1 s | a peer on the same network that has not accepted in 1 s is down or overloaded; try another |
//! | idle timeout | none (the proxy's own TCP idle timeout applies) | |
//! | retries | 2, on `connect-failure` only | always safe: no byte reached the server, whatever the method |
//! | retry backoff | 25 ms base, 250 ms max, 50 % jitter | Envoy's defaults |
//! | retry budget | 20 % of requests + 10 retries/s over 10 s | Linkerd's defaults; stops retry storms |
//! | retry body limit | 64 KiB | larger bodies are streamed, not buffered for replay |
//! | load balancer | power of two choices over peak EWMA | Linkerd's default; prefers fast endpoints |
//! | circuit breaker | off (1 s..60 s ejection once enabled) | ejection needs tuning per service; off is least surprising |
//! | faults | none | |
//! | inbound access | allow all | the control plane's `--default-access`: meshing a workload changes no one's access until an AccessPolicy or a stricter default says so |
//! | mTLS mode | permissive | the control plane's `--mtls-mode`: plaintext from clients outside the mesh is accepted (as unauthenticated), so unmeshed clients keep working; `strict` refuses it |
//! | rate limit | none | |

use std::time::Duration;

use weft_api::policy as api;

pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
pub const RETRY_ATTEMPTS: u32 = 2;
pub const RETRY_ON: &[&str] = &["connect-failure"];
pub const RETRY_BACKOFF_BASE: Duration = Duration::from_millis(25);
pub const RETRY_BACKOFF_MAX: Duration = Duration::from_millis(250);
pub const RETRY_BACKOFF_JITTER: f64 = 0.5;
pub const RETRY_BUDGET_RATIO: f64 = 0.2;
pub const RETRY_BUDGET_WINDOW: Duration = Duration::from_secs(10);
pub const RETRY_BUDGET_MIN_PER_SECOND: u32 = 10;
pub const RETRY_MAX_BODY_BYTES: u32 = 64 * 1024;
pub const EJECTION_BASE: Duration = Duration::from_secs(1);
pub const EJECTION_MAX: Duration = Duration::from_secs(60);
pub const SUCCESS_RATE_WINDOW: Duration = Duration::from_secs(10);

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

pub fn timeouts() -> api::Timeouts {
    api::Timeouts {
        request_ms: ms(REQUEST_TIMEOUT),
        backend_request_ms: 0,
        connect_ms: ms(CONNECT_TIMEOUT),
        idle_ms: 0,
    }
}

pub fn retry() -> api::Retry {
    api::Retry {
        attempts: RETRY_ATTEMPTS,
        retry_on: RETRY_ON.iter().map(|s| (*s).to_owned()).collect(),
        per_try_timeout_ms: 0,
        backoff_base_ms: ms(RETRY_BACKOFF_BASE),
        backoff_max_ms: ms(RETRY_BACKOFF_MAX),
        backoff_jitter: RETRY_BACKOFF_JITTER,
        budget: Some(api::RetryBudget {
            ratio: RETRY_BUDGET_RATIO,
            window_ms: ms(RETRY_BUDGET_WINDOW),
            min_retries_per_second: RETRY_BUDGET_MIN_PER_SECOND,
        }),
        allow_non_idempotent: false,
        max_body_bytes: RETRY_MAX_BODY_BYTES,
    }
}

pub fn load_balancer() -> api::LoadBalancer {
    api::LoadBalancer {
        kind: api::load_balancer::Kind::Ewma as i32,
        hash_header: String::new(),
        hash_cookie: String::new(),
    }
}

pub fn circuit_breaker() -> api::CircuitBreaker {
    api::CircuitBreaker {
        consecutive_failures: 0,
        base_ejection_ms: ms(EJECTION_BASE),
        max_ejection_ms: ms(EJECTION_MAX),
        min_success_rate: 0.0,
        window_ms: ms(SUCCESS_RATE_WINDOW),
    }
}

pub fn fault() -> api::Fault {
    api::Fault::default()
}
