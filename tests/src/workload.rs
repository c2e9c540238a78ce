//! What the testkit workloads and the tests agree on: the byte pattern that
//! `/bytes` streams, and the escaping of raw bytes on command lines.

/// Byte `i` of the stream that the HTTP server's `/bytes?n=N` sends.
///
/// The period, 251, is prime and so shares no factor with any buffer size: a
/// chunk dropped, repeated or reordered by a proxy changes the digest.
pub fn pattern_byte(i: u64) -> u8 {
    (i % 251) as u8
}

/// The first `n` bytes of [`pattern_byte`].
pub fn pattern(n: u64) -> Vec<u8> {
    (0..n).map(pattern_byte).collect()
}

/// Bytes as printable ASCII: `\r`, `\n`, `\\` and `\xNN` for the rest.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'\r' => out.push_str("\\r"),
            b'\n' => out.push_str("\\n"),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

/// The inverse of [`escape`] (and of what a test writes by hand).
pub fn unescape(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next() {
            Some(b'r') => out.push(b'\r'),
            Some(b'n') => out.push(b'\n'),
            Some(b'\\') => out.push(b'\\'),
            Some(b'x') => {
                let hex: Vec<u8> = bytes.by_ref().take(2).collect();
                let hex = std::str::from_utf8(&hex).map_err(|e| e.to_string())?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| format!("bad escape \\x{hex}"))?);
            }
            other => return Err(format!("bad escape after a backslash: {other:?}")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_round_trips() {
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(unescape(&escape(&all)).unwrap(), all);
        assert_eq!(unescape("GET / HTTP/1.1\\r\\n\\x00").unwrap(), b"GET / HTTP/1.1\r\n\0");
        assert!(unescape("\\q").is_err());
    }

    #[test]
    fn pattern_has_period_251() {
        let p = pattern(600);
        assert_eq!(p[0], 0);
        assert_eq!(p[250], 250);
        assert_eq!(p[251], 0);
        assert_eq!(p[599], (599 % 251) as u8);
    }
}
