//! `weft rollout`: drives a rollout strategy on a running local mesh by
//! rewriting one HTTPRoute, and rolls back by itself when the new version
//! fails.
//!
//! ```text
//!   flags ──validate──► Plan (steps) ─┐      run.json (runrecord::discover) ──► pods' admin, policy dir
//!                                     ▼
//!   for each step: route::render ──► rollout-<svc>.yaml ──► wait --interval ──► /metrics of every proxy
//!                  ──► canary's weft_route_requests_total delta ──► judge ──► next step | roll back (exit 1)
//! ```
//!
//! Deciding is separate from doing: [`Options::plan`], [`judge`] and
//! [`canary_counts`] are pure and table-tested; [`run`] only sequences
//! them with the file system, the clock and the proxies.
//!
//! The canary's success rate is what the callers' outbound proxies saw for
//! backend `<canary>.<namespace>:<port>` of any route: the route's choice
//! of backend is made there, so that is where the canary's share is
//! counted, in both network-namespace and loopback mode.

pub mod route;

use std::fmt;
use std::io::Write as _;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::metrics::Sample;
use crate::runrecord::{self, RunRecord};
use crate::runs;
use crate::stop::Stop;

/// The smallest `--interval`: below it a step sees too few requests to judge.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Time allowed for one proxy's `/metrics`.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a step waits for the proxies to run its route before its
/// interval starts anyway (with a warning).
const APPLY_DEADLINE: Duration = Duration::from_secs(5);

/// How the canary takes over.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Shift a growing share of requests (`--steps`, default 10,50,100) to the canary.
    Canary,
    /// The same mechanics as canary, in even steps (default 25,50,75,100).
    Ramped,
    /// Switch all requests at once; the stable version stays deployed at weight 0.
    BlueGreen,
    /// Send exactly the requests with `--header` or `--cookie` to the canary.
    Ab,
}

impl Strategy {
    /// As on the command line: `blue-green`.
    pub fn name(self) -> String {
        clap::ValueEnum::to_possible_value(&self).map_or_else(String::new, |v| v.get_name().to_owned())
    }
}

/// `weft rollout` flags.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "Writes one HTTPRoute, rollout-<service>.yaml, in the run's first policy directory; the \
                        control plane applies it within 250 ms. See docs/rollout.md.")]
pub struct RolloutArgs {
    /// The Service whose traffic is split (the route's parent), e.g. `web`.
    #[arg(long, value_parser = dns_label)]
    pub service: String,
    /// The Service of the version serving now, e.g. `web-v1`.
    #[arg(long, value_parser = dns_label)]
    pub stable: String,
    /// The Service of the new version, e.g. `web-v2`.
    #[arg(long, value_parser = dns_label)]
    pub canary: String,
    /// The namespace of the three Services (and of the route).
    #[arg(long, default_value = "default", value_parser = dns_label)]
    pub namespace: String,
    /// The Service port the route applies to; the stable and canary Services
    /// are called on the same port.
    #[arg(long, default_value_t = 80, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,
    /// The rollout strategy. Required unless --rollback.
    #[arg(long, value_enum, required_unless_present = "rollback")]
    pub strategy: Option<Strategy>,
    /// Canary and ramped: the canary's percentage at each step, increasing,
    /// each 1-100 (e.g. `10,50,100`). Default: 10,50,100 (canary),
    /// 25,50,75,100 (ramped).
    #[arg(long, value_name = "PERCENTS", value_parser = parse_steps)]
    pub steps: Option<Steps>,
    /// How long each step runs before the canary's error rate is judged
    /// (e.g. `30s`, `2m`; at least 1s).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_interval)]
    pub interval: Duration,
    /// Roll back when more than this share of the canary's requests failed
    /// during a step: a percentage with up to four decimals, e.g. `1%`,
    /// `0.5%` (a bare number is refused: 2 could mean 2 % or 200 %).
    /// `100%` never rolls back.
    #[arg(long, value_name = "PERCENT", default_value = "1%")]
    pub abort_on_error_rate: ErrorRate,
    /// A step with fewer canary requests than this is not judged (too few
    /// to tell), and the rollout goes on.
    #[arg(long, default_value_t = 20)]
    pub min_requests: u64,
    /// A/B: requests with this header (`NAME=VALUE`, exact value) go to the canary.
    #[arg(long, value_name = "NAME=VALUE", value_parser = parse_pair, conflicts_with = "cookie")]
    pub header: Option<(String, String)>,
    /// A/B: requests with this cookie (`NAME=VALUE`) go to the canary.
    #[arg(long, value_name = "NAME=VALUE", value_parser = parse_pair)]
    pub cookie: Option<(String, String)>,
    /// Write the route with all traffic on --stable and exit (any strategy).
    #[arg(long, conflicts_with_all = ["strategy", "steps", "header", "cookie"])]
    pub rollback: bool,
    /// The run to act on: the PID of its `weft up`/`weft demo`. Default: the
    /// only one running.
    #[arg(long, value_name = "PID")]
    pub run: Option<u32>,
    /// Where the runs keep their state (as given to `weft up --state-dir`).
    /// Default: /run/weft as root, else $XDG_RUNTIME_DIR/weft or /tmp/weft-<uid>.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
}

