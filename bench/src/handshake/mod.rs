//! `weft-bench handshakes`: what an mTLS handshake between two Weft proxies
//! costs in CPU, full and resumed, per core.
//!
//! Both ends use exactly the proxy's TLS configurations
//! (`weft_proxy::identity::build_configs`: TLS 1.3, ring, ECDSA P-256 leaves
//! with a SPIFFE URI SAN from a throwaway CA, the mesh server verifier,
//! client certificates required, ALPN `weft.http/1`), and are driven in
//! memory ([`driver`]) on one thread pinned to one CPU:
//!
//! ```text
//!  warm-up (full, resumed) ─► round 1: full, resumed ─► round 2: full, resumed ─► … ─► median per kind
//! ```
//!
//! - *full*: the client's session cache is disabled, so every handshake is
//!   full (key exchange, both certificate chains verified, both sides sign);
//! - *resumed*: the proxy's shared in-memory cache, so every handshake after
//!   the first resumes a TLS 1.3 session (PSK with a fresh key exchange);
//!   any that does not ends the run with an error.
//!
//! Kinds alternate round by round so that other work on the machine hits
//! both alike. The rate is handshakes per second of this thread's CPU time
//! (`CLOCK_THREAD_CPUTIME_ID`), so time the scheduler gave to others does
//! not count; the client/server split comes from timing each side's calls.

pub mod driver;
pub mod report;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::time::{ClockId, clock_gettime};
use nix::unistd::Pid;
use rustls::HandshakeKind;
use rustls::client::Resumption;
use serde::Serialize;

use crate::report::machine::Host;
use crate::report::model::Spread;
use driver::{Ca, Pair, Split};

/// Flags of `weft-bench handshakes`.
#[derive(clap::Args, Debug, Clone)]
pub struct HandshakeArgs {
    /// Measured time per kind (full, resumed), split evenly over the rounds.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Unmeasured warm-up per kind, before the first round.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Rounds per kind; the figures are their median [min–max].
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub rounds: u32,
    /// The CPU to pin the thread to [default: the last one this process may use].
    #[arg(long)]
    pub cpu: Option<usize>,
    /// Directory for handshakes.md and handshakes.json
    /// [default: bench/results in this checkout].
    #[arg(long)]
    pub out: Option<PathBuf>,
}

impl HandshakeArgs {
    pub fn out(&self) -> PathBuf {
        self.out.clone().unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/results")))
    }
}

/// The two kinds measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Full,
    Resumed,
}

impl Kind {
    pub const ALL: [Kind; 2] = [Kind::Full, Kind::Resumed];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Full => "full",
            Kind::Resumed => "resumed",
        }
    }

    /// The client session cache that makes every handshake this kind:
    /// none, or the proxy's own (`IdentityHandle::new`).
    fn resumption(self) -> Resumption {
        match self {
            Kind::Full => Resumption::disabled(),
            Kind::Resumed => Resumption::in_memory_sessions(1024),
        }
    }

    fn expected(self) -> HandshakeKind {
        match self {
            Kind::Full => HandshakeKind::Full,
            Kind::Resumed => HandshakeKind::Resumed,
        }
    }
}

/// One round of one kind, raw.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Round {
    pub handshakes: u64,
    pub wall_s: f64,
    /// This thread's CPU time over the round.
    pub cpu_s: f64,
    /// Summed time in the client's and in the server's calls.
    pub client_s: f64,
    pub server_s: f64,
}

impl Round {
    /// Handshakes per CPU second (both sides on this one core).
    pub fn rate(&self) -> f64 {
        self.handshakes as f64 / self.cpu_s
    }

    /// CPU µs per handshake for each side: the CPU per handshake, split in
    /// the proportion of the time measured in each side's calls. Preemption
    /// inflates both sides' timings alike, so the proportion holds on a
    /// busy machine where the raw timings do not.
    pub fn split_us(&self) -> (f64, f64) {
        let per = self.cpu_s * 1e6 / self.handshakes as f64;
        let client_share = self.client_s / (self.client_s + self.server_s);
        (per * client_share, per * (1.0 - client_share))
    }
}

