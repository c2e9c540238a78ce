//! Validation that runs *inside* deserialization.
//!
//! serde_yaml_ng attaches the field path (`spec.rules[0].backendRefs[1].weight`)
//! and the line/column of the value it is deserializing to any error raised
//! while its visitor runs. An error raised after `Deserialize::deserialize`
//! returns (serde's `try_from`, or a separate validation pass) would instead
//! be reported at the enclosing mapping, or nowhere. So every check here is
//! done from a visitor: scalars through [`Scalar`] newtypes, and cross-field
//! rules through [`Validate`] + the `checked*` field adapters, which
//! deserialize the plain struct from the visitor's `MapAccess` and then
//! validate it before returning.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// Cross-field checks of a struct, run while the deserializer still points
/// at it. Errors name the offending field relative to the struct
/// (`"backendRequest: must not exceed request (10s)"`).
pub trait Validate {
    fn validate(&self) -> Result<(), String>;
}

struct CheckedVisitor<T>(PhantomData<fn() -> T>);

impl<'de, T: Deserialize<'de> + Validate> Visitor<'de> for CheckedVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        let value = T::deserialize(de::value::MapAccessDeserializer::new(map))?;
        value.validate().map_err(de::Error::custom)?;
        Ok(value)
    }
}

struct CheckedSeed<T>(PhantomData<fn() -> T>);

impl<'de, T: Deserialize<'de> + Validate> DeserializeSeed<'de> for CheckedSeed<T> {
    type Value = T;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        d.deserialize_map(CheckedVisitor(PhantomData))
    }
}

/// `#[serde(deserialize_with = "checked")]`: a struct validated in place.
pub fn checked<'de, D: Deserializer<'de>, T: Deserialize<'de> + Validate>(d: D) -> Result<T, D::Error> {
    CheckedSeed(PhantomData).deserialize(d)
}

/// `#[serde(default, deserialize_with = "checked_opt")]`.
pub fn checked_opt<'de, D: Deserializer<'de>, T: Deserialize<'de> + Validate>(d: D) -> Result<Option<T>, D::Error> {
    struct V<T>(PhantomData<fn() -> T>);
    impl<'de, T: Deserialize<'de> + Validate> Visitor<'de> for V<T> {
        type Value = Option<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a mapping or null")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            checked(d).map(Some)
        }
    }
    d.deserialize_option(V(PhantomData))
}

/// `#[serde(default, deserialize_with = "checked_vec")]`: each element is
/// validated where it stands, so errors name `rules[3]`, not `rules`.
pub fn checked_vec<'de, D: Deserializer<'de>, T: Deserialize<'de> + Validate>(d: D) -> Result<Vec<T>, D::Error> {
    struct V<T>(PhantomData<fn() -> T>);
    impl<'de, T: Deserialize<'de> + Validate> Visitor<'de> for V<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a sequence")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
            while let Some(v) = seq.next_element_seed(CheckedSeed(PhantomData))? {
                out.push(v);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(V(PhantomData))
}

/// A scalar newtype whose value is checked by a visitor method.
pub trait Scalar: Sized {
    const EXPECTING: &'static str;
    fn from_str(_: &str) -> Result<Self, String> {
        Err(format!("expected {}", Self::EXPECTING))
    }
    fn from_u64(_: u64) -> Result<Self, String> {
        Err(format!("expected {}", Self::EXPECTING))
    }
    fn from_f64(_: f64) -> Result<Self, String> {
        Err(format!("expected {}", Self::EXPECTING))
    }
}

/// Numbers: visit as u64 (YAML `-1` arrives as i64 and is refused).
pub fn deserialize_number<'de, D: Deserializer<'de>, T: Scalar>(d: D) -> Result<T, D::Error> {
    struct V<T>(PhantomData<fn() -> T>);
    impl<T: Scalar> Visitor<'_> for V<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(T::EXPECTING)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
            T::from_u64(v).map_err(E::custom)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
            match u64::try_from(v) {
                Ok(v) => T::from_u64(v).map_err(E::custom),
                Err(_) => Err(E::custom(format!("must not be negative (expected {})", T::EXPECTING))),
            }
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
            T::from_f64(v).map_err(E::custom)
        }
    }
    // `deserialize_any`: serde_yaml_ng hands `-1` to `visit_i64` only this way.
    d.deserialize_any(V(PhantomData))
}

/// Fractions (0.2): YAML integers (`1`) are accepted as floats.
pub fn deserialize_float<'de, D: Deserializer<'de>, T: Scalar>(d: D) -> Result<T, D::Error> {
    struct V<T>(PhantomData<fn() -> T>);
    impl<T: Scalar> Visitor<'_> for V<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(T::EXPECTING)
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
            T::from_f64(v).map_err(E::custom)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
            T::from_f64(v as f64).map_err(E::custom)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
            T::from_f64(v as f64).map_err(E::custom)
        }
    }
    d.deserialize_f64(V(PhantomData))
}

