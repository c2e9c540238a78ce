//! `latest.md`: the tables a person reads (and the run prints).

use std::fmt::Write as _;

use super::model::{Cell, Results, Spread};
use crate::setup::SetupKind;
use crate::workload::Workload;

fn us(v: f64) -> String {
    if v >= 100.0 { format!("{v:.0}") } else { format!("{v:.1}") }
}

fn signed(v: f64) -> String {
    if v >= 0.0 { format!("+{}", us(v)) } else { format!("−{}", us(-v)) }
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// `median (+added) [min–max]`.
fn figure(s: &Spread, added: Option<f64>) -> String {
    let added = added.map(|a| format!(" ({})", signed(a))).unwrap_or_default();
    if s.n > 1 {
        format!("{}{added} [{}–{}]", us(s.median), us(s.min), us(s.max))
    } else {
        format!("{}{added}", us(s.median))
    }
}

pub fn render(r: &Results) -> String {
    let mut md = String::new();
    let (m, h) = (&r.machine, &r.machine.host);
    let _ = writeln!(md, "# Weft benchmark: `--{}` run\n", r.plan.mode.name());
    if !r.preliminary.is_empty() {
        let _ = writeln!(md, "> **Preliminary figures**: {}.\n", r.preliminary.join("; "));
    }
    let _ = writeln!(
        md,
        "- when: {} ({:.0} s)\n{}- builds: weft-proxy `{}`, weft-control `{}`, generator and app {}; {}; {}; {}\n- \
         command: `cargo run --release -p weft-bench -- {}`\n",
        h.date,
        r.duration_s,
        h.markdown_lines(),
        m.proxy_profile,
        m.control_profile,
        if m.bench_optimized { "optimized" } else { "unoptimized (debug)" },
        m.haproxy,
        m.nginx,
        m.openssl,
        if r.command.is_empty() { format!("--{}", r.plan.mode.name()) } else { r.command.clone() },
    );

    let _ = writeln!(md, "## Setups\n\n| setup | path |\n| --- | --- |");
    for s in &r.setups {
        let _ = writeln!(md, "| {} | {} |", s.name, s.description);
    }
    for s in r.setups.iter().filter(|s| !s.checks.is_empty()) {
        let _ = writeln!(md, "\n{} verified at start-up: {}.", s.name, s.checks.join("; "));
    }
    for s in r.setups.iter().filter(|s| !s.accounting.is_empty()) {
        let _ = writeln!(md, "\nAt the end of the run, in {}: {}.", s.name, s.accounting.join("; "));
    }

    let _ = writeln!(md, "\n## Targets\n\n| target | status | where we stand |\n| --- | --- | --- |");
    for t in &r.targets {
        let _ = writeln!(md, "| {} | **{}** | {} |", t.target, t.status, t.detail);
    }

    latency(&mut md, r);
    policy_stack(&mut md, r);
    knee(&mut md, r);
    footprint(&mut md, r);
    idle(&mut md, r);

    control_plane(&mut md, r);
    if !r.notes.is_empty() {
        let _ = writeln!(md, "\n## Notes\n");
        for n in &r.notes {
            let _ = writeln!(md, "- {n}");
        }
    }
    if !r.failures.is_empty() {
        let _ = writeln!(md, "\n## Failures\n");
        for f in &r.failures {
            let _ = writeln!(md, "- {}", f.lines().next().unwrap_or_default());
        }
    }
    md
}

fn latency(md: &mut String, r: &Results) {
    if r.latency.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "\n## Latency\n\nOpen loop at a constant rate, latency from each request's intended send time \
         (coordinated-omission corrected), in µs. Each cell: median of {} runs (added over direct) [min–max]; \
         {} s measured after {} s of warm-up per run. The plot is `latest.svg`.",
        r.plan.reps,
        r.plan.phase.measure.as_secs_f64(),
        r.plan.phase.warmup.as_secs_f64()
    );
    for w in Workload::ALL {
        let cells: Vec<&Cell> = r.latency.iter().filter(|c| c.workload == w).collect();
        if cells.is_empty() {
            continue;
        }
        let _ = writeln!(
            md,
            "\n### {}\n\n| rate/s | setup | p50 | p90 | p99 | p99.9 | max | achieved/s | failed |\n\
             | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
            w.title()
        );
        for c in cells {
            let mut row = format!("| {} | {} |", c.rate, c.setup.name());
            for (name, _) in crate::hist::FIGURES {
                let cell = match c.figures.get(name) {
                    Some(s) => figure(
                        s,
                        (c.setup != SetupKind::Direct).then(|| c.added_over_direct.get(name).copied()).flatten(),
                    ),
                    None => "–".to_owned(),
                };
                let _ = write!(row, " {cell} |");
            }
            let achieved = Spread::of(c.runs.iter().map(|r| r.achieved_rps)).map(|s| format!("{:.0}", s.median));
            let _ = writeln!(md, "{row} {} | {} |", achieved.unwrap_or_else(|| "–".into()), c.errors());
        }
    }
}

