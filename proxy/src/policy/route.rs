//! Route matching: which [`api::HttpRoute`] of an [`api::OutboundPolicy`]
//! (and which of its matches) a request takes.
//!
//! ```text
//!   OutboundPolicy.routes ──RouteTable::compile──► ranked matches (regexes built once)
//!   (method, uri, headers) ──RouteTable::find──► Some(Matched) │ None (→ 404)
//! ```
//!
//! Semantics are the Gateway API's HTTPRoute (`apis/v1/httproute_types.go`):
//!
//! - path `Exact`; `PathPrefix` element by element (`/foo` matches `/foo`,
//!   `/foo/` and `/foo/bar`, not `/foobar`; a trailing `/` in the prefix is
//!   ignored); `RegularExpression` must match the whole path. The path is the
//!   request's raw path, without the query, not decoded or normalized.
//! - headers: names case-insensitive, values exact (case-sensitive) or a
//!   whole-value regular expression. A header sent several times is matched
//!   as one value, the lines joined with `,` (RFC 9110 §5.3, as the Gateway
//!   API recommends) — `Cookie` lines with `; ` (RFC 9113 §8.2.3 splits
//!   cookies that way). A cookie match is a header match on `cookie` with a
//!   regular expression, e.g. `(.*; )?version=v2(; .*)?`.
//! - query parameters: names exact, values as headers; names and values are
//!   form-decoded (`%XX`, `+`); a parameter sent twice matches on its first
//!   value (the Gateway API's recommendation).
//! - method; conditions AND within a match, matches OR within a route; a
//!   route without matches matches everything (`PathPrefix /`).
//! - Precedence across every match of every route: `Exact` path, then
//!   `RegularExpression` paths (longer patterns first), then the longest
//!   `PathPrefix`; then a method match; then most header matches; then most
//!   query matches; then the order the control plane delivered (it sorts by
//!   route `namespace/name`, rule and match index). Regex placement is
//!   implementation-specific in the Gateway API; like Linkerd we put regexes
//!   before prefixes, or a catch-all `PathPrefix /` would make every regex
//!   route unreachable. The control plane sorts the same way
//!   (`control/src/index/outbound.rs`, `MatchRank`), so this re-sort only
//!   guards the contract.
//!
//! The table is compiled once per policy version, so the request path does
//! no allocation except when a header is repeated and must be joined for a
//! regex, or a query parameter needs decoding.

use std::borrow::Cow;
use std::cmp::Reverse;

use http::{HeaderMap, HeaderName, Method, Uri};
use regex::bytes::{Regex, RegexBuilder};
use weft_api::policy as api;

/// Longest pattern accepted (the control plane refuses longer ones too).
pub const REGEX_MAX_LEN: usize = 1024;
/// Compiled program size per regex; bounds memory on policy arrival.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Lazy DFA cache per regex; bounds memory on the request path.
pub const REGEX_DFA_SIZE_LIMIT: usize = 1 << 20;

/// Why a route was left out of the table. The route is skipped as a whole
/// (never half-applied); the caller logs the error.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("route `{route}` skipped: {what} regular expression `{pattern}` is invalid: {reason}")]
    Regex { route: String, what: String, pattern: String, reason: String },
    #[error("route `{route}` skipped: unknown {what} match type {kind}; is the control plane newer than this proxy?")]
    UnknownKind { route: String, what: String, kind: i32 },
    #[error("route `{route}` skipped: {what} has no value to match")]
    MissingValue { route: String, what: String },
    #[error("route `{route}` skipped: method `{method}` is not a valid HTTP method")]
    Method { route: String, method: String },
    #[error("route `{route}` skipped: `{name}` is not a valid header name")]
    HeaderName { route: String, name: String },
    #[error("route `{route}` skipped: path `{path}` must start with '/'")]
    Path { route: String, path: String },
}

/// The routes of one policy version, ready to match requests.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<api::HttpRoute>,
    /// Every match of every usable route, best first.
    matches: Vec<CompiledMatch>,
}

/// The route a request takes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Matched<'a> {
    /// Index in the delivered `OutboundPolicy.routes` (a metrics label).
    pub index: usize,
    pub route: &'a api::HttpRoute,
    /// Which of `route.matches` matched; `None` when the route has none.
    pub match_index: Option<usize>,
    /// For a `PathPrefix` match, the prefix the request path starts with,
    /// without a trailing `/` (`""` for `/`): what `ReplacePrefixMatch`
    /// rewrites replace.
    pub path_prefix: Option<&'a str>,
}

#[derive(Debug)]
struct CompiledMatch {
    rank: Rank,
    route: usize,
    index: Option<usize>,
    path: PathMatcher,
    method: Option<Method>,
    headers: Box<[(HeaderName, ValueMatcher)]>,
    query: Box<[(Box<str>, ValueMatcher)]>,
}

