//! The pure decisions of a tap: which requests a subscriber's match
//! selects, how many per second it gets, and which headers it may see.
//! Time is passed in.

use std::time::{Duration, Instant};

use http::{HeaderMap, Method, Uri};

use crate::metrics::Direction;

/// Requests per second a tap gets at most, whatever it asks for.
pub const MAX_RPS: u32 = 100;

/// Headers never sent to a tap: credentials.
pub const CREDENTIAL_HEADERS: [&str; 4] = ["authorization", "cookie", "set-cookie", "proxy-authorization"];

/// A subscriber's match (`weft.tap.v1.Match`): every set field must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub direction: Option<Direction>,
    pub method: Option<String>,
    pub authority: Option<String>,
    pub path_prefix: Option<String>,
}

impl Filter {
    /// From the wire; an unknown direction is an error.
    pub fn from_api(m: Option<&weft_api::tap::Match>) -> Result<Self, String> {
        let Some(m) = m else {
            return Ok(Self::default());
        };
        let set = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        let direction = match m.direction.as_str() {
            "" => None,
            "inbound" => Some(Direction::Inbound),
            "outbound" => Some(Direction::Outbound),
            other => return Err(format!("direction {other:?}: use \"inbound\", \"outbound\" or nothing")),
        };
        Ok(Self { direction, method: set(&m.method), authority: set(&m.authority), path_prefix: set(&m.path_prefix) })
    }

    pub fn matches(&self, direction: Direction, method: &Method, authority: Option<&str>, uri: &Uri) -> bool {
        self.direction.is_none_or(|d| d == direction)
            && self.method.as_deref().is_none_or(|m| m == method.as_str())
            && self.authority.as_deref().is_none_or(|a| Some(a) == authority)
            && self.path_prefix.as_deref().is_none_or(|p| uri.path().starts_with(p))
    }
}

/// A request's authority: the URI's (HTTP/2, absolute form), else Host.
pub fn authority<'a>(uri: &'a Uri, headers: &'a HeaderMap) -> Option<&'a str> {
    uri.authority().map(|a| a.as_str()).or_else(|| headers.get(http::header::HOST).and_then(|h| h.to_str().ok()))
}

/// The rate a subscriber asked for, capped: 0 means the cap.
pub fn rate(max_rps: u32) -> u32 {
    if max_rps == 0 { MAX_RPS } else { max_rps.min(MAX_RPS) }
}

/// A token bucket: `per_sec` requests a second, bursts of up to `per_sec`
/// (it starts full). Kept in integer units (a request costs a second's
/// worth of nanoseconds), so it neither drifts nor rounds.
#[derive(Debug)]
pub struct RateLimit {
    per_sec: u64,
    /// Credit, in request-nanoseconds: `per_sec` accrue per nanosecond.
    credit: u64,
    last: Instant,
}

const COST: u64 = 1_000_000_000;

impl RateLimit {
    pub fn new(per_sec: u32, now: Instant) -> Self {
        let per_sec = u64::from(per_sec);
        Self { per_sec, credit: per_sec * COST, last: now }
    }

    /// Whether a request arriving at `now` may be tapped.
    pub fn admit(&mut self, now: Instant) -> bool {
        let elapsed = u64::try_from(now.saturating_duration_since(self.last).as_nanos()).unwrap_or(u64::MAX);
        self.last = self.last.max(now);
        let cap = self.per_sec * COST;
        self.credit = self.credit.saturating_add(elapsed.saturating_mul(self.per_sec)).min(cap);
        if self.credit >= COST {
            self.credit -= COST;
            true
        } else {
            false
        }
    }
}

/// The headers a tap may see: all but credentials, in order.
pub fn visible_headers(headers: &HeaderMap) -> Vec<weft_api::tap::Header> {
    headers
        .iter()
        .filter(|(name, _)| !CREDENTIAL_HEADERS.contains(&name.as_str()))
        .map(|(name, value)| weft_api::tap::Header { name: name.as_str().to_owned(), value: value.as_bytes().to_vec() })
        .collect()
}

