//! Reads what the checks need from the API server, once, into
//! [`Observed`]; every read that fails is kept as its reason, so one
//! missing permission fails one check rather than the whole run.

use std::collections::BTreeMap;
use std::time::SystemTime;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, Namespace, Pod, PodSpec, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use weft_injector::mutate::{INJECT, PROXY_CONTAINER};

use super::decide::{CONTROL_PLANE, INJECTOR, INJECTOR_TLS, Observed, Probe, Read, probe_namespace};

/// A page of a list; a cluster of 10,000 Pods is 20 requests.
const PAGE: u32 = 500;
/// Bounds the pages of one list (5 million objects).
const MAX_PAGES: usize = 10_000;

pub async fn observe(client: &Client, namespace: &str, now: SystemTime) -> Observed {
    let weft_namespace = get::<Namespace>(Api::all(client.clone()), namespace).await;
    let control_plane = get::<Deployment>(Api::namespaced(client.clone(), namespace), CONTROL_PLANE).await;
    let webhook = get::<MutatingWebhookConfiguration>(Api::all(client.clone()), INJECTOR).await;
    let tls = get::<Secret>(Api::namespaced(client.clone(), namespace), INJECTOR_TLS).await;
    let namespaces = list::<Namespace>(Api::all(client.clone())).await;
    let pods = list::<Pod>(Api::all(client.clone())).await;
    let probe_ns = probe_namespace(namespaces.as_deref().unwrap_or_default(), &webhook, namespace);
    let probe = probe(client, &probe_ns).await;
    Observed {
        namespace: namespace.to_owned(),
        weft_namespace,
        control_plane,
        webhook,
        tls,
        namespaces,
        pods,
        probe,
        now,
        cli_version: env!("CARGO_PKG_VERSION").to_owned(),
    }
}

async fn get<K>(api: Api<K>, name: &str) -> Read<K>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name).await.map_err(|e| e.to_string())
}

async fn list<K>(api: Api<K>) -> Result<Vec<K>, String>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut items = Vec::new();
    let mut params = ListParams::default().limit(PAGE);
    for _ in 0..MAX_PAGES {
        let page = api.list(&params).await.map_err(|e| e.to_string())?;
        items.extend(page.items);
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(items),
        }
    }
    Err(format!("more than {} objects", PAGE as usize * MAX_PAGES))
}

/// A throwaway Pod, created with `dryRun=All` (admitted by every webhook,
/// stored nowhere), asking for the proxy itself so that it is injected
/// whatever its namespace says.
fn probe_pod() -> Pod {
    Pod {
        metadata: ObjectMeta {
            generate_name: Some("weft-check-".into()),
            labels: Some(BTreeMap::from([("app.kubernetes.io/name".to_owned(), "weft-check".to_owned())])),
            annotations: Some(BTreeMap::from([(INJECT.to_owned(), "enabled".to_owned())])),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "probe".into(),
                image: Some("registry.k8s.io/pause:3.10".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn probe(client: &Client, namespace: &str) -> Probe {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let params = PostParams { dry_run: true, field_manager: Some("weft-check".into()) };
    let namespace = namespace.to_owned();
    match api.create(&params, &probe_pod()).await {
        Ok(pod) => {
            let spec = pod.spec.unwrap_or_default();
            let injected =
                spec.containers.iter().chain(spec.init_containers.iter().flatten()).any(|c| c.name == PROXY_CONTAINER);
            if injected { Probe::Injected { namespace } } else { Probe::NotInjected { namespace } }
        }
        Err(e) => Probe::Refused { namespace, error: e.to_string() },
    }
}
