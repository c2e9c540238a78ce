//! Keeps the injector's serving certificate: the Secret `weft-injector-tls`
//! in the control plane's namespace, signed by the mesh CA, and the
//! `caBundle` of every webhook in the MutatingWebhookConfiguration
//! `weft-injector`, equal to the trust anchors.
//!
//! ```text
//!  watch Secret (by name) ────────┐
//!  watch webhook config (by name) ┼─► reconcile ─► 1. caBundle ≠ anchors? patch (resourceVersion-guarded)
//!  issuer / anchors changed ──────┤               2. ca::webhook::judge(Secret) → keep, or issue and
//!  renewal due, or every 30 s ────┘                  create / replace (resourceVersion-guarded)
//! ```
//!
//! The caBundle goes first: when a new root is rolled in, the API server
//! must trust it before the injector serves a certificate under it.
//!
//! Every replica of the control plane runs this. Writes carry the
//! resourceVersion they were decided on, so when two replicas decide at
//! once, one write wins and the other gets 409 Conflict (or AlreadyExists),
//! re-reads, and finds nothing left to do. A replica also writes the same
//! object at most once per [`min_gap`] (a missing Secret excepted): two
//! replicas whose mounted issuer files differ for a moment (the kubelet
//! updates Secret volumes on each node in its own time) then trade a few
//! renewals, logged, instead of spinning.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher;
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::ca::Ca;
use crate::ca::issuer::IssuerError;
use crate::ca::webhook::{self as decide, Renewal, San, Stored, Verdict};
use crate::shutdown::Shutdown;

/// How often everything is read again even when no watch said anything
/// changed: the watches are a shortcut, this is the guarantee.
pub const RECHECK: Duration = Duration::from_secs(30);
/// The field manager named in the API server's managedFields.
const FIELD_MANAGER: &str = "weft-control";

/// What to keep and where (from `--namespace`, `--webhook-*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookCertSettings {
    pub namespace: String,
    /// The Secret's name (`weft-injector-tls`).
    pub secret: String,
    /// The MutatingWebhookConfiguration's name (`weft-injector`).
    pub webhook_config: String,
    /// Every name the certificate carries ([`decide::desired_sans`]).
    pub sans: Vec<San>,
    pub lifetime: Duration,
}

