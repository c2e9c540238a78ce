//! Settings: every flag, its `WEFT_CONTROL_*` environment twin, its
//! default, and the checks that run before anything starts (all problems
//! reported at once).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use weft_api::policy::inbound_policy::{DefaultAccess, MtlsMode};

use clap::Args;

use crate::ca::issuer::IssuerFiles;
use crate::ca::webhook::{San, desired_sans};
use crate::ca::{CaSettings, IssuerSource};
use crate::source::kubernetes::webhook_cert::WebhookCertSettings;
use crate::source::registry::{MAX_TTL, MIN_TTL};

pub const ENV_GRPC_ADDR: &str = "WEFT_CONTROL_GRPC_ADDR";
pub const ENV_ADMIN_ADDR: &str = "WEFT_CONTROL_ADMIN_ADDR";
pub const ENV_SERVICES: &str = "WEFT_CONTROL_SERVICES";
pub const ENV_POLICY: &str = "WEFT_CONTROL_POLICY";
pub const ENV_LEASE_TTL: &str = "WEFT_CONTROL_LEASE_TTL";
pub const ENV_TRUST_DOMAIN: &str = "WEFT_CONTROL_TRUST_DOMAIN";
pub const ENV_RELOAD_INTERVAL: &str = "WEFT_CONTROL_RELOAD_INTERVAL";
pub const ENV_LOG: &str = "WEFT_CONTROL_LOG";
pub const ENV_ISSUER_CERT: &str = "WEFT_CONTROL_ISSUER_CERT";
pub const ENV_ISSUER_KEY: &str = "WEFT_CONTROL_ISSUER_KEY";
pub const ENV_TRUST_ANCHORS: &str = "WEFT_CONTROL_TRUST_ANCHORS";
pub const ENV_STATE_DIR: &str = "WEFT_CONTROL_STATE_DIR";
pub const ENV_CERT_LIFETIME: &str = "WEFT_CONTROL_CERT_LIFETIME";
pub const ENV_TOKENS: &str = "WEFT_CONTROL_TOKENS";
pub const ENV_SOURCE: &str = "WEFT_CONTROL_SOURCE";
pub const ENV_KUBECONFIG: &str = "WEFT_CONTROL_KUBECONFIG";
pub const ENV_TOKEN_AUDIENCE: &str = "WEFT_CONTROL_TOKEN_AUDIENCE";
pub const ENV_NAMESPACE: &str = "WEFT_CONTROL_NAMESPACE";
pub const ENV_WEBHOOK_CERT: &str = "WEFT_CONTROL_WEBHOOK_CERT";
pub const ENV_WEBHOOK_CERT_SECRET: &str = "WEFT_CONTROL_WEBHOOK_CERT_SECRET";
pub const ENV_WEBHOOK_SERVICE: &str = "WEFT_CONTROL_WEBHOOK_SERVICE";
pub const ENV_WEBHOOK_CONFIG: &str = "WEFT_CONTROL_WEBHOOK_CONFIG";
pub const ENV_WEBHOOK_CERT_SAN: &str = "WEFT_CONTROL_WEBHOOK_CERT_SAN";
pub const ENV_WEBHOOK_CERT_LIFETIME: &str = "WEFT_CONTROL_WEBHOOK_CERT_LIFETIME";
pub const ENV_DASHBOARD_ADDR: &str = "WEFT_CONTROL_DASHBOARD_ADDR";
pub const ENV_TELEMETRY_INTERVAL: &str = "WEFT_CONTROL_TELEMETRY_INTERVAL";
pub const ENV_TELEMETRY_RETENTION: &str = "WEFT_CONTROL_TELEMETRY_RETENTION";
pub const ENV_TELEMETRY_TARGET: &str = "WEFT_CONTROL_TELEMETRY_TARGET";

/// Where Services, workloads and policy come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SourceKind {
    /// The services file, policy files and the workload registry (`weft up`).
    #[default]
    Files,
    /// The Kubernetes API server: Services, EndpointSlices, Pods, HTTPRoutes,
    /// TrafficPolicies, AccessPolicies (policy files, if given, too).
    Kubernetes,
}

/// Who keeps the injector's serving certificate (with `--source kubernetes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum WebhookCertMode {
    /// The control plane: it issues the Secret from its CA, renews it, and
    /// sets the webhooks' caBundle to the trust anchors.
    #[default]
    ControlPlane,
    /// Someone else (cert-manager): the control plane leaves the Secret and
    /// the caBundle alone.
    External,
}

