//! `weft install` and `weft uninstall`: Weft on a Kubernetes cluster,
//! rendered here and applied by kubectl.
//!
//! ```text
//!  weft install   --namespace NS --values FILE --set k=v --set-file k=path
//!      └─► values (the chart's values.yaml, typed; values.schema.json) ─► identity (a new trust anchor
//!          and issuer, unless --identity-external-issuer) ─► render (the chart's objects, apply order)
//!          ─► the control plane's own flag parser checks its args ─► multi-document YAML on stdout
//!                                                                       | kubectl apply -f -
//!  weft uninstall (the same flags) ─► the same objects, names only, the webhook configuration first
//!          and the CRDs last ─► stdout                                   | kubectl delete -f -
//! ```
//!
//! Nothing here talks to a cluster: what is printed depends only on the
//! flags (and, for install, on fresh key material). The Helm chart
//! (`manifests/chart/weft/`) renders the same objects from the same values;
//! see [`render`] and `docs/kubernetes.md`.

pub mod render;
pub mod schema;
pub mod values;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::Context as _;
use clap::Parser;
use serde_json::{Value, json};

use self::render::Document;
use self::values::{Layer, Values};

/// The flags `weft install` and `weft uninstall` share: they name the
/// same installation.
#[derive(clap::Args, Debug, Clone)]
pub struct ValuesArgs {
    /// Weft's namespace (created by the output unless
    /// `--set installNamespace=false`).
    #[arg(long, short = 'n', default_value = "weft-system")]
    pub namespace: String,
    /// A values file of the Helm chart (manifests/chart/weft/values.yaml
    /// lists and explains every value). Repeatable; later files win.
    #[arg(long = "values", short = 'f', value_name = "FILE")]
    pub values: Vec<PathBuf>,
    /// Set values (`webhook.failurePolicy=Fail,logLevel=debug`), after
    /// the values files, typed as helm types them (true/false, integers,
    /// else strings). Repeatable.
    #[arg(long, value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Set a value to a file's text (`identity.trustAnchorsPEM=ca.crt`),
    /// after --set. Repeatable.
    #[arg(long, value_name = "KEY=PATH")]
    pub set_file: Vec<String>,
    /// Use the issuer already in the Secret identity.issuer.secretName
    /// (tls.crt, tls.key, ca.crt) instead of generating a new trust anchor
    /// and issuer. Needs identity.trustAnchorsPEM (the same anchors: the
    /// webhook's caBundle) unless cert-manager makes the webhook's
    /// certificate.
    #[arg(long)]
    pub identity_external_issuer: bool,
}

#[derive(clap::Args, Debug)]
pub struct UninstallArgs {
    #[command(flatten)]
    pub values: ValuesArgs,
    /// Keep the CRDs (TrafficPolicy, AccessPolicy), and so every policy in
    /// the cluster; by default they go last, and the policies with them.
    #[arg(long)]
    pub keep_crds: bool,
}

impl ValuesArgs {
    fn layers(&self) -> Vec<Layer> {
        let files = self.values.iter().cloned().map(Layer::File);
        let sets = self.set.iter().cloned().map(Layer::Set);
        files.chain(sets).chain(self.set_file.iter().cloned().map(Layer::SetFile)).collect()
    }

    /// The values: the chart's defaults, plus `installNamespace: true`
    /// (kubectl, unlike `helm --create-namespace`, needs the Namespace in
    /// the stream), then the user's layers.
    fn load(&self) -> anyhow::Result<Values> {
        check_namespace(&self.namespace)?;
        let mut base = Values::default().to_tree();
        base["installNamespace"] = Value::Bool(true);
        Ok(Values::load(base, &self.layers(), |p: &Path| std::fs::read_to_string(p))?)
    }
}

/// A namespace name: an RFC 1123 label.
fn check_namespace(ns: &str) -> anyhow::Result<()> {
    let ok = !ns.is_empty()
        && ns.len() <= 63
        && ns.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !ns.starts_with('-')
        && !ns.ends_with('-');
    anyhow::ensure!(ok, "--namespace {ns:?}: a namespace is 1 to 63 lower-case letters, digits and '-'");
    Ok(())
}

/// `weft install`: prints the manifests.
pub fn install(args: &ValuesArgs) -> anyhow::Result<bool> {
    let mut values = args.load()?;
    if let Some(note) = identity(&mut values, args.identity_external_issuer, SystemTime::now())? {
        eprintln!("weft: {note}");
    }
    let documents = render::render(&values, &args.namespace, true).map_err(anyhow::Error::msg)?;
    check_control_plane_args(&documents)?;
    print!("{}", render::to_yaml(&documents).map_err(anyhow::Error::msg)?);
    Ok(true)
}