/// `weft-policy` against `weft-mtls`: what the traffic-policy stack adds.
fn policy_stack(md: &mut String, r: &Results) {
    if r.policy_stack.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "\n## Added by the policy stack\n\nweft-policy is weft-mtls plus a full traffic policy on the service \
         (route match, header filter, 100/0 split, retries with a budget and the body buffered for replay, \
         request and per-try timeouts, circuit breaker); both ran interleaved in the same run, repetition by \
         repetition. weft-mtls already runs the mesh's default policy (15 s request timeout, budgeted retries \
         on connect failure), so the difference is what the full policy adds on top. µs; medians over {} runs; \
         *added* is weft-policy's median minus weft-mtls'; *per repetition* is the spread of weft-policy's run \
         minus the weft-mtls run just before it [min–max]. Differences smaller than the runs' spread are noise \
         on a shared machine.\n",
        r.plan.reps
    );
    let _ = writeln!(
        md,
        "| workload | rate/s | figure | weft-mtls | weft-policy | added by the policy stack | per repetition |\n\
         | --- | ---: | --- | ---: | ---: | ---: | ---: |"
    );
    for c in &r.policy_stack {
        for f in &c.figures {
            let paired = f
                .paired
                .map(|s| format!("{} [{}–{}]", signed(s.median), signed(s.min), signed(s.max)))
                .unwrap_or_else(|| "–".into());
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | **{}** | {paired} |",
                c.workload.name(),
                c.rate,
                f.figure,
                us(f.weft_mtls),
                us(f.weft_policy),
                signed(f.added)
            );
        }
    }
}

