//! The validated settings of `weft-proxy init`, parsed from [`InitArgs`].
//!
//! Every flag arrives as text so that all bad values can be reported at once
//! (clap would stop at the first one): [`InitConfig::from_args`] checks them
//! all and returns either a config or a [`ConfigErrors`] listing each problem.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

use super::InitArgs;

/// Default port of the proxy's inbound listener.
pub const DEFAULT_INBOUND_PORT: u16 = 4143;
/// Default port of the proxy's outbound listener.
pub const DEFAULT_OUTBOUND_PORT: u16 = 4140;
/// Default port of the proxy's admin server.
pub const DEFAULT_ADMIN_PORT: u16 = 4191;
/// The proxy's tap port (gRPC over mTLS, for the control plane).
pub const DEFAULT_TAP_PORT: u16 = 4190;
/// Default UID of the proxy process, whose traffic is never redirected.
pub const DEFAULT_PROXY_UID: u32 = 2102;

/// A TCP port or an inclusive range of ports, as given to the skip-port flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    first: u16,
    last: u16,
}

impl PortRange {
    /// One port. Port 0 is not a port a connection can target and is refused.
    pub fn single(port: u16) -> Option<Self> {
        Self::new(port, port)
    }

    /// `first..=last`; `None` if `first` is 0 or above `last`.
    pub fn new(first: u16, last: u16) -> Option<Self> {
        (first != 0 && first <= last).then_some(Self { first, last })
    }

    /// The first port of the range.
    pub fn first(self) -> u16 {
        self.first
    }

    /// The last port of the range (equal to `first` for a single port).
    pub fn last(self) -> u16 {
        self.last
    }

    /// Whether `port` lies in the range.
    pub fn contains(self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }

    /// How many of the 15 slots of one `-m multiport` match this entry takes:
    /// a range counts as two.
    pub fn multiport_slots(self) -> usize {
        if self.first == self.last { 1 } else { 2 }
    }
}

/// iptables syntax: `80` or `4000:4010`.
impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last { write!(f, "{}", self.first) } else { write!(f, "{}:{}", self.first, self.last) }
    }
}

/// Parses `80`, `4000-4010` or `4000:4010`.
impl FromStr for PortRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        match s.split_once(['-', ':']) {
            None => parse_port(s).map(|p| Self { first: p, last: p }),
            Some((a, b)) => {
                let first = parse_port(a.trim())?;
                let last = parse_port(b.trim())?;
                Self::new(first, last)
                    .ok_or_else(|| format!("range start {first} is above its end {last} (write it as {last}-{first})"))
            }
        }
    }
}

fn parse_port(s: &str) -> Result<u16, String> {
    match s.parse::<u32>() {
        Ok(p @ 1..=65535) => Ok(p as u16),
        Ok(p) => Err(format!("{p} is not a TCP port (expected 1-65535)")),
        Err(_) => Err(format!("`{s}` is not a port number (expected 1-65535)")),
    }
}

/// Whether to install the IPv6 (ip6tables) rules as well.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ipv6Mode {
    /// When the network namespace has an IPv6 address other than `::1`.
    Auto,
    /// Always; ip6tables must be installed.
    On,
    /// Never.
    Off,
}

impl FromStr for Ipv6Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "on" => Ok(Self::On),
            "off" => Ok(Self::Off),
            _ => Err("expected one of auto, on, off".to_owned()),
        }
    }
}

impl fmt::Display for Ipv6Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::On => "on",
            Self::Off => "off",
        })
    }
}

/// What `init` does to the namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Create (or refill) the chains and add the jumps.
    Install,
    /// Delete the jumps and the chains (`--remove`).
    Remove,
}

