//! The results of a run, as `latest.json` holds them, and the figures
//! derived from them: spreads over repetitions and "added over direct".

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer as _, V2DeflateSerializer};
use serde::{Deserialize, Serialize};

use super::machine::Machine;
use crate::hist::{FIGURES, Percentiles, new_histogram};
use crate::plan::Plan;
use crate::setup::SetupKind;
use crate::workload::Workload;

/// Median, minimum and maximum over repetitions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Spread {
    /// `None` for no values.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Spread> {
        let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
        Some(Spread { median, min: v[0], max: v[n - 1], n })
    }
}

/// Everything `latest.json` holds.
#[derive(Debug, Serialize)]
pub struct Results {
    /// The bench's arguments (`--quick --only http1 …`).
    pub command: String,
    pub plan: Plan,
    pub machine: Machine,
    /// Why the figures are only preliminary, if they are (a busy machine,
    /// a debug build, a shortened mode).
    pub preliminary: Vec<String>,
    pub duration_s: f64,
    pub setups: Vec<SetupResult>,
    pub latency: Vec<Cell>,
    pub knee: Vec<KneeResult>,
    pub max_throughput: Vec<MaxResult>,
    pub idle_connections: Vec<IdleResult>,
    /// `None`: not measured in this run (`--only` without `control`).
    pub control_plane: Option<crate::cplane::ControlPlaneResult>,
    /// What the traffic-policy stack adds (`weft-policy` over `weft-mtls`),
    /// where both were measured.
    pub policy_stack: Vec<PolicyStackCost>,
    pub targets: Vec<TargetCheck>,
    /// How this run departs from the plan, and why.
    pub notes: Vec<String>,
    /// Runs that failed to serve; any makes the exit status non-zero.
    pub failures: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SetupResult {
    pub name: &'static str,
    pub kind: SetupKind,
    pub description: &'static str,
    /// Each proxy process with its RSS after start-up, before any traffic.
    pub proxies: Vec<ProxyIdle>,
    /// What start-up verified about the setup.
    pub checks: Vec<String>,
    /// What the proxies counted by the end of the run.
    pub accounting: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProxyIdle {
    pub name: String,
    pub idle_rss_kib: u64,
    /// Of which anonymous (`RssAnon`); the rest is file pages.
    pub idle_anon_kib: Option<u64>,
    /// RSS after every section, overload included (`None`: not read).
    pub end_rss_kib: Option<u64>,
}

/// One proxy's cost during one run.
#[derive(Debug, Clone, Serialize)]
pub struct ProcRun {
    pub name: String,
    /// VmHWM, reset just before the run.
    pub peak_rss_kib: u64,
    /// utime + stime during the run (warm-up included).
    pub cpu_ticks: u64,
}

/// One generator run.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub rep: usize,
    pub ok: u64,
    pub errors: u64,
    pub timeouts: u64,
    pub first_error: Option<String>,
    pub achieved_rps: f64,
    pub latency: Percentiles,
    pub total_requests: u64,
    /// Connections the generator opened to its target.
    pub connections_opened: u64,
    /// Connections that came into the server pod: the client-side proxy's
    /// upstream connections (`tcp_opens`); the generator's own for `direct`.
    pub upstream_connections: u64,
    pub pacer_late_max_us: f64,
    pub proxies: Vec<ProcRun>,
}

/// A setup's cost at one workload and rate, over all repetitions.
#[derive(Debug, Clone, Serialize)]
pub struct ProxyCost {
    pub name: String,
    pub peak_rss_kib: u64,
    /// `None` when no request completed.
    pub cpu_s_per_10k: Option<f64>,
}

/// One setup at one workload and rate.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub workload: Workload,
    pub rate: u32,
    pub setup: SetupKind,
    pub runs: Vec<RunRecord>,
    /// Per figure (p50 … max, µs): spread of the per-run values.
    pub figures: BTreeMap<&'static str, Spread>,
    /// Figures of all runs' samples merged.
    pub merged: Percentiles,
    /// All runs' samples merged, whole (what `latest.svg` is drawn from),
    /// in HdrHistogram's compressed form.
    pub merged_histogram: EncodedHistogram,
    /// Per figure: this setup's median minus direct's.
    pub added_over_direct: BTreeMap<&'static str, f64>,
    pub proxies: Vec<ProxyCost>,
}

impl Cell {
    pub fn new(workload: Workload, rate: u32, setup: SetupKind) -> Cell {
        Cell {
            workload,
            rate,
            setup,
            runs: Vec::new(),
            figures: BTreeMap::new(),
            merged: Percentiles::default(),
            merged_histogram: EncodedHistogram::default(),
            added_over_direct: BTreeMap::new(),
            proxies: Vec::new(),
        }
    }

