//! HTTPRoute filters, compiled once per policy and applied per request:
//! `RequestHeaderModifier`, `ResponseHeaderModifier`, `RequestRedirect`,
//! `URLRewrite` and `RequestMirror` (the mirror is only described here; the
//! HTTP stack sends the copy).
//!
//! Semantics follow the Gateway API: `set` replaces every value of a
//! header, `add` appends one, `remove` drops all; a redirect answers the
//! client itself (302 unless 301 is asked) and never reaches a backend;
//! `ReplacePrefixMatch` swaps the part of the path the route's `PathPrefix`
//! matched, keeping the rest and the query.

use http::header::{self, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, StatusCode, Uri};
use weft_api::policy as api;

/// Why a filter was left out: the control plane validates names and
/// values, so this means a newer control plane or a bug; the route is
/// still served, without that filter.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("filter skipped: {0}")]
pub struct FilterError(String);

/// `set`/`add`/`remove` on a header map, with names and values parsed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HeaderModifier {
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

impl HeaderModifier {
    pub fn compile(m: &api::HeaderModifier) -> Result<Self, FilterError> {
        let pair = |h: &api::Header| -> Result<(HeaderName, HeaderValue), FilterError> {
            let name = HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|_| FilterError(format!("header name `{}` is invalid", h.name)))?;
            let value = HeaderValue::from_str(&h.value)
                .map_err(|_| FilterError(format!("header `{}` has an invalid value", h.name)))?;
            Ok((name, value))
        };
        let remove = m
            .remove
            .iter()
            .map(|n| {
                HeaderName::from_bytes(n.as_bytes()).map_err(|_| FilterError(format!("header name `{n}` is invalid")))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            set: m.set.iter().map(pair).collect::<Result<_, _>>()?,
            add: m.add.iter().map(pair).collect::<Result<_, _>>()?,
            remove,
        })
    }

    pub fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
        for name in &self.remove {
            headers.remove(name);
        }
    }
}

/// A path rewrite: the whole path, or the matched prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathRewrite {
    Full(String),
    Prefix(String),
}

impl PathRewrite {
    fn compile(p: &api::PathModifier) -> Result<Self, FilterError> {
        if !p.value.starts_with('/') {
            return Err(FilterError(format!("path `{}` does not start with `/`", p.value)));
        }
        Ok(match api::path_modifier::Kind::try_from(p.kind) {
            Ok(api::path_modifier::Kind::Full) => Self::Full(p.value.clone()),
            Ok(api::path_modifier::Kind::Prefix) => Self::Prefix(p.value.clone()),
            Err(_) => return Err(FilterError(format!("unknown path modifier kind {}", p.kind))),
        })
    }

    /// The new path for `path`, which the route matched with `matched_prefix`
    /// (`None` for Exact or regex matches: then a prefix rewrite replaces
    /// the whole path, as there is no matched prefix to swap).
    pub fn rewrite(&self, path: &str, matched_prefix: Option<&str>) -> String {
        match self {
            Self::Full(p) => p.clone(),
            Self::Prefix(replacement) => {
                let prefix = matched_prefix.unwrap_or(path).trim_end_matches('/');
                let rest = path.get(prefix.len()..).unwrap_or("");
                let base = replacement.trim_end_matches('/');
                match (base.is_empty(), rest.is_empty()) {
                    (true, true) => "/".to_owned(),
                    (true, false) => rest.to_owned(),
                    (false, _) => format!("{base}{rest}"),
                }
            }
        }
    }
}

/// `RequestRedirect`: the client gets a 301/302 with a new `Location`.
#[derive(Clone, Debug, PartialEq)]
pub struct Redirect {
    scheme: Option<Scheme>,
    hostname: Option<String>,
    port: Option<u16>,
    path: Option<PathRewrite>,
    pub status: StatusCode,
}

impl Redirect {
    fn compile(r: &api::Redirect) -> Result<Self, FilterError> {
        let scheme = match r.scheme.as_str() {
            "" => None,
            "http" => Some(Scheme::HTTP),
            "https" => Some(Scheme::HTTPS),
            other => return Err(FilterError(format!("redirect scheme `{other}` is not http or https"))),
        };
        let port = match r.port {
            0 => None,
            p => Some(u16::try_from(p).map_err(|_| FilterError(format!("redirect port {p} is out of range")))?),
        };
        let status = match r.status_code {
            0 | 302 => StatusCode::FOUND,
            301 => StatusCode::MOVED_PERMANENTLY,
            other => return Err(FilterError(format!("redirect status {other} is not 301 or 302"))),
        };
        Ok(Self {
            scheme,
            hostname: (!r.hostname.is_empty()).then(|| r.hostname.clone()),
            port,
            path: r.path.as_ref().map(PathRewrite::compile).transpose()?,
            status,
        })
    }