/// One kind's figures: medians over the rounds.
#[derive(Debug, Clone, Serialize)]
pub struct KindResult {
    pub kind: Kind,
    /// Handshakes per second on one core, both sides on it.
    pub per_core: Spread,
    /// CPU µs per handshake of the client (an outbound proxy) and of the
    /// server (an inbound proxy).
    pub client_us: Spread,
    pub server_us: Spread,
    /// What the handshakes negotiated (the first one's).
    pub negotiated: String,
    pub rounds: Vec<Round>,
}

impl KindResult {
    fn of(kind: Kind, negotiated: String, rounds: Vec<Round>) -> KindResult {
        let spread = |f: &dyn Fn(&Round) -> f64| Spread::of(rounds.iter().map(f)).unwrap_or_default();
        KindResult {
            kind,
            per_core: spread(&|r| r.rate()),
            client_us: spread(&|r| r.split_us().0),
            server_us: spread(&|r| r.split_us().1),
            negotiated,
            rounds,
        }
    }
}

/// Everything `handshakes.json` holds.
#[derive(Debug, Serialize)]
pub struct Results {
    pub host: Host,
    /// Whether this binary (and so rustls and ring) is optimized.
    pub optimized: bool,
    /// The CPU the thread was pinned to.
    pub cpu: usize,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub rounds: u32,
    pub client_identity: &'static str,
    pub server_identity: &'static str,
    pub kinds: Vec<KindResult>,
    /// Why the figures are only preliminary, if they are.
    pub preliminary: Vec<String>,
}

/// Measures both kinds, prints the table, writes the report.
pub fn run(args: &HandshakeArgs) -> anyhow::Result<()> {
    let mut host = Host::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap_or(".".as_ref()));
    let cpu = pin(args.cpu)?;
    let ca = Ca::new()?;
    let mut buf = Vec::with_capacity(16 * 1024);

    let mut pairs = Vec::new();
    for kind in Kind::ALL {
        let pair = Pair::new(&ca, kind.resumption())?;
        if kind == Kind::Resumed {
            // The first connection is full and fills the cache.
            driver::handshake(&pair, &mut buf)?;
        }
        let first = driver::handshake(&pair, &mut buf)?;
        let negotiated = negotiated(&first)?;
        check(kind, &first)?;
        eprintln!("handshakes: warming up {} ({negotiated})", kind.name());
        measure(kind, &pair, &mut buf, args.warmup)?;
        pairs.push((kind, pair, negotiated, Vec::new()));
    }
    let per_round = args.duration / args.rounds;
    for round in 1..=args.rounds {
        for (kind, pair, _, rounds) in &mut pairs {
            let r = measure(*kind, pair, &mut buf, per_round)?;
            eprintln!(
                "handshakes: round {round}/{} {}: {} in {:.2} s CPU ({:.0}/s)",
                args.rounds,
                kind.name(),
                r.handshakes,
                r.cpu_s,
                r.rate()
            );
            rounds.push(r);
        }
    }
    host.loadavg_end = crate::report::machine::loadavg();

    let mut preliminary = Vec::new();
    if host.loadavg_start[0] > 0.5 {
        preliminary.push(format!(
            "the machine was busy before the run started (1-minute load {:.2} on {} cores); rates are per CPU \
             second of the measuring thread, which discounts time given to others but not shared caches",
            host.loadavg_start[0], host.cores
        ));
    }
    if cfg!(debug_assertions) {
        preliminary.push("an unoptimized build (use `cargo run --release`)".to_owned());
    }
    let results = Results {
        host,
        optimized: !cfg!(debug_assertions),
        cpu,
        duration_s: args.duration.as_secs_f64(),
        warmup_s: args.warmup.as_secs_f64(),
        rounds: args.rounds,
        client_identity: driver::CLIENT_ID,
        server_identity: driver::SERVER_ID,
        kinds: pairs.into_iter().map(|(kind, _, neg, rounds)| KindResult::of(kind, neg, rounds)).collect(),
        preliminary,
    };
    print!("{}", report::table(&results));
    let written = report::write(&results, &args.out())?;
    eprintln!("handshakes: wrote {} and {}", written.0.display(), written.1.display());
    Ok(())
}

