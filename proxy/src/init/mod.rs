//! `weft-proxy init`: installs, in the current network namespace, the
//! iptables (nat) rules that send the pod's TCP through the proxy, as an
//! init container would (see `docs/init.md`).
//!
//! The stages are separate so that all but the last are pure and tested:
//!
//! 1. [`config`]: the flags ([`InitArgs`]) are validated into an
//!    [`InitConfig`], reporting every bad value at once;
//! 2. [`netns`]: the namespace is probed (IPv6 address, binaries) and the
//!    address families chosen;
//! 3. [`rules`]: the config becomes a list of iptables commands ([`Step`]s);
//! 4. [`exec`]: the steps are printed (`--dry-run`) or run.

pub mod config;
pub mod error;
pub mod exec;
pub mod netns;
pub mod rules;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;

pub use config::{Action, InitConfig, Ipv6Mode, PortRange};
pub use error::InitError;
pub use exec::Changes;
pub use rules::{Family, IptablesCommand, Step};

use exec::SystemRunner;
use netns::Probe;

/// Flags of `weft-proxy init`. Each can also be set by the environment
/// variable shown in `--help`; a flag given on the command line wins.
#[derive(clap::Args, Debug, Clone)]
pub struct InitArgs {
    /// Port of the proxy's inbound listener: TCP arriving for the pod is
    /// redirected to it.
    #[arg(long, env = "WEFT_INIT_INBOUND_PORT", value_name = "PORT", default_value = "4143")]
    pub inbound_port: String,

    /// Port of the proxy's outbound listener: TCP leaving the pod is
    /// redirected to it.
    #[arg(long, env = "WEFT_INIT_OUTBOUND_PORT", value_name = "PORT", default_value = "4140")]
    pub outbound_port: String,

    /// Port of the proxy's admin server. Inbound TCP to it, as to the inbound
    /// and outbound ports, is never redirected.
    #[arg(long, env = "WEFT_INIT_ADMIN_PORT", value_name = "PORT", default_value = "4191")]
    pub admin_port: String,

    /// Port of the proxy's tap server (gRPC over mTLS, for the control
    /// plane). Inbound TCP to it is never redirected.
    #[arg(long, env = "WEFT_INIT_TAP_PORT", value_name = "PORT", default_value = "4190")]
    pub tap_port: String,

    /// UID the proxy runs as. Its own outbound connections are never
    /// redirected (iptables owner match), which is what prevents a loop.
    #[arg(long, env = "WEFT_INIT_PROXY_UID", value_name = "UID", default_value = "2102")]
    pub proxy_uid: String,

    /// Inbound destination ports that bypass the proxy: comma list of ports
    /// and ranges, e.g. `22,4000-4010` (flag may repeat). [default: none]
    #[arg(long, env = "WEFT_INIT_SKIP_INBOUND_PORTS", value_name = "PORTS", value_delimiter = ',')]
    pub skip_inbound_ports: Vec<String>,

    /// Outbound destination ports that bypass the proxy: comma list of ports
    /// and ranges, e.g. `25,6000-6100` (flag may repeat). [default: none]
    #[arg(long, env = "WEFT_INIT_SKIP_OUTBOUND_PORTS", value_name = "PORTS", value_delimiter = ',')]
    pub skip_outbound_ports: Vec<String>,

    /// Outbound destinations that bypass the proxy: comma list of CIDRs or
    /// addresses, IPv4 and IPv6 mixed, e.g. `10.0.0.0/8,fd00::/8`; each goes
    /// into the rules of its own family (flag may repeat). [default: none]
    #[arg(long, env = "WEFT_INIT_SKIP_OUTBOUND_CIDRS", value_name = "CIDRS", value_delimiter = ',')]
    pub skip_outbound_cidrs: Vec<String>,

    /// Also install IPv6 rules with ip6tables: `auto` when the namespace has
    /// an IPv6 address other than ::1 (per /proc/net/if_inet6), `on` always,
    /// `off` never. With auto-detected or `on` IPv6, a missing ip6tables is an
    /// error. `--remove` chooses the same way.
    #[arg(long, env = "WEFT_INIT_IPV6", value_name = "auto|on|off", default_value = "auto")]
    pub ipv6: String,