fn knee(md: &mut String, r: &Results) {
    if r.knee.is_empty() && r.max_throughput.is_empty() {
        return;
    }
    let _ = writeln!(md, "\n## Knee and maximum throughput (HTTP/1.1 keep-alive, 1 KiB)\n");
    if let Some(k) = &r.plan.knee {
        let _ = writeln!(
            md,
            "Knee: the open-loop rate is stepped up ({}/s) until p99 passes {} ms, a request fails, or the \
             achieved rate falls under 90 % of the asked one, in a step and in its repeat (a step past the \
             limit runs once more before it counts, so one noisy run does not set the knee).\n",
            k.rates.iter().map(u32::to_string).collect::<Vec<_>>().join(", "),
            k.p99_limit.as_millis()
        );
    }
    if let Some(m) = &r.plan.max {
        let _ = writeln!(
            md,
            "Maximum throughput: closed loop, {} connections sending back to back, median of {} runs [min–max]. \
             On 2 cores the generator and the app share the CPU with the proxies, so direct is bounded by the \
             generator.\n",
            m.workers, m.reps
        );
    }
    let _ = writeln!(
        md,
        "| setup | knee: highest rate within limits | p99 there (µs) | first rate past | max throughput/s | of direct |\n\
         | --- | ---: | ---: | ---: | ---: | ---: |"
    );
    for kind in SetupKind::ALL {
        let k = r.knee.iter().find(|k| k.setup == kind);
        let m = r.max_throughput.iter().find(|m| m.setup == kind);
        if k.is_none() && m.is_none() {
            continue;
        }
        let knee_rps = k.and_then(|k| k.knee_rps);
        let p99 = k
            .and_then(|k| k.steps.iter().find(|s| Some(s.rate) == knee_rps && !s.over))
            .map(|s| us(s.latency.p99))
            .unwrap_or_else(|| "–".into());
        let over = match k {
            Some(k) => k.over_rps.map(|r| r.to_string()).unwrap_or_else(|| "none tried".into()),
            None => "–".into(),
        };
        let max = m
            .and_then(|m| m.rps)
            .map(|s| format!("{:.0} [{:.0}–{:.0}]", s.median, s.min, s.max))
            .unwrap_or_else(|| "–".into());
        let of = m.and_then(|m| m.of_direct).map(|f| format!("{:.0} %", f * 100.0)).unwrap_or_else(|| "–".into());
        let _ = writeln!(
            md,
            "| {} | {} | {p99} | {over} | {max} | {of} |",
            kind.name(),
            knee_rps.map(|r| r.to_string()).unwrap_or_else(|| "below the first step".into())
        );
    }
}

fn footprint(md: &mut String, r: &Results) {
    let rates: Vec<u32> = r.plan.rates.clone();
    let proxied: Vec<_> = r.setups.iter().filter(|s| !s.proxies.is_empty()).collect();
    if proxied.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "\n## Proxy footprint\n\nFrom `/proc/PID/status` and `/proc/PID/stat` of each proxy process. Peak RSS \
         is VmHWM, reset before each run, the largest over every workload and repetition at that rate; RSS at \
         the end is read after every section, the knee's overload included. MiB. Idle RSS gives in \
         parentheses its anonymous part (`RssAnon`: heap, stacks); the rest is file pages, mostly the \
         binary's text, which every proxy of the same binary on a node shares and which varies from run to \
         run with what the page cache holds.\n"
    );
    let mut head = "| setup | process | idle RSS |".to_owned();
    let mut rule = "| --- | --- | ---: |".to_owned();
    for rate in &rates {
        let _ = write!(head, " peak RSS at {rate}/s |");
        rule.push_str(" ---: |");
    }
    head.push_str(" RSS at the end |");
    rule.push_str(" ---: |");
    let _ = writeln!(md, "{head}\n{rule}");
    for s in &proxied {
        for (i, p) in s.proxies.iter().enumerate() {
            let anon = p.idle_anon_kib.map(|a| format!(" ({} anon)", mib(a))).unwrap_or_default();
            let mut row = format!("| {} | {} | {}{anon} |", s.name, p.name, mib(p.idle_rss_kib));
            for rate in &rates {
                let peak = r
                    .latency
                    .iter()
                    .filter(|c| c.setup == s.kind && c.rate == *rate)
                    .filter_map(|c| c.proxies.get(i).map(|p| p.peak_rss_kib))
                    .max();
                let _ = write!(row, " {} |", peak.map(mib).unwrap_or_else(|| "–".into()));
            }
            let _ = writeln!(md, "{row} {} |", p.end_rss_kib.map(mib).unwrap_or_else(|| "–".into()));
        }
    }

    let workloads: Vec<Workload> =
        Workload::ALL.into_iter().filter(|w| r.latency.iter().any(|c| c.workload == *w)).collect();
    if workloads.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "\nCPU seconds (utime + stime) per 10,000 requests, warm-up included, summed over the repetitions \
         (clock ticks of 10 ms: short runs are coarse).\n"
    );
    let mut head = "| setup | process | rate/s |".to_owned();
    let mut rule = "| --- | --- | ---: |".to_owned();
    for w in &workloads {
        let _ = write!(head, " {} |", w.name());
        rule.push_str(" ---: |");
    }
    let _ = writeln!(md, "{head}\n{rule}");
    for s in &proxied {
        for rate in &rates {
            for (i, p) in s.proxies.iter().enumerate() {
                let mut row = format!("| {} | {} | {rate} |", s.name, p.name);
                for w in &workloads {
                    let cpu = r
                        .latency
                        .iter()
                        .find(|c| c.setup == s.kind && c.rate == *rate && c.workload == *w)
                        .and_then(|c| c.proxies.get(i))
                        .and_then(|p| p.cpu_s_per_10k);
                    let _ = write!(row, " {} |", cpu.map(|v| format!("{v:.3}")).unwrap_or_else(|| "–".into()));
                }
                let _ = writeln!(md, "{row}");
            }
        }
    }
    connections(md, r, &workloads);
}

