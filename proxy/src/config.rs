//! The one place where `weft-proxy run` reads its settings.
//!
//! Every setting is a flag with a `WEFT_PROXY_*` environment twin (flags win).
//! clap only collects the raw strings; [`RunArgs::into_config`] parses them
//! all and reports every bad value at once, so an operator fixes a broken
//! manifest in one round trip instead of one per typo.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use weft_api::policy::inbound_policy::DefaultAccess;

pub const ENV_INBOUND_ADDR: &str = "WEFT_PROXY_INBOUND_ADDR";
pub const ENV_OUTBOUND_ADDR: &str = "WEFT_PROXY_OUTBOUND_ADDR";
pub const ENV_ADMIN_ADDR: &str = "WEFT_PROXY_ADMIN_ADDR";
pub const ENV_TAP_ADDR: &str = "WEFT_PROXY_TAP_ADDR";
pub const ENV_INBOUND_DETECT_TIMEOUT: &str = "WEFT_PROXY_INBOUND_DETECT_TIMEOUT";
pub const ENV_OUTBOUND_DETECT_TIMEOUT: &str = "WEFT_PROXY_OUTBOUND_DETECT_TIMEOUT";
pub const ENV_INBOUND_OPAQUE_PORTS: &str = "WEFT_PROXY_INBOUND_OPAQUE_PORTS";
pub const ENV_OUTBOUND_OPAQUE_PORTS: &str = "WEFT_PROXY_OUTBOUND_OPAQUE_PORTS";
pub const ENV_MAX_HEADER_BYTES: &str = "WEFT_PROXY_MAX_HEADER_BYTES";
pub const ENV_HEADER_READ_TIMEOUT: &str = "WEFT_PROXY_HEADER_READ_TIMEOUT";
pub const ENV_KEEP_ALIVE_TIMEOUT: &str = "WEFT_PROXY_KEEP_ALIVE_TIMEOUT";
pub const ENV_CONNECT_TIMEOUT: &str = "WEFT_PROXY_CONNECT_TIMEOUT";
pub const ENV_REQUEST_TIMEOUT: &str = "WEFT_PROXY_REQUEST_TIMEOUT";
pub const ENV_TCP_IDLE_TIMEOUT: &str = "WEFT_PROXY_TCP_IDLE_TIMEOUT";
pub const ENV_POOL_IDLE_TIMEOUT: &str = "WEFT_PROXY_POOL_IDLE_TIMEOUT";
pub const ENV_MAX_CONNECTIONS: &str = "WEFT_PROXY_MAX_CONNECTIONS";
pub const ENV_DRAIN_TIMEOUT: &str = "WEFT_PROXY_DRAIN_TIMEOUT";
pub const ENV_WORKER_THREADS: &str = "WEFT_PROXY_WORKER_THREADS";
pub const ENV_LOG: &str = "WEFT_PROXY_LOG";
pub const ENV_CONTROL_PLANE: &str = "WEFT_PROXY_CONTROL_PLANE";
pub const ENV_DISCOVERY_TIMEOUT: &str = "WEFT_PROXY_DISCOVERY_TIMEOUT";
pub const ENV_POLICY_TIMEOUT: &str = "WEFT_PROXY_POLICY_TIMEOUT";
pub const ENV_DEFAULT_INBOUND_POLICY: &str = "WEFT_PROXY_DEFAULT_INBOUND_POLICY";
pub const ENV_PROXY_ID: &str = "WEFT_PROXY_ID";
pub const ENV_NAMESPACE: &str = "WEFT_PROXY_NAMESPACE";
pub const ENV_WORKLOAD_NAME: &str = "WEFT_PROXY_WORKLOAD_NAME";
pub const ENV_POD_NAME: &str = "WEFT_PROXY_POD_NAME";
pub const ENV_SERVICE_ACCOUNT: &str = "WEFT_PROXY_SERVICE_ACCOUNT";
pub const ENV_WORKLOAD_LABELS: &str = "WEFT_PROXY_WORKLOAD_LABELS";
pub const ENV_WORKLOAD_ADDRESS: &str = "WEFT_PROXY_WORKLOAD_ADDRESS";
pub const ENV_WORKLOAD_PORTS: &str = "WEFT_PROXY_WORKLOAD_PORTS";
pub const ENV_DEREGISTER_GRACE: &str = "WEFT_PROXY_DEREGISTER_GRACE";
pub const ENV_IDENTITY_TOKEN_FILE: &str = "WEFT_PROXY_IDENTITY_TOKEN_FILE";
pub const ENV_TRUST_ANCHORS: &str = "WEFT_PROXY_TRUST_ANCHORS";
pub const ENV_TRUST_ANCHORS_PEM: &str = "WEFT_PROXY_TRUST_ANCHORS_PEM";
pub const ENV_TRUST_DOMAIN: &str = "WEFT_PROXY_TRUST_DOMAIN";
pub const ENV_CONTROL_PLANE_NAME: &str = "WEFT_PROXY_CONTROL_PLANE_NAME";
pub const ENV_EXPLICIT_PROXY: &str = "WEFT_PROXY_EXPLICIT_PROXY";