fn dns_label(s: &str) -> Result<String, String> {
    weft_control::policy::de::check_dns_label(s).map(|()| s.to_owned())
}

/// The canary's percentage at each step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Steps(pub Vec<u32>);

/// `10,50,100`: each 1-100 (a `%` is allowed), strictly increasing.
pub fn parse_steps(s: &str) -> Result<Steps, String> {
    let mut steps = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        let n: u32 = part
            .strip_suffix('%')
            .unwrap_or(part)
            .trim()
            .parse()
            .map_err(|_| format!("`{part}` is not a whole percentage; write e.g. 10,50,100"))?;
        if !(1..=100).contains(&n) {
            return Err(format!("{n} is not 1-100"));
        }
        if steps.last().is_some_and(|&last| n <= last) {
            return Err(format!("steps must increase, and {n} follows {}", steps.last().unwrap_or(&0)));
        }
        steps.push(n);
    }
    Ok(Steps(steps))
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    let d: Duration = s.parse::<humantime::Duration>().map_err(|e| format!("{e} (write e.g. 30s, 2m)"))?.into();
    if d < MIN_INTERVAL {
        return Err(format!("at least {MIN_INTERVAL:?}, to see enough requests to judge"));
    }
    Ok(d)
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => Ok((name.trim().to_owned(), value.to_owned())),
        _ => Err(format!("`{s}` is not NAME=VALUE")),
    }
}

/// A failure ratio, held exactly in parts per million so that "exactly at
/// the threshold" compares exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ErrorRate {
    pub ppm: u64,
}

impl FromStr for ErrorRate {
    type Err = String;

    fn from_str(s: &str) -> Result<ErrorRate, String> {
        let bad = || format!("`{s}` is not a percentage; write e.g. 1% or 0.5%");
        let Some(number) = s.trim().strip_suffix('%') else {
            return Err(format!(
                "`{s}` needs a % sign (e.g. {s}%): a bare number is ambiguous, 2 could mean 2 % or 200 %"
            ));
        };
        let number = number.trim();
        let (whole, fraction) = number.split_once('.').unwrap_or((number, "0"));
        let digits = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
        if !digits(whole) || !digits(fraction) {
            return Err(bad());
        }
        if fraction.len() > 4 {
            return Err(format!("`{s}`: at most four decimals (0.0001 % is one in a million)"));
        }
        let whole: u64 = whole.parse().map_err(|_| bad())?;
        let fraction: u64 =
            if fraction.is_empty() { 0 } else { format!("{fraction:0<4}").parse().map_err(|_| bad())? };
        let ppm = whole.saturating_mul(10_000).saturating_add(fraction);
        if ppm > 1_000_000 {
            return Err(format!("`{s}` is over 100%"));
        }
        Ok(ErrorRate { ppm })
    }
}

impl fmt::Display for ErrorRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, fraction) = (self.ppm / 10_000, self.ppm % 10_000);
        if fraction == 0 {
            write!(f, "{whole} %")
        } else {
            let fraction = format!("{fraction:04}");
            write!(f, "{whole}.{} %", fraction.trim_end_matches('0'))
        }
    }
}

/// The three Services and the port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub service: String,
    pub namespace: String,
    pub port: u16,
    pub stable: String,
    pub canary: String,
}

impl Target {
    /// The canary as the proxies label a backend: `name.namespace:port`.
    pub fn canary_backend(&self) -> String {
        format!("{}.{}:{}", self.canary, self.namespace, self.port)
    }
}

/// An A/B match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AbMatch {
    Header { name: String, value: String },
    Cookie { name: String, value: String },
}

/// How requests are split at one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Split {
    /// The canary's percentage; the stable version has the rest.
    Weights { canary: u32 },
    /// Matching requests to the canary, all others to the stable version.
    Matching(AbMatch),
}

impl Split {
    /// All traffic on the stable version.
    pub const ROLLBACK: Split = Split::Weights { canary: 0 };