/// Strings. A plain scalar such as `123` is read as the text "123" (the
/// API server would refuse an unquoted number for a string field; being
/// lenient here costs nothing and spares a confusing error).
pub fn deserialize_text<'de, D: Deserializer<'de>, T: Scalar>(d: D) -> Result<T, D::Error> {
    struct V<T>(PhantomData<fn() -> T>);
    impl<T: Scalar> Visitor<'_> for V<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(T::EXPECTING)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            T::from_str(v).map_err(E::custom)
        }
    }
    d.deserialize_str(V(PhantomData))
}

/// Implements `Deserialize` for a [`Scalar`] through one of the visitors above.
macro_rules! scalar_de {
    ($ty:ty, $via:ident) => {
        impl<'de> ::serde::Deserialize<'de> for $ty {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                $crate::policy::de::$via(d)
            }
        }
    };
}
pub(crate) use scalar_de;

/// A number in an inclusive range, e.g. `Ranged<0, 1_000_000>` for weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Ranged<const MIN: u64, const MAX: u64>(pub u64);

impl<const MIN: u64, const MAX: u64> Scalar for Ranged<MIN, MAX> {
    const EXPECTING: &'static str = "an integer";
    fn from_u64(v: u64) -> Result<Self, String> {
        if (MIN..=MAX).contains(&v) { Ok(Self(v)) } else { Err(format!("must be {MIN}..={MAX}, got {v}")) }
    }
    fn from_f64(v: f64) -> Result<Self, String> {
        Err(format!("must be an integer {MIN}..={MAX}, got {v}"))
    }
}

impl<'de, const MIN: u64, const MAX: u64> Deserialize<'de> for Ranged<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_number(d)
    }
}

impl<const MIN: u64, const MAX: u64> Ranged<MIN, MAX> {
    pub fn get(self) -> u64 {
        self.0
    }
    pub fn as_u32(self) -> u32 {
        u32::try_from(self.0).unwrap_or(u32::MAX)
    }
}

/// TCP/UDP port, 1..=65535.
pub type PortNumber = Ranged<1, 65535>;
/// Percent of requests, 0..=100.
pub type Percent = Ranged<0, 100>;

/// A fraction 0.0..=1.0 (ratios, jitter, success rates).
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd, Serialize)]
#[serde(transparent)]
pub struct Fraction(pub f64);

impl Scalar for Fraction {
    const EXPECTING: &'static str = "a number 0.0..=1.0";
    fn from_f64(v: f64) -> Result<Self, String> {
        if (0.0..=1.0).contains(&v) { Ok(Self(v)) } else { Err(format!("must be 0.0..=1.0, got {v}")) }
    }
}
scalar_de!(Fraction, deserialize_float);

/// A Gateway API duration (GEP-2257): one to four `<1-5 digits><h|m|s|ms>`
/// parts, e.g. `1h`, `10s`, `1m30s`, `500ms`. No fractions (`1.5s` is an
/// error: write `1500ms`), no days, no sign. `0s` means "disabled" where a
/// field says so.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct GwDuration(pub Duration);

impl GwDuration {
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not a Gateway API duration; use e.g. `10s`, `500ms`, `1m30s` (no fractions)");
        let bytes = s.as_bytes();
        let (mut i, mut parts, mut total) = (0usize, 0u32, Duration::ZERO);
        if bytes.is_empty() {
            return Err(bad());
        }
        while i < bytes.len() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            let digits = &s[start..i];
            if digits.is_empty() || digits.len() > 5 {
                return Err(bad());
            }
            let n: u64 = digits.parse().map_err(|_| bad())?;
            let unit = if s[i..].starts_with("ms") {
                i += 2;
                Duration::from_millis(n)
            } else {
                let d = match bytes.get(i) {
                    Some(b'h') => Duration::from_secs(n * 3600),
                    Some(b'm') => Duration::from_secs(n * 60),
                    Some(b's') => Duration::from_secs(n),
                    _ => return Err(bad()),
                };
                i += 1;
                d
            };
            parts += 1;
            if parts > 4 {
                return Err(bad());
            }
            total += unit;
        }
        Ok(Self(total))
    }

    pub fn as_millis(self) -> u64 {
        u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX)
    }
}

impl fmt::Display for GwDuration {
    /// The shortest exact Gateway API spelling, e.g. `1m30s`, `1500ms`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        if !ms.is_multiple_of(1000) {
            return write!(f, "{ms}ms");
        }
        let (h, m, s) = (ms / 3_600_000, (ms / 60_000) % 60, (ms / 1000) % 60);
        if h > 0 {
            write!(f, "{h}h")?;
        }
        if m > 0 {
            write!(f, "{m}m")?;
        }
        if s > 0 {
            write!(f, "{s}s")?;
        }
        Ok(())
    }
}

