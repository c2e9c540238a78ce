//! What goes into an injected Pod, as flags: shared by the webhook
//! (`weft-injector`) and `weft inject`, so that a manifest injected by hand
//! and a Pod injected by the webhook get the same proxy from the same
//! defaults.

use std::path::PathBuf;

use crate::mutate::{ProxyDefaults, Settings, Sidecar};

pub const ENV_PROXY_IMAGE: &str = "WEFT_INJECTOR_PROXY_IMAGE";
pub const ENV_CONTROL_PLANE: &str = "WEFT_INJECTOR_CONTROL_PLANE";
pub const ENV_CONTROL_PLANE_NAME: &str = "WEFT_INJECTOR_CONTROL_PLANE_NAME";
pub const ENV_TRUST_DOMAIN: &str = "WEFT_INJECTOR_TRUST_DOMAIN";
pub const ENV_NAMESPACE: &str = "WEFT_INJECTOR_NAMESPACE";
pub const ENV_TRUST_ANCHORS: &str = "WEFT_INJECTOR_TRUST_ANCHORS";
pub const ENV_TOKEN_SECONDS: &str = "WEFT_INJECTOR_TOKEN_SECONDS";
pub const ENV_PROXY_LOG: &str = "WEFT_INJECTOR_PROXY_LOG";
pub const ENV_PROXY_CPU_REQUEST: &str = "WEFT_INJECTOR_PROXY_CPU_REQUEST";
pub const ENV_PROXY_MEMORY_REQUEST: &str = "WEFT_INJECTOR_PROXY_MEMORY_REQUEST";
pub const ENV_PROXY_MEMORY_LIMIT: &str = "WEFT_INJECTOR_PROXY_MEMORY_LIMIT";
pub const ENV_SIDECAR: &str = "WEFT_INJECTOR_SIDECAR";

/// The proxy's settings as flags (each with a `WEFT_INJECTOR_*` twin).
#[derive(clap::Args, Clone, Debug)]
pub struct ProxyArgs {
    /// The image holding weft-proxy (both `weft-init` and the sidecar run it).
    #[arg(long, env = ENV_PROXY_IMAGE, default_value = "ghcr.io/weft-mesh/weft-proxy:0.1.0")]
    pub proxy_image: String,
    /// The control plane's gRPC URL, as proxies reach it.
    #[arg(long, env = ENV_CONTROL_PLANE, default_value = "https://weft-control.weft-system.svc:8090")]
    pub control_plane: String,
    /// The name the control plane's certificate is checked against.
    #[arg(long, env = ENV_CONTROL_PLANE_NAME, default_value = "weft-control.weft-system.svc")]
    pub control_plane_name: String,
    /// The mesh's trust domain (identities are spiffe://TRUST_DOMAIN/ns/NS/sa/SA).
    #[arg(long, env = ENV_TRUST_DOMAIN, default_value = "cluster.local")]
    pub trust_domain: String,
    /// Weft's own namespace (never injected).
    #[arg(long, env = ENV_NAMESPACE, default_value = "weft-system")]
    pub namespace: String,
    /// The mesh's trust anchors (PEM bundle), handed to every proxy to pin
    /// for the control plane's TLS. Without it, proxies can reach only a
    /// plaintext control plane.
    #[arg(long, env = ENV_TRUST_ANCHORS)]
    pub trust_anchors: Option<PathBuf>,
    /// Lifetime of the projected identity token, seconds (600..=86400).
    #[arg(long, env = ENV_TOKEN_SECONDS, default_value_t = 3600, value_parser = clap::value_parser!(i64).range(600..=86400))]
    pub token_seconds: i64,
    /// The injected proxy's log filter (its WEFT_PROXY_LOG) [default: the proxy's own].
    #[arg(long, env = ENV_PROXY_LOG)]
    pub proxy_log: Option<String>,
    /// The injected proxy's CPU request, unless the Pod's
    /// config.weft.dev/proxy-cpu-request says otherwise (a Kubernetes quantity).
    #[arg(long, env = ENV_PROXY_CPU_REQUEST, default_value = "50m", value_parser = quantity)]
    pub proxy_cpu_request: String,
    /// Its memory request, unless config.weft.dev/proxy-memory-request.
    #[arg(long, env = ENV_PROXY_MEMORY_REQUEST, default_value = "32Mi", value_parser = quantity)]
    pub proxy_memory_request: String,
    /// Its memory limit, unless config.weft.dev/proxy-memory-limit.
    #[arg(long, env = ENV_PROXY_MEMORY_LIMIT, default_value = "256Mi", value_parser = quantity)]
    pub proxy_memory_limit: String,
    /// How the proxy runs beside the app: `native` (an init container with
    /// restartPolicy Always, Kubernetes >= 1.29), `classic` (the first
    /// container, holding the app back with a postStart hook), or `auto`
    /// (the webhook: native unless the API server is older than 1.29;
    /// `weft inject`, which asks no cluster: native).
    #[arg(long, env = ENV_SIDECAR, value_enum, default_value_t = SidecarFlag::Auto)]
    pub sidecar: SidecarFlag,
}

