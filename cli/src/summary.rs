//! What `weft up` prints once the mesh is up: services with their virtual
//! IPs, pods with their addresses, and the commands to look around.

use crate::plan::{Mode, PROXY_ADMIN_PORT, PROXY_OUTBOUND_PORT};
use crate::runtime::LocalMesh;

impl LocalMesh {
    /// A few lines for the terminal: services, pods, where to look.
    pub fn summary(&self) -> String {
        use std::fmt::Write as _;
        let plan = &self.plan;
        let hub = self.hub();
        let mut out = String::new();
        let mode = match plan.mode {
            Mode::Netns => "a network namespace per pod, transparent interception".to_owned(),
            Mode::Loopback { block } => format!("loopback mode: pods on 127.{block}.x.y, apps use HTTP_PROXY"),
        };
        let _ = writeln!(out, "weft: mesh {:?} is up ({mode})", plan.mesh_name);
        let _ = match (&plan.mtls, plan.mode) {
            (Some(mtls), _) => writeln!(
                out,
                "weft: mTLS on ({}): every proxy holds a certificate for its pod's identity from the mesh CA in {}/",
                mtls.mode_name(),
                self.ca_dir().display()
            ),
            (None, Mode::Netns) => writeln!(out, "weft: mTLS off (--mtls off or spec.mtls): pods talk in plaintext"),
            (None, Mode::Loopback { .. }) => writeln!(out, "weft: mTLS off (loopback mode)"),
        };
        let _ = match plan.mode {
            Mode::Netns => writeln!(out, "\nSERVICES"),
            // The virtual IPs exist only inside the pods' namespaces.
            Mode::Loopback { .. } => writeln!(
                out,
                "\nSERVICES (no virtual IPs in loopback mode: the first replica's address, or any pod's proxy as \
                 shown under LOOK)"
            ),
        };
        for s in &plan.services {
            let ports: Vec<String> = s.ports.iter().map(|p| format!("{}→{}", p.port, p.target())).collect();
            let pods: Vec<&str> = s.pods.iter().map(|&i| plan.pods[i].name.as_str()).collect();
            let address = match plan.mode {
                Mode::Netns => s.vip.to_string(),
                Mode::Loopback { .. } => match (s.pods.first(), s.ports.first()) {
                    (Some(&i), Some(p)) => format!("{}:{}", plan.pods[i].ip, p.target()),
                    _ => "-".to_owned(),
                },
            };
            let _ = writeln!(out, "  {:<24} {:<15} {:<12} {}", s.qualified(), address, ports.join(","), pods.join(" "));
        }
        let _ = writeln!(out, "\nPODS");
        let places: Vec<String> = plan
            .pods
            .iter()
            .map(|pod| match plan.mode {
                Mode::Netns => format!("netns {}", pod.netns),
                Mode::Loopback { .. } => format!("admin http://{}:{PROXY_ADMIN_PORT}/", pod.ip),
            })
            .collect();
        let width = places.iter().map(String::len).max().unwrap_or(0);
        for (pod, place) in plan.pods.iter().zip(&places) {
            let name = format!("{}.{}", pod.name, pod.namespace);
            let _ = match plan.mtls {
                Some(_) => writeln!(out, "  {name:<24} {:<15} {place:<width$}  {}", pod.ip.to_string(), pod.identity()),
                None => writeln!(out, "  {name:<24} {:<15} {place}", pod.ip.to_string()),
            };
        }
        let admin = self.control_admin();
        let exec = |ns: &str| match plan.mode {
            Mode::Netns => format!("ip netns exec {ns} "),
            Mode::Loopback { .. } => String::new(),
        };
        let _ = writeln!(out, "\nLOOK");
        let _ = writeln!(out, "  control plane   {}curl -s http://{admin}/metrics", exec(&hub));
        // A proxy of the first service's, and a call to it from another pod.
        let first = plan.services.first();
        let server = first.and_then(|s| s.pods.first().copied()).or((!plan.pods.is_empty()).then_some(0));
        if let Some(pod) = server.map(|i| &plan.pods[i]) {
            let (_, proxy) = self.proxy_admin(pod);
            let _ = writeln!(out, "  a proxy         {}curl -s http://{proxy}/metrics", exec(&pod.netns));
            if plan.mtls.is_some() {
                let _ = writeln!(out, "  its identity    {}curl -s http://{proxy}/config", exec(&pod.netns));
            }
        }
        if let Some(s) = first {
            let caller = (0..plan.pods.len()).rev().find(|i| !s.pods.contains(i)).unwrap_or(0);
            let port = match s.ports.first().map_or(80, |p| p.port) {
                80 => String::new(),
                port => format!(":{port}"),
            };
            let _ = match (plan.mode, plan.pods.get(caller)) {
                (Mode::Netns, Some(pod)) => {
                    writeln!(out, "  call a service  {}curl -s http://{}{port}/", exec(&pod.netns), s.name)
                }
                // From the host, through a pod's outbound proxy: what its
                // app does with HTTP_PROXY.
                (Mode::Loopback { .. }, Some(pod)) => writeln!(
                    out,
                    "  call a service  curl -s -x http://{}:{PROXY_OUTBOUND_PORT} http://{}{port}/",
                    pod.ip, s.name
                ),
                (_, None) => Ok(()),
            };
        }
        let _ = writeln!(out, "  logs            {}/", self.logs_dir.display());
        out
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use crate::meshfile::LoadedMesh;
    use crate::plan::{Mode, MtlsChoice};
    use crate::runtime::{LocalMesh, Settings};
    use crate::system::Tools;

    fn two_pods() -> LoadedMesh {
        LoadedMesh::parse(
            "apiVersion: weft.dev/v1alpha1\nkind: LocalMesh\nmetadata: {name: s}\nspec:\n  services:\n    \
             - {name: web, selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}\n  workloads:\n    \
             - {name: web, labels: {app: web}, command: [weft], ports: [8080]}\n    \
             - {name: client, command: [weft]}\n",
            Path::new("m.yaml"),
            PathBuf::from("/"),
        )
        .unwrap()
    }

    #[test]
    fn loopback_mode_gives_addresses_one_can_call_from_the_host() {
        let settings = Settings {
            mode: Mode::Loopback { block: 9 },
            tools: None,
            state_root: "/run/weft".into(),
            log: "info".into(),
            mtls: MtlsChoice::Auto,
        };
        let summary = LocalMesh::new(&two_pods(), settings).unwrap().summary();
        for line in [
            "  web.default              127.9.1.1:8080  80→8080      web-0",
            "  call a service  curl -s -x http://127.9.1.2:4140 http://web/",
        ] {
            assert!(summary.lines().any(|l| l == line), "{line:?} missing from:\n{summary}");
        }
        assert!(!summary.contains("198.19."), "no virtual IP, which only exists in namespaces:\n{summary}");
    }

    #[test]
    fn says_where_everything_is() {
        let mesh = two_pods();
        let tools = Tools { ip: "/sbin/ip".into(), setpriv: "/bin/setpriv".into() };
        let settings = Settings {
            mode: Mode::Netns,
            tools: Some(tools),
            state_root: "/run/weft".into(),
            log: "info".into(),
            mtls: MtlsChoice::Auto,
        };
        let local = LocalMesh::new(&mesh, settings).unwrap();
        let summary = local.summary();
        let id = std::process::id();
        for line in [
            "weft: mesh \"s\" is up (a network namespace per pod, transparent interception)".to_owned(),
            format!(
                "weft: mTLS on (permissive): every proxy holds a certificate for its pod's identity from the mesh CA \
                 in /run/weft/{id}/ca/"
            ),
            "  web.default              198.19.0.1      80→8080      web-0".into(),
            format!(
                "  web-0.default            198.18.1.1      netns weft-{id}-web-0     \
                 spiffe://cluster.local/ns/default/sa/default"
            ),
            format!(
                "  client-0.default         198.18.1.2      netns weft-{id}-client-0  \
                 spiffe://cluster.local/ns/default/sa/default"
            ),
            format!("  control plane   ip netns exec weft-{id}-hub curl -s http://198.18.0.1:9990/metrics"),
            format!("  a proxy         ip netns exec weft-{id}-web-0 curl -s http://127.0.0.1:4191/metrics"),
            format!("  its identity    ip netns exec weft-{id}-web-0 curl -s http://127.0.0.1:4191/config"),
            format!("  call a service  ip netns exec weft-{id}-client-0 curl -s http://web/"),
            format!("  logs            /run/weft/{id}/logs/"),
        ] {
            assert!(summary.lines().any(|l| l == line), "{line:?} missing from:\n{summary}");
        }
    }
}
