//! Table tests for [`super::RouteTable`]: each Gateway API rule and tie-break.

use http::{HeaderMap, HeaderValue, Method, Uri};
use weft_api::policy as api;

use super::*;

use api::string_match::Kind;

fn sm(kind: Kind, value: &str) -> Option<api::StringMatch> {
    Some(api::StringMatch { kind: kind as i32, value: value.into() })
}

fn named(name: &str, kind: Kind, value: &str) -> api::NamedMatch {
    api::NamedMatch { name: name.into(), value: sm(kind, value) }
}

/// A match from a compact spec: path kind/value, method, headers, query.
#[derive(Default, Clone)]
struct M {
    path: Option<(Kind, &'static str)>,
    method: &'static str,
    headers: Vec<(&'static str, Kind, &'static str)>,
    query: Vec<(&'static str, Kind, &'static str)>,
}

impl M {
    fn exact(p: &'static str) -> Self {
        Self { path: Some((Kind::Exact, p)), ..Self::default() }
    }
    fn prefix(p: &'static str) -> Self {
        Self { path: Some((Kind::Prefix, p)), ..Self::default() }
    }
    fn regex(p: &'static str) -> Self {
        Self { path: Some((Kind::Regex, p)), ..Self::default() }
    }
    fn method(mut self, m: &'static str) -> Self {
        self.method = m;
        self
    }
    fn header(mut self, n: &'static str, k: Kind, v: &'static str) -> Self {
        self.headers.push((n, k, v));
        self
    }
    fn query(mut self, n: &'static str, k: Kind, v: &'static str) -> Self {
        self.query.push((n, k, v));
        self
    }
    fn build(&self) -> api::RouteMatch {
        api::RouteMatch {
            path: self.path.and_then(|(k, v)| sm(k, v)),
            headers: self.headers.iter().map(|&(n, k, v)| named(n, k, v)).collect(),
            query_params: self.query.iter().map(|&(n, k, v)| named(n, k, v)).collect(),
            method: self.method.into(),
        }
    }
}

fn route(name: &str, matches: &[M]) -> api::HttpRoute {
    api::HttpRoute { name: name.into(), matches: matches.iter().map(M::build).collect(), ..Default::default() }
}

fn table(routes: Vec<api::HttpRoute>) -> RouteTable {
    let (t, errors) = RouteTable::compile(routes);
    assert!(errors.is_empty(), "{errors:?}");
    t
}

fn req(method: &str, uri: &str, headers: &[(&str, &str)]) -> (Method, Uri, HeaderMap) {
    let mut map = HeaderMap::new();
    for (n, v) in headers {
        map.append(http::HeaderName::from_bytes(n.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
    }
    (Method::from_bytes(method.as_bytes()).unwrap(), uri.parse().unwrap(), map)
}

/// The name of the route a request takes, or "404".
fn pick(t: &RouteTable, method: &str, uri: &str, headers: &[(&str, &str)]) -> String {
    let (m, u, h) = req(method, uri, headers);
    t.find(&m, &u, &h).map_or_else(|| "404".to_owned(), |m| m.route.name.clone())
}

#[test]
fn path_semantics() {
    // (match, path, matches?)
    let cases: &[(M, &str, bool)] = &[
        (M::exact("/foo"), "/foo", true),
        (M::exact("/foo"), "/foo/", false),
        (M::exact("/foo"), "/foo/bar", false),
        (M::exact("/foo"), "/Foo", false),
        (M::exact("/foo"), "/foo?x=1", true),
        (M::prefix("/foo"), "/foo", true),
        (M::prefix("/foo"), "/foo/", true),
        (M::prefix("/foo"), "/foo/bar", true),
        (M::prefix("/foo"), "/foobar", false),
        (M::prefix("/foo"), "/fo", false),
        (M::prefix("/foo"), "/", false),
        (M::prefix("/foo/"), "/foo", true),
        (M::prefix("/foo/"), "/foo/bar", true),
        (M::prefix("/foo/"), "/foobar", false),
        (M::prefix("/foo/bar"), "/foo/bar/baz", true),
        (M::prefix("/foo/bar"), "/foo/barbaz", false),
        (M::prefix("/"), "/", true),
        (M::prefix("/"), "/anything/at/all", true),
        (M::prefix("/foo"), "/foo?q=1", true),
        (M::prefix("/foo"), "/foo%2Fbar", false),
        (M::regex("/api/v[0-9]+/.*"), "/api/v2/users", true),
        (M::regex("/api/v[0-9]+/.*"), "/api/vX/users", false),
        // Full match, not a search.
        (M::regex("/api"), "/api/v2", false),
        (M::regex("/api"), "/x/api", false),
        (M::regex("/a|/ab"), "/ab", true),
        (M::regex("/.*"), "/", true),
        // The query is not part of the path.
        (M::regex("/search"), "/search?q=x", true),
        // No path: PathPrefix /.
        (M::default(), "/whatever", true),
    ];
    for (i, (m, path, want)) in cases.iter().enumerate() {
        let t = table(vec![route("r", std::slice::from_ref(m))]);
        let got = pick(&t, "GET", path, &[]) == "r";
        assert_eq!(got, *want, "case {i}: {:?} on {path}", m.path);
    }
}

#[test]
fn absolute_form_uri_matches_on_its_path() {
    let t = table(vec![route("r", &[M::exact("/x")])]);
    assert_eq!(pick(&t, "GET", "http://web.default:8080/x?y=1", &[]), "r");
    assert_eq!(pick(&t, "GET", "http://web.default:8080/y", &[]), "404");
}

#[test]
fn header_semantics() {
    // (match, request headers, matches?)
    let cases: &[(M, &[(&str, &str)], bool)] = &[
        (M::default().header("x-version", Kind::Exact, "v2"), &[("x-version", "v2")], true),
        (M::default().header("x-version", Kind::Exact, "v2"), &[("X-Version", "v2")], true),
        (M::default().header("X-Version", Kind::Exact, "v2"), &[("x-version", "v2")], true),
        (M::default().header("x-version", Kind::Exact, "v2"), &[("x-version", "V2")], false),
        (M::default().header("x-version", Kind::Exact, "v2"), &[("x-version", "v2 ")], false),
        (M::default().header("x-version", Kind::Exact, "v2"), &[], false),
        (M::default().header("x-version", Kind::Exact, "v2"), &[("x-other", "v2")], false),
        (M::default().header("x-version", Kind::Regex, "v[23]"), &[("x-version", "v3")], true),
        (M::default().header("x-version", Kind::Regex, "v[23]"), &[("x-version", "v33")], false),
        // A regex still needs the header to be present.
        (M::default().header("x-version", Kind::Regex, ".*"), &[], false),
        (M::default().header("x-version", Kind::Regex, ".*"), &[("x-version", "")], true),
        // Repeated header: matched as the comma-joined value.
        (M::default().header("x-tag", Kind::Exact, "a,b"), &[("x-tag", "a"), ("x-tag", "b")], true),
        (M::default().header("x-tag", Kind::Exact, "a"), &[("x-tag", "a"), ("x-tag", "b")], false),
        (M::default().header("x-tag", Kind::Regex, "(.*,)?b(,.*)?"), &[("x-tag", "a"), ("x-tag", "b")], true),
        // All conditions AND.
        (M::default().header("a", Kind::Exact, "1").header("b", Kind::Exact, "2"), &[("a", "1"), ("b", "2")], true),
        (M::default().header("a", Kind::Exact, "1").header("b", Kind::Exact, "2"), &[("a", "1")], false),
        // Of two entries with the same name only the first counts.
        (M::default().header("a", Kind::Exact, "1").header("A", Kind::Exact, "2"), &[("a", "1")], true),
    ];
    for (i, (m, headers, want)) in cases.iter().enumerate() {
        let t = table(vec![route("r", std::slice::from_ref(m))]);
        assert_eq!(pick(&t, "GET", "/", headers) == "r", *want, "case {i}: {:?} on {headers:?}", m.headers);
    }
}

/// A cookie match is a header match on `cookie` with a regular expression.
#[test]
fn cookie_match() {
    const COOKIE: &str = "(.*; )?version=v2(; .*)?";
    let t =
        table(vec![route("v2", &[M::default().header("cookie", Kind::Regex, COOKIE)]), route("v1", &[M::default()])]);
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("cookie", "version=v2")], "v2"),
        (&[("cookie", "session=abc; version=v2")], "v2"),
        (&[("cookie", "version=v2; session=abc")], "v2"),
        (&[("cookie", "a=1; version=v2; b=2")], "v2"),
        (&[("cookie", "version=v22")], "v1"),
        (&[("cookie", "myversion=v2")], "v1"),
        (&[("cookie", "version=v1")], "v1"),
        (&[], "v1"),
        // HTTP/2 may split cookies over several lines; they are joined with "; ".
        (&[("cookie", "a=1"), ("cookie", "version=v2")], "v2"),
    ];
    for (headers, want) in cases {
        assert_eq!(pick(&t, "GET", "/", headers), *want, "{headers:?}");
    }
}

