//! `weft stat`, `weft routes`, `weft edges`, `weft top`, `weft tap`: the
//! mesh's traffic as the control plane aggregates it (its dashboard API,
//! `--control`), or from a Prometheus (`--prometheus`, stat/routes/edges).
//!
//! ```text
//!   --control URL ──GET /api/stat|routes|edges──► rows ──format──► table | -o json
//!   --prometheus URL ──PromQL (prometheus.rs)──► the same rows
//!   --control URL ──GET /api/tap (Server-Sent Events)──► tap lines | top table
//! ```
//!
//! The rows are the API's JSON; [`format`] and [`top`] are pure and
//! table-tested.

pub mod client;
pub mod format;
pub mod prometheus;
pub mod top;

use std::collections::HashMap;
use std::io::Write as _;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::{Args, ValueEnum};
use serde_json::Value;

/// How long one API call may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The dashboard's address by default (the control plane's default).
pub const DEFAULT_CONTROL: &str = "http://127.0.0.1:8084";

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Table,
    Json,
}

#[derive(Args, Debug, Clone)]
pub struct Source {
    /// The control plane's dashboard (`--dashboard-addr`), e.g.
    /// http://127.0.0.1:8084; on Kubernetes, through `kubectl
    /// port-forward -n weft-system deploy/weft-control 8084`.
    #[arg(long, env = "WEFT_CONTROL_URL", default_value = DEFAULT_CONTROL)]
    pub control: String,
    /// Read a Prometheus that scrapes the proxies (with the control
    /// plane's /api/prometheus/sd labels) instead of the control plane.
    #[arg(long, value_name = "URL")]
    pub prometheus: Option<String>,
    /// Only this namespace (default: all).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// The window the rates and latencies are over.
    #[arg(long, default_value = "30s")]
    pub window: humantime::Duration,
    /// `table`, or `json` (the API's rows).
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: Output,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatKind {
    Workloads,
    Services,
}

#[derive(Args, Debug)]
pub struct StatArgs {
    /// One row per workload (its pods summed), or per service (with a row
    /// per version when its pods have several).
    #[arg(value_enum, default_value = "workloads")]
    pub kind: StatKind,
    #[command(flatten)]
    pub source: Source,
}

#[derive(Args, Debug)]
pub struct RoutesArgs {
    /// The service (NAME, in -n or `default`; or NAMESPACE/NAME).
    #[arg(long)]
    pub service: String,
    #[command(flatten)]
    pub source: Source,
}

#[derive(Args, Debug)]
pub struct EdgesArgs {
    #[command(flatten)]
    pub source: Source,
}

#[derive(Args, Debug, Clone)]
pub struct TapFilter {
    /// The control plane's dashboard.
    #[arg(long, env = "WEFT_CONTROL_URL", default_value = DEFAULT_CONTROL)]
    pub control: String,
    /// The namespace of the pods tapped.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// Tap this workload's pods (e.g. web-v1).
    #[arg(long, conflicts_with = "service")]
    pub workload: Option<String>,
    /// Tap the pods of this service.
    #[arg(long)]
    pub service: Option<String>,
    /// Only `inbound` or `outbound` requests.
    #[arg(long)]
    pub direction: Option<String>,
    /// Only this method.
    #[arg(long)]
    pub method: Option<String>,
    /// Only this authority (host[:port]).
    #[arg(long)]
    pub authority: Option<String>,
    /// Only paths with this prefix.
    #[arg(long)]
    pub path: Option<String>,
    /// Events per second at most, split between the pods.
    #[arg(long, default_value_t = 10)]
    pub max_rps: u32,
}

impl TapFilter {
    fn query(&self, headers: bool) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        q.append_pair("namespace", &self.namespace);
        for (k, v) in [
            ("workload", &self.workload),
            ("service", &self.service),
            ("direction", &self.direction),
            ("method", &self.method),
            ("authority", &self.authority),
            ("path", &self.path),
        ] {
            if let Some(v) = v {
                q.append_pair(k, v);
            }
        }
        q.append_pair("max_rps", &self.max_rps.to_string());
        q.append_pair("headers", if headers { "true" } else { "false" });
        format!("/api/tap?{}", q.finish())
    }
}

#[derive(Args, Debug)]
pub struct TapArgs {
    #[command(flatten)]
    pub filter: TapFilter,
    /// Stop after this many events.
    #[arg(long)]
    pub max: Option<u64>,
    /// Ask for the headers too (`-o json` shows them).
    #[arg(long)]
    pub headers: bool,
    /// `table` (Linkerd's line format) or `json` (one event per line).
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: Output,
}

#[derive(Args, Debug)]
pub struct TopArgs {
    #[command(flatten)]
    pub filter: TapFilter,
    /// Print one table after this long and exit (instead of refreshing).
    #[arg(long)]
    pub once: Option<humantime::Duration>,
}

fn window(source: &Source) -> String {
    humantime::format_duration(*source.window).to_string().replace(' ', "")
}

fn path(endpoint: &str, pairs: &[(&str, Option<&str>)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        if let Some(v) = v {
            q.append_pair(k, v);
        }
    }
    format!("{endpoint}?{}", q.finish())
}

