//! The Kubernetes source (`weft-control --source kubernetes`): the control
//! plane as a controller, reading the cluster through the API server.
//!
//! ```text
//!  API server ── watch ──► Services        ─┐
//!              (one per    EndpointSlices   │ convert.rs / policy.rs
//!               kind)      Pods, Namespaces ├──────────────────────────► Sink ─► Index
//!                          HTTPRoutes       │   (watch.rs: lists as one batch,
//!                          TrafficPolicies  │    then one event per change)
//!                          AccessPolicies  ─┘
//!                               │ verdicts
//!                               ▼
//!                          status.rs: status conditions, Warning Events
//! ```
//!
//! The proxies' API does not change: the index answers them the same
//! whichever source fed it. Pods are also kept in a [`PodDirectory`] so
//! that the CA can check that the Pod a token is bound to runs as the
//! service account it proves.
//!
//! A policy kind whose CustomResourceDefinition is not installed is
//! skipped with a warning (checked at start), so a cluster without the
//! Gateway API still gets discovery.
//!
//! Beside the watches, [`webhook_cert`] keeps the injector's serving
//! certificate (a Secret signed by the mesh CA) and its webhook's caBundle.

pub mod convert;
pub mod policy;
pub mod status;
pub mod watch;
pub mod webhook_cert;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::{Namespace as KubeNamespace, Pod, Service as KubeService};
use k8s_openapi::api::discovery::v1::EndpointSlice as KubeSlice;
use kube::api::{Api, DynamicObject, ListParams};
use kube::{Client, ResourceExt as _};
use tokio::sync::{mpsc, watch as signal};

use self::watch::{Outcome, Translate};
use crate::index::{Event, NsName};
use crate::policy::{Kind, ResourceId};
use crate::shutdown::Shutdown;
use crate::source::{Sink, Source};

/// Why the Kubernetes source cannot start.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("cannot read the kubeconfig {path}: {source}")]
    Kubeconfig {
        path: String,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("cannot find Kubernetes credentials (in-cluster service account or $KUBECONFIG): {0}")]
    Infer(#[source] kube::config::InferConfigError),
    #[error("cannot build a Kubernetes client: {0}")]
    Client(#[source] kube::Error),
}

/// Connects with `kubeconfig`, or else as Kubernetes clients do: the Pod's
/// service account in a cluster, `$KUBECONFIG` or `~/.kube/config` outside.
pub async fn client(kubeconfig: Option<&Path>) -> Result<Client, KubeError> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|source| KubeError::Kubeconfig { path: path.display().to_string(), source })?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(|source| KubeError::Kubeconfig { path: path.display().to_string(), source })?
        }
        None => kube::Config::infer().await.map_err(KubeError::Infer)?,
    };
    Client::try_from(config).map_err(KubeError::Client)
}

/// What the CA needs to know of a Pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInfo {
    pub uid: String,
    pub service_account: String,
}

/// Every Pod the control plane has seen, by namespace and name. Cheap to
/// clone.
#[derive(Clone, Debug, Default)]
pub struct PodDirectory(Arc<RwLock<HashMap<NsName, PodInfo>>>);

impl PodDirectory {
    pub fn get(&self, namespace: &str, name: &str) -> Option<PodInfo> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).get(&NsName::new(namespace, name)).cloned()
    }

    fn put(&self, key: NsName, info: Option<PodInfo>) {
        let mut map = self.0.write().unwrap_or_else(|p| p.into_inner());
        match info {
            Some(i) => map.insert(key, i),
            None => map.remove(&key),
        };
    }
}

/// The source. [`Kubernetes::run`] watches until shutdown.
pub struct Kubernetes {
    client: Client,
    pods: PodDirectory,
    synced: Vec<signal::Receiver<bool>>,
    senders: Vec<signal::Sender<bool>>,
}

impl std::fmt::Debug for Kubernetes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kubernetes").field("pods", &self.pods).finish_non_exhaustive()
    }
}

const KINDS: usize = 7;

impl Kubernetes {
    pub fn new(client: Client) -> Self {
        let (senders, synced) = (0..KINDS).map(|_| signal::channel(false)).unzip();
        Self { client, pods: PodDirectory::default(), synced, senders }
    }