#[test]
fn query_semantics() {
    // (match, uri, matches?)
    let cases: &[(M, &str, bool)] = &[
        (M::default().query("v", Kind::Exact, "2"), "/?v=2", true),
        (M::default().query("v", Kind::Exact, "2"), "/?a=1&v=2&b=3", true),
        (M::default().query("v", Kind::Exact, "2"), "/?v=3", false),
        (M::default().query("v", Kind::Exact, "2"), "/", false),
        (M::default().query("v", Kind::Exact, "2"), "/?V=2", false),
        (M::default().query("v", Kind::Exact, "2"), "/?vv=2", false),
        // First value wins.
        (M::default().query("v", Kind::Exact, "2"), "/?v=1&v=2", false),
        (M::default().query("v", Kind::Exact, "1"), "/?v=1&v=2", true),
        (M::default().query("v", Kind::Exact, ""), "/?v", true),
        (M::default().query("v", Kind::Exact, ""), "/?v=", true),
        // Decoded.
        (M::default().query("q", Kind::Exact, "a b/c"), "/?q=a+b%2Fc", true),
        (M::default().query("q", Kind::Exact, "a b/c"), "/?q=a%20b%2fc", true),
        (M::default().query("my key", Kind::Exact, "x"), "/?my%20key=x", true),
        (M::default().query("q", Kind::Exact, "%zz"), "/?q=%zz", true),
        (M::default().query("q", Kind::Exact, "%"), "/?q=%", true),
        (M::default().query("q", Kind::Regex, "[0-9]+"), "/?q=123", true),
        (M::default().query("q", Kind::Regex, "[0-9]+"), "/?q=123x", false),
        (M::default().query("a", Kind::Exact, "1").query("b", Kind::Exact, "2"), "/?b=2&a=1", true),
        (M::default().query("a", Kind::Exact, "1").query("b", Kind::Exact, "2"), "/?a=1", false),
    ];
    for (i, (m, uri, want)) in cases.iter().enumerate() {
        let t = table(vec![route("r", std::slice::from_ref(m))]);
        assert_eq!(pick(&t, "GET", uri, &[]) == "r", *want, "case {i}: {:?} on {uri}", m.query);
    }
}