/// Ports whose protocols are known not to be HTTP, several of them
/// server-speaks-first (SMTP, MySQL): detection is skipped for them so that
/// they are never stalled by the detection timeout. Linkerd's default list.
pub const DEFAULT_OPAQUE_PORTS: &str = "25,587,3306,4444,5432,6379,9300,11211";

/// Smallest header limit hyper's HTTP/1 parser accepts.
const MIN_HEADER_BYTES: usize = 8 * 1024;

/// Flags of `weft-proxy run`. Each is also read from its `WEFT_PROXY_*`
/// variable; the value is validated by [`RunArgs::into_config`].
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Inbound listener: TCP redirected from PREROUTING arrives here.
    #[arg(long, env = ENV_INBOUND_ADDR, default_value = "0.0.0.0:4143")]
    pub inbound_addr: String,
    /// Outbound listener: the app's TCP redirected from OUTPUT arrives here.
    #[arg(long, env = ENV_OUTBOUND_ADDR, default_value = "127.0.0.1:4140")]
    pub outbound_addr: String,
    /// Serve connections that reach the outbound listener without being
    /// redirected by iptables as an explicit HTTP/1.1 forward proxy (what an
    /// app's `HTTP_PROXY` points at): absolute-form requests
    /// (`GET http://web/ HTTP/1.1`) and `CONNECT host:port` tunnels, their
    /// host resolved through discovery (service names included), else the
    /// system resolver. Off (the default): such connections are refused,
    /// since forwarding them would loop. `true`/`false`; the bare flag means
    /// `true`. Redirected connections are served transparently either way.
    #[arg(
        long,
        env = ENV_EXPLICIT_PROXY,
        default_value = "false",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub explicit_proxy: String,
    /// Admin listener (/ready, /live, /metrics, /shutdown). Keep it on loopback.
    #[arg(long, env = ENV_ADMIN_ADDR, default_value = "127.0.0.1:4191")]
    pub admin_addr: String,
    /// Tap listener: gRPC over mTLS (`weft.tap.v1.Tap`), only the control
    /// plane's identity (`spiffe://TRUST_DOMAIN/ns/NS/sa/weft-control`, NS
    /// from --control-plane-name `weft-control.NS.svc`) may call it. Started
    /// only with a mesh identity; `off` disables it.
    #[arg(long, env = ENV_TAP_ADDR, default_value = "0.0.0.0:4190")]
    pub tap_addr: String,
    /// How long inbound protocol detection waits for the client's first bytes
    /// before treating the connection as opaque TCP.
    #[arg(long, env = ENV_INBOUND_DETECT_TIMEOUT, default_value = "1s")]
    pub inbound_detect_timeout: String,
    /// Same as --inbound-detect-timeout, for outbound connections.
    #[arg(long, env = ENV_OUTBOUND_DETECT_TIMEOUT, default_value = "1s")]
    pub outbound_detect_timeout: String,
    /// Inbound ports (comma list, ranges like 4000-4010) that skip detection
    /// and are spliced as opaque TCP.
    #[arg(long, env = ENV_INBOUND_OPAQUE_PORTS, default_value = DEFAULT_OPAQUE_PORTS)]
    pub inbound_opaque_ports: String,
    /// Outbound original-destination ports that skip detection.
    #[arg(long, env = ENV_OUTBOUND_OPAQUE_PORTS, default_value = DEFAULT_OPAQUE_PORTS)]
    pub outbound_opaque_ports: String,
    /// Largest HTTP request header section accepted, in bytes; larger → 431.
    #[arg(long, env = ENV_MAX_HEADER_BYTES, default_value = "65536")]
    pub max_header_bytes: String,
    /// Time a client has to send a complete HTTP/1 request head (defeats
    /// slow-loris clients); the connection is closed after it.
    #[arg(long, env = ENV_HEADER_READ_TIMEOUT, default_value = "10s")]
    pub header_read_timeout: String,
    /// How long a downstream connection (HTTP/1 or HTTP/2) may stay with no
    /// request in flight before the proxy closes it (HTTP/2: GOAWAY).
    /// Longer than the pool idle timeout, so that between two proxies the
    /// client side lets go first.
    #[arg(long, env = ENV_KEEP_ALIVE_TIMEOUT, default_value = "120s")]
    pub keep_alive_timeout: String,
    /// Time allowed to open a TCP connection upstream; past it → 504.
    #[arg(long, env = ENV_CONNECT_TIMEOUT, default_value = "1s")]
    pub connect_timeout: String,
    /// Time allowed for the upstream's response headers; past it → 504.
    /// `0s` (the default) waits without limit.
    #[arg(long, env = ENV_REQUEST_TIMEOUT, default_value = "0s")]
    pub request_timeout: String,
    /// An opaque TCP connection with no bytes in either direction for this
    /// long is closed.
    #[arg(long, env = ENV_TCP_IDLE_TIMEOUT, default_value = "1h")]
    pub tcp_idle_timeout: String,
    /// A pooled upstream HTTP connection unused for this long is closed (an
    /// HTTP/2 one that no new request took, once its last stream ends).
    #[arg(long, env = ENV_POOL_IDLE_TIMEOUT, default_value = "90s")]
    pub pool_idle_timeout: String,
    /// Most downstream connections served at once (inbound and outbound
    /// together); further ones wait in the kernel's accept queue.
    #[arg(long, env = ENV_MAX_CONNECTIONS, default_value = "10000")]
    pub max_connections: String,
    /// On SIGTERM or /shutdown, how long in-flight work may finish.
    #[arg(long, env = ENV_DRAIN_TIMEOUT, default_value = "30s")]
    pub drain_timeout: String,
    /// Runtime worker threads. A sidecar shares the pod's CPU; 1 is enough
    /// for most workloads.
    #[arg(long, env = ENV_WORKER_THREADS, default_value = "1")]
    pub worker_threads: String,
    /// Log filter in tracing's EnvFilter syntax (e.g. `info,weft_proxy=debug`).
    #[arg(long = "log", env = ENV_LOG, default_value = "info")]
    pub log: String,
    /// Control plane gRPC address, e.g. `http://198.18.0.1:8090`. Empty: no
    /// control plane; outbound traffic goes to its original destination.
    #[arg(long, env = ENV_CONTROL_PLANE, default_value = "")]
    pub control_plane: String,
    /// How long the first connection to a destination waits for the control
    /// plane's answer before being forwarded to the original destination.
    #[arg(long, env = ENV_DISCOVERY_TIMEOUT, default_value = "1s")]
    pub discovery_timeout: String,
    /// How long the first request (or connection) to a mesh service waits
    /// for the service's traffic policy once discovery has answered. Past
    /// it the request fails with 503 (`weft-proxy-error: policy-unavailable`)
    /// rather than run without its routes, splits and timeouts.
    #[arg(long, env = ENV_POLICY_TIMEOUT, default_value = "3s")]
    pub policy_timeout: String,
    /// Who may reach this workload's ports while a port's own policy has not
    /// arrived from the control plane (it is asked for on the port's first
    /// connection and waited for up to the discovery timeout):
    /// `allow-all`, `allow-authenticated`, `allow-same-namespace` or `deny`.
    /// Set it to the mesh's default access (`weft up` and the injector do);
    /// every request is decided again once the port's policy arrives.
    #[arg(long, env = ENV_DEFAULT_INBOUND_POLICY, default_value = "allow-all")]
    pub default_inbound_policy: String,
    /// This proxy's name in the control plane's logs (default: the workload
    /// name, else `weft-proxy-<pid>`).
    #[arg(long, env = ENV_PROXY_ID, default_value = "")]
    pub proxy_id: String,
    /// The workload's namespace; bare service names resolve in it.
    #[arg(long, env = ENV_NAMESPACE, default_value = "default")]
    pub namespace: String,
    /// Register the workload under this name (universal mode). Empty: do not
    /// register (Kubernetes discovers pods itself).
    #[arg(long, env = ENV_WORKLOAD_NAME, default_value = "")]
    pub workload_name: String,
    /// Kubernetes: the Pod this proxy serves (in --namespace). The control
    /// plane reads the Pod from the API server, so nothing is registered;
    /// inbound policy is asked for as this Pod's. Excludes --workload-name.
    #[arg(long, env = ENV_POD_NAME, default_value = "")]
    pub pod_name: String,
    /// The workload's service account (its mesh identity).
    #[arg(long, env = ENV_SERVICE_ACCOUNT, default_value = "default")]
    pub service_account: String,
    /// The workload's labels, `k=v,k2=v2`, matched by service selectors.
    #[arg(long, env = ENV_WORKLOAD_LABELS, default_value = "")]
    pub workload_labels: String,
    /// The workload's IP address as other pods reach it.
    #[arg(long, env = ENV_WORKLOAD_ADDRESS, default_value = "")]
    pub workload_address: String,
    /// The workload's ports (comma list); it is registered once one of them
    /// accepts connections: on the workload address when that is a loopback
    /// address (the local mesh's loopback mode, 127.N.x.y), else on
    /// 127.0.0.1, where the inbound proxy reaches the app.
    #[arg(long, env = ENV_WORKLOAD_PORTS, default_value = "")]
    pub workload_ports: String,
    /// At shutdown, after deregistering, how long the proxy keeps accepting
    /// while the removal reaches the other proxies, so that none of them
    /// picks this endpoint after its listeners close.
    #[arg(long, env = ENV_DEREGISTER_GRACE, default_value = "500ms")]
    pub deregister_grace: String,
    /// File holding the bootstrap token that proves this workload's
    /// identity to the control plane's CA. Set: mTLS on (the proxy gets a
    /// certificate before it reports ready). Empty: no mesh identity.
    #[arg(long, env = ENV_IDENTITY_TOKEN_FILE, default_value = "")]
    pub identity_token_file: String,
    /// PEM bundle of the mesh's trust anchors, pinned for the control
    /// plane's TLS (`https://` control plane URLs need it).
    #[arg(long, env = ENV_TRUST_ANCHORS, default_value = "")]
    pub trust_anchors: String,
    /// The same bundle as text, for where a file is awkward (the injector
    /// puts it in the proxy's environment, as Linkerd does). Excludes
    /// --trust-anchors.
    #[arg(long, env = ENV_TRUST_ANCHORS_PEM, default_value = "", hide_env_values = true, allow_hyphen_values = true)]
    pub trust_anchors_pem: String,
    /// The mesh's trust domain: identities are spiffe://DOMAIN/ns/NS/sa/SA.
    #[arg(long, env = ENV_TRUST_DOMAIN, default_value = "cluster.local")]
    pub trust_domain: String,
    /// The name the control plane's TLS certificate is checked against.
    #[arg(long, env = ENV_CONTROL_PLANE_NAME, default_value = "weft-control.weft-system.svc")]
    pub control_plane_name: String,
}

