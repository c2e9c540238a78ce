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
//! Route-scoped authorizations (an AccessPolicy targeting an HTTPRoute)
//! decide the requests that take that route, in place of the port-wide
//! ones (as Linkerd does); a request on a route without authorizations of
//! its own, an opaque connection, and any request when the port has no
//! route-scoped rule, are decided by the port-wide authorizations. With any
//! authorization on the port, a client must match one (default deny).

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
    authorize_route(policy, peer, local_ns, None)
}

/// Whether some authorization of `policy` names `route` (`namespace/name`):
/// then a request on that route needs a per-request decision.
pub fn has_route_rules(policy: &InboundPolicy, route: &str) -> bool {
    policy.authorizations.iter().any(|a| a.routes.iter().any(|r| r == route))
}

/// [`authorize`] for a request that took `route` (`namespace/name` of its
/// HTTPRoute): the authorizations naming that route decide, when there are
/// any; otherwise the port-wide ones.
pub fn authorize_route(policy: &InboundPolicy, peer: &Peer, local_ns: &str, route: Option<&str>) -> Decision {
    if policy.mtls_mode() == MtlsMode::Strict && peer.identity().is_none() {
        return Decision::deny("default", "plaintext");
    }
    let on_route: Vec<_> = match route {
        Some(r) => policy.authorizations.iter().filter(|a| a.routes.iter().any(|x| x == r)).collect(),
        None => Vec::new(),
    };
    let port_wide: Vec<_> = if on_route.is_empty() {
        policy.authorizations.iter().filter(|a| a.routes.is_empty()).collect()
    } else {
        on_route
    };
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
    const B: &str = "spiffe://cluster.local/ns/default/sa/b";
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
                "off the route, route-scoped rules do not apply",
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
    fn route_scoped_rules_decide_their_route_in_place_of_port_wide_ones() {
        use DefaultAccess::AllowAll;
        use MtlsMode::Permissive;
        // Port-wide: a and c; /admin: only a.
        let p = policy(
            AllowAll,
            Permissive,
            vec![
                only("default/port", |a| a.identities = vec![A.into(), C.into()]),
                only("default/admin-only-a", |a| {
                    a.identities = vec![A.into()];
                    a.routes = vec!["default/admin".into()];
                }),
            ],
        );
        let cases: [(&str, Option<&str>, &str, bool, &str); 6] = [
            ("a on /admin", Some("default/admin"), A, true, "default/admin-only-a"),
            ("c on /admin", Some("default/admin"), C, false, "default/admin-only-a"),
            ("c on another route", Some("default/other"), C, true, "default/port"),
            ("c on no route", None, C, true, "default/port"),
            ("b on no route", None, B, false, "default/port"),
            ("b on /admin", Some("default/admin"), B, false, "default/admin-only-a"),
        ];
        for (what, route, who, allowed, by) in cases {
            let d = authorize_route(&p, &peer(who), "default", route);
            assert_eq!((d.allowed, d.policy.as_str()), (allowed, by), "{what}: {d:?}");
        }
        assert!(has_route_rules(&p, "default/admin") && !has_route_rules(&p, "default/other"));
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
