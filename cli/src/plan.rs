//! From a mesh file to the concrete things to create: names, addresses,
//! virtual IPs, each pod's environment and command line. Pure (the caller
//! passes the run id, the mode and the inherited environment), so every
//! choice here is tested without creating anything.
//!
//! Addresses:
//!
//! | what | network namespaces | loopback |
//! | --- | --- | --- |
//! | control plane | 198.18.0.1 (the hub's bridge) | 127.N.0.1 |
//! | pod k (0-based) | 198.18.(1 + k / 254).(1 + k % 254) | 127.N.(1 + k / 254).(1 + k % 254) |
//! | service j's virtual IP | 198.19.(j / 254).(1 + j % 254) | same (known to the control plane) |
//!
//! 198.18.0.0/15 is the RFC 2544 benchmarking range: it is only ever used
//! inside the network namespaces a run creates, never in the root one.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;

use crate::meshfile::{DefaultAccess, MeshFile, Mtls, MtlsMode, ServicePort};

/// The hub's bridge address, the pods' default gateway and the control plane's address.
pub const HUB_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// Pods and the hub share this prefix length (198.18.0.0/16).
pub const POD_PREFIX_LEN: u8 = 16;
/// Where service virtual IPs come from (198.19.0.0/16).
const VIP_NET: [u8; 2] = [198, 19];
const POD_NET: [u8; 2] = [198, 18];
pub const CONTROL_GRPC_PORT: u16 = 8090;
pub const CONTROL_ADMIN_PORT: u16 = 9990;
pub const PROXY_OUTBOUND_PORT: u16 = 4140;
pub const PROXY_INBOUND_PORT: u16 = 4143;
pub const PROXY_ADMIN_PORT: u16 = 4191;
/// The proxy's UID; `weft-proxy init` exempts its traffic from interception.
pub const PROXY_UID: u32 = 2102;
/// The SPIFFE trust domain of the mesh's identities.
pub const TRUST_DOMAIN: &str = "cluster.local";

/// How pods are isolated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// As root: a network namespace per pod, transparent interception.
    Netns,
    /// Without root: each pod on its own 127.N.x.y address; apps use their
    /// proxy as an explicit HTTP proxy. N is the run's loopback block.
    Loopback { block: u8 },
}

/// `weft up --mtls`: whether the proxies get identities and speak mTLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MtlsChoice {
    /// As the mesh file says (`spec.mtls.enabled`, on by default) with
    /// network namespaces; off in loopback mode.
    Auto,
    /// On whatever the file says (network namespaces only).
    On,
    /// Off whatever the file says: proxies without identities, plaintext.
    Off,
}

/// The mesh CA is on: every proxy gets an identity and a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MtlsPlan {
    /// The control plane's `--mtls-mode`; `None`: its default (permissive).
    pub mode: Option<MtlsMode>,
    /// The control plane's `--cert-lifetime`; `None`: its default (24h).
    pub cert_lifetime: Option<String>,
}

impl MtlsPlan {
    /// For messages: `strict`, `permissive`.
    pub fn mode_name(&self) -> &'static str {
        self.mode.unwrap_or(MtlsMode::Permissive).as_flag()
    }
}

/// Decides whether a run has mTLS: `--mtls` (`choice`), the mode, and the
/// file's `spec.mtls`. Also returns warnings (settings the decision ignores).
pub fn decide_mtls(choice: MtlsChoice, mode: Mode, file: &Mtls) -> Result<(Option<MtlsPlan>, Vec<String>), String> {
    let mut warnings = Vec::new();
    let on = match (choice, mode) {
        (MtlsChoice::On, Mode::Loopback { .. }) => {
            return Err("--mtls on needs network namespaces (--mode netns, as root): loopback mode has no inbound \
                        proxy to terminate mTLS"
                .into());
        }
        (MtlsChoice::Off, _) => false,
        (MtlsChoice::On, Mode::Netns) => true,
        (MtlsChoice::Auto, Mode::Netns) => file.enabled,
        (MtlsChoice::Auto, Mode::Loopback { .. }) => {
            if !file.is_default() && file.enabled {
                warnings.push("spec.mtls is ignored: loopback mode runs without mTLS".to_owned());
            }
            false
        }
    };
    if choice == MtlsChoice::Off && (file.mode.is_some() || file.cert_lifetime.is_some()) {
        warnings.push("spec.mtls.mode and certLifetime are ignored: --mtls off".to_owned());
    }
    Ok((on.then(|| MtlsPlan { mode: file.mode, cert_lifetime: file.cert_lifetime.clone() }), warnings))
}

