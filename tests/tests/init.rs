//! `weft-proxy init`: the interception rules it installs and takes away.

use weft_tests::{Mesh, Pod};

/// `iptables-save -t nat` without the comment lines and with packet/byte
/// counters zeroed, so two dumps compare exactly.
fn nat_rules(pod: &Pod) -> String {
    let run = pod.exec("iptables-save", &["-t", "nat"]).ok();
    run.stdout
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| match (l.starts_with(':'), l.rfind(" [")) {
            (true, Some(i)) => format!("{} [0:0]", &l[..i]),
            _ => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn init_twice_then_remove_restores_the_nat_table() {
    let mesh = Mesh::new();
    let pod = mesh.pod("a");
    let before = nat_rules(&pod);

    pod.init::<&str>(&[]).ok();
    let once = nat_rules(&pod);
    assert_ne!(once, before, "init changed nothing");
    for chain in ["WEFT_INBOUND", "WEFT_OUTBOUND"] {
        assert!(once.contains(&format!(":{chain} - [0:0]")), "no chain {chain}:\n{once}");
    }
    assert!(once.contains("--to-ports 4143"), "no inbound redirect:\n{once}");
    assert!(once.contains("--to-ports 4140"), "no outbound redirect:\n{once}");
    assert!(once.contains("--uid-owner 2102"), "the proxy's UID is not exempt:\n{once}");

    // Idempotent: a second init (an init container restarted) leaves the
    // same rules, not a second copy.
    pod.init::<&str>(&[]).ok();
    assert_eq!(nat_rules(&pod), once, "a second init changed the rules");

    pod.init(&["--remove"]).ok();
    assert_eq!(nat_rules(&pod), before, "--remove did not restore the nat table");
}

#[test]
fn dry_run_changes_nothing() {
    let mesh = Mesh::new();
    let pod = mesh.pod("a");
    let before = nat_rules(&pod);
    let run = pod.init(&["--dry-run"]).ok();
    assert!(run.stdout.contains("WEFT_OUTBOUND"), "dry run printed no rules:\n{run}");
    assert_eq!(nat_rules(&pod), before);
}

#[test]
fn skipped_ports_and_cidrs_are_excluded() {
    let mesh = Mesh::new();
    let pod = mesh.pod("a");
    pod.init(&[
        "--skip-inbound-ports",
        "22,8081",
        "--skip-outbound-ports",
        "5432",
        "--skip-outbound-cidrs",
        "198.19.0.0/16",
    ])
    .ok();
    let rules = nat_rules(&pod);
    for needle in ["22", "8081", "5432", "198.19.0.0/16"] {
        assert!(rules.contains(needle), "{needle} is not in the rules:\n{rules}");
    }
    pod.init(&["--remove"]).ok();
}
