//! A real browser for the dashboard's tests: Debian's headless Chromium,
//! driven by playwright-core from a small Node script
//! (`tests/browser/dashboard.cjs`) that reads one JSON command per line and
//! answers one JSON line each with what the page shows.
//!
//! Nothing is downloaded at run time: `.ci/run` installs `chromium` (apt)
//! and `playwright-core` at a pinned version under
//! [`NODE_MODULES`]; a missing piece fails the test saying how to install it.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Where `.ci/run` installs the pinned playwright-core.
pub const NODE_MODULES: &str = "/var/cache/weft/node/node_modules";
/// The playwright-core release `.ci/run` installs.
pub const PLAYWRIGHT_VERSION: &str = "1.65.1";

/// One headless Chromium with one page, for the life of a test.
pub struct Browser {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    shots: PathBuf,
}

impl Browser {
    /// Starts Chromium; screenshots go to `shots`.
    pub fn start(shots: &Path) -> Browser {
        let chromium = crate::tool("chromium");
        let node = crate::tool("node");
        let playwright = Path::new(NODE_MODULES).join("playwright-core");
        assert!(
            playwright.join("package.json").is_file(),
            "playwright-core is not installed in {NODE_MODULES}: run .ci/run, or \
             npm install --prefix /var/cache/weft/node playwright-core@{PLAYWRIGHT_VERSION}"
        );
        std::fs::create_dir_all(shots).expect("creating the screenshot directory");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser/dashboard.cjs");
        let mut child = Command::new(node)
            .arg(script)
            .arg(shots)
            .env("WEFT_PLAYWRIGHT", &playwright)
            .env("WEFT_CHROMIUM", chromium)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting node with the dashboard driver");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Browser { child, stdin, lines, shots: shots.to_owned() }
    }

    /// Sends one command and returns the page as the driver read it;
    /// panics with the driver's error (and the page's state) on failure.
    #[track_caller]
    pub fn send(&mut self, command: serde_json::Value) -> serde_json::Value {
        let timeout_ms = command["timeout_ms"].as_u64().unwrap_or(30_000);
        writeln!(self.stdin, "{command}").expect("writing to the browser driver");
        let line = self
            .lines
            .recv_timeout(Duration::from_millis(timeout_ms) + Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("the browser driver did not answer {command}: {e}"));
        let answer: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("the browser driver said {line:?}: {e}"));
        assert_eq!(answer["ok"], true, "the browser failed {command}: {answer:#}");
        let errors = &answer["console_errors"];
        assert!(errors.as_array().is_none_or(Vec::is_empty), "the page logged errors on {command}: {errors}");
        answer["data"].clone()
    }

    /// Opens `url` and waits until the view drew from fresh data; a
    /// screenshot named `shot` is kept.
    #[track_caller]
    pub fn goto(&mut self, url: &str, shot: &str) -> serde_json::Value {
        self.send(serde_json::json!({"op": "goto", "url": url, "shot": shot}))
    }

    /// Waits until `selector`'s `attr` equals `equals` (views refresh
    /// themselves), then screenshots.
    #[track_caller]
    pub fn wait_attr(
        &mut self,
        selector: &str,
        attr: &str,
        equals: &str,
        within: Duration,
        shot: &str,
    ) -> serde_json::Value {
        self.send(serde_json::json!({
            "op": "wait", "selector": selector, "attr": attr, "equals": equals,
            "timeout_ms": within.as_millis() as u64, "shot": shot,
        }))
    }

    /// Where the screenshots are.
    pub fn shots(&self) -> &Path {
        &self.shots
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{}", serde_json::json!({"op": "quit"}));
        for _ in 0..50 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