/// Everything a run creates, decided up front.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub mode: Mode,
    /// `weft-<pid>`: the prefix of every network namespace of this run.
    pub prefix: String,
    pub mesh_name: String,
    pub control_ip: Ipv4Addr,
    pub services: Vec<ServicePlan>,
    pub pods: Vec<PodPlan>,
    /// `Some` when the proxies have identities and speak mTLS (as
    /// [`decide_mtls`] says for [`MtlsChoice::Auto`] unless changed).
    pub mtls: Option<MtlsPlan>,
    /// The control plane's `--default-access`, if the file sets it.
    pub default_access: Option<DefaultAccess>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServicePlan {
    pub name: String,
    pub namespace: String,
    pub vip: Ipv4Addr,
    pub selector: BTreeMap<String, String>,
    pub ports: Vec<ServicePort>,
    /// Indexes into [`Plan::pods`] of the pods it selects.
    pub pods: Vec<usize>,
}

impl PodPlan {
    /// The pod's mesh identity: `spiffe://cluster.local/ns/NS/sa/SA`.
    pub fn identity(&self) -> String {
        format!("spiffe://{TRUST_DOMAIN}/ns/{}/sa/{}", self.namespace, self.service_account)
    }
}

impl ServicePlan {
    /// `name.namespace`.
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.name, self.namespace)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PodPlan {
    /// `<workload>-<replica>`, unique in the mesh.
    pub name: String,
    pub workload: String,
    pub namespace: String,
    pub service_account: String,
    pub labels: BTreeMap<String, String>,
    pub ports: Vec<u16>,
    pub ip: Ipv4Addr,
    /// The network namespace (`weft-<pid>-<pod>`); unused in loopback mode.
    pub netns: String,
    /// The hub's end of the pod's veth pair (interface names are ≤ 15 bytes).
    pub veth: String,
    /// The command with `$(VAR)` expanded and `weft` replaced by this binary.
    pub command: Vec<String>,
    /// The complete environment of the app (nothing else is inherited).
    pub env: BTreeMap<String, String>,
}

/// Variables passed from `weft up`'s own environment to every app.
pub const INHERITED_ENV: &[&str] = &["PATH", "HOME", "LANG", "LC_ALL", "TZ", "TERM", "USER"];

/// The k-th address of a /16 block, skipping .0 and .255 of each /24.
fn host(net: [u8; 2], k: usize, first_third: usize) -> Ipv4Addr {
    let third = u8::try_from(first_third + k / 254).expect("fewer than 254 × 254 addresses are planned");
    Ipv4Addr::new(net[0], net[1], third, (1 + k % 254) as u8)
}