/// The validated configuration of a running proxy.
#[derive(Debug, Clone)]
pub struct Config {
    pub inbound_addr: SocketAddr,
    pub outbound_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// `None`: no tap listener.
    pub tap_addr: Option<SocketAddr>,
    pub inbound: DirectionConfig,
    pub outbound: DirectionConfig,
    pub http: HttpConfig,
    pub connect_timeout: Duration,
    pub tcp_idle_timeout: Duration,
    pub max_connections: usize,
    pub drain_timeout: Duration,
    pub worker_threads: usize,
    pub log_filter: String,
    pub control: Option<ControlConfig>,
    /// Serve unredirected outbound connections as an explicit HTTP proxy.
    pub explicit_proxy: bool,
}

/// How to reach the control plane, and what to register with it.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    pub url: String,
    pub discovery_timeout: Duration,
    /// How long a first request waits for its service's policy.
    pub policy_timeout: Duration,
    /// The inbound decision while a port's policy is unknown.
    pub default_inbound_policy: DefaultAccess,
    pub deregister_grace: Duration,
    /// PEM of the trust anchors pinned for the control plane's TLS.
    pub trust_anchors_pem: Option<String>,
    pub control_plane_name: String,
    /// mTLS: this workload's identity and its bootstrap token.
    pub identity: Option<(crate::identity::SpiffeId, String)>,
    /// The file the bootstrap token came from: read again whenever a
    /// renewal token is refused (a projected service-account token is
    /// rotated in place by the kubelet, and any replica can check it).
    pub identity_token_file: Option<std::path::PathBuf>,
    pub proxy_id: String,
    pub namespace: String,
    pub workload: Option<crate::control::registry::WorkloadConfig>,
    /// The name inbound policy is asked for (`name.namespace` is sent): the
    /// registered workload's, or the Pod's on Kubernetes.
    pub workload_name: Option<String>,
}

