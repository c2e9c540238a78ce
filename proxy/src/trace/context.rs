//! Trace context on the wire, parsed and formatted: W3C `traceparent`
//! (with `tracestate` carried as it is), B3 single header (`b3`) and B3
//! multi header (`x-b3-*`), in that order of precedence, as linkerd2-proxy
//! reads them. Pure functions over a header map, tested with tables.
//!
//! The proxy answers in the request's own format: what it writes towards
//! the next hop is the same trace, sampled as it came, with this hop's span
//! as the parent.

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
pub const B3: HeaderName = HeaderName::from_static("b3");
pub const B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
pub const B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
pub const B3_PARENT_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
pub const B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
pub const B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");

/// 16 bytes, never all zero.
pub type TraceId = [u8; 16];
/// 8 bytes, never all zero.
pub type SpanId = [u8; 8];

/// Which propagation format a request used; the proxy writes back in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    W3c,
    B3Single,
    B3Multi,
}

/// The caller's context, as read from the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceContext {
    pub format: Format,
    pub trace_id: TraceId,
    /// The caller's span: this hop's parent.
    pub parent_id: SpanId,
    /// The caller's sampling decision.
    pub sampled: bool,
    /// W3C trace flags as received (bit 0 is `sampled`; Level 2's bit 1
    /// says the trace id is random, and is passed on); 0 for B3.
    pub flags: u8,
}

/// Reads the request's trace context: `traceparent` first, then `b3`, then
/// `x-b3-*`. A malformed header of one format lets the next be tried; none
/// valid is `None` (the request starts a trace only if the ratio says so).
pub fn extract(headers: &HeaderMap) -> Option<TraceContext> {
    if let Some(ctx) = headers.get(TRACEPARENT).and_then(|v| parse_traceparent(v.as_bytes())) {
        return Some(ctx);
    }
    if let Some(ctx) = headers.get(B3).and_then(|v| parse_b3_single(v.as_bytes())) {
        return Some(ctx);
    }
    parse_b3_multi(headers)
}

/// Writes the context for the next hop: same format, same trace and
/// sampling, `span_id` as the parent. B3 multi's parent span header is set
/// to this hop's parent; W3C `tracestate` is left as it came, and so are
/// the trace flags other than `sampled` (`flags`).
pub fn inject(
    headers: &mut HeaderMap,
    format: Format,
    trace_id: &TraceId,
    span_id: &SpanId,
    parent_id: Option<&SpanId>,
    sampled: bool,
    flags: u8,
) {
    match format {
        Format::W3c => {
            let flags = (flags & !1) | u8::from(sampled);
            let v = format!("00-{}-{}-{}", hex(trace_id), hex(span_id), hex(&[flags]));
            headers.insert(TRACEPARENT, value(v));
        }
        Format::B3Single => {
            let v = format!("{}-{}-{}", hex(trace_id), hex(span_id), if sampled { "1" } else { "0" });
            headers.insert(B3, value(v));
        }
        Format::B3Multi => {
            headers.insert(B3_TRACE_ID, value(hex(trace_id)));
            headers.insert(B3_SPAN_ID, value(hex(span_id)));
            match parent_id {
                Some(p) => headers.insert(B3_PARENT_SPAN_ID, value(hex(p))),
                None => headers.remove(B3_PARENT_SPAN_ID),
            };
            // Debug (`x-b3-flags: 1`) implies sampled; keep it as it came.
            if headers.get(B3_FLAGS).is_none_or(|f| f.as_bytes() != b"1") {
                headers.insert(B3_SAMPLED, HeaderValue::from_static(if sampled { "1" } else { "0" }));
            }
        }
    }
}

fn value(s: String) -> HeaderValue {
    HeaderValue::try_from(s).expect("hex and dashes are a valid header value")
}

