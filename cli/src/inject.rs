//! `weft inject FILE|-`: the injector's decision applied to manifests
//! before they reach the cluster, for clusters without the webhook or for
//! reviewing what it would do.
//!
//! ```text
//!  multi-document YAML ─► split into documents (line-exact) ─► each: a Kubernetes object?
//!     workload (Pod, Deployment, …, CronJob; List items too) ─► its pod template
//!        ─► weft_injector::mutate::mutate (the webhook's own decision and patch)
//!        ─► the patch applied to the YAML, the document written anew
//!     anything else, or a workload left alone ─► its original text, byte for byte
//! ```
//!
//! The whole input is read and decided before anything is printed, so an
//! error in document 9 leaves stdout empty. A workload counts as opted in
//! (as if its Namespace said `weft.dev/inject: enabled`): `weft inject`
//! reads no cluster and cannot see Namespaces. It still honours
//! `weft.dev/inject: disabled` on the workload or its pod template, the
//! namespaces that are never injected when the object names one, and
//! `hostNetwork`. An injected pod template carries `weft-proxy`, so both a
//! second `weft inject` and the webhook leave it alone.
//!
//! Documents are split on `---` lines at column 0, which YAML forbids inside
//! any content, so each one can be kept verbatim; each is parsed on its own
//! with the lines before it blanked, so parse errors name the input's own
//! line numbers.

use std::io::{Read as _, Write as _};

use k8s_openapi::api::{apps, batch, core};
use serde_json::Value as Json;
use serde_yaml_ng::{Mapping, Value};
use weft_injector::config::ProxyArgs;
use weft_injector::mutate::{Decision, INJECT, NamespaceInfo, Settings, mutate};

/// `weft inject`'s arguments.
#[derive(clap::Args, Debug)]
pub struct InjectArgs {
    /// The manifests (multi-document YAML), or `-` for stdin.
    #[arg(value_name = "FILE|-")]
    pub input: String,
    #[command(flatten)]
    pub proxy: ProxyArgs,
}

/// Why the input cannot be injected; every variant names the document
/// (counted from 1 in the input, empty documents included).
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error("document {doc}: not valid YAML: {error}")]
    Yaml { doc: usize, error: serde_yaml_ng::Error },
    #[error("document {doc}{item}: not a Kubernetes object: {why}")]
    NotObject { doc: usize, item: Item, why: String },
    #[error("document {doc}{item}: {kind} {name}: {why}")]
    InvalidWorkload { doc: usize, item: Item, kind: String, name: String, why: String },
}

/// Where in a `List` an object is (nothing for a top-level object).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Item(Option<usize>);

impl std::fmt::Display for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(i) => write!(f, ", item {}", i + 1),
            None => Ok(()),
        }
    }
}

/// The result: the YAML to print and a line per workload saying what was done.
#[derive(Debug, PartialEq)]
pub struct Injected {
    pub yaml: String,
    pub report: Vec<String>,
}

/// Runs `weft inject`.
pub fn run(args: &InjectArgs) -> anyhow::Result<bool> {
    use anyhow::Context as _;
    let (text, source) = if args.input == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("reading the manifests from stdin")?;
        (text, "stdin".to_owned())
    } else {
        let text = std::fs::read_to_string(&args.input).with_context(|| format!("reading {}", args.input))?;
        (text, args.input.clone())
    };
    let settings = args.proxy.settings()?;
    if settings.trust_anchors_pem.is_none() {
        eprintln!("weft: warning: no --trust-anchors: the injected proxies can reach only a plaintext control plane");
    }
    let injected = inject(&text, &settings).map_err(|e| anyhow::anyhow!("{source}: {e} (nothing was printed)"))?;
    for line in &injected.report {
        eprintln!("weft: {line}");
    }
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(injected.yaml.as_bytes()).and_then(|()| stdout.flush()).context("writing to stdout")?;
    Ok(true)
}

