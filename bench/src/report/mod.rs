//! The run's outputs: `latest.json` (every figure, compact, histograms
//! compressed: [`model`]), `latest.md`
//! (the tables, [`markdown`]), `latest.svg` (the percentile plot, [`svg`]),
//! with the machine they came from ([`machine`]) and the targets
//! ([`targets`], listed in `bench/README.md`).

pub mod machine;
pub mod markdown;
pub mod model;
pub mod svg;
pub mod targets;

use std::io::Write as _;
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

/// Writes `value` to `path` as compact JSON (one line, then a newline):
/// every JSON file the bench writes is written so, small enough to commit
/// (`jq .` pretty-prints one for reading).
pub fn write_json(path: &Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    let write = || -> anyhow::Result<()> {
        let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
        serde_json::to_writer(&mut out, value)?;
        out.write_all(b"\n")?;
        out.flush()?;
        Ok(())
    };
    write().with_context(|| format!("writing {}", path.display()))
}

/// Writes `latest.{md,json,svg}` into `dir` (created if needed).
pub fn write(results: &Results, dir: &Path) -> anyhow::Result<Written> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let written =
        Written { markdown: dir.join("latest.md"), json: dir.join("latest.json"), svg: dir.join("latest.svg") };
    write_json(&written.json, results)?;
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
