//! The control plane in a pod of its own, and the fixtures that register
//! replicas with it.
//!
//! ```text
//! cp pod: weft-control (gRPC on its pod address :8090, admin 127.0.0.1:9990)
//! replica pods: app :8080 + proxy registering `--workload-name …`
//! client pod: proxy with `--control-plane` resolving the service's VIP
//! ```

use std::path::PathBuf;
use std::time::Duration;

use crate::env::control_bin;
use crate::eventually::eventually;
use crate::mesh::Pod;
use crate::process::Proc;
use crate::proxy::Proxy;

/// The control plane's gRPC port.
pub const GRPC_PORT: u16 = 8090;
/// Its admin listener, on its pod's loopback.
pub const CONTROL_ADMIN: &str = "127.0.0.1:9990";

/// A running `weft-control`.
pub struct ControlPlane {
    pub proc: Proc,
    pub pod: Pod,
    /// `http://IP:8090`, for `--control-plane`.
    pub url: String,
    pub services: PathBuf,
    pub policy_dir: PathBuf,
}

impl Pod {
    /// Writes `services_yaml` and an empty policy directory into the test
    /// directory, starts the control plane in this pod and waits until it is
    /// ready.
    pub fn run_control(&self, services_yaml: &str, extra: &[&str]) -> ControlPlane {
        let services = self.dir().join(format!("services-{}.yaml", self.name()));
        std::fs::write(&services, services_yaml).expect("writing the services file");
        let policy_dir = self.dir().join(format!("policy-{}", self.name()));
        std::fs::create_dir_all(&policy_dir).expect("creating the policy directory");
        self.start_control(services, policy_dir, extra)
    }

    /// Starts (or restarts) the control plane with existing files.
    pub fn start_control(&self, services: PathBuf, policy_dir: PathBuf, extra: &[&str]) -> ControlPlane {
        let grpc = format!("{}:{GRPC_PORT}", self.ip());
        let mut args: Vec<String> = vec![
            "--grpc-addr".into(),
            grpc,
            "--admin-addr".into(),
            CONTROL_ADMIN.into(),
            "--services".into(),
            services.to_string_lossy().into_owned(),
            "--policy".into(),
            policy_dir.to_string_lossy().into_owned(),
        ];
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        let mut proc = self.spawn("weft-control", control_bin(), &args);
        let url = format!("http://{}:{GRPC_PORT}", self.ip());
        eventually(Duration::from_secs(15), "the control plane is ready", || {
            if let Some(status) = proc.try_status() {
                panic!("the control plane exited ({status}):\n{}", proc.stderr());
            }
            let run = self.exec(
                "curl",
                &[
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "--max-time",
                    "1",
                    &format!("http://{CONTROL_ADMIN}/ready"),
                ],
            );
            if run.stdout == "200" { Ok(()) } else { Err(format!("GET /ready: {run}")) }
        });
        ControlPlane { proc, pod: self.clone(), url, services, policy_dir }
    }

    /// Runs a proxy that registers this pod's app (`name`, `labels`, on
    /// `port`) with the control plane, and waits until it is ready.
    pub fn run_registered_proxy(
        &self,
        cp: &ControlPlane,
        name: &str,
        labels: &str,
        port: u16,
        extra: &[&str],
    ) -> Proxy {
        let ip = self.ip().to_string();
        let port = port.to_string();
        let mut args = vec![
            "--control-plane",
            &cp.url,
            "--workload-name",
            name,
            "--workload-labels",
            labels,
            "--workload-address",
            &ip,
            "--workload-ports",
            &port,
        ];
        args.extend_from_slice(extra);
        self.run_proxy(&args)
    }
}

impl ControlPlane {
    /// The control plane's own metrics.
    pub fn metrics(&self) -> crate::metrics::Metrics {
        let run = self.pod.exec("curl", &["-s", "--max-time", "5", &format!("http://{CONTROL_ADMIN}/metrics")]);
        crate::metrics::Metrics::parse(&run.stdout)
    }
}

impl Proxy {
    /// The endpoint addresses this proxy currently balances over for
    /// `target` (as its admin `/config` shows them), sorted.
    pub fn endpoints(&self, target: &str) -> Vec<String> {
        let config = self.config_json();
        let mut eps: Vec<String> = config["discovery"]["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["target"] == target)
            .flat_map(|t| t["endpoints"].as_array().cloned().unwrap_or_default())
            .filter_map(|e| e["address"].as_str().map(str::to_owned))
            .collect();
        eps.sort();
        eps
    }

    /// The outbound policy version this proxy runs for `target`, if any.
    pub fn policy_version(&self, target: &str) -> Option<u64> {
        let config = self.config_json();
        config["discovery"]["targets"]
            .as_array()?
            .iter()
            .find(|t| t["target"] == target)
            .and_then(|t| t["policy_version"].as_u64())
    }

    /// The admin `/config` document.
    pub fn config_json(&self) -> serde_json::Value {
        let run = self.admin("GET", "/config");
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("/config is not JSON ({e}): {run}"))
    }
}