    /// Print the exact iptables commands, one per line (a runnable `sh`
    /// script), and change nothing; needs no privileges.
    #[arg(
        long,
        env = "WEFT_INIT_DRY_RUN",
        value_parser = parse_switch
    )]
    pub dry_run: bool,

    /// Remove the rules instead: delete the jumps and the WEFT_INBOUND and
    /// WEFT_OUTBOUND chains. Succeeds, changing nothing, when nothing is
    /// installed.
    #[arg(
        long,
        env = "WEFT_INIT_REMOVE",
        value_parser = parse_switch
    )]
    pub remove: bool,
}

/// A switch's environment value: `1/0`, `true/false`, `yes/no`, `on/off`
/// (any case), `y/n`, `t/f`; empty means off.
fn parse_switch(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "" | "0" | "false" | "f" | "no" | "n" | "off" => Ok(false),
        "1" | "true" | "t" | "yes" | "y" | "on" => Ok(true),
        other => Err(format!("`{other}` is not a switch value (use 1/0, true/false, yes/no, on/off)")),
    }
}

/// The same values as an invocation with no flags and no environment.
impl Default for InitArgs {
    fn default() -> Self {
        Self {
            inbound_port: config::DEFAULT_INBOUND_PORT.to_string(),
            outbound_port: config::DEFAULT_OUTBOUND_PORT.to_string(),
            admin_port: config::DEFAULT_ADMIN_PORT.to_string(),
            tap_port: config::DEFAULT_TAP_PORT.to_string(),
            proxy_uid: config::DEFAULT_PROXY_UID.to_string(),
            skip_inbound_ports: Vec::new(),
            skip_outbound_ports: Vec::new(),
            skip_outbound_cidrs: Vec::new(),
            ipv6: Ipv6Mode::Auto.to_string(),
            dry_run: false,
            remove: false,
        }
    }
}

/// Install (or with `--remove` take away) the rules in the current network
/// namespace; with `--dry-run`, print the commands instead (on stdout, one
/// per line). Prints one summary line on success (stdout, or stderr for a
/// dry run so that stdout stays a clean script).
pub fn run(args: &InitArgs) -> Result<(), InitError> {
    let config = InitConfig::from_args(args)?;
    let outcome = apply(&config)?;
    if config.dry_run {
        let mut out = std::io::stdout().lock();
        for step in &outcome.steps {
            writeln!(out, "{step}").map_err(InitError::Output)?;
        }
        out.flush().map_err(InitError::Output)?;
        eprintln!("{}", outcome.summary);
    } else {
        writeln!(std::io::stdout(), "{}", outcome.summary).map_err(InitError::Output)?;
    }
    Ok(())
}

/// What [`apply`] did, or for a dry run would do.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The address families acted on.
    pub families: Vec<Family>,
    /// The steps, run in order unless it was a dry run.
    pub steps: Vec<Step>,
    /// What changed, per family (empty for a dry run).
    pub changes: BTreeMap<Family, Changes>,
    /// One line saying what was installed or removed.
    pub summary: String,
}

/// The work of [`run`] without printing, for callers that have an
/// [`InitConfig`] already: probes the namespace, chooses the families, plans
/// and (unless `config.dry_run`) runs the iptables commands.
pub fn apply(config: &InitConfig) -> Result<Outcome, InitError> {
    let probe = Probe::system();
    let families = netns::select_families(config, &probe)?;
    let steps = rules::plan(config, &families);
    if config.dry_run {
        let summary = dry_run_summary(config, &families, steps.len());
        return Ok(Outcome { families, steps, changes: BTreeMap::new(), summary });
    }
    let mut runner = families
        .iter()
        .filter_map(|&f| Some((f, probe.binary(f)?.to_owned())))
        .fold(SystemRunner::default(), |runner, (f, path)| runner.with_binary(f, path));
    let changes = exec::execute(&steps, &mut runner)?;
    let summary = summary(config, &families, &changes);
    tracing::debug!("{summary}");
    Ok(Outcome { families, steps, changes, summary })
}