/// `version-traceid-parentid-flags`, version `00` (a higher version is read
/// by its first four fields, as the spec asks).
fn parse_traceparent(v: &[u8]) -> Option<TraceContext> {
    let s = std::str::from_utf8(v).ok()?.trim();
    let mut parts = s.split('-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let parent = parts.next()?;
    let flags = parts.next()?;
    let version = u8::from_str_radix(version, 16).ok().filter(|_| version.len() == 2)?;
    if version == 0xff || (version == 0 && parts.next().is_some()) || flags.len() != 2 {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(TraceContext {
        format: Format::W3c,
        trace_id: trace_id(trace)?,
        parent_id: span_id(parent)?,
        sampled: flags & 1 == 1,
        flags,
    })
}

/// `traceid-spanid[-sampled[-parentspanid]]`; a lone `0`/`1`/`d` carries a
/// decision without ids (no context to continue).
fn parse_b3_single(v: &[u8]) -> Option<TraceContext> {
    let s = std::str::from_utf8(v).ok()?.trim();
    let mut parts = s.split('-');
    let trace = parts.next()?;
    let span = parts.next()?;
    let sampled = match parts.next() {
        None => true,
        Some("1" | "d") => true,
        Some("0") => false,
        Some(_) => return None,
    };
    if let Some(parent) = parts.next() {
        span_id(parent)?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(TraceContext {
        format: Format::B3Single,
        trace_id: b3_trace_id(trace)?,
        parent_id: span_id(span)?,
        sampled,
        flags: 0,
    })
}

/// `x-b3-traceid` and `x-b3-spanid` (both needed), `x-b3-sampled` /
/// `x-b3-flags`; no sampling header at all defers to the receiver, which
/// here means sampled (the caller propagated a trace on purpose).
fn parse_b3_multi(headers: &HeaderMap) -> Option<TraceContext> {
    let text = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let trace = b3_trace_id(text(&B3_TRACE_ID)?)?;
    let span = span_id(text(&B3_SPAN_ID)?)?;
    let sampled = match (text(&B3_FLAGS), text(&B3_SAMPLED)) {
        (Some("1"), _) => true,
        (_, Some("1" | "true")) => true,
        (_, Some("0" | "false")) => false,
        (_, Some(_)) => return None,
        (_, None) => true,
    };
    Some(TraceContext { format: Format::B3Multi, trace_id: trace, parent_id: span, sampled, flags: 0 })
}

fn trace_id(s: &str) -> Option<TraceId> {
    let mut id = [0; 16];
    (s.len() == 32 && decode(s, &mut id) && id != [0; 16]).then_some(id)
}

/// B3 trace ids are 64 or 128 bits; a 64-bit one is the low half.
fn b3_trace_id(s: &str) -> Option<TraceId> {
    match s.len() {
        32 => trace_id(s),
        16 => {
            let mut id = [0; 16];
            (decode(s, &mut id[8..]) && id != [0; 16]).then_some(id)
        }
        _ => None,
    }
}

fn span_id(s: &str) -> Option<SpanId> {
    let mut id = [0; 8];
    (s.len() == 16 && decode(s, &mut id) && id != [0; 8]).then_some(id)
}

/// Lower- or upper-case hex into `out` (exactly twice its length).
fn decode(s: &str, out: &mut [u8]) -> bool {
    let b = s.as_bytes();
    if b.len() != out.len() * 2 {
        return false;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    for (i, o) in out.iter_mut().enumerate() {
        match (nibble(b[2 * i]), nibble(b[2 * i + 1])) {
            (Some(h), Some(l)) => *o = h << 4 | l,
            _ => return false,
        }
    }
    true
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

/// A fresh random trace id (never zero).
pub fn new_trace_id() -> TraceId {
    loop {
        let id = fastrand::u128(..).to_be_bytes();
        if id != [0; 16] {
            return id;
        }
    }
}

/// A fresh random span id (never zero).
pub fn new_span_id() -> SpanId {
    fastrand::u64(1..).to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const S: &str = "00f067aa0ba902b7";

    fn tid(s: &str) -> TraceId {
        b3_trace_id(s).expect("trace id")
    }

    fn sid(s: &str) -> SpanId {
        span_id(s).expect("span id")
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (HeaderName::from_bytes(k.as_bytes()).expect("name"), HeaderValue::from_str(v).expect("value"))
            })
            .collect()
    }

    #[test]
    fn extracts_each_format_in_order() {
        let ctx =
            |format, sampled, flags| Some(TraceContext { format, trace_id: tid(T), parent_id: sid(S), sampled, flags });
        let w3c = |sampled| ctx(Format::W3c, sampled, u8::from(sampled));
        let single = |sampled| ctx(Format::B3Single, sampled, 0);
        let multi = |sampled| ctx(Format::B3Multi, sampled, 0);
        let tp = format!("00-{T}-{S}-01");
        let b3 = format!("{T}-{S}-1");
        let cases: Vec<(Vec<(&str, String)>, Option<TraceContext>)> = vec![
            (vec![], None),
            (vec![("traceparent", tp.clone())], w3c(true)),
            (vec![("traceparent", format!("00-{T}-{S}-00"))], w3c(false)),
            // Other flag bits are kept; upper-case hex is read.
            (vec![("traceparent", format!("00-{}-{S}-03", T.to_uppercase()))], ctx(Format::W3c, true, 3)),
            (vec![("traceparent", format!("00-{T}-{S}-02"))], ctx(Format::W3c, false, 2)),
            // A future version with more fields is read by its first four.
            (vec![("traceparent", format!("01-{T}-{S}-01-extra"))], w3c(true)),
            // Version 00 with extra fields, ff, zero ids, short ids: invalid.
            (vec![("traceparent", format!("00-{T}-{S}-01-extra"))], None),
            (vec![("traceparent", format!("ff-{T}-{S}-01"))], None),
            (vec![("traceparent", format!("00-{}-{S}-01", "0".repeat(32)))], None),
            (vec![("traceparent", format!("00-{T}-{}-01", "0".repeat(16)))], None),
            (vec![("traceparent", format!("00-{}-{S}-01", &T[1..]))], None),
            (vec![("traceparent", format!("00-{T}-{S}-1"))], None),
            (vec![("traceparent", format!("00-{T}-{S}-0x"))], None),
            // W3C wins over B3; a bad traceparent falls back to B3.
            (vec![("traceparent", tp.clone()), ("b3", format!("{T}-{S}-0"))], w3c(true)),
            (vec![("traceparent", "junk".into()), ("b3", b3.clone())], single(true)),
            (vec![("b3", b3.clone())], single(true)),
            (vec![("b3", format!("{T}-{S}-0"))], single(false)),
            (vec![("b3", format!("{T}-{S}-d"))], single(true)),
            (vec![("b3", format!("{T}-{S}"))], single(true)),
            (vec![("b3", format!("{T}-{S}-1-{S}"))], single(true)),
            (vec![("b3", "0".into())], None),
            (vec![("b3", format!("{T}-{S}-x"))], None),
            (vec![("b3", format!("{T}-{S}-1-{S}-more"))], None),
            // 64-bit B3 trace ids are the low half.
            (
                vec![("b3", format!("a3ce929d0e0e4736-{S}-1"))],
                Some(TraceContext {
                    format: Format::B3Single,
                    trace_id: tid("a3ce929d0e0e4736"),
                    parent_id: sid(S),
                    sampled: true,
                    flags: 0,
                }),
            ),
            (vec![("b3", b3.clone()), ("x-b3-traceid", T.into()), ("x-b3-spanid", S.into())], single(true)),
            (vec![("x-b3-traceid", T.into()), ("x-b3-spanid", S.into()), ("x-b3-sampled", "1".into())], multi(true)),
            (vec![("x-b3-traceid", T.into()), ("x-b3-spanid", S.into()), ("x-b3-sampled", "0".into())], multi(false)),
            (vec![("x-b3-traceid", T.into()), ("x-b3-spanid", S.into()), ("x-b3-flags", "1".into())], multi(true)),
            (vec![("x-b3-traceid", T.into()), ("x-b3-spanid", S.into())], multi(true)),
            (vec![("x-b3-traceid", T.into())], None),
            (vec![("x-b3-traceid", T.into()), ("x-b3-spanid", S.into()), ("x-b3-sampled", "maybe".into())], None),
        ];
        for (i, (pairs, want)) in cases.into_iter().enumerate() {
            let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
            assert_eq!(extract(&headers(&pairs)), want, "case {i}: {pairs:?}");
        }
    }

    #[test]
    fn injects_in_the_request_format() {
        let span = sid("1111111111111111");
        let parent = sid(S);
        let cases: &[(Format, bool, u8, &[(&str, &str)], &[(&str, &str)])] = &[
            (
                Format::W3c,
                true,
                0,
                &[("tracestate", "vendor=x")],
                &[
                    ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-01"),
                    ("tracestate", "vendor=x"),
                ],
            ),
            (Format::W3c, false, 1, &[], &[("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-00")]),
            // Level 2's random-trace-id flag is passed on.
            (Format::W3c, true, 2, &[], &[("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-03")]),
            (Format::B3Single, true, 0, &[], &[("b3", "4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-1")]),
            (
                Format::B3Multi,
                true,
                0,
                &[("x-b3-sampled", "1")],
                &[
                    ("x-b3-traceid", T),
                    ("x-b3-spanid", "1111111111111111"),
                    ("x-b3-parentspanid", S),
                    ("x-b3-sampled", "1"),
                ],
            ),
            (
                Format::B3Multi,
                true,
                0,
                &[("x-b3-flags", "1")],
                &[
                    ("x-b3-traceid", T),
                    ("x-b3-spanid", "1111111111111111"),
                    ("x-b3-parentspanid", S),
                    ("x-b3-flags", "1"),
                ],
            ),
        ];
        for (format, sampled, flags, before, after) in cases {
            let mut h = headers(before);
            inject(&mut h, *format, &tid(T), &span, Some(&parent), *sampled, *flags);
            assert_eq!(h, headers(after), "{format:?} sampled={sampled}");
            // What was written reads back as this hop's span.
            let back = extract(&h).expect("reads back");
            assert_eq!((back.format, back.trace_id, back.parent_id, back.sampled), (*format, tid(T), span, *sampled));
        }
    }

    #[test]
    fn ids_are_random_and_never_zero() {
        assert_ne!(new_trace_id(), new_trace_id());
        assert_ne!(new_span_id(), [0; 8]);
        assert_eq!(hex(&[0x00, 0xab, 0x0f]), "00ab0f");
    }
}