/// Settings that differ between the inbound and outbound sides.
#[derive(Debug, Clone)]
pub struct DirectionConfig {
    pub detect_timeout: Duration,
    pub opaque_ports: PortSet,
}

/// HTTP server and client settings shared by both directions.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub max_header_bytes: usize,
    pub header_read_timeout: Duration,
    /// Idle time between HTTP/1 requests before a downstream connection is
    /// closed.
    pub keep_alive_timeout: Duration,
    /// `None`: no limit.
    pub request_timeout: Option<Duration>,
    pub pool_idle_timeout: Duration,
}

/// A set of TCP ports, parsed from `80,443,4000-4010`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortSet(BTreeSet<u16>);

impl PortSet {
    pub fn contains(&self, port: u16) -> bool {
        self.0.contains(&port)
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        let mut set = BTreeSet::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let parse = |p: &str| {
                p.trim().parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| format!("{p:?} is not a port (1-65535)"))
            };
            match item.split_once('-') {
                Some((lo, hi)) => {
                    let (lo, hi) = (parse(lo)?, parse(hi)?);
                    if lo > hi {
                        return Err(format!("range {item:?} is reversed"));
                    }
                    set.extend(lo..=hi);
                }
                None => {
                    set.insert(parse(item)?);
                }
            }
        }
        Ok(Self(set))
    }
}

/// Every invalid setting, one per line.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<String>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "weft-proxy: invalid configuration:")?;
        for e in &self.0 {
            writeln!(f, "  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Collects parse errors so that all of them are reported together.
struct Parser {
    errors: Vec<String>,
}

impl Parser {
    fn field<T>(
        &mut self,
        flag: &str,
        env: &str,
        raw: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        match parse(raw.trim()) {
            Ok(v) => Some(v),
            Err(e) => {
                self.errors.push(format!("--{flag} / {env} = {raw:?}: {e}"));
                None
            }
        }
    }
}

fn addr(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| "expected IP:PORT, e.g. 127.0.0.1:4191".to_string())
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (expected e.g. 500ms, 1s, 2m)"))
}

/// The mesh's default-access words, as the control plane's `--default-access` spells them.
fn default_access(s: &str) -> Result<DefaultAccess, String> {
    match s.trim() {
        "allow-all" => Ok(DefaultAccess::AllowAll),
        "allow-authenticated" => Ok(DefaultAccess::AllowAuthenticated),
        "allow-same-namespace" => Ok(DefaultAccess::AllowSameNamespace),
        "deny" => Ok(DefaultAccess::Deny),
        other => Err(format!("{other:?}: expected allow-all, allow-authenticated, allow-same-namespace or deny")),
    }
}

fn positive_duration(s: &str) -> Result<Duration, String> {
    let d = duration(s)?;
    if d.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(d)
}

fn boolean(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" | "" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

fn count(min: usize, max: usize) -> impl Fn(&str) -> Result<usize, String> {
    move |s| match s.parse::<usize>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("expected a whole number from {min} to {max}")),
    }
}

