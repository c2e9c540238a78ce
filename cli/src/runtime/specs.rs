//! The mesh's processes as data: for the control plane, each proxy and
//! each app, the program, arguments, environment, working directory and log
//! file, decided from the [`Plan`] and this run's file layout alone.
//!
//! ```text
//!   Plan + Specs (state dir, exe, policies, tools, tokens) ──control()/proxy()/app()──► supervise::Spec
//!   in network-namespace mode: ip netns exec NS [setpriv --reuid=UID … --] PROGRAM ARGS
//! ```
//!
//! Deciding, not doing: nothing here starts a process or touches a file,
//! so the table tests at the end pin every command line. The lifecycle
//! (`LocalMesh`) adds what is not data (a proxy's token minting
//! before each start) and hands the specs to the supervisor.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::identity::{self, Tokens};
use crate::plan::{
    CONTROL_ADMIN_PORT, CONTROL_GRPC_PORT, Mode, PROXY_ADMIN_PORT, PROXY_INBOUND_PORT, PROXY_OUTBOUND_PORT, PROXY_UID,
    Plan, PodPlan, TRUST_DOMAIN,
};
use crate::supervise::Spec;
use crate::system::{self, Tools};

/// The proxy's tap port (gRPC over mTLS; `weft-proxy run --tap-addr`): each
/// loopback-mode pod binds it on its own address.
const PROXY_TAP_PORT: u16 = 4190;
/// The control plane's dashboard and JSON API port (on its address).
pub const CONTROL_DASHBOARD_PORT: u16 = 8084;

/// The proxies' own drain deadline, well inside the lifecycle's grace
/// period between SIGTERM and SIGKILL.
const PROXY_DRAIN: &str = "2s";

/// Everything the mesh's command lines are made from.
pub(super) struct Specs<'a> {
    pub plan: &'a Plan,
    /// The hub's network namespace (`weft-<pid>-hub`).
    pub hub: String,
    pub state_dir: &'a Path,
    pub logs_dir: &'a Path,
    /// The weft binary the mesh's processes run.
    pub exe: &'a Path,
    /// The mesh file's directory: the apps' working directory.
    pub base_dir: &'a Path,
    /// The policy files and directories the control plane watches.
    pub policies: &'a [PathBuf],
    /// Log filter for the control plane and the proxies.
    pub log: &'a str,
    /// Present in network-namespace mode.
    pub tools: Option<&'a Tools>,
    /// With mTLS: where the bootstrap tokens are.
    pub tokens: Option<&'a Tokens>,
}

/// The log file of the process labelled `label`.
pub(super) fn log_path(logs_dir: &Path, label: &str) -> PathBuf {
    logs_dir.join(format!("{label}.log"))
}

/// The copy of the CA's certificate that the proxies pin.
pub(super) fn anchors_path(state_dir: &Path) -> PathBuf {
    state_dir.join("anchors.pem")
}

impl Mode {
    /// The hub's namespace in network-namespace mode.
    pub(super) fn netns_of_hub<'a>(&self, hub: &'a str) -> Option<&'a str> {
        (*self == Mode::Netns).then_some(hub)
    }
}

/// A command run in `netns` (network-namespace mode, when `tools` are
/// there), as `uid` when given; else `program` itself, here.
pub(super) fn in_netns(
    tools: Option<&Tools>,
    netns: Option<&str>,
    uid: Option<u32>,
    program: &Path,
    args: Vec<OsString>,
) -> (PathBuf, Vec<OsString>) {
    let Some((tools, netns)) = tools.zip(netns) else {
        return (program.to_owned(), args);
    };
    let mut full: Vec<OsString> = vec!["netns".into(), "exec".into(), netns.into()];
    if let Some(uid) = uid {
        full.push(tools.setpriv.clone().into());
        full.extend(
            [format!("--reuid={uid}"), format!("--regid={uid}"), "--clear-groups".into(), "--".into()]
                .map(OsString::from),
        );
    }
    full.push(program.into());
    full.extend(args);
    (tools.ip.clone(), full)
}

