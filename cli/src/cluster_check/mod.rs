//! `weft check` for a cluster: is Weft installed and working there? A
//! checklist in Linkerd's words, exit 1 when any check fails.
//!
//! ```text
//!  --kubeconfig/$KUBECONFIG ─► client ─► kubernetes-api: can initialize / can query
//!                                  │
//!                                  ▼ observe.rs (reads once; a failed read is kept as its reason)
//!   Namespace, Deployment weft-control, MutatingWebhookConfiguration and Secret
//!   weft-injector(-tls), all Namespaces and Pods, a dry-run Pod through the webhook
//!                                  │
//!                                  ▼ decide.rs (pure; tls.rs verifies the certificate)
//!   weft-control-plane: Namespace exists, pods ready
//!   weft-webhook:       configured, valid cert, cert valid ≥ 7 days, reachable
//!   weft-data-plane:    every pod meant to be injected has the proxy, versions match
//!                                  │
//!                                  ▼ report.rs: √ / ‼ / × lines, details, hints
//! ```
//!
//! "Webhook reachable" is proven end to end: a Pod created with `dryRun=All`
//! goes through the API server's admission exactly as a real one, and must
//! come back with the proxy. Which Pods should have the proxy is the
//! injector's own decision (`weft_injector::mutate`) for each Pod and its
//! Namespace, among the Pods the webhook configuration's selectors send it.

mod decide;
mod observe;
mod report;
mod tls;

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

pub use decide::{MIN_CERT_LIFETIME, Observed, Probe, decide};
pub use report::{Check, Section, Status, passed, render};

/// How long one request to the API server may take.
const API_TIMEOUT: Duration = Duration::from_secs(15);

/// `weft check`'s cluster flags.
#[derive(clap::Args, Debug, Clone)]
pub struct ClusterArgs {
    /// The kubeconfig to use [default: $KUBECONFIG, else ~/.kube/config,
    /// else the Pod's service account].
    #[arg(long, conflicts_with = "file")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context [default: its current context].
    #[arg(long, conflicts_with = "file")]
    pub context: Option<String>,
    /// The namespace Weft is installed in.
    #[arg(long, default_value = "weft-system", conflicts_with = "file")]
    pub namespace: String,
}

/// Runs the checks and prints the checklist; `Ok(false)` if any failed.
pub async fn run(args: &ClusterArgs) -> anyhow::Result<bool> {
    let sections = check(args).await;
    print!("{}", render(&sections));
    Ok(passed(&sections))
}

async fn check(args: &ClusterArgs) -> Vec<Section> {
    let client = match client(args).await {
        Ok(c) => c,
        // kube's errors spell out their causes themselves.
        Err(e) => return vec![decide::api_section(&Err(e.to_string()), None)],
    };
    let query = client.apiserver_version().await.map(drop).map_err(|e| e.to_string());
    let api = decide::api_section(&Ok(()), Some(&query));
    if query.is_err() {
        return vec![api];
    }
    let observed = observe::observe(&client, &args.namespace, SystemTime::now()).await;
    let mut sections = vec![api];
    sections.extend(decide(&observed));
    sections
}

async fn client(args: &ClusterArgs) -> anyhow::Result<kube::Client> {
    let options = kube::config::KubeConfigOptions { context: args.context.clone(), ..Default::default() };
    let mut config = match &args.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)?;
            kube::Config::from_custom_kubeconfig(kc, &options).await?
        }
        None if args.context.is_some() => kube::Config::from_kubeconfig(&options).await?,
        None => kube::Config::infer().await?,
    };
    config.connect_timeout = Some(API_TIMEOUT);
    config.read_timeout = Some(API_TIMEOUT);
    Ok(kube::Client::try_from(config)?)
}

#[cfg(test)]
mod tests;
