//! The peer identity in a certificate (`SpiffeId::from_cert`): DER from
//! the other side of a TLS handshake.
//!
//! Checks: no panic; an identity found is a valid SPIFFE ID that
//! round-trips through its text, and is one of the URIs in the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_proxy::identity::SpiffeId;

fuzz_target!(|der: &[u8]| {
    let Ok(id) = SpiffeId::from_cert(der) else { return };
    assert_eq!(SpiffeId::parse(id.as_str()).as_ref(), Ok(&id));
    let needle = id.as_str().as_bytes();
    assert!(der.windows(needle.len()).any(|w| w == needle), "{id} is not in the certificate's bytes");
});
