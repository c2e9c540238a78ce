//! Policy resources: the YAML that operators write, parsed and validated.
//!
//! They are shaped as Kubernetes objects (the Gateway API's HTTPRoute and
//! Weft's own kinds) and read from files; there is no Kubernetes watcher yet:
//!
//! | apiVersion / kind | module | what it does |
//! | --- | --- | --- |
//! | `gateway.networking.k8s.io/v1` `HTTPRoute` | [`httproute`] | routes to a Service (GAMMA mesh profile) |
//! | `policy.weft.dev/v1alpha1` `TrafficPolicy` | [`traffic`] | retries, timeouts, load balancing, … for the mesh, a namespace, a Service or a route |
//! | `policy.weft.dev/v1alpha1` `AccessPolicy` | [`access`] | which clients may reach a Service, port or route |
//!
//! Parsing is strict (`deny_unknown_fields`; a typo is an error, not a
//! silently ignored field) and every check runs while serde_yaml_ng still knows
//! the position ([`de`]), so an error reads
//! `line 12 column 17: spec.rules[0].backendRefs[1].weight: must be 0..=1000000, got 2000000`.
//! This module only parses: turning resources into proxy policy is the
//! index's job (`crate::index`).

pub mod access;
pub mod de;
pub mod httproute;
pub mod traffic;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize};

pub use self::access::AccessPolicy;
pub use self::de::{GwDuration, Label, ObjectName};
pub use self::httproute::HttpRoute;
pub use self::traffic::TrafficPolicy;

/// `apiVersion` of HTTPRoute.
pub const GATEWAY_V1: &str = "gateway.networking.k8s.io/v1";
/// `apiVersion` of Weft's own policy resources.
pub const POLICY_V1ALPHA1: &str = "policy.weft.dev/v1alpha1";
/// Gateway API group, for `targetRef`s to HTTPRoutes.
pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";
/// Weft's policy group.
pub const POLICY_GROUP: &str = "policy.weft.dev";

/// The resource kinds Weft reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
pub enum Kind {
    #[serde(rename = "HTTPRoute")]
    HttpRoute,
    TrafficPolicy,
    AccessPolicy,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::HttpRoute => "HTTPRoute",
            Kind::TrafficPolicy => "TrafficPolicy",
            Kind::AccessPolicy => "AccessPolicy",
        }
    }

    pub fn api_version(self) -> &'static str {
        match self {
            Kind::HttpRoute => GATEWAY_V1,
            Kind::TrafficPolicy | Kind::AccessPolicy => POLICY_V1ALPHA1,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The namespace a resource without `metadata.namespace` lives in.
pub const DEFAULT_NAMESPACE: &str = "default";

fn default_namespace() -> Label {
    Label(DEFAULT_NAMESPACE.to_owned())
}

/// The part of Kubernetes `ObjectMeta` that Weft reads. Other metadata
/// fields are refused like any unknown field, so that a misplaced key
/// (`metadata.spec`) is noticed.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metadata {
    pub name: ObjectName,
    #[serde(default = "default_namespace")]
    pub namespace: Label,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A resource's identity: kind, namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ResourceId {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl ResourceId {
    pub fn new(kind: Kind, namespace: &str, name: &str) -> Self {
        Self { kind, namespace: namespace.to_owned(), name: name.to_owned() }
    }

    /// `namespace/name`, the form used in proxy messages.
    pub fn ns_name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

impl fmt::Display for ResourceId {
    /// `kind/namespace/name`, as listed in `OutboundPolicy.sources`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.kind, self.namespace, self.name)
    }
}

/// One parsed and validated resource.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Resource {
    HttpRoute(Arc<HttpRoute>),
    TrafficPolicy(Arc<TrafficPolicy>),
    AccessPolicy(Arc<AccessPolicy>),
}

impl Resource {
    pub fn id(&self) -> ResourceId {
        let (kind, meta) = match self {
            Resource::HttpRoute(r) => (Kind::HttpRoute, &r.metadata),
            Resource::TrafficPolicy(r) => (Kind::TrafficPolicy, &r.metadata),
            Resource::AccessPolicy(r) => (Kind::AccessPolicy, &r.metadata),
        };
        ResourceId::new(kind, &meta.namespace.0, &meta.name.0)
    }
}

