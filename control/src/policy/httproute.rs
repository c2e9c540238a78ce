//! `gateway.networking.k8s.io/v1 HTTPRoute`, mesh profile (GAMMA): routes
//! attach to a Service through `parentRefs` and split its traffic over
//! `backendRefs`.
//!
//! Fields, defaults and limits follow the upstream CRD (standard channel,
//! plus the experimental `retry`); the CRD's CEL rules that matter to a
//! mesh are checked in [`Validate`] impls. Unsupported parts (Gateway
//! parents, ExtensionRef/CORS filters, non-Service backends) are refused
//! rather than ignored, so a route never means less than it says.

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

use super::Metadata;
use super::de::{
    GwDuration, HeaderName, Label, PortNumber, Ranged, Scalar, Validate, check_max, check_regex, check_unique, checked,
    checked_opt, checked_vec, scalar_de,
};

/// An HTTPRoute as read from YAML.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRoute {
    #[serde(deserialize_with = "super::gateway_v1")]
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    #[serde(deserialize_with = "checked")]
    pub spec: HttpRouteSpec,
    /// Ignored: a route exported from a cluster carries its status.
    #[serde(default, skip_serializing)]
    pub status: Option<IgnoredAny>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRouteSpec {
    #[serde(default, deserialize_with = "checked_vec")]
    pub parent_refs: Vec<ParentRef>,
    /// Accepted for compatibility; a mesh route matches on its parent
    /// Service, not on the Host header.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    /// Empty means the CRD default: one rule matching every request.
    #[serde(default, deserialize_with = "checked_vec", skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<HttpRouteRule>,
}

impl Validate for HttpRouteSpec {
    fn validate(&self) -> Result<(), String> {
        if self.parent_refs.is_empty() {
            return Err("parentRefs: at least one Service parent is required (kind: Service, group: core)".into());
        }
        check_max("parentRefs", &self.parent_refs, 32)?;
        check_max("hostnames", &self.hostnames, 16)?;
        check_max("rules", &self.rules, 16)?;
        check_unique("rules[].name", self.rules.iter().filter_map(|r| r.name.as_deref()))?;
        Ok(())
    }
}

/// A `parentRefs` entry: the Service (frontend: name and virtual IP) whose
/// traffic the route takes over.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ParentRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Defaults to the route's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<Label>,
    pub name: Label,
    /// Only this Service port; all ports when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortNumber>,
    /// Only the Service port with this name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
}

impl Validate for ParentRef {
    fn validate(&self) -> Result<(), String> {
        // The CRD defaults a parent to a Gateway, so a Service parent must
        // say so explicitly (Linkerd treats "" and "core" alike).
        match self.kind.as_deref() {
            Some("Service") => {}
            None => return Err("kind: required; set `kind: Service` (Weft routes attach to Services)".into()),
            Some(k) => {
                return Err(format!(
                    "kind: only `Service` parents are supported (the Gateway API mesh profile), got `{k}`"
                ));
            }
        }
        match self.group.as_deref() {
            Some("" | "core") => Ok(()),
            None => Err("group: required for a Service parent; set `group: core` (or \"\")".into()),
            Some(g) => Err(format!("group: must be `core` or \"\" for a Service, got `{g}`")),
        }
    }
}

/// Checks `group`/`kind` of a backend reference (CRD defaults: "" and Service).
fn check_service_backend(group: Option<&str>, kind: Option<&str>, port: Option<PortNumber>) -> Result<(), String> {
    if let Some(k) = kind.filter(|k| *k != "Service") {
        return Err(format!("kind: only `Service` backends are supported, got `{k}`"));
    }
    if let Some(g) = group.filter(|g| !matches!(*g, "" | "core")) {
        return Err(format!("group: must be `core` or \"\" for a Service, got `{g}`"));
    }
    if port.is_none() {
        return Err("port: required for a Service backend".into());
    }
    Ok(())
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRouteRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// ORed. Empty means the CRD default, `PathPrefix /`.
    #[serde(default, deserialize_with = "checked_vec")]
    pub matches: Vec<HttpRouteMatch>,
    #[serde(default, deserialize_with = "checked_vec", skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<HttpRouteFilter>,
    /// Empty: the parent Service itself (mesh profile), unless a
    /// RequestRedirect answers the request.
    #[serde(default, deserialize_with = "checked_vec", skip_serializing_if = "Vec::is_empty")]
    pub backend_refs: Vec<HttpBackendRef>,
    #[serde(default, deserialize_with = "checked_opt", skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<HttpRouteTimeouts>,
    /// Experimental channel (GEP-1731).
    #[serde(default, deserialize_with = "checked_opt", skip_serializing_if = "Option::is_none")]
    pub retry: Option<HttpRouteRetry>,
}

