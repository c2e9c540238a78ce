//! SPIFFE IDs: the proxy's (`identity::spiffe`, from peer certificates and
//! policy) and the CA's (`ca::SpiffeId`, the identity a proxy asks for).
//!
//! Checks: no panic; an accepted ID displays as the text it was parsed
//! from, re-parses to an equal ID, and equals the ID rebuilt from its parts.
//! (The two parsers differ on purpose in places — the CA's segments allow
//! `_` and capitals, the proxy's allow `.`/`..` — so their answers are not
//! compared with each other.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_proxy::identity::SpiffeId;

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else { return };

    if let Ok(id) = SpiffeId::parse(text) {
        assert_eq!(id.to_string(), text);
        assert_eq!(SpiffeId::parse(&id.to_string()).as_ref(), Ok(&id));
        let td = text["spiffe://".len()..].split('/').next().unwrap_or_default();
        let rebuilt = SpiffeId::new(td, id.namespace(), id.service_account())
            .unwrap_or_else(|e| panic!("{text}: its parts do not rebuild it: {e}"));
        assert_eq!(rebuilt, id);
    }

    if let Ok(ca) = text.parse::<weft_control::ca::SpiffeId>() {
        assert_eq!(ca.to_string(), text);
        let rebuilt = weft_control::ca::SpiffeId::new(ca.trust_domain(), ca.namespace(), ca.service_account());
        assert_eq!(rebuilt, ca);
    }
});