impl Plan {
    /// Plans `mesh` for run `run_id` (the PID of `weft up`). `weft_exe`
    /// replaces a command's program `weft`; `inherited` is the part of
    /// `weft up`'s environment given to apps ([`INHERITED_ENV`]).
    pub fn new(mesh: &MeshFile, mode: Mode, run_id: u32, weft_exe: &Path, inherited: &[(String, String)]) -> Plan {
        let prefix = format!("weft-{run_id}");
        let (pod_net, control_ip) = match mode {
            Mode::Netns => (POD_NET, HUB_IP),
            Mode::Loopback { block } => ([127, block], Ipv4Addr::new(127, block, 0, 1)),
        };
        let mut pods = Vec::new();
        for w in &mesh.spec.workloads {
            for replica in 0..w.replicas {
                let k = pods.len();
                let name = format!("{}-{replica}", w.name);
                pods.push(PodPlan {
                    netns: format!("{prefix}-{name}"),
                    veth: format!("p{k}"),
                    ip: host(pod_net, k, 1),
                    name,
                    workload: w.name.clone(),
                    namespace: w.namespace.clone(),
                    service_account: w.service_account.clone(),
                    labels: w.labels.clone(),
                    ports: w.ports.clone(),
                    command: Vec::new(),
                    env: BTreeMap::new(),
                });
            }
        }
        let services: Vec<ServicePlan> = mesh
            .spec
            .services
            .iter()
            .enumerate()
            .map(|(j, s)| ServicePlan {
                name: s.name.clone(),
                namespace: s.namespace.clone(),
                vip: host(VIP_NET, j, 0),
                selector: s.selector.clone(),
                ports: s.ports.clone(),
                pods: mesh
                    .spec
                    .workloads
                    .iter()
                    .filter(|w| s.selects(w))
                    .flat_map(|w| pods.iter().enumerate().filter(|(_, p)| p.workload == w.name).map(|(i, _)| i))
                    .collect(),
            })
            .collect();

        let (mtls, _) = decide_mtls(MtlsChoice::Auto, mode, &mesh.spec.mtls).expect("auto never fails");
        let mut plan = Plan {
            mode,
            prefix,
            mesh_name: mesh.metadata.name.clone().unwrap_or_else(|| "mesh".into()),
            control_ip,
            services,
            pods,
            mtls,
            default_access: mesh.spec.default_access,
        };
        let workloads: BTreeMap<&str, _> = mesh.spec.workloads.iter().map(|w| (w.name.as_str(), w)).collect();
        for i in 0..plan.pods.len() {
            let w = workloads[plan.pods[i].workload.as_str()];
            let env = plan.env_for(&plan.pods[i], inherited, &w.env);
            let mut command: Vec<String> = w.command.iter().map(|arg| expand(arg, &env)).collect();
            if command.first().is_some_and(|p| p == "weft") {
                command[0] = weft_exe.to_string_lossy().into_owned();
            }
            let pod = &mut plan.pods[i];
            pod.env = env;
            pod.command = command;
        }
        plan
    }

    /// The address the app listens on: any address in its own network
    /// namespace (the inbound proxy reaches it on 127.0.0.1), its own
    /// loopback address otherwise.
    pub fn listen_ip(&self, pod: &PodPlan) -> String {
        match self.mode {
            Mode::Netns => "0.0.0.0".into(),
            Mode::Loopback { .. } => pod.ip.to_string(),
        }
    }

    /// An app's environment, like a Kubernetes container's: the downward-API
    /// style POD_* variables, `<SERVICE>_SERVICE_HOST`/`_PORT` for the
    /// services of its namespace, then the workload's own `env` (which wins
    /// and may refer to the others as `$(VAR)`).
    fn env_for(
        &self,
        pod: &PodPlan,
        inherited: &[(String, String)],
        own: &BTreeMap<String, String>,
    ) -> BTreeMap<String, String> {
        let mut env: BTreeMap<String, String> =
            inherited.iter().filter(|(k, _)| INHERITED_ENV.contains(&k.as_str())).cloned().collect();
        env.insert("POD_NAME".into(), pod.name.clone());
        env.insert("POD_NAMESPACE".into(), pod.namespace.clone());
        env.insert("POD_IP".into(), pod.ip.to_string());
        env.insert("POD_SERVICE_ACCOUNT".into(), pod.service_account.clone());
        env.insert("WEFT_LISTEN_IP".into(), self.listen_ip(pod));
        for s in self.services.iter().filter(|s| s.namespace == pod.namespace) {
            let Some(port) = s.ports.first() else { continue };
            let var = s.name.to_ascii_uppercase().replace('-', "_");
            let target = match self.mode {
                Mode::Netns => Some((s.vip, port.port)),
                // No virtual IPs on loopback: the first replica stands in.
                Mode::Loopback { .. } => s.pods.first().map(|&i| (self.pods[i].ip, port.target())),
            };
            if let Some((host, port)) = target {
                env.insert(format!("{var}_SERVICE_HOST"), host.to_string());
                env.insert(format!("{var}_SERVICE_PORT"), port.to_string());
            }
        }
        if let Mode::Loopback { .. } = self.mode {
            let proxy = format!("http://{}:{PROXY_OUTBOUND_PORT}", pod.ip);
            env.insert("HTTP_PROXY".into(), proxy.clone());
            env.insert("http_proxy".into(), proxy);
            env.insert("NO_PROXY".into(), "localhost,127.0.0.1,::1".into());
        }
        let base = env.clone();
        for (k, v) in own {
            env.insert(k.clone(), expand(v, &base));
        }
        env
    }