impl Specs<'_> {
    fn spec(&self, label: String, netns: Option<&str>, uid: Option<u32>, program: &Path, args: Vec<OsString>) -> Spec {
        let (program, args) = in_netns(self.tools, netns, uid, program, args);
        Spec {
            log: log_path(self.logs_dir, &label),
            label,
            program,
            args,
            // The logs are files: no colour codes in them.
            env: [("PATH".to_owned(), system::search_path()), ("NO_COLOR".to_owned(), "1".to_owned())].into(),
            cwd: self.state_dir.to_owned(),
            prepare: None,
        }
    }

    /// `weft control`, in the hub.
    pub fn control(&self) -> Spec {
        let args = control_args(self);
        self.spec(
            "control".into(),
            self.plan.mode.netns_of_hub(&self.hub),
            None,
            self.exe,
            args.into_iter().map(OsString::from).collect(),
        )
    }

    /// `weft proxy run` for `pod`, in its namespace as the proxy's UID.
    /// Without a [`Spec::prepare`]: minting tokens is the lifecycle's.
    pub fn proxy(&self, pod: &PodPlan) -> Spec {
        let args = proxy_args(self, pod);
        let uid = (self.plan.mode == Mode::Netns).then_some(PROXY_UID);
        self.spec(
            format!("{}.proxy", pod.name),
            Some(&pod.netns),
            uid,
            self.exe,
            args.into_iter().map(OsString::from).collect(),
        )
    }

    /// `pod`'s app: its command, its own environment, in the mesh file's directory.
    pub fn app(&self, pod: &PodPlan) -> Spec {
        let program = PathBuf::from(&pod.command[0]);
        let args = pod.command[1..].iter().map(OsString::from).collect();
        let mut spec = self.spec(format!("{}.app", pod.name), Some(&pod.netns), None, &program, args);
        spec.env = pod.env.clone();
        spec.env.entry("NO_COLOR".into()).or_insert_with(|| "1".into());
        spec.cwd = self.base_dir.to_owned();
        spec
    }
}

/// The control plane's arguments.
fn control_args(s: &Specs<'_>) -> Vec<String> {
    let ip = s.plan.control_ip;
    let mut args: Vec<String> = vec![
        "control".into(),
        "--grpc-addr".into(),
        format!("{ip}:{CONTROL_GRPC_PORT}"),
        "--admin-addr".into(),
        format!("{ip}:{CONTROL_ADMIN_PORT}"),
        "--services".into(),
        s.state_dir.join("services.yaml").to_string_lossy().into_owned(),
        "--log".into(),
        s.log.to_owned(),
        "--dashboard-addr".into(),
        format!("{ip}:{CONTROL_DASHBOARD_PORT}"),
    ];
    // Pods that serve nothing do not register, so the control plane
    // would not know to scrape their proxies' metrics (the callers' side
    // of `weft edges` and `weft routes`).
    for pod in s.plan.pods.iter().filter(|p| p.ports.is_empty()) {
        args.extend([
            "--telemetry-target".into(),
            format!("{}/{}/{}={}", pod.namespace, pod.name, pod.service_account, pod.ip),
        ]);
    }
    for policy in s.policies {
        args.extend(["--policy".into(), policy.to_string_lossy().into_owned()]);
    }
    if let (Some(mtls), Some(tokens)) = (&s.plan.mtls, s.tokens) {
        // The CA: a root generated in (and reused from) its own 0700
        // directory; gRPC is then served over TLS.
        args.extend([
            "--state-dir".into(),
            identity::ca_dir(s.state_dir).to_string_lossy().into_owned(),
            "--tokens".into(),
            tokens.file().to_string_lossy().into_owned(),
            "--trust-domain".into(),
            TRUST_DOMAIN.into(),
        ]);
        if let Some(mode) = mtls.mode {
            args.extend(["--mtls-mode".into(), mode.as_flag().into()]);
        }
        if let Some(lifetime) = &mtls.cert_lifetime {
            args.extend(["--cert-lifetime".into(), lifetime.clone()]);
        }
    }
    if let Some(access) = s.plan.default_access {
        args.extend(["--default-access".into(), access.as_flag().into()]);
    }
    args
}

