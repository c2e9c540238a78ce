//! The run's outputs: `latest.json` (everything, [`model`]), `latest.md`
//! (the tables, [`markdown`]), `latest.svg` (the percentile plot, [`svg`]),
//! with the machine they came from ([`machine`]) and the targets
//! ([`targets`], listed in `bench/README.md`).

pub mod machine;
pub mod markdown;
pub mod model;
pub mod svg;
pub mod targets;

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use model::Results;

/// The three files written.
#[derive(Debug)]
pub struct Written {
    pub markdown: PathBuf,
    pub json: PathBuf,
    pub svg: PathBuf,
}

/// Writes `latest.{md,json,svg}` into `dir` (created if needed).
pub fn write(results: &Results, dir: &Path) -> anyhow::Result<Written> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let written =
        Written { markdown: dir.join("latest.md"), json: dir.join("latest.json"), svg: dir.join("latest.svg") };
    let json = serde_json::to_string_pretty(results)?;
    std::fs::write(&written.json, json + "\n").with_context(|| format!("writing {}", written.json.display()))?;
    std::fs::write(&written.markdown, markdown::render(results))
        .with_context(|| format!("writing {}", written.markdown.display()))?;
    let m = &results.machine.host;
    let subtitle = format!(
        "weft-bench --{}, {}, commit {}, {} ({} cores), Linux {}",
        results.plan.mode.name(),
        m.date,
        m.git_commit.get(..10).unwrap_or(&m.git_commit),
        m.cpu_model,
        m.cores,
        m.kernel
    );
    std::fs::write(&written.svg, svg::render(&results.latency, results.plan.headline_rate, &subtitle))
        .with_context(|| format!("writing {}", written.svg.display()))?;
    Ok(written)
}
