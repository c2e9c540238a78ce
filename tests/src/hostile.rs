//! A misbehaving client, for the tests and the bench's `--chaos` mode: it
//! floods a port with connections that never become requests, or holds
//! many connections open and says nothing, and reports what the server did
//! with each (closed it, and after how long, or left it open).
//!
//! ```text
//! flood: every 1/rate s, the next kind in turn ─► connect ─► garbage bytes  ─┐
//!                                                         ├► a ClientHello  ─┼► wait for the server to close (≤ hold)
//!                                                         └► nothing        ─┘
//! idle:  COUNT connections at RATE/s ─► nothing ─► held for HOLD, counting the ones the server closed
//! ```
//!
//! The ClientHello is a real one (rustls), offering the mesh's ALPN so a
//! Weft inbound proxy takes it for a meshed peer and starts the handshake;
//! then the client goes silent. Every loop here is bounded by a count and a
//! time.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// The ALPN a meshed Weft client offers for HTTP (weft-proxy's `ALPN_HTTP`).
const MESH_ALPN: &[u8] = b"weft.http/1";

/// What a flood connection sends after connecting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// 256 bytes that are neither HTTP nor TLS.
    Garbage,
    /// A complete mesh ClientHello, then silence: a half-open handshake.
    Hello,
    /// Nothing at all.
    Silent,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Garbage, Kind::Hello, Kind::Silent];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Garbage => "garbage",
            Kind::Hello => "hello",
            Kind::Silent => "silent",
        }
    }

    pub fn parse(s: &str) -> Result<Kind, String> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| format!("unknown kind {s:?}"))
    }
}

/// How one connection ended, from the client's side.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Fate {
    ConnectFailed,
    /// The server closed (EOF or reset) this long after the connect.
    ClosedByPeer(Duration),
    /// Still open when the client gave up holding it.
    Held,
}

/// Counts for one kind of connection.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    pub opened: u64,
    pub connect_failed: u64,
    pub closed_by_peer: u64,
    pub held: u64,
    /// Time from connect to the server's close, of the closed ones.
    pub close_ms: Vec<u64>,
}

impl Tally {
    fn record(&mut self, fate: &Fate) {
        match fate {
            Fate::ConnectFailed => self.connect_failed += 1,
            Fate::ClosedByPeer(after) => {
                self.opened += 1;
                self.closed_by_peer += 1;
                self.close_ms.push(u64::try_from(after.as_millis()).unwrap_or(u64::MAX));
            }
            Fate::Held => {
                self.opened += 1;
                self.held += 1;
            }
        }
    }

    /// The `q` quantile (0..=1) of the close times, in ms; 0 when none.
    pub fn close_ms_quantile(&self, q: f64) -> u64 {
        let mut sorted = self.close_ms.clone();
        sorted.sort_unstable();
        match sorted.len() {
            0 => 0,
            n => sorted[((n as f64 - 1.0) * q).round() as usize],
        }
    }

    /// `PREFIX_opened=N` … lines, as the testkit prints them.
    pub fn lines(&self, prefix: &str) -> String {
        format!(
            "{prefix}_opened={}\n{prefix}_connect_failed={}\n{prefix}_closed_by_peer={}\n{prefix}_held={}\n\
             {prefix}_close_ms_p50={}\n{prefix}_close_ms_max={}\n",
            self.opened,
            self.connect_failed,
            self.closed_by_peer,
            self.held,
            self.close_ms_quantile(0.5),
            self.close_ms_quantile(1.0),
        )
    }
}

/// What a flood did, per kind.
#[derive(Clone, Debug, Default)]
pub struct FloodReport {
    pub garbage: Tally,
    pub hello: Tally,
    pub silent: Tally,
    /// Connections started per second, as achieved.
    pub rate: f64,
}

impl FloodReport {
    fn tally(&mut self, kind: Kind) -> &mut Tally {
        match kind {
            Kind::Garbage => &mut self.garbage,
            Kind::Hello => &mut self.hello,
            Kind::Silent => &mut self.silent,
        }
    }
}