impl RunArgs {
    /// Parses and validates every setting, reporting all bad ones at once.
    pub fn into_config(self) -> Result<Config, ConfigErrors> {
        let mut p = Parser { errors: Vec::new() };
        macro_rules! f {
            ($field:ident, $env:expr, $parse:expr) => {
                p.field(&stringify!($field).replace('_', "-"), $env, &self.$field, $parse)
            };
        }
        let inbound_addr = f!(inbound_addr, ENV_INBOUND_ADDR, addr);
        let outbound_addr = f!(outbound_addr, ENV_OUTBOUND_ADDR, addr);
        let admin_addr = f!(admin_addr, ENV_ADMIN_ADDR, addr);
        let tap_addr = f!(tap_addr, ENV_TAP_ADDR, |s: &str| match s {
            "off" => Ok(None),
            s => addr(s).map(Some),
        });
        let in_detect = f!(inbound_detect_timeout, ENV_INBOUND_DETECT_TIMEOUT, positive_duration);
        let out_detect = f!(outbound_detect_timeout, ENV_OUTBOUND_DETECT_TIMEOUT, positive_duration);
        let in_opaque = f!(inbound_opaque_ports, ENV_INBOUND_OPAQUE_PORTS, PortSet::parse);
        let out_opaque = f!(outbound_opaque_ports, ENV_OUTBOUND_OPAQUE_PORTS, PortSet::parse);
        let max_header_bytes = f!(max_header_bytes, ENV_MAX_HEADER_BYTES, count(MIN_HEADER_BYTES, 16 << 20));
        let header_read_timeout = f!(header_read_timeout, ENV_HEADER_READ_TIMEOUT, positive_duration);
        let keep_alive_timeout = f!(keep_alive_timeout, ENV_KEEP_ALIVE_TIMEOUT, positive_duration);
        let connect_timeout = f!(connect_timeout, ENV_CONNECT_TIMEOUT, positive_duration);
        let request_timeout = f!(request_timeout, ENV_REQUEST_TIMEOUT, duration);
        let tcp_idle_timeout = f!(tcp_idle_timeout, ENV_TCP_IDLE_TIMEOUT, positive_duration);
        let pool_idle_timeout = f!(pool_idle_timeout, ENV_POOL_IDLE_TIMEOUT, positive_duration);
        let max_connections = f!(max_connections, ENV_MAX_CONNECTIONS, count(1, 1 << 20));
        let drain_timeout = f!(drain_timeout, ENV_DRAIN_TIMEOUT, duration);
        let worker_threads = f!(worker_threads, ENV_WORKER_THREADS, count(1, 64));
        let explicit_proxy = f!(explicit_proxy, ENV_EXPLICIT_PROXY, boolean);
        let log =
            f!(log, ENV_LOG, |s| { crate::telemetry::log_filter(s).map(|_| s.to_string()).map_err(|e| e.to_string()) });

        let control = self.control_config(&mut p);

        if let (Some(i), Some(o), Some(a)) = (inbound_addr, outbound_addr, admin_addr)
            && (i.port() == o.port() || i.port() == a.port() || o.port() == a.port())
        {
            p.errors.push(format!("inbound ({i}), outbound ({o}) and admin ({a}) listeners need distinct ports"));
        }
        if !p.errors.is_empty() {
            return Err(ConfigErrors(p.errors));
        }
        // All `None`s were recorded as errors above, so these are present.
        fn some<T>(o: Option<T>) -> Result<T, ConfigErrors> {
            o.ok_or_else(|| ConfigErrors(vec!["internal: missing value".into()]))
        }
        Ok(Config {
            inbound_addr: some(inbound_addr)?,
            outbound_addr: some(outbound_addr)?,
            admin_addr: some(admin_addr)?,
            tap_addr: some(tap_addr)?,
            inbound: DirectionConfig { detect_timeout: some(in_detect)?, opaque_ports: some(in_opaque)? },
            outbound: DirectionConfig { detect_timeout: some(out_detect)?, opaque_ports: some(out_opaque)? },
            http: HttpConfig {
                max_header_bytes: some(max_header_bytes)?,
                header_read_timeout: some(header_read_timeout)?,
                keep_alive_timeout: some(keep_alive_timeout)?,
                request_timeout: Some(some(request_timeout)?).filter(|d| !d.is_zero()),
                pool_idle_timeout: some(pool_idle_timeout)?,
            },
            connect_timeout: some(connect_timeout)?,
            tcp_idle_timeout: some(tcp_idle_timeout)?,
            max_connections: some(max_connections)?,
            drain_timeout: some(drain_timeout)?,
            worker_threads: some(worker_threads)?,
            log_filter: some(log)?,
            control,
            explicit_proxy: some(explicit_proxy)?,
        })
    }