/// One document of the input: its text (with its `---` line, if any) and
/// the line it starts on (from 1).
#[derive(Debug, PartialEq)]
struct Segment<'a> {
    text: &'a str,
    first_line: usize,
    /// Starts with a `---` line (the first document may not).
    marked: bool,
    /// `false` for what comes before the first `---` when it holds only
    /// comments, blank lines or directives: printed, but not counted.
    document: bool,
}

/// `---` at column 0, then nothing or whitespace: a document start, which
/// YAML forbids inside any content (YAML 1.2 §9.1.4, c-forbidden).
fn is_marker(line: &str) -> bool {
    line.strip_prefix("---").is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r', '\n']))
}

/// Splits the input into its documents, which together are the whole
/// input. The text before the first `---` is a document only if it holds
/// something besides blank lines, comments and directives (as a YAML
/// parser sees it).
fn split(text: &str) -> Vec<Segment<'_>> {
    let mut segments = Vec::new();
    let (mut start, mut first_line, mut marked) = (0, 1, false);
    let mut offset = 0;
    for (n, line) in text.split_inclusive('\n').enumerate() {
        if is_marker(line) && offset > 0 {
            segments.push(Segment { text: &text[start..offset], first_line, marked, document: true });
            (start, first_line, marked) = (offset, n + 1, true);
        } else if is_marker(line) {
            marked = true;
        }
        offset += line.len();
    }
    segments.push(Segment { text: &text[start..], first_line, marked, document: true });
    if let Some(first) = segments.first_mut()
        && !first.marked
        && first.text.lines().all(|l| {
            let l = l.trim();
            l.is_empty() || l.starts_with('#') || l.starts_with('%')
        })
    {
        first.document = false;
    }
    segments
}

/// The workloads `weft inject` knows, by apiVersion and kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Workload {
    Pod,
    ReplicationController,
    Deployment,
    StatefulSet,
    DaemonSet,
    ReplicaSet,
    Job,
    CronJob,
}

impl Workload {
    fn of(api_version: &str, kind: &str) -> Option<Workload> {
        Some(match (api_version, kind) {
            ("v1", "Pod") => Workload::Pod,
            ("v1", "ReplicationController") => Workload::ReplicationController,
            ("apps/v1", "Deployment") => Workload::Deployment,
            ("apps/v1", "StatefulSet") => Workload::StatefulSet,
            ("apps/v1", "DaemonSet") => Workload::DaemonSet,
            ("apps/v1", "ReplicaSet") => Workload::ReplicaSet,
            ("batch/v1", "Job") => Workload::Job,
            ("batch/v1", "CronJob") => Workload::CronJob,
            _ => return None,
        })
    }

    /// Where its pod (template) is: `metadata` and `spec` of a Pod.
    fn template_path(self) -> &'static [&'static str] {
        match self {
            Workload::Pod => &[],
            Workload::CronJob => &["spec", "jobTemplate", "spec", "template"],
            _ => &["spec", "template"],
        }
    }

    /// Checks the object against the Kubernetes API types (k8s-openapi),
    /// so that what is written back is what the API server will take:
    /// e.g. `defaultMode: 0644` is a string in YAML 1.2, refused here
    /// rather than printed as `'0644'`.
    fn validate<'de, D: serde::Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        use serde::Deserialize as _;
        match self {
            Workload::Pod => core::v1::Pod::deserialize(de).map(drop),
            Workload::ReplicationController => core::v1::ReplicationController::deserialize(de).map(drop),
            Workload::Deployment => apps::v1::Deployment::deserialize(de).map(drop),
            Workload::StatefulSet => apps::v1::StatefulSet::deserialize(de).map(drop),
            Workload::DaemonSet => apps::v1::DaemonSet::deserialize(de).map(drop),
            Workload::ReplicaSet => apps::v1::ReplicaSet::deserialize(de).map(drop),
            Workload::Job => batch::v1::Job::deserialize(de).map(drop),
            Workload::CronJob => batch::v1::CronJob::deserialize(de).map(drop),
        }
    }
}

