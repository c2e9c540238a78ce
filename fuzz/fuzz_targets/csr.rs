//! The control plane's CSR check (`ca::csr::check`): PKCS#10 DER sent by
//! any proxy to `Identity.Certify`.
//!
//! Checks: no panic; a CSR is accepted only when its one SAN is the
//! identity asked for (its URI appears in the bytes), and oversized input
//! is refused unread.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_control::ca::SpiffeId;
use weft_control::ca::csr::{CsrError, MAX_CSR_BYTES, check};

const IDENTITY: &str = "spiffe://cluster.local/ns/default/sa/web";

fuzz_target!(|der: &[u8]| {
    let identity: SpiffeId = IDENTITY.parse().expect("a valid identity");
    match check(der, &identity) {
        Ok(_) => {
            let needle = IDENTITY.as_bytes();
            assert!(der.windows(needle.len()).any(|w| w == needle), "accepted a CSR that never names {IDENTITY}");
        }
        Err(CsrError::TooLarge(n)) => assert!(n > MAX_CSR_BYTES),
        Err(_) => assert!(der.len() <= MAX_CSR_BYTES, "{} bytes were read though over the limit", der.len()),
    }
});