/// The shortest time between two writes of one object by one replica.
pub fn min_gap(lifetime: Duration) -> Duration {
    (lifetime / 4).min(Duration::from_secs(5))
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookCertError {
    #[error("cannot {verb} {what}: {source}{}", hint(.source))]
    Api {
        verb: &'static str,
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot sign the injector's certificate: {0}")]
    Issue(#[from] IssuerError),
}

/// What to tell the operator about an API error.
fn hint(e: &kube::Error) -> &'static str {
    match e {
        kube::Error::Api(s) if s.code == 403 => {
            "; the control plane's ServiceAccount needs the Role and ClusterRole rules of manifests/control-plane-rbac.yaml"
        }
        _ => "",
    }
}

fn conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// When to look again.
enum Next {
    /// A write lost to another writer: read again now.
    Reread,
    /// Nothing to do before this (capped by [`RECHECK`] in [`WebhookCert::run`]).
    At(Instant),
}

/// The task. [`WebhookCert::run`] keeps both objects until shutdown.
pub struct WebhookCert {
    client: Client,
    ca: Ca,
    settings: WebhookCertSettings,
    last_secret_write: Option<Instant>,
    last_bundle_write: Option<Instant>,
    /// Said once per absence, not at every check.
    config_missing_said: bool,
}

impl std::fmt::Debug for WebhookCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookCert").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl WebhookCert {
    pub fn new(client: Client, ca: Ca, settings: WebhookCertSettings) -> Self {
        Self { client, ca, settings, last_secret_write: None, last_bundle_write: None, config_missing_said: false }
    }

    fn secret_name(&self) -> String {
        format!("Secret {}/{}", self.settings.namespace, self.settings.secret)
    }

    fn config_name(&self) -> String {
        format!("MutatingWebhookConfiguration {}", self.settings.webhook_config)
    }

    /// Keeps the Secret and the caBundles until shutdown.
    pub async fn run(mut self, mut shutdown: Shutdown) {
        let s = &self.settings;
        tracing::info!(
            secret = %self.secret_name(),
            webhook_config = %s.webhook_config,
            sans = %s.sans.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
            lifetime = %humantime::format_duration(s.lifetime),
            "keeping the injector's serving certificate"
        );
        let wake = Arc::new(Notify::new());
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &s.namespace);
        let configs: Api<MutatingWebhookConfiguration> = Api::all(self.client.clone());
        let watches = [
            tokio::spawn(follow(secrets, s.secret.clone(), "Secret", wake.clone(), shutdown.clone())),
            tokio::spawn(follow(
                configs,
                s.webhook_config.clone(),
                "MutatingWebhookConfiguration",
                wake.clone(),
                shutdown.clone(),
            )),
        ];
        let mut issuer = self.ca.subscribe_issuer();
        let mut anchors = self.ca.subscribe_anchors();
        let mut failures: u32 = 0;
        let mut rereads: u32 = 0;
        loop {
            let now = Instant::now();
            let next = match self.reconcile().await {
                Ok(Next::Reread) if rereads < 5 => {
                    rereads += 1;
                    continue;
                }
                // Five lost races in a row: let the other writer settle.
                Ok(Next::Reread) => now + Duration::from_secs(1),
                Ok(Next::At(at)) => {
                    failures = 0;
                    at.min(now + RECHECK)
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let backoff = Duration::from_secs(1 << failures.min(5)).min(RECHECK);
                    tracing::warn!(error = %e, retry_in = ?backoff, "could not keep the injector's certificate");
                    now + backoff
                }
            };
            rereads = 0;
            tokio::select! {
                () = wake.notified() => {}
                () = tokio::time::sleep_until(next) => {}
                r = issuer.changed() => if r.is_err() { break },
                r = anchors.changed() => if r.is_err() { break },
                () = shutdown.signaled() => break,
            }
        }
        for w in watches {
            w.abort();
        }
    }

    async fn reconcile(&mut self) -> Result<Next, WebhookCertError> {
        let issuer = self.ca.issuer();
        let anchors = self.ca.anchors();
        let mut next = Instant::now() + RECHECK;
        // A caBundle that cannot be set (say, RBAC) does not hold back the
        // Secret: a missing certificate is worse than a stale bundle.
        let bundles = match self.ca_bundles(&anchors).await {
            Ok(Some(Next::Reread)) => return Ok(Next::Reread),
            Ok(Some(Next::At(at))) => {
                next = next.min(at);
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        let secret = self.secret(&issuer, &anchors).await;
        match (bundles, secret) {
            (Ok(()), Ok(Next::Reread)) => Ok(Next::Reread),
            (Ok(()), Ok(Next::At(at))) => Ok(Next::At(next.min(at))),
            (Ok(()), Err(e)) | (Err(e), Ok(_)) => Err(e),
            (Err(e), Err(also)) => {
                tracing::warn!(error = %also, "could not keep the injector's certificate");
                Err(e)
            }
        }
    }

    /// Sets every webhook's caBundle to the anchors, where it differs.
    async fn ca_bundles(&mut self, anchors: &crate::ca::anchors::Anchors) -> Result<Option<Next>, WebhookCertError> {
        let name = self.settings.webhook_config.clone();
        let what = self.config_name();
        let api: Api<MutatingWebhookConfiguration> = Api::all(self.client.clone());
        let err = |verb, source| WebhookCertError::Api { verb, what: what.clone(), source };
        let Some(config) = api.get_opt(&name).await.map_err(|e| err("read", e))? else {
            if !self.config_missing_said {
                tracing::info!(webhook_config = %name, "the MutatingWebhookConfiguration does not exist; its caBundle will be set once it does");
                self.config_missing_said = true;
            }
            return Ok(None);
        };
        self.config_missing_said = false;
        let stale: Vec<&str> = config
            .webhooks
            .iter()
            .flatten()
            .filter(|w| !decide::bundle_matches(w.client_config.ca_bundle.as_ref().map_or(&[][..], |b| &b.0), anchors))
            .map(|w| w.name.as_str())
            .collect();
        if stale.is_empty() {
            return Ok(None);
        }
        if let Some(wait) = too_soon(self.last_bundle_write, self.settings.lifetime) {
            tracing::info!(webhook_config = %name, wait = ?wait, "caBundle differs again right after this replica set it; waiting before setting it again");
            return Ok(Some(Next::At(Instant::now() + wait)));
        }
        // A strategic merge patch merges `webhooks` by name: only the
        // caBundles change, whatever else is in the object (fields this
        // build does not know included). The resourceVersion makes it
        // apply only to the object as read (409 Conflict otherwise).
        let bundle = ByteString(decide::ca_bundle(anchors).into_bytes());
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": config.metadata.resource_version},
            "webhooks": stale.iter().map(|n| serde_json::json!({"name": n, "clientConfig": {"caBundle": bundle}})).collect::<Vec<_>>(),
        });
        let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..PatchParams::default() };
        match api.patch(&name, &params, &Patch::Strategic(patch)).await {
            Ok(_) => {
                self.last_bundle_write = Some(Instant::now());
                tracing::info!(
                    webhook_config = %name,
                    webhooks = %stale.join(", "),
                    anchors = %anchors.info.iter().map(|a| &a.sha256[..16]).collect::<Vec<_>>().join(", "),
                    "set the webhooks' caBundle to the trust anchors"
                );
                Ok(None)
            }
            Err(e) if conflict(&e) => {
                tracing::info!(webhook_config = %name, "the webhook configuration changed while its caBundle was set; reading it again");
                Ok(Some(Next::Reread))
            }
            Err(e) => Err(err("patch", e)),
        }
    }

    /// Keeps the Secret: judged, and written anew when it will not do.
    async fn secret(
        &mut self,
        issuer: &crate::ca::issuer::Issuer,
        anchors: &crate::ca::anchors::Anchors,
    ) -> Result<Next, WebhookCertError> {
        let s = &self.settings;
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &s.namespace);
        let what = self.secret_name();
        let err = |verb, source| WebhookCertError::Api { verb, what: what.clone(), source };
        let current = api.get_opt(&s.secret).await.map_err(|e| err("read", e))?;
        let data = current.as_ref().map(|c| c.data.clone().unwrap_or_default());
        let key = |d: &BTreeMap<String, ByteString>, k: &str| d.get(k).map(|v| v.0.clone());
        let owned = data.as_ref().map(|d| (key(d, decide::TLS_CRT), key(d, decide::TLS_KEY), key(d, decide::CA_CRT)));
        let stored = owned.as_ref().map(|(c, k, a)| Stored {
            tls_crt: c.as_deref(),
            tls_key: k.as_deref(),
            ca_crt: a.as_deref(),
        });
        let now = SystemTime::now();
        let why = match decide::judge(stored.as_ref(), &s.sans, issuer, anchors, s.lifetime, now) {
            Verdict::Keep { serial, renew_at } => {
                tracing::debug!(secret = %what, %serial, "the injector's certificate will do");
                let at = renew_at
                    .map_or(Instant::now() + RECHECK, |t| Instant::now() + t.duration_since(now).unwrap_or_default());
                return Ok(Next::At(at));
            }
            Verdict::Renew(why) => why,
        };
        if why != Renewal::Missing
            && let Some(wait) = too_soon(self.last_secret_write, s.lifetime)
        {
            tracing::info!(secret = %what, reason = %why, wait = ?wait, "the certificate was renewed by this replica moments ago; waiting before renewing it again");
            return Ok(Next::At(Instant::now() + wait));
        }
        let fresh = decide::issue(issuer, anchors, &s.sans, s.lifetime, now)?;
        let data = BTreeMap::from([
            (decide::TLS_CRT.to_owned(), ByteString(fresh.tls_crt.into_bytes())),
            (decide::TLS_KEY.to_owned(), ByteString(fresh.tls_key.into_bytes())),
            (decide::CA_CRT.to_owned(), ByteString(fresh.ca_crt.into_bytes())),
        ]);
        let pp = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..PostParams::default() };
        let written = match current {
            None => {
                let secret = Secret {
                    metadata: ObjectMeta {
                        name: Some(s.secret.clone()),
                        namespace: Some(s.namespace.clone()),
                        labels: Some(BTreeMap::from([
                            ("app.kubernetes.io/part-of".to_owned(), "weft".to_owned()),
                            ("app.kubernetes.io/managed-by".to_owned(), FIELD_MANAGER.to_owned()),
                        ])),
                        ..ObjectMeta::default()
                    },
                    type_: Some(decide::SECRET_TYPE.to_owned()),
                    data: Some(data),
                    ..Secret::default()
                };
                api.create(&pp, &secret).await.map_err(|e| ("create", e))
            }
            // Everything else about the object stays as read (its type
            // too: it cannot change, and the injector reads only keys);
            // its resourceVersion makes the write lose to any other.
            Some(mut secret) => {
                secret.data = Some(data);
                secret.string_data = None;
                api.replace(&s.secret, &pp, &secret).await.map_err(|e| ("replace", e))
            }
        };
        match written {
            Ok(_) => {
                self.last_secret_write = Some(Instant::now());
                tracing::info!(
                    secret = %what,
                    reason = why.label(),
                    why = %why,
                    serial = %fresh.serial,
                    not_after = %crate::ca::pki::rfc3339(fresh.not_after),
                    "issued the injector's serving certificate"
                );
                // Judged again at once: the next renewal time comes from
                // what is now stored.
                Ok(Next::Reread)
            }
            Err((_, e)) if conflict(&e) => {
                tracing::info!(secret = %what, "another writer changed the Secret first; reading it again");
                Ok(Next::Reread)
            }
            Err((verb, e)) => Err(err(verb, e)),
        }
    }
}