/// Bounds of `--webhook-cert-lifetime`: long enough to renew in (a third
/// of it), at most a year (humantime's, 365.25 days, so it prints as
/// `1year`).
pub const MIN_WEBHOOK_CERT_LIFETIME: Duration = Duration::from_secs(10);
pub const MAX_WEBHOOK_CERT_LIFETIME: Duration = Duration::from_secs(31_557_600);

/// Bounds of `--cert-lifetime`: long enough to renew in, short enough
/// that a stolen key is not worth much for long.
pub const MIN_CERT_LIFETIME: Duration = Duration::from_secs(5);
pub const MAX_CERT_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);

/// The command line of `weft-control` (and of `weft control`).
#[derive(Args, Debug, Clone)]
pub struct ControlArgs {
    /// gRPC listen address (discovery, policy, registry, identity).
    #[arg(long, env = ENV_GRPC_ADDR, default_value = "127.0.0.1:8090")]
    pub grpc_addr: SocketAddr,

    /// Admin listen address: /ready, /live, /metrics, /state.
    #[arg(long, env = ENV_ADMIN_ADDR, default_value = "127.0.0.1:9990")]
    pub admin_addr: SocketAddr,

    /// Services file (YAML, `services: [...]`), reloaded on change.
    #[arg(long, env = ENV_SERVICES, value_name = "FILE")]
    pub services: Option<PathBuf>,

    /// Policy file or directory of `*.yaml`/`*.yml` (HTTPRoute, TrafficPolicy,
    /// AccessPolicy), reloaded on change. Repeatable; the environment
    /// variable takes a comma-separated list.
    #[arg(long = "policy", env = ENV_POLICY, value_name = "PATH", value_delimiter = ',')]
    pub policy: Vec<PathBuf>,

    /// Default registry lease time-to-live, when a workload asks for none.
    #[arg(long, env = ENV_LEASE_TTL, default_value = "10s", value_parser = humantime::parse_duration)]
    pub lease_ttl: Duration,

    /// SPIFFE trust domain of workload identities.
    #[arg(long, env = ENV_TRUST_DOMAIN, default_value = "cluster.local")]
    pub trust_domain: String,

    /// What an inbound port allows when no AccessPolicy targets it:
    /// allow-all, allow-authenticated, allow-same-namespace or deny.
    #[arg(long, env = "WEFT_CONTROL_DEFAULT_ACCESS", default_value = "allow-all", value_parser = parse_default_access)]
    pub default_access: DefaultAccess,

    /// Mesh-wide mTLS mode: `permissive` accepts plaintext from clients
    /// outside the mesh (authorized as unauthenticated); `strict` refuses it.
    #[arg(long, env = "WEFT_CONTROL_MTLS_MODE", default_value = "permissive", value_parser = parse_mtls_mode)]
    pub mtls_mode: MtlsMode,

    /// How often the services and policy files are checked for changes.
    #[arg(long, env = ENV_RELOAD_INTERVAL, default_value = "250ms", value_parser = humantime::parse_duration)]
    pub reload_interval: Duration,

    /// Log filter (tracing `EnvFilter` syntax), e.g. `info,weft_control=debug`.
    #[arg(long, env = ENV_LOG, default_value = "info")]
    pub log: String,

    /// CA issuer certificate (PEM): a root, or an intermediate followed by
    /// the intermediates above it. Needs --issuer-key. Reloaded on change.
    #[arg(long, env = ENV_ISSUER_CERT, value_name = "FILE")]
    pub issuer_cert: Option<PathBuf>,

    /// The issuer's private key (unencrypted PKCS#8 PEM, `BEGIN PRIVATE KEY`).
    #[arg(long, env = ENV_ISSUER_KEY, value_name = "FILE")]
    pub issuer_key: Option<PathBuf>,

    /// Trust anchors (PEM bundle of root certificates) proxies accept peers
    /// under; reloaded on change, which is how a root is rolled in and out.
    /// Default: the issuer certificate, when it is self-signed.
    #[arg(long, env = ENV_TRUST_ANCHORS, value_name = "FILE")]
    pub trust_anchors: Option<PathBuf>,

    /// State directory (local mesh). Without --issuer-cert, a self-signed
    /// root is generated here on first start (ca.crt, ca.key) and reused;
    /// used tokens are recorded here so a restart does not revive them.
    #[arg(long, env = ENV_STATE_DIR, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Lifetime of issued certificates (5s..=30d); proxies renew at 70 %.
    #[arg(long, env = ENV_CERT_LIFETIME, default_value = "24h", value_parser = humantime::parse_duration)]
    pub cert_lifetime: Duration,

