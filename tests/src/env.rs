//! What the tests need from the machine, checked once per test process: root,
//! the system tools (by absolute path, so `ip netns exec` and a PATH without
//! `/usr/sbin` both work), and the binaries under test.
//!
//! Nothing here skips a test: a missing prerequisite is a loud failure that
//! names the Debian package to install.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The tools the tests run, with the Debian package that ships each.
const TOOLS: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("ss", "iproute2"),
    ("iptables", "iptables"),
    ("iptables-save", "iptables"),
    ("curl", "curl"),
    ("nghttp", "nghttp2-client"),
    ("redis-server", "redis-server"),
    ("redis-cli", "redis-tools"),
    ("setpriv", "util-linux"),
    ("promtool", "prometheus"),
    ("sh", "dash"),
    ("sha256sum", "coreutils"),
    ("timeout", "coreutils"),
    ("openssl", "openssl"),
    ("chromium", "chromium"),
    ("node", "nodejs"),
    ("tar", "tar"),
];

/// Directories searched besides `PATH`: root's tools live in sbin, which a
/// non-login environment may leave out.
const EXTRA_PATH: &[&str] = &["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"];

/// Checks that the tests can run here, once per process; panics with every
/// problem found and how to fix it.
pub fn preflight() {
    static CHECKED: OnceLock<()> = OnceLock::new();
    CHECKED.get_or_init(|| {
        let mut problems = Vec::new();
        if !nix::unistd::geteuid().is_root() {
            problems.push(
                "the end-to-end tests must run as root (they create network namespaces and \
                 iptables rules): run them with sudo or as root, as CI does"
                    .to_owned(),
            );
        }
        let missing: Vec<_> = TOOLS.iter().filter(|(name, _)| find(name).is_none()).collect();
        if !missing.is_empty() {
            let names: Vec<_> = missing.iter().map(|(n, _)| *n).collect();
            let mut packages: Vec<_> = missing.iter().map(|(_, p)| *p).collect();
            packages.dedup();
            problems.push(format!(
                "missing tools: {}; install them with: apt-get install -y {}",
                names.join(", "),
                packages.join(" ")
            ));
        }
        assert!(problems.is_empty(), "weft-tests cannot run on this machine:\n  - {}", problems.join("\n  - "));
    });
}

fn find(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(EXTRA_PATH.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// The absolute path of a system tool; panics (naming its package) if absent.
pub fn tool(name: &str) -> PathBuf {
    static FOUND: OnceLock<std::sync::Mutex<std::collections::HashMap<String, PathBuf>>> = OnceLock::new();
    let cache = FOUND.get_or_init(Default::default);
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(path) = cache.get(name) {
        return path.clone();
    }
    let path = find(name).unwrap_or_else(|| {
        let package = TOOLS.iter().find(|(n, _)| *n == name).map_or("(unknown package)", |(_, p)| p);
        panic!("`{name}` is not installed: apt-get install -y {package}")
    });
    cache.insert(name.to_owned(), path.clone());
    path
}

/// `…/target/<profile>`, from the running test executable
/// (`…/target/<profile>/deps/<test>-<hash>`).
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let mut dir = exe.parent().expect("the test executable has a directory").to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    dir
}

/// The `weft-proxy` binary, built (or found up to date) by `cargo build` once
/// per test process, with the same profile and target directory as the
/// tests, so the proxy under test is always the current source.
pub fn proxy_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| build_bin("weft-proxy", "weft-proxy"))
}

/// The `weft-control` binary (the control plane), built like [`proxy_bin`].
pub fn control_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| build_bin("weft-control", "weft-control"))
}

/// The `weft` CLI binary (the local mesh: `weft up`, `weft demo`), built
/// like [`proxy_bin`].
pub fn weft_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| build_bin("weft-cli", "weft"))
}

/// Builds `bin` of `package` with the tests' profile and target directory
/// and returns its path.
/// The `weft-injector` binary, built like [`proxy_bin`].
pub fn injector_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| build_bin("weft-injector", "weft-injector"))
}

pub(crate) fn build_bin(package: &str, bin: &str) -> PathBuf {
    let profile = profile_dir();
    let target = profile.parent().expect("the profile directory is inside the target directory");
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.args(["build", "--quiet", "-p", package, "--bin", bin])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target);
    // What cargo set for this test binary is not the caller's environment:
    // ring's build script declares rerun-if-env-changed on
    // CARGO_MANIFEST_DIR and CARGO_PKG_*, so passing them on made every
    // test run rebuild ring and everything above it (rustls, kube, tonic,
    // the binaries), and the next `cargo nextest` rebuild them back.
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_BIN_")
            || matches!(
                key,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_MANIFEST_LINKS"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
            )
        {
            cmd.env_remove(key);
        }
    }
    // The profile directory names the profile, except `debug` for `dev`.
    match profile.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => {}
        Some("release") => {
            cmd.arg("--release");
        }
        Some(other) => {
            cmd.args(["--profile", other]);
        }
    }
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cargo:?} to build {bin}: {e}"));
    assert!(out.status.success(), "building {bin} failed ({:?}):\n{}", cmd, String::from_utf8_lossy(&out.stderr));
    let path = profile.join(bin);
    assert!(path.is_file(), "cargo built {bin} but {} does not exist", path.display());
    path
}

/// This package's `weft-testkit` binary, which cargo builds beside the
/// integration tests.
pub fn testkit_bin() -> PathBuf {
    let bin = profile_dir().join("weft-testkit");
    assert!(
        bin.is_file(),
        "{} does not exist: build the tests with `cargo nextest run -p weft-tests` or \
         `cargo test -p weft-tests`, which build the testkit",
        bin.display()
    );
    bin
}