/// The validated settings of one `weft-proxy init` run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitConfig {
    /// Inbound TCP is redirected to this port.
    pub inbound_port: u16,
    /// Outbound TCP is redirected to this port.
    pub outbound_port: u16,
    /// The admin port, never redirected inbound.
    pub admin_port: u16,
    /// The tap port, never redirected inbound.
    pub tap_port: u16,
    /// The proxy's UID: its own connections are never redirected.
    pub proxy_uid: u32,
    /// Inbound destination ports left alone (besides the proxy's own ports).
    pub skip_inbound_ports: Vec<PortRange>,
    /// Outbound destination ports left alone.
    pub skip_outbound_ports: Vec<PortRange>,
    /// Outbound destinations left alone, both families.
    pub skip_outbound_cidrs: Vec<IpNet>,
    /// Whether to do IPv6 too.
    pub ipv6: Ipv6Mode,
    /// Install or remove.
    pub action: Action,
    /// Print the commands instead of running them.
    pub dry_run: bool,
}

impl Default for InitConfig {
    fn default() -> Self {
        Self {
            inbound_port: DEFAULT_INBOUND_PORT,
            outbound_port: DEFAULT_OUTBOUND_PORT,
            admin_port: DEFAULT_ADMIN_PORT,
            tap_port: DEFAULT_TAP_PORT,
            proxy_uid: DEFAULT_PROXY_UID,
            skip_inbound_ports: Vec::new(),
            skip_outbound_ports: Vec::new(),
            skip_outbound_cidrs: Vec::new(),
            ipv6: Ipv6Mode::Auto,
            action: Action::Install,
            dry_run: false,
        }
    }
}

impl InitConfig {
    /// Checks every flag and returns the config, or every problem found.
    pub fn from_args(args: &InitArgs) -> Result<Self, ConfigErrors> {
        let mut errors = Vec::new();
        let mut check = |flag: Flag, value: &str, result: Result<(), String>| {
            if let Err(problem) = result {
                errors.push(ConfigError::new(flag, value, problem));
            }
        };

        let mut config = Self {
            ipv6: Ipv6Mode::Auto,
            action: if args.remove { Action::Remove } else { Action::Install },
            dry_run: args.dry_run,
            ..Self::default()
        };

        let ports = [
            (Flag::InboundPort, &args.inbound_port, &mut config.inbound_port),
            (Flag::OutboundPort, &args.outbound_port, &mut config.outbound_port),
            (Flag::AdminPort, &args.admin_port, &mut config.admin_port),
            (Flag::TapPort, &args.tap_port, &mut config.tap_port),
        ];
        for (flag, value, slot) in ports {
            check(flag, value, parse_port(value.trim()).map(|p| *slot = p));
        }
        check(
            Flag::ProxyUid,
            &args.proxy_uid,
            args.proxy_uid
                .trim()
                .parse::<u32>()
                .map(|uid| config.proxy_uid = uid)
                .map_err(|_| format!("`{}` is not a numeric UID", args.proxy_uid.trim())),
        );
        for (flag, values, slot) in [
            (Flag::SkipInboundPorts, &args.skip_inbound_ports, &mut config.skip_inbound_ports),
            (Flag::SkipOutboundPorts, &args.skip_outbound_ports, &mut config.skip_outbound_ports),
        ] {
            for item in list_items(values) {
                check(flag, item, item.parse().map(|r| push_unique(slot, r)));
            }
        }
        for item in list_items(&args.skip_outbound_cidrs) {
            check(
                Flag::SkipOutboundCidrs,
                item,
                parse_cidr(item).map(|net| push_unique(&mut config.skip_outbound_cidrs, net)),
            );
        }
        check(Flag::Ipv6, &args.ipv6, args.ipv6.parse().map(|mode| config.ipv6 = mode));

        // The three proxy ports must differ, or a redirect would land on the
        // wrong listener. Only compare ports that parsed.
        let parsed = |flag| !errors.iter().any(|e: &ConfigError| e.flag == flag);
        let named = [
            (Flag::InboundPort, config.inbound_port, &args.inbound_port),
            (Flag::OutboundPort, config.outbound_port, &args.outbound_port),
            (Flag::AdminPort, config.admin_port, &args.admin_port),
            (Flag::TapPort, config.tap_port, &args.tap_port),
        ];
        let mut clashes = Vec::new();
        for (i, (flag_a, port_a, _)) in named.iter().enumerate() {
            for (flag_b, port_b, value_b) in &named[i + 1..] {
                if port_a == port_b && parsed(*flag_a) && parsed(*flag_b) {
                    clashes.push(ConfigError::new(
                        *flag_b,
                        value_b,
                        format!(
                            "port {port_b} is also the {}; the inbound, outbound, admin and tap ports must differ",
                            flag_a.what()
                        ),
                    ));
                }
            }
        }
        errors.extend(clashes);

        if errors.is_empty() { Ok(config) } else { Err(ConfigErrors(errors)) }
    }