/// Injects every workload of `text` (multi-document YAML).
pub fn inject(text: &str, settings: &Settings) -> Result<Injected, InjectError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut yaml = String::with_capacity(text.len() * 2);
    let mut report = Vec::new();
    let mut doc = 0;
    for segment in &split(text) {
        if !segment.document {
            yaml.push_str(segment.text);
            continue;
        }
        doc += 1;
        // Blank lines in front keep the parser's line numbers the input's.
        let padded = format!("{}{}", "\n".repeat(segment.first_line - 1), segment.text);
        let mut value: Value = serde_yaml_ng::from_str(&padded).map_err(|error| InjectError::Yaml { doc, error })?;
        value.apply_merge().map_err(|error| InjectError::Yaml { doc, error })?;
        if value.is_null() {
            // Empty (or comments only): kept as it is, as kubectl skips it.
            yaml.push_str(segment.text);
            continue;
        }
        let at = Place { doc, item: Item(None), text: Some(&padded) };
        let changed = object(&mut value, at, settings, &mut report)?;
        if changed {
            if segment.marked {
                yaml.push_str("---\n");
            }
            let written = serde_yaml_ng::to_string(&value).map_err(|error| InjectError::Yaml { doc, error })?;
            yaml.push_str(&written);
        } else {
            yaml.push_str(segment.text);
            if !segment.text.ends_with('\n') {
                yaml.push('\n');
            }
        }
    }
    Ok(Injected { yaml, report })
}

fn str_at<'v>(v: &'v Value, path: &[&str]) -> Option<&'v str> {
    path.iter().try_fold(v, |v, k| v.get(*k))?.as_str()
}

/// Where an object is in the input.
#[derive(Clone, Copy)]
struct Place<'t> {
    doc: usize,
    item: Item,
    /// The document's text, for errors with a path and a line (`None` for a
    /// List's item).
    text: Option<&'t str>,
}

/// Handles one object (recursing into a `List`); `Ok(true)` if it changed.
fn object(
    value: &mut Value,
    at: Place<'_>,
    settings: &Settings,
    report: &mut Vec<String>,
) -> Result<bool, InjectError> {
    let not_object = |why: String| InjectError::NotObject { doc: at.doc, item: at.item, why };
    let Some(map) = value.as_mapping() else {
        return Err(not_object(format!("a {}, not a mapping", shape(value))));
    };
    let (Some(api_version), Some(kind)) =
        (map.get("apiVersion").and_then(Value::as_str), map.get("kind").and_then(Value::as_str))
    else {
        return Err(not_object("it needs a string apiVersion and kind".into()));
    };
    let (api_version, kind) = (api_version.to_owned(), kind.to_owned());
    if kind == "List" || (kind.ends_with("List") && map.get("items").is_some()) {
        let Some(items) = value.get_mut("items").and_then(Value::as_sequence_mut) else {
            return Err(not_object(format!("a {kind} needs a sequence of items")));
        };
        let mut changed = false;
        for (i, v) in items.iter_mut().enumerate() {
            changed |= object(v, Place { doc: at.doc, item: Item(Some(i)), text: None }, settings, report)?;
        }
        return Ok(changed);
    }
    let Some(workload) = Workload::of(&api_version, &kind) else { return Ok(false) };
    workload_object(value, (workload, &kind), at, settings, report)
}

fn shape(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Sequence(_) => "sequence",
        Value::Mapping(_) => "mapping",
        Value::Tagged(_) => "tagged value",
    }
}