/// Connections the generator opened against those that reached the server
/// pod, per run summed over the repetitions: a proxy that shares its
/// kept-alive upstream connections opens far fewer than its clients do.
fn connections(md: &mut String, r: &Results, workloads: &[Workload]) {
    let _ = writeln!(
        md,
        "\nTCP connections, summed over the repetitions: opened by the generator / arrived in the server pod \
         (its `/proc/net/snmp`: PassiveOpens − ActiveOpens, so loopback hops cancel out). For a proxied setup \
         the second figure is the client-side proxy's upstream connections.\n"
    );
    let mut head = "| setup | rate/s |".to_owned();
    let mut rule = "| --- | ---: |".to_owned();
    for w in workloads {
        let _ = write!(head, " {} |", w.name());
        rule.push_str(" ---: |");
    }
    let _ = writeln!(md, "{head}\n{rule}");
    for s in &r.setups {
        for rate in &r.plan.rates {
            let mut row = format!("| {} | {rate} |", s.name);
            for w in workloads {
                let runs = r.latency.iter().find(|c| c.setup == s.kind && c.rate == *rate && c.workload == *w);
                let cell = runs.map(|c| {
                    let opened: u64 = c.runs.iter().map(|run| run.connections_opened).sum();
                    let arrived: u64 = c.runs.iter().map(|run| run.upstream_connections).sum();
                    format!("{opened} / {arrived}")
                });
                let _ = write!(row, " {} |", cell.unwrap_or_else(|| "–".into()));
            }
            let _ = writeln!(md, "{row}");
        }
    }
}

fn idle(md: &mut String, r: &Results) {
    if r.idle_connections.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "\n## Memory per idle connection\n\nOpaque TCP connections opened through the setup (one echo each, then \
         idle); RSS read {:.0} s after each step (the handshakes' freed memory, which an allocator may return on \
         a timer, is not an idle connection's). Bytes per connection = (RSS − RSS before) / connections.\n",
        r.plan.idle_settle.as_secs_f64()
    );
    let mut head = "| setup | process | RSS before (MiB) |".to_owned();
    let mut rule = "| --- | --- | ---: |".to_owned();
    for n in &r.plan.idle_steps {
        let _ = write!(head, " RSS with {n} (MiB) | bytes/conn at {n} |");
        rule.push_str(" ---: | ---: |");
    }
    let _ = writeln!(md, "{head}\n{rule}");
    for i in &r.idle_connections {
        let mut row = format!("| {} | {} | {} |", i.setup.name(), i.proxy, mib(i.rss_before_kib));
        for (k, _) in r.plan.idle_steps.iter().enumerate() {
            match i.points.get(k) {
                Some(p) => {
                    let failed = if p.failed > 0 { format!(" ({} failed)", p.failed) } else { String::new() };
                    let _ = write!(
                        row,
                        " {}{failed} | {} |",
                        mib(p.rss_kib),
                        p.bytes_per_conn.map(|b| format!("{b:.0}")).unwrap_or_else(|| "–".into())
                    );
                }
                None => row.push_str(" – | – |"),
            }
        }
        let _ = writeln!(md, "{row}");
    }
    after_close(md, r);
}