impl HttpRouteRule {
    pub fn has_redirect(&self) -> bool {
        self.filters.iter().any(|f| f.kind == FilterType::RequestRedirect)
    }
}

impl Validate for HttpRouteRule {
    fn validate(&self) -> Result<(), String> {
        check_max("matches", &self.matches, 64)?;
        check_max("filters", &self.filters, 16)?;
        check_max("backendRefs", &self.backend_refs, 16)?;
        if let Some(n) = &self.name {
            super::de::check_dns_subdomain(n).map_err(|e| format!("name: {e}"))?;
        }
        // CEL rules of the upstream CRD.
        for once in [
            FilterType::RequestHeaderModifier,
            FilterType::ResponseHeaderModifier,
            FilterType::RequestRedirect,
            FilterType::UrlRewrite,
        ] {
            if self.filters.iter().filter(|f| f.kind == once).count() > 1 {
                return Err(format!("filters: {} may appear at most once per rule", once.as_str()));
            }
        }
        if self.has_redirect() && self.filters.iter().any(|f| f.kind == FilterType::UrlRewrite) {
            return Err("filters: RequestRedirect and URLRewrite cannot both be set".into());
        }
        if self.has_redirect() && !self.backend_refs.is_empty() {
            return Err(
                "filters: RequestRedirect answers the request itself and cannot be used with backendRefs".into()
            );
        }
        let prefix_rewrite = self.filters.iter().any(|f| {
            let path = match (&f.request_redirect, &f.url_rewrite) {
                (Some(r), _) => r.path.as_ref(),
                (_, Some(r)) => r.path.as_ref(),
                _ => None,
            };
            path.is_some_and(|p| p.kind == PathModifierType::ReplacePrefixMatch)
        });
        let all_prefix = !self.matches.is_empty()
            && self.matches.iter().all(|m| m.path.as_ref().is_none_or(|p| p.kind == PathMatchType::PathPrefix));
        if prefix_rewrite && !all_prefix && !self.matches.is_empty() {
            return Err(
                "filters: ReplacePrefixMatch needs every match of the rule to be a PathPrefix path match".into()
            );
        }
        if let (Some(t), Some(r)) = (&self.timeouts, &self.retry) {
            // GEP-1731: attempts and backoff must fit in the request timeout.
            if let (Some(req), Some(backoff)) = (t.request, r.backoff)
                && req.0 > std::time::Duration::ZERO
                && backoff.0 >= req.0
            {
                return Err(format!("retry.backoff: {backoff} must be shorter than timeouts.request ({req})"));
            }
        }
        Ok(())
    }
}

/// One way a request can match a rule; all its conditions must hold.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRouteMatch {
    #[serde(default, deserialize_with = "checked_opt", skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatch>,
    #[serde(default, deserialize_with = "checked_vec", skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatch>,
    #[serde(default, deserialize_with = "checked_vec", skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<QueryParamMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<Method>,
}

