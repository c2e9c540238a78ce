//! CI's regression bar on the proxy's cost (issue #15): `weft-bench
//! callgrind` counts the instructions one weft-proxy executes per request
//! under valgrind's callgrind on five paths (outbound plaintext HTTP/1;
//! outbound and inbound HTTP/1 and opaque TCP over mTLS), with the debug
//! binaries the tests build, and `--check`s the medians of three runs
//! against `bench/callgrind-baseline.json`: a count above its baseline ×
//! (1 + tolerance) fails. The table is printed either way.
//!
//! After a change that moves a count on purpose (or a toolchain or
//! dependency bump), record the new figures and commit them with it:
//!
//! ```sh
//! WEFT_CALLGRIND_UPDATE=1 cargo nextest run -p weft-bench --test callgrind
//! ```
//!
//! It needs root (network namespaces) and valgrind; without valgrind it
//! fails saying `apt-get install valgrind`, it never skips.

use std::process::Command;
use std::time::Duration;

use common::read;

mod common;

/// Set to `1` to write the measured medians into the baseline instead of
/// checking them.
const ENV_UPDATE: &str = "WEFT_CALLGRIND_UPDATE";
const BASELINE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/callgrind-baseline.json");
/// About a minute on a quiet 2-core machine; this bounds a hung one.
const DEADLINE: Duration = Duration::from_secs(300);

#[test]
fn instructions_per_request_stay_within_the_baseline() {
    if let Err(e) = weft_bench::callgrind::preflight() {
        panic!("{e:#}");
    }
    let update = std::env::var(ENV_UPDATE).is_ok_and(|v| v == "1");
    let out = tempfile::tempdir().expect("a temporary directory");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weft-bench"));
    cmd.args(["callgrind", "--runs", "3", "--check", BASELINE, "--out"]).arg(out.path());
    if update {
        cmd.arg("--update-baseline");
    }
    let common::Run { status, stdout, stderr, took } = common::run(cmd, DEADLINE);
    // The figures and the check, whatever the outcome.
    println!("{stdout}");
    println!("(weft-bench callgrind took {:.0} s)", took.as_secs_f64());
    let Some(status) = status else {
        panic!("weft-bench callgrind still ran after {DEADLINE:?}:\nstderr:\n{stderr}");
    };
    assert!(
        status.success(),
        "weft-bench callgrind --check {BASELINE} failed ({status}): a count per request is over its limit, or \
         the run failed (stderr below). If the change is intended, record the new figures with \
         `{ENV_UPDATE}=1 cargo nextest run -p weft-bench --test callgrind` and commit the baseline.\n\
         stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&read(&out.path().join("callgrind.json"))).expect("callgrind.json is JSON");
    let paths: Vec<&str> = json["paths"].as_array().expect("paths").iter().filter_map(|p| p["path"].as_str()).collect();
    assert_eq!(
        paths,
        ["outbound-http1", "outbound-mtls-http1", "inbound-mtls-http1", "outbound-mtls-tcp", "inbound-mtls-tcp"]
    );
    assert!(read(&out.path().join("callgrind.md")).contains("| outbound-mtls-http1 |"));
}
