//! The explicit proxy's request target (`outbound::explicit::target`):
//! absolute-form URIs and CONNECT authorities as a client writes them.
//!
//! Input: byte 0 picks the method (odd: CONNECT); the rest is the request
//! target, parsed by `http` as hyper does before our code sees it. Checks:
//! no panic; the authority we keep is no longer than the target; and what
//! we decide survives a round trip: the authority written back into a
//! request target of the same kind parses to the same decision.
#![no_main]

use http::{Method, Uri};
use libfuzzer_sys::fuzz_target;
use weft_proxy::outbound::explicit::target::parse;

fuzz_target!(|input: &[u8]| {
    let Some((&mode, target)) = input.split_first() else { return };
    let method = if mode & 1 == 1 { Method::CONNECT } else { Method::GET };
    let Ok(uri) = Uri::try_from(target) else { return };
    let Ok(parsed) = parse(&method, &uri) else { return };

    assert!(parsed.authority.len() <= target.len(), "authority {:?} longer than the target", parsed.authority);
    assert_eq!(parsed.tunnel, method == Method::CONNECT);

    let again = if parsed.tunnel { parsed.authority.clone() } else { format!("http://{}/", parsed.authority) };
    let uri2: Uri = again.parse().unwrap_or_else(|e| panic!("{again:?} (from {uri}) does not parse: {e}"));
    let reparsed = parse(&method, &uri2).unwrap_or_else(|e| panic!("{again:?} (from {uri}) refused: {e}"));
    assert_eq!(reparsed, parsed, "{uri} -> {again}");
});
