//! `handshakes.{json,md}` and the table printed on stdout.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::Results;
use crate::report::model::Spread;

fn figure(s: &Spread, decimals: usize) -> String {
    format!("{:.d$} [{:.d$}–{:.d$}]", s.median, s.min, s.max, d = decimals)
}

/// The summary table, as text for a terminal.
pub fn table(r: &Results) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{:<8} {:>20} {:>20} {:>20}", "kind", "handshakes/s/core", "client µs", "server µs");
    for k in &r.kinds {
        let _ = writeln!(
            out,
            "{:<8} {:>20} {:>20} {:>20}",
            k.kind.name(),
            format!("{:.0}", k.per_core.median),
            format!("{:.1}", k.client_us.median),
            format!("{:.1}", k.server_us.median)
        );
    }
    out
}

/// The Markdown report.
pub fn markdown(r: &Results) -> String {
    let h = &r.host;
    let mut md = String::new();
    let _ = writeln!(md, "# Weft benchmark: mTLS handshakes\n");
    if !r.preliminary.is_empty() {
        let _ = writeln!(md, "> **Preliminary figures**: {}.\n", r.preliminary.join("; "));
    }
    let _ = writeln!(
        md,
        "- when: {}\n{}- build: {}; one thread pinned to CPU {}\n- command: `cargo run --release -p weft-bench -- \
         handshakes`\n",
        h.date,
        h.markdown_lines(),
        if r.optimized { "optimized" } else { "unoptimized (debug)" },
        r.cpu,
    );
    let _ = writeln!(
        md,
        "The proxy's own TLS configurations (`weft_proxy::identity::build_configs`): TLS 1.3 only, ring, ECDSA \
         P-256 leaves from a throwaway CA with the SPIFFE ID as the only SAN (`{}` connecting to `{}`), the mesh \
         server verifier plus the SPIFFE ID check of an outbound proxy, client certificates required and read \
         back as an inbound proxy does, ALPN `weft.http/1`. Client and server connections are driven in memory \
         (no sockets) on one thread; each handshake runs until both sides are done and the server's session \
         tickets are processed. *full*: the client's session cache is disabled; *resumed*: the proxy's shared \
         in-memory cache, TLS 1.3 resumption (PSK with a fresh key exchange), every handshake checked to have \
         resumed.\n",
        r.client_identity, r.server_identity
    );
    let _ = writeln!(
        md,
        "Each cell: median of {} rounds [min–max], {:.1} s measured per kind after {:.1} s of warm-up, kinds \
         alternating round by round. *handshakes/s/core*: handshakes per second of the thread's CPU time, both \
         sides on the one core. *client µs* (what an outbound proxy pays per connection) and *server µs* (an \
         inbound proxy): CPU time per handshake, split in the proportion of the time measured in each side's \
         calls.\n",
        r.rounds, r.duration_s, r.warmup_s
    );
    let _ = writeln!(
        md,
        "| kind | handshakes/s/core | client µs | server µs | one side alone, handshakes/s/core (client, server) | \
         negotiated |\n| --- | ---: | ---: | ---: | ---: | --- |"
    );
    for k in &r.kinds {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {:.0}, {:.0} | {} |",
            k.kind.name(),
            figure(&k.per_core, 0),
            figure(&k.client_us, 1),
            figure(&k.server_us, 1),
            1e6 / k.client_us.median,
            1e6 / k.server_us.median,
            k.negotiated
        );
    }
    let _ = writeln!(
        md,
        "\n### Rounds\n\n| kind | round | handshakes | CPU s | wall s | client calls s | server calls s |\n| --- | ---: \
         | ---: | ---: | ---: | ---: | ---: |"
    );
    for k in &r.kinds {
        for (i, round) in k.rounds.iter().enumerate() {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {:.3} | {:.3} | {:.3} | {:.3} |",
                k.kind.name(),
                i + 1,
                round.handshakes,
                round.cpu_s,
                round.wall_s,
                round.client_s,
                round.server_s
            );
        }
    }
    let _ = writeln!(
        md,
        "\nWall time above CPU time is time the scheduler gave to other work on the machine. Not included: \
         TCP, the kernel's socket work, and the proxy's runtime around the handshake (the full bench's `conn` \
         workload measures the whole path)."
    );
    md
}

/// Writes `handshakes.json` and `handshakes.md` into `dir` (created if needed).
pub fn write(r: &Results, dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (json, md) = (dir.join("handshakes.json"), dir.join("handshakes.md"));
    crate::report::write_json(&json, r)?;
    std::fs::write(&md, markdown(r)).with_context(|| format!("writing {}", md.display()))?;
    Ok((json, md))
}