#[test]
fn method_and_or_across_matches() {
    let t = table(vec![route("r", &[M::exact("/a").method("POST"), M::exact("/b")])]);
    let cases =
        [("POST", "/a", "r"), ("GET", "/a", "404"), ("GET", "/b", "r"), ("DELETE", "/b", "r"), ("POST", "/c", "404")];
    for (method, uri, want) in cases {
        assert_eq!(pick(&t, method, uri, &[]), want, "{method} {uri}");
    }
}

#[test]
fn route_without_matches_matches_everything() {
    let t = table(vec![route("all", &[])]);
    for uri in ["/", "/x/y", "/?q=1"] {
        let (m, u, h) = req("PATCH", uri, &[]);
        let got = t.find(&m, &u, &h).expect("match");
        assert_eq!((got.route.name.as_str(), got.match_index, got.path_prefix), ("all", None, Some("")));
    }
}

#[test]
fn no_routes_is_empty_and_unmatched_is_none() {
    let empty = table(Vec::new());
    assert!(empty.is_empty());
    assert_eq!(pick(&empty, "GET", "/", &[]), "404");
    let t = table(vec![route("r", &[M::exact("/only")])]);
    assert!(!t.is_empty());
    assert_eq!(pick(&t, "GET", "/other", &[]), "404");
}