    /// Bootstrap tokens file (YAML, hashes only; see control/README.md),
    /// reloaded on change.
    #[arg(long, env = ENV_TOKENS, value_name = "FILE")]
    pub tokens: Option<PathBuf>,

    /// Where Services, workloads and policy come from: `files` (services
    /// and policy files, workloads registered by proxies) or `kubernetes`
    /// (the API server; see docs/kubernetes.md).
    #[arg(long, env = ENV_SOURCE, value_enum, default_value = "files")]
    pub source: SourceKind,

    /// Kubeconfig for `--source kubernetes`. Default: the Pod's service
    /// account inside a cluster, else $KUBECONFIG or ~/.kube/config.
    #[arg(long, env = ENV_KUBECONFIG, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,

    /// With `--source kubernetes`: the audience a service-account token
    /// must be issued for to prove an identity to the CA.
    #[arg(long, env = ENV_TOKEN_AUDIENCE, default_value = "weft")]
    pub token_audience: String,

    /// Weft's own namespace: where the injector's Secret is kept (with
    /// `--source kubernetes`), and the one the control plane's serving
    /// certificate names (`weft-control.NS.svc`).
    #[arg(long, env = ENV_NAMESPACE, default_value = "weft-system")]
    pub namespace: String,

    /// Who keeps the injector's serving certificate (with `--source
    /// kubernetes` and the CA on): `control-plane` (this control plane
    /// issues and renews the Secret and sets the webhooks' caBundle) or
    /// `external` (cert-manager does; both are left alone).
    #[arg(long, env = ENV_WEBHOOK_CERT, value_enum, default_value = "control-plane")]
    pub webhook_cert: WebhookCertMode,

    /// The Secret (in --namespace) holding the injector's certificate:
    /// tls.crt, tls.key, ca.crt.
    #[arg(long, env = ENV_WEBHOOK_CERT_SECRET, default_value = "weft-injector-tls")]
    pub webhook_cert_secret: String,

    /// The injector's Service: the certificate names SERVICE.NAMESPACE.svc
    /// and SERVICE.NAMESPACE.svc.cluster.local.
    #[arg(long, env = ENV_WEBHOOK_SERVICE, default_value = "weft-injector")]
    pub webhook_service: String,

    /// The MutatingWebhookConfiguration whose webhooks' caBundle is kept
    /// equal to the trust anchors.
    #[arg(long, env = ENV_WEBHOOK_CONFIG, default_value = "weft-injector")]
    pub webhook_config: String,

    /// An extra name for the injector's certificate: an IP address or a DNS
    /// name. Repeatable; the environment variable takes a comma-separated
    /// list.
    #[arg(long = "webhook-cert-san", env = ENV_WEBHOOK_CERT_SAN, value_name = "IP|DNS", value_delimiter = ',', value_parser = clap::value_parser!(San))]
    pub webhook_cert_sans: Vec<San>,

    /// Lifetime of the injector's certificate (10s..=1year); renewed when a
    /// third of it is left.
    #[arg(long, env = ENV_WEBHOOK_CERT_LIFETIME, default_value = "30days", value_parser = humantime::parse_duration)]
    pub webhook_cert_lifetime: Duration,

    /// OpenTelemetry collector (OTLP/gRPC, plaintext) the proxies export
    /// spans to, `HOST:PORT`. Unset: tracing off (proxies record nothing).
    /// Streamed to proxies (`ProxyConfig.Watch`): no proxy restart needed.
    #[arg(long, env = "WEFT_CONTROL_TRACE_COLLECTOR", value_name = "HOST:PORT")]
    pub trace_collector: Option<String>,

    /// 0.0–1.0: the share of requests without a trace context that the
    /// proxies start a trace for. Callers' own decisions are always followed.
    #[arg(long, env = "WEFT_CONTROL_TRACE_SAMPLING", default_value = "0", value_name = "RATIO")]
    pub trace_sampling: f64,
    /// The dashboard and its JSON API (HTTP/1.1): an address, or `off`.
    /// Loopback by default; on Kubernetes, `kubectl port-forward` to it.
    #[arg(long, env = ENV_DASHBOARD_ADDR, default_value = "127.0.0.1:8084", value_parser = parse_dashboard_addr)]
    pub dashboard_addr: DashboardAddr,

    /// How often every meshed pod's proxy metrics are scraped
    /// (`http://POD_IP:4191/metrics`) for the dashboard and `weft stat`;
    /// `0` turns scraping off.
    #[arg(long, env = ENV_TELEMETRY_INTERVAL, default_value = "5s", value_parser = humantime::parse_duration)]
    pub telemetry_interval: Duration,