impl fmt::Display for FloodReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "rate={:.0}", self.rate)?;
        for kind in Kind::ALL {
            let tally = match kind {
                Kind::Garbage => &self.garbage,
                Kind::Hello => &self.hello,
                Kind::Silent => &self.silent,
            };
            write!(f, "{}", tally.lines(kind.as_str()))?;
        }
        Ok(())
    }
}

/// A flood's settings.
#[derive(Clone, Debug)]
pub struct Flood {
    pub connect: SocketAddr,
    /// New connections per second, all kinds together.
    pub rate: f64,
    pub duration: Duration,
    /// The kinds, taken in turn.
    pub kinds: Vec<Kind>,
    /// How long each connection waits for the server to close it.
    pub hold: Duration,
}

/// The first flight of a real TLS 1.3 client offering the mesh ALPN.
pub fn client_hello() -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("ring supports TLS 1.3")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    config.alpn_protocols = vec![MESH_ALPN.to_vec()];
    let name = rustls::pki_types::ServerName::try_from("flood.weft.invalid").expect("a valid DNS name");
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("a client connection");
    let mut hello = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut hello).expect("writing to a Vec");
    }
    hello
}

/// Bytes that are neither an HTTP request line nor a TLS record (the first
/// byte is not a token character and not 0x16), different per connection.
fn garbage(seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut bytes: Vec<u8> = (0..256)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    bytes[0] = 0x00;
    bytes
}

/// One connection: connect, send what `kind` sends, wait up to `hold` for
/// the server to close.
async fn one(connect: SocketAddr, payload: Arc<Vec<u8>>, hold: Duration) -> Fate {
    let start = Instant::now();
    let Ok(Ok(mut stream)) = tokio::time::timeout(hold, TcpStream::connect(connect)).await else {
        return Fate::ConnectFailed;
    };
    if !payload.is_empty() && stream.write_all(&payload).await.is_err() {
        return Fate::ClosedByPeer(start.elapsed());
    }
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + hold;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return Fate::Held,
            Ok(Ok(0) | Err(_)) => return Fate::ClosedByPeer(start.elapsed()),
            // Whatever the server answers (a ServerHello, a 400), keep
            // waiting for it to close.
            Ok(Ok(_)) => {}
        }
    }
}

/// Runs a flood and waits for its last connection to end (at most `hold`
/// after the last start).
pub async fn flood(flood: &Flood) -> FloodReport {
    let hello = Arc::new(client_hello());
    let empty = Arc::new(Vec::new());
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / flood.rate));
    // Behind schedule (a busy machine), catch up in a burst: the rate is
    // what the server must withstand.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let start = Instant::now();
    let total = (flood.rate * flood.duration.as_secs_f64()).round() as u64;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        ticks.tick().await;
        let kind = flood.kinds[i as usize % flood.kinds.len()];
        let payload = match kind {
            Kind::Garbage => Arc::new(garbage(i)),
            Kind::Hello => hello.clone(),
            Kind::Silent => empty.clone(),
        };
        let (connect, hold) = (flood.connect, flood.hold);
        tasks.spawn(async move { (kind, one(connect, payload, hold).await) });
    }
    let elapsed = start.elapsed().as_secs_f64().max(1e-3);
    let mut report = FloodReport { rate: total as f64 / elapsed, ..FloodReport::default() };
    while let Some(done) = tasks.join_next().await {
        if let Ok((kind, fate)) = done {
            report.tally(kind).record(&fate);
        }
    }
    report
}

/// Idle connections' settings.
#[derive(Clone, Debug)]
pub struct Idle {
    pub connect: SocketAddr,
    pub count: u64,
    /// New connections per second while opening.
    pub rate: f64,
    /// How long to hold them once all are opened.
    pub hold: Duration,
}

