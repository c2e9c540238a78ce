//! Name resolution inside a pod: `/etc/netns/<netns>/hosts`, which
//! `ip netns exec` bind-mounts over `/etc/hosts` for everything it starts.
//! Each service resolves to its virtual IP under the names a Kubernetes pod
//! would use: `svc.ns` and `svc.ns.svc.cluster.local` everywhere, and the
//! bare `svc` from pods of the same namespace (Kubernetes' search path).

use std::fmt::Write as _;

use crate::plan::{Plan, PodPlan};

/// The cluster domain of the fully qualified names.
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// The hosts file of `pod`.
pub fn render(plan: &Plan, pod: &PodPlan) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Written by `weft up` for pod {} ({}); removed when the mesh stops.", pod.name, pod.netns);
    let _ = writeln!(out, "127.0.0.1\tlocalhost");
    let _ = writeln!(out, "::1\tlocalhost ip6-localhost ip6-loopback");
    let _ = writeln!(out, "{}\t{} {}.{}", pod.ip, pod.name, pod.name, pod.namespace);
    for s in &plan.services {
        let fqdn = format!("{}.{}.svc.{CLUSTER_DOMAIN}", s.name, s.namespace);
        let qualified = s.qualified();
        let _ = if s.namespace == pod.namespace {
            writeln!(out, "{}\t{} {qualified} {fqdn}", s.vip, s.name)
        } else {
            writeln!(out, "{}\t{qualified} {fqdn}", s.vip)
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meshfile::LoadedMesh;
    use crate::plan::Mode;
    use std::path::{Path, PathBuf};

    #[test]
    fn services_resolve_like_in_kubernetes() {
        let mesh = LoadedMesh::parse(
            r#"
apiVersion: weft.dev/v1alpha1
kind: LocalMesh
spec:
  services:
    - {name: web, selector: {app: web}, ports: [{port: 80}]}
    - {name: db, namespace: data, selector: {app: db}, ports: [{port: 5432}]}
  workloads:
    - {name: web, labels: {app: web}, command: [web]}
"#,
            Path::new("m.yaml"),
            PathBuf::from("/"),
        )
        .unwrap();
        let plan = Plan::new(&mesh.file, Mode::Netns, 7, Path::new("/weft"), &[]);
        assert_eq!(
            render(&plan, &plan.pods[0]),
            "# Written by `weft up` for pod web-0 (weft-7-web-0); removed when the mesh stops.\n\
             127.0.0.1\tlocalhost\n\
             ::1\tlocalhost ip6-localhost ip6-loopback\n\
             198.18.1.1\tweb-0 web-0.default\n\
             198.19.0.1\tweb web.default web.default.svc.cluster.local\n\
             198.19.0.2\tdb.data db.data.svc.cluster.local\n"
        );
    }
}