    /// How much scrape history is kept per pod (the longest window the
    /// API answers).
    #[arg(long, env = ENV_TELEMETRY_RETENTION, default_value = "15m", value_parser = humantime::parse_duration)]
    pub telemetry_retention: Duration,

    /// A pod to scrape that the sources do not know (the local mesh's
    /// clients, which do not register): `NAMESPACE/POD/SERVICE_ACCOUNT=IP`.
    /// Repeatable; the environment variable takes a comma-separated list.
    #[arg(long = "telemetry-target", env = ENV_TELEMETRY_TARGET, value_name = "NS/POD/SA=IP", value_delimiter = ',')]
    pub telemetry_targets: Vec<crate::telemetry::ExtraTarget>,
}

/// `--dashboard-addr`: where the dashboard listens, if anywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DashboardAddr(pub Option<SocketAddr>);

fn parse_dashboard_addr(s: &str) -> Result<DashboardAddr, String> {
    if s == "off" {
        return Ok(DashboardAddr(None));
    }
    s.parse().map(|a| DashboardAddr(Some(a))).map_err(|_| "expected IP:PORT or off".to_owned())
}

/// Validated settings. Tests build this directly.
#[derive(Debug, Clone)]
pub struct Config {
    pub grpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub services: Option<PathBuf>,
    pub policy_paths: Vec<PathBuf>,
    pub lease_ttl: Duration,
    pub trust_domain: String,
    pub default_access: DefaultAccess,
    pub mtls_mode: MtlsMode,
    pub reload_interval: Duration,
    pub log_filter: String,
    pub issuer_cert: Option<PathBuf>,
    pub issuer_key: Option<PathBuf>,
    pub trust_anchors: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub cert_lifetime: Duration,
    pub tokens: Option<PathBuf>,
    pub source: SourceKind,
    pub kubeconfig: Option<PathBuf>,
    pub token_audience: String,
    pub namespace: String,
    pub webhook_cert: WebhookCertMode,
    pub webhook_cert_secret: String,
    pub webhook_service: String,
    pub webhook_config: String,
    pub webhook_cert_sans: Vec<San>,
    pub webhook_cert_lifetime: Duration,
    /// `--trace-collector`: `None` is tracing off.
    pub trace_collector: Option<String>,
    /// `--trace-sampling`, 0.0–1.0.
    pub trace_sampling: f64,
    /// The dashboard's address; `None`: off (the default here, so tests
    /// that build a Config do not collide on a port; the flag's default
    /// is 127.0.0.1:8084).
    pub dashboard_addr: Option<SocketAddr>,
    pub telemetry: crate::telemetry::Settings,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 8090)),
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 9990)),
            services: None,
            policy_paths: Vec::new(),
            lease_ttl: Duration::from_secs(10),
            trust_domain: "cluster.local".into(),
            default_access: DefaultAccess::AllowAll,
            mtls_mode: MtlsMode::Permissive,
            reload_interval: Duration::from_millis(250),
            log_filter: "info".into(),
            issuer_cert: None,
            issuer_key: None,
            trust_anchors: None,
            state_dir: None,
            cert_lifetime: Duration::from_secs(24 * 3600),
            tokens: None,
            source: SourceKind::Files,
            kubeconfig: None,
            token_audience: "weft".into(),
            namespace: "weft-system".into(),
            webhook_cert: WebhookCertMode::ControlPlane,
            webhook_cert_secret: "weft-injector-tls".into(),
            webhook_service: "weft-injector".into(),
            webhook_config: "weft-injector".into(),
            webhook_cert_sans: Vec::new(),
            webhook_cert_lifetime: Duration::from_secs(30 * 24 * 3600),
            trace_collector: None,
            trace_sampling: 0.0,
            dashboard_addr: None,
            telemetry: crate::telemetry::Settings::default(),
        }
    }
}

/// Every problem found in the settings, one per line.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  {}", .0.join("\n  "))]
pub struct ConfigErrors(pub Vec<String>);

/// A Kubernetes object name: an RFC 1123 label (`label`: namespaces,
/// Services) or subdomain (Secrets, webhook configurations).
fn kube_name(name: &str, label: bool) -> Result<(), &'static str> {
    let part_ok = |p: &str| {
        (1..=63).contains(&p.len())
            && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !p.starts_with('-')
            && !p.ends_with('-')
    };
    let ok = if label { part_ok(name) } else { name.len() <= 253 && name.split('.').all(part_ok) };
    if ok {
        Ok(())
    } else if label {
        Err("must be a DNS label: lower-case letters, digits and '-', at most 63")
    } else {
        Err("must be a DNS subdomain: lower-case letters, digits, '-' and '.', at most 253")
    }
}

