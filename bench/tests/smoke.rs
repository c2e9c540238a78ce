//! CI's check that the benchmark harness works: `weft-bench --smoke` starts
//! every setup in its network namespaces, serves a handful of requests
//! through each, and writes the three result files. Nothing about speed is
//! asserted. It also checks that the mTLS pair proved it speaks mTLS, that
//! the policy stack of `weft-policy` was in force, and that the
//! control-plane section ran.
//!
//! Like the other end-to-end tests it needs root, iptables, HAProxy, nginx
//! (with its stream module), openssl and tcpdump; without them it fails
//! with the fix, it never skips.

use std::process::Command;
use std::time::Duration;

use common::read;

mod common;

/// The smoke run takes seconds; this bounds a hung one.
const DEADLINE: Duration = Duration::from_secs(180);

#[test]
fn smoke_run_serves_through_every_setup_and_writes_the_results() {
    if let Err(e) = weft_bench::harness::preflight() {
        panic!("{e:#}");
    }
    let out = tempfile::tempdir().expect("a temporary directory");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weft-bench"));
    cmd.arg("--smoke").arg("--out").arg(out.path());
    let common::Run { status, stdout, stderr, took } = common::run(cmd, DEADLINE);
    println!("(weft-bench --smoke took {:.0} s)", took.as_secs_f64());
    let Some(status) = status else {
        panic!("weft-bench --smoke still ran after {DEADLINE:?}:\nstderr:\n{stderr}");
    };
    assert!(status.success(), "weft-bench --smoke exited with {status}:\nstderr:\n{stderr}\nstdout:\n{stdout}");

    for name in ["latest.md", "latest.json", "latest.svg"] {
        let path = out.path().join(name);
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        assert!(len > 0, "{} is missing or empty; stderr:\n{stderr}", path.display());
    }
    let json: serde_json::Value = serde_json::from_str(&read(&out.path().join("latest.json"))).expect("valid JSON");
    assert_eq!(json["failures"].as_array().map(Vec::len), Some(0), "{}", json["failures"]);
    let setups = json["setups"].as_array().expect("setups");
    let names: Vec<&str> = setups.iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(
        names,
        ["direct", "weft", "weft-mtls", "weft-policy", "weft-trace-0", "weft-trace-100", "haproxy-mtls", "nginx-mtls"]
    );
    // Eight setups × four workloads, every cell served.
    let cells = json["latency"].as_array().expect("latency cells");
    assert_eq!(cells.len(), 32, "{}", json["latency"]);
    for cell in cells {
        let ok: u64 = cell["runs"].as_array().unwrap().iter().map(|r| r["ok"].as_u64().unwrap()).sum();
        assert!(ok > 0, "nothing served in {} {}", cell["setup"], cell["workload"]);
    }
    // The weft proxies were really on the path, and the mTLS pair proved
    // that it speaks mTLS.
    for name in ["weft", "weft-mtls", "weft-policy", "weft-trace-0", "weft-trace-100"] {
        let setup = setups.iter().find(|s| s["name"] == name).unwrap();
        assert!(setup["accounting"].to_string().contains("HTTP requests"), "{setup}");
    }
    // Traced at ratio 1, not at 0.
    let sink = |name: &str| {
        let setup = setups.iter().find(|s| s["name"] == name).unwrap();
        let accounting = setup["accounting"].to_string();
        let n =
            accounting.split("the OTLP sink received ").nth(1).and_then(|r| r.split(' ').next()?.parse::<u64>().ok());
        n.unwrap_or_else(|| panic!("no sink count: {setup}"))
    };
    assert_eq!(sink("weft-trace-0"), 0);
    assert!(sink("weft-trace-100") > 0);
    // Both peer pairs proved that pod B wants a client certificate.
    for name in ["haproxy-mtls", "nginx-mtls"] {
        let setup = setups.iter().find(|s| s["name"] == name).unwrap();
        assert!(setup["checks"].to_string().contains("without a certificate is refused"), "{setup}");
    }
    let mtls = setups.iter().find(|s| s["name"] == "weft-mtls").unwrap();
    assert!(mtls["checks"].to_string().contains("verified client identity"), "{mtls}");
    let policy = setups.iter().find(|s| s["name"] == "weft-policy").unwrap();
    let checks = policy["checks"].to_string();
    assert!(checks.contains("HTTPRoute/default/app") && checks.contains("TrafficPolicy/default/app"), "{policy}");
    assert!(checks.contains("answered 404"), "{policy}");
    // What the policy stack adds, for every workload.
    assert_eq!(json["policy_stack"].as_array().map(Vec::len), Some(4), "{}", json["policy_stack"]);
    let md = read(&out.path().join("latest.md"));
    assert!(!md.contains("not available") && md.contains("## Latency"), "{md}");
    assert!(md.contains("## Added by the policy stack"), "{md}");
    // The control plane pushed a change to every stream and held the endpoints.
    let cp = &json["control_plane"];
    let push = cp["push"].as_array().expect("control plane push results");
    assert!(!push.is_empty() && push.iter().all(|p| p["missed"] == 0), "{cp}");
    assert!(cp["endpoints"]["registered"].as_u64() > Some(0), "{cp}");
    assert!(read(&out.path().join("latest.svg")).starts_with("<svg"));
}
