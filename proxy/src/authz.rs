//! Inbound authorization: a pure decision over the port's policy and a
//! [`Peer`] that only the TLS layer can make authenticated.
//!
//! ```text
//! mTLS mode strict + plaintext peer ─────────────► deny "plaintext"
//! authorizations present: first one matching ───► allow (its name)
//!                         none matches, audit ───► allow, counted as audit
//!                         none matches ─────────► deny "unauthorized"
//! no authorizations: the mesh default (allow-all, allow-authenticated,
//!                    allow-same-namespace, deny)
//! ```
//!
//! Route-scoped authorizations need route matching on the inbound side,
//! which comes with HTTP routes; until then they are not applied (neither
//! allowing nor denying), so a port-wide rule decides.

use weft_api::policy::InboundPolicy;
use weft_api::policy::inbound_policy::{DefaultAccess, MtlsMode};

use crate::identity::Peer;

/// The outcome for one connection (or request).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Allowed only because the matching policy is in audit mode.
    pub audit: bool,
    /// The AccessPolicy that decided, or `default`.
    pub policy: String,
    pub reason: &'static str,
}

impl Decision {
    fn allow(policy: impl Into<String>, reason: &'static str) -> Self {
        Self { allowed: true, audit: false, policy: policy.into(), reason }
    }

    fn deny(policy: impl Into<String>, reason: &'static str) -> Self {
        Self { allowed: false, audit: false, policy: policy.into(), reason }
    }
}

/// Decides whether `peer` may reach the port governed by `policy`, for a
/// workload in namespace `local_ns`.
pub fn authorize(policy: &InboundPolicy, peer: &Peer, local_ns: &str) -> Decision {
    if policy.mtls_mode() == MtlsMode::Strict && peer.identity().is_none() {
        return Decision::deny("default", "plaintext");
    }
    let port_wide: Vec<_> = policy.authorizations.iter().filter(|a| a.routes.is_empty()).collect();
    if !policy.authorizations.is_empty() {
        if let Some(a) = port_wide.iter().find(|a| matches(a, peer)) {
            return Decision::allow(a.name.clone(), "authorized");
        }
        if let Some(a) = port_wide.iter().find(|a| a.audit) {
            return Decision { allowed: true, audit: true, policy: a.name.clone(), reason: "audit" };
        }
        let name = port_wide.first().map_or("default".to_string(), |a| a.name.clone());
        return Decision::deny(name, "unauthorized");
    }
    let authenticated = peer.identity().is_some();
    match policy.default_access() {
        // Permissive mode lets plaintext in; say so, so it can be counted.
        DefaultAccess::AllowAll if authenticated => Decision::allow("default", "allow-all"),
        DefaultAccess::AllowAll => Decision::allow("default", "plaintext-permitted"),
        DefaultAccess::AllowAuthenticated if authenticated => Decision::allow("default", "authenticated"),
        DefaultAccess::AllowAuthenticated => Decision::deny("default", "unauthenticated"),
        DefaultAccess::AllowSameNamespace => match peer.identity() {
            Some(id) if id.namespace() == local_ns => Decision::allow("default", "same-namespace"),
            _ => Decision::deny("default", "other-namespace"),
        },
        DefaultAccess::Deny => Decision::deny("default", "default-deny"),
    }
}

fn matches(a: &weft_api::policy::Authorization, peer: &Peer) -> bool {
    let Some(id) = peer.identity() else {
        return a.unauthenticated;
    };
    let sa = format!("{}/{}", id.namespace(), id.service_account());
    a.identities.iter().any(|p| identity_matches(p, id.as_str()))
        || a.namespaces.iter().any(|n| n == id.namespace())
        || a.service_accounts.contains(&sa)
}