/// Whether the burst's memory came back (issue #14): RSS before, the
/// peak, samples after the close, and when it was back within 2 MB.
fn after_close(md: &mut String, r: &Results) {
    let sampled: Vec<_> = r.idle_connections.iter().filter(|i| !i.after_close.is_empty()).collect();
    let Some(window) = sampled.iter().filter_map(|i| i.after_close.last()).map(|s| s.after_s.round() as u64).max()
    else {
        return;
    };
    let marks: Vec<u64> = [1, 5, 10, 20, 30].into_iter().filter(|m| *m < window).chain([window]).collect();
    let _ = writeln!(
        md,
        "\nAfter the last step the generator exits, closing every connection at once; each proxy's RSS is then read \
         every second for {window} s. Peak is VmHWM over the burst. *Kept* = RSS at {window} s minus RSS before \
         (MB = 10^6 bytes); *back* = from when on every sample stayed within 2 MB of the RSS before.\n"
    );
    let mut head = "| setup | process | RSS before (MiB) | peak (MiB) |".to_owned();
    let mut rule = "| --- | --- | ---: | ---: |".to_owned();
    for m in &marks {
        let _ = write!(head, " {m} s after (MiB) |");
        rule.push_str(" ---: |");
    }
    let _ = writeln!(md, "{head} kept at {window} s (MB) | back within 2 MB |\n{rule} ---: | ---: |");
    for i in sampled {
        let mut row = format!(
            "| {} | {} | {} | {} |",
            i.setup.name(),
            i.proxy,
            mib(i.rss_before_kib),
            i.rss_peak_kib.map(mib).unwrap_or_else(|| "–".into())
        );
        for m in &marks {
            // The sample nearest to the mark (one a second, so at most 0.5 s off).
            let near = i
                .after_close
                .iter()
                .min_by(|a, b| (a.after_s - *m as f64).abs().total_cmp(&(b.after_s - *m as f64).abs()));
            let _ = write!(row, " {} |", near.map(|s| mib(s.rss_kib)).unwrap_or_else(|| "–".into()));
        }
        let kept = i.kept_bytes().map(|b| format!("{:+.1}", b / 1e6)).unwrap_or_else(|| "–".into());
        let back = i.back_after_s().map(|s| format!("after {s:.0} s")).unwrap_or_else(|| "**no**".into());
        let _ = writeln!(md, "{row} {kept} | {back} |");
    }
}