    pub fn pods(&self) -> PodDirectory {
        self.pods.clone()
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Resolves once every kind has been listed once (the index then holds
    /// the cluster as it was), or never if the source stops first.
    pub fn synced(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.synced.clone();
        async move {
            for r in &mut rx {
                if r.wait_for(|s| *s).await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        }
    }
}

impl Source for Kubernetes {
    async fn run(self, sink: Sink, shutdown: Shutdown) {
        let Kubernetes { client, pods, senders, .. } = self;
        let mut senders = senders.into_iter();
        let mut next = || senders.next().expect("one sync signal per kind");
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(watch::run(Api::all(client.clone()), SERVICES, sink.clone(), next(), shutdown.clone()));
        tasks.spawn(watch::run(Api::all(client.clone()), SLICES, sink.clone(), next(), shutdown.clone()));
        tasks.spawn(watch::run(Api::<Pod>::all(client.clone()), Pods(pods), sink.clone(), next(), shutdown.clone()));
        tasks.spawn(watch::run(Api::all(client.clone()), NAMESPACES, sink.clone(), next(), shutdown.clone()));
        let (jobs, rx) = mpsc::unbounded_channel();
        tasks.spawn(status::run(client.clone(), sink.index().clone(), rx, shutdown.clone()));
        for kind in [Kind::HttpRoute, Kind::TrafficPolicy, Kind::AccessPolicy] {
            let synced = next();
            let ar = policy::api_resource(kind);
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
            if let Err(kube::Error::Api(e)) = api.list(&ListParams::default().limit(1)).await
                && e.code == 404
            {
                tracing::warn!(
                    %kind,
                    "the API server does not serve {}/{}: its CustomResourceDefinition is not installed; objects of this kind are ignored until the control plane restarts",
                    ar.group,
                    ar.plural
                );
                synced.send_replace(true);
                continue;
            }
            let t = Policies { kind, sink: sink.clone(), jobs: jobs.clone() };
            tasks.spawn(watch::run(api, t, sink.clone(), synced, shutdown.clone()));
        }
        drop(jobs);
        while tasks.join_next().await.is_some() {}
    }
}

/// A kind that is converted and removed and nothing else: Services,
/// EndpointSlices, Namespaces.
struct Plain<K> {
    kind: &'static str,
    convert: fn(&K) -> Option<Event>,
    removal: fn(&NsName) -> Event,
}

impl<K> Translate for Plain<K>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    type Object = K;
    fn kind(&self) -> &'static str {
        self.kind
    }
    fn applied(&mut self, obj: &K) -> Outcome {
        (self.convert)(obj).map_or(Outcome::Withdraw, Outcome::Publish)
    }
    fn removal(&self, key: &NsName) -> Event {
        (self.removal)(key)
    }
}

const SERVICES: Plain<KubeService> = Plain {
    kind: "Service",
    convert: |o| convert::service(o).map(Event::ServiceApplied),
    removal: |k| Event::ServiceDeleted(k.clone()),
};

const SLICES: Plain<KubeSlice> = Plain {
    kind: "EndpointSlice",
    convert: |o| convert::slice(o).map(Event::SliceApplied),
    removal: |k| Event::SliceDeleted(k.clone()),
};

const NAMESPACES: Plain<KubeNamespace> = Plain {
    kind: "Namespace",
    convert: |o| convert::namespace(o).map(Event::NamespaceApplied),
    removal: |k| Event::NamespaceDeleted(k.name.clone()),
};

struct Pods(PodDirectory);

impl Translate for Pods {
    type Object = Pod;
    fn kind(&self) -> &'static str {
        "Pod"
    }
    fn applied(&mut self, obj: &Pod) -> Outcome {
        let key = NsName::new(obj.namespace().unwrap_or_default(), obj.name_any());
        let sa = obj.spec.as_ref().and_then(|s| s.service_account_name.clone()).unwrap_or_else(|| "default".into());
        self.0.put(key, Some(PodInfo { uid: obj.uid().unwrap_or_default(), service_account: sa }));
        convert::workload(obj).map_or(Outcome::Withdraw, |w| Outcome::Publish(Event::WorkloadApplied(w)))
    }
    fn removal(&self, key: &NsName) -> Event {
        Event::WorkloadDeleted(key.clone())
    }
    fn deleted(&mut self, obj: &Pod) {
        self.0.put(NsName::new(obj.namespace().unwrap_or_default(), obj.name_any()), None);
    }
}

struct Policies {
    kind: Kind,
    sink: Sink,
    jobs: status::Jobs,
}

impl Policies {
    /// The origin refusals are filed under on `/state`.
    fn origin(&self, key: &NsName) -> String {
        format!("kubernetes:{}/{}/{}", self.kind, key.namespace, key.name)
    }
}

impl Translate for Policies {
    type Object = DynamicObject;
    fn kind(&self) -> &'static str {
        self.kind.as_str()
    }
    fn applied(&mut self, obj: &DynamicObject) -> Outcome {
        let key = NsName::new(obj.namespace().unwrap_or_default(), obj.name_any());
        let parsed = policy::to_resource(self.kind, obj);
        let valid = parsed.as_ref().map(|_| ()).map_err(Clone::clone);
        let _ = self.jobs.send(status::Job::Seen { kind: self.kind, obj: Box::new(obj.clone()), valid });
        match parsed {
            Ok(r) => {
                self.sink.clear(&self.origin(&key));
                Outcome::Publish(Event::PolicyApplied(r))
            }
            Err(e) => {
                self.sink.reject(&self.origin(&key), &e);
                Outcome::Keep
            }
        }
    }
    fn removal(&self, key: &NsName) -> Event {
        Event::PolicyDeleted(ResourceId::new(self.kind, &key.namespace, &key.name))
    }
    fn deleted(&mut self, obj: &DynamicObject) {
        let key = NsName::new(obj.namespace().unwrap_or_default(), obj.name_any());
        self.sink.clear(&self.origin(&key));
        let _ = self.jobs.send(status::Job::Gone { kind: self.kind, key });
    }
}