/// How long to wait before writing again, when the last write was less
/// than [`min_gap`] ago.
fn too_soon(last: Option<Instant>, lifetime: Duration) -> Option<Duration> {
    let since = last?.elapsed();
    min_gap(lifetime).checked_sub(since).filter(|d| !d.is_zero())
}

/// Watches one object by name and wakes the reconciler at each event.
/// The watcher lists and watches with `metadata.name=NAME`, which RBAC
/// authorizes against `resourceNames`; it backs off and retries on errors.
async fn follow<K>(api: Api<K>, name: String, kind: &'static str, wake: Arc<Notify>, mut shutdown: Shutdown)
where
    K: Resource + Clone + std::fmt::Debug + DeserializeOwned + Send + Sync + 'static,
{
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let stream = watcher::watcher(api, config).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut failing = false;
    loop {
        let next = tokio::select! {
            next = stream.next() => next,
            () = shutdown.signaled() => return,
        };
        match next {
            Some(Ok(_)) => {
                if failing {
                    tracing::info!(%kind, %name, "watch recovered");
                    failing = false;
                }
                wake.notify_one();
            }
            Some(Err(e)) => {
                if !failing {
                    tracing::warn!(%kind, %name, error = %e, "watch failed; retrying with backoff (checked every 30s meanwhile)");
                }
                failing = true;
            }
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_spaced() {
        let rows = [
            (Duration::from_secs(15), Duration::from_millis(3750)),
            (Duration::from_secs(10), Duration::from_millis(2500)),
            (Duration::from_secs(30 * 86400), Duration::from_secs(5)),
        ];
        for (lifetime, gap) in rows {
            assert_eq!(min_gap(lifetime), gap, "{lifetime:?}");
        }
        assert_eq!(too_soon(None, Duration::from_secs(60)), None, "never written");
        let long_ago = Instant::now().checked_sub(Duration::from_secs(10)).expect("uptime");
        assert_eq!(too_soon(Some(long_ago), Duration::from_secs(60)), None);
        let wait = too_soon(Some(Instant::now()), Duration::from_secs(60)).expect("just written");
        assert!(wait > Duration::from_secs(4) && wait <= Duration::from_secs(5), "{wait:?}");
    }
}