    /// The services file given to the control plane (`--services`).
    pub fn services_yaml(&self) -> String {
        #[derive(serde::Serialize)]
        #[serde(rename_all = "camelCase")]
        struct File<'a> {
            services: Vec<Entry<'a>>,
        }
        #[derive(serde::Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Entry<'a> {
            name: &'a str,
            namespace: &'a str,
            #[serde(rename = "virtualIP")]
            virtual_ip: String,
            selector: &'a BTreeMap<String, String>,
            ports: Vec<Port>,
        }
        #[derive(serde::Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Port {
            port: u16,
            target_port: u16,
        }
        let file = File {
            services: self
                .services
                .iter()
                .map(|s| Entry {
                    name: &s.name,
                    namespace: &s.namespace,
                    virtual_ip: s.vip.to_string(),
                    selector: &s.selector,
                    ports: s.ports.iter().map(|p| Port { port: p.port, target_port: p.target() }).collect(),
                })
                .collect(),
        };
        let mut text = String::from("# Generated by `weft up` for the control plane's --services.\n");
        text += &serde_yaml_ng::to_string(&file).expect("plain data serializes");
        text
    }

    /// The services whose endpoints include `pod`.
    pub fn services_of(&self, pod: usize) -> impl Iterator<Item = &ServicePlan> {
        self.services.iter().filter(move |s| s.pods.contains(&pod))
    }
}

