//! Settings: every flag, its `WEFT_CONTROL_*` environment twin, its
//! default, and the checks that run before anything starts (all problems
//! reported at once).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::source::registry::{MAX_TTL, MIN_TTL};

pub const ENV_GRPC_ADDR: &str = "WEFT_CONTROL_GRPC_ADDR";
pub const ENV_ADMIN_ADDR: &str = "WEFT_CONTROL_ADMIN_ADDR";
pub const ENV_SERVICES: &str = "WEFT_CONTROL_SERVICES";
pub const ENV_POLICY: &str = "WEFT_CONTROL_POLICY";
pub const ENV_LEASE_TTL: &str = "WEFT_CONTROL_LEASE_TTL";
pub const ENV_TRUST_DOMAIN: &str = "WEFT_CONTROL_TRUST_DOMAIN";
pub const ENV_RELOAD_INTERVAL: &str = "WEFT_CONTROL_RELOAD_INTERVAL";
pub const ENV_LOG: &str = "WEFT_CONTROL_LOG";

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

    /// Policy file or directory of `*.yaml` (HTTPRoute, TrafficPolicy,
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

    /// How often the services and policy files are checked for changes.
    #[arg(long, env = ENV_RELOAD_INTERVAL, default_value = "250ms", value_parser = humantime::parse_duration)]
    pub reload_interval: Duration,

    /// Log filter (tracing `EnvFilter` syntax), e.g. `info,weft_control=debug`.
    #[arg(long, env = ENV_LOG, default_value = "info")]
    pub log: String,
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
    pub reload_interval: Duration,
    pub log_filter: String,
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
            reload_interval: Duration::from_millis(250),
            log_filter: "info".into(),
        }
    }
}

/// Every problem found in the settings, one per line.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  {}", .0.join("\n  "))]
pub struct ConfigErrors(pub Vec<String>);

impl ControlArgs {
    pub fn into_config(self) -> Result<Config, ConfigErrors> {
        let config = Config {
            grpc_addr: self.grpc_addr,
            admin_addr: self.admin_addr,
            services: self.services,
            policy_paths: self.policy,
            lease_ttl: self.lease_ttl,
            trust_domain: self.trust_domain,
            reload_interval: self.reload_interval,
            log_filter: self.log,
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
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log_filter) {
            errors.push(format!("--log `{}`: {e}", self.log_filter));
        }
        if errors.is_empty() { Ok(()) } else { Err(ConfigErrors(errors)) }
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
}
