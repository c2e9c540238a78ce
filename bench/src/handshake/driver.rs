//! One mTLS handshake between the proxy's client and server configurations,
//! driven in memory: no sockets, no runtime, just the bytes each side
//! writes handed to the other until neither has anything left to say.
//!
//! ```text
//!  ClientConnection ──write_tls──► buf ──read_tls + process_new_packets──► ServerConnection
//!                   ◄──read_tls + process_new_packets── buf ◄──write_tls──
//! ```
//!
//! Each side's calls are timed separately (with the identity checks the
//! proxy makes after its handshakes, `transport::tls::{connect, accept}`),
//! so that the cost splits into what an outbound proxy (the client) and an
//! inbound proxy (the server) pay.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use rustls::client::Resumption;
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, ConnectionCommon, HandshakeKind, ServerConfig, ServerConnection};
use weft_proxy::identity::{Credentials, SpiffeId, TlsConfigs, TrustBundle, build_configs};

/// The identities of the two ends, as in the full bench's `weft-mtls` pair.
pub const CLIENT_ID: &str = "spiffe://cluster.local/ns/default/sa/bench-client";
pub const SERVER_ID: &str = "spiffe://cluster.local/ns/default/sa/bench-server";

/// Certificates last as long as the control plane's do by default; a run
/// takes seconds.
const LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// A throwaway mesh CA: a self-signed ECDSA P-256 root.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

impl Ca {
    pub fn new() -> anyhow::Result<Ca> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "weft");
        dn.push(DnType::CommonName, "weft-bench handshakes root");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Ok(Ca { issuer: CertifiedIssuer::self_signed(params, key)? })
    }

    /// The trust bundle every proxy of this mesh holds.
    pub fn bundle(&self) -> TrustBundle {
        TrustBundle { version: 1, anchors: vec![self.issuer.der().clone()] }
    }

    /// A leaf for `id` shaped like the control plane's (`ca/issuer.rs`
    /// `sign_leaf`): fresh P-256 key, empty subject, the SPIFFE ID as the
    /// only (URI) SAN, digitalSignature, serverAuth and clientAuth.
    pub fn issue(&self, id: &SpiffeId) -> anyhow::Result<Credentials> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(id.as_str().try_into()?)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Credentials {
            chain: vec![cert.der().clone()],
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
            not_after: SystemTime::now() + LIFETIME,
        })
    }

    /// The proxy's configurations for `id` (`identity::build_configs`),
    /// with `resumption` as the client-side session cache.
    pub fn configs(&self, id: &SpiffeId, resumption: Resumption) -> anyhow::Result<TlsConfigs> {
        Ok(build_configs(&self.issue(id)?, &self.bundle(), Arc::new(resumption))?)
    }
}

/// The two ends of the measured connections: an outbound proxy's client
/// configuration (HTTP ALPN, as for meshed HTTP traffic) and an inbound
/// proxy's server configuration, each holding its own certificate.
#[derive(Debug, Clone)]
pub struct Pair {
    pub client: Arc<ClientConfig>,
    pub server: Arc<ServerConfig>,
    /// What the client expects the server to prove (from discovery, in
    /// the proxy).
    pub expected_server: SpiffeId,
    /// Keys the client's session cache, as the proxy keys it by address.
    pub server_name: ServerName<'static>,
}

impl Pair {
    /// `resumption` is the client's session cache:
    /// [`Resumption::disabled`] for full handshakes every time, the
    /// proxy's shared in-memory cache for resumed ones.
    pub fn new(ca: &Ca, resumption: Resumption) -> anyhow::Result<Pair> {
        let client_id = SpiffeId::parse(CLIENT_ID)?;
        let server_id = SpiffeId::parse(SERVER_ID)?;
        let client = ca.configs(&client_id, resumption)?.client_http;
        let server = ca.configs(&server_id, Resumption::disabled())?.server;
        Ok(Pair {
            client,
            server,
            expected_server: server_id,
            server_name: ServerName::IpAddress(std::net::Ipv4Addr::new(198, 18, 0, 2).into()),
        })
    }
}