/// Replaces `$(VAR)` with `env[VAR]` as Kubernetes does for commands and
/// env values: an unknown variable stays as written, `$$` is a literal `$`.
pub fn expand(input: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some((name, tail)) = after.strip_prefix('(').and_then(|s| s.split_once(')')) {
            match env.get(name) {
                Some(value) => out.push_str(value),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = tail;
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meshfile::LoadedMesh;
    use std::path::PathBuf;

    const MESH: &str = r#"
apiVersion: weft.dev/v1alpha1
kind: LocalMesh
spec:
  services:
    - {name: web, selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}
    - {name: my-store, selector: {app: store}, ports: [{port: 6379}]}
    - {name: other, namespace: prod, selector: {app: web}, ports: [{port: 80}]}
  workloads:
    - name: store
      labels: {app: store}
      command: [redis-server, --port, "6379"]
      ports: [6379]
    - name: web
      replicas: 3
      labels: {app: web}
      command: [weft, example, web, --listen, "$(WEFT_LISTEN_IP):8080", --store, "$(MY_STORE_SERVICE_HOST):$(MY_STORE_SERVICE_PORT)", "$(NOPE)", "$$(POD_IP)"]
      env: {GREETING: "hi $(POD_NAME)"}
      ports: [8080]
"#;

    fn plan(mode: Mode) -> Plan {
        let mesh = LoadedMesh::parse(MESH, Path::new("m.yaml"), PathBuf::from("/m")).expect("valid");
        let inherited = [("PATH".into(), "/usr/bin".into()), ("SECRET".into(), "x".into())];
        Plan::new(&mesh.file, mode, 4242, Path::new("/run/weft/4242/weft"), &inherited)
    }

    #[test]
    fn names_and_addresses() {
        let p = plan(Mode::Netns);
        let names: Vec<_> = p.pods.iter().map(|p| (p.name.as_str(), p.netns.as_str(), p.veth.as_str())).collect();
        assert_eq!(
            names,
            [
                ("store-0", "weft-4242-store-0", "p0"),
                ("web-0", "weft-4242-web-0", "p1"),
                ("web-1", "weft-4242-web-1", "p2"),
                ("web-2", "weft-4242-web-2", "p3"),
            ]
        );
        let ips: Vec<String> = p.pods.iter().map(|p| p.ip.to_string()).collect();
        assert_eq!(ips, ["198.18.1.1", "198.18.1.2", "198.18.1.3", "198.18.1.4"]);
        let vips: Vec<String> = p.services.iter().map(|s| s.vip.to_string()).collect();
        assert_eq!(vips, ["198.19.0.1", "198.19.0.2", "198.19.0.3"]);
        assert_eq!(p.control_ip, HUB_IP);
        assert_eq!(p.services[0].pods, [1, 2, 3]);
        assert_eq!(p.services[1].pods, [0]);
        assert!(p.services[2].pods.is_empty(), "selectors only match their own namespace");
        assert_eq!(p.services_of(1).map(|s| s.name.as_str()).collect::<Vec<_>>(), ["web"]);

        let l = plan(Mode::Loopback { block: 77 });
        assert_eq!(l.control_ip, Ipv4Addr::new(127, 77, 0, 1));
        assert_eq!(l.pods[3].ip, Ipv4Addr::new(127, 77, 1, 4));
    }

    #[test]
    fn addresses_skip_network_and_broadcast_like_hosts() {
        assert_eq!(host(POD_NET, 253, 1), Ipv4Addr::new(198, 18, 1, 254));
        assert_eq!(host(POD_NET, 254, 1), Ipv4Addr::new(198, 18, 2, 1));
        assert_eq!(host(VIP_NET, 0, 0), Ipv4Addr::new(198, 19, 0, 1));
        assert_eq!(host(VIP_NET, 508, 0), Ipv4Addr::new(198, 19, 2, 1));
    }

    #[test]
    fn environment_and_command_like_kubernetes() {
        let p = plan(Mode::Netns);
        let web = &p.pods[2];
        assert_eq!(
            web.command,
            [
                "/run/weft/4242/weft",
                "example",
                "web",
                "--listen",
                "0.0.0.0:8080",
                "--store",
                "198.19.0.2:6379",
                "$(NOPE)",
                "$(POD_IP)"
            ]
        );
        let env: Vec<(&str, &str)> = web.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            env,
            [
                ("GREETING", "hi web-1"),
                ("MY_STORE_SERVICE_HOST", "198.19.0.2"),
                ("MY_STORE_SERVICE_PORT", "6379"),
                ("PATH", "/usr/bin"),
                ("POD_IP", "198.18.1.3"),
                ("POD_NAME", "web-1"),
                ("POD_NAMESPACE", "default"),
                ("POD_SERVICE_ACCOUNT", "default"),
                ("WEB_SERVICE_HOST", "198.19.0.1"),
                ("WEB_SERVICE_PORT", "80"),
                ("WEFT_LISTEN_IP", "0.0.0.0"),
            ]
        );

        let l = plan(Mode::Loopback { block: 9 });
        let web = &l.pods[1];
        assert_eq!(web.command[4], "127.9.1.2:8080");
        assert_eq!(web.command[6], "127.9.1.1:6379", "the store's replica stands in for its service");
        assert_eq!(web.env["HTTP_PROXY"], "http://127.9.1.2:4140");
        assert_eq!(web.env["WEB_SERVICE_PORT"], "8080");
    }

    #[test]
    fn identities_and_the_mtls_decision() {
        let p = plan(Mode::Netns);
        assert_eq!(p.pods[0].identity(), "spiffe://cluster.local/ns/default/sa/default");
        assert_eq!(p.mtls, Some(MtlsPlan { mode: None, cert_lifetime: None }), "on by default with namespaces");
        assert_eq!(p.mtls.as_ref().map(MtlsPlan::mode_name), Some("permissive"));
        assert_eq!(p.default_access, None);
        assert_eq!(plan(Mode::Loopback { block: 9 }).mtls, None, "never in loopback mode");

        let on = MtlsPlan { mode: None, cert_lifetime: None };
        let loopback = Mode::Loopback { block: 9 };
        let default = Mtls::default();
        let disabled = Mtls { enabled: false, ..Mtls::default() };
        let strict = Mtls { enabled: true, mode: Some(MtlsMode::Strict), cert_lifetime: Some("1h".into()) };
        let cases: Vec<(MtlsChoice, Mode, &Mtls, Result<(Option<MtlsPlan>, usize), &str>)> = vec![
            (MtlsChoice::Auto, Mode::Netns, &default, Ok((Some(on.clone()), 0))),
            (MtlsChoice::Auto, Mode::Netns, &disabled, Ok((None, 0))),
            (
                MtlsChoice::Auto,
                Mode::Netns,
                &strict,
                Ok((Some(MtlsPlan { mode: Some(MtlsMode::Strict), cert_lifetime: Some("1h".into()) }), 0)),
            ),
            (MtlsChoice::On, Mode::Netns, &disabled, Ok((Some(on.clone()), 0))),
            (MtlsChoice::Off, Mode::Netns, &default, Ok((None, 0))),
            (MtlsChoice::Off, Mode::Netns, &strict, Ok((None, 1))),
            (MtlsChoice::Auto, loopback, &default, Ok((None, 0))),
            (MtlsChoice::Auto, loopback, &strict, Ok((None, 1))),
            (MtlsChoice::Off, loopback, &default, Ok((None, 0))),
            (MtlsChoice::On, loopback, &default, Err("--mtls on needs network namespaces")),
        ];
        for (choice, mode, file, want) in cases {
            let got = decide_mtls(choice, mode, file);
            match want {
                Ok((plan, warnings)) => {
                    let (got_plan, got_warnings) = got.unwrap_or_else(|e| panic!("{choice:?} {mode:?}: {e}"));
                    assert_eq!(got_plan, plan, "{choice:?} {mode:?} {file:?}");
                    assert_eq!(got_warnings.len(), warnings, "{choice:?} {mode:?} {file:?}: {got_warnings:?}");
                }
                Err(message) => assert!(got.unwrap_err().starts_with(message), "{choice:?} {mode:?}"),
            }
        }
    }

    #[test]
    fn expansion() {
        let env: BTreeMap<String, String> = [("A".into(), "1".into()), ("B".into(), "$(A)".into())].into();
        let cases = [
            ("$(A)", "1"),
            ("x$(A)y$(A)", "x1y1"),
            ("$(B)", "$(A)"),
            ("$$(A)", "$(A)"),
            ("$$", "$"),
            ("$A", "$A"),
            ("$(A", "$(A"),
            ("$(MISSING)", "$(MISSING)"),
            ("cost: 5$", "cost: 5$"),
        ];
        for (input, want) in cases {
            assert_eq!(expand(input, &env), want, "{input}");
        }
    }

    #[test]
    fn services_file_for_the_control_plane() {
        let p = plan(Mode::Netns);
        let yaml = p.services_yaml();
        let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(&yaml).unwrap();
        let web = &value["services"][0];
        assert_eq!(web["name"], "web");
        assert_eq!(web["namespace"], "default");
        assert_eq!(web["virtualIP"], "198.19.0.1");
        assert_eq!(web["selector"]["app"], "web");
        assert_eq!(web["ports"][0]["port"], 80);
        assert_eq!(web["ports"][0]["targetPort"], 8080);
        assert_eq!(value["services"][1]["ports"][0]["targetPort"], 6379);
    }
}