fn families_text(families: &[Family]) -> String {
    families.iter().map(ToString::to_string).collect::<Vec<_>>().join(" + ")
}

/// `inbound TCP -> :4143 except ports ...; outbound TCP -> :4140 except ...`
fn rules_text(config: &InitConfig, families: &[Family]) -> String {
    let ports = |list: &[PortRange]| -> Vec<String> {
        list.iter()
            .map(|r| if r.first() == r.last() { r.first().to_string() } else { format!("{}-{}", r.first(), r.last()) })
            .collect()
    };
    let mut inbound: Vec<String> = config.proxy_ports().map(|p| p.to_string()).to_vec();
    inbound.extend(ports(&config.skip_inbound_ports));
    let mut text = format!(
        "inbound TCP -> :{} except to ports {}; outbound TCP -> :{} except from uid {}, to loopback",
        config.inbound_port,
        inbound.join(","),
        config.outbound_port,
        config.proxy_uid
    );
    if !config.skip_outbound_ports.is_empty() {
        let _ = write!(text, ", to ports {}", ports(&config.skip_outbound_ports).join(","));
    }
    let (used, unused): (Vec<&ipnet::IpNet>, Vec<&ipnet::IpNet>) =
        config.skip_outbound_cidrs.iter().partition(|net| families.iter().any(|f| f.contains(net)));
    if !used.is_empty() {
        let list: Vec<String> = used.iter().map(ToString::to_string).collect();
        let _ = write!(text, ", to {}", list.join(","));
    }
    if !unused.is_empty() {
        let list: Vec<String> = unused.iter().map(ToString::to_string).collect();
        let _ = write!(text, " (IPv6 is not set up, so {} is unused)", list.join(","));
    }
    if !families.contains(&Family::V6) && config.ipv6 == Ipv6Mode::Auto {
        text.push_str("; no IPv6 (no IPv6 address besides ::1)");
    }
    text
}

fn summary(config: &InitConfig, families: &[Family], changes: &BTreeMap<Family, Changes>) -> String {
    let total = |f: fn(&Changes) -> usize| changes.values().map(f).sum::<usize>();
    match config.action {
        Action::Install => format!(
            "weft-proxy init: installed {} interception in chains {}/{}: {} ({} rules; jumps: {} added, {} already present)",
            families_text(families),
            rules::INBOUND_CHAIN,
            rules::OUTBOUND_CHAIN,
            rules_text(config, families),
            total(|c| c.rules_added),
            total(|c| c.jumps_added),
            total(|c| c.jumps_present),
        ),
        Action::Remove => {
            let per_family: Vec<String> = families
                .iter()
                .map(|f| {
                    let c = changes.get(f).cloned().unwrap_or_default();
                    if c.removed_anything() {
                        format!("{f}: {} jumps and {} chains deleted", c.jumps_deleted, c.chains_deleted)
                    } else {
                        format!("{f}: nothing was installed")
                    }
                })
                .collect();
            format!("weft-proxy init: removed the interception rules ({})", per_family.join("; "))
        }
    }
}

