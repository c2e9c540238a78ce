//! The four workloads and what the app, the generator and the setups agree
//! on: ports, response size, the echo payload.

use serde::{Deserialize, Serialize};

/// Port of the app's HTTP listener (HTTP/1.1 and HTTP/2 prior knowledge).
pub const APP_HTTP_PORT: u16 = 8080;
/// Port of the app's TCP echo listener.
pub const APP_ECHO_PORT: u16 = 7000;
/// Body size of every HTTP response.
pub const RESPONSE_BYTES: usize = 1024;
/// Size of one opaque request and of its echo.
pub const ECHO_BYTES: usize = 64;
/// The `user-agent` of every HTTP request the generator sends (in every
/// setup alike), as real clients send one; `weft-policy`'s route matches it.
pub const USER_AGENT: &str = "weft-bench";

/// One request/response pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// HTTP/1.1 GET on kept-alive connections (a pool that grows on demand),
    /// 1 KiB responses.
    Http1,
    /// HTTP/2 GET, many concurrent streams on a few connections.
    Http2,
    /// Opaque TCP: a 64-byte request echoed back, on kept-alive connections.
    Tcp,
    /// A new TCP connection for every HTTP/1.1 request (`Connection: close`):
    /// the handshake cost.
    Conn,
}

impl Workload {
    pub const ALL: [Workload; 4] = [Workload::Http1, Workload::Http2, Workload::Tcp, Workload::Conn];

    pub fn name(self) -> &'static str {
        match self {
            Workload::Http1 => "http1",
            Workload::Http2 => "http2",
            Workload::Tcp => "tcp",
            Workload::Conn => "conn",
        }
    }

    /// A heading for the report.
    pub fn title(self) -> &'static str {
        match self {
            Workload::Http1 => "HTTP/1.1 keep-alive, 1 KiB responses",
            Workload::Http2 => "HTTP/2, many streams on 2 connections, 1 KiB responses",
            Workload::Tcp => "opaque TCP, 64-byte echo on kept-alive connections",
            Workload::Conn => "a new connection per HTTP/1.1 request (handshake cost)",
        }
    }

    /// The app port this workload targets.
    pub fn app_port(self) -> u16 {
        match self {
            Workload::Tcp => APP_ECHO_PORT,
            Workload::Http1 | Workload::Http2 | Workload::Conn => APP_HTTP_PORT,
        }
    }
}

/// The bytes the opaque workload sends. The first byte is not an HTTP token
/// character, so the proxy's protocol detection settles on "opaque" from
/// the first read instead of waiting for its timeout.
pub fn echo_payload() -> [u8; ECHO_BYTES] {
    let mut payload = [0u8; ECHO_BYTES];
    for (i, b) in payload.iter_mut().enumerate().skip(1) {
        *b = b'a' + (i % 26) as u8;
    }
    payload
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_payload_is_opaque_at_once() {
        let p = echo_payload();
        assert_eq!(p.len(), ECHO_BYTES);
        // Not a token character (RFC 9110 §5.6.2): detection cannot read it
        // as the start of an HTTP method.
        assert!(!p[0].is_ascii_alphanumeric() && !b"!#$%&'*+-.^_`|~".contains(&p[0]));
    }
}
