//! The pure pieces of `weft-bench callgrind`: reading a callgrind dump's
//! instruction count, summarising runs, and judging them against the
//! committed baseline.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Instructions executed (`Ir`) in a callgrind dump: its `totals:` line
/// (`summary:` if there is none), in the column `events:` names `Ir`.
pub fn total_ir(dump: &str) -> Result<u64, String> {
    let mut events: Option<Vec<&str>> = None;
    let (mut totals, mut summary) = (None, None);
    for line in dump.lines() {
        if let Some(rest) = line.strip_prefix("events:") {
            events = Some(rest.split_whitespace().collect());
        } else if let Some(rest) = line.strip_prefix("totals:") {
            totals = Some(rest);
        } else if let Some(rest) = line.strip_prefix("summary:") {
            summary = Some(rest);
        }
    }
    let events = events.ok_or("no `events:` line: not a callgrind dump")?;
    let column = events.iter().position(|e| *e == "Ir").ok_or("the dump counts no `Ir` event")?;
    let values = totals.or(summary).ok_or("no `totals:` or `summary:` line: an unfinished dump?")?;
    let value = values.split_whitespace().nth(column).ok_or("the totals line has no Ir column")?;
    value.parse().map_err(|e| format!("Ir total {value:?}: {e}"))
}

/// Per-request counts of one path over its runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Instructions per request, one per run, in run order.
    pub runs: Vec<u64>,
    pub median: u64,
    pub min: u64,
    pub max: u64,
    /// (max − min) / median, in percent.
    pub spread_pct: f64,
}

impl Summary {
    /// `None` for no runs.
    pub fn of(runs: &[u64]) -> Option<Summary> {
        let mut sorted = runs.to_vec();
        sorted.sort_unstable();
        let median = match sorted.len() {
            0 => return None,
            n if n % 2 == 1 => sorted[n / 2],
            n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2,
        };
        let (min, max) = (sorted[0], sorted[sorted.len() - 1]);
        let spread_pct = if median == 0 { 0.0 } else { (max - min) as f64 / median as f64 * 100.0 };
        Some(Summary { runs: runs.to_vec(), median, min, max, spread_pct })
    }
}

/// `bench/callgrind-baseline.json`: per profile, the per-request count of
/// each path, and the tolerance a measurement may exceed it by.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// How to read and update this file (kept when it is rewritten).
    #[serde(default)]
    pub note: String,
    /// A measured median may exceed its baseline by this fraction (0.10:
    /// 10 %) before the check fails.
    pub tolerance: f64,
    /// Profile (`debug`, `release`) → path → instructions per request.
    pub profiles: BTreeMap<String, BTreeMap<String, u64>>,
}

/// What the check says about one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// At most baseline × (1 + tolerance).
    Within,
    /// Above it: a regression (or a change to record in the baseline).
    Over,
    /// Below baseline × (1 − 2 × tolerance): an improvement worth recording
    /// so that the bar follows it down. Not a failure.
    WellUnder,
    /// The baseline has no figure for this path and profile.
    NoBaseline,
}

/// One row of the check.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub path: String,
    pub measured: u64,
    pub baseline: Option<u64>,
    /// The highest count that passes.
    pub limit: Option<u64>,
    pub verdict: Verdict,
}

impl Check {
    pub fn fails(&self) -> bool {
        matches!(self.verdict, Verdict::Over | Verdict::NoBaseline)
    }

    /// measured / baseline − 1, in percent.
    pub fn change_pct(&self) -> Option<f64> {
        self.baseline.filter(|b| *b > 0).map(|b| (self.measured as f64 / b as f64 - 1.0) * 100.0)
    }
}

impl Baseline {
    /// Judges `measured` (path → median per-request count) for `profile`.
    pub fn check(&self, profile: &str, measured: &[(String, u64)]) -> Vec<Check> {
        let base = self.profiles.get(profile);
        measured
            .iter()
            .map(|(path, m)| {
                let baseline = base.and_then(|b| b.get(path)).copied();
                let limit = baseline.map(|b| (b as f64 * (1.0 + self.tolerance)).floor() as u64);
                let verdict = match (baseline, limit) {
                    (Some(b), Some(limit)) => {
                        if *m > limit {
                            Verdict::Over
                        } else if (*m as f64) < b as f64 * (1.0 - 2.0 * self.tolerance) {
                            Verdict::WellUnder
                        } else {
                            Verdict::Within
                        }
                    }
                    _ => Verdict::NoBaseline,
                };
                Check { path: path.clone(), measured: *m, baseline, limit, verdict }
            })
            .collect()
    }

    /// Records `measured` as `profile`'s figures (other profiles and the
    /// tolerance are kept; paths not measured keep their figure).
    pub fn update(&mut self, profile: &str, measured: &[(String, u64)]) {
        let base = self.profiles.entry(profile.to_owned()).or_default();
        for (path, m) in measured {
            base.insert(path.clone(), *m);
        }
    }
}