/// Opens `count` silent connections, calls `opened` with the tally of the
/// connects (all `held` so far), holds them for `hold`, then returns how many
/// the server closed meanwhile.
pub async fn idle(idle: &Idle, opened: impl FnOnce(&Tally)) -> Tally {
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / idle.rate));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut streams = Vec::new();
    let mut tally = Tally::default();
    let start = Instant::now();
    let mut connects = tokio::task::JoinSet::new();
    for _ in 0..idle.count {
        ticks.tick().await;
        let connect = idle.connect;
        connects.spawn(async move {
            tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(connect)).await.ok().and_then(Result::ok)
        });
    }
    while let Some(done) = connects.join_next().await {
        match done.ok().flatten() {
            Some(stream) => streams.push(stream),
            None => tally.connect_failed += 1,
        }
    }
    tally.opened = streams.len() as u64;
    tally.held = tally.opened;
    opened(&tally);
    // Watch every connection for the server's close until the hold ends.
    let deadline = tokio::time::Instant::now() + idle.hold;
    let mut watches = tokio::task::JoinSet::new();
    for mut stream in streams {
        watches.spawn(async move {
            let mut buf = [0u8; 64];
            loop {
                match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
                    Err(_) => return None,
                    Ok(Ok(0) | Err(_)) => return Some(start.elapsed()),
                    Ok(Ok(_)) => {}
                }
            }
        });
    }
    while let Some(done) = watches.join_next().await {
        if let Ok(Some(after)) = done {
            tally.held -= 1;
            tally.closed_by_peer += 1;
            tally.close_ms.push(u64::try_from(after.as_millis()).unwrap_or(u64::MAX));
        }
    }
    tally
}

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit (a flood
/// and 10,000 idle connections need more than the usual 1,024), and
/// returns the new soft limit.
pub fn raise_nofile() -> std::io::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    Ok(hard)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_hello_is_a_tls_handshake_record_offering_the_mesh_alpn() {
        let hello = client_hello();
        assert_eq!(&hello[..2], &[0x16, 0x03], "a TLS handshake record");
        assert!(hello.windows(MESH_ALPN.len()).any(|w| w == MESH_ALPN), "offers {MESH_ALPN:?}");
    }

    #[test]
    fn garbage_is_neither_http_nor_tls() {
        for seed in 0..100 {
            let g = garbage(seed);
            assert_eq!(g.len(), 256);
            assert_eq!(g[0], 0x00);
        }
        assert_ne!(garbage(1), garbage(2));
    }

    #[test]
    fn tallies_count_each_fate_and_quantiles_come_from_the_closed_ones() {
        let mut t = Tally::default();
        for fate in [
            Fate::ConnectFailed,
            Fate::Held,
            Fate::ClosedByPeer(Duration::from_millis(1000)),
            Fate::ClosedByPeer(Duration::from_millis(3000)),
            Fate::ClosedByPeer(Duration::from_millis(2000)),
        ] {
            t.record(&fate);
        }
        assert_eq!((t.opened, t.connect_failed, t.closed_by_peer, t.held), (4, 1, 3, 1));
        assert_eq!(t.close_ms_quantile(0.5), 2000);
        assert_eq!(t.close_ms_quantile(1.0), 3000);
        assert_eq!(Tally::default().close_ms_quantile(0.99), 0);
        assert!(t.lines("x").contains("x_closed_by_peer=3\n"), "{}", t.lines("x"));
    }

    #[tokio::test]
    async fn a_flood_against_a_server_that_closes_at_once_sees_every_connection_closed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                drop(stream);
            }
        });
        let report = flood(&Flood {
            connect: addr,
            rate: 300.0,
            duration: Duration::from_millis(100),
            kinds: Kind::ALL.to_vec(),
            hold: Duration::from_secs(5),
        })
        .await;
        for (kind, t) in [("garbage", &report.garbage), ("hello", &report.hello), ("silent", &report.silent)] {
            assert_eq!((t.opened, t.closed_by_peer, t.held), (10, 10, 0), "{kind}: {t:?}");
        }
    }
}
