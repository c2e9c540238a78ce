//! A request lost to a connection that closed under it.
//!
//! A connection can be closed by its server at the moment the proxy sends
//! on it: an app exiting (a rolling update signals every container of a pod
//! at once, and the app may go before its proxy has deregistered), or an
//! idle timeout. hyper hands a request back when it never started writing
//! it (the pool then reconnects); once it was written, a reset or EOF
//! before any response byte leaves the proxy not knowing whether the
//! server read it. RFC 9112 §9.3.1 lets a client retry such a request
//! automatically when its method is idempotent (RFC 9110 §9.2.2), as
//! browsers and Go's `net/http` do: this decides when the pool sends it
//! once more on a new connection, whatever the traffic policy says (the
//! policy's retries come on top, per endpoint). The new connection to an
//! app that has exited is refused, which the inbound proxy answers as
//! unprocessed (`weft-unprocessed`) and the client's proxy retries on
//! another replica.
//!
//! Unlike Go, a new connection qualifies as well as a reused one (an app
//! can exit just after accepting): a request that itself makes the server
//! drop the connection is thus sent twice, never more — the copy goes with
//! the first resend. Only bodiless requests qualify: their copy is the
//! head alone.

use http::Method;

use super::retry::is_idempotent;

/// How a request sent on a pooled connection failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The connection closed (EOF, reset, broken pipe) before any response
    /// byte arrived.
    Closed,
    /// Anything else: a protocol error, a body error, a timeout.
    Other,
}

/// Whether to keep a copy of this request's head before sending it on a
/// reused connection (`body_len`: the body's exact length, if known).
pub fn keeps_copy(method: &Method, body_len: Option<u64>) -> bool {
    body_len == Some(0) && is_idempotent(method)
}

/// Whether a written request that failed this way is sent again on a new
/// connection (once: the caller holds one copy).
pub fn resend_on_new_connection(method: &Method, body_len: Option<u64>, failure: Failure) -> bool {
    failure == Failure::Closed && keeps_copy(method, body_len)
}

/// Whether an I/O error means the peer closed the connection.
pub fn is_closed_by_peer(kind: std::io::ErrorKind) -> bool {
    use std::io::ErrorKind::*;
    matches!(kind, ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Failure::*;

    #[test]
    fn only_idempotent_bodiless_requests_lost_to_a_closing_connection_go_again() {
        // (method, body length, failure, resend)
        let cases = [
            (Method::GET, Some(0), Closed, true),
            (Method::HEAD, Some(0), Closed, true),
            (Method::DELETE, Some(0), Closed, true),
            (Method::PUT, Some(0), Closed, true),
            // The server may have acted on it.
            (Method::POST, Some(0), Closed, false),
            (Method::PATCH, Some(0), Closed, false),
            // Its body is gone.
            (Method::PUT, Some(5), Closed, false),
            (Method::GET, None, Closed, false),
            // Not a closed connection.
            (Method::GET, Some(0), Other, false),
        ];
        for (method, len, failure, want) in cases {
            assert_eq!(resend_on_new_connection(&method, len, failure), want, "{method} {len:?} {failure:?}");
        }
    }

    #[test]
    fn a_peer_closing_is_told_from_other_io_errors() {
        use std::io::ErrorKind::*;
        for (kind, want) in [
            (ConnectionReset, true),
            (BrokenPipe, true),
            (UnexpectedEof, true),
            (ConnectionAborted, true),
            (TimedOut, false),
            (InvalidData, false),
        ] {
            assert_eq!(is_closed_by_peer(kind), want, "{kind:?}");
        }
    }
}
