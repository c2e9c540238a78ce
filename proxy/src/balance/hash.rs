//! Endpoint choosers that are plain functions over the endpoint set:
//! consistent hashing (`consistentHash` on a header or cookie, for sticky
//! A/B sessions), round robin and least request. The default, P2C over
//! peak EWMA, is in the parent module.
//!
//! Consistent hashing is rendezvous (highest random weight) hashing: each
//! endpoint scores `mix(key, endpoint)` and the highest score wins. A key
//! stays on its endpoint as long as that endpoint exists; removing an
//! endpoint moves only its own keys, adding one takes about `1/n` of the
//! keys, and no ring has to be built or kept (Thaler & Ravishankar 1998).
//! Cost is O(n) per request, fine for the tens of endpoints of a service.
//! The hashes are our own fixed functions (FNV-1a, then a SplitMix64
//! finalizer), not `std`'s, so every proxy of every version agrees on
//! where a key goes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use http::HeaderMap;
use weft_api::policy as api;

/// FNV-1a, 64 bits.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// SplitMix64's finalizer: spreads FNV's weak low bits over the word.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// An endpoint's hash; compute it once when the endpoint set changes.
pub fn endpoint_hash(addr: &SocketAddr) -> u64 {
    let mut buf = [0u8; 18];
    let ip: &[u8] = match addr.ip() {
        std::net::IpAddr::V4(v4) => &v4.octets(),
        std::net::IpAddr::V6(v6) => &v6.octets(),
    };
    let n = ip.len();
    buf[..n].copy_from_slice(ip);
    buf[n..n + 2].copy_from_slice(&addr.port().to_be_bytes());
    mix(hash_bytes(&buf[..n + 2]))
}

/// The index of the endpoint (by its [`endpoint_hash`]) that `key` sticks
/// to, or `None` for an empty set. Ties (equal endpoint hashes, i.e. the
/// same address twice) go to the first.
pub fn rendezvous(key: &[u8], endpoints: impl IntoIterator<Item = u64>) -> Option<usize> {
    let k = hash_bytes(key);
    let mut best: Option<(u64, usize)> = None;
    for (i, e) in endpoints.into_iter().enumerate() {
        let score = mix(k ^ e);
        if best.is_none_or(|(s, _)| score > s) {
            best = Some((score, i));
        }
    }
    best.map(|(_, i)| i)
}

/// The value of cookie `name` in the request's `Cookie` header(s)
/// (`a=1; b=2`; HTTP/2 may send several lines), first occurrence wins.
pub fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h [u8]> {
    headers.get_all(http::header::COOKIE).iter().find_map(|line| {
        line.as_bytes().split(|&b| b == b';').find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|&b| b == b'=')?;
            let (n, v) = (pair.get(..eq)?, pair.get(eq + 1..)?);
            (n.trim_ascii() == name.as_bytes()).then(|| v.trim_ascii())
        })
    })
}

/// What a `consistentHash` load balancer hashes for a request: the header's
/// first value or the cookie's value. `None` (not configured, or absent
/// from the request): the caller balances as usual.
pub fn hash_key<'h>(lb: &api::LoadBalancer, headers: &'h HeaderMap) -> Option<&'h [u8]> {
    if lb.kind != api::load_balancer::Kind::ConsistentHash as i32 {
        return None;
    }
    if !lb.hash_header.is_empty() {
        return headers.get(lb.hash_header.as_str()).map(|v| v.as_bytes());
    }
    if !lb.hash_cookie.is_empty() {
        return cookie_value(headers, &lb.hash_cookie);
    }
    None
}

/// Round robin over a set of `n` endpoints; shared by all requests to a
/// target (one relaxed atomic add per pick).
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl RoundRobin {
    /// The next index in `0..n`, or `None` when `n` is 0.
    pub fn pick(&self, n: usize) -> Option<usize> {
        (n > 0).then(|| self.next.fetch_add(1, Relaxed) % n)
    }
}

