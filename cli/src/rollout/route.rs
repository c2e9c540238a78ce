//! The one HTTPRoute `weft rollout` writes: `rollout-<service>.yaml` in the
//! run's policy directory.
//!
//! ```text
//!   Split ──serde──► YAML ──weft_control::policy::parse (the control plane's own checks)──►
//!   .rollout-<service>.yaml.tmp ──rename──► rollout-<service>.yaml ──(≤ 250 ms)──► control plane ──► proxies
//! ```
//!
//! The YAML is rendered from typed structs, never from a string template,
//! and is refused here exactly as the control plane would refuse it, so a
//! bad name or header never reaches the running mesh. The temporary file is
//! hidden (the control plane skips dot files) and the rename is atomic: the
//! control plane reads either the old route or the new one, never half.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use weft_control::policy::{self, GATEWAY_V1, ParseError, Resource};

use super::{AbMatch, Split, Target};

/// Label on the generated route, so an operator sees where it came from.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "weft-rollout");

/// Why a route could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("the generated HTTPRoute is refused by the control plane's parser ({source}); nothing was written")]
    Refused { source: ParseError },
    #[error("rendering the HTTPRoute as YAML: {0}")]
    Render(#[from] serde_yaml_ng::Error),
    #[error("writing {}: {source}", .path.display())]
    Write { path: PathBuf, source: std::io::Error },
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HttpRouteDoc<'a> {
    api_version: &'static str,
    kind: &'static str,
    metadata: Metadata<'a>,
    spec: Spec<'a>,
}

#[derive(Serialize)]
struct Metadata<'a> {
    name: String,
    namespace: &'a str,
    labels: BTreeMap<&'static str, &'static str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Spec<'a> {
    parent_refs: [ParentRef<'a>; 1],
    rules: Vec<Rule<'a>>,
}

#[derive(Serialize)]
struct ParentRef<'a> {
    group: &'static str,
    kind: &'static str,
    name: &'a str,
    port: u16,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Rule<'a> {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    matches: Vec<Match>,
    backend_refs: Vec<BackendRef<'a>>,
}

#[derive(Serialize)]
struct Match {
    headers: [HeaderMatch; 1],
}

#[derive(Serialize)]
struct HeaderMatch {
    #[serde(rename = "type")]
    kind: &'static str,
    name: String,
    value: String,
}

#[derive(Serialize)]
struct BackendRef<'a> {
    name: &'a str,
    port: u16,
    weight: u32,
}

/// The file name of the route for `service`.
pub fn file_name(service: &str) -> String {
    format!("rollout-{service}.yaml")
}

/// The header match of an A/B split. A cookie is matched as the Gateway
/// API says: a regular expression over the whole `cookie` header (the
/// proxy matches regular expressions against the entire value), allowing
/// other cookies before and after, with or without a space after `;`.
fn header_match(m: &AbMatch) -> HeaderMatch {
    match m {
        AbMatch::Header { name, value } => HeaderMatch { kind: "Exact", name: name.clone(), value: value.clone() },
        AbMatch::Cookie { name, value } => HeaderMatch {
            kind: "RegularExpression",
            name: "cookie".into(),
            value: format!("(.*; ?)?{}={}(;.*)?", regex::escape(name), regex::escape(value)),
        },
    }
}

/// Renders the route for `split` and checks it with the control plane's
/// parser. Returns the YAML.
pub fn render(target: &Target, split: &Split) -> Result<String, RouteError> {
    let backend = |name, weight| BackendRef { name, port: target.port, weight };
    let (stable, canary) = (target.stable.as_str(), target.canary.as_str());
    let rules = match split {
        // Both backends always listed: the stable one at weight 0 stays
        // deployed and one edit away.
        Split::Weights { canary: c } => {
            vec![Rule { matches: vec![], backend_refs: vec![backend(stable, 100 - c), backend(canary, *c)] }]
        }
        Split::Matching(m) => vec![
            Rule { matches: vec![Match { headers: [header_match(m)] }], backend_refs: vec![backend(canary, 1)] },
            Rule { matches: vec![], backend_refs: vec![backend(stable, 1)] },
        ],
    };
    let doc = HttpRouteDoc {
        api_version: GATEWAY_V1,
        kind: "HTTPRoute",
        metadata: Metadata {
            name: route_name(&target.service),
            namespace: &target.namespace,
            labels: [MANAGED_BY].into(),
        },
        spec: Spec {
            parent_refs: [ParentRef { group: "", kind: "Service", name: &target.service, port: target.port }],
            rules,
        },
    };
    let yaml = serde_yaml_ng::to_string(&doc)?;
    let text =
        format!("# Written by `weft rollout` ({}); it is rewritten at every step.\n{yaml}", split.describe(target));
    parse_one(&text).map_err(|source| RouteError::Refused { source })?;
    Ok(text)
}