/// Gateway API precedence; smaller sorts first.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Rank {
    /// Exact 0, regular expression 1, prefix 2.
    path_kind: u8,
    /// Longer prefixes and regex patterns first (0 for exact paths).
    path_len: Reverse<usize>,
    no_method: bool,
    headers: Reverse<usize>,
    query: Reverse<usize>,
    /// Delivered order.
    route: usize,
    index: usize,
}

#[derive(Debug)]
enum PathMatcher {
    Exact(Box<str>),
    /// Without trailing `/`; empty for `/`.
    Prefix(Box<str>),
    Regex(Regex),
}

#[derive(Debug)]
enum ValueMatcher {
    Exact(Box<[u8]>),
    Regex(Regex),
}

impl ValueMatcher {
    fn is_match(&self, v: &[u8]) -> bool {
        match self {
            Self::Exact(e) => **e == *v,
            Self::Regex(re) => re.is_match(v),
        }
    }
}

/// Builds a regex that must match the whole input. The pattern is first
/// compiled alone, so that it cannot close the anchoring group (`a)|(b`).
fn full_match_regex(pattern: &str) -> Result<Regex, String> {
    if pattern.len() > REGEX_MAX_LEN {
        return Err(format!("longer than {REGEX_MAX_LEN} bytes"));
    }
    let build = |p: &str| {
        RegexBuilder::new(p)
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_DFA_SIZE_LIMIT)
            .build()
            .map_err(|e| e.to_string().lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("invalid").to_owned())
    };
    build(pattern)?;
    build(&format!(r"\A(?:{pattern})\z"))
}

fn value_matcher(
    route: &str,
    what: impl Fn() -> String,
    m: Option<&api::StringMatch>,
) -> Result<ValueMatcher, RouteError> {
    use api::string_match::Kind;
    let Some(m) = m else { return Err(RouteError::MissingValue { route: route.to_owned(), what: what() }) };
    match Kind::try_from(m.kind) {
        Ok(Kind::Exact) => Ok(ValueMatcher::Exact(m.value.as_bytes().into())),
        Ok(Kind::Regex) => full_match_regex(&m.value).map(ValueMatcher::Regex).map_err(|reason| RouteError::Regex {
            route: route.to_owned(),
            what: what(),
            pattern: m.value.clone(),
            reason,
        }),
        // PREFIX means nothing for a header or query value.
        Ok(Kind::Prefix) | Err(_) => {
            Err(RouteError::UnknownKind { route: route.to_owned(), what: what(), kind: m.kind })
        }
    }
}

fn path_matcher(route: &str, m: Option<&api::StringMatch>) -> Result<(PathMatcher, u8, usize), RouteError> {
    use api::string_match::Kind;
    // An unset path is the Gateway API default, `PathPrefix /`.
    let Some(m) = m else { return Ok((PathMatcher::Prefix("".into()), 2, 1)) };
    let kind = Kind::try_from(m.kind).map_err(|_| RouteError::UnknownKind {
        route: route.to_owned(),
        what: "path".into(),
        kind: m.kind,
    })?;
    if kind != Kind::Regex && !m.value.starts_with('/') {
        return Err(RouteError::Path { route: route.to_owned(), path: m.value.clone() });
    }
    Ok(match kind {
        Kind::Exact => (PathMatcher::Exact(m.value.as_str().into()), 0, 0),
        Kind::Prefix => (PathMatcher::Prefix(m.value.trim_end_matches('/').into()), 2, m.value.len()),
        Kind::Regex => {
            let re = full_match_regex(&m.value).map_err(|reason| RouteError::Regex {
                route: route.to_owned(),
                what: "path".into(),
                pattern: m.value.clone(),
                reason,
            })?;
            (PathMatcher::Regex(re), 1, m.value.len())
        }
    })
}

fn compile_match(
    route_name: &str,
    route: usize,
    index: Option<usize>,
    m: &api::RouteMatch,
) -> Result<CompiledMatch, RouteError> {
    let (path, path_kind, path_len) = path_matcher(route_name, m.path.as_ref())?;
    let method = if m.method.is_empty() {
        None
    } else {
        Some(
            Method::from_bytes(m.method.as_bytes())
                .map_err(|_| RouteError::Method { route: route_name.to_owned(), method: m.method.clone() })?,
        )
    };
    let mut headers: Vec<(HeaderName, ValueMatcher)> = Vec::with_capacity(m.headers.len());
    for h in &m.headers {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| RouteError::HeaderName { route: route_name.to_owned(), name: h.name.clone() })?;
        let value = value_matcher(route_name, || format!("header `{}`", h.name), h.value.as_ref())?;
        // Gateway API: of entries with an equivalent name only the first counts.
        if !headers.iter().any(|(n, _)| *n == name) {
            headers.push((name, value));
        }
    }
    let mut query: Vec<(Box<str>, ValueMatcher)> = Vec::with_capacity(m.query_params.len());
    for q in &m.query_params {
        let value = value_matcher(route_name, || format!("query parameter `{}`", q.name), q.value.as_ref())?;
        if !query.iter().any(|(n, _)| **n == *q.name) {
            query.push((q.name.as_str().into(), value));
        }
    }
    let rank = Rank {
        path_kind,
        path_len: Reverse(path_len),
        no_method: method.is_none(),
        headers: Reverse(headers.len()),
        query: Reverse(query.len()),
        route,
        index: index.unwrap_or(0),
    };
    Ok(CompiledMatch { rank, route, index, path, method, headers: headers.into(), query: query.into() })
}