    /// The `Location` for a request to `uri` (with `host` from the Host
    /// header when the URI has no authority).
    pub fn location(&self, uri: &Uri, host: Option<&str>, matched_prefix: Option<&str>) -> String {
        let scheme = self.scheme.as_ref().map_or_else(|| uri.scheme_str().unwrap_or("http"), Scheme::as_str);
        let (orig_host, orig_port) = split_host(uri.authority().map(Authority::as_str).or(host).unwrap_or(""));
        let hostname = self.hostname.as_deref().unwrap_or(orig_host);
        // Gateway API: a redirect that changes the scheme drops the port
        // unless one is given; otherwise the original port is kept.
        let port = match (self.port, &self.scheme) {
            (Some(p), _) => Some(p),
            (None, Some(_)) => None,
            (None, None) => orig_port,
        };
        let port = port.filter(|p| !matches!((scheme, p), ("http", 80) | ("https", 443)));
        let path = match &self.path {
            Some(p) => p.rewrite(uri.path(), matched_prefix),
            None => uri.path().to_owned(),
        };
        let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
        match port {
            Some(p) => format!("{scheme}://{hostname}:{p}{path}{query}"),
            None => format!("{scheme}://{hostname}{path}{query}"),
        }
    }
}

fn split_host(authority: &str) -> (&str, Option<u16>) {
    match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => match p.parse() {
            Ok(port) => (h, Some(port)),
            Err(_) => (authority, None),
        },
        _ => (authority, None),
    }
}

/// `URLRewrite`: a new Host and/or path before the request goes on.
#[derive(Clone, Debug, PartialEq)]
pub struct UrlRewrite {
    hostname: Option<HeaderValue>,
    path: Option<PathRewrite>,
}

impl UrlRewrite {
    fn compile(u: &api::UrlRewrite) -> Result<Self, FilterError> {
        let hostname = match u.hostname.as_str() {
            "" => None,
            h => Some(HeaderValue::from_str(h).map_err(|_| FilterError(format!("hostname `{h}` is invalid")))?),
        };
        Ok(Self { hostname, path: u.path.as_ref().map(PathRewrite::compile).transpose()? })
    }

    /// Rewrites the request's URI path and Host header in place.
    pub fn apply(&self, uri: &mut Uri, headers: &mut HeaderMap, matched_prefix: Option<&str>) {
        if let Some(host) = &self.hostname {
            headers.insert(header::HOST, host.clone());
        }
        let Some(path) = &self.path else { return };
        let new_path = path.rewrite(uri.path(), matched_prefix);
        let pq = match uri.query() {
            Some(q) => format!("{new_path}?{q}"),
            None => new_path,
        };
        let Ok(pq) = PathAndQuery::try_from(pq) else { return };
        let mut parts = std::mem::take(uri).into_parts();
        parts.path_and_query = Some(pq);
        if let Ok(next) = Uri::from_parts(parts) {
            *uri = next;
        }
    }
}

/// `RequestMirror`: a copy of a share of requests to another service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mirror {
    pub service: String,
    pub port: u16,
    /// 1..=100.
    pub percent: u32,
}

/// A route's (or a backend's) filters, compiled.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Filters {
    pub request_headers: Option<HeaderModifier>,
    pub response_headers: Option<HeaderModifier>,
    pub redirect: Option<Redirect>,
    pub rewrite: Option<UrlRewrite>,
    pub mirror: Option<Mirror>,
}

impl Filters {
    /// Compiles `filters`; a filter that does not compile is skipped and
    /// reported, the others apply.
    pub fn compile(filters: &[api::Filter]) -> (Self, Vec<FilterError>) {
        use api::filter::Kind;
        let mut out = Self::default();
        let mut errors = Vec::new();
        for f in filters {
            let result = match &f.kind {
                Some(Kind::RequestHeaderModifier(m)) => {
                    HeaderModifier::compile(m).map(|m| out.request_headers = Some(m))
                }
                Some(Kind::ResponseHeaderModifier(m)) => {
                    HeaderModifier::compile(m).map(|m| out.response_headers = Some(m))
                }
                Some(Kind::RequestRedirect(r)) => Redirect::compile(r).map(|r| out.redirect = Some(r)),
                Some(Kind::UrlRewrite(u)) => UrlRewrite::compile(u).map(|u| out.rewrite = Some(u)),
                Some(Kind::RequestMirror(m)) => match u16::try_from(m.port) {
                    Ok(port) if port > 0 && !m.service.is_empty() => {
                        let percent = if m.percent == 0 { 100 } else { m.percent.min(100) };
                        out.mirror = Some(Mirror { service: m.service.clone(), port, percent });
                        Ok(())
                    }
                    _ => Err(FilterError(format!("mirror to `{}` port {} is incomplete", m.service, m.port))),
                },
                None => Err(FilterError("an empty filter".into())),
            };
            if let Err(e) = result {
                errors.push(e);
            }
        }
        (out, errors)
    }

    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(name: &str, value: &str) -> api::Header {
        api::Header { name: name.into(), value: value.into() }
    }