/// `*`, an exact SPIFFE ID, or a prefix ending in `/*`
/// (`spiffe://cluster.local/ns/batch/*`).
fn identity_matches(pattern: &str, id: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some("") => true,
        Some(prefix) if prefix.ends_with('/') => id.starts_with(prefix),
        _ => pattern == id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{SpiffeId, Verified};
    use weft_api::policy::Authorization;

    fn peer(id: &str) -> Peer {
        Peer::Authenticated(Verified::from_tls_handshake(SpiffeId::parse(id).expect("id")))
    }

    fn policy(default: DefaultAccess, mode: MtlsMode, auths: Vec<Authorization>) -> InboundPolicy {
        InboundPolicy {
            default_access: default as i32,
            mtls_mode: mode as i32,
            authorizations: auths,
            ..Default::default()
        }
    }

    fn only(name: &str, f: impl FnOnce(&mut Authorization)) -> Authorization {
        let mut a = Authorization { name: name.into(), ..Default::default() };
        f(&mut a);
        a
    }

    const A: &str = "spiffe://cluster.local/ns/default/sa/a";
    const C: &str = "spiffe://cluster.local/ns/default/sa/c";
    const BATCH: &str = "spiffe://cluster.local/ns/batch/sa/job";

    #[test]
    fn decision_table() {
        use DefaultAccess::*;
        use MtlsMode::*;
        let allow_a = || only("default/allow-a", |a| a.identities = vec![A.into()]);
        let audit_a = || {
            only("default/audit-a", |a| {
                a.identities = vec![A.into()];
                a.audit = true;
            })
        };
        let cases: Vec<(&str, InboundPolicy, Peer, bool, &str)> = vec![
            (
                "allow-all, plaintext",
                policy(AllowAll, Permissive, vec![]),
                Peer::Unauthenticated,
                true,
                "plaintext-permitted",
            ),
            ("allow-all, mesh", policy(AllowAll, Permissive, vec![]), peer(C), true, "allow-all"),
            ("strict refuses plaintext", policy(AllowAll, Strict, vec![]), Peer::Unauthenticated, false, "plaintext"),
            ("strict lets mesh in", policy(AllowAll, Strict, vec![]), peer(A), true, "allow-all"),
            (
                "authenticated only",
                policy(AllowAuthenticated, Permissive, vec![]),
                Peer::Unauthenticated,
                false,
                "unauthenticated",
            ),
            ("authenticated ok", policy(AllowAuthenticated, Permissive, vec![]), peer(C), true, "authenticated"),
            ("same namespace", policy(AllowSameNamespace, Permissive, vec![]), peer(A), true, "same-namespace"),
            ("other namespace", policy(AllowSameNamespace, Permissive, vec![]), peer(BATCH), false, "other-namespace"),
            ("default deny", policy(Deny, Permissive, vec![]), peer(A), false, "default-deny"),
            ("policy allows a", policy(AllowAll, Permissive, vec![allow_a()]), peer(A), true, "authorized"),
            ("policy denies c", policy(AllowAll, Permissive, vec![allow_a()]), peer(C), false, "unauthorized"),
            (
                "policy denies plaintext",
                policy(AllowAll, Permissive, vec![allow_a()]),
                Peer::Unauthenticated,
                false,
                "unauthorized",
            ),
            ("audit lets c in", policy(AllowAll, Permissive, vec![audit_a()]), peer(C), true, "audit"),
            (
                "namespace rule",
                policy(Deny, Permissive, vec![only("n", |a| a.namespaces = vec!["batch".into()])]),
                peer(BATCH),
                true,
                "authorized",
            ),
            (
                "service account rule",
                policy(Deny, Permissive, vec![only("s", |a| a.service_accounts = vec!["default/c".into()])]),
                peer(C),
                true,
                "authorized",
            ),
            (
                "wildcard prefix",
                policy(
                    Deny,
                    Permissive,
                    vec![only("w", |a| a.identities = vec!["spiffe://cluster.local/ns/batch/*".into()])],
                ),
                peer(BATCH),
                true,
                "authorized",
            ),
            (
                "wildcard prefix misses",
                policy(
                    Deny,
                    Permissive,
                    vec![only("w", |a| a.identities = vec!["spiffe://cluster.local/ns/batch/*".into()])],
                ),
                peer(A),
                false,
                "unauthorized",
            ),
            (
                "unauthenticated allowed explicitly",
                policy(Deny, Permissive, vec![only("u", |a| a.unauthenticated = true)]),
                Peer::Unauthenticated,
                true,
                "authorized",
            ),
            (
                "route-scoped rules do not apply yet",
                policy(
                    AllowAll,
                    Permissive,
                    vec![
                        allow_a(),
                        only("r", |a| {
                            a.identities = vec![C.into()];
                            a.routes = vec!["default/admin".into()];
                        }),
                    ],
                ),
                peer(C),
                false,
                "unauthorized",
            ),
        ];
        for (what, policy, peer, allowed, reason) in cases {
            let d = authorize(&policy, &peer, "default");
            assert_eq!((d.allowed, d.reason), (allowed, reason), "{what}: {d:?}");
        }
    }

    #[test]
    fn the_deciding_policy_is_named() {
        let p = policy(
            DefaultAccess::AllowAll,
            MtlsMode::Permissive,
            vec![only("default/allow-a", |a| a.identities = vec![A.into()])],
        );
        assert_eq!(authorize(&p, &peer(A), "default").policy, "default/allow-a");
        assert_eq!(authorize(&p, &peer(C), "default").policy, "default/allow-a");
    }
}