/// `pod`'s proxy's arguments.
fn proxy_args(s: &Specs<'_>, pod: &PodPlan) -> Vec<String> {
    let plan = s.plan;
    let scheme = if s.tokens.is_some() { "https" } else { "http" };
    let mut args: Vec<String> = [
        "proxy",
        "run",
        "--control-plane",
        &format!("{scheme}://{}:{CONTROL_GRPC_PORT}", plan.control_ip),
        "--proxy-id",
        &pod.name,
        "--namespace",
        &pod.namespace,
        "--service-account",
        &pod.service_account,
        "--drain-timeout",
        PROXY_DRAIN,
        "--log",
        s.log,
    ]
    .map(String::from)
    .into();
    // A workload that serves nothing (a client, the load generator) is
    // not registered: it would never be anyone's endpoint.
    if !pod.ports.is_empty() {
        let ports: Vec<String> = pod.ports.iter().map(u16::to_string).collect();
        let labels: Vec<String> = pod.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        args.extend([
            "--workload-name".into(),
            pod.name.clone(),
            "--workload-address".into(),
            pod.ip.to_string(),
            "--workload-ports".into(),
            ports.join(","),
            "--workload-labels".into(),
            labels.join(","),
        ]);
        // Until a port's own policy reaches the proxy, the mesh's default
        // decides there, never something more open.
        if let Some(access) = plan.default_access {
            args.extend(["--default-inbound-policy".into(), access.as_flag().into()]);
        }
    }
    if plan.mode == Mode::Netns {
        // As in Kubernetes pods: the control plane scrapes /metrics at
        // the pod's address (/config and /shutdown answer loopback only).
        args.extend(["--admin-addr".into(), format!("0.0.0.0:{PROXY_ADMIN_PORT}")]);
    }
    if let Mode::Loopback { .. } = plan.mode {
        // Nothing intercepts in loopback mode: apps send their requests
        // to the proxy as their HTTP_PROXY.
        args.push("--explicit-proxy".into());
        for (flag, port) in [
            ("--inbound-addr", PROXY_INBOUND_PORT),
            ("--outbound-addr", PROXY_OUTBOUND_PORT),
            ("--admin-addr", PROXY_ADMIN_PORT),
            ("--tap-addr", PROXY_TAP_PORT),
        ] {
            args.extend([flag.into(), format!("{}:{port}", pod.ip)]);
        }
    }
    if let Some(tokens) = s.tokens {
        // Clients (no ports) get identities too: their connections are
        // mTLS like everyone's.
        args.extend([
            "--trust-anchors".into(),
            anchors_path(s.state_dir).to_string_lossy().into_owned(),
            "--identity-token-file".into(),
            tokens.token_path(&pod.name).to_string_lossy().into_owned(),
            "--trust-domain".into(),
            TRUST_DOMAIN.into(),
        ]);
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::TOKEN_TTL;
    use crate::meshfile::{DefaultAccess, LoadedMesh, MtlsMode};
    use crate::plan::MtlsPlan;

    const MESH: &str = "apiVersion: weft.dev/v1alpha1\nkind: LocalMesh\nspec:\n  services:\n    \
                        - {name: web, selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}\n  workloads:\n    \
                        - {name: web, labels: {app: web, tier: front}, serviceAccount: web, \
                           command: [weft, example, echo], ports: [8080, 9090]}\n    \
                        - {name: client, namespace: shop, command: [weft]}\n";
    const STATE: &str = "/run/weft/7";
    const EXE: &str = "/run/weft/7/weft";

    fn tools() -> Tools {
        Tools { ip: "/sbin/ip".into(), setpriv: "/bin/setpriv".into() }
    }

    fn plan(mode: Mode, mtls: Option<MtlsPlan>, default_access: Option<DefaultAccess>) -> Plan {
        let mesh = LoadedMesh::parse(MESH, Path::new("m.yaml"), PathBuf::from("/srv")).unwrap();
        let mut plan = Plan::new(&mesh.file, mode, 7, Path::new(EXE), &[]);
        plan.mtls = mtls;
        plan.default_access = default_access;
        plan
    }

    /// A spec's program and its arguments joined by spaces.
    fn argv(spec: &Spec) -> (String, String) {
        let args: Vec<String> = spec.args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
        (spec.program.display().to_string(), args.join(" "))
    }

    #[test]
    fn commands_in_a_namespace_enter_it_and_drop_to_the_uid() {
        let tools = tools();
        let args = || vec![OsString::from("a"), OsString::from("b")];
        #[rustfmt::skip]
        let cases: [(Option<&Tools>, Option<&str>, Option<u32>, &str, &str); 5] = [
            (None,         Some("ns"), Some(2102), "/x/prog",  "a b"),
            (None,         None,       None,       "/x/prog",  "a b"),
            (Some(&tools), None,       Some(2102), "/x/prog",  "a b"),
            (Some(&tools), Some("ns"), None,       "/sbin/ip", "netns exec ns /x/prog a b"),
            (Some(&tools), Some("ns"), Some(7),    "/sbin/ip",
             "netns exec ns /bin/setpriv --reuid=7 --regid=7 --clear-groups -- /x/prog a b"),
        ];
        for (tools, netns, uid, program, expected) in cases {
            let (got_program, got_args) = in_netns(tools, netns, uid, Path::new("/x/prog"), args());
            let got_args: Vec<String> = got_args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
            assert_eq!(
                (got_program.display().to_string(), got_args.join(" ")),
                (program.to_owned(), expected.to_owned()),
                "{netns:?} {uid:?}"
            );
        }
    }

    /// One mode and mTLS choice: the control plane's, web-0's proxy's,
    /// client-0's proxy's and web-0's app's command lines.
    struct Case {
        name: &'static str,
        mode: Mode,
        mtls: Option<MtlsPlan>,
        default_access: Option<DefaultAccess>,
        control: (&'static str, &'static str),
        web_proxy: (&'static str, &'static str),
        client_proxy: (&'static str, &'static str),
        web_app: (&'static str, &'static str),
    }

    #[test]
    fn command_lines_from_the_plan() {
        let cases = [
            Case {
                name: "netns with mTLS",
                mode: Mode::Netns,
                mtls: Some(MtlsPlan { mode: Some(MtlsMode::Strict), cert_lifetime: Some("1h".into()) }),
                default_access: Some(DefaultAccess::AllowAuthenticated),
                control: (
                    "/sbin/ip",
                    "netns exec weft-7-hub /run/weft/7/weft control --grpc-addr 198.18.0.1:8090 \
                     --admin-addr 198.18.0.1:9990 --services /run/weft/7/services.yaml --log info \
                     --dashboard-addr 198.18.0.1:8084 --telemetry-target shop/client-0/default=198.18.1.2 \
                     --policy /srv/policy --state-dir /run/weft/7/ca --tokens /run/weft/7/tokens.yaml \
                     --trust-domain cluster.local --mtls-mode strict --cert-lifetime 1h \
                     --default-access allow-authenticated",
                ),
                web_proxy: (
                    "/sbin/ip",
                    "netns exec weft-7-web-0 /bin/setpriv --reuid=2102 --regid=2102 --clear-groups -- \
                     /run/weft/7/weft proxy run --control-plane https://198.18.0.1:8090 --proxy-id web-0 \
                     --namespace default --service-account web --drain-timeout 2s --log info \
                     --workload-name web-0 --workload-address 198.18.1.1 --workload-ports 8080,9090 \
                     --workload-labels app=web,tier=front --default-inbound-policy allow-authenticated \
                     --admin-addr 0.0.0.0:4191 --trust-anchors /run/weft/7/anchors.pem \
                     --identity-token-file /run/weft/7/identity/web-0.token --trust-domain cluster.local",
                ),
                client_proxy: (
                    "/sbin/ip",
                    "netns exec weft-7-client-0 /bin/setpriv --reuid=2102 --regid=2102 --clear-groups -- \
                     /run/weft/7/weft proxy run --control-plane https://198.18.0.1:8090 --proxy-id client-0 \
                     --namespace shop --service-account default --drain-timeout 2s --log info \
                     --admin-addr 0.0.0.0:4191 --trust-anchors /run/weft/7/anchors.pem \
                     --identity-token-file /run/weft/7/identity/client-0.token --trust-domain cluster.local",
                ),
                web_app: ("/sbin/ip", "netns exec weft-7-web-0 /run/weft/7/weft example echo"),
            },
            Case {
                name: "netns without mTLS",
                mode: Mode::Netns,
                mtls: None,
                default_access: None,
                control: (
                    "/sbin/ip",
                    "netns exec weft-7-hub /run/weft/7/weft control --grpc-addr 198.18.0.1:8090 \
                     --admin-addr 198.18.0.1:9990 --services /run/weft/7/services.yaml --log info \
                     --dashboard-addr 198.18.0.1:8084 --telemetry-target shop/client-0/default=198.18.1.2 \
                     --policy /srv/policy",
                ),
                web_proxy: (
                    "/sbin/ip",
                    "netns exec weft-7-web-0 /bin/setpriv --reuid=2102 --regid=2102 --clear-groups -- \
                     /run/weft/7/weft proxy run --control-plane http://198.18.0.1:8090 --proxy-id web-0 \
                     --namespace default --service-account web --drain-timeout 2s --log info \
                     --workload-name web-0 --workload-address 198.18.1.1 --workload-ports 8080,9090 \
                     --workload-labels app=web,tier=front --admin-addr 0.0.0.0:4191",
                ),
                client_proxy: (
                    "/sbin/ip",
                    "netns exec weft-7-client-0 /bin/setpriv --reuid=2102 --regid=2102 --clear-groups -- \
                     /run/weft/7/weft proxy run --control-plane http://198.18.0.1:8090 --proxy-id client-0 \
                     --namespace shop --service-account default --drain-timeout 2s --log info \
                     --admin-addr 0.0.0.0:4191",
                ),
                web_app: ("/sbin/ip", "netns exec weft-7-web-0 /run/weft/7/weft example echo"),
            },
            Case {
                name: "loopback",
                mode: Mode::Loopback { block: 33 },
                mtls: None,
                default_access: Some(DefaultAccess::AllowAll),
                control: (
                    EXE,
                    "control --grpc-addr 127.33.0.1:8090 --admin-addr 127.33.0.1:9990 \
                     --services /run/weft/7/services.yaml --log info --dashboard-addr 127.33.0.1:8084 \
                     --telemetry-target shop/client-0/default=127.33.1.2 --policy /srv/policy \
                     --default-access allow-all",
                ),
                web_proxy: (
                    EXE,
                    "proxy run --control-plane http://127.33.0.1:8090 --proxy-id web-0 --namespace default \
                     --service-account web --drain-timeout 2s --log info --workload-name web-0 \
                     --workload-address 127.33.1.1 --workload-ports 8080,9090 --workload-labels app=web,tier=front \
                     --default-inbound-policy allow-all --explicit-proxy --inbound-addr 127.33.1.1:4143 --outbound-addr 127.33.1.1:4140 \
                     --admin-addr 127.33.1.1:4191 --tap-addr 127.33.1.1:4190",
                ),
                client_proxy: (
                    EXE,
                    "proxy run --control-plane http://127.33.0.1:8090 --proxy-id client-0 --namespace shop \
                     --service-account default --drain-timeout 2s --log info --explicit-proxy \
                     --inbound-addr 127.33.1.2:4143 --outbound-addr 127.33.1.2:4140 --admin-addr 127.33.1.2:4191 --tap-addr 127.33.1.2:4190",
                ),
                web_app: (EXE, "example echo"),
            },
        ];
        let tools = tools();
        let state = Path::new(STATE);
        let logs = state.join("logs");
        let policies = [PathBuf::from("/srv/policy")];
        for case in cases {
            let plan = plan(case.mode, case.mtls.clone(), case.default_access);
            let tokens = plan
                .mtls
                .is_some()
                .then(|| Tokens::new(state.join("tokens.yaml"), state.join("identity"), PROXY_UID, TOKEN_TTL));
            let specs = Specs {
                plan: &plan,
                hub: "weft-7-hub".into(),
                state_dir: state,
                logs_dir: &logs,
                exe: Path::new(EXE),
                base_dir: Path::new("/srv"),
                policies: &policies,
                log: "info",
                tools: (case.mode == Mode::Netns).then_some(&tools),
                tokens: tokens.as_ref(),
            };
            let own = |(program, args): (&str, &str)| (program.to_owned(), args.to_owned());
            let (web, client) = (&plan.pods[0], &plan.pods[1]);
            assert_eq!(argv(&specs.control()), own(case.control), "{}: control", case.name);
            assert_eq!(argv(&specs.proxy(web)), own(case.web_proxy), "{}: web-0's proxy", case.name);
            assert_eq!(argv(&specs.proxy(client)), own(case.client_proxy), "{}: client-0's proxy", case.name);
            assert_eq!(argv(&specs.app(web)), own(case.web_app), "{}: web-0's app", case.name);
        }
    }

    #[test]
    fn logs_environment_and_working_directories() {
        let plan = plan(Mode::Netns, None, None);
        let (state, logs) = (Path::new(STATE), Path::new("/run/weft/7/logs"));
        let tools = tools();
        let specs = Specs {
            plan: &plan,
            hub: "weft-7-hub".into(),
            state_dir: state,
            logs_dir: logs,
            exe: Path::new(EXE),
            base_dir: Path::new("/srv"),
            policies: &[],
            log: "info",
            tools: Some(&tools),
            tokens: None,
        };
        let web = &plan.pods[0];
        let control = specs.control();
        assert_eq!((control.label.as_str(), control.log.as_path()), ("control", logs.join("control.log").as_path()));
        assert_eq!(control.cwd, state);
        assert_eq!(control.env.keys().collect::<Vec<_>>(), ["NO_COLOR", "PATH"]);
        assert!(control.prepare.is_none());
        let proxy = specs.proxy(web);
        assert_eq!(proxy.log, logs.join("web-0.proxy.log"));
        assert!(proxy.prepare.is_none(), "minting tokens is the lifecycle's");
        let app = specs.app(web);
        assert_eq!((app.log, app.cwd), (logs.join("web-0.app.log"), PathBuf::from("/srv")));
        assert_eq!(app.env.get("NO_COLOR").map(String::as_str), Some("1"));
        assert_eq!(app.env.get("POD_NAME").map(String::as_str), Some("web-0"), "the app keeps its own environment");
    }
}