    #[test]
    fn header_modifier_sets_adds_and_removes() {
        let m = HeaderModifier::compile(&api::HeaderModifier {
            set: vec![h("x-version", "v2")],
            add: vec![h("x-trace", "b")],
            remove: vec!["x-secret".into()],
        })
        .expect("compiles");
        let mut headers = HeaderMap::new();
        headers.append("x-version", HeaderValue::from_static("v1"));
        headers.append("x-version", HeaderValue::from_static("v0"));
        headers.append("x-trace", HeaderValue::from_static("a"));
        headers.append("x-secret", HeaderValue::from_static("s"));
        m.apply(&mut headers);
        assert_eq!(headers.get_all("x-version").iter().collect::<Vec<_>>(), ["v2"]);
        assert_eq!(headers.get_all("x-trace").iter().collect::<Vec<_>>(), ["a", "b"]);
        assert!(!headers.contains_key("x-secret"));

        let bad = api::HeaderModifier { set: vec![h("bad name", "v")], ..Default::default() };
        assert!(HeaderModifier::compile(&bad).is_err());
    }

    #[test]
    fn prefix_rewrites_swap_only_the_matched_prefix() {
        let p = |v: &str| PathRewrite::Prefix(v.into());
        let cases: &[(PathRewrite, &str, Option<&str>, &str)] = &[
            (p("/v2"), "/api/users", Some("/api"), "/v2/users"),
            (p("/v2/"), "/api/users", Some("/api/"), "/v2/users"),
            (p("/"), "/api/users", Some("/api"), "/users"),
            (p("/"), "/api", Some("/api"), "/"),
            (p("/new"), "/api", Some("/api"), "/new"),
            (p("/new"), "/exact", None, "/new"),
            (PathRewrite::Full("/other".into()), "/api/users", Some("/api"), "/other"),
        ];
        for (rewrite, path, prefix, want) in cases {
            assert_eq!(rewrite.rewrite(path, *prefix), *want, "{rewrite:?} on {path} (matched {prefix:?})");
        }
    }

    #[test]
    fn redirect_locations() {
        let r = |scheme: &str, host: &str, port: u32, path: Option<(i32, &str)>, code: u32| {
            Redirect::compile(&api::Redirect {
                scheme: scheme.into(),
                hostname: host.into(),
                port,
                path: path.map(|(kind, value)| api::PathModifier { kind, value: value.into() }),
                status_code: code,
            })
            .expect("compiles")
        };
        let uri: Uri = "/old/page?x=1".parse().expect("uri");
        let cases = [
            (r("", "", 0, None, 0), Some("web:8080"), "http://web:8080/old/page?x=1", 302),
            (r("https", "", 0, None, 301), Some("web:8080"), "https://web/old/page?x=1", 301),
            (r("", "new.example", 0, Some((1, "/new")), 0), Some("web"), "http://new.example/new/page?x=1", 302),
            (r("", "", 9090, Some((0, "/moved")), 0), Some("web"), "http://web:9090/moved?x=1", 302),
            (r("http", "", 80, None, 0), Some("web:8080"), "http://web/old/page?x=1", 302),
        ];
        for (redirect, host, want, status) in cases {
            assert_eq!(redirect.location(&uri, host, Some("/old")), want);
            assert_eq!(redirect.status.as_u16(), status);
        }
        let bad = api::Redirect { status_code: 307, ..Default::default() };
        assert!(Redirect::compile(&bad).is_err());
    }

    #[test]
    fn url_rewrite_changes_host_and_path_and_keeps_the_query() {
        let (filters, errors) = Filters::compile(&[api::Filter {
            kind: Some(api::filter::Kind::UrlRewrite(api::UrlRewrite {
                hostname: "backend.internal".into(),
                path: Some(api::PathModifier { kind: 1, value: "/v2".into() }),
            })),
        }]);
        assert!(errors.is_empty(), "{errors:?}");
        let mut uri: Uri = "/api/items?id=7".parse().expect("uri");
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("web"));
        filters.rewrite.as_ref().expect("rewrite").apply(&mut uri, &mut headers, Some("/api"));
        assert_eq!(uri, "/v2/items?id=7");
        assert_eq!(headers[header::HOST], "backend.internal");
    }

    #[test]
    fn a_bad_filter_is_skipped_and_the_others_apply() {
        let (filters, errors) = Filters::compile(&[
            api::Filter {
                kind: Some(api::filter::Kind::RequestHeaderModifier(api::HeaderModifier {
                    set: vec![h("x-ok", "1")],
                    ..Default::default()
                })),
            },
            api::Filter {
                kind: Some(api::filter::Kind::RequestRedirect(api::Redirect {
                    status_code: 308,
                    ..Default::default()
                })),
            },
            api::Filter {
                kind: Some(api::filter::Kind::RequestMirror(api::Mirror {
                    service: "shadow.default".into(),
                    port: 80,
                    percent: 0,
                })),
            },
        ]);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(filters.request_headers.is_some() && filters.redirect.is_none());
        assert_eq!(filters.mirror.as_ref().map(|m| m.percent), Some(100));
    }
}
