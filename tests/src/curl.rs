//! curl as the real HTTP client of the tests, with its response heads
//! (`-D`) parsed so that tests can assert on statuses and headers exactly.

use std::time::Duration;

use crate::mesh::Pod;
use crate::process::Run;

/// Every curl gets this `--max-time`, so a hung proxy fails the test instead
/// of stalling it.
pub const CURL_MAX_TIME: Duration = Duration::from_secs(30);

/// One response head (status line and headers) from curl's `-D` dump.
#[derive(Debug, Clone)]
pub struct Head {
    /// e.g. `HTTP/1.1`, `HTTP/2`.
    pub version: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// A finished curl: the process, every head it received (1xx included, in
/// order), and its stdout (the bodies, unless `-o` sent them elsewhere).
#[derive(Debug)]
pub struct Curl {
    pub run: Run,
    pub heads: Vec<Head>,
}

impl Curl {
    /// The final (non-1xx) responses, one per URL.
    pub fn responses(&self) -> Vec<&Head> {
        self.heads.iter().filter(|h| h.status >= 200).collect()
    }

    /// The one final response; panics unless there is exactly one.
    #[track_caller]
    pub fn response(&self) -> &Head {
        let finals = self.responses();
        assert_eq!(finals.len(), 1, "expected one response from:\n{}", self.run);
        finals[0]
    }

    /// The one final response's status.
    #[track_caller]
    pub fn status(&self) -> u16 {
        self.response().status
    }

    /// The one final response's header `name`; panics if it is missing.
    #[track_caller]
    pub fn header(&self, name: &str) -> &str {
        self.response().header(name).unwrap_or_else(|| panic!("no {name} header in the response from:\n{}", self.run))
    }

    /// Stdout: the response bodies (and `-w` output).
    pub fn body(&self) -> &str {
        &self.run.stdout
    }
}

/// Splits curl's `-D` dump into heads. Trailers that curl appends after a
/// body (as header lines with no status line) join the head before them.
pub fn parse_heads(dump: &str) -> Vec<Head> {
    let mut heads: Vec<Head> = Vec::new();
    for line in dump.split("\r\n").flat_map(|l| l.split('\n')) {
        if line.is_empty() {
            continue;
        }
        if line.starts_with("HTTP/") {
            let mut parts = line.split_whitespace();
            let version = parts.next().unwrap_or_default().to_owned();
            let status = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
            heads.push(Head { version, status, headers: Vec::new() });
        } else if let (Some(head), Some((name, value))) = (heads.last_mut(), line.split_once(':')) {
            head.headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    heads
}

impl Pod {
    /// Runs `curl -sS --max-time 30 -D FILE ARGS...` in this pod. It does not
    /// fail on a non-zero exit: the caller asserts on `run.code()`.
    pub fn curl(&self, args: &[&str]) -> Curl {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dump = self.dir().join(format!("curl-{}-{}.heads", self.name(), NEXT.fetch_add(1, Ordering::Relaxed)));
        let max_time = CURL_MAX_TIME.as_secs().to_string();
        let dump_arg = dump.to_string_lossy().into_owned();
        let mut all = vec!["-sS", "--max-time", &max_time, "-D", &dump_arg];
        all.extend_from_slice(args);
        let run = self.exec("curl", &all);
        let heads = parse_heads(&std::fs::read_to_string(&dump).unwrap_or_default());
        let _ = std::fs::remove_file(&dump);
        Curl { run, heads }
    }

    /// `n` requests to `url_base` + `[1-n]` on one connection (curl's URL
    /// globbing): the status and the answering testkit server
    /// (`x-weft-server`) of each, in order. Panics unless curl reports all
    /// `n`.
    pub fn requests(&self, url_base: &str, n: usize, extra: &[&str]) -> Vec<(u16, String)> {
        let url = format!("{url_base}[1-{n}]");
        let mut args =
            vec!["-s", "-o", "/dev/null", "-w", "%{http_code} %header{x-weft-server}\\n", "--max-time", "120"];
        args.extend_from_slice(extra);
        args.push(&url);
        let run = self.exec("curl", &args);
        let out: Vec<(u16, String)> = run
            .stdout
            .lines()
            .map(|l| {
                let (code, server) = l.split_once(' ').unwrap_or((l, ""));
                (code.parse().unwrap_or(0), server.to_owned())
            })
            .collect();
        assert_eq!(out.len(), n, "curl answered {} of {n} requests: {run}", out.len());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_interim_final_and_trailers() {
        let heads = parse_heads(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nX-Weft-Conn: 1\r\ncontent-length: 3\r\n\r\n\
             HTTP/2 200 \r\nx-weft-conn: 2\r\n\r\ngrpc-status: 0\r\n",
        );
        assert_eq!(heads.len(), 3);
        assert_eq!(heads[0].status, 100);
        assert_eq!(heads[1].header("x-weft-conn"), Some("1"));
        assert_eq!(heads[2].version, "HTTP/2");
        assert_eq!(heads[2].header("grpc-status"), Some("0"));
    }
}
