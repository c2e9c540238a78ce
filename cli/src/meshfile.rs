//! The LocalMesh file that `weft up -f` reads:
//!
//! ```yaml
//! apiVersion: weft.dev/v1alpha1
//! kind: LocalMesh
//! metadata: {name: demo}
//! spec:
//!   policies: [./policy]       # files or directories of HTTPRoute / TrafficPolicy / AccessPolicy
//!   mtls: {enabled: true, mode: permissive, certLifetime: 24h}   # all optional (network namespaces only)
//!   defaultAccess: allow-all   # optional: what a port allows when no AccessPolicy targets it
//!   services:                  # like Kubernetes Services
//!     - {name: web, namespace: default, selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}
//!   workloads:                 # like Deployments
//!     - {name: web-v1, replicas: 2, labels: {app: web}, serviceAccount: web,
//!        command: [some-binary, --port, "8080"], env: {GREETING: hello}, ports: [8080]}
//! ```
//!
//! Reading happens in two steps. serde, with unknown fields denied, turns
//! the YAML into these types; a mistake there is reported with its field
//! path and line (`spec.workloads[0]: unknown field `replica` … at line 9
//! column 7`). Then [`MeshFile::validate`] checks what types cannot (names,
//! ports, duplicates) and reports every problem at once, each with its path.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use weft_control::config::{MAX_CERT_LIFETIME, MIN_CERT_LIFETIME};

pub const API_VERSION: &str = "weft.dev/v1alpha1";
pub const KIND: &str = "LocalMesh";
/// The namespace of a service or workload that names none.
pub const DEFAULT_NAMESPACE: &str = "default";
/// The proxy's own ports (outbound, inbound, admin): a workload cannot use them.
pub const PROXY_PORTS: [u16; 3] = [4140, 4143, 4191];
/// Replicas of one workload at most: this is one machine.
pub const MAX_REPLICAS: u32 = 100;

/// A whole mesh file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MeshFile {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: Metadata,
    pub spec: MeshSpec,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MeshSpec {
    /// Policy files or directories, relative to the mesh file's directory.
    #[serde(default)]
    pub policies: Vec<PathBuf>,
    #[serde(default)]
    pub services: Vec<Service>,
    #[serde(default)]
    pub workloads: Vec<Workload>,
    /// Mutual TLS between the pods' proxies (network-namespace mode).
    #[serde(default)]
    pub mtls: Mtls,
    /// What an inbound port allows when no AccessPolicy targets it (the
    /// control plane's `--default-access`); its default when absent.
    #[serde(default)]
    pub default_access: Option<DefaultAccess>,
}

/// `spec.mtls`: the mesh CA, an identity per proxy, TLS between proxies.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Mtls {
    /// On by default; `weft up --mtls on|off` overrides it. Loopback mode
    /// never has mTLS (it has no inbound proxy to terminate it).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The control plane's `--mtls-mode` (its default, permissive, when absent).
    #[serde(default)]
    pub mode: Option<MtlsMode>,
    /// The control plane's `--cert-lifetime` (`24h`, `10m`; 5s to 30 days).
    #[serde(default)]
    pub cert_lifetime: Option<String>,
}

impl Default for Mtls {
    fn default() -> Self {
        Mtls { enabled: true, mode: None, cert_lifetime: None }
    }
}

impl Mtls {
    /// Whether the file says anything beyond the defaults.
    pub fn is_default(&self) -> bool {
        *self == Mtls::default()
    }
}

/// Whether an inbound proxy accepts plaintext from outside the mesh.
#[derive(Debug, Clone, Copy, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum MtlsMode {
    /// Plaintext from clients without an identity is accepted (as
    /// unauthenticated); meshed clients still use mTLS.
    Permissive,
    /// Plaintext is refused.
    Strict,
}

impl MtlsMode {
    /// The control plane's `--mtls-mode` value.
    pub fn as_flag(self) -> &'static str {
        match self {
            MtlsMode::Permissive => "permissive",
            MtlsMode::Strict => "strict",
        }
    }
}