    /// `web-v2 at 50 %`, `requests with header x-version: v2 to web-v2`.
    pub fn describe(&self, t: &Target) -> String {
        match self {
            Split::Weights { canary } => format!("{} at {canary} %", t.canary),
            Split::Matching(AbMatch::Header { name, value }) => {
                format!("requests with header {name}: {value} to {}", t.canary)
            }
            Split::Matching(AbMatch::Cookie { name, value }) => {
                format!("requests with cookie {name}={value} to {}", t.canary)
            }
        }
    }
}

/// Validated flags.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub target: Target,
    /// `None`: `--rollback`.
    pub strategy: Option<Strategy>,
    pub steps: Vec<Split>,
    pub interval: Duration,
    pub max_error_rate: ErrorRate,
    pub min_requests: u64,
}

impl RolloutArgs {
    /// Checks the flags that depend on each other, and plans the steps.
    pub fn options(&self) -> Result<Options, String> {
        if self.stable == self.canary {
            return Err(format!("--stable and --canary are both `{}`; they must be two Services", self.stable));
        }
        for (flag, name) in [("--stable", &self.stable), ("--canary", &self.canary)] {
            if *name == self.service {
                return Err(format!(
                    "{flag} `{name}` is the Service being split (--service): a route to itself would loop"
                ));
            }
        }
        let target = Target {
            service: self.service.clone(),
            namespace: self.namespace.clone(),
            port: self.port,
            stable: self.stable.clone(),
            canary: self.canary.clone(),
        };
        let strategy = if self.rollback { None } else { self.strategy };
        let ab = match (&self.header, &self.cookie) {
            (Some((name, value)), _) => Some(AbMatch::Header { name: name.clone(), value: value.clone() }),
            (None, Some((name, value))) => Some(AbMatch::Cookie { name: name.clone(), value: value.clone() }),
            (None, None) => None,
        };
        let steps = match strategy {
            None => vec![Split::ROLLBACK],
            Some(Strategy::Ab) => {
                vec![Split::Matching(ab.ok_or("--strategy ab needs --header NAME=VALUE or --cookie NAME=VALUE")?)]
            }
            Some(s) if ab.is_some() => {
                return Err(format!("--header and --cookie are for --strategy ab, not {}", s.name()));
            }
            Some(Strategy::BlueGreen) if self.steps.is_some() => {
                return Err("--steps is for --strategy canary or ramped; blue-green switches at once".into());
            }
            Some(Strategy::BlueGreen) => vec![Split::Weights { canary: 100 }],
            Some(Strategy::Canary) => self.steps_or(&[10, 50, 100]),
            Some(Strategy::Ramped) => self.steps_or(&[25, 50, 75, 100]),
        };
        Ok(Options {
            target,
            strategy,
            steps,
            interval: self.interval,
            max_error_rate: self.abort_on_error_rate,
            min_requests: self.min_requests,
        })
    }

    fn steps_or(&self, default: &[u32]) -> Vec<Split> {
        let steps = self.steps.as_ref().map_or(default, |s| &s.0);
        steps.iter().map(|&canary| Split::Weights { canary }).collect()
    }
}

/// The canary's requests, summed over proxies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub success: u64,
    pub failure: u64,
}

impl Counts {
    pub fn requests(&self) -> u64 {
        self.success + self.failure
    }

    /// What happened since `earlier`. Counters only grow, so a smaller one
    /// means the proxy restarted in between: everything it counted since
    /// is new.
    pub fn since(&self, earlier: &Counts) -> Counts {
        if self.success < earlier.success || self.failure < earlier.failure {
            return *self;
        }
        Counts { success: self.success - earlier.success, failure: self.failure - earlier.failure }
    }

    fn add(&mut self, other: &Counts) {
        self.success += other.success;
        self.failure += other.failure;
    }

    /// `0.0 %`, `37.5 %`.
    pub fn failed_percent(&self) -> String {
        if self.requests() == 0 {
            return "no requests".into();
        }
        format!("{:.1} % failed", self.failure as f64 * 100.0 / self.requests() as f64)
    }
}

/// `weft_route_requests_total` for `backend` in one proxy's samples, over every route.
pub fn canary_counts(samples: &[Sample], backend: &str) -> Counts {
    let mut counts = Counts::default();
    for s in samples.iter().filter(|s| s.name == "weft_route_requests_total") {
        if s.labels.get("backend").map(String::as_str) != Some(backend) {
            continue;
        }
        // Counters are integers; the text format writes them as such.
        let n = if s.value.is_finite() && s.value > 0.0 { s.value as u64 } else { 0 };
        match s.labels.get("classification").map(String::as_str) {
            Some("success") => counts.success += n,
            Some("failure") => counts.failure += n,
            _ => {}
        }
    }
    counts
}