fn dry_run_summary(config: &InitConfig, families: &[Family], commands: usize) -> String {
    match config.action {
        Action::Install => format!(
            "weft-proxy init: dry run, nothing changed; the {commands} lines above install {} interception: {}",
            families_text(families),
            rules_text(config, families)
        ),
        Action::Remove => format!(
            "weft-proxy init: dry run, nothing changed; the {commands} lines above remove the {} interception rules",
            families_text(families)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        args: InitArgs,
    }

    fn parse(argv: &[&str]) -> Result<InitArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("init").chain(argv.iter().copied())).map(|c| c.args)
    }

    #[test]
    fn clap_definition_is_valid() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn no_flags_means_the_defaults() {
        // (Assumes no WEFT_INIT_* variable is set in the test environment.)
        let args = parse(&[]).unwrap();
        let want = InitArgs::default();
        assert_eq!(format!("{args:?}"), format!("{want:?}"));
    }

    #[test]
    fn flags_parse_into_the_config() {
        let args = parse(&[
            "--inbound-port",
            "15006",
            "--outbound-port=15001",
            "--admin-port",
            "15000",
            "--proxy-uid",
            "1337",
            "--skip-inbound-ports",
            "22,4000-4010",
            "--skip-outbound-ports",
            "25",
            "--skip-outbound-ports",
            "6000-6100",
            "--skip-outbound-cidrs",
            "10.0.0.0/8,fd00::/8",
            "--ipv6",
            "off",
            "--dry-run",
            "--remove",
        ])
        .unwrap();
        let config = InitConfig::from_args(&args).unwrap();
        assert_eq!(
            config,
            InitConfig {
                inbound_port: 15006,
                outbound_port: 15001,
                admin_port: 15000,
                tap_port: 4190,
                proxy_uid: 1337,
                skip_inbound_ports: vec!["22".parse().unwrap(), "4000-4010".parse().unwrap()],
                skip_outbound_ports: vec!["25".parse().unwrap(), "6000-6100".parse().unwrap()],
                skip_outbound_cidrs: vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()],
                ipv6: Ipv6Mode::Off,
                action: Action::Remove,
                dry_run: true,
            }
        );
    }

    #[test]
    fn bad_values_reach_our_validation_not_clap() {
        // clap accepts the text, so that every problem is reported together.
        let args = parse(&["--inbound-port", "x", "--ipv6", "maybe"]).unwrap();
        let err = InitError::from(InitConfig::from_args(&args).unwrap_err());
        assert!(err.to_string().starts_with("2 invalid settings:"), "{err}");
        // And run() reports them before touching anything.
        assert!(matches!(run(&args), Err(InitError::Config(_))));
    }

    #[test]
    fn switch_values() {
        for (value, want) in [
            ("", Some(false)),
            ("0", Some(false)),
            ("Off", Some(false)),
            ("1", Some(true)),
            ("TRUE", Some(true)),
            ("yes", Some(true)),
            ("bogus", None),
        ] {
            assert_eq!(parse_switch(value).ok(), want, "{value:?}");
        }
        // On the command line the switches take no value.
        assert!(parse(&["--dry-run", "--remove"]).is_ok_and(|a| a.dry_run && a.remove));
        assert!(parse(&["--dry-run=false"]).is_err());
    }

    #[test]
    fn summaries() {
        let config = InitConfig {
            skip_inbound_ports: vec!["22".parse().unwrap(), "4000-4010".parse().unwrap()],
            skip_outbound_cidrs: vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()],
            ..InitConfig::default()
        };
        let v4 = Changes { chains_created: 2, rules_added: 7, jumps_added: 2, ..Changes::default() };
        let line = summary(&config, &[Family::V4], &[(Family::V4, v4)].into());
        assert_eq!(
            line,
            "weft-proxy init: installed IPv4 interception in chains WEFT_INBOUND/WEFT_OUTBOUND: \
             inbound TCP -> :4143 except to ports 4143,4140,4191,4190,22,4000-4010; outbound TCP -> \
             :4140 except from uid 2102, to loopback, to 10.0.0.0/8 (IPv6 is not set up, so \
             fd00::/8 is unused); no IPv6 (no IPv6 address besides ::1) (7 rules; jumps: 2 \
             added, 0 already present)"
        );

        let remove = InitConfig { action: Action::Remove, ..InitConfig::default() };
        let removed = Changes { jumps_deleted: 2, chains_flushed: 2, chains_deleted: 2, ..Changes::default() };
        let line = summary(
            &remove,
            &[Family::V4, Family::V6],
            &[(Family::V4, removed), (Family::V6, Changes::default())].into(),
        );
        assert_eq!(
            line,
            "weft-proxy init: removed the interception rules (IPv4: 2 jumps and 2 chains \
             deleted; IPv6: nothing was installed)"
        );
    }
}