/// Time spent in each side's calls during one handshake.
#[derive(Debug, Clone, Copy, Default)]
pub struct Split {
    pub client: Duration,
    pub server: Duration,
}

/// A finished handshake: both connections (ready for application data),
/// what each side proved to the other, and the time each side took.
#[derive(Debug)]
pub struct Handshake {
    pub client: ClientConnection,
    pub server: ServerConnection,
    /// The client's SPIFFE ID, as the inbound proxy reads it.
    pub client_id: SpiffeId,
    pub split: Split,
}

impl Handshake {
    /// Full or resumed, as both sides saw it; an error if they disagree.
    pub fn kind(&self) -> anyhow::Result<HandshakeKind> {
        match (self.client.handshake_kind(), self.server.handshake_kind()) {
            (Some(c), Some(s)) if c == s => Ok(c),
            (c, s) => bail!("the client saw a {c:?} handshake, the server a {s:?} one"),
        }
    }
}

/// Runs one handshake. `buf` is scratch space, reused between calls.
///
/// After both sides finish, the server's session tickets (sent after the
/// client's Finished) are still delivered and processed: every connection
/// pays for them, and resumption needs them.
pub fn handshake(pair: &Pair, buf: &mut Vec<u8>) -> anyhow::Result<Handshake> {
    let mut split = Split::default();
    let t = Instant::now();
    let mut client = ClientConnection::new(pair.client.clone(), pair.server_name.clone()).context("client: start")?;
    split.client += t.elapsed();
    let t = Instant::now();
    let mut server = ServerConnection::new(pair.server.clone()).context("server: start")?;
    split.server += t.elapsed();

    loop {
        let t = Instant::now();
        let to_server = flush(&mut client, buf).context("client: write")?;
        split.client += t.elapsed();
        let t = Instant::now();
        feed(&mut server, buf).context("server: the client's flight")?;
        split.server += t.elapsed();

        let t = Instant::now();
        let to_client = flush(&mut server, buf).context("server: write")?;
        split.server += t.elapsed();
        let t = Instant::now();
        feed(&mut client, buf).context("client: the server's flight")?;
        split.client += t.elapsed();

        if to_server == 0 && to_client == 0 {
            break;
        }
    }
    if client.is_handshaking() || server.is_handshaking() {
        bail!(
            "the handshake stalled (client handshaking: {}, server handshaking: {})",
            client.is_handshaking(),
            server.is_handshaking()
        );
    }

    // What the proxy checks once the handshake is done.
    let t = Instant::now();
    let got = leaf_id(client.peer_certificates()).context("client: the server's identity")?;
    if got != pair.expected_server {
        bail!("client: the server proved {got}, not {}", pair.expected_server);
    }
    split.client += t.elapsed();
    let t = Instant::now();
    let client_id = leaf_id(server.peer_certificates()).context("server: the client's identity")?;
    split.server += t.elapsed();
    Ok(Handshake { client, server, client_id, split })
}

/// Everything a side wants to write, into `buf` (cleared first).
fn flush<D>(conn: &mut ConnectionCommon<D>, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    buf.clear();
    while conn.wants_write() {
        if conn.write_tls(buf)? == 0 {
            break;
        }
    }
    Ok(buf.len())
}

/// Hands `buf` to a side: read as much as it takes, process, repeat.
fn feed<D>(conn: &mut ConnectionCommon<D>, buf: &[u8]) -> anyhow::Result<()> {
    let mut rd = buf;
    while !rd.is_empty() {
        if conn.read_tls(&mut rd)? == 0 {
            bail!("the connection took no more bytes with {} left", rd.len());
        }
        conn.process_new_packets()?;
    }
    Ok(())
}

