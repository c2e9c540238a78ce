use super::*;

fn settings() -> Settings {
    Settings {
        proxy_image: "weft/proxy:test".into(),
        control_plane: "https://weft-control.weft-system.svc:8090".into(),
        control_plane_name: "weft-control.weft-system.svc".into(),
        trust_domain: "cluster.local".into(),
        own_namespace: "weft-system".into(),
        version: "0.1.0".into(),
        token_seconds: 3600,
        trust_anchors_pem: Some("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into()),
        proxy: Default::default(),
        sidecar: Default::default(),
    }
}

#[test]
fn documents_are_split_on_column_zero_markers_only() {
    // (case, input, each document's (first line, marked))
    let cases: Vec<(&str, &str, Vec<(usize, bool)>)> = vec![
        ("empty", "", vec![]),
        ("comments only", "# nothing\n\n", vec![]),
        ("one", "a: 1\n", vec![(1, false)]),
        ("one, marked", "---\na: 1\n", vec![(1, true)]),
        ("comment first", "# c\n---\na: 1\n---\nb: 2", vec![(2, true), (4, true)]),
        ("a trailing empty one", "a: 1\n---\n", vec![(1, false), (2, true)]),
        ("indented dashes are content", "a: |\n  x\n  ---\n", vec![(1, false)]),
        ("four dashes are content", "a: |\n  x\n----\n", vec![(1, false)]),
        ("a marker with a comment", "a: 1\n--- # next\nb: 2\n", vec![(1, false), (2, true)]),
        ("CRLF", "a: 1\r\n---\r\nb: 2\r\n", vec![(1, false), (2, true)]),
    ];
    for (case, input, want) in cases {
        let got: Vec<(usize, bool)> =
            split(input).iter().filter(|s| s.document).map(|s| (s.first_line, s.marked)).collect();
        assert_eq!(got, want, "{case}");
        let joined: String = split(input).iter().map(|s| s.text).collect();
        assert_eq!(joined, input, "{case}: the segments are the whole input");
    }
}

const SERVICE: &str = "# the web service
apiVersion: v1
kind: Service
metadata: {name: web}   # flow style, kept
spec:
  ports: [{port: 80, targetPort: 8080}]
";

const CONFIGMAP: &str = "apiVersion: v1
kind: ConfigMap
metadata:
  name: web
data:
  mode: 0644
  enabled: yes
";

fn deployment(name: &str, template_annotations: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata:
      labels: {{app: {name}}}
      annotations: {{{template_annotations}}}
    spec:
      containers: [{{name: app, image: registry.invalid/app:1}}]
"
    )
}

/// The names of the containers and init containers at `template`.
fn containers(v: &Value, template: &[&str]) -> (Vec<String>, Vec<String>) {
    let t = template.iter().try_fold(v, |v, k| v.get(*k)).expect("a template");
    let names = |f: &str| -> Vec<String> {
        t["spec"]
            .get(f)
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str().map(str::to_owned))
            .collect()
    };
    (names("initContainers"), names("containers"))
}

fn docs(yaml: &str) -> Vec<Value> {
    split(yaml)
        .iter()
        .map(|s| serde_yaml_ng::from_str(s.text).expect("a document"))
        .filter(|v: &Value| !v.is_null())
        .collect()
}

#[test]
fn non_workloads_and_workloads_left_alone_are_printed_byte_for_byte() {
    let input = format!(
        "# a header\n---\n{SERVICE}---\n{CONFIGMAP}---\n# an empty document\n---\n{}",
        deployment("off", "weft.dev/inject: disabled")
    );
    let out = inject(&input, &settings()).expect("injects");
    assert_eq!(out.yaml, input);
    assert_eq!(out.report, ["deployment/off not injected: weft.dev/inject: disabled"]);
}

