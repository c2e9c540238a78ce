//! What the proxy asks discovery about: an address (a transparent
//! connection's original destination) or a host name and port (an explicit
//! proxy request's authority). Rendered as the control plane's `Target`
//! strings: `IP:PORT` (`[v6]:PORT`) or `NAME:PORT`, where the control plane
//! resolves `svc`, `svc.ns`, `svc.ns.svc` and `svc.ns.svc.cluster.local`
//! (bare names in this proxy's namespace).

use std::fmt;
use std::net::SocketAddr;

/// A discovery key. Names are canonical (lower case, no trailing dot), so
/// `Web.` and `web` share one cache entry and one stream.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    Addr(SocketAddr),
    Name(NameTarget),
}

/// A DNS-style host name and a port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NameTarget {
    host: String,
    port: u16,
}

impl NameTarget {
    /// A canonical name target; `None` when `host` is not a DNS name (empty
    /// labels, characters other than letters, digits and `-`, over 253
    /// bytes) or the port is 0. IP literals belong in [`Target::Addr`].
    pub fn new(host: &str, port: u16) -> Option<Self> {
        let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        let valid = port != 0
            && !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
        valid.then_some(Self { host, port })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Addr(a) => a.fmt(f),
            Target::Name(n) => write!(f, "{}:{}", n.host, n.port),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_canonical_and_checked() {
        let cases = [
            ("web", 80, Some("web:80")),
            ("Web.Default.", 8080, Some("web.default:8080")),
            ("web.default.svc.cluster.local", 80, Some("web.default.svc.cluster.local:80")),
            ("", 80, None),
            ("web", 0, None),
            ("we b", 80, None),
            ("web..default", 80, None),
            ("web_1", 80, None),
        ];
        for (host, port, want) in cases {
            let got = NameTarget::new(host, port).map(|n| Target::Name(n).to_string());
            assert_eq!(got.as_deref(), want, "{host:?}:{port}");
        }
        let v6 = Target::Addr("[::1]:80".parse().expect("addr"));
        assert_eq!(v6.to_string(), "[::1]:80");
    }
}
