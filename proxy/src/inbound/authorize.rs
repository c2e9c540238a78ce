//! Inbound authorization, per connection: the peer (only the TLS acceptor
//! can make it authenticated) against the port's policy, through the pure
//! decision in [`crate::policy::authz`].
//!
//! Authorization is decided per connection (opaque) or per request (HTTP)
//! against the port's policy in force at that moment, before any byte
//! reaches the app; until the port's first policy arrives, the proxy's own
//! default decides (never "no decision").

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use crate::control::inbound_policy::InboundPolicies;
use crate::identity::Peer;
use crate::metrics::Metrics;
use crate::policy::authz::{Decision, authorize, authorize_route, has_route_rules};

/// The `policy` label of decisions made before a port's policy arrived.
pub const PROXY_DEFAULT: &str = "proxy-default";

/// Authorization for one inbound connection: its peer is fixed, the policy
/// may change while it is open (an HTTP keep-alive connection outlives many
/// policy versions), so the decision is re-made whenever the port's policy
/// version changes and reused otherwise. Before the port's first policy,
/// the proxy's default decides, counted as policy `proxy-default`.
#[derive(Debug)]
pub struct ConnAuthz {
    policies: Arc<InboundPolicies>,
    port: u16,
    peer: Peer,
    namespace: String,
    metrics: Arc<Metrics>,
    /// The last decision and the policy version it was made under (`None`:
    /// the proxy's default).
    cached: Mutex<Option<(Option<u64>, Arc<Decided>)>>,
}

/// A decision and the counter it is counted in.
#[derive(Debug)]
pub struct Decided {
    pub decision: Decision,
    counter: Arc<AtomicU64>,
}

impl Decided {
    /// Counts one connection (opaque) or request (HTTP) under this decision.
    pub fn count(&self) {
        self.counter.fetch_add(1, Relaxed);
    }
}

impl ConnAuthz {
    /// Waits (bounded) for the port's first policy, so that a new
    /// workload's first connections are decided by its real policy when
    /// the control plane is there; decides under the proxy's default until
    /// the policy arrives otherwise.
    pub async fn new(
        policies: Arc<InboundPolicies>,
        port: u16,
        peer: Peer,
        namespace: String,
        metrics: Arc<Metrics>,
    ) -> Self {
        if policies.get(port).await.is_none() {
            tracing::debug!(port, "no policy for this port yet; the proxy's default decides until it arrives");
        }
        Self { policies, port, peer, namespace, metrics, cached: Mutex::new(None) }
    }

    /// Takes a token from the port's rate limit; `Err` says how long until
    /// the next one (answer 429 with `Retry-After`).
    pub fn rate_limit(&self) -> Result<(), crate::policy::rate_limit::RetryAfter> {
        self.policies.rate_limit(self.port, self.peer.identity().map(|i| i.as_str()))
    }

    /// The decision for one HTTP request: when an authorization names the
    /// route the request takes, decided for it (and counted); otherwise the
    /// connection's cached port-wide decision.
    pub fn decide_request(&self, method: &http::Method, uri: &http::Uri, headers: &http::HeaderMap) -> Arc<Decided> {
        let Some(policy) = self.policies.current(self.port) else { return self.decide() };
        if policy.routes.is_empty() {
            return self.decide();
        }
        let table = self.policies.route_table(self.port, &policy);
        let route = table.find(method, uri, headers).map(|m| m.route.name.as_str());
        // "namespace/name#rule" → "namespace/name", as authorizations name routes.
        let route = route.map(|r| r.split_once('#').map_or(r, |(name, _)| name));
        match route {
            Some(r) if has_route_rules(&policy, r) => {
                let decision = authorize_route(&policy, &self.peer, &self.namespace, Some(r));
                self.log(&decision);
                let counter = self.metrics.authz_counter(decision.allowed, &decision.policy, decision.reason);
                Arc::new(Decided { decision, counter })
            }
            _ => self.decide(),
        }
    }

    fn log(&self, decision: &Decision) {
        let client = self.peer.identity().map_or("unauthenticated", |i| i.as_str());
        if !decision.allowed {
            tracing::info!(port = self.port, client, policy = %decision.policy, reason = decision.reason, "inbound denied");
        } else if decision.audit {
            tracing::warn!(port = self.port, client, policy = %decision.policy, "audit: would deny");
        }
    }

    /// The decision under the policy in force now, or the proxy's default
    /// while the port has none.
    pub fn decide(&self) -> Arc<Decided> {
        let current = self.policies.current(self.port);
        let version = current.as_ref().map(|p| p.version);
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((v, decided)) = cached.as_ref()
            && *v == version
        {
            return decided.clone();
        }
        let decision = match &current {
            Some(policy) => authorize(policy, &self.peer, &self.namespace),
            None => Decision {
                policy: PROXY_DEFAULT.to_owned(),
                ..authorize(self.policies.fallback(), &self.peer, &self.namespace)
            },
        };
        self.log(&decision);
        let counter = self.metrics.authz_counter(decision.allowed, &decision.policy, decision.reason);
        let decided = Arc::new(Decided { decision, counter });
        *cached = Some((version, decided.clone()));
        decided
    }
}
