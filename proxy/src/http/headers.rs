//! Hop-by-hop header handling, RFC 9110 §7.6.1.
//!
//! A proxy must remove `Connection` and every header it names, plus the
//! headers that are hop-by-hop by definition, before forwarding. `TE:
//! trailers` survives because gRPC needs it end to end; `Upgrade` survives
//! (with `Connection: upgrade`) only on requests we pass through as upgrades.

use http::HeaderMap;
use http::header::{self, HeaderName, HeaderValue};

/// Headers that never cross a proxy, named or not in `Connection`.
const HOP_BY_HOP: [HeaderName; 5] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Strips hop-by-hop headers in place. With `keep_upgrade`, the `Upgrade`
/// header and a `Connection: upgrade` are kept for the next hop.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Common case first: no Connection header means only the fixed list.
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        for name in named {
            if keep_upgrade && name == header::UPGRADE {
                continue;
            }
            // `Connection: te` must not strip the TE we keep below.
            if name != header::TE {
                headers.remove(&name);
            }
        }
    }
    let upgrade = if keep_upgrade { headers.remove(header::UPGRADE) } else { None };
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    // TE is hop-by-hop except for the "trailers" token (RFC 9110 §10.1.4).
    if let Some(te) = headers.get(header::TE) {
        let wants_trailers =
            te.to_str().map(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("trailers"))).unwrap_or(false);
        if wants_trailers {
            headers.insert(header::TE, HeaderValue::from_static("trailers"));
        } else {
            headers.remove(header::TE);
        }
    }
    if let Some(upgrade) = upgrade {
        headers.insert(header::UPGRADE, upgrade);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Whether an HTTP/1 request asks to switch protocols (RFC 9110 §7.8).
pub fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_bytes(k.as_bytes()).expect("name"), HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    fn names(h: &HeaderMap) -> Vec<String> {
        let mut v: Vec<String> = h.iter().map(|(k, v)| format!("{k}: {}", v.to_str().expect("ascii"))).collect();
        v.sort();
        v
    }

    #[test]
    fn hop_by_hop_table() {
        type Case<'a> = (&'a [(&'a str, &'a str)], bool, &'a [&'a str]);
        let cases: &[Case<'_>] = &[
            (&[("host", "a"), ("x-app", "1")], false, &["host: a", "x-app: 1"]),
            (
                &[
                    ("connection", "keep-alive, x-secret"),
                    ("keep-alive", "timeout=5"),
                    ("x-secret", "s"),
                    ("x-app", "1"),
                ],
                false,
                &["x-app: 1"],
            ),
            (&[("transfer-encoding", "chunked"), ("proxy-connection", "keep-alive")], false, &[]),
            (&[("te", "trailers, deflate")], false, &["te: trailers"]),
            (&[("te", "gzip")], false, &[]),
            (&[("connection", "te"), ("te", "trailers")], false, &["te: trailers"]),
            (
                &[("connection", "Upgrade"), ("upgrade", "websocket"), ("sec-websocket-key", "k")],
                true,
                &["connection: upgrade", "sec-websocket-key: k", "upgrade: websocket"],
            ),
            (&[("connection", "Upgrade"), ("upgrade", "websocket")], false, &[]),
        ];
        for (input, keep, want) in cases {
            let mut h = map(input);
            strip_hop_by_hop(&mut h, *keep);
            assert_eq!(names(&h), *want, "{input:?} keep_upgrade={keep}");
        }
    }

    #[test]
    fn upgrade_needs_both_headers() {
        assert!(wants_upgrade(&map(&[("connection", "keep-alive, Upgrade"), ("upgrade", "websocket")])));
        assert!(!wants_upgrade(&map(&[("upgrade", "websocket")])));
        assert!(!wants_upgrade(&map(&[("connection", "upgrade")])));
    }
}