fn leaf_id(chain: Option<&[CertificateDer<'_>]>) -> anyhow::Result<SpiffeId> {
    let leaf = chain.and_then(|c| c.first()).context("no certificate")?;
    Ok(SpiffeId::from_cert(leaf.as_ref())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mutual_handshake_completes_with_both_identities() {
        let ca = Ca::new().unwrap();
        let pair = Pair::new(&ca, Resumption::disabled()).unwrap();
        let mut hs = handshake(&pair, &mut Vec::new()).unwrap();
        assert_eq!(hs.kind().unwrap(), HandshakeKind::Full);
        assert_eq!(hs.client_id.as_str(), CLIENT_ID);
        assert_eq!(hs.client.alpn_protocol(), Some(weft_proxy::identity::ALPN_HTTP));
        assert_eq!(hs.server.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
        assert!(hs.split.client > Duration::ZERO && hs.split.server > Duration::ZERO);
        // The connection carries data both ways.
        use std::io::{Read as _, Write as _};
        hs.client.writer().write_all(b"hello").unwrap();
        let mut buf = Vec::new();
        hs.client.write_tls(&mut buf).unwrap();
        hs.server.read_tls(&mut &buf[..]).unwrap();
        hs.server.process_new_packets().unwrap();
        let mut got = [0u8; 5];
        hs.server.reader().read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello");
    }

    #[test]
    fn a_shared_cache_resumes_the_second_handshake_and_a_fresh_one_does_not() {
        let ca = Ca::new().unwrap();
        let mut buf = Vec::new();
        let shared = Pair::new(&ca, Resumption::in_memory_sessions(1024)).unwrap();
        assert_eq!(handshake(&shared, &mut buf).unwrap().kind().unwrap(), HandshakeKind::Full);
        for _ in 0..3 {
            let hs = handshake(&shared, &mut buf).unwrap();
            assert_eq!(hs.kind().unwrap(), HandshakeKind::Resumed);
            // Resumption carries the client's verified identity over.
            assert_eq!(hs.client_id.as_str(), CLIENT_ID);
        }
        // A fresh cache for every connection: never resumed.
        for _ in 0..2 {
            let fresh = Pair { client: shared_with_fresh_cache(&shared), ..shared.clone() };
            assert_eq!(handshake(&fresh, &mut buf).unwrap().kind().unwrap(), HandshakeKind::Full);
        }
        let disabled = Pair::new(&ca, Resumption::disabled()).unwrap();
        for _ in 0..2 {
            assert_eq!(handshake(&disabled, &mut buf).unwrap().kind().unwrap(), HandshakeKind::Full);
        }
    }

    fn shared_with_fresh_cache(pair: &Pair) -> Arc<ClientConfig> {
        let mut config = (*pair.client).clone();
        config.resumption = Resumption::in_memory_sessions(1024);
        Arc::new(config)
    }

    #[test]
    fn the_client_refuses_a_server_with_another_identity() {
        let ca = Ca::new().unwrap();
        let mut pair = Pair::new(&ca, Resumption::disabled()).unwrap();
        pair.expected_server = SpiffeId::parse("spiffe://cluster.local/ns/default/sa/other").unwrap();
        let err = handshake(&pair, &mut Vec::new()).unwrap_err();
        assert!(format!("{err:#}").contains("not spiffe://cluster.local/ns/default/sa/other"), "{err:#}");
    }

    #[test]
    fn certificates_from_another_ca_are_refused_both_ways() {
        let (ca, other) = (Ca::new().unwrap(), Ca::new().unwrap());
        let mut pair = Pair::new(&ca, Resumption::disabled()).unwrap();
        let foreign = Pair::new(&other, Resumption::disabled()).unwrap();
        // A client of another mesh refuses the server's chain.
        pair.client = foreign.client.clone();
        let err = handshake(&pair, &mut Vec::new()).unwrap_err();
        assert!(format!("{err:#}").contains("client: the server's flight: invalid peer certificate"), "{err:#}");
        // A client trusting both roots but holding a foreign certificate
        // gets past its own check; the server refuses it.
        let both = TrustBundle {
            version: 1,
            anchors: vec![ca.bundle().anchors[0].clone(), other.bundle().anchors[0].clone()],
        };
        let credentials = other.issue(&SpiffeId::parse(CLIENT_ID).unwrap()).unwrap();
        pair.client = build_configs(&credentials, &both, Arc::new(Resumption::disabled())).unwrap().client_http;
        let err = handshake(&pair, &mut Vec::new()).unwrap_err();
        assert!(format!("{err:#}").contains("server: the client's flight: invalid peer certificate"), "{err:#}");
    }
}