/// `rollout-<service>`.
pub fn route_name(service: &str) -> String {
    format!("rollout-{service}")
}

/// The route in `text`, parsed by the control plane's parser.
pub fn parse_one(text: &str) -> Result<std::sync::Arc<policy::HttpRoute>, ParseError> {
    let resources = policy::parse(text)?;
    match resources.as_slice() {
        [Resource::HttpRoute(route)] => Ok(route.clone()),
        _ => Err(ParseError {
            line: None,
            column: None,
            document: 0,
            object: None,
            message: format!("expected exactly one HTTPRoute, got {} resources", resources.len()),
        }),
    }
}

/// Writes `text` as `dir/rollout-<service>.yaml` through a hidden temporary
/// file and a rename. Returns the path.
pub fn write(dir: &Path, service: &str, text: &str) -> Result<PathBuf, RouteError> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join(file_name(service));
    let tmp = dir.join(format!(".{}.tmp", file_name(service)));
    let err = |path: &Path| {
        let path = path.to_owned();
        move |source| RouteError::Write { path, source }
    };
    std::fs::write(&tmp, text).map_err(err(&tmp))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).map_err(err(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err(&path)(e)
    })?;
    Ok(path)
}

/// Other HTTPRoutes attached to the same Service in `policies` (files and
/// the `*.yaml`/`*.yml` directly in directories), as `file: namespace/name`:
/// they would compete with the rollout's route.
pub fn competing_routes(policies: &[PathBuf], target: &Target) -> Vec<String> {
    let mut files = Vec::new();
    for p in policies {
        if p.is_dir() {
            let mut found: Vec<PathBuf> =
                std::fs::read_dir(p).into_iter().flatten().flatten().map(|e| e.path()).collect();
            found.sort();
            files.extend(found.into_iter().filter(|f| {
                let name = f.file_name().and_then(|n| n.to_str()).unwrap_or(".");
                !name.starts_with('.')
                    && name != file_name(&target.service)
                    && (name.ends_with(".yaml") || name.ends_with(".yml"))
            }));
        } else {
            files.push(p.clone());
        }
    }
    let mut out = Vec::new();
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else { continue };
        // A file the control plane refuses is not applied: no competition.
        for r in policy::parse(&text).unwrap_or_default() {
            let Resource::HttpRoute(route) = r else { continue };
            let ns = &route.metadata.namespace.0;
            let attached =
                route.spec.parent_refs.iter().any(|p| {
                    p.name.0 == target.service && p.namespace.as_ref().map_or(ns, |n| &n.0) == &target.namespace
                });
            if attached {
                out.push(format!("{}: {ns}/{}", file.display(), route.metadata.name.0));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_control::policy::httproute::ValueMatchType;

    fn target() -> Target {
        Target {
            service: "web".into(),
            namespace: "shop".into(),
            port: 8080,
            stable: "web-v1".into(),
            canary: "web-v2".into(),
        }
    }

    /// (backend, weight) of each rule, and each rule's header matches.
    fn shape(text: &str) -> Vec<(Vec<(String, ValueMatchType, String)>, Vec<(String, u64)>)> {
        let route = parse_one(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(route.metadata.name.0, "rollout-web");
        assert_eq!(route.metadata.namespace.0, "shop");
        let parent = &route.spec.parent_refs[0];
        assert_eq!(
            (parent.group.as_deref(), parent.kind.as_deref(), parent.name.0.as_str(), parent.port.map(|p| p.get())),
            (Some(""), Some("Service"), "web", Some(8080))
        );
        route
            .spec
            .rules
            .iter()
            .map(|rule| {
                let matches = rule
                    .matches
                    .iter()
                    .flat_map(|m| m.headers.iter().map(|h| (h.name.0.clone(), h.kind, h.value.clone())))
                    .collect();
                let backends = rule
                    .backend_refs
                    .iter()
                    .map(|b| {
                        assert_eq!(b.port.map(|p| p.get()), Some(8080));
                        (b.name.0.clone(), b.weight.map_or(1, |w| w.get()))
                    })
                    .collect();
                (matches, backends)
            })
            .collect()
    }

    fn weights(stable: u64, canary: u64) -> Vec<(Vec<(String, ValueMatchType, String)>, Vec<(String, u64)>)> {
        vec![(vec![], vec![("web-v1".into(), stable), ("web-v2".into(), canary)])]
    }

    #[test]
    fn weighted_routes_parse_with_the_control_planes_parser() {
        for (canary, stable) in [(0, 100), (10, 90), (50, 50), (100, 0)] {
            let text = render(&target(), &Split::Weights { canary }).unwrap();
            assert_eq!(shape(&text), weights(stable, canary.into()), "{text}");
        }
        let text = render(&target(), &Split::Weights { canary: 10 }).unwrap();
        assert!(text.starts_with("# Written by `weft rollout` (web-v2 at 10 %)"), "{text}");
        assert!(text.contains("app.kubernetes.io/managed-by: weft-rollout"), "{text}");
    }

    #[test]
    fn ab_routes_send_exactly_the_matching_requests_to_the_canary() {
        let header = AbMatch::Header { name: "x-version".into(), value: "v2".into() };
        let text = render(&target(), &Split::Matching(header)).unwrap();
        assert_eq!(
            shape(&text),
            vec![
                (vec![("x-version".into(), ValueMatchType::Exact, "v2".into())], vec![("web-v2".into(), 1)]),
                (vec![], vec![("web-v1".into(), 1)]),
            ]
        );

        let cookie = AbMatch::Cookie { name: "group".into(), value: "b.1".into() };
        let text = render(&target(), &Split::Matching(cookie)).unwrap();
        let rules = shape(&text);
        let (name, kind, regex) = rules[0].0[0].clone();
        assert_eq!((name.as_str(), kind), ("cookie", ValueMatchType::RegularExpression));
        assert_eq!(regex, r"(.*; ?)?group=b\.1(;.*)?");
        assert_eq!(rules[1], (vec![], vec![("web-v1".into(), 1)]));
        // The proxy matches the whole value; so does an anchored regex here.
        let re = regex::Regex::new(&format!("^(?:{regex})$")).unwrap();
        for (cookie, hit) in [
            ("group=b.1", true),
            ("a=1; group=b.1", true),
            ("a=1;group=b.1; c=3", true),
            ("group=b.10", false),
            ("group=bx1", false),
            ("xgroup=b.1", false),
            ("a=group=b.1", false),
        ] {
            assert_eq!(re.is_match(cookie), hit, "{cookie}");
        }
    }

    #[test]
    fn what_the_parser_refuses_is_not_written() {
        let bad = AbMatch::Header { name: "x version".into(), value: "v2".into() };
        let e = render(&target(), &Split::Matching(bad)).unwrap_err();
        assert!(e.to_string().contains("not a valid HTTP header name"), "{e}");
        let mut t = target();
        t.canary = "Web_V2".into();
        let e = render(&t, &Split::Weights { canary: 10 }).unwrap_err();
        assert!(matches!(e, RouteError::Refused { .. }), "{e}");
    }

    #[test]
    fn writes_atomically_and_finds_competitors() {
        let dir = tempfile::tempdir().unwrap();
        let text = render(&target(), &Split::Weights { canary: 50 }).unwrap();
        let path = write(dir.path(), "web", &text).unwrap();
        assert_eq!(path, dir.path().join("rollout-web.yaml"));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(names, ["rollout-web.yaml"], "no temporary file left");

        assert!(competing_routes(&[dir.path().to_owned()], &target()).is_empty(), "its own route does not count");
        let other = text.replace("name: rollout-web", "name: mine");
        std::fs::write(dir.path().join("mine.yaml"), &other).unwrap();
        std::fs::write(dir.path().join("broken.yaml"), "kind: [").unwrap();
        let found = competing_routes(&[dir.path().to_owned()], &target());
        assert_eq!(found, [format!("{}: shop/mine", dir.path().join("mine.yaml").display())]);
        let mut elsewhere = target();
        elsewhere.namespace = "default".into();
        assert!(competing_routes(&[dir.path().to_owned()], &elsewhere).is_empty());
    }
}