impl Validate for HttpRouteMatch {
    fn validate(&self) -> Result<(), String> {
        check_max("headers", &self.headers, 16)?;
        check_max("queryParams", &self.query_params, 16)?;
        check_unique("headers[].name", self.headers.iter().map(|h| h.name.0.as_str()))?;
        // Query parameter names are case-sensitive; compare exactly.
        let mut seen = std::collections::BTreeSet::new();
        for q in &self.query_params {
            if !seen.insert(q.name.as_str()) {
                return Err(format!("queryParams[].name: `{}` appears more than once", q.name));
            }
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, Default)]
pub enum PathMatchType {
    Exact,
    #[default]
    PathPrefix,
    RegularExpression,
}

fn default_path() -> String {
    "/".into()
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PathMatch {
    #[serde(rename = "type", default)]
    pub kind: PathMatchType,
    #[serde(default = "default_path")]
    pub value: String,
}

impl Validate for PathMatch {
    fn validate(&self) -> Result<(), String> {
        if self.value.len() > 1024 {
            return Err("value: at most 1024 bytes".into());
        }
        match self.kind {
            PathMatchType::RegularExpression => check_regex(&self.value).map_err(|e| format!("value: {e}")),
            PathMatchType::Exact | PathMatchType::PathPrefix => check_path(&self.value),
        }
    }
}

/// The CRD's CEL rules for Exact/PathPrefix values: absolute, normalized.
fn check_path(v: &str) -> Result<(), String> {
    if !v.starts_with('/') {
        return Err(format!("value: must be an absolute path starting with '/', got `{v}`"));
    }
    for bad in ["//", "/./", "/../", "%2f", "%2F", "#"] {
        if v.contains(bad) {
            return Err(format!("value: must not contain `{bad}`, got `{v}`"));
        }
    }
    if v.ends_with("/..") || v.ends_with("/.") {
        return Err(format!("value: must not end with `/.` or `/..`, got `{v}`"));
    }
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, Default)]
pub enum ValueMatchType {
    #[default]
    Exact,
    RegularExpression,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatch {
    #[serde(rename = "type", default)]
    pub kind: ValueMatchType,
    pub name: HeaderName,
    pub value: String,
}

impl Validate for HeaderMatch {
    fn validate(&self) -> Result<(), String> {
        check_value_match(self.kind, &self.value)
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QueryParamMatch {
    #[serde(rename = "type", default)]
    pub kind: ValueMatchType,
    pub name: String,
    pub value: String,
}

impl Validate for QueryParamMatch {
    fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() || self.name.len() > 256 {
            return Err("name: 1 to 256 bytes".into());
        }
        check_value_match(self.kind, &self.value)
    }
}

fn check_value_match(kind: ValueMatchType, value: &str) -> Result<(), String> {
    if value.len() > 4096 {
        return Err("value: at most 4096 bytes".into());
    }
    match kind {
        ValueMatchType::RegularExpression => check_regex(value).map_err(|e| format!("value: {e}")),
        ValueMatchType::Exact => Ok(()),
    }
}

#[allow(clippy::upper_case_acronyms)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub enum Method {
    GET,
    HEAD,
    POST,
    PUT,
    DELETE,
    CONNECT,
    OPTIONS,
    TRACE,
    PATCH,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::GET => "GET",
            Method::HEAD => "HEAD",
            Method::POST => "POST",
            Method::PUT => "PUT",
            Method::DELETE => "DELETE",
            Method::CONNECT => "CONNECT",
            Method::OPTIONS => "OPTIONS",
            Method::TRACE => "TRACE",
            Method::PATCH => "PATCH",
        }
    }
}

/// Supported filter types. ExtensionRef and CORS are refused by serde
/// (unknown variant), listing these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub enum FilterType {
    RequestHeaderModifier,
    ResponseHeaderModifier,
    RequestRedirect,
    #[serde(rename = "URLRewrite")]
    UrlRewrite,
    RequestMirror,
}