async fn api_rows(source: &Source, endpoint: &str, pairs: &[(&str, Option<&str>)]) -> anyhow::Result<Vec<Value>> {
    let w = window(source);
    let mut pairs = pairs.to_vec();
    pairs.push(("window", Some(&w)));
    let answer = client::get_json(&source.control, &path(endpoint, &pairs), TIMEOUT).await?;
    Ok(answer["rows"].as_array().cloned().unwrap_or_default())
}

fn print_rows(source: &Source, rows: &[Value], table: impl FnOnce(&[Value]) -> String) {
    match source.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(rows).unwrap_or_default()),
        Output::Table => print!("{}", table(rows)),
    }
}

/// `weft stat`.
pub async fn stat(args: StatArgs) -> anyhow::Result<bool> {
    let s = &args.source;
    let services = args.kind == StatKind::Services;
    let rows = match &s.prometheus {
        Some(p) => prometheus::stat(p, services, s.namespace.as_deref(), &window(s), TIMEOUT).await?,
        None => {
            let by = if services { "service" } else { "workload" };
            api_rows(s, "/api/stat", &[("by", Some(by)), ("namespace", s.namespace.as_deref())]).await?
        }
    };
    print_rows(s, &rows, |rows| format::stat_table(rows, s.namespace.is_none()));
    Ok(true)
}

/// `weft routes`.
pub async fn routes(args: RoutesArgs) -> anyhow::Result<bool> {
    let s = &args.source;
    let (ns, name) = match args.service.split_once('/') {
        Some((ns, name)) => (ns.to_owned(), name.to_owned()),
        None => (s.namespace.clone().unwrap_or_else(|| "default".into()), args.service.clone()),
    };
    let rows = match &s.prometheus {
        Some(p) => prometheus::routes(p, &name, &ns, &window(s), TIMEOUT).await?,
        None => api_rows(s, "/api/routes", &[("service", Some(&format!("{ns}/{name}")))]).await?,
    };
    print_rows(s, &rows, format::routes_table);
    Ok(true)
}

/// `weft edges`.
pub async fn edges(args: EdgesArgs) -> anyhow::Result<bool> {
    let s = &args.source;
    let rows = match &s.prometheus {
        Some(p) => prometheus::edges(p, s.namespace.as_deref(), &window(s), TIMEOUT).await?,
        None => api_rows(s, "/api/edges", &[("namespace", s.namespace.as_deref())]).await?,
    };
    print_rows(s, &rows, format::edges_table);
    Ok(true)
}

/// An error event's sentence.
fn tap_error(data: &str) -> String {
    match serde_json::from_str::<Value>(data) {
        Ok(v) => {
            format!("cannot tap {}: {}", v["pod"].as_str().unwrap_or("a pod"), v["error"].as_str().unwrap_or(data))
        }
        Err(_) => data.to_owned(),
    }
}

/// `weft tap`: exits 0 after `--max` events or when the stream ends with
/// events seen; 1 when it ends without any (every pod refused).
pub async fn tap(args: TapArgs) -> anyhow::Result<bool> {
    let f = &args.filter;
    let mut stream = client::Stream::open(&f.control, &f.query(args.headers), TIMEOUT).await?;
    let mut seen = 0u64;
    let mut stdout = std::io::stdout().lock();
    while let Some(event) = stream.next().await? {
        if event.kind == "error" {
            eprintln!("weft: {}", tap_error(&event.data));
            continue;
        }
        let Ok(value) = serde_json::from_str::<Value>(&event.data) else { continue };
        let line = match args.output {
            Output::Json => Some(value.to_string()),
            Output::Table => format::tap_line(&value),
        };
        if let Some(line) = line {
            writeln!(stdout, "{line}")?;
            stdout.flush()?;
        }
        seen += 1;
        if args.max.is_some_and(|m| seen >= m) {
            return Ok(true);
        }
    }
    if seen == 0 {
        bail!("the tap stream ended without an event");
    }
    Ok(true)
}

/// `weft top`.
pub async fn top(args: TopArgs) -> anyhow::Result<bool> {
    let f = &args.filter;
    let names: HashMap<String, String> = match client::get_json(&f.control, "/api/workloads", TIMEOUT).await {
        Ok(v) => v["workloads"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|w| Some((w["address"].as_str()?.to_owned(), w["name"].as_str()?.to_owned())))
            .collect(),
        Err(_) => HashMap::new(),
    };
    let mut top = top::Top::new(names);
    let mut stream = client::Stream::open(&f.control, &f.query(false), TIMEOUT).await?;
    let started = Instant::now();
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut redraw = tokio::time::interval(Duration::from_secs(1));
    let until = args.once.map(|d| started + *d);
    loop {
        let deadline = async {
            match until {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            event = stream.next() => match event? {
                Some(e) if e.kind == "error" => eprintln!("weft: {}", tap_error(&e.data)),
                Some(e) => if let Ok(v) = serde_json::from_str::<Value>(&e.data) { top.add(&v) },
                None => {
                    print!("{}", top.table());
                    return Ok(!top.rows.is_empty());
                }
            },
            _ = redraw.tick(), if until.is_none() => {
                if tty {
                    print!("\x1b[H\x1b[2J");
                }
                print!("{}", top.table());
                if !tty {
                    println!();
                }
                std::io::stdout().flush()?;
            },
            () = deadline => {
                print!("{}", top.table());
                return Ok(true);
            }
        }
    }
}
