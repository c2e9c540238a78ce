//! What a run measures and for how long: the mode (`--smoke`, `--quick`,
//! `--full`), `--only` and `--setups` become a [`Plan`]. Pure, so that the time budgets
//! (quick < 4 min, full < 20 min) are checked by unit tests.

use std::time::Duration;

use serde::Serialize;

use crate::setup::SetupKind;
use crate::workload::Workload;

/// How thorough a run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// A few seconds: every setup starts and serves; nothing about speed.
    Smoke,
    /// Under 4 minutes, for development (3 before issue #14: the 30 s memory-recovery window, the 2 s settle).
    Quick,
    /// Under 20 minutes, for the committed results (on a quiet machine).
    Full,
    /// The mTLS pair's good clients quiet and beside a hostile one
    /// (`crate::chaos`, [`ChaosPlan`]); none of the sections above.
    Chaos,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Smoke => "smoke",
            Mode::Quick => "quick",
            Mode::Full => "full",
            Mode::Chaos => "chaos",
        }
    }
}

/// A part of the run that `--only` can select.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Latency of the HTTP/1.1 keep-alive workload at the fixed rates.
    Http1,
    /// Latency of the HTTP/2 workload.
    Http2,
    /// Latency of the opaque TCP echo workload.
    Tcp,
    /// Latency of the connection-per-request workload.
    Conn,
    /// Step-up of the HTTP/1.1 rate until p99 passes the limit.
    Knee,
    /// Closed-loop maximum HTTP/1.1 throughput.
    Max,
    /// Memory per idle connection.
    Idle,
    /// The control plane: policy push to many streams, RSS with many endpoints.
    Control,
}

/// One phase of a load run.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Phase {
    #[serde(with = "secs")]
    pub warmup: Duration,
    #[serde(with = "secs")]
    pub measure: Duration,
}

/// The step-up to the knee.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KneePlan {
    /// Rates tried in order; a setup stops at its first rate over the limit.
    pub rates: Vec<u32>,
    pub phase: Phase,
    /// The knee is where p99 passes this.
    #[serde(with = "secs")]
    pub p99_limit: Duration,
}

/// The closed-loop throughput runs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MaxPlan {
    pub workers: usize,
    pub reps: usize,
    pub phase: Phase,
}

/// `--chaos`: good load through the weft-mtls pair, quiet and beside a
/// flood on the server proxy's inbound port, interleaved.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChaosPlan {
    /// The good clients' rate (HTTP/1.1, 1 KiB), requests per second.
    pub rate: u32,
    /// New hostile connections per second (garbage, ClientHello then
    /// silence, silent, in turn).
    pub flood_rate: u32,
    /// Each good run; the flood covers it whole.
    pub phase: Phase,
    /// Quiet/flood pairs.
    pub reps: usize,
    /// How long each flood connection waits for the proxy to close it.
    #[serde(with = "secs")]
    pub hold: Duration,
    #[serde(with = "secs")]
    pub timeout: Duration,
}

impl Default for ChaosPlan {
    fn default() -> ChaosPlan {
        ChaosPlan {
            rate: 500,
            flood_rate: 1000,
            phase: Phase { warmup: ms(2000), measure: ms(10_000) },
            reps: 3,
            hold: Duration::from_secs(10),
            timeout: Duration::from_secs(2),
        }
    }
}

impl ChaosPlan {
    /// A pessimistic length: every run, every flood's hold after it, start-up.
    pub fn estimate(&self) -> Duration {
        let run = self.phase.warmup + self.phase.measure + ms(500);
        Duration::from_secs(20) + (run * 2 + self.hold) * self.reps as u32
    }
}

/// The control plane's section.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ControlPlan {
    /// Cumulative simulated proxy streams a policy change is pushed to.
    pub streams: Vec<usize>,
    /// Policy changes measured at each stream count.
    pub changes: usize,
    /// Endpoints registered for the RSS reading; 0: not measured.
    pub endpoints: usize,
}

