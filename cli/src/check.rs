//! `weft check -f mesh.yaml`: validates a mesh file and its policies exactly
//! as `weft up` and the control plane would, without starting anything, and
//! prints the policy every service port runs with — the mesh's built-in
//! defaults included, so that what the mesh does when nobody configured it
//! is never a surprise.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use weft_api::policy as api;
use weft_control::index::{Index, MeshConfig, Target};
use weft_control::source::files::LocalFiles;

use crate::meshfile::LoadedMesh;
use crate::plan::{Mode, Plan};

/// Checks `path`; `Ok(false)` when a policy file is refused.
pub fn run(path: &Path) -> anyhow::Result<bool> {
    let mesh = LoadedMesh::load(path)?;
    for warning in &mesh.warnings {
        println!("warning: {warning}");
    }
    let plan = Plan::new(&mesh.file, Mode::Netns, 0, Path::new("weft"), &[]);

    // The services file the control plane would get, in a private scratch file.
    let scratch = tempfile::Builder::new()
        .prefix("weft-check-services-")
        .suffix(".yaml")
        .tempfile()
        .context("creating a scratch file for the services")?;
    std::fs::write(scratch.path(), plan.services_yaml()).context("writing the scratch services file")?;
    let mut files = LocalFiles::new(Some(scratch.path().to_owned()), mesh.file.spec.policies.clone(), Duration::ZERO);
    let outcome = files.poll();
    let refused = outcome.rejected.len();
    for e in &outcome.rejected {
        println!("error: {e}");
    }
    let index = Index::new(MeshConfig::default());
    index.apply(outcome.events);
    let state = index.state();

    println!(
        "{}: {} services, {} workloads, {} policy resources{}",
        path.display(),
        plan.services.len(),
        mesh.file.spec.workloads.len(),
        state.policies.len(),
        if refused == 0 { String::new() } else { format!(", {refused} files refused") },
    );
    // An address no service has: what the mesh-wide level says.
    let mesh_wide = state.outbound(&Target::Addr(([0, 0, 0, 0], 1).into()), "default");
    print!("{}", render("mesh-wide (any destination)", &mesh_wide));
    for svc in &plan.services {
        for port in &svc.ports {
            let target = Target::Addr((svc.vip, port.port).into());
            let policy = state.outbound(&target, &svc.namespace);
            print!("{}", render(&format!("{}.{}:{}", svc.name, svc.namespace, port.port), &policy));
        }
    }
    Ok(refused == 0)
}

/// One block of the report.
fn render(title: &str, p: &api::OutboundPolicy) -> String {
    let mut out = format!("\n{title}\n");
    let mut line = |k: &str, v: String| {
        let _ = writeln!(out, "  {k:<10} {v}");
    };
    if !p.routes.is_empty() {
        for r in &p.routes {
            let backends: Vec<String> =
                r.backends.iter().map(|b| format!("{}:{} ({})", b.service, b.port, b.weight)).collect();
            let to = if backends.is_empty() { "redirect".to_owned() } else { backends.join(", ") };
            line(
                "route",
                format!("{} {} → {to}", r.name, r.matches.iter().map(describe_match).collect::<Vec<_>>().join(" | ")),
            );
        }
    }
    if let Some(t) = &p.timeouts {
        line(
            "timeouts",
            format!(
                "request {}, backend request {}, connect {}, idle {}",
                ms(t.request_ms),
                ms(t.backend_request_ms),
                ms(t.connect_ms),
                ms(t.idle_ms)
            ),
        );
    }
    if let Some(r) = &p.retry {
        let budget = r.budget.as_ref().map_or_else(
            || "no budget".to_owned(),
            |b| format!("budget {:.0} % + {}/s over {}", b.ratio * 100.0, b.min_retries_per_second, ms(b.window_ms)),
        );
        line(
            "retries",
            format!(
                "{} on [{}], backoff {}..{}, {budget}, bodies ≤ {} B{}",
                r.attempts,
                r.retry_on.join(", "),
                ms(r.backoff_base_ms),
                ms(r.backoff_max_ms),
                r.max_body_bytes,
                if r.allow_non_idempotent { ", non-idempotent too" } else { "" }
            ),
        );
    }
    if let Some(lb) = &p.load_balancer {
        let kind = api::load_balancer::Kind::try_from(lb.kind).map_or("unknown", |k| k.as_str_name());
        line("balancer", kind.to_ascii_lowercase());
    }
    if let Some(cb) = &p.circuit_breaker {
        let v = if cb.consecutive_failures == 0 && cb.min_success_rate == 0.0 {
            "off".to_owned()
        } else {
            format!(
                "eject after {} consecutive failures or success < {:.0} %, {}..{}",
                cb.consecutive_failures,
                cb.min_success_rate * 100.0,
                ms(cb.base_ejection_ms),
                ms(cb.max_ejection_ms)
            )
        };
        line("circuit", v);
    }
    if let Some(f) = &p.fault
        && (f.delay_percent > 0 || f.abort_percent > 0)
    {
        line(
            "faults",
            format!(
                "delay {} % by {}, abort {} % with {}",
                f.delay_percent,
                ms(f.delay_ms),
                f.abort_percent,
                f.abort_status
            ),
        );
    }
    line("from", if p.sources.is_empty() { "built-in defaults".to_owned() } else { p.sources.join(", ") });
    out
}