/// Microseconds, saturating.
pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(direction: &str, method: &str, authority: &str, path_prefix: &str) -> Filter {
        let api = weft_api::tap::Match {
            direction: direction.into(),
            method: method.into(),
            authority: authority.into(),
            path_prefix: path_prefix.into(),
        };
        Filter::from_api(Some(&api)).expect("valid match")
    }

    #[test]
    fn every_set_field_must_match() {
        let uri: Uri = "/api/users?x=1".parse().expect("uri");
        let get = Method::GET;
        let cases = [
            (m("", "", "", ""), Direction::Inbound, "web:80", true),
            (m("inbound", "", "", ""), Direction::Inbound, "web:80", true),
            (m("outbound", "", "", ""), Direction::Inbound, "web:80", false),
            (m("", "GET", "", ""), Direction::Outbound, "web:80", true),
            (m("", "get", "", ""), Direction::Outbound, "web:80", false),
            (m("", "POST", "", ""), Direction::Outbound, "web:80", false),
            (m("", "", "web:80", ""), Direction::Outbound, "web:80", true),
            (m("", "", "web", ""), Direction::Outbound, "web:80", false),
            (m("", "", "", "/api"), Direction::Outbound, "web:80", true),
            (m("", "", "", "/api/users"), Direction::Outbound, "web:80", true),
            (m("", "", "", "/apix"), Direction::Outbound, "web:80", false),
            (m("", "", "", "x=1"), Direction::Outbound, "web:80", false),
            (m("outbound", "GET", "web:80", "/api"), Direction::Outbound, "web:80", true),
            (m("outbound", "GET", "web:80", "/other"), Direction::Outbound, "web:80", false),
        ];
        for (filter, dir, authority, want) in cases {
            assert_eq!(filter.matches(dir, &get, Some(authority), &uri), want, "{filter:?} {dir:?} {authority}");
        }
        // No authority at all: only a match without one selects it.
        assert!(m("", "", "", "").matches(Direction::Inbound, &get, None, &uri));
        assert!(!m("", "", "web:80", "").matches(Direction::Inbound, &get, None, &uri));
        assert!(
            Filter::from_api(Some(&weft_api::tap::Match { direction: "in".into(), ..Default::default() })).is_err()
        );
        assert_eq!(Filter::from_api(None).expect("none"), Filter::default());
    }

    #[test]
    fn authority_is_the_uri_s_then_the_host_header() {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::HOST, "web.default:80".parse().expect("value"));
        assert_eq!(authority(&"/x".parse().expect("uri"), &headers), Some("web.default:80"));
        assert_eq!(authority(&"http://api:8080/x".parse().expect("uri"), &headers), Some("api:8080"));
        assert_eq!(authority(&"/x".parse().expect("uri"), &HeaderMap::new()), None);
    }

    #[test]
    fn rates_are_capped_at_100() {
        assert_eq!(rate(0), 100);
        assert_eq!(rate(1), 1);
        assert_eq!(rate(100), 100);
        assert_eq!(rate(5000), 100);
    }

    #[test]
    fn the_limiter_admits_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut limit = RateLimit::new(10, t0);
        // A full bucket: ten at once, then none.
        assert_eq!((0..50).filter(|_| limit.admit(t0)).count(), 10);
        // 100 ms later: one more token.
        let t1 = t0 + Duration::from_millis(100);
        assert!(limit.admit(t1));
        assert!(!limit.admit(t1));
        // Over ten seconds of a request every millisecond: 10 a second.
        let mut admitted = 0;
        for ms in 1..=10_000 {
            if limit.admit(t1 + Duration::from_millis(ms)) {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 100);
        // A long pause refills to the burst, not beyond.
        let t2 = t1 + Duration::from_secs(3600);
        assert_eq!((0..50).filter(|_| limit.admit(t2)).count(), 10);
        // Time going backwards admits nothing extra.
        assert!(!limit.admit(t0));
    }

    #[test]
    fn credentials_are_never_visible() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("authorization", "Bearer s3cret"),
            ("cookie", "session=s3cret"),
            ("set-cookie", "session=s3cret"),
            ("proxy-authorization", "Basic s3cret"),
            ("x-request-id", "abc"),
            ("content-type", "text/plain"),
        ] {
            h.append(http::HeaderName::from_static(k), v.parse().expect("value"));
        }
        let names: Vec<String> = visible_headers(&h).into_iter().map(|h| h.name).collect();
        assert_eq!(names, ["x-request-id", "content-type"]);
    }
}