    /// The proxy's own ports, which inbound traffic always reaches directly.
    pub fn proxy_ports(&self) -> [u16; 4] {
        [self.inbound_port, self.outbound_port, self.admin_port, self.tap_port]
    }
}

/// Items of a comma list; values may also arrive already split by clap.
/// Blanks are ignored so that an empty environment variable means "none".
fn list_items(values: &[String]) -> impl Iterator<Item = &str> {
    values.iter().flat_map(|v| v.split(',')).map(str::trim).filter(|item| !item.is_empty())
}

fn push_unique<T: PartialEq>(list: &mut Vec<T>, item: T) {
    if !list.contains(&item) {
        list.push(item);
    }
}

/// A CIDR (`10.0.0.0/8`, `fd00::/8`) or a bare address (one host). Host bits
/// are cleared, as iptables does, so the rules read back as written.
fn parse_cidr(s: &str) -> Result<IpNet, String> {
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    if let Ok(addr) = s.parse::<IpAddr>() {
        return Ok(IpNet::from(addr));
    }
    Err(format!("`{s}` is not a CIDR (e.g. 10.0.0.0/8, fd00::/8) or an IP address"))
}

/// A flag of `weft-proxy init`, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flag {
    /// `--inbound-port`
    InboundPort,
    /// `--outbound-port`
    OutboundPort,
    /// `--admin-port`
    AdminPort,
    /// `--tap-port`
    TapPort,
    /// `--proxy-uid`
    ProxyUid,
    /// `--skip-inbound-ports`
    SkipInboundPorts,
    /// `--skip-outbound-ports`
    SkipOutboundPorts,
    /// `--skip-outbound-cidrs`
    SkipOutboundCidrs,
    /// `--ipv6`
    Ipv6,
}

impl Flag {
    /// The long flag, e.g. `--inbound-port`.
    pub fn long(self) -> &'static str {
        match self {
            Self::InboundPort => "--inbound-port",
            Self::OutboundPort => "--outbound-port",
            Self::AdminPort => "--admin-port",
            Self::TapPort => "--tap-port",
            Self::ProxyUid => "--proxy-uid",
            Self::SkipInboundPorts => "--skip-inbound-ports",
            Self::SkipOutboundPorts => "--skip-outbound-ports",
            Self::SkipOutboundCidrs => "--skip-outbound-cidrs",
            Self::Ipv6 => "--ipv6",
        }
    }

    /// The environment variable that can set it, e.g. `WEFT_INIT_INBOUND_PORT`.
    pub fn env(self) -> &'static str {
        match self {
            Self::InboundPort => "WEFT_INIT_INBOUND_PORT",
            Self::OutboundPort => "WEFT_INIT_OUTBOUND_PORT",
            Self::AdminPort => "WEFT_INIT_ADMIN_PORT",
            Self::TapPort => "WEFT_INIT_TAP_PORT",
            Self::ProxyUid => "WEFT_INIT_PROXY_UID",
            Self::SkipInboundPorts => "WEFT_INIT_SKIP_INBOUND_PORTS",
            Self::SkipOutboundPorts => "WEFT_INIT_SKIP_OUTBOUND_PORTS",
            Self::SkipOutboundCidrs => "WEFT_INIT_SKIP_OUTBOUND_CIDRS",
            Self::Ipv6 => "WEFT_INIT_IPV6",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Self::InboundPort => "inbound port",
            Self::OutboundPort => "outbound port",
            Self::AdminPort => "admin port",
            Self::TapPort => "tap port",
            _ => self.long(),
        }
    }
}

