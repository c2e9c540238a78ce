//! The chart's values, typed: the defaults of `manifests/chart/weft/values.yaml`
//! (the tests hold the two equal), and how `weft install` layers values
//! files, `--set` and `--set-file` over them — in helm's order: every
//! `--values` file in turn, then every `--set`, then every `--set-file`.
//!
//! ```text
//!   Values::default() ─► --values FILE… ─► --set k=v… ─► --set-file k=path… ─► values.schema.json ─► Values
//!   (a JSON tree, merged map by map; a later layer's scalar replaces)        (every problem at once)
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::schema;

/// The chart's values file, the one the defaults below must equal.
pub const VALUES_YAML: &str = include_str!("../../../manifests/chart/weft/values.yaml");
/// The chart's schema, which helm and `weft install` both apply.
pub const VALUES_SCHEMA: &str = include_str!("../../../manifests/chart/weft/values.schema.json");

/// Every value of the chart; see values.yaml for what each one does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Values {
    pub install_namespace: bool,
    pub image: Image,
    pub log_level: String,
    pub identity: Identity,
    pub policy: Policy,
    pub control_plane: Workload,
    pub injector: Workload,
    pub proxy: Proxy,
    pub webhook: Webhook,
    pub tracing: Tracing,
    pub dashboard: Enabled,
    pub telemetry: Telemetry,
    pub pod_monitor: Enabled,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Image {
    pub registry: String,
    /// Empty: the version of the chart (of this CLI).
    pub tag: String,
    pub pull_policy: PullPolicy,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Identity {
    pub trust_domain: String,
    /// A duration such as `24h`.
    pub cert_lifetime: String,
    pub token_seconds: u32,
    #[serde(rename = "trustAnchorsPEM")]
    pub trust_anchors_pem: String,
    pub issuer: IssuerValues,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IssuerValues {
    pub secret_name: String,
    #[serde(rename = "certPEM")]
    pub cert_pem: String,
    #[serde(rename = "keyPEM")]
    pub key_pem: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Policy {
    pub default_access: DefaultAccess,
    pub mtls_mode: MtlsMode,
}

/// The same control-plane settings as a mesh file's (`policy.defaultAccess`,
/// `policy.mtlsMode`), spelled the same way.
pub use crate::meshfile::{DefaultAccess, MtlsMode};

/// The control plane's or the injector's Deployment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Workload {
    pub replicas: u32,
    pub resources: Resources,
}

/// A container's resources, in Kubernetes quantities.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    pub requests: Requests,
    pub limits: Limits,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requests {
    pub cpu: String,
    pub memory: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub memory: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Proxy {
    pub log_level: String,
    pub resources: Resources,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Webhook {
    pub failure_policy: FailurePolicy,
    pub timeout_seconds: u32,
    pub cert_manager: CertManager,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailurePolicy {
    Ignore,
    Fail,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CertManager {
    pub enabled: bool,
    pub issuer_ref: IssuerRef,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerRef {
    /// Empty: the chart's own self-signed Issuer.
    pub name: String,
    pub kind: IssuerKind,
}

/// The control plane's `--trace-collector` and `--trace-sampling`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tracing {
    /// `HOST:PORT`; empty: tracing off.
    pub collector: String,
    /// 0 to 1.
    pub sampling: f64,
}

/// A part of the chart that is on or off (`dashboard`, `podMonitor`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enabled {
    pub enabled: bool,
}

/// The control plane's `--telemetry-interval` and `--telemetry-retention`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Telemetry {
    /// A duration such as `5s`; `0s`: no scraping.
    pub interval: String,
    /// A duration such as `15m`.
    pub retention: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum IssuerKind {
    Issuer,
    ClusterIssuer,
}

/// The names values.yaml spells these enums with (serde's names too).
macro_rules! names {
    ($ty:ident { $($variant:ident => $name:literal),* $(,)? }) => {
        impl $ty {
            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $name,)*
                }
            }
        }
    };
}
names!(PullPolicy { Always => "Always", IfNotPresent => "IfNotPresent", Never => "Never" });
names!(FailurePolicy { Ignore => "Ignore", Fail => "Fail" });
names!(IssuerKind { Issuer => "Issuer", ClusterIssuer => "ClusterIssuer" });

fn resources(cpu: &str, memory: &str, limit: &str) -> Resources {
    Resources { requests: Requests { cpu: cpu.into(), memory: memory.into() }, limits: Limits { memory: limit.into() } }
}

impl Default for Values {
    /// values.yaml's defaults (`values_yaml_is_the_default` proves it).
    fn default() -> Self {
        Values {
            install_namespace: false,
            image: Image {
                registry: "ghcr.io/weft-mesh".into(),
                tag: String::new(),
                pull_policy: PullPolicy::IfNotPresent,
            },
            log_level: "info".into(),
            identity: Identity {
                trust_domain: "cluster.local".into(),
                cert_lifetime: "24h".into(),
                token_seconds: 3600,
                trust_anchors_pem: String::new(),
                issuer: IssuerValues {
                    secret_name: "weft-identity-issuer".into(),
                    cert_pem: String::new(),
                    key_pem: String::new(),
                },
            },
            policy: Policy { default_access: DefaultAccess::AllowAll, mtls_mode: MtlsMode::Permissive },
            control_plane: Workload { replicas: 2, resources: resources("100m", "64Mi", "256Mi") },
            injector: Workload { replicas: 2, resources: resources("50m", "32Mi", "128Mi") },
            proxy: Proxy { log_level: "info".into(), resources: resources("50m", "32Mi", "256Mi") },
            webhook: Webhook {
                failure_policy: FailurePolicy::Ignore,
                timeout_seconds: 10,
                cert_manager: CertManager {
                    enabled: false,
                    issuer_ref: IssuerRef { name: String::new(), kind: IssuerKind::Issuer },
                },
            },
            tracing: Tracing { collector: String::new(), sampling: 0.0 },
            dashboard: Enabled { enabled: true },
            telemetry: Telemetry { interval: "5s".into(), retention: "15m".into() },
            pod_monitor: Enabled { enabled: false },
        }
    }
}

/// One layer of values, in the order given on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Layer {
    /// `--values FILE` (YAML).
    File(PathBuf),
    /// `--set key=value[,key=value…]`.
    Set(String),
    /// `--set-file key=path`: the file's text is the value.
    SetFile(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ValuesError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a values file: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("--{flag} {arg:?}: {message}")]
    Flag { flag: &'static str, arg: String, message: String },
    #[error("invalid values:\n  {}", .0.join("\n  "))]
    Invalid(Vec<String>),
}

impl Values {
    /// `base` (the defaults, plus what the caller puts first), then
    /// `layers` in helm's order, checked against the chart's schema.
    pub fn load(
        base: Value,
        layers: &[Layer],
        read: impl Fn(&Path) -> std::io::Result<String>,
    ) -> Result<Values, ValuesError> {
        let mut tree = base;
        let read_file = |path: &Path| read(path).map_err(|source| ValuesError::Read { path: path.to_owned(), source });
        for layer in layers {
            if let Layer::File(path) = layer {
                merge(&mut tree, parse_file(path, &read_file(path)?)?);
            }
        }
        for layer in layers {
            if let Layer::Set(arg) = layer {
                for (names, value) in parse_set(arg).map_err(|m| flag_error("set", arg, m))? {
                    set(&mut tree, &names, typed(&value)).map_err(|m| flag_error("set", arg, m))?;
                }
            }
        }
        for layer in layers {
            if let Layer::SetFile(arg) = layer {
                for (names, path) in parse_set(arg).map_err(|m| flag_error("set-file", arg, m))? {
                    let text = read_file(Path::new(&path))?;
                    set(&mut tree, &names, Value::String(text)).map_err(|m| flag_error("set-file", arg, m))?;
                }
            }
        }
        Values::from_tree(tree)
    }

    /// Checks `tree` against the chart's schema, then types it.
    pub fn from_tree(tree: Value) -> Result<Values, ValuesError> {
        let schema: Value =
            serde_json::from_str(VALUES_SCHEMA).map_err(|e| invalid(format!("values.schema.json: {e}")))?;
        let problems = schema::check(&schema, &tree);
        if !problems.is_empty() {
            return Err(ValuesError::Invalid(problems));
        }
        // The schema has checked every key and type; this cannot fail
        // unless the schema and these types disagree (a test covers it).
        serde_json::from_value(tree).map_err(|e| invalid(e.to_string()))
    }

    /// As a JSON tree (the base of [`Values::load`]).
    pub fn to_tree(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

fn invalid(message: String) -> ValuesError {
    ValuesError::Invalid(vec![message])
}

fn flag_error(flag: &'static str, arg: &str, message: String) -> ValuesError {
    ValuesError::Flag { flag, arg: arg.to_owned(), message }
}

/// A values file: a YAML map (or nothing at all).
pub fn parse_file(path: &Path, text: &str) -> Result<Value, ValuesError> {
    let parse = |message: String| ValuesError::Parse { path: path.to_owned(), message };
    let yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).map_err(|e| parse(e.to_string()))?;
    let tree = serde_json::to_value(yaml).map_err(|e| parse(e.to_string()))?;
    match tree {
        Value::Object(_) => Ok(tree),
        Value::Null => Ok(Value::Object(Map::new())),
        other => Err(parse(format!(
            "expected a map of values at the top, found {}",
            if other.is_array() { "a list" } else { "a single value" }
        ))),
    }
}

/// Merges `over` into `base`: maps key by key, anything else replaced.
pub fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(base), Value::Object(over)) => {
            for (key, value) in over {
                match base.get_mut(&key) {
                    Some(slot) => merge(slot, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (slot, value) => *slot = value,
    }
}

/// One `key=value` of `--set` or `--set-file`: the key's names (`a.b.c`),
/// and the value as written.
pub type Assignment = (Vec<String>, String);

/// Splits a `--set` argument as helm does: assignments separated by
/// commas, each `key=value` on its first `=`, the key's names by dots; a
/// backslash makes the next character plain (`a\.b=x\,y` sets the name
/// `a.b` to `x,y`).
pub fn parse_set(arg: &str) -> Result<Vec<Assignment>, String> {
    let mut out = Vec::new();
    let mut names = Vec::new();
    let mut name = String::new();
    let mut value: Option<String> = None;
    let mut chars = arg.chars();
    while let Some(c) = chars.next() {
        match (c, value.as_mut()) {
            ('\\', Some(v)) => v.extend(chars.next()),
            ('\\', None) => name.extend(chars.next()),
            (',', Some(_)) => {
                names.push(std::mem::take(&mut name));
                out.push((std::mem::take(&mut names), value.take().unwrap_or_default()));
            }
            (c, Some(v)) => v.push(c),
            ('.', None) => names.push(std::mem::take(&mut name)),
            ('=', None) => value = Some(String::new()),
            (',', None) => return Err(format!("{:?}: expected key=value", names_and(&names, &name))),
            ('[' | ']', None) => return Err("list indexes: none of the chart's values is a list".into()),
            (c, None) => name.push(c),
        }
    }
    let Some(value) = value else { return Err(format!("{:?}: expected key=value", names_and(&names, &name))) };
    names.push(name);
    out.push((names, value));
    for (names, _) in &out {
        if names.iter().any(String::is_empty) {
            return Err(format!("{:?} is not a key (a.b.c)", names.join(".")));
        }
    }
    Ok(out)
}

fn names_and(names: &[String], last: &str) -> String {
    names.iter().map(String::as_str).chain([last]).collect::<Vec<_>>().join(".")
}

/// A `--set` value typed as helm types it: `true`/`false` (any case) a
/// boolean, `null` nothing, an integer without a leading zero an integer,
/// anything else a string (`--set image.tag=0.2.0` is the string "0.2.0").
pub fn typed(value: &str) -> Value {
    if value.eq_ignore_ascii_case("true") {
        return Value::Bool(true);
    }
    if value.eq_ignore_ascii_case("false") {
        return Value::Bool(false);
    }
    if value.eq_ignore_ascii_case("null") {
        return Value::Null;
    }
    let digits = value.strip_prefix('-').unwrap_or(value);
    let integer =
        value == "0" || (!digits.is_empty() && !digits.starts_with('0') && digits.bytes().all(|b| b.is_ascii_digit()));
    match value.parse::<i64>() {
        Ok(n) if integer => Value::from(n),
        _ => Value::String(value.to_owned()),
    }
}

/// Sets the value at `names` in `tree`, making maps on the way.
fn set(tree: &mut Value, names: &[String], value: Value) -> Result<(), String> {
    let (last, parents) = names.split_last().ok_or_else(|| "an empty key".to_owned())?;
    let mut at = tree;
    for (i, name) in parents.iter().enumerate() {
        let map = at.as_object_mut().ok_or_else(|| format!("{} is not a map of values", names[..i].join(".")))?;
        at = map.entry(name.clone()).or_insert_with(|| Value::Object(Map::new()));
    }
    let map = at.as_object_mut().ok_or_else(|| format!("{} is not a map of values", parents.join(".")))?;
    map.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn no_files(path: &Path) -> std::io::Result<String> {
        Err(std::io::Error::new(std::io::ErrorKind::NotFound, format!("{} (no files in this test)", path.display())))
    }

    fn load(layers: &[Layer]) -> Result<Values, ValuesError> {
        Values::load(Values::default().to_tree(), layers, no_files)
    }

    /// The typed defaults are exactly the chart's values.yaml, and both
    /// pass the chart's schema.
    #[test]
    fn values_yaml_is_the_default() {
        let file = parse_file(Path::new("values.yaml"), VALUES_YAML).expect("values.yaml parses");
        assert_eq!(file, Values::default().to_tree(), "values.yaml and Values::default() differ");
        assert_eq!(Values::from_tree(file).expect("values.yaml passes the schema"), Values::default());
    }

    /// The schema uses only keywords `schema::check` understands, every
    /// map refuses unknown keys and requires all of its own, and its
    /// properties are exactly the typed values' keys.
    #[test]
    fn the_schema_covers_the_types_exactly() {
        let schema: Value = serde_json::from_str(VALUES_SCHEMA).expect("values.schema.json is JSON");
        fn walk(schema: &Value, value: &Value, path: &str) {
            for key in schema.as_object().expect("a schema is a map").keys() {
                assert!(schema::KEYWORDS.contains(&key.as_str()), "{path}: keyword {key} is not understood");
            }
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                assert_eq!(schema["additionalProperties"], json!(false), "{path}: unknown keys must be refused");
                let value = value.as_object().expect("a map in the values");
                let mut want: Vec<&String> = value.keys().collect();
                let mut have: Vec<&String> = props.keys().collect();
                want.sort();
                have.sort();
                assert_eq!(have, want, "{path}: the schema's keys and the values' differ");
                let mut required: Vec<&str> =
                    schema["required"].as_array().expect("required").iter().filter_map(Value::as_str).collect();
                required.sort_unstable();
                assert_eq!(required, want.iter().map(|s| s.as_str()).collect::<Vec<_>>(), "{path}: required");
                for (key, child) in props {
                    walk(child, &value[key], &format!("{path}.{key}"));
                }
            }
        }
        walk(&schema, &Values::default().to_tree(), "");
    }

    #[test]
    fn set_is_split_and_typed_as_helm_does() {
        for (arg, want) in [
            ("a=1", vec![("a", json!(1))]),
            ("a=-5", vec![("a", json!(-5))]),
            ("a=0", vec![("a", json!(0))]),
            ("a=010", vec![("a", json!("010"))]),
            ("a=0.2.0", vec![("a", json!("0.2.0"))]),
            ("a=1.5", vec![("a", json!("1.5"))]),
            ("a=TRUE,b=false", vec![("a", json!(true)), ("b", json!(false))]),
            ("a=null", vec![("a", Value::Null)]),
            ("a=", vec![("a", json!(""))]),
            ("a.b=x=y", vec![("a.b", json!("x=y"))]),
            (r"a=x\,y", vec![("a", json!("x,y"))]),
            ("a=info,weft=debug", vec![("a", json!("info")), ("weft", json!("debug"))]),
            (r"a=info\,weft=debug", vec![("a", json!("info,weft=debug"))]),
            ("a=99999999999999999999", vec![("a", json!("99999999999999999999"))]),
            (r"a\.b.c=1", vec![("a.b.c", json!(1))]),
            (r"a=x\y", vec![("a", json!("xy"))]),
        ] {
            let got: Vec<(String, Value)> =
                parse_set(arg).expect(arg).into_iter().map(|(k, v)| (k.join("."), typed(&v))).collect();
            let want: Vec<(String, Value)> = want.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            assert_eq!(got, want, "{arg}");
        }
        assert_eq!(parse_set(r"a\.b=1").expect("escaped dot")[0].0, ["a.b"], "one name with a dot");
        assert_eq!(parse_set("novalue"), Err(r#""novalue": expected key=value"#.to_owned()));
        assert_eq!(parse_set("a=1,novalue"), Err(r#""novalue": expected key=value"#.to_owned()));
        assert_eq!(parse_set("a..b=1"), Err(r#""a..b" is not a key (a.b.c)"#.to_owned()));
    }

    #[test]
    fn layers_apply_in_helms_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write");
            path
        };
        let first = file("first.yaml", "logLevel: debug\nwebhook: {failurePolicy: Fail, timeoutSeconds: 5}\n");
        let second = file("second.yaml", "webhook: {timeoutSeconds: 7}\n");
        let pem = file("anchors.pem", "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n");
        // --set comes after every file whatever the order on the command
        // line, and --set-file after --set.
        let layers = [
            Layer::Set("logLevel=warn".into()),
            Layer::File(first),
            Layer::SetFile(format!("identity.trustAnchorsPEM={}", pem.display())),
            Layer::Set("identity.trustAnchorsPEM=overridden,controlPlane.replicas=3".into()),
            Layer::File(second),
        ];
        let v = Values::load(Values::default().to_tree(), &layers, |p| std::fs::read_to_string(p)).expect("load");
        assert_eq!(v.log_level, "warn");
        assert_eq!(v.webhook.failure_policy, FailurePolicy::Fail, "first file, kept by the second");
        assert_eq!(v.webhook.timeout_seconds, 7, "second file");
        assert_eq!(v.control_plane.replicas, 3);
        assert!(v.identity.trust_anchors_pem.starts_with("-----BEGIN CERTIFICATE-----\n"), "--set-file last");
        assert_eq!(v.injector, Values::default().injector, "untouched");
    }

    /// Bad input is refused naming the value and why, every problem at once.
    #[test]
    fn bad_values_are_refused_with_the_reason() {
        let err = |layers: &[Layer]| load(layers).expect_err("refused").to_string();
        let set = |s: &str| err(&[Layer::Set(s.into())]);
        assert!(set("nosuch=1").contains("nosuch: no such value (known here: "), "{}", set("nosuch=1"));
        assert!(
            set("webhook.nosuch=1")
                .contains("webhook.nosuch: no such value (known here: certManager, failurePolicy, timeoutSeconds)")
        );
        assert!(
            set("webhook.failurePolicy=Sometimes")
                .contains(r#"webhook.failurePolicy: the string "Sometimes" is not one of Ignore, Fail"#)
        );
        assert!(set("webhook.timeoutSeconds=31").contains("webhook.timeoutSeconds: 31 is more than 30"));
        assert!(
            set("webhook.timeoutSeconds=ten")
                .contains(r#"webhook.timeoutSeconds: expected an integer, got the string "ten""#)
        );
        assert!(set("identity.tokenSeconds=60").contains("identity.tokenSeconds: 60 is less than 600"));
        assert!(
            set("proxy.resources.requests.cpu=1")
                .contains("proxy.resources.requests.cpu: expected a string, got the number 1")
        );
        assert!(
            set("proxy.resources.requests.cpu=lots").contains(r#"proxy.resources.requests.cpu: "lots" does not match"#)
        );
        assert!(set("policy.mtlsMode=null").contains("policy.mtlsMode: expected a string, got nothing (null)"));
        assert!(set("image=x").contains("image: expected a map of values, got the string \"x\""));
        assert!(set("image.tag.x=1").contains(r#"--set "image.tag.x=1": image.tag is not a map of values"#));
        assert!(set("a[0]=1").contains("list indexes"));
        let both = set("webhook.timeoutSeconds=0,nosuch=1");
        assert!(
            both.contains("webhook.timeoutSeconds: 0 is less than 1") && both.contains("nosuch: no such value"),
            "{both}"
        );

        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.yaml");
        let file = |text: &str| {
            std::fs::write(&path, text).expect("write");
            Values::load(Values::default().to_tree(), &[Layer::File(path.clone())], |p| std::fs::read_to_string(p))
                .expect_err("refused")
                .to_string()
        };
        let malformed = file("webhook: {failurePolicy: Fail\n");
        assert!(malformed.starts_with(&format!("{} is not a values file: ", path.display())), "{malformed}");
        assert!(malformed.contains("line"), "names the line: {malformed}");
        assert!(file("- a\n- b\n").ends_with("expected a map of values at the top, found a list"));
        assert!(file("1: x\n").contains("1: no such value"), "{}", file("1: x\n"));
        assert!(file("webhook:\n  nosuch: 1\n").contains("webhook.nosuch: no such value"));
        let missing = err(&[Layer::File(dir.path().join("missing.yaml"))]);
        assert!(missing.starts_with("cannot read ") && missing.contains("missing.yaml"), "{missing}");
    }

    /// `as_str` spells each enum as serde (and values.yaml) does.
    #[test]
    fn enum_names_are_serdes() {
        let pairs: Vec<(Value, &str)> = vec![
            (json!(PullPolicy::Always), PullPolicy::Always.as_str()),
            (json!(PullPolicy::IfNotPresent), PullPolicy::IfNotPresent.as_str()),
            (json!(PullPolicy::Never), PullPolicy::Never.as_str()),
            (json!(DefaultAccess::AllowAll), DefaultAccess::AllowAll.as_flag()),
            (json!(DefaultAccess::AllowAuthenticated), DefaultAccess::AllowAuthenticated.as_flag()),
            (json!(DefaultAccess::AllowSameNamespace), DefaultAccess::AllowSameNamespace.as_flag()),
            (json!(DefaultAccess::Deny), DefaultAccess::Deny.as_flag()),
            (json!(MtlsMode::Permissive), MtlsMode::Permissive.as_flag()),
            (json!(MtlsMode::Strict), MtlsMode::Strict.as_flag()),
            (json!(FailurePolicy::Ignore), FailurePolicy::Ignore.as_str()),
            (json!(FailurePolicy::Fail), FailurePolicy::Fail.as_str()),
            (json!(IssuerKind::Issuer), IssuerKind::Issuer.as_str()),
            (json!(IssuerKind::ClusterIssuer), IssuerKind::ClusterIssuer.as_str()),
        ];
        for (serde, name) in pairs {
            assert_eq!(serde, json!(name));
        }
    }

    #[test]
    fn an_empty_values_file_changes_nothing() {
        let tree = parse_file(Path::new("empty.yaml"), "# only a comment\n").expect("parses");
        let mut base = Values::default().to_tree();
        merge(&mut base, tree);
        assert_eq!(Values::from_tree(base).expect("valid"), Values::default());
    }
}