/// Each precedence rule, given routes in an order that would get it wrong
/// if the table just took the first match.
#[test]
fn precedence() {
    // (name, routes delivered in this order, request, expected route)
    type Case = (
        &'static str,
        Vec<api::HttpRoute>,
        (&'static str, &'static str, &'static [(&'static str, &'static str)]),
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            "exact beats prefix",
            vec![route("prefix", &[M::prefix("/foo")]), route("exact", &[M::exact("/foo")])],
            ("GET", "/foo", &[]),
            "exact",
        ),
        (
            "exact beats a longer prefix",
            vec![route("prefix", &[M::prefix("/foo/bar/baz")]), route("exact", &[M::exact("/foo/bar/baz")])],
            ("GET", "/foo/bar/baz", &[]),
            "exact",
        ),
        (
            "longest prefix wins",
            vec![
                route("short", &[M::prefix("/")]),
                route("mid", &[M::prefix("/a")]),
                route("long", &[M::prefix("/a/b")]),
            ],
            ("GET", "/a/b/c", &[]),
            "long",
        ),
        (
            "longest prefix that matches",
            vec![
                route("short", &[M::prefix("/")]),
                route("mid", &[M::prefix("/a")]),
                route("long", &[M::prefix("/a/b")]),
            ],
            ("GET", "/a/c", &[]),
            "mid",
        ),
        (
            "regex beats prefix",
            vec![route("prefix", &[M::prefix("/foo")]), route("regex", &[M::regex("/foo.*")])],
            ("GET", "/foo/x", &[]),
            "regex",
        ),
        (
            "a catch-all prefix / does not shadow a regex",
            vec![route("prefix", &[M::prefix("/")]), route("regex", &[M::regex("/r/[0-9]+")])],
            ("GET", "/r/7", &[]),
            "regex",
        ),
        (
            "longer regex first",
            vec![route("short", &[M::regex("/.*")]), route("long", &[M::regex("/api/.*")])],
            ("GET", "/api/x", &[]),
            "long",
        ),
        (
            "regex when nothing else matches",
            vec![route("regex", &[M::regex("/r/[0-9]+")]), route("prefix", &[M::prefix("/p")])],
            ("GET", "/r/1", &[]),
            "regex",
        ),
        (
            "exact beats regex",
            vec![route("regex", &[M::regex("/foo")]), route("exact", &[M::exact("/foo")])],
            ("GET", "/foo", &[]),
            "exact",
        ),
        (
            "path before method",
            vec![route("method", &[M::prefix("/").method("GET")]), route("path", &[M::prefix("/a")])],
            ("GET", "/a", &[]),
            "path",
        ),
        (
            "method beats headers",
            vec![
                route("headers", &[M::prefix("/").header("a", Kind::Exact, "1").header("b", Kind::Exact, "2")]),
                route("method", &[M::prefix("/").method("GET")]),
            ],
            ("GET", "/", &[("a", "1"), ("b", "2")]),
            "method",
        ),
        (
            "more headers win",
            vec![
                route("one", &[M::prefix("/").header("a", Kind::Exact, "1")]),
                route("two", &[M::prefix("/").header("a", Kind::Exact, "1").header("b", Kind::Exact, "2")]),
            ],
            ("GET", "/", &[("a", "1"), ("b", "2")]),
            "two",
        ),
        (
            "headers beat query params",
            vec![
                route("query", &[M::prefix("/").query("q", Kind::Exact, "1").query("r", Kind::Exact, "2")]),
                route("header", &[M::prefix("/").header("a", Kind::Exact, "1")]),
            ],
            ("GET", "/?q=1&r=2", &[("a", "1")]),
            "header",
        ),
        (
            "more query params win",
            vec![
                route("one", &[M::prefix("/").query("q", Kind::Exact, "1")]),
                route("two", &[M::prefix("/").query("q", Kind::Exact, "1").query("r", Kind::Exact, "2")]),
            ],
            ("GET", "/?q=1&r=2", &[]),
            "two",
        ),
        (
            "full tie: delivered order",
            vec![route("first", &[M::prefix("/a")]), route("second", &[M::prefix("/a")])],
            ("GET", "/a", &[]),
            "first",
        ),
        (
            "full tie between regexes: delivered order",
            vec![route("first", &[M::regex("/a.*")]), route("second", &[M::regex("/.*a")])],
            ("GET", "/a", &[]),
            "first",
        ),
        (
            "precedence is across matches of different routes, not per route",
            vec![route("mixed", &[M::prefix("/"), M::exact("/x")]), route("prefix", &[M::prefix("/x")])],
            ("GET", "/x", &[]),
            "mixed",
        ),
        (
            "a route's weak match does not lend it the strength of its other matches",
            vec![route("mixed", &[M::prefix("/"), M::exact("/y")]), route("prefix", &[M::prefix("/x")])],
            ("GET", "/x", &[]),
            "prefix",
        ),
        (
            "trailing slash of a prefix does not make it longer than the path it names",
            vec![route("slash", &[M::prefix("/a/")]), route("longer", &[M::prefix("/a/b")])],
            ("GET", "/a/b", &[]),
            "longer",
        ),
        (
            "a more specific match that fails falls through",
            vec![
                route("canary", &[M::prefix("/").header("x-canary", Kind::Exact, "1")]),
                route("stable", &[M::prefix("/")]),
            ],
            ("GET", "/", &[("x-canary", "0")]),
            "stable",
        ),
    ];
    for (name, routes, (method, uri, headers), want) in cases {
        let t = table(routes);
        assert_eq!(pick(&t, method, uri, headers), want, "{name}");
    }
}