/// `--sidecar`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SidecarFlag {
    Auto,
    Native,
    Classic,
}

/// A Kubernetes quantity, checked now: a Pod patched with a bad one would
/// be refused by the API server.
fn quantity(s: &str) -> Result<String, String> {
    if crate::mutate::is_quantity(s) {
        Ok(s.to_owned())
    } else {
        Err(format!("{s:?} is not a Kubernetes quantity (such as 50m, 64Mi, 1)"))
    }
}

/// Why the flags cannot become [`Settings`].
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading the trust anchors {path}: {source}")]
    ReadAnchors { path: PathBuf, source: std::io::Error },
    #[error("{path}: no PEM certificate in it (--trust-anchors wants the mesh's CA bundle)")]
    NoCertificate { path: PathBuf },
}

impl ProxyArgs {
    /// The settings `mutate` takes, the trust anchors read from their file.
    /// The injected-version recorded on Pods is this crate's version, which
    /// is the workspace's: the webhook and `weft inject` write the same one.
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        let trust_anchors_pem = match &self.trust_anchors {
            Some(path) => {
                let pem = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::ReadAnchors { path: path.clone(), source })?;
                if !pem.contains("BEGIN CERTIFICATE") {
                    return Err(ConfigError::NoCertificate { path: path.clone() });
                }
                Some(pem)
            }
            None => None,
        };
        Ok(Settings {
            proxy_image: self.proxy_image.clone(),
            control_plane: self.control_plane.clone(),
            control_plane_name: self.control_plane_name.clone(),
            trust_domain: self.trust_domain.clone(),
            own_namespace: self.namespace.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            token_seconds: self.token_seconds,
            trust_anchors_pem,
            proxy: ProxyDefaults {
                cpu_request: self.proxy_cpu_request.clone(),
                memory_request: self.proxy_memory_request.clone(),
                memory_limit: self.proxy_memory_limit.clone(),
                log: self.proxy_log.clone(),
            },
            // `auto` is resolved by the webhook, which can ask the API server.
            sidecar: match self.sidecar {
                SidecarFlag::Classic => Sidecar::Classic,
                SidecarFlag::Auto | SidecarFlag::Native => Sidecar::Native,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(clap::Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        proxy: ProxyArgs,
    }

    #[test]
    fn defaults_and_bad_anchors() {
        let dir = std::env::temp_dir().join(format!("weft-injector-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        let not_pem = dir.join("not.pem");
        std::fs::write(&not_pem, "hello").expect("writing");
        let pem = dir.join("ca.pem");
        std::fs::write(&pem, "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").expect("writing");

        let s = Cli::parse_from(["x"]).proxy.settings().expect("defaults are valid");
        assert_eq!(s.proxy_image, "ghcr.io/weft-mesh/weft-proxy:0.1.0");
        assert_eq!(s.own_namespace, "weft-system");
        assert_eq!(s.token_seconds, 3600);
        assert_eq!(s.trust_anchors_pem, None);
        assert_eq!(s.version, env!("CARGO_PKG_VERSION"));

        let with = |path: &std::path::Path| {
            Cli::parse_from(["x", "--trust-anchors", &path.display().to_string()]).proxy.settings()
        };
        assert!(with(&pem).expect("a PEM bundle").trust_anchors_pem.is_some_and(|p| p.contains("MIIB")));
        assert!(matches!(with(&not_pem), Err(ConfigError::NoCertificate { .. })));
        assert!(matches!(with(&dir.join("missing.pem")), Err(ConfigError::ReadAnchors { .. })));
        assert!(Cli::try_parse_from(["x", "--token-seconds", "30"]).is_err(), "below 600 s is refused");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