/// The difference over the proxies that answered both scrapes; `None` if none did.
pub fn delta(before: &[Option<Counts>], after: &[Option<Counts>]) -> Option<Counts> {
    let mut total = None::<Counts>;
    for (b, a) in before.iter().zip(after) {
        if let (Some(b), Some(a)) = (b, a) {
            total.get_or_insert_default().add(&a.since(b));
        }
    }
    total
}

/// What a step's numbers say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Fewer than `--min-requests`: too few to tell; go on.
    TooFew,
    /// At most the threshold failed; go on.
    Healthy,
    /// More than the threshold failed: roll back.
    Abort,
}

/// The abort decision: abort when strictly more than `max` of at least
/// `min_requests` requests failed (exactly at the threshold goes on).
pub fn judge(counts: Counts, min_requests: u64, max: ErrorRate) -> Verdict {
    if counts.requests() < min_requests.max(1) {
        return Verdict::TooFew;
    }
    // failure / requests > ppm / 10^6, in integers.
    if u128::from(counts.failure) * 1_000_000 > u128::from(max.ppm) * u128::from(counts.requests()) {
        Verdict::Abort
    } else {
        Verdict::Healthy
    }
}

/// The canary's counts at every pod's proxy (`None` where the scrape failed).
async fn scrape(record: &RunRecord, backend: &str) -> Vec<Option<Counts>> {
    let reads = record.pods.iter().map(|pod| async move {
        let samples = crate::probe::proxy_metrics(&pod.name, pod.netns.as_deref(), pod.admin, SCRAPE_TIMEOUT).await?;
        Some(canary_counts(&samples, backend))
    });
    futures_util::future::join_all(reads).await
}

/// Every pod's policy versions for the rolled-out Service (`None` where
/// `/config` could not be read).
async fn policy_versions(record: &RunRecord, t: &Target) -> Vec<Option<Vec<u64>>> {
    let service = format!("{}.{}", t.service, t.namespace);
    let reads = record
        .pods
        .iter()
        .map(|pod| crate::probe::policy_versions(pod.netns.as_deref(), pod.admin, &service, t.port, SCRAPE_TIMEOUT));
    futures_util::future::join_all(reads).await
}

/// How many proxies ran a policy for the Service in `before` and run no
/// newer one `now`. (A proxy that never called the Service fetches the
/// route when it first does; an unreadable one cannot be waited for.)
pub fn lagging(before: &[Option<Vec<u64>>], now: &[Option<Vec<u64>>]) -> usize {
    let newest = |v: &Option<Vec<u64>>| v.as_ref().and_then(|v| v.iter().copied().max());
    before
        .iter()
        .zip(now)
        .filter(|(b, n)| match (newest(b), newest(n)) {
            (Some(old), Some(new)) => new <= old,
            _ => false,
        })
        .count()
}

