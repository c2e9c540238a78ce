//! Where an explicit proxy request goes: a pure function of its method and
//! request target (RFC 9112 §3.2), table-tested below.
//!
//! | request line | meaning |
//! | --- | --- |
//! | `GET http://web/x HTTP/1.1` (absolute form) | forward `GET /x` to `web:80` |
//! | `CONNECT web:6379 HTTP/1.1` (authority form) | tunnel bytes to `web:6379` |
//! | `GET /x HTTP/1.1` (origin form) | 400: not a request for a proxy |
//! | `GET https://web/ HTTP/1.1` | 400: TLS goes through `CONNECT` |

use std::net::{IpAddr, SocketAddr};

use http::{Method, Uri};

use crate::outbound::error::TargetError;
use crate::transport::target::{NameTarget, Target};

/// A request the explicit proxy can serve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExplicitTarget {
    /// What discovery is asked about.
    pub target: Target,
    /// `host[:port]` as the client wrote it (without user info): the Host
    /// header sent upstream and the metrics' authority label.
    pub authority: String,
    /// `CONNECT`: a byte tunnel rather than one forwarded request.
    pub tunnel: bool,
}

/// Decides where a request received by the explicit proxy goes.
pub fn parse(method: &Method, uri: &Uri) -> Result<ExplicitTarget, TargetError> {
    let tunnel = method == Method::CONNECT;
    if !tunnel {
        match uri.scheme_str() {
            None => return Err(TargetError::OriginForm),
            Some(s) if s.eq_ignore_ascii_case("http") => {}
            Some(s) => return Err(TargetError::Scheme(s.to_ascii_lowercase())),
        }
    }
    let authority = uri.authority().ok_or(if tunnel { TargetError::MissingHost } else { TargetError::OriginForm })?;
    let host = authority.host();
    if host.is_empty() {
        return Err(TargetError::MissingHost);
    }
    let port = match authority.port_u16() {
        Some(0) => return Err(TargetError::BadPort),
        Some(p) => p,
        None if tunnel => return Err(TargetError::ConnectWithoutPort(authority.as_str().to_owned())),
        None => 80,
    };
    let target = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => Target::Addr(SocketAddr::new(
            v6.parse::<std::net::Ipv6Addr>().map_err(|_| TargetError::BadHost(host.to_owned()))?.into(),
            port,
        )),
        None => match host.parse::<IpAddr>() {
            Ok(ip) => Target::Addr(SocketAddr::new(ip, port)),
            Err(_) => Target::Name(NameTarget::new(host, port).ok_or_else(|| TargetError::BadHost(host.to_owned()))?),
        },
    };
    let authority = match authority.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    };
    Ok(ExplicitTarget { target, authority, tunnel })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(host: &str, port: u16) -> Target {
        Target::Name(NameTarget::new(host, port).expect("valid name"))
    }

    fn addr(s: &str) -> Target {
        Target::Addr(s.parse().expect("addr"))
    }

    #[test]
    fn request_targets_table() {
        use TargetError as E;
        type Want = Result<(Target, &'static str, bool), TargetError>;
        let cases: Vec<(Method, &str, Want)> = vec![
            (Method::GET, "http://web/x", Ok((name("web", 80), "web", false))),
            (Method::GET, "http://web:8080/", Ok((name("web", 8080), "web:8080", false))),
            (Method::GET, "http://Web.Default/", Ok((name("web.default", 80), "Web.Default", false))),
            (
                Method::POST,
                "http://web.default.svc.cluster.local/a?b=c",
                Ok((name("web.default.svc.cluster.local", 80), "web.default.svc.cluster.local", false)),
            ),
            (Method::GET, "http://[::1]:80/", Ok((addr("[::1]:80"), "[::1]:80", false))),
            (Method::GET, "http://127.9.1.2:8080/", Ok((addr("127.9.1.2:8080"), "127.9.1.2:8080", false))),
            (Method::GET, "http://user:pw@web/", Ok((name("web", 80), "web", false))),
            (Method::GET, "HTTP://web/", Ok((name("web", 80), "web", false))),
            (Method::CONNECT, "web:6379", Ok((name("web", 6379), "web:6379", true))),
            (Method::CONNECT, "127.9.1.4:443", Ok((addr("127.9.1.4:443"), "127.9.1.4:443", true))),
            (Method::CONNECT, "[::1]:443", Ok((addr("[::1]:443"), "[::1]:443", true))),
            (Method::GET, "/x", Err(E::OriginForm)),
            (Method::OPTIONS, "*", Err(E::OriginForm)),
            (Method::GET, "https://web/", Err(E::Scheme("https".into()))),
            (Method::GET, "ftp://web/", Err(E::Scheme("ftp".into()))),
            (Method::CONNECT, "web", Err(E::ConnectWithoutPort("web".into()))),
            (Method::CONNECT, "web:0", Err(E::BadPort)),
            (Method::GET, "http://web:0/", Err(E::BadPort)),
            (Method::GET, "http://we_b/", Err(E::BadHost("we_b".into()))),
            (Method::GET, "http://[::zz]/", Err(E::BadHost("[::zz]".into()))),
        ];
        for (method, uri, want) in cases {
            let parsed: Uri = match uri.parse() {
                Ok(u) => u,
                Err(e) => panic!("{uri:?} does not parse as a URI ({e}); hyper would answer 400 itself"),
            };
            let got = parse(&method, &parsed).map(|t| (t.target, t.authority, t.tunnel));
            let want = want.map(|(t, a, tunnel)| (t, a.to_owned(), tunnel));
            assert_eq!(got, want, "{method} {uri}");
        }
    }

    #[test]
    fn a_uri_without_a_host_is_refused() {
        // `http://:80/` is what a client sends for a missing host, when its
        // URI library lets it through at all.
        let mut checked = 0;
        for uri in ["http://:80/", "http:///x", "http://"] {
            let Ok(parsed) = uri.parse::<Uri>() else { continue };
            checked += 1;
            let got = parse(&Method::GET, &parsed);
            assert!(matches!(got, Err(TargetError::MissingHost | TargetError::OriginForm)), "{uri}: {got:?}");
        }
        assert!(checked > 0, "no host-less URI parsed; the case is untested");
    }
}