    /// Fills the derived fields from `runs` (and `buckets`, the runs'
    /// histograms); `ticks_per_s` converts CPU ticks.
    pub fn summarize(&mut self, buckets: &[crate::hist::Buckets], ticks_per_s: u64) {
        let ok_runs: Vec<&RunRecord> = self.runs.iter().filter(|r| r.ok > 0).collect();
        self.figures = FIGURES
            .iter()
            .filter_map(|(name, get)| Spread::of(ok_runs.iter().map(|r| get(&r.latency))).map(|s| (*name, s)))
            .collect();
        let merged = crate::hist::merge(buckets);
        self.merged = Percentiles::of(&merged);
        self.merged_histogram = EncodedHistogram::encode(&merged);
        let names: Vec<String> =
            self.runs.first().map(|r| r.proxies.iter().map(|p| p.name.clone()).collect()).unwrap_or_default();
        let requests: u64 = self.runs.iter().map(|r| r.total_requests).sum();
        self.proxies = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let of = |r: &RunRecord| r.proxies.get(i).cloned();
                let peak = self.runs.iter().filter_map(of).map(|p| p.peak_rss_kib).max().unwrap_or(0);
                let ticks: u64 = self.runs.iter().filter_map(of).map(|p| p.cpu_ticks).sum();
                let cpu = (requests > 0).then(|| ticks as f64 / ticks_per_s as f64 / requests as f64 * 10_000.0);
                ProxyCost { name: name.clone(), peak_rss_kib: peak, cpu_s_per_10k: cpu }
            })
            .collect();
    }

    pub fn errors(&self) -> u64 {
        self.runs.iter().map(|r| r.errors + r.timeouts).sum()
    }

    pub fn median(&self, figure: &str) -> Option<f64> {
        self.figures.get(figure).map(|s| s.median)
    }
}

/// A latency histogram (ns) as HdrHistogram's own compressed form: the V2
/// encoding, deflated (`V2DeflateSerializer`), in base64, as the
/// HdrHistogram libraries (Java, Go, Rust, …) and their log tools read it.
/// Lossless, and a few KB where the list of its buckets in JSON was tens:
/// `latest.json` stays small enough to commit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EncodedHistogram(pub String);

impl EncodedHistogram {
    /// The empty string for an empty histogram.
    pub fn encode(h: &Histogram<u64>) -> EncodedHistogram {
        if h.is_empty() {
            return EncodedHistogram::default();
        }
        let mut bytes = Vec::new();
        match V2DeflateSerializer::new().serialize(h, &mut bytes) {
            Ok(_) => EncodedHistogram(BASE64.encode(bytes)),
            // Only a count past i64::MAX fails to encode; the report keeps
            // the percentiles and loses the plot.
            Err(_) => EncodedHistogram::default(),
        }
    }

    /// The histogram back, with the bench's bounds; an empty one for the
    /// empty string.
    pub fn decode(&self) -> anyhow::Result<Histogram<u64>> {
        let mut h = new_histogram();
        if self.0.is_empty() {
            return Ok(h);
        }
        let bytes = BASE64.decode(&self.0)?;
        let decoded: Histogram<u64> = Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .map_err(|e| anyhow::anyhow!("decoding a histogram: {e:?}"))?;
        h.add(&decoded).map_err(|e| anyhow::anyhow!("merging a decoded histogram: {e:?}"))?;
        Ok(h)
    }
}