fn workload_object(
    value: &mut Value,
    (workload, kind): (Workload, &str),
    at: Place<'_>,
    settings: &Settings,
    report: &mut Vec<String>,
) -> Result<bool, InjectError> {
    let Place { doc, item, text } = at;
    let name = str_at(value, &["metadata", "name"])
        .or_else(|| str_at(value, &["metadata", "generateName"]))
        .unwrap_or("(unnamed)")
        .to_owned();
    let label = format!("{}/{name}", kind.to_ascii_lowercase());
    let invalid =
        |why: String| InjectError::InvalidWorkload { doc, item, kind: kind.to_owned(), name: name.clone(), why };
    // The workload's own opt-out, read as mutate reads a Pod's (the
    // annotation, else the label); its pod template's is mutate's to read.
    let says =
        |section: &str| str_at(value, &["metadata", section, INJECT]).filter(|v| *v == "enabled" || *v == "disabled");
    if workload != Workload::Pod && says("annotations").or(says("labels")) == Some("disabled") {
        report.push(format!("{label} not injected: its {INJECT} is disabled"));
        return Ok(false);
    }
    let namespace = str_at(value, &["metadata", "namespace"]).unwrap_or_default().to_owned();
    let path = workload.template_path();
    let Some(template) = path.iter().try_fold(&mut *value, |v, k| v.get_mut(*k)).filter(|t| t.is_mapping()) else {
        return Err(invalid(format!("no pod template at {}", path.join("."))));
    };
    let pod: Json = serde_json::to_value(&*template).map_err(|e| invalid(e.to_string()))?;
    let ns = NamespaceInfo {
        name: namespace,
        labels: [(INJECT.to_owned(), "enabled".to_owned())].into(),
        annotations: Default::default(),
    };
    let ops = match mutate(&pod, &ns, settings) {
        Decision::Skip(why) => {
            report.push(format!("{label} not injected: {why}"));
            return Ok(false);
        }
        Decision::Inject(ops) => ops,
    };
    // Only what is rewritten must be valid for the API server: an object
    // left alone is printed as it came.
    let checked = match text {
        Some(text) => workload.validate(serde_yaml_ng::Deserializer::from_str(text)),
        None => workload.validate(value.clone()),
    };
    checked.map_err(|e| invalid(e.to_string()))?;
    let Some(template) = path.iter().try_fold(&mut *value, |v, k| v.get_mut(*k)) else {
        return Err(invalid(format!("no pod template at {}", path.join("."))));
    };
    if let Some(map) = template.as_mapping_mut()
        && !map.contains_key("metadata")
    {
        // A template may leave out its metadata; the patch adds annotations.
        map.insert("metadata".into(), Value::Mapping(Mapping::new()));
    }
    for op in &ops {
        let v = serde_yaml_ng::to_value(&op.value).map_err(|e| invalid(e.to_string()))?;
        add(template, &op.path, v).map_err(|e| invalid(format!("applying the patch: {e}")))?;
    }
    report.push(format!("{label} injected"));
    Ok(true)
}

/// RFC 6902 `add` (the only operation `mutate` emits) on a YAML value;
/// RFC 6901 pointer tokens (`~1` is `/`, `~0` is `~`).
fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), String> {
    let tokens: Vec<String> = path
        .strip_prefix('/')
        .ok_or_else(|| format!("{path}: not a JSON pointer"))?
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect();
    let (last, parents) = tokens.split_last().ok_or_else(|| format!("{path}: no target"))?;
    let mut at = doc;
    for t in parents {
        at = match at {
            Value::Mapping(m) => m.get_mut(t.as_str()),
            Value::Sequence(s) => t.parse::<usize>().ok().and_then(|i| s.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| format!("{path}: no {t}"))?;
    }
    match at {
        Value::Mapping(m) => {
            m.insert(Value::String(last.clone()), value);
        }
        Value::Sequence(s) if last == "-" => s.push(value),
        Value::Sequence(s) => match last.parse::<usize>() {
            Ok(i) if i <= s.len() => s.insert(i, value),
            _ => return Err(format!("{path}: index {last} out of 0..={}", s.len())),
        },
        other => return Err(format!("{path}: cannot add into a {}", shape(other))),
    }
    Ok(())
}

#[cfg(test)]
mod tests;
