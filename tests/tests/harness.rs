//! The harness itself, without the proxy: pods reach each other over the
//! bridge, the testkit workloads answer, and namespaces vanish on drop.

use std::time::Duration;

use weft_tests::{Mesh, tool};

#[test]
fn pods_talk_over_the_bridge_without_a_proxy() {
    let mesh = Mesh::new();
    let a = mesh.pod("a");
    let b = mesh.pod("b");
    assert_eq!(a.ip().to_string(), "198.18.0.11");
    assert_eq!(b.ip().to_string(), "198.18.0.12");
    let _app = b.http_server(8080);

    let url = format!("http://{}/hello", b.addr(8080));
    let curl = a.curl(&[&url]);
    assert_eq!(curl.run.code(), Some(0), "{}", curl.run);
    assert_eq!(curl.status(), 200);
    assert_eq!(curl.header("x-weft-conn"), "1");
    // No proxy: the app sees pod a's own address.
    let peer = curl.header("x-weft-peer");
    assert!(peer.starts_with("198.18.0.11:"), "peer {peer}");
    assert!(curl.body().contains("path /hello\n"), "{}", curl.run);

    // Only the pod's own namespaces: nothing of the mesh is on loopback elsewhere.
    let out = a.exec("ip", &["-o", "addr", "show", "dev", "eth0"]).ok();
    assert!(out.stdout.contains("inet 198.18.0.11/24"), "{out}");
}

#[test]
fn namespaces_and_processes_are_removed_on_drop() {
    let (names, pid) = {
        let mesh = Mesh::new();
        let a = mesh.pod("a");
        // A process that no handle tracks (as a daemonizing workload would
        // leave behind): the mesh must find it in the namespace and kill it.
        let run = a.exec("sh", &["-c", "sleep 600 >/dev/null 2>&1 & echo $!"]).ok();
        let pid: u32 = run.stdout.trim().parse().expect("a PID");
        let hub = format!("{}-hub", a.ns().strip_suffix("-a").unwrap());
        (vec![a.ns().to_owned(), hub], pid)
    };
    let list = std::process::Command::new(tool("ip")).args(["netns", "list"]).output().unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    for name in &names {
        assert!(!list.lines().any(|l| l.split_whitespace().next() == Some(name)), "{name} still exists:\n{list}");
    }
    weft_tests::eventually(Duration::from_secs(5), "the untracked process is gone", || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit(')').next().map(str::trim_start).unwrap_or_default();
        if stat.is_empty() || state.starts_with('Z') { Ok(()) } else { Err(format!("/proc/{pid}/stat: {stat}")) }
    });
}