/// Waits until every proxy that runs a policy for the Service runs one
/// newer than `before` (the step's route), or [`APPLY_DEADLINE`]: how
/// many still lag.
async fn wait_applied(record: &RunRecord, t: &Target, before: &[Option<Vec<u64>>]) -> usize {
    let deadline = Instant::now() + APPLY_DEADLINE;
    loop {
        let lag = lagging(before, &policy_versions(record, t).await);
        if lag == 0 || Instant::now() >= deadline {
            return lag;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Checks that the Services exist in the run, with the port.
fn check_target(record: &RunRecord, t: &Target) -> anyhow::Result<()> {
    for (flag, name) in [("--service", &t.service), ("--stable", &t.stable), ("--canary", &t.canary)] {
        let Some(service) = record.service(&t.namespace, name) else {
            let known: Vec<String> =
                record.services.iter().filter(|s| s.namespace == t.namespace).map(|s| s.name.clone()).collect();
            bail!(
                "{flag} {name}: the mesh {} has no such Service in namespace {} (it has: {})",
                record.mesh_file.display(),
                t.namespace,
                if known.is_empty() { "none".into() } else { known.join(", ") }
            );
        };
        if !service.ports.contains(&t.port) {
            let ports: Vec<String> = service.ports.iter().map(u16::to_string).collect();
            bail!("--port {}: Service {name} has port(s) {}, not {}", t.port, ports.join(", "), t.port);
        }
    }
    Ok(())
}

/// Runs `weft rollout`: whether it completed (false: rolled back).
pub async fn run(args: RolloutArgs) -> anyhow::Result<bool> {
    let options = args.options().map_err(anyhow::Error::msg)?;
    let root = args.state_dir.clone().unwrap_or_else(runs::default_state_root);
    let record = runrecord::discover(&root, args.run)?;
    let t = &options.target;
    check_target(&record, t)?;
    let Some(dir) = record.policy_dir().map(ToOwned::to_owned) else {
        bail!(
            "run {} watches no policy directory (policies: {:?}); add one to the mesh file's spec.policies",
            record.pid,
            record.policies
        );
    };
    for other in route::competing_routes(&record.policies, t) {
        eprintln!("weft: warning: another HTTPRoute is attached to Service {}: {other}", t.service);
    }
    let write = |split: &Split| -> anyhow::Result<PathBuf> {
        let text = route::render(t, split)?;
        Ok(route::write(&dir, &t.service, &text)?)
    };

    let Some(strategy) = options.strategy else {
        let path = write(&Split::ROLLBACK)?;
        println!(
            "rolled back: all of {} goes to {} ({} at weight 0); wrote {}",
            t.service,
            t.stable,
            t.canary,
            path.display()
        );
        return Ok(true);
    };

    let stop = Stop::install().context("cannot handle signals")?;
    let backend = t.canary_backend();
    let started = Instant::now();
    let n = options.steps.len();
    println!(
        "weft: rolling out {} to {} ({}, run {}): {n} step(s) of {}, rolling back if more than {} of {}'s \
         requests fail",
        t.canary,
        t.service,
        strategy.name(),
        record.pid,
        humantime::format_duration(options.interval),
        options.max_error_rate,
        t.canary
    );
    let rollback = |why: String| -> anyhow::Result<bool> {
        let path = write(&Split::ROLLBACK)?;
        println!("rolled back: {why}; all of {} goes to {} again ({})", t.service, t.stable, path.display());
        Ok(false)
    };
    for (i, split) in options.steps.iter().enumerate() {
        // The step is judged from when the proxies run its route, not from
        // the write (the control plane needs a moment to deliver it).
        let versions = policy_versions(&record, t).await;
        let path = write(split)?;
        if i == 0 {
            println!("weft: route {}/{} in {}", t.namespace, route::route_name(&t.service), path.display());
        }
        print!("step {}/{n}: {} …", i + 1, split.describe(t));
        let _ = std::io::stdout().flush();
        let lag = wait_applied(&record, t, &versions).await;
        if lag > 0 {
            eprintln!(
                "weft: warning: {lag} proxies did not run the step's route within {} (is the control plane up?)",
                humantime::format_duration(APPLY_DEADLINE)
            );
        }
        let before = scrape(&record, &backend).await;
        tokio::select! {
            () = tokio::time::sleep(options.interval) => {},
            () = stop.wait() => {
                println!(" interrupted");
                return rollback("interrupted".into());
            }
        }
        let after = scrape(&record, &backend).await;
        let Some(counts) = delta(&before, &after) else {
            println!(" no proxy answered");
            return rollback(format!(
                "no proxy of run {} answered for /metrics, so {} cannot be judged (is the mesh still running?)",
                record.pid, t.canary
            ));
        };
        let verdict = judge(counts, options.min_requests, options.max_error_rate);
        println!(
            " {} requests, {}{}",
            counts.requests(),
            counts.failed_percent(),
            if verdict == Verdict::TooFew {
                format!(" (fewer than {}: not judged)", options.min_requests)
            } else {
                String::new()
            }
        );
        if verdict == Verdict::Abort {
            return rollback(format!(
                "{} of {} requests to {} failed at step {}/{n} ({}, more than {})",
                counts.failure,
                counts.requests(),
                t.canary,
                i + 1,
                counts.failed_percent(),
                options.max_error_rate
            ));
        }
    }
    let elapsed = humantime::format_duration(Duration::from_millis(started.elapsed().as_millis() as u64));
    let outcome = match options.steps.last() {
        Some(Split::Matching(_)) => format!(
            "{}, all other requests to {}",
            options.steps.last().map(|s| s.describe(t)).unwrap_or_default(),
            t.stable
        ),
        Some(Split::Weights { canary: 100 }) => {
            format!("{} takes all of {}; {} stays deployed at weight 0", t.canary, t.service, t.stable)
        }
        Some(Split::Weights { canary }) => format!("{} stays at {canary} % of {}", t.canary, t.service),
        None => String::new(),
    };
    println!(
        "done in {elapsed}: {outcome} (undo: weft rollout --service {} --namespace {} --port {} --stable {} --canary {} --rollback)",
        t.service, t.namespace, t.port, t.stable, t.canary
    );
    Ok(true)
}

#[cfg(test)]
mod tests;