/// `weft uninstall`: prints what `weft install` with the same flags
/// created, as names, in the order to delete them.
pub fn uninstall(args: &UninstallArgs) -> anyhow::Result<bool> {
    let mut values = args.values.load()?;
    let id = &mut values.identity;
    if !args.values.identity_external_issuer && id.issuer.cert_pem.is_empty() && id.issuer.key_pem.is_empty() {
        // Install generated the issuer's Secret; its contents do not
        // matter to a deletion, only that it is there.
        for pem in [&mut id.issuer.cert_pem, &mut id.issuer.key_pem, &mut id.trust_anchors_pem] {
            *pem = "(generated by weft install)".into();
        }
    }
    let documents = render::render(&values, &args.values.namespace, !args.keep_crds).map_err(anyhow::Error::msg)?;
    print!("{}", deletion(&documents)?);
    Ok(true)
}

/// The objects to delete, as YAML: each one's apiVersion, kind and name
/// only. The webhook configuration goes first, so that no Pod is sent to
/// an injector on its way out; then the rest in the reverse of the apply
/// order, so the CRDs go last.
pub fn deletion(documents: &[Document]) -> anyhow::Result<String> {
    let webhook = |d: &&Document| d.kind() == "MutatingWebhookConfiguration";
    let order = documents.iter().filter(webhook).chain(documents.iter().rev().filter(|d| !webhook(d)));
    let stubs: Vec<Document> = order
        .map(|d| {
            let mut metadata = json!({"name": d.name()});
            if let Some(ns) = d.object["metadata"].get("namespace") {
                metadata["namespace"] = ns.clone();
            }
            Document {
                object: json!({"apiVersion": d.object["apiVersion"], "kind": d.kind(), "metadata": metadata}),
                source: None,
            }
        })
        .collect();
    let mut out = String::from(
        "# weft uninstall: pipe into `kubectl delete -f -`. The webhook configuration goes first; the\n\
         # CRDs go last, and every TrafficPolicy and AccessPolicy in the cluster with them (--keep-crds\n\
         # keeps them).\n",
    );
    out.push_str(&render::to_yaml(&stubs).map_err(anyhow::Error::msg)?);
    Ok(out)
}

/// Fills the identity values: generates a trust anchor and an issuer when
/// none is given (returning a note for the operator), checks given ones.
pub fn identity(values: &mut Values, external: bool, now: SystemTime) -> anyhow::Result<Option<String>> {
    let cert_manager = values.webhook.cert_manager.enabled;
    let id = &mut values.identity;
    let given = !id.issuer.cert_pem.is_empty() || !id.issuer.key_pem.is_empty();
    if external {
        anyhow::ensure!(
            !given,
            "--identity-external-issuer uses the Secret {} as it is: do not also give identity.issuer.certPEM \
             or keyPEM",
            id.issuer.secret_name
        );
        anyhow::ensure!(
            cert_manager || !id.trust_anchors_pem.is_empty(),
            "--identity-external-issuer needs the trust anchors of that issuer, for the webhook's caBundle: \
             --set-file identity.trustAnchorsPEM=ca.crt (or webhook.certManager.enabled=true)"
        );
        if !id.trust_anchors_pem.is_empty() {
            weft_control::ca::pki::pem_certs(id.trust_anchors_pem.as_bytes())
                .map_err(|e| anyhow::anyhow!("identity.trustAnchorsPEM: {e}"))?;
        }
        return Ok(None);
    }
    if !given {
        anyhow::ensure!(
            id.trust_anchors_pem.is_empty(),
            "identity.trustAnchorsPEM without an issuer: give identity.issuer.certPEM and keyPEM too, or use \
             --identity-external-issuer with the issuer's existing Secret"
        );
        let pki = weft_control::ca::bootstrap::generate(&id.trust_domain, now)
            .context("cannot generate the mesh's trust anchor and issuer")?;
        id.trust_anchors_pem = pki.trust_anchors_pem;
        id.issuer.cert_pem = pki.issuer_cert_pem;
        id.issuer.key_pem = pki.issuer_key_pem;
        return Ok(Some(format!(
            "generated a new trust anchor and issuer for {} (in the Secret {}); running `weft install` again \
             generates another: to upgrade, see docs/kubernetes.md",
            id.trust_domain, id.issuer.secret_name
        )));
    }
    anyhow::ensure!(
        !id.issuer.cert_pem.is_empty() && !id.issuer.key_pem.is_empty() && !id.trust_anchors_pem.is_empty(),
        "identity.issuer.certPEM, identity.issuer.keyPEM and identity.trustAnchorsPEM go together: give all three"
    );
    // What the control plane will check when it loads the Secret, checked
    // now: a CA certificate, its key, valid today, under the anchors.
    let issuer = weft_control::ca::issuer::Issuer::from_pem(
        id.issuer.cert_pem.as_bytes(),
        id.issuer.key_pem.as_bytes(),
        Path::new("identity.issuer.certPEM"),
        Path::new("identity.issuer.keyPEM"),
        now,
    )?;
    let anchors = weft_control::ca::pki::pem_certs(id.trust_anchors_pem.as_bytes())
        .map_err(|e| anyhow::anyhow!("identity.trustAnchorsPEM: {e}"))?;
    anyhow::ensure!(
        weft_control::ca::pki::chains_to(issuer.certs(), &anchors),
        "identity.issuer.certPEM (`{}`) does not chain to identity.trustAnchorsPEM: proxies would refuse its \
         certificates",
        issuer.info().subject
    );
    Ok(None)
}