/// The endpoint with the fewest requests in flight; ties are broken by
/// `random` (the first tied endpoint at or after `random % n`), so many
/// proxies do not all pile onto index 0. `None` for an empty set.
pub fn least_request(loads: &[usize], random: u32) -> Option<usize> {
    let n = loads.len();
    let min = *loads.iter().min()?;
    let start = usize::try_from(random).unwrap_or(0) % n;
    (0..n).map(|i| (start + i) % n).find(|&i| loads.get(i) == Some(&min))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(n: usize) -> Vec<SocketAddr> {
        (0..n).map(|i| SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250) as u8 + 1], 8080))).collect()
    }

    #[test]
    fn a_key_sticks_and_only_removed_keys_move() {
        let set = addrs(5);
        let hashes: Vec<u64> = set.iter().map(endpoint_hash).collect();
        let keys: Vec<String> = (0..1000).map(|i| format!("user-{i}")).collect();
        let before: Vec<usize> =
            keys.iter().map(|k| rendezvous(k.as_bytes(), hashes.iter().copied()).unwrap()).collect();
        // Deterministic.
        for (k, b) in keys.iter().zip(&before) {
            assert_eq!(rendezvous(k.as_bytes(), hashes.iter().copied()), Some(*b));
        }
        // Spread: each of 5 endpoints gets 200 ± 60 of 1000 keys.
        for e in 0..5 {
            let n = before.iter().filter(|&&b| b == e).count();
            assert!((140..=260).contains(&n), "endpoint {e} has {n} keys");
        }
        // Remove endpoint 2: its keys move, no other key does.
        let removed = 2;
        let rest: Vec<(usize, u64)> = hashes.iter().copied().enumerate().filter(|&(i, _)| i != removed).collect();
        let mut moved = 0;
        for (k, b) in keys.iter().zip(&before) {
            let after = rest[rendezvous(k.as_bytes(), rest.iter().map(|&(_, h)| h)).unwrap()].0;
            if *b == removed {
                moved += 1;
                assert_ne!(after, removed);
            } else {
                assert_eq!(after, *b, "key {k} moved without cause");
            }
        }
        assert_eq!(moved, before.iter().filter(|&&b| b == removed).count());
        // Add an endpoint: keys move only onto it.
        let mut grown = hashes.clone();
        grown.push(endpoint_hash(&addrs(6)[5]));
        let mut taken = 0;
        for (k, b) in keys.iter().zip(&before) {
            let after = rendezvous(k.as_bytes(), grown.iter().copied()).unwrap();
            if after == 5 {
                taken += 1;
            } else {
                assert_eq!(after, *b);
            }
        }
        assert!((100..=250).contains(&taken), "new endpoint took {taken} keys");
        // Order of the set does not matter.
        let reversed: Vec<u64> = hashes.iter().rev().copied().collect();
        for (k, b) in keys.iter().zip(&before) {
            assert_eq!(4 - rendezvous(k.as_bytes(), reversed.iter().copied()).unwrap(), *b);
        }
    }

    #[test]
    fn hashes_are_fixed_across_builds() {
        // FNV-1a test vectors; if these change, every sticky session moves.
        assert_eq!(hash_bytes(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(hash_bytes(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(rendezvous(b"k", []), None);
        assert_ne!(endpoint_hash(&"10.0.0.1:80".parse().unwrap()), endpoint_hash(&"10.0.0.1:81".parse().unwrap()));
        assert_ne!(endpoint_hash(&"10.0.0.1:80".parse().unwrap()), endpoint_hash(&"[::a00:1]:80".parse().unwrap()));
    }

    #[test]
    fn cookie_values() {
        // (cookie lines, name, value)
        let cases: &[(&[&str], &str, Option<&str>)] = &[
            (&["a=1; b=2"], "a", Some("1")),
            (&["a=1; b=2"], "b", Some("2")),
            (&["a=1;b=2"], "b", Some("2")),
            (&["a=1; b=2"], "c", None),
            (&["ab=1; b=2"], "b", Some("2")),
            (&["b=1; b=2"], "b", Some("1")),
            (&["a=1", "b=2"], "b", Some("2")),
            (&["session=x=y"], "session", Some("x=y")),
            (&["a="], "a", Some("")),
            (&["a"], "a", None),
            (&[" a = 1 "], "a", Some("1")),
            (&[";;; ; a=1"], "a", Some("1")),
            (&[], "a", None),
        ];
        for (lines, name, want) in cases {
            let mut h = HeaderMap::new();
            for l in *lines {
                h.append(http::header::COOKIE, l.parse().unwrap());
            }
            assert_eq!(cookie_value(&h, name), want.map(str::as_bytes), "{lines:?} {name}");
        }
    }

    #[test]
    fn hash_keys() {
        use api::load_balancer::Kind;
        let lb = |kind: Kind, header: &str, cookie: &str| api::LoadBalancer {
            kind: kind as i32,
            hash_header: header.into(),
            hash_cookie: cookie.into(),
        };
        let mut h = HeaderMap::new();
        h.insert("x-user", "alice".parse().unwrap());
        h.insert(http::header::COOKIE, "sid=42; v=2".parse().unwrap());
        let cases = [
            (lb(Kind::ConsistentHash, "x-user", ""), Some(&b"alice"[..])),
            (lb(Kind::ConsistentHash, "x-other", ""), None),
            (lb(Kind::ConsistentHash, "", "sid"), Some(&b"42"[..])),
            (lb(Kind::ConsistentHash, "", "nope"), None),
            (lb(Kind::ConsistentHash, "", ""), None),
            (lb(Kind::Ewma, "x-user", ""), None),
        ];
        for (lb, want) in cases {
            assert_eq!(hash_key(&lb, &h), want, "{lb:?}");
        }
    }

    #[test]
    fn round_robin_cycles() {
        let rr = RoundRobin::default();
        let picks: Vec<_> = (0..7).map(|_| rr.pick(3)).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2, 0].map(Some));
        assert_eq!(rr.pick(0), None);
    }

    #[test]
    fn least_request_picks_the_minimum_and_spreads_ties() {
        let cases: &[(&[usize], u32, Option<usize>)] = &[
            (&[], 0, None),
            (&[5], 9, Some(0)),
            (&[3, 1, 2], 0, Some(1)),
            (&[3, 1, 2], 2, Some(1)),
            (&[0, 4, 0, 4], 0, Some(0)),
            (&[0, 4, 0, 4], 1, Some(2)),
            (&[0, 4, 0, 4], 2, Some(2)),
            (&[0, 4, 0, 4], 3, Some(0)),
            (&[7, 7, 7], u32::MAX, Some((u32::MAX % 3) as usize)),
        ];
        for (loads, r, want) in cases {
            assert_eq!(least_request(loads, *r), *want, "{loads:?} {r}");
        }
    }
}
