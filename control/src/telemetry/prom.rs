//! The Prometheus text exposition format (version 0.0.4), as the proxies'
//! `/metrics` write it: a parser, sortable bucket bounds, and
//! `histogram_quantile` over cumulative bucket counts.
//!
//! Shared by the control plane's scraper and the `weft` CLI (its demo
//! report), so there is one parser and one quantile rule.

use std::collections::BTreeMap;

/// One sample line: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses Prometheus text exposition format (version 0.0.4); lines that do
/// not parse are skipped (a report must not fail on one odd series).
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_line).collect()
}

/// `k="v",k2="v2"}` → the labels and what follows the `}`.
fn parse_labels(mut rest: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    loop {
        rest = rest.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
        if let Some(after) = rest.strip_prefix('}') {
            return Some((labels, after));
        }
        let (key, after) = rest.split_once('=')?;
        let after = after.trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    escaped => value.push(escaped),
                },
                (_, c) => value.push(c),
            }
        };
        labels.insert(key.trim().to_owned(), value);
        rest = &after[end + 1..];
    }
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(inner) = rest.strip_prefix('{') {
        (labels, rest) = parse_labels(inner)?;
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample { name: name.to_owned(), labels, value })
}

/// A bucket bound that sorts (`+Inf` last).
#[derive(Debug, Clone, Copy)]
pub struct Le(pub f64);

impl PartialEq for Le {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Le {}

impl PartialOrd for Le {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Le {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Parses a bucket bound (`le` label), `+Inf` included.
pub fn parse_le(le: &str) -> Option<f64> {
    if le == "+Inf" { Some(f64::INFINITY) } else { le.parse().ok() }
}

/// The `q` quantile (0 < q < 1) of cumulative bucket counts, as
/// Prometheus' `histogram_quantile`: linear inside the bucket that holds
/// the rank; the highest finite bound if it falls in the `+Inf` bucket;
/// `None` without observations. In the buckets' unit (seconds).
pub fn quantile(buckets: &BTreeMap<Le, f64>, q: f64) -> Option<f64> {
    let total = buckets.iter().next_back().map(|(_, n)| *n)?;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for (Le(upper), cumulative) in buckets {
        if *cumulative >= rank {
            if upper.is_infinite() {
                return Some(lower);
            }
            let inside = cumulative - below;
            let fraction = if inside > 0.0 { (rank - below) / inside } else { 1.0 };
            return Some(lower + (upper - lower) * fraction);
        }
        (lower, below) = (*upper, *cumulative);
    }
    Some(lower)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lines_and_skips_broken_ones() {
        let samples = parse(
            "# TYPE x counter\nx{a=\"1\",b=\"q\\\"\\\\\\n\"} 3\nbroken{x=\"1\" 3\ny 2 1700000000000\nz{le=\"+Inf\"} +Inf\n",
        );
        assert_eq!(samples.len(), 3);
        assert_eq!(samples[0].labels["b"], "q\"\\\n");
        assert_eq!((&*samples[1].name, samples[1].value), ("y", 2.0));
        assert!(samples[2].value.is_infinite());
    }

    #[test]
    fn quantiles_interpolate_inside_buckets() {
        let b: BTreeMap<Le, f64> =
            [(Le(0.001), 500.0), (Le(0.002), 900.0), (Le(0.005), 990.0), (Le(f64::INFINITY), 1000.0)].into();
        #[rustfmt::skip]
        let cases = [
            (0.5, Some(0.001)),
            (0.95, Some(0.002 + 0.003 * 50.0 / 90.0)),
            (0.999, Some(0.005)),
            (0.1, Some(0.001 * 100.0 / 500.0)),
        ];
        for (q, want) in cases {
            let got = quantile(&b, q);
            assert!(got.zip(want).is_some_and(|(g, w)| (g - w).abs() < 1e-12), "q={q}: {got:?} != {want:?}");
        }
        assert_eq!(quantile(&BTreeMap::new(), 0.5), None);
        assert_eq!(quantile(&[(Le(f64::INFINITY), 0.0)].into(), 0.5), None);
    }
}