impl FilterType {
    pub fn as_str(self) -> &'static str {
        match self {
            FilterType::RequestHeaderModifier => "RequestHeaderModifier",
            FilterType::ResponseHeaderModifier => "ResponseHeaderModifier",
            FilterType::RequestRedirect => "RequestRedirect",
            FilterType::UrlRewrite => "URLRewrite",
            FilterType::RequestMirror => "RequestMirror",
        }
    }

    fn field(self) -> &'static str {
        match self {
            FilterType::RequestHeaderModifier => "requestHeaderModifier",
            FilterType::ResponseHeaderModifier => "responseHeaderModifier",
            FilterType::RequestRedirect => "requestRedirect",
            FilterType::UrlRewrite => "urlRewrite",
            FilterType::RequestMirror => "requestMirror",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRouteFilter {
    #[serde(rename = "type")]
    pub kind: FilterType,
    #[serde(default, deserialize_with = "checked_opt", skip_serializing_if = "Option::is_none")]
    pub request_header_modifier: Option<HeaderModifier>,
    #[serde(default, deserialize_with = "checked_opt", skip_serializing_if = "Option::is_none")]
    pub response_header_modifier: Option<HeaderModifier>,
    #[serde(default, deserialize_with = "checked_opt", skip_serializing_if = "Option::is_none")]
    pub request_redirect: Option<RequestRedirect>,
    #[serde(rename = "urlRewrite", default, deserialize_with = "checked_opt", skip_serializing_if = "Option::is_none")]
    pub url_rewrite: Option<UrlRewrite>,
    #[serde(default, deserialize_with = "checked_opt", skip_serializing_if = "Option::is_none")]
    pub request_mirror: Option<RequestMirror>,
}

impl Validate for HttpRouteFilter {
    fn validate(&self) -> Result<(), String> {
        let set = [
            (FilterType::RequestHeaderModifier, self.request_header_modifier.is_some()),
            (FilterType::ResponseHeaderModifier, self.response_header_modifier.is_some()),
            (FilterType::RequestRedirect, self.request_redirect.is_some()),
            (FilterType::UrlRewrite, self.url_rewrite.is_some()),
            (FilterType::RequestMirror, self.request_mirror.is_some()),
        ];
        for (t, present) in set {
            if t == self.kind && !present {
                return Err(format!("{}: required when type is {}", t.field(), t.as_str()));
            }
            if t != self.kind && present {
                return Err(format!("{}: must not be set when type is {}", t.field(), self.kind.as_str()));
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct HeaderModifier {
    #[serde(default, deserialize_with = "checked_vec", skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<HttpHeader>,
    #[serde(default, deserialize_with = "checked_vec", skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<HttpHeader>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<HeaderName>,
}

impl Validate for HeaderModifier {
    fn validate(&self) -> Result<(), String> {
        check_max("set", &self.set, 16)?;
        check_max("add", &self.add, 16)?;
        check_max("remove", &self.remove, 16)?;
        check_unique("set[].name", self.set.iter().map(|h| h.name.0.as_str()))?;
        check_unique("add[].name", self.add.iter().map(|h| h.name.0.as_str()))?;
        check_unique("remove", self.remove.iter().map(|h| h.0.as_str()))?;
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpHeader {
    pub name: HeaderName,
    pub value: String,
}

impl Validate for HttpHeader {
    fn validate(&self) -> Result<(), String> {
        if self.value.len() > 4096 || http::HeaderValue::from_str(&self.value).is_err() {
            return Err("value: must be a valid header value (visible ASCII, no line breaks, at most 4096)".into());
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    Http,
    Https,
}

/// Redirect status codes the CRD allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct RedirectStatus(pub u16);

impl Scalar for RedirectStatus {
    const EXPECTING: &'static str = "301, 302, 303, 307 or 308";
    fn from_u64(v: u64) -> Result<Self, String> {
        match v {
            301 | 302 | 303 | 307 | 308 => Ok(Self(v as u16)),
            _ => Err(format!("must be 301, 302, 303, 307 or 308, got {v}")),
        }
    }
}
scalar_de!(RedirectStatus, deserialize_number);

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RequestRedirect {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<Scheme>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, deserialize_with = "checked_opt", skip_serializing_if = "Option::is_none")]
    pub path: Option<PathModifier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortNumber>,
    /// Default 302.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<RedirectStatus>,
}

impl Validate for RequestRedirect {
    fn validate(&self) -> Result<(), String> {
        check_hostname(self.hostname.as_deref())
    }
}

fn check_hostname(h: Option<&str>) -> Result<(), String> {
    match h {
        Some(h) if super::de::check_dns_subdomain(h).is_err() => {
            Err(format!("hostname: `{h}` is not a valid host name (lower-case, no port, no wildcard)"))
        }
        _ => Ok(()),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub enum PathModifierType {
    ReplaceFullPath,
    ReplacePrefixMatch,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PathModifier {
    #[serde(rename = "type")]
    pub kind: PathModifierType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_full_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_prefix_match: Option<String>,
}

impl PathModifier {
    /// The replacement for the type that is set.
    pub fn value(&self) -> &str {
        match self.kind {
            PathModifierType::ReplaceFullPath => self.replace_full_path.as_deref().unwrap_or("/"),
            PathModifierType::ReplacePrefixMatch => self.replace_prefix_match.as_deref().unwrap_or("/"),
        }
    }
}

impl Validate for PathModifier {
    fn validate(&self) -> Result<(), String> {
        let (want, other, value) = match self.kind {
            PathModifierType::ReplaceFullPath => {
                ("replaceFullPath", self.replace_prefix_match.is_some(), &self.replace_full_path)
            }
            PathModifierType::ReplacePrefixMatch => {
                ("replacePrefixMatch", self.replace_full_path.is_some(), &self.replace_prefix_match)
            }
        };
        if other {
            return Err(format!("only {want} may be set when type is {:?}", self.kind));
        }
        match value {
            None => Err(format!("{want}: required when type is {:?}", self.kind)),
            Some(v) => check_path(v).map_err(|e| format!("{want}: {}", e.trim_start_matches("value: "))),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UrlRewrite {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, deserialize_with = "checked_opt", skip_serializing_if = "Option::is_none")]
    pub path: Option<PathModifier>,
}

impl Validate for UrlRewrite {
    fn validate(&self) -> Result<(), String> {
        check_hostname(self.hostname.as_deref())
    }
}

/// A reference to a Service and port (mirror target).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackendObjectRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub name: Label,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<Label>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortNumber>,
}

impl Validate for BackendObjectRef {
    fn validate(&self) -> Result<(), String> {
        check_service_backend(self.group.as_deref(), self.kind.as_deref(), self.port)
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorFraction {
    pub numerator: Ranged<0, { u32::MAX as u64 }>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denominator: Option<Ranged<1, { u32::MAX as u64 }>>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RequestMirror {
    #[serde(deserialize_with = "checked")]
    pub backend_ref: BackendObjectRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<super::de::Percent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraction: Option<MirrorFraction>,
}

impl RequestMirror {
    /// Share of requests mirrored, 0..=100 (100 when neither is set).
    pub fn percent(&self) -> u32 {
        match (&self.percent, &self.fraction) {
            (Some(p), _) => p.as_u32(),
            (None, Some(f)) => {
                let den = f.denominator.map_or(100, |d| d.get());
                u32::try_from(f.numerator.get() * 100 / den).unwrap_or(100)
            }
            (None, None) => 100,
        }
    }
}

impl Validate for RequestMirror {
    fn validate(&self) -> Result<(), String> {
        if self.percent.is_some() && self.fraction.is_some() {
            return Err("only one of percent and fraction may be set".into());
        }
        if let Some(f) = &self.fraction
            && f.numerator.get() > f.denominator.map_or(100, |d| d.get())
        {
            return Err("fraction.numerator: must not exceed fraction.denominator".into());
        }
        Ok(())
    }
}

/// Traffic share of a backend: relative, 0 receives nothing.
pub type Weight = Ranged<0, 1_000_000>;

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpBackendRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub name: Label,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<Label>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortNumber>,
    /// Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<Weight>,
    #[serde(default, deserialize_with = "checked_vec", skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<HttpRouteFilter>,
}

impl Validate for HttpBackendRef {
    fn validate(&self) -> Result<(), String> {
        check_service_backend(self.group.as_deref(), self.kind.as_deref(), self.port)?;
        check_max("filters", &self.filters, 16)?;
        if let Some(f) =
            self.filters.iter().find(|f| matches!(f.kind, FilterType::RequestRedirect | FilterType::UrlRewrite))
        {
            return Err(format!("filters: {} is only allowed on a rule, not on a backendRef", f.kind.as_str()));
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRouteTimeouts {
    /// The whole transaction, retries included; `0s` disables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<GwDuration>,
    /// One attempt to a backend; must not exceed `request`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_request: Option<GwDuration>,
}

impl Validate for HttpRouteTimeouts {
    fn validate(&self) -> Result<(), String> {
        check_backend_request(self.request, self.backend_request)
    }
}

/// `backendRequest` ≤ `request` unless `request` is disabled (`0s`).
pub(crate) fn check_backend_request(request: Option<GwDuration>, backend: Option<GwDuration>) -> Result<(), String> {
    if let (Some(r), Some(b)) = (request, backend)
        && r.0 > std::time::Duration::ZERO
        && b.0 > r.0
    {
        return Err(format!("backendRequest: {b} must not exceed request ({r})"));
    }
    Ok(())
}

/// A retryable HTTP status code, 400..=599 (GEP-1731).
pub type RetryCode = Ranged<400, 599>;

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct HttpRouteRetry {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub codes: Vec<RetryCode>,
    /// Retries after the first attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<Ranged<0, 10>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<GwDuration>,
}

impl Validate for HttpRouteRetry {
    fn validate(&self) -> Result<(), String> {
        check_max("codes", &self.codes, 64)
    }
}
