//! AdmissionReview JSON (`weft_injector::review`), as the API server posts
//! it to the webhook (or anyone who can reach the webhook's port does).
//!
//! Checks: no panic; the answer echoes the request's uid, always allows,
//! and carries a patch only as base64 of a JSON array of operations. When
//! the object is a Pod as the API server would send it (it deserializes as
//! `k8s_openapi` `Pod`, with `metadata` and `spec.containers`), the patch must apply to it — else the API server
//! would refuse the Pod — and the patched Pod must not be injected again.
#![no_main]

use base64::Engine as _;
use k8s_openapi::api::core::v1::Pod;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use weft_injector::mutate::{Decision, INJECT, NamespaceInfo, Settings, Sidecar, mutate};
use weft_injector::review::{answer, parse};

fn settings(sidecar: Sidecar) -> Settings {
    Settings {
        proxy_image: "weft/proxy:fuzz".into(),
        control_plane: "https://weft-control.weft-system.svc:8090".into(),
        control_plane_name: "weft-control.weft-system.svc".into(),
        trust_domain: "cluster.local".into(),
        own_namespace: "weft-system".into(),
        version: "0.1.0".into(),
        token_seconds: 3600,
        trust_anchors_pem: Some("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into()),
        proxy: Default::default(),
        sidecar,
    }
}

fuzz_target!(|body: &[u8]| {
    let Ok(req) = parse(body) else { return };
    let ns = NamespaceInfo {
        name: req.namespace.clone(),
        labels: [(INJECT.into(), "enabled".into())].into(),
        ..Default::default()
    };
    for sidecar in [Sidecar::Native, Sidecar::Classic] {
        let settings = settings(sidecar);
        let (out, _said) = answer(&req, &ns, &settings);
        let response = &out["response"];
        assert_eq!(response["uid"].as_str(), Some(req.uid.as_str()));
        assert_eq!(response["allowed"], Value::Bool(true));
        let Some(patch) = response.get("patch") else {
            assert!(response.get("patchType").is_none());
            continue;
        };
        assert_eq!(response["patchType"], "JSONPatch");
        let patch = base64::engine::general_purpose::STANDARD
            .decode(patch.as_str().expect("the patch is a string"))
            .expect("the patch is base64");
        let ops: json_patch::Patch = serde_json::from_slice(&patch).expect("the patch is a JSON Patch");

        let Some(pod) = &req.pod else { panic!("a patch for something that is not a Pod") };
        // The API server (Go) always writes `metadata`, `spec` and
        // `spec.containers` (none is a pointer or `omitempty` in its Pod
        // type; containers is null only in a Pod it refuses anyway), and
        // `k8s_openapi` would default the last two, so look at the JSON.
        let shaped = pod.get("metadata").is_some_and(Value::is_object)
            && pod.pointer("/spec/containers").is_some_and(Value::is_array);
        if !shaped || serde_json::from_value::<Pod>(pod.clone()).is_err() {
            continue;
        }
        let mut patched = pod.clone();
        json_patch::patch(&mut patched, &ops).unwrap_or_else(|e| panic!("the patch does not apply: {e}\npod: {pod}"));
        if let Decision::Inject(again) = mutate(&patched, &ns, &settings) {
            panic!("an injected pod would be injected again ({} operations)", again.len());
        }
    }
});
