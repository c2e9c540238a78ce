//! `policy.weft.dev/v1alpha1 AccessPolicy`: which clients may reach a
//! Service (or one of its ports) or an HTTPRoute.
//!
//! ```yaml
//! apiVersion: policy.weft.dev/v1alpha1
//! kind: AccessPolicy
//! metadata: {name: store-from-web, namespace: default}
//! spec:
//!   targetRef: {kind: Service, name: store, port: 6379}
//!   mode: enforce            # or audit: log what would be denied, deny nothing
//!   from:
//!     serviceAccounts: [{name: web}]
//!     namespaces: [monitoring]
//!     identities: ["spiffe://cluster.local/ns/batch/sa/*"]
//!     unauthenticated: false
//! ```
//!
//! A client is allowed when it matches any entry of `from`. Once any
//! AccessPolicy targets a port, clients that match none are denied (see
//! `crate::index::inbound`). `from: {}` allows nobody.

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

use super::Metadata;
use super::de::{Label, PortNumber, Scalar, Validate, check_max, checked, scalar_de};

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AccessPolicy {
    #[serde(deserialize_with = "super::policy_v1alpha1")]
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    #[serde(deserialize_with = "checked")]
    pub spec: AccessPolicySpec,
    #[serde(default, skip_serializing)]
    pub status: Option<IgnoredAny>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub enum AccessTargetKind {
    Service,
    #[serde(rename = "HTTPRoute")]
    HttpRoute,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccessTargetRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    pub kind: AccessTargetKind,
    /// In the policy's namespace.
    pub name: Label,
    /// Only this Service port (the port clients connect to, not the
    /// target port). All ports when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortNumber>,
}

impl Validate for AccessTargetRef {
    fn validate(&self) -> Result<(), String> {
        let groups: &[&str] = match self.kind {
            AccessTargetKind::Service => &["", "core"],
            AccessTargetKind::HttpRoute => &[super::GATEWAY_GROUP],
        };
        if let Some(g) = &self.group
            && !groups.contains(&g.as_str())
        {
            return Err(format!("group: `{g}` does not fit kind {:?}; use one of {groups:?}", self.kind));
        }
        if self.kind == AccessTargetKind::HttpRoute && self.port.is_some() {
            return Err("port: only for kind Service (a route already names its parent ports)".into());
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum Mode {
    #[default]
    Enforce,
    Audit,
}

/// A client identity pattern: `*` (any authenticated client), an exact
/// SPIFFE ID `spiffe://TRUST_DOMAIN/ns/NS/sa/SA`, or a prefix ending in
/// `/*` (`spiffe://cluster.local/ns/batch/*`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct IdentityPattern(pub String);

impl Scalar for IdentityPattern {
    const EXPECTING: &'static str = "a SPIFFE ID or `*`";
    fn from_str(s: &str) -> Result<Self, String> {
        let body = s.strip_prefix("spiffe://");
        let ok = s == "*"
            || body.is_some_and(|b| {
                let b = b.strip_suffix("/*").unwrap_or(b);
                // A trust domain first: `spiffe:///…` names nobody.
                !b.is_empty()
                    && !b.starts_with('/')
                    && !b.contains('*')
                    && !b.contains("//")
                    && !b.ends_with('/')
                    && b.is_ascii()
            });
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(format!(
                "`{s}` is not an identity pattern; use `*`, `spiffe://TRUST_DOMAIN/ns/NS/sa/SA` or a prefix ending in `/*`"
            ))
        }
    }
}
scalar_de!(IdentityPattern, deserialize_text);

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceAccountRef {
    pub name: Label,
    /// Defaults to the policy's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<Label>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AccessFrom {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identities: Vec<IdentityPattern>,
    /// Meshed clients from these namespaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<Label>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_accounts: Vec<ServiceAccountRef>,
    /// Clients without a mesh identity (plaintext).
    #[serde(default)]
    pub unauthenticated: bool,
}

impl Validate for AccessFrom {
    fn validate(&self) -> Result<(), String> {
        check_max("identities", &self.identities, 64)?;
        check_max("namespaces", &self.namespaces, 64)?;
        check_max("serviceAccounts", &self.service_accounts, 64)?;
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AccessPolicySpec {
    #[serde(deserialize_with = "checked")]
    pub target_ref: AccessTargetRef,
    #[serde(default)]
    pub mode: Mode,
    /// Required: `from: {}` denies everyone, which should be said explicitly.
    #[serde(deserialize_with = "checked")]
    pub from: AccessFrom,
}

impl Validate for AccessPolicySpec {
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}