impl Scalar for GwDuration {
    const EXPECTING: &'static str = "a duration such as `10s` or `500ms`";
    fn from_str(s: &str) -> Result<Self, String> {
        Self::parse(s)
    }
}
scalar_de!(GwDuration, deserialize_text);

impl Serialize for GwDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Checks a regular expression with the `regex` crate (RE2-like syntax),
/// which is what the proxy matches with, so that a bad one is refused here
/// rather than when the first request arrives.
pub fn check_regex(s: &str) -> Result<(), String> {
    if s.len() > 1024 {
        return Err("regular expression longer than 1024 bytes".into());
    }
    regex::Regex::new(s).map(drop).map_err(|e| {
        // The regex crate's message spans lines (pattern, caret, error); keep the error.
        let e = e.to_string();
        let why =
            e.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("invalid").trim().trim_start_matches("error: ");
        format!("invalid regular expression `{s}`: {why}")
    })
}

/// A DNS-1123 label (namespaces, service names): lower-case alphanumerics
/// and `-`, at most 63, starting and ending alphanumeric.
pub fn check_dns_label(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!("`{s}` is not a DNS label (lower-case letters, digits and '-', at most 63, e.g. `web-v1`)"))
    }
}

/// A DNS-1123 subdomain (object names): dot-separated labels, at most 253.
pub fn check_dns_subdomain(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 253 || s.split('.').any(|l| check_dns_label(l).is_err()) {
        Err(format!("`{s}` is not a valid name (lower-case letters, digits, '-' and '.', at most 253)"))
    } else {
        Ok(())
    }
}

/// A Kubernetes object name (DNS subdomain).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ObjectName(pub String);

impl Scalar for ObjectName {
    const EXPECTING: &'static str = "a name";
    fn from_str(s: &str) -> Result<Self, String> {
        check_dns_subdomain(s).map(|()| Self(s.to_owned()))
    }
}
scalar_de!(ObjectName, deserialize_text);

/// A namespace or service name (DNS label).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Label(pub String);

impl Scalar for Label {
    const EXPECTING: &'static str = "a DNS label";
    fn from_str(s: &str) -> Result<Self, String> {
        check_dns_label(s).map(|()| Self(s.to_owned()))
    }
}
scalar_de!(Label, deserialize_text);

/// An HTTP header name (RFC 9110 token), stored lower-case.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct HeaderName(pub String);

impl Scalar for HeaderName {
    const EXPECTING: &'static str = "an HTTP header name";
    fn from_str(s: &str) -> Result<Self, String> {
        match http::HeaderName::from_bytes(s.as_bytes()) {
            Ok(h) if s.len() <= 256 => Ok(Self(h.as_str().to_owned())),
            _ => Err(format!("`{s}` is not a valid HTTP header name")),
        }
    }
}
scalar_de!(HeaderName, deserialize_text);

/// Checks that no two entries share a key; `what` names the list.
pub fn check_unique<'a>(what: &str, keys: impl IntoIterator<Item = &'a str>) -> Result<(), String> {
    let mut seen = std::collections::BTreeSet::new();
    for k in keys {
        if !seen.insert(k.to_ascii_lowercase()) {
            return Err(format!("{what}: `{k}` appears more than once"));
        }
    }
    Ok(())
}

/// Checks a list's length against the CRD's `maxItems`.
pub fn check_max<T>(what: &str, items: &[T], max: usize) -> Result<(), String> {
    if items.len() > max { Err(format!("{what}: at most {max} entries, got {}", items.len())) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_durations() {
        let ok = [
            ("0s", 0),
            ("10s", 10_000),
            ("500ms", 500),
            ("1h", 3_600_000),
            ("1m30s", 90_000),
            ("1h2m3s4ms", 3_723_004),
            ("99999ms", 99_999),
        ];
        for (s, ms) in ok {
            assert_eq!(GwDuration::parse(s).map(GwDuration::as_millis), Ok(ms), "{s}");
        }
        for s in ["", "1.5s", "10", "s", "-1s", "1d", "100000s", "1h1m1s1ms1ms", " 1s", "1S", "1us"] {
            assert!(GwDuration::parse(s).is_err(), "{s} should be refused");
        }
    }

    #[test]
    fn durations_print_exactly() {
        for (ms, s) in [(0, "0s"), (1500, "1500ms"), (90_000, "1m30s"), (3_600_000, "1h"), (10_000, "10s")] {
            assert_eq!(GwDuration(Duration::from_millis(ms)).to_string(), s);
            assert_eq!(GwDuration::parse(s).map(GwDuration::as_millis), Ok(ms));
        }
    }

    #[test]
    fn names() {
        assert!(check_dns_label("web-v1").is_ok());
        for bad in ["", "Web", "-web", "web-", "a.b", &"a".repeat(64)] {
            assert!(check_dns_label(bad).is_err(), "{bad}");
        }
        assert!(check_dns_subdomain("web.v1").is_ok());
        assert!(check_dns_subdomain("web..v1").is_err());
    }
}