/// The control plane's `--default-access`.
#[derive(Debug, Clone, Copy, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum DefaultAccess {
    AllowAll,
    AllowAuthenticated,
    AllowSameNamespace,
    Deny,
}

impl DefaultAccess {
    pub fn as_flag(self) -> &'static str {
        match self {
            DefaultAccess::AllowAll => "allow-all",
            DefaultAccess::AllowAuthenticated => "allow-authenticated",
            DefaultAccess::AllowSameNamespace => "allow-same-namespace",
            DefaultAccess::Deny => "deny",
        }
    }
}

/// A service: a virtual IP in front of the workloads its selector matches.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub name: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Workloads whose labels include all of these are its endpoints.
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    pub ports: Vec<ServicePort>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServicePort {
    #[serde(default)]
    pub name: Option<String>,
    /// The port clients call on the virtual IP.
    pub port: u16,
    /// The workloads' port; defaults to `port`.
    #[serde(default)]
    pub target_port: Option<u16>,
    /// Only `TCP` (the default) is supported.
    #[serde(default)]
    pub protocol: Option<String>,
}

impl ServicePort {
    pub fn target(&self) -> u16 {
        self.target_port.unwrap_or(self.port)
    }
}

/// A workload: `replicas` copies of one command, each in its own pod.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Workload {
    pub name: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    #[serde(default = "one")]
    pub replicas: u32,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default = "default_namespace")]
    pub service_account: String,
    /// The program and its arguments. `$(VAR)` is replaced by the pod's
    /// environment variable VAR; `weft` means this weft binary.
    pub command: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Ports the command listens on.
    #[serde(default)]
    pub ports: Vec<u16>,
}

fn default_namespace() -> String {
    DEFAULT_NAMESPACE.to_owned()
}

fn one() -> u32 {
    1
}

fn yes() -> bool {
    true
}

/// One problem in a mesh file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where: `spec.workloads[0].replicas`.
    pub field: String,
    /// 1-based line and column, when the YAML parser knows them.
    pub location: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)?;
        if let Some((line, column)) = self.location {
            write!(f, " (line {line}, column {column})")?;
        }
        Ok(())
    }
}

/// Why a mesh file was refused.
#[derive(Debug, thiserror::Error)]
pub enum MeshFileError {
    #[error("cannot read the mesh file {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{} is not a valid LocalMesh file:{}", path.display(), list(problems))]
    Invalid { path: PathBuf, problems: Vec<Problem> },
}

fn list(problems: &[Problem]) -> String {
    problems.iter().map(|p| format!("\n  - {p}")).collect()
}

/// A mesh file and the directory its relative paths are resolved against.
#[derive(Debug, Clone)]
pub struct LoadedMesh {
    pub file: MeshFile,
    /// The file it was read from, as given (the built-in demo's is
    /// `examples/demo/mesh.yaml`).
    pub path: PathBuf,
    pub dir: PathBuf,
    /// Things that are legal but probably not meant (a service that selects nothing).
    pub warnings: Vec<String>,
}

impl LoadedMesh {
    /// Reads, parses and validates `path`.
    pub fn load(path: &Path) -> Result<LoadedMesh, MeshFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| MeshFileError::Read { path: path.into(), source })?;
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let dir = std::path::absolute(dir).map_err(|source| MeshFileError::Read { path: path.into(), source })?;
        LoadedMesh::parse(&text, path, dir)
    }

    /// Parses and validates `text`, read from `path` (for messages), with
    /// relative paths resolved against `dir`.
    pub fn parse(text: &str, path: &Path, dir: PathBuf) -> Result<LoadedMesh, MeshFileError> {
        let invalid = |problems| MeshFileError::Invalid { path: path.into(), problems };
        let mut file: MeshFile = serde_yaml_ng::from_str(text).map_err(|e| invalid(vec![yaml_problem(&e)]))?;
        for policy in &mut file.spec.policies {
            *policy = dir.join(&*policy);
        }
        let warnings = file.validate().map_err(invalid)?;
        Ok(LoadedMesh { file, path: path.to_owned(), dir, warnings })
    }
}