impl RouteTable {
    /// Compiles the routes of a policy. Routes that cannot be compiled are
    /// left out (their requests fall to other routes or 404) and reported.
    pub fn compile(routes: Vec<api::HttpRoute>) -> (Self, Vec<RouteError>) {
        let mut matches = Vec::new();
        let mut errors = Vec::new();
        for (i, route) in routes.iter().enumerate() {
            let compiled: Result<Vec<_>, _> = if route.matches.is_empty() {
                compile_match(&route.name, i, None, &api::RouteMatch::default()).map(|m| vec![m])
            } else {
                route.matches.iter().enumerate().map(|(j, m)| compile_match(&route.name, i, Some(j), m)).collect()
            };
            match compiled {
                Ok(ms) => matches.extend(ms),
                Err(e) => errors.push(e),
            }
        }
        matches.sort_by(|a, b| a.rank.cmp(&b.rank));
        (Self { routes, matches }, errors)
    }

    /// The routes as delivered (including any that were skipped).
    pub fn routes(&self) -> &[api::HttpRoute] {
        &self.routes
    }

    /// No routes were delivered: every request goes to the service itself.
    /// (When routes exist and none matches, [`Self::find`] is `None`: 404.)
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The best match for a request, or `None` when no route matches.
    pub fn find(&self, method: &Method, uri: &Uri, headers: &HeaderMap) -> Option<Matched<'_>> {
        let path = match uri.path() {
            "" => "/",
            p => p,
        };
        let query = uri.query();
        let m = self.matches.iter().find(|m| m.is_match(method, path, query, headers))?;
        let route = self.routes.get(m.route)?;
        let path_prefix = match &m.path {
            PathMatcher::Prefix(p) => Some(&**p),
            _ => None,
        };
        Some(Matched { index: m.route, route, match_index: m.index, path_prefix })
    }

    /// [`Self::find`] for a request's head.
    pub fn find_parts(&self, parts: &http::request::Parts) -> Option<Matched<'_>> {
        self.find(&parts.method, &parts.uri, &parts.headers)
    }
}

impl CompiledMatch {
    fn is_match(&self, method: &Method, path: &str, query: Option<&str>, headers: &HeaderMap) -> bool {
        let path_ok = match &self.path {
            PathMatcher::Exact(e) => **e == *path,
            PathMatcher::Prefix(p) => {
                path.strip_prefix(&**p).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            }
            PathMatcher::Regex(re) => re.is_match(path.as_bytes()),
        };
        path_ok
            && self.method.as_ref().is_none_or(|m| m == method)
            && self.headers.iter().all(|(name, v)| header_matches(headers, name, v))
            && self
                .query
                .iter()
                .all(|(name, v)| query.and_then(|q| query_value(q, name)).is_some_and(|q| v.is_match(&q)))
    }
}

/// Matches the header's value, its lines joined when it was sent more than
/// once (allocating only then).
fn header_matches(headers: &HeaderMap, name: &HeaderName, m: &ValueMatcher) -> bool {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else { return false };
    let Some(second) = values.next() else { return m.is_match(first.as_bytes()) };
    let sep: &[u8] = if name == http::header::COOKIE { b"; " } else { b"," };
    let mut joined = Vec::with_capacity(first.len() + sep.len() + second.len());
    joined.extend_from_slice(first.as_bytes());
    for v in std::iter::once(second).chain(values) {
        joined.extend_from_slice(sep);
        joined.extend_from_slice(v.as_bytes());
    }
    m.is_match(&joined)
}

/// The first value of query parameter `name`, form-decoded.
pub fn query_value<'q>(query: &'q str, name: &str) -> Option<Cow<'q, [u8]>> {
    query.split('&').find_map(|pair| {
        let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
        (*form_decode(n) == *name.as_bytes()).then(|| form_decode(v))
    })
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a
/// byte; a malformed escape stays as written.
fn form_decode(s: &str) -> Cow<'_, [u8]> {
    let b = s.as_bytes();
    if !b.iter().any(|&c| c == b'%' || c == b'+') {
        return Cow::Borrowed(b);
    }
    let hex = |c: u8| (c as char).to_digit(16).and_then(|d| u8::try_from(d).ok());
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        match c {
            b'+' => out.push(b' '),
            b'%' => match (b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(c),
            },
            _ => out.push(c),
        }
        i += 1;
    }
    Cow::Owned(out)
}

#[cfg(test)]
#[path = "route_tests.rs"]
mod tests;