    /// The control-plane settings; `None` without `--control-plane`.
    fn control_config(&self, p: &mut Parser) -> Option<ControlConfig> {
        let timeout = p.field("discovery-timeout", ENV_DISCOVERY_TIMEOUT, &self.discovery_timeout, positive_duration);
        let policy_timeout = p.field("policy-timeout", ENV_POLICY_TIMEOUT, &self.policy_timeout, positive_duration);
        let default_inbound_policy =
            p.field("default-inbound-policy", ENV_DEFAULT_INBOUND_POLICY, &self.default_inbound_policy, default_access);
        let grace = p.field("deregister-grace", ENV_DEREGISTER_GRACE, &self.deregister_grace, duration);
        let url = self.control_plane.trim();
        let has_workload = !self.workload_name.trim().is_empty();
        let pod_name = self.pod_name.trim();
        if has_workload && !pod_name.is_empty() {
            p.errors.push(
                "--workload-name and --pod-name exclude each other: register a workload (universal mode) or serve a Kubernetes Pod".into(),
            );
        }
        if url.is_empty() {
            if has_workload {
                p.errors.push("--workload-name needs --control-plane to register with".into());
            }
            if !pod_name.is_empty() {
                p.errors.push("--pod-name needs --control-plane (it answers for the Pod)".into());
            }
            if !self.identity_token_file.trim().is_empty() {
                p.errors.push("--identity-token-file needs --control-plane (its CA issues the certificate)".into());
            }
            return None;
        }
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            p.errors.push(format!(
                "--control-plane / {ENV_CONTROL_PLANE} = {url:?}: expected a URL like http://198.18.0.1:8090"
            ));
        }
        let workload = if has_workload {
            let labels = p.field("workload-labels", ENV_WORKLOAD_LABELS, &self.workload_labels, labels);
            let address = p.field("workload-address", ENV_WORKLOAD_ADDRESS, &self.workload_address, |s| {
                s.parse::<std::net::IpAddr>().map_err(|_| "expected the workload's IP address".to_string())
            });
            let ports = p.field("workload-ports", ENV_WORKLOAD_PORTS, &self.workload_ports, |s| {
                let set = PortSet::parse(s)?;
                if set.0.is_empty() {
                    return Err("at least one port is needed".into());
                }
                Ok(set.0.into_iter().collect::<Vec<_>>())
            });
            match (labels, address, ports) {
                (Some(labels), Some(address), Some(ports)) => Some(crate::control::registry::WorkloadConfig {
                    name: self.workload_name.trim().to_string(),
                    service_account: self.service_account.trim().to_string(),
                    labels,
                    address,
                    ports,
                }),
                _ => None,
            }
        } else {
            None
        };
        let inline = self.trust_anchors_pem.trim();
        if !inline.is_empty() && !self.trust_anchors.trim().is_empty() {
            p.errors.push("--trust-anchors and --trust-anchors-pem exclude each other: give the bundle once".into());
        }
        let trust_anchors_pem = match self.trust_anchors.trim() {
            "" if !inline.is_empty() => {
                if inline.contains("BEGIN CERTIFICATE") {
                    Some(format!("{inline}\n"))
                } else {
                    p.errors.push(format!("--trust-anchors-pem ({ENV_TRUST_ANCHORS_PEM}): no PEM certificate in it"));
                    None
                }
            }
            "" => {
                if url.starts_with("https://") {
                    p.errors.push(format!(
                        "--control-plane {url} uses TLS: --trust-anchors must name the PEM bundle to pin (or --trust-anchors-pem give it)"
                    ));
                }
                None
            }
            path => match std::fs::read_to_string(path) {
                Ok(pem) if pem.contains("BEGIN CERTIFICATE") => Some(pem),
                Ok(_) => {
                    p.errors.push(format!("--trust-anchors {path}: no PEM certificate in the file"));
                    None
                }
                Err(e) => {
                    p.errors.push(format!("--trust-anchors {path}: {e}"));
                    None
                }
            },
        };
        let identity = match self.identity_token_file.trim() {
            "" => None,
            path => {
                let token = match std::fs::read_to_string(path) {
                    Ok(t) if !t.trim().is_empty() => Some(t.trim().to_string()),
                    Ok(_) => {
                        p.errors.push(format!("--identity-token-file {path}: the file is empty"));
                        None
                    }
                    Err(e) => {
                        p.errors.push(format!("--identity-token-file {path}: {e}"));
                        None
                    }
                };
                let id = crate::identity::SpiffeId::new(
                    self.trust_domain.trim(),
                    self.namespace.trim(),
                    self.service_account.trim(),
                )
                .map_err(|e| p.errors.push(format!("--trust-domain/--namespace/--service-account: {e}")))
                .ok();
                id.zip(token)
            }
        };
        let workload_name = match (has_workload, pod_name) {
            (true, _) => Some(self.workload_name.trim().to_string()),
            (false, "") => None,
            (false, pod) => Some(pod.to_string()),
        };
        let proxy_id = match self.proxy_id.trim() {
            "" if workload_name.is_some() => {
                format!("{}.{}", workload_name.as_deref().unwrap_or_default(), self.namespace.trim())
            }
            "" => format!("weft-proxy-{}", std::process::id()),
            id => id.to_string(),
        };
        Some(ControlConfig {
            url: url.to_string(),
            discovery_timeout: timeout?,
            policy_timeout: policy_timeout?,
            default_inbound_policy: default_inbound_policy?,
            deregister_grace: grace?,
            trust_anchors_pem,
            control_plane_name: self.control_plane_name.trim().to_string(),
            identity_token_file: identity.as_ref().map(|_| self.identity_token_file.trim().into()),
            identity,
            proxy_id,
            namespace: self.namespace.trim().to_string(),
            workload,
            workload_name,
        })
    }
}