#[test]
fn every_workload_kind_gets_the_proxy_in_its_pod_template() {
    let pod_spec = "{containers: [{name: app, image: registry.invalid/app:1}]}";
    let template = format!("{{metadata: {{labels: {{app: x}}}}, spec: {pod_spec}}}");
    // (kind line, spec, where the pod template is)
    let cases: Vec<(&str, String, &[&str])> = vec![
        ("apiVersion: v1\nkind: Pod", format!("spec: {pod_spec}"), &[]),
        (
            "apiVersion: v1\nkind: ReplicationController",
            format!("spec: {{template: {template}}}"),
            &["spec", "template"],
        ),
        (
            "apiVersion: apps/v1\nkind: Deployment",
            format!("spec: {{selector: {{matchLabels: {{app: x}}}}, template: {template}}}"),
            &["spec", "template"],
        ),
        (
            "apiVersion: apps/v1\nkind: StatefulSet",
            format!("spec: {{selector: {{matchLabels: {{app: x}}}}, template: {template}}}"),
            &["spec", "template"],
        ),
        (
            "apiVersion: apps/v1\nkind: DaemonSet",
            format!("spec: {{selector: {{matchLabels: {{app: x}}}}, template: {template}}}"),
            &["spec", "template"],
        ),
        (
            "apiVersion: apps/v1\nkind: ReplicaSet",
            format!("spec: {{selector: {{matchLabels: {{app: x}}}}, template: {template}}}"),
            &["spec", "template"],
        ),
        // A Job's template may leave out its metadata.
        ("apiVersion: batch/v1\nkind: Job", format!("spec: {{template: {{spec: {pod_spec}}}}}"), &["spec", "template"]),
        (
            "apiVersion: batch/v1\nkind: CronJob",
            format!("spec: {{schedule: '* * * * *', jobTemplate: {{spec: {{template: {template}}}}}}}"),
            &["spec", "jobTemplate", "spec", "template"],
        ),
    ];
    for (kind, spec, at) in cases {
        let input = format!("{kind}\nmetadata: {{name: w}}\n{spec}\n");
        let out = inject(&input, &settings()).unwrap_or_else(|e| panic!("{kind}: {e}"));
        let v = &docs(&out.yaml)[0];
        let (inits, apps) = containers(v, at);
        assert_eq!(inits, ["weft-init", "weft-proxy"], "{kind}");
        assert_eq!(apps, ["app"], "{kind}");
        let t = at.iter().try_fold(v, |v, k| v.get(*k)).expect("template");
        assert_eq!(t["metadata"]["annotations"]["weft.dev/injected-version"], "0.1.0", "{kind}");
        assert_eq!(out.report.len(), 1, "{kind}: {:?}", out.report);
        assert!(out.report[0].ends_with("/w injected"), "{kind}: {:?}", out.report);
        // The object around the template is untouched.
        let before: Value = serde_yaml_ng::from_str(&input).expect("input");
        if !at.is_empty() {
            assert_eq!(v["metadata"], before["metadata"], "{kind}");
        }
        assert_eq!(v["kind"], before["kind"], "{kind}");
        let again = inject(&out.yaml, &settings()).expect("injects again");
        assert_eq!(again.yaml, out.yaml, "{kind}: a second weft inject changes nothing");
        assert!(again.report[0].ends_with("not injected: already injected"), "{kind}: {:?}", again.report);
    }
}

#[test]
fn who_is_left_alone() {
    let pod = |meta: &str, spec: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: p{meta}}}\nspec: {{containers: [{{name: app}}]{spec}}}\n")
    };
    // (case, input, the report)
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "the workload opts out",
            deployment("w", "").replace("  name: w\n", "  name: w\n  annotations: {weft.dev/inject: disabled}\n"),
            "deployment/w not injected: its weft.dev/inject is disabled",
        ),
        (
            "its pod template opts out",
            deployment("w", "weft.dev/inject: disabled"),
            "deployment/w not injected: weft.dev/inject: disabled",
        ),
        (
            "a pod label opts out",
            pod(", labels: {weft.dev/inject: disabled}", ""),
            "pod/p not injected: weft.dev/inject: disabled",
        ),
        (
            "a pod's annotation wins over its label, as in the webhook",
            pod(", labels: {weft.dev/inject: disabled}, annotations: {weft.dev/inject: enabled}", ""),
            "pod/p injected",
        ),
        (
            "a workload's annotation wins over its label",
            deployment("w", "").replace(
                "  name: w\n",
                "  name: w\n  labels: {weft.dev/inject: disabled}\n  annotations: {weft.dev/inject: enabled}\n",
            ),
            "deployment/w injected",
        ),
        (
            "hostNetwork",
            pod("", ", hostNetwork: true"),
            "pod/p not injected: hostNetwork pods share the node's network",
        ),
        (
            "kube-system",
            pod(", namespace: kube-system", ""),
            "pod/p not injected: namespace kube-system is never injected",
        ),
        (
            "Weft's own namespace",
            pod(", namespace: weft-system", ""),
            "pod/p not injected: namespace weft-system is never injected",
        ),
        (
            "another mesh",
            pod("", "").replace("[{name: app}]", "[{name: app}, {name: istio-proxy}]"),
            "pod/p not injected: the pod already runs istio-proxy",
        ),
        ("an unknown value is not an opt-out", pod(", annotations: {weft.dev/inject: maybe}", ""), "pod/p injected"),
        ("any other namespace", pod(", namespace: shop", ""), "pod/p injected"),
    ];
    for (case, input, want) in cases {
        let out = inject(&input, &settings()).unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(out.report, [want], "{case}");
        assert_eq!(out.yaml == input, want.contains("not injected"), "{case}: printed as it came unless injected");
    }
}