/// Why a policy document was refused. `line`/`column` are 1-based and
/// point at the offending value when serde_yaml_ng knew it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ParseError {
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// 0-based index of the YAML document in the file.
    pub document: usize,
    /// `HTTPRoute default/web`, when the document got that far.
    pub object: Option<String>,
    /// The field path and the problem, e.g.
    /// `spec.rules[0].backendRefs[1].weight: must be 0..=1000000, got 2000000`.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let (Some(l), Some(c)) = (self.line, self.column) {
            write!(f, "line {l} column {c}: ")?;
        } else {
            write!(f, "document {}: ", self.document + 1)?;
        }
        if let Some(o) = &self.object {
            write!(f, "{o}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl ParseError {
    /// Splits serde_yaml_ng's "… at line L column C" into position and message.
    pub fn from_yaml(e: &serde_yaml_ng::Error, document: usize, object: Option<String>) -> Self {
        let mut message = e.to_string();
        let (line, column) = match e.location() {
            Some(loc) => {
                let suffix = format!(" at line {} column {}", loc.line(), loc.column());
                if let Some(i) = message.find(&suffix) {
                    // libyaml syntax errors continue with ", while parsing …"; keep that.
                    message.replace_range(i..i + suffix.len(), "");
                }
                (Some(loc.line()), Some(loc.column()))
            }
            None => (None, None),
        };
        Self { line, column, document, object, message }
    }
}

/// What the first pass reads of each document: enough to pick the type and
/// to name the object in errors.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TypeMeta {
    #[serde(rename = "apiVersion")]
    _api_version: serde::de::IgnoredAny,
    kind: Kind,
    #[serde(default)]
    metadata: Option<LooseMeta>,
}

#[derive(Deserialize)]
struct LooseMeta {
    name: Option<String>,
    namespace: Option<String>,
}

/// At most this many documents in one file.
pub const MAX_DOCUMENTS: usize = 1000;

/// Parses a file of `---`-separated YAML documents, each one resource.
/// Empty documents (a leading or trailing `---`, comments only) are skipped.
/// The whole file is refused on the first invalid document: a file is
/// applied all or nothing.
pub fn parse(text: &str) -> Result<Vec<Resource>, ParseError> {
    // Pass 1: apiVersion/kind/name of every document. serde_yaml_ng positions
    // are absolute in the stream, so both passes report file lines.
    let mut metas: Vec<Option<(Kind, Option<String>)>> = Vec::new();
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        if i >= MAX_DOCUMENTS {
            return Err(ParseError {
                line: None,
                column: None,
                document: i,
                object: None,
                message: format!("more than {MAX_DOCUMENTS} documents in one file"),
            });
        }
        let meta = Option::<TypeMeta>::deserialize(doc).map_err(|e| ParseError::from_yaml(&e, i, None))?;
        let Some(meta) = meta else {
            metas.push(None);
            continue;
        };
        let name = meta.metadata.as_ref().and_then(|m| m.name.clone());
        let ns = meta.metadata.and_then(|m| m.namespace).unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
        let object = name.map(|n| format!("{} {ns}/{n}", meta.kind));
        metas.push(Some((meta.kind, object)));
    }

    // Pass 2: the typed, validated resources.
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let Some(Some((kind, object))) = metas.get(i) else { continue };
        let err = |e: serde_yaml_ng::Error| ParseError::from_yaml(&e, i, object.clone());
        let resource = match kind {
            Kind::HttpRoute => Resource::HttpRoute(Arc::new(HttpRoute::deserialize(doc).map_err(err)?)),
            Kind::TrafficPolicy => Resource::TrafficPolicy(Arc::new(TrafficPolicy::deserialize(doc).map_err(err)?)),
            Kind::AccessPolicy => Resource::AccessPolicy(Arc::new(AccessPolicy::deserialize(doc).map_err(err)?)),
        };
        let id = resource.id();
        if !seen.insert(id.clone()) {
            return Err(ParseError {
                line: None,
                column: None,
                document: i,
                object: object.clone(),
                message: format!("{} {} is defined twice in this file", id.kind, id.ns_name()),
            });
        }
        resource_checks(&resource).map_err(|message| ParseError {
            line: None,
            column: None,
            document: i,
            object: object.clone(),
            message,
        })?;
        out.push(resource);
    }
    Ok(out)
}

/// Checks that need the metadata and the spec together.
fn resource_checks(r: &Resource) -> Result<(), String> {
    match r {
        Resource::HttpRoute(_) => Ok(()),
        Resource::TrafficPolicy(p) => p.check_scope(),
        Resource::AccessPolicy(_) => Ok(()),
    }
}

/// `apiVersion` of an HTTPRoute, checked where it stands.
fn gateway_v1<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    exact(d, GATEWAY_V1)
}

/// `apiVersion` of TrafficPolicy and AccessPolicy.
fn policy_v1alpha1<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    exact(d, POLICY_V1ALPHA1)
}

fn exact<'de, D: Deserializer<'de>>(d: D, want: &'static str) -> Result<String, D::Error> {
    struct V(&'static str);
    impl serde::de::Visitor<'_> for V {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "`{}`", self.0)
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
            if v == self.0 { Ok(v.to_owned()) } else { Err(E::custom(format!("must be `{}`, got `{v}`", self.0))) }
        }
    }
    d.deserialize_str(V(want))
}

#[cfg(test)]
mod tests;
