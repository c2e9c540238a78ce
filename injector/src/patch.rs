//! RFC 6902 JSON Patch operations, as an AdmissionResponse carries them.

use serde_json::Value;

/// One operation. Only `add` is needed: injection never removes anything.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Op {
    pub op: &'static str,
    pub path: String,
    pub value: Value,
}

impl Op {
    pub fn add(path: &str, value: Value) -> Self {
        Self { op: "add", path: path.to_owned(), value }
    }
}

/// Escapes one JSON Pointer reference token (RFC 6901): `~` → `~0`, `/` → `~1`.
pub fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointer_tokens_are_escaped() {
        for (raw, want) in
            [("weft.dev/injected-version", "weft.dev~1injected-version"), ("a~b/c", "a~0b~1c"), ("x", "x")]
        {
            assert_eq!(escape(raw), want);
        }
    }
}