#[test]
fn matched_reports_indices_and_prefix() {
    let t = table(vec![route("a", &[M::exact("/x")]), route("b", &[M::exact("/y"), M::prefix("/api/")])]);
    let (m, u, h) = req("GET", "/api/v1/users", &[]);
    let got = t.find(&m, &u, &h).expect("match");
    assert_eq!((got.index, got.match_index, got.path_prefix), (1, Some(1), Some("/api")));
    let (m, u, h) = req("GET", "/x", &[]);
    let got = t.find(&m, &u, &h).expect("match");
    assert_eq!((got.index, got.match_index, got.path_prefix), (0, Some(0), None));
    let parts = http::Request::get("/y").body(()).unwrap().into_parts().0;
    assert_eq!(t.find_parts(&parts).map(|m| (m.index, m.match_index)), Some((1, Some(0))));
}

#[test]
fn bad_routes_are_skipped_with_an_error() {
    let bad_kind = api::HttpRoute {
        name: "kind".into(),
        matches: vec![api::RouteMatch {
            path: Some(api::StringMatch { kind: 42, value: "/".into() }),
            ..Default::default()
        }],
        ..Default::default()
    };
    let no_value = api::HttpRoute {
        name: "novalue".into(),
        matches: vec![api::RouteMatch {
            headers: vec![api::NamedMatch { name: "x".into(), value: None }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let long = "a".repeat(REGEX_MAX_LEN + 1);
    let huge = api::HttpRoute {
        name: "huge".into(),
        matches: vec![api::RouteMatch { path: sm(Kind::Regex, "/(a{1000}){1000}"), ..Default::default() }],
        ..Default::default()
    };
    let routes = vec![
        route("regex", &[M::exact("/ok"), M::regex("/(unclosed")]),
        route("escape", &[M::regex("a)|(?:b")]),
        route("header-regex", &[M::default().header("x", Kind::Regex, "[")]),
        route("header-prefix", &[M::default().header("x", Kind::Prefix, "a")]),
        route("header-name", &[M::default().header("bad name", Kind::Exact, "a")]),
        route("query-regex", &[M::default().query("q", Kind::Regex, "*")]),
        route("method", &[M::default().method("GE T")]),
        route("path", &[M::exact("no-slash")]),
        api::HttpRoute {
            name: "long".into(),
            matches: vec![api::RouteMatch { path: sm(Kind::Regex, &long), ..Default::default() }],
            ..Default::default()
        },
        huge,
        bad_kind,
        no_value,
        route("good", &[M::prefix("/")]),
    ];
    let n = routes.len();
    let (t, errors) = RouteTable::compile(routes);
    let names: Vec<String> = errors
        .iter()
        .map(|e| match e {
            RouteError::Regex { route, .. }
            | RouteError::UnknownKind { route, .. }
            | RouteError::MissingValue { route, .. }
            | RouteError::Method { route, .. }
            | RouteError::HeaderName { route, .. }
            | RouteError::Path { route, .. } => route.clone(),
        })
        .collect();
    assert_eq!(
        names,
        [
            "regex",
            "escape",
            "header-regex",
            "header-prefix",
            "header-name",
            "query-regex",
            "method",
            "path",
            "long",
            "huge",
            "kind",
            "novalue"
        ]
    );
    assert!(errors.iter().all(|e| e.to_string().contains("skipped")), "{errors:?}");
    assert_eq!(t.routes().len(), n, "skipped routes stay addressable by index");
    // The whole route is skipped, including its valid match.
    assert_eq!(pick(&t, "GET", "/ok", &[]), "good");
}

#[test]
fn non_utf8_and_odd_input_never_panics() {
    let t = table(vec![
        route("h", &[M::default().header("x", Kind::Regex, ".*é.*")]),
        route("q", &[M::regex("/q").query("q", Kind::Regex, ".+")]),
    ]);
    let mut h = HeaderMap::new();
    h.insert("x", HeaderValue::from_bytes(b"\xff\xfe").unwrap());
    assert!(t.find(&Method::GET, &"/".parse().unwrap(), &h).is_none());
    h.insert("x", HeaderValue::from_bytes("café".as_bytes()).unwrap());
    assert_eq!(t.find(&Method::GET, &"/".parse().unwrap(), &h).map(|m| m.index), Some(0));
    // %ff decodes to a lone byte: no UTF-8 character for `.` to match, no panic.
    let none = HeaderMap::new();
    assert!(t.find(&Method::GET, &"/q?q=%ff".parse().unwrap(), &none).is_none());
    assert_eq!(t.find(&Method::GET, &"/q?q=%41".parse().unwrap(), &none).map(|m| m.index), Some(1));
    assert!(t.find(&Method::GET, &"/q?q=".parse().unwrap(), &none).is_none());
    assert!(t.find(&Method::CONNECT, &"web:80".parse().unwrap(), &none).is_none());
}

/// The control plane delivers one entry per rule match, already sorted;
/// a table built from such a list agrees with its order wherever both
/// define one.
#[test]
fn control_plane_shape() {
    let delivered = vec![
        route("default/web#1", &[M::exact("/login")]),
        route("default/web#0", &[M::prefix("/api").header("x-version", Kind::Exact, "v2")]),
        route("default/web#2", &[M::prefix("/api")]),
        route("default/web#3", &[M::prefix("/")]),
    ];
    let t = table(delivered);
    let cases: &[(&str, &[(&str, &str)], &str)] = &[
        ("/login", &[], "default/web#1"),
        ("/api/x", &[("x-version", "v2")], "default/web#0"),
        ("/api/x", &[], "default/web#2"),
        ("/other", &[], "default/web#3"),
    ];
    for (uri, headers, want) in cases {
        assert_eq!(pick(&t, "GET", uri, headers), *want, "{uri}");
    }
}