/// The check as a Markdown table, with what to do about it.
pub fn check_table(profile: &str, tolerance: f64, checks: &[Check]) -> String {
    let mut out = format!(
        "| path ({profile}) | measured Ir/request | baseline | limit (+{:.0} %) | change | verdict |\n| --- | ---: | ---: | ---: | ---: | --- |\n",
        tolerance * 100.0
    );
    let num = |v: Option<u64>| v.map_or_else(|| "–".to_owned(), thousands);
    for c in checks {
        let verdict = match c.verdict {
            Verdict::Within => "ok",
            Verdict::Over => "OVER the limit",
            Verdict::WellUnder => "ok, well under: record the new baseline",
            Verdict::NoBaseline => "no baseline for this path and profile",
        };
        let change = c.change_pct().map_or_else(|| "–".to_owned(), |p| format!("{p:+.1} %"));
        out.push_str(&format!(
            "| {} | {} | {} | {} | {change} | {verdict} |\n",
            c.path,
            thousands(c.measured),
            num(c.baseline),
            num(c.limit)
        ));
    }
    out
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "# callgrind format\nversion: 1\ncreator: callgrind-3.19.0\npid: 4261\n\
                        desc: Trigger: dump\n\npositions: line\nevents: Ir\nsummary: 0\n\n\
                        ob=(5) /usr/bin/sleep\nfn=(958) 0x6420\n0 5\n\ntotals: 5\n";

    #[test]
    fn total_ir_of_dumps() {
        let two_events = "events: Dr Ir\nsummary: 7 9\n";
        let cases: &[(&str, Result<u64, &str>)] = &[
            // callgrind 3.19's dump on `callgrind_control -d`: summary 0, totals right.
            (DUMP, Ok(5)),
            ("events: Ir\nsummary: 1234\n", Ok(1234)),
            ("events: Ir Dr\ntotals: 1234 99\n", Ok(1234)),
            (two_events, Ok(9)),
            ("summary: 5\n", Err("no `events:` line: not a callgrind dump")),
            ("events: Dr\ntotals: 5\n", Err("the dump counts no `Ir` event")),
            ("events: Ir\n", Err("no `totals:` or `summary:` line: an unfinished dump?")),
            ("events: Dr Ir\ntotals: 5\n", Err("the totals line has no Ir column")),
        ];
        for (dump, want) in cases {
            assert_eq!(total_ir(dump), want.map_err(str::to_owned), "{dump:?}");
        }
        assert!(total_ir("events: Ir\ntotals: x\n").is_err());
    }

    #[test]
    fn summaries() {
        let s = Summary::of(&[110, 100, 105]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.runs.clone()), (105, 100, 110, vec![110, 100, 105]));
        assert!((s.spread_pct - 10.0 / 105.0 * 100.0).abs() < 1e-9);
        assert_eq!(Summary::of(&[100, 200]).unwrap().median, 150);
        assert_eq!(Summary::of(&[42]).unwrap().spread_pct, 0.0);
        assert_eq!(Summary::of(&[]), None);
    }

    fn baseline() -> Baseline {
        let debug = [("a".to_owned(), 1000), ("b".to_owned(), 1000), ("c".to_owned(), 1000)];
        Baseline { note: String::new(), tolerance: 0.10, profiles: [("debug".to_owned(), debug.into())].into() }
    }

    #[test]
    fn baseline_check() {
        let cases: &[(&str, &str, u64, Verdict, Option<u64>)] = &[
            ("debug", "a", 1000, Verdict::Within, Some(1100)),
            ("debug", "a", 1100, Verdict::Within, Some(1100)),
            ("debug", "a", 1101, Verdict::Over, Some(1100)),
            ("debug", "b", 801, Verdict::Within, Some(1100)),
            ("debug", "b", 799, Verdict::WellUnder, Some(1100)),
            ("debug", "new-path", 5, Verdict::NoBaseline, None),
            ("release", "a", 5, Verdict::NoBaseline, None),
        ];
        let base = baseline();
        for &(profile, path, measured, verdict, limit) in cases {
            let got = base.check(profile, &[(path.to_owned(), measured)]);
            assert_eq!((got[0].verdict, got[0].limit), (verdict, limit), "{profile} {path} {measured}");
            assert_eq!(got[0].fails(), matches!(verdict, Verdict::Over | Verdict::NoBaseline));
        }
        let table = check_table("debug", 0.1, &base.check("debug", &[("a".into(), 1200)]));
        assert!(table.contains("| a | 1,200 | 1,000 | 1,100 | +20.0 % | OVER the limit |"), "{table}");
    }

    #[test]
    fn baseline_update_keeps_the_rest() {
        let mut base = baseline();
        base.update("debug", &[("a".to_owned(), 7)]);
        base.update("release", &[("a".to_owned(), 3)]);
        assert_eq!(base.profiles["debug"]["a"], 7);
        assert_eq!(base.profiles["debug"]["b"], 1000);
        assert_eq!(base.profiles["release"]["a"], 3);
        assert_eq!(base.tolerance, 0.10);
        let json = serde_json::to_string(&base).unwrap();
        assert_eq!(serde_json::from_str::<Baseline>(&json).unwrap(), base);
    }

    #[test]
    fn thousands_separators() {
        for (n, s) in [(0, "0"), (999, "999"), (1000, "1,000"), (123_456, "123,456"), (1_234_567, "1,234,567")] {
            assert_eq!(thousands(n), s);
        }
    }
}