fn describe_match(m: &api::RouteMatch) -> String {
    let mut parts = Vec::new();
    if let Some(path) = &m.path {
        let kind = api::string_match::Kind::try_from(path.kind).map_or("?", |k| k.as_str_name());
        parts.push(format!("path {} {}", kind.to_ascii_lowercase(), path.value));
    }
    for h in &m.headers {
        parts.push(format!("header {}={}", h.name, h.value.as_ref().map_or("", |v| v.value.as_str())));
    }
    for q in &m.query_params {
        parts.push(format!("query {}={}", q.name, q.value.as_ref().map_or("", |v| v.value.as_str())));
    }
    if !m.method.is_empty() {
        parts.push(format!("method {}", m.method));
    }
    if parts.is_empty() { "any".to_owned() } else { parts.join(" & ") }
}

fn ms(v: u64) -> String {
    if v == 0 { "none".to_owned() } else { humantime::format_duration(Duration::from_millis(v)).to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_defaults_are_spelled_out() {
        let index = Index::new(MeshConfig::default());
        let p = index.state().outbound(&Target::Addr(([0, 0, 0, 0], 1).into()), "default");
        let text = render("mesh-wide", &p);
        for want in [
            "timeouts   request 15s, backend request none, connect 1s, idle none",
            "retries    2 on [connect-failure], backoff 25ms..250ms, budget 20 % + 10/s over 10s, bodies ≤ 65536 B",
            "balancer   ewma",
            "circuit    off",
            "from       built-in defaults",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
    }
}

#[cfg(test)]
mod file_tests {
    const MESH: &str = "apiVersion: weft.dev/v1alpha1
kind: LocalMesh
metadata: {name: t}
spec:
  policies: [./policy]
  services:
    - {name: web, namespace: default, selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}
  workloads:
    - {name: web, namespace: default, labels: {app: web}, command: [sleep, '1'], ports: [8080]}
";

    #[test]
    fn a_refused_policy_fails_the_check_and_a_good_one_shows_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("mesh.yaml"), MESH).expect("mesh file");
        std::fs::create_dir(dir.path().join("policy")).expect("policy dir");
        let good = "apiVersion: policy.weft.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: web-timeouts, namespace: default}
spec:
  targetRef: {kind: Service, name: web}
  timeouts: {request: 2s}
";
        std::fs::write(dir.path().join("policy/good.yaml"), good).expect("policy");
        assert!(super::run(&dir.path().join("mesh.yaml")).expect("runs"), "a valid mesh was refused");

        std::fs::write(dir.path().join("policy/bad.yaml"), good.replace("request: 2s", "request: 1.5s"))
            .expect("policy");
        assert!(!super::run(&dir.path().join("mesh.yaml")).expect("runs"), "an invalid duration passed the check");
    }
}