/// serde_yaml_ng's message starts with the field path (`spec.workloads[0]: …`)
/// and ends with the position (` at line 9 column 7`); split them out.
fn yaml_problem(e: &serde_yaml_ng::Error) -> Problem {
    let mut message = e.to_string();
    let location = e.location().map(|l| (l.line(), l.column()));
    if let Some((line, column)) = location {
        let suffix = format!(" at line {line} column {column}");
        if let Some(stripped) = message.strip_suffix(&suffix) {
            message = stripped.to_owned();
        }
    }
    // A path is dotted words with [n] indexes; anything else is the message.
    let (field, message) = match message.split_once(": ") {
        Some((path, rest))
            if !path.is_empty()
                && path.chars().all(|c| c.is_ascii_alphanumeric() || "._-[]".contains(c))
                && path != "." =>
        {
            (path.to_owned(), rest.to_owned())
        }
        _ => (String::new(), message),
    };
    Problem { field, location, message }
}

/// Collects validation problems with their paths.
#[derive(Default)]
struct Check {
    problems: Vec<Problem>,
}

impl Check {
    fn fail(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem { field: field.into(), location: None, message: message.into() });
    }

    /// A DNS-1123 label (RFC 1123): what Kubernetes requires of names and namespaces.
    fn dns_label(&mut self, field: &str, value: &str) {
        if !is_dns_label(value) {
            self.fail(
                field,
                format!(
                    "{value:?} is not a valid name: use at most 63 lowercase letters, digits and '-', \
                     starting and ending with a letter or digit"
                ),
            );
        }
    }

    fn labels(&mut self, field: &str, labels: &BTreeMap<String, String>) {
        for (key, value) in labels {
            if !is_label_key(key) {
                self.fail(format!("{field}.{key}"), "not a valid label key (like `app` or `example.com/tier`)");
            }
            if !is_label_value(value) {
                self.fail(
                    format!("{field}.{key}"),
                    format!(
                        "{value:?} is not a valid label value: at most 63 letters, digits, '-', '_' or '.', \
                         starting and ending with a letter or digit"
                    ),
                );
            }
        }
    }
}

pub fn is_dns_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    !s.is_empty()
        && s.len() <= 63
        && bytes.iter().all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && bytes[0] != b'-'
        && bytes[s.len() - 1] != b'-'
}

fn is_label_value(s: &str) -> bool {
    let bytes = s.as_bytes();
    s.is_empty()
        || (s.len() <= 63
            && bytes.iter().all(|&b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            && bytes[0].is_ascii_alphanumeric()
            && bytes[s.len() - 1].is_ascii_alphanumeric())
}

fn is_label_key(s: &str) -> bool {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, s),
    };
    let prefix_ok = prefix.is_none_or(|p| p.len() <= 253 && p.split('.').all(is_dns_label));
    prefix_ok && !name.is_empty() && is_label_value(name)
}

/// Environment variable names as Kubernetes accepts them.
fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || "_-.".contains(c))
        && chars.all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
}