/// One bad value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The flag it was given to.
    pub flag: Flag,
    /// The offending value (one item of a list).
    pub value: String,
    /// What is wrong with it.
    pub problem: String,
}

impl ConfigError {
    fn new(flag: Flag, value: &str, problem: String) -> Self {
        Self { flag, value: value.to_owned(), problem }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}) {:?}: {}", self.flag.long(), self.flag.env(), self.value, self.problem)
    }
}

/// Every bad value of one invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(f, "{n} invalid setting{}:", if n == 1 { "" } else { "s" })?;
        for error in &self.0 {
            write!(f, "\n  {error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(f: impl FnOnce(&mut InitArgs)) -> InitArgs {
        let mut args = InitArgs::default();
        f(&mut args);
        args
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn defaults_follow_the_conventions() {
        let config = InitConfig::from_args(&InitArgs::default()).unwrap();
        assert_eq!(config, InitConfig::default());
        assert_eq!(config.proxy_ports(), [4143, 4140, 4191, 4190]);
        assert_eq!(config.proxy_uid, 2102);
        assert_eq!(config.ipv6, Ipv6Mode::Auto);
        assert_eq!(config.action, Action::Install);
    }

    #[test]
    fn port_ranges() {
        let cases: &[(&str, Result<(u16, u16), &str>)] = &[
            ("80", Ok((80, 80))),
            (" 443 ", Ok((443, 443))),
            ("4000-4010", Ok((4000, 4010))),
            ("4000:4010", Ok((4000, 4010))),
            ("4000 - 4010", Ok((4000, 4010))),
            ("1-65535", Ok((1, 65535))),
            ("7-7", Ok((7, 7))),
            ("0", Err("0 is not a TCP port")),
            ("65536", Err("65536 is not a TCP port")),
            ("http", Err("`http` is not a port number")),
            ("-5", Err("`` is not a port number")),
            ("10-", Err("`` is not a port number")),
            ("9-3", Err("range start 9 is above its end 3")),
            ("1-2-3", Err("`2-3` is not a port number")),
        ];
        for (input, want) in cases {
            let got = input.parse::<PortRange>();
            match (want, got) {
                (Ok((a, b)), Ok(r)) => assert_eq!((r.first(), r.last()), (*a, *b), "{input}"),
                (Err(msg), Err(e)) => assert!(e.contains(msg), "{input}: {e}"),
                (want, got) => panic!("{input}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn port_range_display_and_slots() {
        let single = PortRange::single(80).unwrap();
        let range = PortRange::new(4000, 4010).unwrap();
        assert_eq!(single.to_string(), "80");
        assert_eq!(range.to_string(), "4000:4010");
        assert_eq!(single.multiport_slots(), 1);
        assert_eq!(range.multiport_slots(), 2);
        assert!(range.contains(4005) && !range.contains(4011));
        assert_eq!(PortRange::single(0), None);
        assert_eq!(PortRange::new(5, 4), None);
    }

    #[test]
    fn lists_accept_commas_repeats_blanks_and_drop_duplicates() {
        let config = InitConfig::from_args(&args(|a| {
            a.skip_inbound_ports = strings(&["22, 80", "4000-4010,,", "80", ""]);
            a.skip_outbound_ports = strings(&[""]);
        }))
        .unwrap();
        let got: Vec<String> = config.skip_inbound_ports.iter().map(ToString::to_string).collect();
        assert_eq!(got, ["22", "80", "4000:4010"]);
        assert!(config.skip_outbound_ports.is_empty());
    }

    #[test]
    fn cidrs_of_both_families() {
        let config = InitConfig::from_args(&args(|a| {
            a.skip_outbound_cidrs =
                strings(&["10.0.0.0/8,fd00::/8", "192.168.1.7", "2001:db8::1", "172.16.5.4/12", "10.0.0.0/8"]);
        }))
        .unwrap();
        let got: Vec<String> = config.skip_outbound_cidrs.iter().map(ToString::to_string).collect();
        assert_eq!(got, ["10.0.0.0/8", "fd00::/8", "192.168.1.7/32", "2001:db8::1/128", "172.16.0.0/12"]);
    }

    #[test]
    fn ipv6_modes() {
        for (input, want) in [
            ("auto", Some(Ipv6Mode::Auto)),
            ("on", Some(Ipv6Mode::On)),
            ("OFF", Some(Ipv6Mode::Off)),
            ("yes", None),
            ("", None),
        ] {
            assert_eq!(input.parse::<Ipv6Mode>().ok(), want, "{input}");
        }
    }

    #[test]
    fn every_bad_value_is_reported_at_once() {
        let errors = InitConfig::from_args(&args(|a| {
            a.inbound_port = "abc".into();
            a.outbound_port = "0".into();
            a.admin_port = "70000".into();
            a.proxy_uid = "-1".into();
            a.skip_inbound_ports = strings(&["22,9-3"]);
            a.skip_outbound_ports = strings(&["x", "25"]);
            a.skip_outbound_cidrs = strings(&["10.0.0.0/33,not-a-net,fd00::/8"]);
            a.ipv6 = "maybe".into();
        }))
        .unwrap_err();
        let got: Vec<(Flag, &str)> = errors.0.iter().map(|e| (e.flag, e.value.as_str())).collect();
        assert_eq!(
            got,
            [
                (Flag::InboundPort, "abc"),
                (Flag::OutboundPort, "0"),
                (Flag::AdminPort, "70000"),
                (Flag::ProxyUid, "-1"),
                (Flag::SkipInboundPorts, "9-3"),
                (Flag::SkipOutboundPorts, "x"),
                (Flag::SkipOutboundCidrs, "10.0.0.0/33"),
                (Flag::SkipOutboundCidrs, "not-a-net"),
                (Flag::Ipv6, "maybe"),
            ]
        );
        let text = errors.to_string();
        assert!(text.starts_with("9 invalid settings:\n"), "{text}");
        assert!(text.contains(r#"--ipv6 (WEFT_INIT_IPV6) "maybe": expected one of auto, on, off"#), "{text}");
        assert!(text.contains(r#"--proxy-uid (WEFT_INIT_PROXY_UID) "-1": `-1` is not a numeric UID"#), "{text}");
    }

    #[test]
    fn proxy_ports_must_differ() {
        let errors = InitConfig::from_args(&args(|a| {
            a.outbound_port = "4143".into();
            a.admin_port = "4143".into();
        }))
        .unwrap_err();
        let got: Vec<(Flag, String)> = errors.0.iter().map(|e| (e.flag, e.problem.clone())).collect();
        assert_eq!(got.len(), 3, "{errors}");
        assert_eq!(got[0].0, Flag::OutboundPort);
        assert!(got[0].1.contains("also the inbound port"), "{errors}");

        // A port that did not parse is not compared.
        let errors = InitConfig::from_args(&args(|a| a.inbound_port = "x".into())).unwrap_err();
        assert_eq!(errors.0.len(), 1, "{errors}");
    }

    #[test]
    fn action_and_dry_run() {
        let config = InitConfig::from_args(&args(|a| {
            a.remove = true;
            a.dry_run = true;
        }))
        .unwrap();
        assert_eq!(config.action, Action::Remove);
        assert!(config.dry_run);
    }
}