/// `k=v,k2=v2` → map; keys must be non-empty.
fn labels(s: &str) -> Result<std::collections::BTreeMap<String, String>, String> {
    let mut map = std::collections::BTreeMap::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        match item.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                map.insert(k.trim().to_string(), v.trim().to_string());
            }
            _ => return Err(format!("{item:?} is not key=value")),
        }
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn parse(args: &[&str]) -> Result<Config, ConfigErrors> {
        let mut argv = vec!["weft-proxy"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).expect("clap accepts strings").run.into_config()
    }

    #[test]
    fn defaults_follow_the_design_ports() {
        let c = parse(&[]).expect("defaults are valid");
        assert_eq!(c.inbound_addr, "0.0.0.0:4143".parse().expect("addr"));
        assert_eq!(c.outbound_addr, "127.0.0.1:4140".parse().expect("addr"));
        assert_eq!(c.admin_addr, "127.0.0.1:4191".parse().expect("addr"));
        assert_eq!(c.inbound.detect_timeout, Duration::from_secs(1));
        assert_eq!(c.http.max_header_bytes, 65536);
        assert_eq!(c.http.request_timeout, None);
        assert!(c.outbound.opaque_ports.contains(3306));
        assert!(!c.outbound.opaque_ports.contains(80));
        assert_eq!(c.drain_timeout, Duration::from_secs(30));
    }

    #[test]
    fn every_bad_value_is_reported_at_once() {
        let err = parse(&[
            "--admin-addr",
            "localhost",
            "--inbound-detect-timeout",
            "soon",
            "--max-header-bytes",
            "12",
            "--outbound-opaque-ports",
            "80,70000",
            "--max-connections",
            "0",
        ])
        .expect_err("invalid");
        let text = err.to_string();
        assert_eq!(err.0.len(), 5, "{text}");
        for needle in [
            "--admin-addr",
            "--inbound-detect-timeout",
            "--max-header-bytes",
            "--outbound-opaque-ports",
            "--max-connections",
        ] {
            assert!(text.contains(needle), "{needle} missing from {text}");
        }
    }

    #[test]
    fn control_plane_and_workload_flags() {
        let c = parse(&[
            "--control-plane",
            "http://198.18.0.1:8090",
            "--workload-name",
            "web-0",
            "--namespace",
            "shop",
            "--workload-labels",
            "app=web, version=v1",
            "--workload-address",
            "198.18.1.2",
            "--workload-ports",
            "8080,9090",
        ])
        .expect("valid");
        let control = c.control.expect("control");
        assert_eq!(control.proxy_id, "web-0.shop");
        assert_eq!(control.workload_name.as_deref(), Some("web-0"));
        let w = control.workload.expect("workload");
        assert_eq!(w.labels.get("version").map(String::as_str), Some("v1"));
        assert_eq!(w.ports, vec![8080, 9090]);

        let err = parse(&["--workload-name", "web-0"]).expect_err("needs a control plane");
        assert!(err.0[0].contains("--control-plane"), "{err}");
        let err = parse(&[
            "--control-plane",
            "198.18.0.1:8090",
            "--workload-name",
            "w",
            "--workload-labels",
            "app",
            "--workload-address",
            "nowhere",
        ])
        .expect_err("bad");
        assert_eq!(err.0.len(), 4, "{err}");
    }

    #[test]
    fn a_kubernetes_pod_is_named_without_registering() {
        let c = parse(&["--control-plane", "http://127.0.0.1:8090", "--pod-name", "web-7f9c", "--namespace", "shop"])
            .expect("valid");
        let control = c.control.expect("control");
        assert_eq!(control.workload_name.as_deref(), Some("web-7f9c"));
        assert!(control.workload.is_none(), "nothing to register");
        assert_eq!(control.proxy_id, "web-7f9c.shop");
        // (args, the one error)
        let cases: &[(&[&str], &str)] = &[
            (&["--pod-name", "web-0"], "--pod-name needs --control-plane (it answers for the Pod)"),
            (
                &[
                    "--control-plane",
                    "http://127.0.0.1:8090",
                    "--pod-name",
                    "web-0",
                    "--workload-name",
                    "web-0",
                    "--workload-address",
                    "127.0.0.2",
                    "--workload-ports",
                    "80",
                ],
                "--workload-name and --pod-name exclude each other: register a workload (universal mode) or serve a Kubernetes Pod",
            ),
        ];
        for (args, want) in cases {
            let e = parse(args).expect_err("invalid");
            assert_eq!(e.0, [*want], "{args:?}");
        }
    }

    #[test]
    fn trust_anchors_as_a_file_or_as_text() {
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----";
        let c = parse(&["--control-plane", "https://127.0.0.1:8090", "--trust-anchors-pem", pem]).expect("valid");
        assert_eq!(c.control.expect("control").trust_anchors_pem.as_deref(), Some(format!("{pem}\n").as_str()));
        // (args, the one error)
        let cases: &[(&[&str], &str)] = &[
            (
                &["--control-plane", "https://127.0.0.1:8090", "--trust-anchors-pem", "hello"],
                "--trust-anchors-pem (WEFT_PROXY_TRUST_ANCHORS_PEM): no PEM certificate in it",
            ),
            (
                &["--control-plane", "https://127.0.0.1:8090", "--trust-anchors-pem", pem, "--trust-anchors", "/a.pem"],
                "--trust-anchors and --trust-anchors-pem exclude each other: give the bundle once",
            ),
        ];
        for (args, want) in cases {
            let e = parse(args).expect_err("invalid");
            assert!(e.0.iter().any(|m| m == want), "{args:?}: {e:?}");
        }
    }

    #[test]
    fn explicit_proxy_flag_and_env_values() {
        assert!(!parse(&[]).expect("default").explicit_proxy);
        assert!(parse(&["--explicit-proxy"]).expect("bare flag").explicit_proxy);
        assert!(parse(&["--explicit-proxy=true"]).expect("true").explicit_proxy);
        assert!(!parse(&["--explicit-proxy=off"]).expect("off").explicit_proxy);
        let err = parse(&["--explicit-proxy=maybe", "--max-connections", "0"]).expect_err("bad");
        assert_eq!(err.0.len(), 2, "{err}");
        assert!(err.0.iter().any(|e| e.contains("--explicit-proxy / WEFT_PROXY_EXPLICIT_PROXY")), "{err}");
    }

    #[test]
    fn listener_ports_must_differ() {
        let err = parse(&["--admin-addr", "127.0.0.1:4140"]).expect_err("clash");
        assert_eq!(err.0.len(), 1);
        assert!(err.0[0].contains("distinct ports"));
    }

    #[test]
    fn request_timeout_zero_means_none() {
        let c = parse(&["--request-timeout", "250ms"]).expect("valid");
        assert_eq!(c.http.request_timeout, Some(Duration::from_millis(250)));
    }

    #[test]
    fn port_sets_parse_lists_and_ranges() {
        let cases: &[(&str, Result<&[u16], ()>)] = &[
            ("", Ok(&[])),
            ("80", Ok(&[80])),
            ("80, 443", Ok(&[80, 443])),
            ("4000-4002", Ok(&[4000, 4001, 4002])),
            ("0", Err(())),
            ("10-5", Err(())),
            ("http", Err(())),
            ("1-2-3", Err(())),
        ];
        for (input, want) in cases {
            let got = PortSet::parse(input);
            match want {
                Ok(ports) => {
                    let set = got.unwrap_or_else(|e| panic!("{input:?}: {e}"));
                    assert_eq!(set.0.iter().copied().collect::<Vec<_>>(), *ports, "{input:?}");
                }
                Err(()) => assert!(got.is_err(), "{input:?} should fail"),
            }
        }
    }

    #[test]
    fn policy_waits_and_the_inbound_default_parse_and_are_checked_with_the_rest() {
        let url = ["--control-plane", "http://198.18.0.1:8090"];
        let c = parse(&url).expect("defaults are valid");
        let control = c.control.expect("a control plane");
        assert_eq!(control.policy_timeout, Duration::from_secs(3));
        assert_eq!(control.default_inbound_policy, DefaultAccess::AllowAll);
        let cases = [
            ("allow-all", DefaultAccess::AllowAll),
            ("allow-authenticated", DefaultAccess::AllowAuthenticated),
            ("allow-same-namespace", DefaultAccess::AllowSameNamespace),
            ("deny", DefaultAccess::Deny),
        ];
        for (word, want) in cases {
            let c = parse(&[url[0], url[1], "--default-inbound-policy", word]).expect(word);
            assert_eq!(c.control.expect("control").default_inbound_policy, want, "{word}");
        }
        let err = parse(&[url[0], url[1], "--default-inbound-policy", "allow", "--policy-timeout", "0s"])
            .expect_err("both invalid");
        let text = err.to_string();
        assert_eq!(err.0.len(), 2, "{text}");
        assert!(text.contains("--default-inbound-policy") && text.contains("allow-same-namespace or deny"), "{text}");
        assert!(text.contains("--policy-timeout"), "{text}");
    }
}