impl MeshFile {
    /// Checks what the types cannot; every problem at once. `Ok` carries
    /// warnings (legal but probably unintended).
    pub fn validate(&self) -> Result<Vec<String>, Vec<Problem>> {
        let mut c = Check::default();
        let mut warnings = Vec::new();
        if self.api_version != API_VERSION {
            c.fail("apiVersion", format!("must be {API_VERSION:?}, not {:?}", self.api_version));
        }
        if self.kind != KIND {
            c.fail("kind", format!("must be {KIND:?}, not {:?}", self.kind));
        }
        if let Some(name) = &self.metadata.name {
            c.dns_label("metadata.name", name);
        }
        for (i, policy) in self.spec.policies.iter().enumerate() {
            if !policy.exists() {
                c.fail(format!("spec.policies[{i}]"), format!("{} does not exist", policy.display()));
            }
        }
        let mtls = &self.spec.mtls;
        if !mtls.enabled && mtls.mode == Some(MtlsMode::Strict) {
            c.fail(
                "spec.mtls.mode",
                "strict refuses plaintext, but `enabled: false` gives the proxies no identity: every connection \
                 would be refused",
            );
        }
        if let Some(lifetime) = &mtls.cert_lifetime {
            match humantime::parse_duration(lifetime) {
                Err(e) => c.fail("spec.mtls.certLifetime", format!("{lifetime:?} is not a duration like 24h ({e})")),
                Ok(d) if !(MIN_CERT_LIFETIME..=MAX_CERT_LIFETIME).contains(&d) => c.fail(
                    "spec.mtls.certLifetime",
                    format!(
                        "{lifetime} is not between {} and {}",
                        humantime::format_duration(MIN_CERT_LIFETIME),
                        humantime::format_duration(MAX_CERT_LIFETIME)
                    ),
                ),
                Ok(_) => {}
            }
        }
        if !mtls.enabled
            && matches!(
                self.spec.default_access,
                Some(DefaultAccess::AllowAuthenticated | DefaultAccess::AllowSameNamespace)
            )
        {
            warnings.push(format!(
                "spec.defaultAccess {} admits only authenticated callers, and with spec.mtls.enabled false there \
                 are none: ports without an AccessPolicy refuse everything",
                self.spec.default_access.map_or("", DefaultAccess::as_flag)
            ));
        }

        let mut seen = BTreeMap::new();
        for (i, s) in self.spec.services.iter().enumerate() {
            let at = format!("spec.services[{i}]");
            c.dns_label(&format!("{at}.name"), &s.name);
            c.dns_label(&format!("{at}.namespace"), &s.namespace);
            if let Some(first) = seen.insert((s.namespace.as_str(), s.name.as_str()), i) {
                c.fail(
                    format!("{at}.name"),
                    format!("service {}.{} is also spec.services[{first}]", s.name, s.namespace),
                );
            }
            c.labels(&format!("{at}.selector"), &s.selector);
            if s.ports.is_empty() {
                c.fail(format!("{at}.ports"), "a service needs at least one port");
            }
            let mut ports = BTreeMap::new();
            for (j, p) in s.ports.iter().enumerate() {
                let at = format!("{at}.ports[{j}]");
                if p.port == 0 {
                    c.fail(format!("{at}.port"), "must be 1-65535");
                }
                if p.target_port == Some(0) {
                    c.fail(format!("{at}.targetPort"), "must be 1-65535");
                }
                if let Some(first) = ports.insert(p.port, j) {
                    c.fail(format!("{at}.port"), format!("port {} is also ports[{first}]", p.port));
                }
                if let Some(protocol) = p.protocol.as_deref().filter(|p| *p != "TCP") {
                    c.fail(format!("{at}.protocol"), format!("only TCP is supported, not {protocol:?}"));
                }
            }
            let selected: Vec<&Workload> = self.spec.workloads.iter().filter(|w| s.selects(w)).collect();
            if s.selector.is_empty() {
                warnings.push(format!("{at} ({}) has no selector, so it has no endpoints", s.name));
            } else if selected.is_empty() {
                warnings.push(format!("{at} ({}) selects no workload", s.name));
            }
            for w in selected {
                for p in &s.ports {
                    if !w.ports.is_empty() && !w.ports.contains(&p.target()) {
                        warnings.push(format!(
                            "{at} ({}) sends port {} to workload {}, whose ports ({:?}) do not include it",
                            s.name,
                            p.target(),
                            w.name,
                            w.ports
                        ));
                    }
                }
            }
        }

        let mut seen = BTreeMap::new();
        for (i, w) in self.spec.workloads.iter().enumerate() {
            let at = format!("spec.workloads[{i}]");
            c.dns_label(&format!("{at}.name"), &w.name);
            c.dns_label(&format!("{at}.namespace"), &w.namespace);
            // Pods are named <workload>-<i> without their namespace (the
            // network namespace's name carries it), so names are unique
            // across namespaces.
            if let Some(first) = seen.insert(w.name.as_str(), i) {
                c.fail(format!("{at}.name"), format!("workload {} is also spec.workloads[{first}]", w.name));
            }
            if w.name.len() + 1 + (w.replicas.max(1) - 1).to_string().len() > 63 {
                c.fail(format!("{at}.name"), "too long: pod names <name>-<replica> must fit in 63 characters");
            }
            if w.replicas > MAX_REPLICAS {
                c.fail(format!("{at}.replicas"), format!("at most {MAX_REPLICAS} on one machine"));
            }
            if !w.service_account.split('.').all(is_dns_label) || w.service_account.len() > 253 {
                c.fail(format!("{at}.serviceAccount"), format!("{:?} is not a valid name", w.service_account));
            }
            c.labels(&format!("{at}.labels"), &w.labels);
            match w.command.first() {
                None => c.fail(format!("{at}.command"), "must name a program, e.g. [\"python3\", \"app.py\"]"),
                Some(program) if program.is_empty() => c.fail(format!("{at}.command[0]"), "must not be empty"),
                Some(_) => {}
            }
            for name in w.env.keys() {
                if !is_env_name(name) {
                    c.fail(format!("{at}.env.{name}"), "not a valid environment variable name");
                }
            }
            let mut ports = BTreeMap::new();
            for (j, &port) in w.ports.iter().enumerate() {
                if port == 0 {
                    c.fail(format!("{at}.ports[{j}]"), "must be 1-65535");
                } else if PROXY_PORTS.contains(&port) {
                    c.fail(format!("{at}.ports[{j}]"), format!("{port} is one of the proxy's ports {PROXY_PORTS:?}"));
                }
                if let Some(first) = ports.insert(port, j) {
                    c.fail(format!("{at}.ports[{j}]"), format!("port {port} is also ports[{first}]"));
                }
            }
        }
        if c.problems.is_empty() { Ok(warnings) } else { Err(c.problems) }
    }
}