fn parse_default_access(s: &str) -> Result<DefaultAccess, String> {
    match s {
        "allow-all" => Ok(DefaultAccess::AllowAll),
        "allow-authenticated" => Ok(DefaultAccess::AllowAuthenticated),
        "allow-same-namespace" => Ok(DefaultAccess::AllowSameNamespace),
        "deny" => Ok(DefaultAccess::Deny),
        _ => Err("expected allow-all, allow-authenticated, allow-same-namespace or deny".into()),
    }
}

fn parse_mtls_mode(s: &str) -> Result<MtlsMode, String> {
    match s {
        "permissive" => Ok(MtlsMode::Permissive),
        "strict" => Ok(MtlsMode::Strict),
        _ => Err("expected permissive or strict".into()),
    }
}

impl ControlArgs {
    pub fn into_config(self) -> Result<Config, ConfigErrors> {
        let config = Config {
            grpc_addr: self.grpc_addr,
            admin_addr: self.admin_addr,
            services: self.services,
            policy_paths: self.policy,
            lease_ttl: self.lease_ttl,
            trust_domain: self.trust_domain,
            default_access: self.default_access,
            mtls_mode: self.mtls_mode,
            reload_interval: self.reload_interval,
            log_filter: self.log,
            issuer_cert: self.issuer_cert,
            issuer_key: self.issuer_key,
            trust_anchors: self.trust_anchors,
            state_dir: self.state_dir,
            cert_lifetime: self.cert_lifetime,
            tokens: self.tokens,
            source: self.source,
            kubeconfig: self.kubeconfig,
            token_audience: self.token_audience,
            namespace: self.namespace,
            webhook_cert: self.webhook_cert,
            webhook_cert_secret: self.webhook_cert_secret,
            webhook_service: self.webhook_service,
            webhook_config: self.webhook_config,
            webhook_cert_sans: self.webhook_cert_sans,
            webhook_cert_lifetime: self.webhook_cert_lifetime,
            trace_collector: self.trace_collector.map(|c| c.trim().to_owned()).filter(|c| !c.is_empty()),
            trace_sampling: self.trace_sampling,
            dashboard_addr: self.dashboard_addr.0,
            telemetry: crate::telemetry::Settings {
                interval: self.telemetry_interval,
                retention: self.telemetry_retention,
                extra: self.telemetry_targets,
                ..crate::telemetry::Settings::default()
            },
        };
        config.validate().map(|()| config)
    }
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        let mut errors = Vec::new();
        if !(MIN_TTL..=MAX_TTL).contains(&self.lease_ttl) {
            errors.push(format!("--lease-ttl {:?} must be between {MIN_TTL:?} and {MAX_TTL:?}", self.lease_ttl));
        }
        // A SPIFFE trust domain: lower-case DNS-like name, no scheme, no path.
        let td = &self.trust_domain;
        let td_ok = !td.is_empty()
            && td.len() <= 255
            && td.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'));
        if !td_ok {
            errors.push(format!("--trust-domain `{td}` must be lower-case letters, digits, '.', '-' or '_'"));
        }
        if self.reload_interval < Duration::from_millis(10) || self.reload_interval > Duration::from_secs(60) {
            errors.push(format!("--reload-interval {:?} must be between 10ms and 60s", self.reload_interval));
        }
        if self.grpc_addr == self.admin_addr && self.grpc_addr.port() != 0 {
            errors.push(format!("--grpc-addr and --admin-addr are both {}", self.grpc_addr));
        }
        if !(0.0..=1.0).contains(&self.trace_sampling) {
            errors.push(format!("--trace-sampling {} must be between 0 and 1", self.trace_sampling));
        }
        if let Some(c) = &self.trace_collector
            && c.rsplit_once(':').is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
        {
            errors.push(format!("--trace-collector `{c}` must be HOST:PORT (e.g. otel-collector.observability:4317)"));
        }
        let t = &self.telemetry;
        if !t.interval.is_zero() && t.interval < Duration::from_millis(100) {
            errors.push(format!("--telemetry-interval {:?} must be 0 (off) or at least 100ms", t.interval));
        }
        if !t.interval.is_zero() && t.retention < t.interval {
            errors.push(format!("--telemetry-retention {:?} must be at least --telemetry-interval", t.retention));
        }
        if !t.interval.is_zero() && t.retention.as_secs_f64() / t.interval.as_secs_f64() > 100_000.0 {
            errors.push(format!(
                "--telemetry-retention {:?} / --telemetry-interval {:?}: at most 100000 scrapes per pod are kept",
                t.retention, t.interval
            ));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log_filter) {
            errors.push(format!("--log `{}`: {e}", self.log_filter));
        }
        match (&self.issuer_cert, &self.issuer_key) {
            (Some(_), None) => errors.push("--issuer-cert needs --issuer-key".into()),
            (None, Some(_)) => errors.push("--issuer-key needs --issuer-cert".into()),
            _ => {}
        }
        if !(MIN_CERT_LIFETIME..=MAX_CERT_LIFETIME).contains(&self.cert_lifetime) {
            errors.push(format!(
                "--cert-lifetime {} must be between {} and {}",
                humantime::format_duration(self.cert_lifetime),
                humantime::format_duration(MIN_CERT_LIFETIME),
                humantime::format_duration(MAX_CERT_LIFETIME)
            ));
        }
        let ca_off = self.issuer_cert.is_none() && self.issuer_key.is_none() && self.state_dir.is_none();
        if ca_off {
            for (flag, set) in [("--trust-anchors", self.trust_anchors.is_some()), ("--tokens", self.tokens.is_some())]
            {
                if set {
                    errors.push(format!(
                        "{flag} needs the CA on: give --state-dir DIR, or --issuer-cert and --issuer-key"
                    ));
                }
            }
        }
        match self.source {
            SourceKind::Files if self.kubeconfig.is_some() => {
                errors.push("--kubeconfig needs --source kubernetes".into());
            }
            SourceKind::Kubernetes if self.services.is_some() => errors.push(
                "--services is for --source files; with --source kubernetes, Services come from the API server".into(),
            ),
            _ => {}
        }
        if self.token_audience.trim().is_empty() {
            errors.push("--token-audience must not be empty".into());
        }
        for (flag, value, label) in [
            ("--namespace", &self.namespace, true),
            ("--webhook-service", &self.webhook_service, true),
            ("--webhook-cert-secret", &self.webhook_cert_secret, false),
            ("--webhook-config", &self.webhook_config, false),
        ] {
            if let Err(why) = kube_name(value, label) {
                errors.push(format!("{flag} `{value}`: {why}"));
            }
        }
        if !(MIN_WEBHOOK_CERT_LIFETIME..=MAX_WEBHOOK_CERT_LIFETIME).contains(&self.webhook_cert_lifetime) {
            errors.push(format!(
                "--webhook-cert-lifetime {} must be between {} and {}",
                humantime::format_duration(self.webhook_cert_lifetime),
                humantime::format_duration(MIN_WEBHOOK_CERT_LIFETIME),
                humantime::format_duration(MAX_WEBHOOK_CERT_LIFETIME)
            ));
        }
        if !self.webhook_cert_sans.is_empty()
            && (self.source != SourceKind::Kubernetes || self.webhook_cert == WebhookCertMode::External)
        {
            errors.push("--webhook-cert-san needs --source kubernetes and --webhook-cert control-plane".into());
        }
        if errors.is_empty() { Ok(()) } else { Err(ConfigErrors(errors)) }
    }

    /// What the injector's certificate task keeps, or `None` when it does
    /// not run (not `--source kubernetes`, or `--webhook-cert external`).
    /// It also needs the CA on ([`Self::ca`]).
    pub fn webhook_cert(&self) -> Option<WebhookCertSettings> {
        if self.source != SourceKind::Kubernetes || self.webhook_cert == WebhookCertMode::External {
            return None;
        }
        Some(WebhookCertSettings {
            namespace: self.namespace.clone(),
            secret: self.webhook_cert_secret.clone(),
            webhook_config: self.webhook_config.clone(),
            sans: desired_sans(&self.webhook_service, &self.namespace, &self.webhook_cert_sans),
            lifetime: self.webhook_cert_lifetime,
        })
    }

    /// The CA's settings, or `None` when it is off (no issuer files and
    /// no state directory). Call after [`Self::validate`].
    pub fn ca(&self) -> Option<CaSettings> {
        let issuer = match (&self.issuer_cert, &self.issuer_key, &self.state_dir) {
            (Some(cert), Some(key), _) => IssuerSource::Files(IssuerFiles { cert: cert.clone(), key: key.clone() }),
            (None, None, Some(dir)) => IssuerSource::StateDir(dir.clone()),
            _ => return None,
        };
        Some(CaSettings {
            trust_domain: self.trust_domain.clone(),
            issuer,
            trust_anchors: self.trust_anchors.clone(),
            tokens: self.tokens.clone(),
            state_dir: self.state_dir.clone(),
            lifetime: self.cert_lifetime,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ControlArgs,
    }

    #[test]
    fn defaults_and_all_errors_at_once() {
        let c = Cli::try_parse_from(["weft-control"]).expect("defaults").args.into_config().expect("valid");
        assert_eq!(c.grpc_addr.to_string(), "127.0.0.1:8090");
        assert_eq!(c.admin_addr.to_string(), "127.0.0.1:9990");
        assert_eq!(c.dashboard_addr, Some(SocketAddr::from(([127, 0, 0, 1], 8084))));
        assert_eq!((c.telemetry.interval, c.telemetry.retention), (Duration::from_secs(5), Duration::from_secs(900)));
        assert_eq!(c.lease_ttl, Duration::from_secs(10));
        assert_eq!(c.trust_domain, "cluster.local");

        let c = Cli::try_parse_from(["weft-control", "--policy", "a", "--policy", "b", "--lease-ttl", "3s"])
            .expect("flags")
            .args
            .into_config()
            .expect("valid");
        assert_eq!(c.policy_paths, vec![PathBuf::from("a"), PathBuf::from("b")]);
        assert_eq!(c.lease_ttl, Duration::from_secs(3));

        let e = Cli::try_parse_from(["weft-control", "--lease-ttl", "1h", "--trust-domain", "Bad/Domain"])
            .expect("parses")
            .args
            .into_config()
            .expect_err("invalid");
        assert_eq!(e.0.len(), 2, "{e}");
    }

    #[test]
    fn dashboard_and_telemetry_flags() {
        let parse = |args: &[&str]| {
            let mut argv = vec!["weft-control"];
            argv.extend_from_slice(args);
            Cli::try_parse_from(argv)
                .map_err(|e| e.to_string())
                .and_then(|c| c.args.into_config().map_err(|e| e.to_string()))
        };
        let c = parse(&[
            "--dashboard-addr",
            "off",
            "--telemetry-interval",
            "0",
            "--telemetry-target",
            "a/b-0/sa=10.1.2.3,c/d/e=::1",
        ])
        .expect("valid");
        assert_eq!((c.dashboard_addr, c.telemetry.interval.is_zero()), (None, true));
        assert_eq!(c.telemetry.extra.len(), 2);
        let c = parse(&["--dashboard-addr", "0.0.0.0:9", "--telemetry-interval", "1s", "--telemetry-retention", "1m"])
            .unwrap();
        assert_eq!(c.dashboard_addr, Some(SocketAddr::from(([0, 0, 0, 0], 9))));
        assert_eq!(c.telemetry.retention, Duration::from_secs(60));
        for bad in [
            &["--dashboard-addr", "nowhere"][..],
            &["--telemetry-target", "a/b=1.2.3.4"],
            &["--telemetry-interval", "10ms"],
            &["--telemetry-interval", "10s", "--telemetry-retention", "5s"],
            &["--telemetry-interval", "100ms", "--telemetry-retention", "1year"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ca_flags() {
        let parse = |args: &[&str]| {
            let mut argv = vec!["weft-control"];
            argv.extend_from_slice(args);
            Cli::try_parse_from(argv).expect("parses").args.into_config()
        };
        let c = parse(&[]).expect("valid");
        assert_eq!(c.cert_lifetime, Duration::from_secs(24 * 3600));
        assert!(c.ca().is_none(), "off without issuer or state dir");

        let c = parse(&["--state-dir", "/s", "--tokens", "/t.yaml", "--cert-lifetime", "10s"]).expect("valid");
        let ca = c.ca().expect("on");
        assert_eq!(ca.issuer, IssuerSource::StateDir("/s".into()));
        assert_eq!((ca.lifetime, ca.tokens), (Duration::from_secs(10), Some("/t.yaml".into())));

        let c = parse(&["--issuer-cert", "c.pem", "--issuer-key", "k.pem", "--trust-anchors", "a.pem"]).expect("valid");
        assert_eq!(
            c.ca().expect("on").issuer,
            IssuerSource::Files(IssuerFiles { cert: "c.pem".into(), key: "k.pem".into() })
        );

        // Lifetime bounds, inclusive.
        for (l, ok) in [("4s", false), ("5s", true), ("30days", true), ("31days", false)] {
            assert_eq!(parse(&["--state-dir", "/s", "--cert-lifetime", l]).is_ok(), ok, "{l}");
        }

        let e = parse(&["--issuer-cert", "c.pem", "--cert-lifetime", "1s"]).expect_err("invalid");
        let text = e.to_string();
        assert_eq!(e.0.len(), 2, "{text}");
        assert!(text.contains("--issuer-cert needs --issuer-key"), "{text}");
        assert!(text.contains("--cert-lifetime 1s must be between 5s and 30days"), "{text}");
        let e = parse(&["--source", "kubernetes", "--services", "s.yaml"]).expect_err("invalid");
        assert!(e.0[0].contains("--services is for --source files"), "{e}");
        let e = parse(&["--kubeconfig", "k"]).expect_err("invalid");
        assert_eq!(e.0, ["--kubeconfig needs --source kubernetes"]);
        let c = parse(&["--source", "kubernetes", "--kubeconfig", "k", "--policy", "p"]).expect("valid");
        assert_eq!((c.source, c.kubeconfig.as_deref()), (SourceKind::Kubernetes, Some(std::path::Path::new("k"))));
        let e = parse(&["--tokens", "t.yaml", "--trust-anchors", "a.pem"]).expect_err("invalid");
        assert_eq!(e.0.len(), 2, "{e}");
        assert!(e.0.iter().all(|m| m.contains("needs the CA on: give --state-dir DIR")), "{e}");
    }

    #[test]
    fn webhook_cert_flags() {
        let parse = |args: &[&str]| {
            let mut argv = vec!["weft-control"];
            argv.extend_from_slice(args);
            Cli::try_parse_from(argv).map(|c| c.args.into_config())
        };
        let c = parse(&[]).expect("parses").expect("valid");
        assert_eq!(c.webhook_cert(), None, "not with --source files");

        let c = parse(&["--source", "kubernetes"]).expect("parses").expect("valid");
        let w = c.webhook_cert().expect("on by default with --source kubernetes");
        assert_eq!((w.namespace.as_str(), w.secret.as_str()), ("weft-system", "weft-injector-tls"));
        assert_eq!(w.webhook_config, "weft-injector");
        assert_eq!(w.lifetime, Duration::from_secs(30 * 24 * 3600));
        let names: Vec<String> = w.sans.iter().map(ToString::to_string).collect();
        assert_eq!(names, ["DNS:weft-injector.weft-system.svc", "DNS:weft-injector.weft-system.svc.cluster.local"]);

        let c = parse(&[
            "--source",
            "kubernetes",
            "--namespace",
            "mesh",
            "--webhook-service",
            "inj",
            "--webhook-cert-san",
            "127.0.0.1",
            "--webhook-cert-san",
            "Inj.Example.com",
            "--webhook-cert-lifetime",
            "15s",
        ])
        .expect("parses")
        .expect("valid");
        let w = c.webhook_cert().expect("on");
        let names: Vec<String> = w.sans.iter().map(ToString::to_string).collect();
        assert_eq!(
            names,
            ["DNS:inj.example.com", "DNS:inj.mesh.svc", "DNS:inj.mesh.svc.cluster.local", "IP:127.0.0.1"]
        );
        assert_eq!((w.namespace.as_str(), w.lifetime), ("mesh", Duration::from_secs(15)));

        let c = parse(&["--source", "kubernetes", "--webhook-cert", "external"]).expect("parses").expect("valid");
        assert_eq!(c.webhook_cert(), None, "cert-manager keeps it");

        assert!(parse(&["--source", "kubernetes", "--webhook-cert-san", "*.x"]).is_err(), "a wildcard is refused");
        let e = parse(&[
            "--webhook-cert-san",
            "10.0.0.1",
            "--webhook-cert-lifetime",
            "9s",
            "--webhook-cert-secret",
            "Bad_Name",
            "--namespace",
            "a.b",
            "--webhook-config",
            "",
        ])
        .expect("parses")
        .expect_err("invalid");
        let text = e.to_string();
        assert_eq!(e.0.len(), 5, "{text}");
        for want in [
            "--namespace `a.b`: must be a DNS label",
            "--webhook-cert-secret `Bad_Name`: must be a DNS subdomain",
            "--webhook-config ``: must be a DNS subdomain",
            "--webhook-cert-lifetime 9s must be between 10s and 1year",
            "--webhook-cert-san needs --source kubernetes and --webhook-cert control-plane",
        ] {
            assert!(text.contains(want), "{want}:\n{text}");
        }
    }
}