fn control_plane(md: &mut String, r: &Results) {
    let _ = writeln!(md, "\n## Control plane\n");
    let Some(cp) = &r.control_plane else {
        let _ = writeln!(md, "Not measured in this run (`--only` without `control`).");
        return;
    };
    let _ = writeln!(
        md,
        "weft-control in a pod of its own (plain gRPC, no CA, `--reload-interval {}`, `--telemetry-interval 0`, \
         other flags default); \
         simulated proxies in another pod, each a tonic client on its own connection watching \
         `Policy.WatchOutbound` for the same service. A change rewrites a TrafficPolicy file (write, then \
         rename); each arrival is timed from the rename, so it includes the control plane's file poll (at most \
         the interval). p50/p99 by nearest rank: over fewer than 100 changes, p99 is the slowest.{}",
        cp.reload_interval,
        if cp.push_endpoints > 0 {
            format!(
                " Before the streams opened, {} endpoints were registered with the same control plane, so the \
                 changes are pushed at that size{}.",
                cp.push_endpoints,
                cp.push_registration.as_ref().map_or_else(String::new, |(took, progress)| {
                    let tenths: Vec<String> =
                        crate::cplane::tenths(progress).iter().map(|t| format!("{t:.2}")).collect();
                    format!(" (in {took:.2} s with no stream open; seconds per tenth: {})", tenths.join(", "))
                })
            )
        } else {
            String::new()
        }
    );
    let ms = |q: Option<crate::cplane::Quantiles>, f: fn(&crate::cplane::Quantiles) -> f64| {
        q.map(|q| format!("{:.1}", f(&q))).unwrap_or_else(|| "–".into())
    };
    if !cp.push.is_empty() {
        let _ = writeln!(
            md,
            "\n| streams | changes | to reach all streams p50 (ms) | p99 | per-stream arrival p50 (ms) | p99 | first \
             arrival p50 (ms) | missed | opening the streams, 64 at a time (s) |\n| ---: | ---: | ---: | ---: | ---: | \
             ---: | ---: | ---: | ---: |"
        );
        for p in &cp.push {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {:.2}{} |",
                p.streams,
                p.changes,
                ms(p.to_all, |q| q.p50),
                ms(p.to_all, |q| q.p99),
                ms(p.per_stream, |q| q.p50),
                ms(p.per_stream, |q| q.p99),
                ms(p.to_first, |q| q.p50),
                p.missed,
                p.connect_s,
                if p.open_retries > 0 { format!(" ({} retried)", p.open_retries) } else { String::new() }
            );
        }
    }
    let mut rows = Vec::new();
    if let Some(k) = cp.idle_rss_kib {
        rows.push(("push: after start-up (services loaded, nothing connected)".to_owned(), k));
    }
    if let (Some(k), Some(n)) = (cp.push_peak_kib, cp.push.last().map(|p| p.streams)) {
        rows.push((format!("push: peak with up to {n} streams"), k));
    }
    if let Some(e) = &cp.endpoints {
        rows.push(("registry (a fresh control plane): after start-up".to_owned(), e.rss_before_kib));
        rows.push((format!("registry: peak while registering {} endpoints", e.registered), e.peak_kib));
        rows.push((
            format!("registry: with {} endpoints registered over {} services (leases held)", e.registered, e.services),
            e.rss_after_kib,
        ));
    }
    if !rows.is_empty() {
        let _ = writeln!(md, "\n| weft-control | RSS (MiB) |\n| --- | ---: |");
        for (what, kib) in rows {
            let _ = writeln!(md, "| {what} | {} |", mib(kib));
        }
    }
    if let Some(e) = &cp.endpoints {
        let _ = writeln!(
            md,
            "\n{} registrations (`Registry.Register`, 32 in flight on one connection) took {:.1} s{}{}.",
            e.asked,
            e.took_s,
            if e.failed > 0 { format!("; {} failed", e.failed) } else { String::new() },
            match (e.watchers, e.watch_converged_ms) {
                (0, _) => String::new(),
                (n, Some(ms)) => format!(
                    ", with {n} `Discovery.Watch` streams open (one per service, {} messages in all), each holding \
                     its service's every endpoint {ms:.0} ms after the last registration",
                    e.watch_messages
                ),
                (n, None) => format!(
                    ", with {n} `Discovery.Watch` streams open; some never held their service's every endpoint \
                     within 10 s"
                ),
            }
        );
        // Seconds per tenth of the registrations: whether each costs more
        // as the table grows.
        let mut last = (0, 0.0);
        let tenths: Vec<String> = e
            .progress
            .iter()
            .map(|&(done, at)| {
                let step = format!("{}–{}: {:.1} s", last.0 + 1, done, at - last.1);
                last = (done, at);
                step
            })
            .collect();
        if !tenths.is_empty() {
            let _ = writeln!(md, "\nTime per tenth of the registrations: {}.", tenths.join(", "));
        }
    }
    if let Some(err) = &cp.error {
        let _ = writeln!(md, "\nThe section stopped early: {}", err.lines().next().unwrap_or_default());
    }
}
