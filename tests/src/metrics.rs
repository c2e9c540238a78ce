//! A small reader of the Prometheus text exposition format, enough to pick a
//! sample by name and labels out of a proxy's `/metrics`.

use std::collections::BTreeMap;

/// One sample line: `name{label="value",...} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// All samples of one scrape, with the text they came from.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub text: String,
    pub samples: Vec<Sample>,
}

impl Metrics {
    /// Parses exposition text; panics on a line it cannot read, since a proxy
    /// that emits one is broken.
    pub fn parse(text: &str) -> Metrics {
        let samples = text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(|l| parse_line(l).unwrap_or_else(|e| panic!("bad metrics line {l:?}: {e}\n{text}")))
            .collect();
        Metrics { text: text.to_owned(), samples }
    }

    /// Samples named `name` whose labels include every pair in `labels`.
    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).is_some_and(|have| have == v))
        })
    }

    /// The sum over [`Metrics::matching`] samples; 0 when there are none, as
    /// Prometheus reads a counter that has not been created yet.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        // `+ 0.0` turns the empty sum, -0.0, into 0.
        self.matching(name, labels).map(|s| s.value).sum::<f64>() + 0.0
    }

    /// Whether any sample of the metric family `name` exists (counting the
    /// `_bucket`/`_sum`/`_count` series of a histogram).
    pub fn has_family(&self, name: &str) -> bool {
        self.samples.iter().any(|s| {
            s.name == name
                || s.name.strip_prefix(name).is_some_and(|rest| matches!(rest, "_bucket" | "_sum" | "_count"))
        })
    }
}

fn parse_line(line: &str) -> Result<Sample, String> {
    let (name, rest) = match line.find(['{', ' ']) {
        Some(i) => line.split_at(i),
        None => return Err("no value".into()),
    };
    let mut labels = BTreeMap::new();
    let rest = if let Some(mut body) = rest.strip_prefix('{') {
        loop {
            body = body.trim_start_matches([',', ' ']);
            if let Some(after) = body.strip_prefix('}') {
                break after;
            }
            let eq = body.find('=').ok_or("label without '='")?;
            let key = body[..eq].trim().to_owned();
            let mut chars = body[eq + 1..].char_indices();
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err("label value is not quoted".into());
            }
            let mut value = String::new();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => match chars.next().map(|(_, c)| c) {
                        Some('n') => value.push('\n'),
                        Some(c) => value.push(c),
                        None => return Err("dangling escape".into()),
                    },
                    '"' => {
                        end = Some(eq + 1 + i + 1);
                        break;
                    }
                    c => value.push(c),
                }
            }
            let end = end.ok_or("unterminated label value")?;
            labels.insert(key, value);
            body = &body[end..];
        }
    } else {
        rest
    };
    let value = rest.split_whitespace().next().ok_or("no value")?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().map_err(|e| format!("value {v:?}: {e}"))?,
    };
    Ok(Sample { name: name.to_owned(), labels, value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_selects() {
        let m = Metrics::parse(
            "# HELP weft_requests_total Requests.\n\
             # TYPE weft_requests_total counter\n\
             weft_requests_total{direction=\"inbound\",authority=\"b:8080\"} 3\n\
             weft_requests_total{direction=\"outbound\",authority=\"a \\\"q\\\", x\"} 2\n\
             weft_tcp_open_connections 1\n\
             weft_response_latency_seconds_bucket{direction=\"inbound\",le=\"+Inf\"} 3 1700000000\n",
        );
        assert_eq!(m.sum("weft_requests_total", &[]), 5.0);
        assert_eq!(m.sum("weft_requests_total", &[("direction", "inbound")]), 3.0);
        assert_eq!(m.sum("weft_requests_total", &[("authority", "a \"q\", x")]), 2.0);
        assert_eq!(m.sum("weft_tcp_open_connections", &[]), 1.0);
        assert_eq!(m.sum("weft_nothing_total", &[]), 0.0);
        assert!(m.has_family("weft_response_latency_seconds"));
        assert_eq!(m.sum("weft_response_latency_seconds_bucket", &[("le", "+Inf")]), 3.0);
    }
}
