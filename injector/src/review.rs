//! `admission.k8s.io/v1` AdmissionReview in, AdmissionReview out.
//!
//! The response echoes the request's `uid`, always allows (the injector
//! never blocks a Pod), and carries the patch as `patchType: JSONPatch`
//! with `patch` the base64 of the JSON array, as a string (not a byte
//! array: the API server decodes the field as base64 text). No change, no
//! patch. A body that is not an AdmissionReview is refused with the
//! reason, never with a 500.

use base64::Engine as _;
use serde_json::{Value, json};

use crate::mutate::{Decision, NamespaceInfo, Settings, mutate};

/// Why a body is not a review we can answer.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum ReviewError {
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    #[error("not an admission.k8s.io/v1 AdmissionReview (apiVersion {api_version:?}, kind {kind:?})")]
    NotReview { api_version: String, kind: String },
    #[error("the review has no request.uid")]
    NoUid,
}

/// What a review asks about.
#[derive(Debug)]
pub struct Request {
    pub uid: String,
    /// The Pod, for Pod CREATE; `None` for anything else (answered with no
    /// patch).
    pub pod: Option<Value>,
    /// `request.namespace`: a Pod of a controller has no namespace in the
    /// object yet.
    pub namespace: String,
}

pub fn parse(body: &[u8]) -> Result<Request, ReviewError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| ReviewError::NotJson(e.to_string()))?;
    let api_version = v.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
    let kind = v.get("kind").and_then(Value::as_str).unwrap_or_default();
    if api_version != "admission.k8s.io/v1" || kind != "AdmissionReview" {
        return Err(ReviewError::NotReview { api_version: api_version.into(), kind: kind.into() });
    }
    let req = v.get("request").cloned().unwrap_or(Value::Null);
    let uid = req.get("uid").and_then(Value::as_str).filter(|u| !u.is_empty()).ok_or(ReviewError::NoUid)?.to_owned();
    let is_pod_create = req.get("operation").and_then(Value::as_str) == Some("CREATE")
        && req.get("kind").and_then(|k| k.get("kind")).and_then(Value::as_str) == Some("Pod")
        && req.get("subResource").and_then(Value::as_str).unwrap_or_default().is_empty();
    let pod = if is_pod_create { req.get("object").cloned().filter(Value::is_object) } else { None };
    let namespace = req.get("namespace").and_then(Value::as_str).unwrap_or_default().to_owned();
    Ok(Request { uid, pod, namespace })
}

/// The response review for `req`, and what was decided (for logs).
pub fn answer(req: &Request, ns: &NamespaceInfo, settings: &Settings) -> (Value, String) {
    let mut response = json!({"uid": req.uid, "allowed": true});
    let said = match &req.pod {
        None => "not a Pod CREATE".to_owned(),
        Some(pod) => match mutate(pod, ns, settings) {
            Decision::Skip(why) => why,
            Decision::Inject(ops) => {
                let patch = serde_json::to_vec(&ops).unwrap_or_default();
                response["patchType"] = json!("JSONPatch");
                response["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(patch));
                format!("injected ({} operations)", ops.len())
            }
        },
    };
    (json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}), said)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            proxy_image: "weft/proxy:test".into(),
            control_plane: "https://cp:8090".into(),
            control_plane_name: "cp".into(),
            trust_domain: "cluster.local".into(),
            own_namespace: "weft-system".into(),
            version: "0.1.0".into(),
            token_seconds: 3600,
            trust_anchors_pem: None,
            proxy: Default::default(),
            sidecar: Default::default(),
        }
    }

    fn review(operation: &str, kind: &str) -> Vec<u8> {
        json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": "", "version": "v1", "kind": kind},
                "operation": operation,
                "namespace": "shop",
                "object": {"metadata": {"generateName": "web-"}, "spec": {"containers": [{"name": "app"}]}},
            }
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn a_pod_create_gets_a_base64_json_patch_string_and_its_uid_back() {
        let ns = NamespaceInfo {
            name: "shop".into(),
            labels: [(crate::mutate::INJECT.into(), "enabled".into())].into(),
            ..Default::default()
        };
        let req = parse(&review("CREATE", "Pod")).expect("a review");
        assert_eq!(req.namespace, "shop", "from the request: the object has none yet");
        let (out, said) = answer(&req, &ns, &settings());
        let r = &out["response"];
        assert_eq!(r["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
        assert_eq!(r["allowed"], true);
        assert_eq!(r["patchType"], "JSONPatch");
        let patch = r["patch"].as_str().expect("the patch is a string, not a byte array");
        let ops: Value =
            serde_json::from_slice(&base64::engine::general_purpose::STANDARD.decode(patch).expect("base64"))
                .expect("a JSON array");
        assert_eq!(ops[0]["op"], "add");
        assert_eq!(ops[0]["path"], "/spec/initContainers");
        assert!(said.starts_with("injected"), "{said}");
        assert_eq!(out["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(out["kind"], "AdmissionReview");
    }

    #[test]
    fn no_change_no_patch() {
        let ns = NamespaceInfo { name: "shop".into(), ..Default::default() };
        for (op, kind) in [("CREATE", "Pod"), ("UPDATE", "Pod"), ("CREATE", "Service")] {
            let (out, _) = answer(&parse(&review(op, kind)).expect("a review"), &ns, &settings());
            assert_eq!(out["response"]["allowed"], true, "{op} {kind}");
            assert!(
                out["response"].get("patch").is_none() && out["response"].get("patchType").is_none(),
                "{op} {kind}"
            );
        }
    }

    #[test]
    fn what_is_not_a_review_is_refused_with_the_reason() {
        let cases: Vec<(Vec<u8>, ReviewError)> = vec![
            (b"{not json".to_vec(), ReviewError::NotJson(String::new())),
            (
                br#"{"apiVersion": "v1", "kind": "Pod"}"#.to_vec(),
                ReviewError::NotReview { api_version: "v1".into(), kind: "Pod".into() },
            ),
            (
                br#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {}}"#.to_vec(),
                ReviewError::NoUid,
            ),
            (br#"[]"#.to_vec(), ReviewError::NotReview { api_version: String::new(), kind: String::new() }),
        ];
        for (body, want) in cases {
            let got = parse(&body).expect_err("refused");
            match (&got, &want) {
                (ReviewError::NotJson(_), ReviewError::NotJson(_)) => {}
                _ => assert_eq!(got, want),
            }
        }
    }
}