impl Plan {
    /// `--endpoints N`: registers `n` endpoints instead of the mode's count.
    pub fn set_endpoints(&mut self, n: usize) {
        if let Some(c) = &mut self.control {
            c.endpoints = n;
        }
    }

    /// `--idle-steps`: opens these cumulative counts of idle connections
    /// instead of the mode's (sorted, duplicates and zeros dropped); only
    /// when the idle section runs.
    pub fn set_idle_steps(&mut self, steps: &[usize]) {
        if !steps.is_empty() && !self.idle_steps.is_empty() {
            let mut steps: Vec<usize> = steps.iter().copied().filter(|n| *n > 0).collect();
            steps.sort_unstable();
            steps.dedup();
            self.idle_steps = steps;
        }
    }

    /// `--setups`: measures these instead of the mode's, in report order
    /// (duplicates ignored); empty keeps the mode's.
    pub fn set_setups(&mut self, setups: &[SetupKind]) {
        if !setups.is_empty() {
            self.setups = SetupKind::ALL.into_iter().filter(|k| setups.contains(k)).collect();
        }
    }

    /// Adds `kind` to the setups, in report order.
    pub fn add_setup(&mut self, kind: SetupKind) {
        let mut with = self.setups.clone();
        with.push(kind);
        self.setups = SetupKind::ALL.into_iter().filter(|k| with.contains(k)).collect();
    }
}

/// Everything a run does.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Plan {
    pub mode: Mode,
    /// The setups measured, interleaved, in report order.
    pub setups: Vec<SetupKind>,
    /// Repetitions of every latency cell (each setup, workload and rate).
    pub reps: usize,
    pub rates: Vec<u32>,
    pub workloads: Vec<Workload>,
    pub phase: Phase,
    pub knee: Option<KneePlan>,
    pub max: Option<MaxPlan>,
    /// Cumulative idle connection counts; empty: not measured.
    pub idle_steps: Vec<usize>,
    /// How long the proxies' RSS is sampled (every second) after the idle
    /// connections close: issue #14 wants it back within 2 MB by 30 s.
    #[serde(with = "secs")]
    pub idle_recovery: Duration,
    /// How long each idle step's connections sit before the RSS is read:
    /// what the handshakes allocated and freed is garbage that an allocator
    /// may hand back on a timer (jemalloc's decay), not what they hold.
    #[serde(with = "secs")]
    pub idle_settle: Duration,
    pub control: Option<ControlPlan>,
    /// Per-request timeout (from the intended send time).
    #[serde(with = "secs")]
    pub timeout: Duration,
    /// The rate the plot and the targets use (1,000/s where measured).
    pub headline_rate: u32,
}