#[test]
fn a_header_before_the_first_marker_is_kept_and_not_counted() {
    let input = format!("# generated\n---\n{}---\nkind: [\n", deployment("w", ""));
    match inject(&input, &settings()) {
        Err(InjectError::Yaml { doc: 2, .. }) => {}
        other => panic!("the broken document is the second: {other:?}"),
    }
    let input = format!("# generated\n---\n{}", deployment("w", ""));
    let out = inject(&input, &settings()).expect("injects");
    assert!(out.yaml.starts_with("# generated\n---\napiVersion: apps/v1\n"), "{}", out.yaml);
    assert_eq!(inject(&out.yaml, &settings()).expect("again").yaml, out.yaml);
}

#[test]
fn a_list_is_injected_item_by_item() {
    let input = "apiVersion: v1
kind: List
items:
- apiVersion: apps/v1
  kind: Deployment
  metadata: {name: listed}
  spec:
    selector: {matchLabels: {app: listed}}
    template:
      metadata: {labels: {app: listed}}
      spec: {containers: [{name: app, image: a}]}
- {apiVersion: v1, kind: ConfigMap, metadata: {name: c}, data: {k: v}}
";
    let out = inject(input, &settings()).expect("injects");
    assert_eq!(out.report, ["deployment/listed injected"]);
    let v = &docs(&out.yaml)[0];
    let (inits, _) = containers(&v["items"][0], &["spec", "template"]);
    assert_eq!(inits, ["weft-init", "weft-proxy"]);
    let before: Value = serde_yaml_ng::from_str(input).expect("input");
    assert_eq!(v["items"][1], before["items"][1], "the ConfigMap means the same");
    assert_eq!(inject(&out.yaml, &settings()).expect("again").yaml, out.yaml);
}

#[test]
fn errors_name_the_document_and_nothing_is_half_done() {
    let good = deployment("w", "");
    // (case, input, the error's text starts with)
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "malformed YAML in document 3, line numbers of the input",
            format!("{good}---\n{SERVICE}---\napiVersion: v1\nkind: [Pod\n"),
            "document 3: not valid YAML: did not find expected ',' or ']' at line 24 column 1, while parsing a flow sequence at line 23 column 7",
        ),
        (
            "a sequence",
            format!("{good}---\n- a\n- b\n"),
            "document 2: not a Kubernetes object: a sequence, not a mapping",
        ),
        ("a scalar", "just words\n".to_owned(), "document 1: not a Kubernetes object: a string, not a mapping"),
        (
            "no kind",
            "apiVersion: v1\nmetadata: {name: x}\n".to_owned(),
            "document 1: not a Kubernetes object: it needs a string apiVersion and kind",
        ),
        (
            "a List item that is not an object",
            "apiVersion: v1\nkind: List\nitems: [{apiVersion: v1, kind: ConfigMap}, 3]\n".to_owned(),
            "document 1, item 2: not a Kubernetes object: a number, not a mapping",
        ),
        (
            "a List without items",
            "apiVersion: v1\nkind: List\nitems: 3\n".to_owned(),
            "document 1: not a Kubernetes object: a List needs a sequence of items",
        ),
        (
            "a Deployment without a template",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec: {replicas: 1}\n".to_owned(),
            "document 1: Deployment d: no pod template at spec.template",
        ),
        (
            "a YAML 1.1 octal mode",
            format!(
                "---\n{}",
                good.replace(
                    "    spec:\n",
                    "    spec:\n      volumes: [{name: s, secret: {secretName: s, defaultMode: 0644}}]\n"
                )
            ),
            "document 1: Deployment w: spec.template.spec.volumes[0].secret.defaultMode: invalid type: string \"0644\", expected i32 at line 14",
        ),
        (
            "an alias to nothing",
            "a: *nowhere\n".to_owned(),
            "document 1: not valid YAML: unknown anchor at line 1 column 4",
        ),
    ];
    for (case, input, want) in cases {
        match inject(&input, &settings()) {
            Ok(out) => panic!("{case}: accepted:\n{}", out.yaml),
            Err(e) => assert!(e.to_string().starts_with(want), "{case}: {e}"),
        }
    }
}

#[test]
fn patches_add_as_rfc_6902_says() {
    let mut v: Value = serde_yaml_ng::from_str("a: {b: [1, 3]}\n").expect("yaml");
    add(&mut v, "/a/b/1", 2.into()).expect("insert");
    add(&mut v, "/a/b/-", 4.into()).expect("append");
    add(&mut v, "/a/c~1d", "x".into()).expect("escaped key");
    assert_eq!(serde_yaml_ng::to_string(&v).expect("yaml"), "a:\n  b:\n  - 1\n  - 2\n  - 3\n  - 4\n  c/d: x\n");
    for (path, want) in [("/a/b/9", "index 9 out of 0..=4"), ("/x/y", "no x"), ("a", "not a JSON pointer")] {
        let e = add(&mut v, path, 0.into()).expect_err(path);
        assert!(e.contains(want), "{path}: {e}");
    }
}