/// The control plane's own command line, to parse the rendered args with.
#[derive(Parser, Debug)]
#[command(name = "weft-control")]
struct ControlCommand {
    #[command(flatten)]
    args: weft_control::config::ControlArgs,
}

/// Parses the control plane's rendered args with its own flag parser and
/// checks (cert lifetime bounds, trust domain, log filter…): values it
/// would refuse at start are refused now, before anything is applied.
fn check_control_plane_args(documents: &[Document]) -> anyhow::Result<()> {
    let deployment = documents
        .iter()
        .find(|d| d.kind() == "Deployment" && d.name() == "weft-control")
        .context("no weft-control Deployment rendered")?;
    let args: Vec<String> = deployment.object["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect();
    let parsed = ControlCommand::try_parse_from(std::iter::once("weft-control".to_owned()).chain(args))
        .map_err(|e| anyhow::anyhow!("the control plane would refuse these values: {e}"))?;
    parsed.args.into_config().map_err(|e| anyhow::anyhow!("the control plane would refuse these values: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(set: &[&str]) -> ValuesArgs {
        ValuesArgs {
            namespace: "weft-system".into(),
            values: Vec::new(),
            set: set.iter().map(|s| (*s).to_owned()).collect(),
            set_file: Vec::new(),
            identity_external_issuer: false,
        }
    }

    #[test]
    fn clap_definitions_are_valid() {
        use clap::CommandFactory as _;
        ControlCommand::command().debug_assert();
    }

    /// Generated by default; refused when half given, or given beside
    /// --identity-external-issuer; an external issuer needs its anchors.
    #[test]
    fn identity_choices() {
        let now = SystemTime::now();
        let mut v = args(&[]).load().expect("defaults");
        assert!(v.install_namespace, "weft install renders the Namespace");
        let note = identity(&mut v, false, now).expect("generated").expect("a note");
        assert!(note.contains("generated a new trust anchor and issuer for cluster.local"), "{note}");
        assert!(v.identity.issuer.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        // Given back, the same three are accepted as they are.
        let generated = v.identity.clone();
        assert_eq!(identity(&mut v, false, now).expect("given"), None);
        assert_eq!(v.identity, generated, "nothing regenerated");

        let other = {
            let mut o = args(&[]).load().expect("defaults");
            identity(&mut o, false, now).expect("generated");
            o.identity
        };
        let mut mixed = v.clone();
        mixed.identity.trust_anchors_pem = other.trust_anchors_pem.clone();
        let e = identity(&mut mixed, false, now).expect_err("another mesh's anchors").to_string();
        assert!(e.contains("does not chain to identity.trustAnchorsPEM"), "{e}");
        let mut wrong_key = v.clone();
        wrong_key.identity.issuer.key_pem = other.issuer.key_pem.clone();
        let e = identity(&mut wrong_key, false, now).expect_err("another key").to_string();
        assert!(e.contains("this key does not belong to the certificate"), "{e}");
        let mut half = v.clone();
        half.identity.issuer.key_pem.clear();
        assert!(identity(&mut half, false, now).expect_err("half").to_string().contains("go together"));
        let mut anchors_only = args(&[]).load().expect("defaults");
        anchors_only.identity.trust_anchors_pem = generated.trust_anchors_pem.clone();
        assert!(
            identity(&mut anchors_only, false, now)
                .expect_err("anchors only")
                .to_string()
                .contains("without an issuer")
        );

        let mut external = args(&[]).load().expect("defaults");
        let e = identity(&mut external, true, now).expect_err("no anchors").to_string();
        assert!(e.contains("--set-file identity.trustAnchorsPEM=ca.crt"), "{e}");
        external.identity.trust_anchors_pem = generated.trust_anchors_pem.clone();
        assert_eq!(identity(&mut external, true, now).expect("anchors given"), None);
        assert!(external.identity.issuer.cert_pem.is_empty(), "no Secret rendered");
        let mut cm = args(&["webhook.certManager.enabled=true"]).load().expect("values");
        assert_eq!(identity(&mut cm, true, now).expect("cert-manager makes the webhook's certificate"), None);
        assert!(identity(&mut v, true, now).expect_err("both").to_string().contains("do not also give"));
    }

    /// Values the schema lets through but the control plane refuses are
    /// caught by its own parser.
    #[test]
    fn the_control_planes_parser_checks_its_args() {
        let render = |set: &[&str]| {
            let mut v = args(set).load().expect("values");
            identity(&mut v, false, SystemTime::now()).expect("identity");
            render::render(&v, "weft-system", false).expect("render")
        };
        check_control_plane_args(&render(&[])).expect("the defaults");
        check_control_plane_args(&render(&["identity.certLifetime=1h30m", "policy.defaultAccess=deny"]))
            .expect("valid");
        let e = check_control_plane_args(&render(&["identity.certLifetime=1s"])).expect_err("too short").to_string();
        assert!(e.contains("--cert-lifetime 1s must be between 5s and 30days"), "{e}");
        let e =
            check_control_plane_args(&render(&[r"logLevel=info\,weft=notalevel"])).expect_err("bad filter").to_string();
        assert!(e.contains("--log"), "{e}");
        check_control_plane_args(&render(&[
            "tracing.collector=otel-collector.observability:4317",
            "tracing.sampling=1",
            "dashboard.enabled=false",
            "telemetry.interval=0s",
        ]))
        .expect("tracing on, dashboard and scraping off");
        let e = check_control_plane_args(&render(&["telemetry.interval=30m"])).expect_err("retention").to_string();
        assert!(e.contains("--telemetry-retention"), "{e}");
    }

    #[test]
    fn namespaces() {
        for (ns, ok) in [
            ("weft-system", true),
            ("a", true),
            ("mesh-2", true),
            ("", false),
            ("Weft", false),
            ("-a", false),
            ("a.b", false),
        ] {
            assert_eq!(check_namespace(ns).is_ok(), ok, "{ns:?}");
        }
        assert!(check_namespace(&"a".repeat(64)).is_err());
    }

    /// Uninstall: the webhook first, CRDs last, names only; the issuer's
    /// Secret only when install generated it.
    #[test]
    fn deletion_order() {
        let mut v = args(&[]).load().expect("values");
        identity(&mut v, false, SystemTime::now()).expect("identity");
        let docs = render::render(&v, "weft-system", true).expect("render");
        let text = deletion(&docs).expect("deletion");
        let objects: Vec<Value> = text
            .split("---\n")
            .skip(1)
            .map(|d| {
                serde_json::to_value(serde_yaml_ng::from_str::<serde_yaml_ng::Value>(d).expect("yaml")).expect("json")
            })
            .collect();
        let names: Vec<String> = objects
            .iter()
            .map(|o| {
                format!(
                    "{}/{}",
                    o["kind"].as_str().unwrap_or_default(),
                    o["metadata"]["name"].as_str().unwrap_or_default()
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                "MutatingWebhookConfiguration/weft-injector",
                "PodDisruptionBudget/weft-injector",
                "PodDisruptionBudget/weft-control",
                "Deployment/weft-injector",
                "Deployment/weft-control",
                "Service/weft-injector",
                "Service/weft-control",
                "Secret/weft-identity-issuer",
                "RoleBinding/weft-injector",
                "RoleBinding/weft-control",
                "Role/weft-injector",
                "Role/weft-control",
                "ClusterRoleBinding/weft-injector",
                "ClusterRoleBinding/weft-control",
                "ClusterRole/weft-injector",
                "ClusterRole/weft-control",
                "ServiceAccount/weft-injector",
                "ServiceAccount/weft-control",
                "Namespace/weft-system",
                "CustomResourceDefinition/trafficpolicies.policy.weft.dev",
                "CustomResourceDefinition/accesspolicies.policy.weft.dev",
            ]
        );
        assert_eq!(
            objects[1],
            json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "weft-injector", "namespace": "weft-system"}})
        );
        assert!(!text.contains("BEGIN"), "no key material in a deletion");
    }
}