/// Fills `added_over_direct` of every cell from the direct cell of the same
/// workload and rate.
pub fn add_over_direct(cells: &mut [Cell]) {
    let direct: Vec<(Workload, u32, BTreeMap<&'static str, Spread>)> = cells
        .iter()
        .filter(|c| c.setup == SetupKind::Direct)
        .map(|c| (c.workload, c.rate, c.figures.clone()))
        .collect();
    for cell in cells.iter_mut() {
        let Some((_, _, base)) = direct.iter().find(|(w, r, _)| *w == cell.workload && *r == cell.rate) else {
            continue;
        };
        cell.added_over_direct =
            cell.figures.iter().filter_map(|(name, s)| base.get(name).map(|b| (*name, s.median - b.median))).collect();
    }
}

/// The figures of [`PolicyStackCost`].
pub const POLICY_STACK_FIGURES: [&str; 3] = ["p50", "p90", "p99"];

/// What the policy stack adds at one workload and rate: `weft-policy`
/// (weft-mtls plus a full policy on the service) against `weft-mtls`,
/// measured interleaved in the same run.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyStackCost {
    pub workload: Workload,
    pub rate: u32,
    pub figures: Vec<StackFigure>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StackFigure {
    /// `p50`, `p90` or `p99`.
    pub figure: &'static str,
    /// Median over the repetitions, µs.
    pub weft_mtls: f64,
    pub weft_policy: f64,
    /// `weft_policy − weft_mtls`, µs.
    pub added: f64,
    /// Per repetition, weft-policy's run minus the weft-mtls run of the
    /// same repetition (they ran one after the other): their spread.
    pub paired: Option<Spread>,
}

/// [`PolicyStackCost`] for every workload and rate with both cells.
pub fn policy_stack(cells: &[Cell]) -> Vec<PolicyStackCost> {
    let find = |setup: SetupKind, w: Workload, rate: u32| {
        cells.iter().find(|c| c.setup == setup && c.workload == w && c.rate == rate)
    };
    cells
        .iter()
        .filter(|c| c.setup == SetupKind::WeftPolicy)
        .filter_map(|policy| {
            let mtls = find(SetupKind::WeftMtls, policy.workload, policy.rate)?;
            let figures: Vec<StackFigure> = POLICY_STACK_FIGURES
                .iter()
                .filter_map(|&name| {
                    let get = FIGURES.iter().find(|(n, _)| *n == name).map(|(_, get)| *get)?;
                    let (m, p) = (mtls.median(name)?, policy.median(name)?);
                    let paired = Spread::of(policy.runs.iter().filter(|r| r.ok > 0).filter_map(|pr| {
                        let mr = mtls.runs.iter().find(|mr| mr.rep == pr.rep && mr.ok > 0)?;
                        Some(get(&pr.latency) - get(&mr.latency))
                    }));
                    Some(StackFigure { figure: name, weft_mtls: m, weft_policy: p, added: p - m, paired })
                })
                .collect();
            (!figures.is_empty()).then_some(PolicyStackCost { workload: policy.workload, rate: policy.rate, figures })
        })
        .collect()
}

/// One step of the rate step-up.
#[derive(Debug, Clone, Serialize)]
pub struct KneeStep {
    pub rate: u32,
    /// The second run of a rate whose first run passed the limit: a step
    /// counts as past the limit only when its repeat is too.
    pub repeat: bool,
    pub achieved_rps: f64,
    pub latency: Percentiles,
    pub errors: u64,
    pub timeouts: u64,
    pub first_error: Option<String>,
    /// Whether this step passed the limit (p99, errors, or falling behind).
    pub over: bool,
    pub proxies: Vec<ProcRun>,
}

#[derive(Debug, Clone, Serialize)]
pub struct KneeResult {
    pub setup: SetupKind,
    pub steps: Vec<KneeStep>,
    /// Highest rate tried with p99 within the limit, no failures and the
    /// rate achieved.
    pub knee_rps: Option<u32>,
    /// First rate past the limit (`None`: the steps ran out first).
    pub over_rps: Option<u32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MaxResult {
    pub setup: SetupKind,
    pub workers: usize,
    pub runs_rps: Vec<f64>,
    pub rps: Option<Spread>,
    pub errors: u64,
    /// Median throughput as a fraction of direct's.
    pub of_direct: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct IdlePoint {
    /// Idle connections open through the setup.
    pub open: usize,
    pub failed: usize,
    pub rss_kib: u64,
    /// (RSS − RSS before any were opened) / open.
    pub bytes_per_conn: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct IdleResult {
    pub setup: SetupKind,
    pub proxy: String,
    /// RSS just before the burst (after the latency section).
    pub rss_before_kib: u64,
    pub points: Vec<IdlePoint>,
    pub first_error: Option<String>,
    /// `VmHWM` over the burst (reset just before it).
    pub rss_peak_kib: Option<u64>,
    /// After every connection closed: RSS sampled every second.
    pub after_close: Vec<RecoverySample>,
}

/// RSS some time after the burst's connections closed.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RecoverySample {
    /// Seconds since the generator closed its connections.
    pub after_s: f64,
    pub rss_kib: u64,
}

/// "Back" means within this of the RSS before the burst (issue #14: 2 MB,
/// MB taken as 10^6 bytes).
pub const RECOVERED_WITHIN_BYTES: f64 = 2_000_000.0;

impl IdleResult {
    /// The last sample's RSS minus the RSS before the burst, in bytes
    /// (the window is 30 s outside `--smoke`).
    pub fn kept_bytes(&self) -> Option<f64> {
        self.after_close.last().map(|s| (s.rss_kib as f64 - self.rss_before_kib as f64) * 1024.0)
    }

    /// Seconds after the close from which every sample stayed within
    /// [`RECOVERED_WITHIN_BYTES`] of the RSS before; `None` if the last did not.
    pub fn back_after_s(&self) -> Option<f64> {
        let within =
            |s: &RecoverySample| (s.rss_kib as f64 - self.rss_before_kib as f64) * 1024.0 <= RECOVERED_WITHIN_BYTES;
        if !self.after_close.last().is_some_and(within) {
            return None;
        }
        let first_of_run = self.after_close.iter().rposition(|s| !within(s)).map_or(0, |i| i + 1);
        Some(self.after_close[first_of_run].after_s)
    }
}

/// One of the targets (`bench/README.md`, "Targets") and where we stand.
#[derive(Debug, Clone, Serialize)]
pub struct TargetCheck {
    pub target: String,
    /// `met`, `missed` or `not measured`.
    pub status: &'static str,
    pub detail: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(p50: f64, p99: f64) -> RunRecord {
        RunRecord {
            rep: 0,
            ok: 10,
            errors: 0,
            timeouts: 0,
            first_error: None,
            achieved_rps: 1000.0,
            latency: Percentiles { count: 10, p50, p90: p50, p99, p999: p99, max: p99, mean: p50 },
            total_requests: 5_000,
            connections_opened: 1,
            upstream_connections: 1,
            pacer_late_max_us: 0.0,
            proxies: vec![ProcRun { name: "p".into(), peak_rss_kib: 100, cpu_ticks: 5 }],
        }
    }

    #[test]
    fn recovery_is_the_start_of_the_last_run_within_2_mb() {
        // (RSS before in KiB, samples as (s, KiB)) → (kept bytes, back after s).
        let table: &[(u64, &[(f64, u64)], Option<f64>, Option<f64>)] = &[
            // Never grew: back at the first sample.
            (10_000, &[(1.0, 10_500), (2.0, 10_400)], Some(400.0 * 1024.0), Some(1.0)),
            // Came down at 2 s and stayed (1953 KiB = 1,999,872 B is within).
            (10_000, &[(1.0, 50_000), (2.0, 11_953), (3.0, 11_000)], Some(1_000.0 * 1024.0), Some(2.0)),
            // Dipped in, rose out again, came back at 4 s.
            (10_000, &[(1.0, 11_000), (2.0, 13_000), (3.0, 12_000), (4.0, 10_100)], Some(100.0 * 1024.0), Some(4.0)),
            // 1954 KiB = 2,000,896 B is just out: not back.
            (10_000, &[(1.0, 50_000), (30.0, 11_954)], Some(1954.0 * 1024.0), None),
            // Below the start counts as back; the kept figure is negative.
            (10_000, &[(1.0, 9_000)], Some(-1000.0 * 1024.0), Some(1.0)),
            // Not sampled.
            (10_000, &[], None, None),
        ];
        for (before, samples, kept, back) in table {
            let r = IdleResult {
                setup: SetupKind::WeftMtls,
                proxy: "p".into(),
                rss_before_kib: *before,
                points: Vec::new(),
                first_error: None,
                rss_peak_kib: None,
                after_close: samples.iter().map(|&(after_s, rss_kib)| RecoverySample { after_s, rss_kib }).collect(),
            };
            assert_eq!((r.kept_bytes(), r.back_after_s()), (*kept, *back), "{samples:?}");
        }
    }

    #[test]
    fn histograms_encode_losslessly_and_compactly() {
        let many = |n: u64, spread: u64| {
            let mut h = new_histogram();
            for i in 0..n {
                // A long tail: a few slow ones among many fast.
                let v = 80_000 + (i * 7919) % spread + if i % 997 == 0 { 40_000_000 } else { 0 };
                h.record(v).unwrap();
            }
            h
        };
        let mut wide = new_histogram();
        for v in [1u64, 1_000, 123_456, 59_000_000_000] {
            wide.record_n(v, 3).unwrap();
        }
        // (histogram, most bytes in JSON).
        let table: Vec<(Histogram<u64>, usize)> =
            vec![(new_histogram(), 0), (many(1, 1), 100), (wide, 200), (many(15_000, 2_000_000), 8_000)];
        for (h, most) in table {
            let encoded = EncodedHistogram::encode(&h);
            assert!(encoded.0.len() <= most, "{} > {most} bytes", encoded.0.len());
            let back = encoded.decode().unwrap();
            assert_eq!(back.len(), h.len());
            assert_eq!(back.max(), h.max());
            for q in [0.0, 0.5, 0.9, 0.99, 0.999, 1.0] {
                assert_eq!(back.value_at_quantile(q), h.value_at_quantile(q), "q={q}");
            }
            // Every bucket, not only the quoted quantiles.
            let buckets = |h: &Histogram<u64>| crate::hist::Buckets::of(h).0;
            assert_eq!(buckets(&back), buckets(&h));
            // A JSON string, round-tripped as one.
            let json = serde_json::to_string(&encoded).unwrap();
            assert_eq!(serde_json::from_str::<EncodedHistogram>(&json).unwrap(), encoded);
        }
        assert!(EncodedHistogram("not base64!".into()).decode().is_err());
    }

    #[test]
    fn spread_is_median_min_max() {
        let s = Spread::of([3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
        assert_eq!(Spread::of([4.0, 1.0]).unwrap().median, 2.5);
        assert!(Spread::of([]).is_none());
    }

    #[test]
    fn cells_summarize_and_subtract_direct() {
        let mut direct = Cell::new(Workload::Http1, 1000, SetupKind::Direct);
        direct.runs = vec![run(100.0, 200.0), run(110.0, 250.0), run(90.0, 300.0)];
        let mut weft = Cell::new(Workload::Http1, 1000, SetupKind::Weft);
        weft.runs = vec![run(150.0, 400.0), run(160.0, 420.0), run(140.0, 380.0)];
        let mut other = Cell::new(Workload::Http1, 2000, SetupKind::Weft);
        other.runs = vec![run(1.0, 1.0)];
        for c in [&mut direct, &mut weft, &mut other] {
            c.summarize(&[], 100);
        }
        let mut cells = vec![direct, weft, other];
        add_over_direct(&mut cells);
        assert_eq!(cells[0].added_over_direct["p50"], 0.0);
        assert_eq!(cells[1].added_over_direct["p50"], 50.0);
        assert_eq!(cells[1].added_over_direct["p99"], 150.0);
        assert!(cells[2].added_over_direct.is_empty(), "no direct cell at 2000/s");
        // 15 ticks at 100/s over 15,000 requests: 0.1 s per 10k.
        let cost = &cells[1].proxies[0];
        assert_eq!(cost.peak_rss_kib, 100);
        assert!((cost.cpu_s_per_10k.unwrap() - 0.1).abs() < 1e-9);
    }

    #[test]
    fn the_policy_stack_is_weft_policy_over_weft_mtls_pairing_repetitions() {
        let cell = |setup, rate, runs: &[(usize, f64, f64)]| {
            let mut c = Cell::new(Workload::Http1, rate, setup);
            c.runs = runs.iter().map(|&(rep, p50, p99)| RunRecord { rep, ..run(p50, p99) }).collect();
            c.summarize(&[], 100);
            c
        };
        let cells = vec![
            cell(SetupKind::WeftMtls, 1000, &[(0, 300.0, 900.0), (1, 320.0, 1000.0), (2, 310.0, 5000.0)]),
            cell(SetupKind::WeftPolicy, 1000, &[(0, 330.0, 1000.0), (1, 340.0, 1100.0), (2, 325.0, 1200.0)]),
            // No weft-mtls at 2000/s: nothing to compare with.
            cell(SetupKind::WeftPolicy, 2000, &[(0, 1.0, 1.0)]),
            cell(SetupKind::Weft, 1000, &[(0, 1.0, 1.0)]),
        ];
        let stack = policy_stack(&cells);
        assert_eq!(stack.len(), 1);
        assert_eq!((stack[0].workload, stack[0].rate), (Workload::Http1, 1000));
        let names: Vec<&str> = stack[0].figures.iter().map(|f| f.figure).collect();
        assert_eq!(names, POLICY_STACK_FIGURES);
        let p50 = &stack[0].figures[0];
        assert_eq!((p50.weft_mtls, p50.weft_policy, p50.added), (310.0, 330.0, 20.0));
        let paired = p50.paired.unwrap();
        assert_eq!((paired.median, paired.min, paired.max, paired.n), (20.0, 15.0, 30.0, 3));
        let p99 = &stack[0].figures[2];
        // Medians 1000 and 1100; repetition 2's weft-mtls outlier shows in the pairs.
        assert_eq!(p99.added, 100.0);
        assert_eq!(p99.paired.map(|s| (s.min, s.max)), Some((-3800.0, 100.0)));
        assert!(policy_stack(&cells[2..]).is_empty());
    }
}
