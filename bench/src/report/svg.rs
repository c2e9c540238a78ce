//! `latest.svg`: latency by percentile, one panel per workload at the
//! headline rate, one curve per setup, drawn as HdrHistogram's plotter
//! draws them: x is `log10(1 / (1 − p))`, so p90, p99, p99.9 … are evenly
//! spaced and the tail gets the room. The latency axis is logarithmic too,
//! so that a 100 µs median and a 10 ms tail both stay readable.

use std::fmt::Write as _;

use super::model::Cell;
use crate::hist::{CURVE_MAX_X, curve};
use crate::setup::SetupKind;
use crate::workload::Workload;

const WIDTH: f64 = 860.0;
const PANEL_H: f64 = 300.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 150.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 45.0;

fn color(kind: SetupKind) -> &'static str {
    match kind {
        SetupKind::Direct => "#555555",
        SetupKind::Weft => "#1f77b4",
        SetupKind::WeftMtls => "#2ca02c",
        SetupKind::WeftMtlsBase => "#98df8a",
        SetupKind::WeftPolicy => "#9467bd",
        SetupKind::WeftTrace0 => "#8c564b",
        SetupKind::WeftTrace100 => "#e377c2",
        SetupKind::HaproxyMtls => "#d62728",
        SetupKind::NginxMtls => "#ff7f0e",
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Labels of the x ticks, at x = 0, 1, 2, …
const X_LABELS: [&str; 6] = ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"];

/// The SVG document for `cells` at `rate`, titled with `subtitle`.
pub fn render(cells: &[Cell], rate: u32, subtitle: &str) -> String {
    let workloads: Vec<Workload> =
        Workload::ALL.into_iter().filter(|w| cells.iter().any(|c| c.workload == *w && c.rate == rate)).collect();
    let height = TOP + PANEL_H * workloads.len().max(1) as f64 + 20.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="20" font-size="15" font-weight="bold">Latency by percentile at {rate} requests/s, open loop, corrected for coordinated omission</text>"#
    );
    let _ = writeln!(svg, r##"<text x="{LEFT}" y="34" fill="#666">{}</text>"##, escape(subtitle));
    if workloads.is_empty() {
        let _ = writeln!(svg, r#"<text x="{LEFT}" y="80">no latency measured at {rate}/s</text>"#);
    }
    for (i, w) in workloads.iter().enumerate() {
        let series: Vec<(SetupKind, Vec<(f64, f64)>)> = cells
            .iter()
            .filter(|c| c.workload == *w && c.rate == rate)
            // A histogram that does not decode is left out of the plot.
            .filter_map(|c| Some((c.setup, curve(&c.merged_histogram.decode().ok()?))))
            .filter(|(_, pts)| !pts.is_empty())
            .collect();
        panel(&mut svg, TOP + PANEL_H * i as f64, w.title(), &series);
    }
    svg.push_str("</svg>\n");
    svg
}

/// Decades covering `lo..=hi` µs: (first exponent, last exponent).
fn decades(lo: f64, hi: f64) -> (i32, i32) {
    let lo = lo.max(1.0).log10().floor() as i32;
    let hi = hi.max(10.0).log10().ceil() as i32;
    (lo, hi.max(lo + 1))
}

fn us_label(us: f64) -> String {
    match us {
        u if u >= 1_000_000.0 => format!("{} s", u / 1_000_000.0),
        u if u >= 1_000.0 => format!("{} ms", u / 1_000.0),
        u => format!("{u} µs"),
    }
}

fn panel(svg: &mut String, y0: f64, title: &str, series: &[(SetupKind, Vec<(f64, f64)>)]) {
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = PANEL_H - BOTTOM - 25.0;
    let top = y0 + 25.0;
    let _ = writeln!(svg, r#"<text x="{LEFT}" y="{}" font-weight="bold">{}</text>"#, y0 + 15.0, escape(title));
    let all = series.iter().flat_map(|(_, pts)| pts.iter().map(|p| p.1));
    let (lo, hi) = all.fold((f64::INFINITY, 0f64), |(lo, hi), y| (lo.min(y), hi.max(y)));
    let (d_lo, d_hi) = decades(if lo.is_finite() { lo } else { 1.0 }, hi);
    let x_of = |x: f64| LEFT + x / CURVE_MAX_X * plot_w;
    let y_of = |us: f64| {
        let f = (us.max(1.0).log10() - f64::from(d_lo)) / f64::from(d_hi - d_lo);
        top + plot_h * (1.0 - f)
    };
    // Frame, grid and ticks.
    let _ =
        writeln!(svg, r##"<rect x="{LEFT}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>"##);
    for (i, label) in X_LABELS.iter().enumerate() {
        let x = x_of(i as f64);
        let _ = writeln!(svg, r##"<line x1="{x}" y1="{top}" x2="{x}" y2="{}" stroke="#e4e4e4"/>"##, top + plot_h);
        let _ = writeln!(svg, r#"<text x="{x}" y="{}" text-anchor="middle">{label}</text>"#, top + plot_h + 15.0);
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">percentile</text>"#,
        LEFT + plot_w / 2.0,
        top + plot_h + 32.0
    );
    for d in d_lo..=d_hi {
        for m in [1.0, 2.0, 5.0] {
            let us = m * 10f64.powi(d);
            if d == d_hi && m > 1.0 {
                break;
            }
            let y = y_of(us);
            let stroke = if m == 1.0 { "#d0d0d0" } else { "#eeeeee" };
            let _ = writeln!(svg, r#"<line x1="{LEFT}" y1="{y}" x2="{}" y2="{y}" stroke="{stroke}"/>"#, LEFT + plot_w);
            let _ =
                writeln!(svg, r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#, LEFT - 5.0, y + 4.0, us_label(us));
        }
    }
    // Curves and legend.
    for (i, (kind, pts)) in series.iter().enumerate() {
        let path: Vec<String> = pts.iter().map(|(x, us)| format!("{:.1},{:.1}", x_of(*x), y_of(*us))).collect();
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>"#,
            color(*kind),
            path.join(" ")
        );
        let ly = top + 15.0 + 18.0 * i as f64;
        let lx = LEFT + plot_w + 12.0;
        let _ = writeln!(
            svg,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{}" stroke-width="3"/>"#,
            lx + 18.0,
            color(*kind)
        );
        let _ = writeln!(svg, r#"<text x="{}" y="{}">{}</text>"#, lx + 24.0, ly + 4.0, kind.name());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hist::new_histogram;
    use crate::report::model::EncodedHistogram;

    #[test]
    fn renders_a_panel_per_workload_with_a_curve_per_setup() {
        let mut cells = Vec::new();
        for (kind, base) in [(SetupKind::Direct, 80_000u64), (SetupKind::Weft, 150_000)] {
            for w in [Workload::Http1, Workload::Tcp] {
                let mut h = new_histogram();
                for i in 0..1000 {
                    h.record(base + i * 100).unwrap();
                }
                let mut cell = Cell::new(w, 1000, kind);
                cell.merged_histogram = EncodedHistogram::encode(&h);
                cells.push(cell);
            }
        }
        let svg = render(&cells, 1000, "test <run>");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 4);
        assert!(svg.contains(Workload::Tcp.title()) && svg.contains("99.9%") && svg.contains("test &lt;run&gt;"));
        assert!(!svg.contains("NaN"));
        assert!(render(&[], 1000, "").contains("no latency measured"));
    }

    #[test]
    fn latency_axis_spans_whole_decades() {
        assert_eq!(decades(85.0, 420.0), (1, 3));
        assert_eq!(decades(100.0, 100.0), (2, 3));
        assert_eq!(us_label(1000.0), "1 ms");
        assert_eq!(us_label(50.0), "50 µs");
    }
}