mod secs {
    pub fn serialize<S: serde::Serializer>(d: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Descriptors kept free for listeners, logs and the admin server when
/// sizing the idle-connection steps.
const IDLE_FD_RESERVE: u64 = 500;

/// The knee's threshold: a rate whose p99 passes this is past the knee.
pub const P99_LIMIT: Duration = Duration::from_millis(10);

impl Plan {
    pub fn new(mode: Mode, only: &[Scenario]) -> Plan {
        let mut plan = match mode {
            Mode::Smoke => Plan {
                mode,
                // Every setup starts and serves, the policy stack included.
                // weft-mtls-base only with --baseline-proxy-bin.
                setups: SetupKind::ALL.into_iter().filter(|k| *k != SetupKind::WeftMtlsBase).collect(),
                reps: 1,
                rates: vec![50],
                workloads: Workload::ALL.to_vec(),
                phase: Phase { warmup: ms(0), measure: ms(200) },
                knee: Some(KneePlan {
                    rates: vec![100],
                    phase: Phase { warmup: ms(0), measure: ms(200) },
                    p99_limit: P99_LIMIT,
                }),
                max: Some(MaxPlan { workers: 4, reps: 1, phase: Phase { warmup: ms(0), measure: ms(200) } }),
                idle_steps: vec![20],
                idle_recovery: Duration::from_secs(2),
                idle_settle: ms(0),
                control: Some(ControlPlan { streams: vec![10], changes: 2, endpoints: 200 }),
                timeout: Duration::from_secs(2),
                headline_rate: 50,
            },
            Mode::Quick => Plan {
                mode,
                setups: SetupKind::DEFAULT.to_vec(),
                reps: 3,
                rates: vec![1000],
                workloads: Workload::ALL.to_vec(),
                // Shorter than before the nginx pair joined the default
                // setups (warm-up 500 ms, 1.5 s measured; knee and max
                // 0.3 + 1 s), to stay within 4 minutes with five setups.
                phase: Phase { warmup: ms(300), measure: ms(1400) },
                knee: Some(KneePlan {
                    rates: vec![2000, 4000, 8000, 16000],
                    phase: Phase { warmup: ms(200), measure: ms(800) },
                    p99_limit: P99_LIMIT,
                }),
                max: Some(MaxPlan { workers: 16, reps: 3, phase: Phase { warmup: ms(200), measure: ms(800) } }),
                idle_steps: vec![1000],
                idle_recovery: Duration::from_secs(30),
                idle_settle: ms(2000),
                control: Some(ControlPlan { streams: vec![100, 1000], changes: 5, endpoints: 10_000 }),
                timeout: Duration::from_secs(2),
                headline_rate: 1000,
            },
            Mode::Chaos => Plan {
                mode,
                setups: vec![SetupKind::WeftMtls],
                reps: 0,
                rates: Vec::new(),
                workloads: Vec::new(),
                phase: ChaosPlan::default().phase,
                knee: None,
                max: None,
                idle_steps: Vec::new(),
                idle_recovery: Duration::ZERO,
                idle_settle: ms(0),
                control: None,
                timeout: ChaosPlan::default().timeout,
                headline_rate: ChaosPlan::default().rate,
            },
            Mode::Full => Plan {
                mode,
                setups: SetupKind::DEFAULT.to_vec(),
                reps: 3,
                rates: vec![500, 1000, 2000],
                workloads: Workload::ALL.to_vec(),
                // 4 s measured after 0.5 s of warm-up (5 s after 1 s before
                // the nginx pair joined): five setups within 20 minutes.
                phase: Phase { warmup: ms(500), measure: ms(4000) },
                knee: Some(KneePlan {
                    rates: vec![1000, 2000, 3000, 4000, 6000, 8000, 11000, 16000, 23000, 32000],
                    phase: Phase { warmup: ms(500), measure: ms(2500) },
                    p99_limit: P99_LIMIT,
                }),
                max: Some(MaxPlan { workers: 16, reps: 3, phase: Phase { warmup: ms(500), measure: ms(3000) } }),
                idle_steps: vec![1000, 10000],
                idle_recovery: Duration::from_secs(30),
                idle_settle: ms(2000),
                // 100 changes: a p99 by nearest rank that is not simply the
                // slowest of a few (~25 s a step).
                control: Some(ControlPlan { streams: vec![100, 1000], changes: 100, endpoints: 10_000 }),
                timeout: Duration::from_secs(2),
                headline_rate: 1000,
            },
        };
        if !only.is_empty() {
            plan.workloads.retain(|w| {
                only.contains(&match w {
                    Workload::Http1 => Scenario::Http1,
                    Workload::Http2 => Scenario::Http2,
                    Workload::Tcp => Scenario::Tcp,
                    Workload::Conn => Scenario::Conn,
                })
            });
            if !only.contains(&Scenario::Knee) {
                plan.knee = None;
            }
            if !only.contains(&Scenario::Max) {
                plan.max = None;
            }
            if !only.contains(&Scenario::Idle) {
                plan.idle_steps.clear();
            }
            if !only.contains(&Scenario::Control) {
                plan.control = None;
            }
        }
        plan
    }

    /// Lowers the idle-connection steps to what `nofile` descriptors per
    /// process allow (a proxy holds two per connection: downstream and
    /// upstream), keeping them distinct. Returns a note if it changed them.
    pub fn cap_idle_steps(&mut self, nofile: u64) -> Option<String> {
        let max = usize::try_from(nofile.saturating_sub(IDLE_FD_RESERVE) / 2).unwrap_or(usize::MAX);
        if self.idle_steps.iter().all(|n| *n <= max) {
            return None;
        }
        let asked = self.idle_steps.clone();
        for n in &mut self.idle_steps {
            *n = (*n).min(max);
        }
        self.idle_steps.dedup();
        Some(format!(
            "idle connection steps {asked:?} capped to {:?}: RLIMIT_NOFILE is {nofile} here and cannot be raised \
             (no CAP_SYS_RESOURCE), and a proxy needs two descriptors per proxied connection",
            self.idle_steps
        ))
    }

    /// A pessimistic estimate of the run's length: every knee step taken,
    /// generous start-up and idle phases.
    pub fn estimate(&self) -> Duration {
        let setups = self.setups.len();
        // Per generator run: process start in the pod, connections, report.
        let overhead = ms(250);
        let run = |p: Phase| p.warmup + p.measure + overhead;
        let cells = self.reps * self.workloads.len() * self.rates.len() * setups;
        let mut total = run(self.phase) * u32::try_from(cells).expect("a small plan");
        if let Some(k) = &self.knee {
            total += run(k.phase) * u32::try_from(k.rates.len() * setups).expect("a small plan");
        }
        if let Some(m) = &self.max {
            total += run(m.phase) * u32::try_from(m.reps * setups).expect("a small plan");
        }
        // Idle connections: opening (~3,000/s through TLS) and settling, per proxied setup.
        let idle: usize = self.idle_steps.last().copied().unwrap_or(0);
        let proxied = u32::try_from(setups.saturating_sub(1)).expect("a small plan");
        if idle > 0 {
            let steps = u32::try_from(self.idle_steps.len()).expect("a small plan");
            total += (Duration::from_secs_f64(idle as f64 / 3000.0) + ms(500) + self.idle_settle * steps) * proxied;
            // The RSS after the close: the setups' windows overlap.
            total += self.idle_recovery;
        }
        // The control plane: start-up, opening the streams (~1,000/s), each
        // change (the 200 ms pause, the push: ~220 ms measured, with margin),
        // registering (slower as the table grows).
        if let Some(c) = &self.control {
            let streams = c.streams.last().copied().unwrap_or(0);
            let per_change = ms(260) * u32::try_from(c.changes * c.streams.len()).expect("a small plan");
            total += ms(2000) + ms(streams as u64) + per_change + 2 * crate::cplane::register_estimate(c.endpoints);
        }
        // Start-up: pods, proxies, certificates, haproxy, nginx; and tear-down.
        total + Duration::from_secs(10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chaos_fits_in_three_minutes_and_floods_at_twice_the_good_rate() {
        let chaos = ChaosPlan::default();
        assert!(chaos.estimate() <= Duration::from_secs(180), "{:?}", chaos.estimate());
        assert_eq!((chaos.rate, chaos.flood_rate, chaos.reps), (500, 1000, 3));
        assert_eq!(Plan::new(Mode::Chaos, &[]).setups, vec![SetupKind::WeftMtls]);
    }

    #[test]
    fn modes_fit_their_time_budgets() {
        // Smoke runs all eight setups (the two tracing ones since issue 13,
        // nginx-mtls since issue 15), each phase already at its shortest.
        // Full: 18.5 minutes measured with 10 changes a step (issue 15),
        // ~19.3 with 100.
        for (mode, budget) in [(Mode::Smoke, 45), (Mode::Quick, 240), (Mode::Full, 21 * 60)] {
            let estimate = Plan::new(mode, &[]).estimate();
            assert!(estimate < Duration::from_secs(budget), "{mode:?}: {estimate:?} > {budget}s");
        }
    }

    #[test]
    fn setups_by_mode_and_by_name() {
        let smoke = Plan::new(Mode::Smoke, &[]).setups;
        assert_eq!(smoke.len(), SetupKind::ALL.len() - 1);
        assert!(!smoke.contains(&SetupKind::WeftMtlsBase), "only with --baseline-proxy-bin");
        for mode in [Mode::Quick, Mode::Full] {
            assert_eq!(Plan::new(mode, &[]).setups, SetupKind::DEFAULT.to_vec(), "{mode:?}");
        }
        // The policy stack's figure: HTTP/1.1 at 1,000/s, weft-mtls beside it.
        let mut p = Plan::new(Mode::Quick, &[Scenario::Http1]);
        p.set_setups(&[SetupKind::WeftPolicy, SetupKind::Direct, SetupKind::WeftMtls, SetupKind::WeftPolicy]);
        assert_eq!(p.setups, [SetupKind::Direct, SetupKind::WeftMtls, SetupKind::WeftPolicy]);
        // A baseline goes beside weft-mtls.
        p.add_setup(SetupKind::WeftMtlsBase);
        assert_eq!(p.setups, [SetupKind::Direct, SetupKind::WeftMtls, SetupKind::WeftMtlsBase, SetupKind::WeftPolicy]);
        assert!(p.rates.contains(&1000) && p.workloads == [Workload::Http1]);
        assert!(p.estimate() < Duration::from_secs(60), "{:?}", p.estimate());
        let before = p.setups.clone();
        p.set_setups(&[]);
        assert_eq!(p.setups, before);
    }

    #[test]
    fn every_mode_repeats_enough_and_full_has_the_issues_rates() {
        assert!(Plan::new(Mode::Quick, &[]).reps >= 3);
        let full = Plan::new(Mode::Full, &[]);
        assert!(full.reps >= 3 && full.max.as_ref().unwrap().reps >= 3);
        assert_eq!(full.rates, vec![500, 1000, 2000]);
        assert_eq!(full.idle_steps, vec![1000, 10000]);
        assert!(full.rates.contains(&full.headline_rate));
        let control = full.control.as_ref().unwrap();
        assert_eq!((control.streams.as_slice(), control.endpoints), ([100, 1000].as_slice(), 10_000));
        assert!(control.changes >= 5);
    }

    #[test]
    fn idle_steps_fit_the_descriptor_limit() {
        let mut p = Plan::new(Mode::Full, &[]);
        assert_eq!(p.cap_idle_steps(65_536), None);
        assert_eq!(p.idle_steps, vec![1000, 10000]);
        let note = p.cap_idle_steps(20_000).unwrap();
        assert_eq!(p.idle_steps, vec![1000, 9750]);
        assert!(note.contains("20000"), "{note}");
        let mut p = Plan::new(Mode::Full, &[]);
        p.cap_idle_steps(1_500);
        assert_eq!(p.idle_steps, vec![500]);
    }

    #[test]
    fn only_selects_parts() {
        let p = Plan::new(Mode::Quick, &[Scenario::Http2, Scenario::Idle]);
        assert_eq!(p.workloads, vec![Workload::Http2]);
        assert!(p.knee.is_none() && p.max.is_none());
        assert_eq!(p.idle_steps, vec![1000]);
        let mut p = p;
        p.set_idle_steps(&[10_000, 0, 1000, 1000]);
        assert_eq!(p.idle_steps, vec![1000, 10_000]);

        let p = Plan::new(Mode::Quick, &[Scenario::Knee]);
        assert!(p.workloads.is_empty() && p.knee.is_some() && p.max.is_none() && p.idle_steps.is_empty());

        assert_eq!(Plan::new(Mode::Full, &[]).workloads, Workload::ALL.to_vec());

        let mut p = Plan::new(Mode::Quick, &[Scenario::Control]);
        assert!(p.workloads.is_empty() && p.knee.is_none() && p.idle_steps.is_empty() && p.control.is_some());
        p.set_idle_steps(&[10_000, 0, 1000, 1000]);
        assert!(p.idle_steps.is_empty(), "no idle section, no steps");
        p.set_endpoints(10_000);
        assert_eq!(p.control.unwrap().endpoints, 10_000);
        assert!(Plan::new(Mode::Quick, &[Scenario::Http1]).control.is_none());
    }
}