impl Service {
    /// Whether this service's endpoints include `w`'s pods (same namespace,
    /// labels include the selector). An empty selector selects nothing, as
    /// in Kubernetes, where such a service's endpoints are managed by hand.
    pub fn selects(&self, w: &Workload) -> bool {
        w.namespace == self.namespace
            && !self.selector.is_empty()
            && self.selector.iter().all(|(k, v)| w.labels.get(k) == Some(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = r#"
apiVersion: weft.dev/v1alpha1
kind: LocalMesh
metadata: {name: demo}
spec:
  services:
    - {name: web, namespace: default, selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}
    - name: store
      selector: {app: store}
      ports: [{port: 6379, protocol: TCP}]
  workloads:
    - name: web-v1
      namespace: default
      replicas: 2
      labels: {app: web, version: v1}
      serviceAccount: web
      command: ["some-binary", "--port", "8080"]
      env: {GREETING: hello}
      ports: [8080]
    - name: store
      labels: {app: store}
      command: [redis-server]
      ports: [6379]
"#;

    fn parse(text: &str) -> Result<LoadedMesh, MeshFileError> {
        LoadedMesh::parse(text, Path::new("mesh.yaml"), PathBuf::from("/srv/mesh"))
    }

    fn problems(text: &str) -> Vec<Problem> {
        match parse(text) {
            Err(MeshFileError::Invalid { problems, .. }) => problems,
            other => panic!("expected an invalid file, got {other:?}"),
        }
    }

    #[test]
    fn the_issue_example_parses_with_defaults() {
        let mesh = parse(VALID).expect("valid");
        let spec = &mesh.file.spec;
        assert_eq!(mesh.file.metadata.name.as_deref(), Some("demo"));
        assert_eq!(spec.services.len(), 2);
        assert_eq!(spec.services[0].ports[0].target(), 8080);
        assert_eq!(spec.services[1].namespace, "default");
        assert_eq!(spec.services[1].ports[0].target(), 6379);
        let store = &spec.workloads[1];
        assert_eq!(
            (store.replicas, store.service_account.as_str(), store.namespace.as_str()),
            (1, "default", "default")
        );
        assert_eq!(spec.workloads[0].env["GREETING"], "hello");
        assert!(spec.services[0].selects(&spec.workloads[0]));
        assert!(!spec.services[0].selects(&spec.workloads[1]));
        assert!(mesh.warnings.is_empty(), "{:?}", mesh.warnings);
    }

    #[test]
    fn policies_resolve_against_the_mesh_files_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("policy")).unwrap();
        let path = dir.path().join("mesh.yaml");
        std::fs::write(&path, VALID.replace("spec:\n", "spec:\n  policies: [./policy]\n")).unwrap();
        let mesh = LoadedMesh::load(&path).unwrap();
        assert_eq!(mesh.file.spec.policies, vec![dir.path().join("./policy")]);
        assert_eq!(mesh.dir, dir.path());

        std::fs::write(&path, VALID.replace("spec:\n", "spec:\n  policies: [./missing]\n")).unwrap();
        let Err(MeshFileError::Invalid { problems, .. }) = LoadedMesh::load(&path) else { panic!("missing policy") };
        assert_eq!(problems[0].field, "spec.policies[0]");
    }

    #[test]
    fn yaml_mistakes_name_the_field_and_line() {
        let cases = [
            (VALID.replace("replicas: 2", "replica: 2"), "spec.workloads[0]", "unknown field `replica`", 14),
            (VALID.replace("replicas: 2", "replicas: two"), "spec.workloads[0].replicas", "invalid type", 14),
            (VALID.replace("targetPort: 8080", "targetPort: 70000"), "spec.services[0].ports[0].targetPort", "", 7),
            (VALID.replace("      command: [redis-server]\n", ""), "spec.workloads[1]", "missing field `command`", 20),
            (VALID.replace("kind: LocalMesh", "kind: LocalMesh\nextra: 1"), "", "unknown field `extra`", 4),
        ];
        for (text, field, message, line) in cases {
            let p = problems(&text);
            assert_eq!(p.len(), 1, "{p:?}");
            assert_eq!(p[0].field, field, "{}", p[0]);
            assert!(p[0].message.contains(message), "{}", p[0]);
            assert_eq!(p[0].location.map(|l| l.0), Some(line), "{}", p[0]);
        }
        let p = problems("spec: [");
        assert!(p[0].location.is_some(), "{}", p[0]);
    }

    #[test]
    fn every_semantic_problem_is_reported_at_once() {
        let text = VALID
            .replace("apiVersion: weft.dev/v1alpha1", "apiVersion: v1")
            .replace("name: web-v1", "name: Web_v1")
            .replace("replicas: 2", "replicas: 101")
            .replace("ports: [8080]", "ports: [8080, 4191, 8080]")
            .replace("command: [redis-server]", "command: []")
            .replace("{app: store}\n      command", "{app: \"no good\"}\n      command")
            .replace("protocol: TCP", "protocol: UDP")
            .replace("GREETING", "1GREETING");
        let got: Vec<String> = problems(&text).iter().map(|p| p.field.clone()).collect();
        assert_eq!(
            got,
            [
                "apiVersion",
                "spec.services[1].ports[0].protocol",
                "spec.workloads[0].name",
                "spec.workloads[0].replicas",
                "spec.workloads[0].env.1GREETING",
                "spec.workloads[0].ports[1]",
                "spec.workloads[0].ports[2]",
                "spec.workloads[1].labels.app",
                "spec.workloads[1].command",
            ]
        );
    }

    #[test]
    fn duplicates_are_refused() {
        let text = VALID
            .replace("name: store\n      selector", "name: web\n      selector")
            .replace("    - name: store\n      labels", "    - name: web-v1\n      labels");
        let got: Vec<String> = problems(&text).iter().map(|p| p.to_string()).collect();
        assert_eq!(
            got,
            [
                "spec.services[1].name: service web.default is also spec.services[0]",
                "spec.workloads[1].name: workload web-v1 is also spec.workloads[0]",
            ]
        );
    }

    #[test]
    fn mtls_and_default_access() {
        let spec = parse(VALID).unwrap().file.spec;
        assert_eq!(spec.mtls, Mtls { enabled: true, mode: None, cert_lifetime: None }, "on by default");
        assert!(spec.mtls.is_default());
        assert_eq!(spec.default_access, None);

        let text = VALID.replace(
            "spec:\n",
            "spec:\n  mtls: {mode: strict, certLifetime: 10m}\n  defaultAccess: allow-same-namespace\n",
        );
        let spec = parse(&text).unwrap().file.spec;
        assert_eq!(spec.mtls, Mtls { enabled: true, mode: Some(MtlsMode::Strict), cert_lifetime: Some("10m".into()) });
        assert_eq!(spec.default_access.map(DefaultAccess::as_flag), Some("allow-same-namespace"));
        assert_eq!(spec.mtls.mode.map(MtlsMode::as_flag), Some("strict"));

        let off = parse(&VALID.replace("spec:\n", "spec:\n  mtls: {enabled: false}\n")).unwrap();
        assert!(!off.file.spec.mtls.enabled);
        assert!(off.warnings.is_empty(), "{:?}", off.warnings);
        let off =
            parse(&VALID.replace("spec:\n", "spec:\n  mtls: {enabled: false}\n  defaultAccess: allow-authenticated\n"))
                .unwrap();
        assert_eq!(off.warnings.len(), 1);
        assert!(
            off.warnings[0].starts_with("spec.defaultAccess allow-authenticated admits only authenticated"),
            "{:?}",
            off.warnings
        );

        let cases = [
            ("  mtls: {mode: strik}\n", "spec.mtls.mode", "unknown variant `strik`, expected `permissive` or `strict`"),
            ("  mtls: {enable: true}\n", "spec.mtls", "unknown field `enable`"),
            ("  defaultAccess: allow\n", "spec.defaultAccess", "unknown variant `allow`"),
            ("  mtls: {enabled: false, mode: strict}\n", "spec.mtls.mode", "every connection would be refused"),
            ("  mtls: {certLifetime: soon}\n", "spec.mtls.certLifetime", "\"soon\" is not a duration like 24h"),
            ("  mtls: {certLifetime: 1s}\n", "spec.mtls.certLifetime", "1s is not between 5s and 30days"),
            ("  mtls: {certLifetime: 31d}\n", "spec.mtls.certLifetime", "is not between"),
        ];
        for (extra, field, message) in cases {
            let p = problems(&VALID.replace("spec:\n", &format!("spec:\n{extra}")));
            assert_eq!(p.len(), 1, "{extra}: {p:?}");
            assert_eq!(p[0].field, field, "{extra}: {}", p[0]);
            assert!(p[0].message.contains(message), "{extra}: {}", p[0]);
        }
    }

    #[test]
    fn warnings_for_services_without_endpoints() {
        let text = VALID.replace("selector: {app: store}", "selector: {app: nothing}");
        let mesh = parse(&text).unwrap();
        assert_eq!(mesh.warnings, ["spec.services[1] (store) selects no workload"]);
    }

    #[test]
    fn names_and_labels() {
        for ok in ["a", "web-v1", "0abc", &"a".repeat(63)] {
            assert!(is_dns_label(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "Web", "a_b", "a.b", &"a".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad}");
        }
        assert!(is_label_key("app") && is_label_key("example.com/tier") && is_label_key("app.kubernetes.io/name"));
        assert!(!is_label_key("a=b") && !is_label_key("/x") && !is_label_key("x/"));
        assert!(is_label_value("") && is_label_value("v1.2_3") && !is_label_value("a,b") && !is_label_value("-a"));
    }
}