/// Handshakes of `kind` for `budget` of wall time; every one is checked.
fn measure(kind: Kind, pair: &Pair, buf: &mut Vec<u8>, budget: Duration) -> anyhow::Result<Round> {
    let mut split = Split::default();
    let mut handshakes = 0u64;
    let cpu0 = thread_cpu()?;
    let start = Instant::now();
    // Batches of 16 between looks at the clock: a handshake is tens of µs.
    loop {
        for _ in 0..16 {
            let hs = driver::handshake(pair, buf)?;
            check(kind, &hs).with_context(|| format!("handshake {} of the round", handshakes + 1))?;
            split.client += hs.split.client;
            split.server += hs.split.server;
            handshakes += 1;
        }
        if start.elapsed() >= budget {
            break;
        }
    }
    let wall_s = start.elapsed().as_secs_f64();
    let cpu_s = (thread_cpu()? - cpu0).as_secs_f64();
    Ok(Round { handshakes, wall_s, cpu_s, client_s: split.client.as_secs_f64(), server_s: split.server.as_secs_f64() })
}

/// Fails loudly when a handshake is not the kind being measured.
fn check(kind: Kind, hs: &driver::Handshake) -> anyhow::Result<()> {
    let got = hs.kind()?;
    if got != kind.expected() {
        bail!("measuring {} handshakes, but this one was {got:?}: the figures would be mislabelled", kind.name());
    }
    if hs.client_id.as_str() != driver::CLIENT_ID {
        bail!("the server saw the client as {}, not {}", hs.client_id, driver::CLIENT_ID);
    }
    Ok(())
}

fn negotiated(hs: &driver::Handshake) -> anyhow::Result<String> {
    let suite = hs.client.negotiated_cipher_suite().context("no cipher suite")?;
    let group = hs.client.negotiated_key_exchange_group().context("no key exchange group")?;
    let version = hs.client.protocol_version().context("no protocol version")?;
    Ok(format!("{version:?}, {:?}, {:?}", suite.suite(), group.name()))
}

fn thread_cpu() -> anyhow::Result<Duration> {
    let t = clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).context("reading the thread's CPU time")?;
    Ok(Duration::from(t))
}

/// Pins this thread to `cpu`, or to the last CPU it may run on.
fn pin(cpu: Option<usize>) -> anyhow::Result<usize> {
    let allowed = sched_getaffinity(Pid::from_raw(0)).context("reading the CPU affinity")?;
    let cpu = match cpu {
        Some(c) => c,
        None => (0..CpuSet::count()).rev().find(|&c| allowed.is_set(c).unwrap_or(false)).context("no CPU allowed")?,
    };
    let mut set = CpuSet::new();
    set.set(cpu).with_context(|| format!("CPU {cpu} does not exist"))?;
    sched_setaffinity(Pid::from_raw(0), &set).with_context(|| format!("pinning to CPU {cpu}"))?;
    Ok(cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_split_cpu_in_proportion() {
        let r = Round { handshakes: 1000, wall_s: 2.0, cpu_s: 1.0, client_s: 0.6, server_s: 0.9 };
        assert_eq!(r.rate(), 1000.0);
        let (c, s) = r.split_us();
        assert!((c - 400.0).abs() < 1e-9 && (s - 600.0).abs() < 1e-9, "{c} {s}");
    }

    #[test]
    fn a_short_measurement_checks_every_handshake() {
        let ca = Ca::new().unwrap();
        let mut buf = Vec::new();
        let pair = Pair::new(&ca, Kind::Resumed.resumption()).unwrap();
        // No ticket yet: the first is full, which a resumed measurement refuses.
        let err = measure(Kind::Resumed, &pair, &mut buf, Duration::ZERO).unwrap_err();
        assert!(format!("{err:#}").contains("but this one was Full"), "{err:#}");
        let r = measure(Kind::Resumed, &pair, &mut buf, Duration::from_millis(20)).unwrap();
        assert!(r.handshakes >= 16 && r.cpu_s > 0.0 && r.client_s > 0.0 && r.server_s > 0.0, "{r:?}");
        let full = Pair::new(&ca, Kind::Full.resumption()).unwrap();
        assert!(measure(Kind::Full, &full, &mut buf, Duration::ZERO).unwrap().handshakes == 16);
    }
}
