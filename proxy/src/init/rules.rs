//! The interception rules as pure data: from an [`InitConfig`] to the list of
//! iptables commands ([`Step`]s) that install or remove them.
//!
//! Everything lives in the `nat` table, in two chains of our own so that
//! removal is exact:
//!
//! - `WEFT_INBOUND`, jumped to from `PREROUTING` with `-p tcp`: the proxy's
//!   own ports and the skipped inbound ports `RETURN`, everything else is
//!   `REDIRECT`ed to the inbound port;
//! - `WEFT_OUTBOUND`, jumped to from `OUTPUT` with `-p tcp`: the proxy's UID,
//!   loopback, the skipped outbound ports and CIDRs `RETURN`, everything else
//!   is `REDIRECT`ed to the outbound port.
//!
//! Installing flushes and refills the chains and adds a jump only when
//! `iptables -C` says it is missing, so installing twice changes nothing.

use std::fmt;

use ipnet::IpNet;

use super::config::{Action, InitConfig, PortRange};

/// The chain holding the inbound rules, jumped to from `PREROUTING`.
pub const INBOUND_CHAIN: &str = "WEFT_INBOUND";
/// The chain holding the outbound rules, jumped to from `OUTPUT`.
pub const OUTBOUND_CHAIN: &str = "WEFT_OUTBOUND";
/// The table every rule lives in.
pub const TABLE: &str = "nat";
/// How long each command waits for the xtables lock (`-w`), which the legacy
/// backend shares between all network namespaces of the machine: namespaces
/// set up in parallel queue up instead of failing.
pub const XTABLES_WAIT_SECONDS: u32 = 60;
/// The most ports one `-m multiport` match takes (a range counts as two).
pub const MULTIPORT_MAX_SLOTS: usize = 15;

/// An address family, i.e. which binary the commands go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// `iptables`
    V4,
    /// `ip6tables`
    V6,
}

impl Family {
    /// The binary that manages this family's rules.
    pub fn binary(self) -> &'static str {
        match self {
            Self::V4 => "iptables",
            Self::V6 => "ip6tables",
        }
    }

    /// The loopback network, whose destinations are never redirected.
    pub fn loopback(self) -> &'static str {
        match self {
            Self::V4 => "127.0.0.0/8",
            Self::V6 => "::1/128",
        }
    }

    /// Whether a network belongs to this family.
    pub fn contains(self, net: &IpNet) -> bool {
        matches!((self, net), (Self::V4, IpNet::V4(_)) | (Self::V6, IpNet::V6(_)))
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::V4 => "IPv4",
            Self::V6 => "IPv6",
        })
    }
}

/// One rule: the chain it belongs to and its specification (matches and
/// target) as iptables arguments, e.g. `-p tcp -j REDIRECT --to-ports 4143`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// `PREROUTING`, `OUTPUT` or one of our chains.
    pub chain: &'static str,
    /// Everything after the chain name.
    pub spec: Vec<String>,
}

impl Rule {
    fn new(chain: &'static str, spec: &[&str]) -> Self {
        Self { chain, spec: spec.iter().map(|s| (*s).to_owned()).collect() }
    }

    /// `RETURN` for `tcp` to these ports, one rule per multiport match.
    fn skip_ports(chain: &'static str, ports: &[PortRange], comment: &str) -> Vec<Self> {
        multiport_chunks(ports)
            .into_iter()
            .map(|list| {
                Self::new(
                    chain,
                    &[
                        "-p",
                        "tcp",
                        "-m",
                        "multiport",
                        "--dports",
                        &list,
                        "-m",
                        "comment",
                        "--comment",
                        comment,
                        "-j",
                        "RETURN",
                    ],
                )
            })
            .collect()
    }

    fn redirect(chain: &'static str, port: u16) -> Self {
        Self::new(
            chain,
            &[
                "-p",
                "tcp",
                "-m",
                "comment",
                "--comment",
                "weft/redirect",
                "-j",
                "REDIRECT",
                "--to-ports",
                &port.to_string(),
            ],
        )
    }
}

/// Splits a port list into `--dports` values of at most
/// [`MULTIPORT_MAX_SLOTS`] slots each, in order.
pub fn multiport_chunks(ports: &[PortRange]) -> Vec<String> {
    let mut chunks: Vec<String> = Vec::new();
    let mut slots = MULTIPORT_MAX_SLOTS;
    for port in ports {
        if slots + port.multiport_slots() > MULTIPORT_MAX_SLOTS {
            chunks.push(String::new());
            slots = 0;
        }
        let chunk = chunks.last_mut().expect("a chunk was just pushed");
        if !chunk.is_empty() {
            chunk.push(',');
        }
        chunk.push_str(&port.to_string());
        slots += port.multiport_slots();
    }
    chunks
}

/// The contents of `WEFT_INBOUND`, in order.
pub fn inbound_rules(config: &InitConfig) -> Vec<Rule> {
    let own: Vec<PortRange> = config.proxy_ports().into_iter().filter_map(PortRange::single).collect();
    let mut rules = Rule::skip_ports(INBOUND_CHAIN, &own, "weft/proxy-ports");
    rules.extend(Rule::skip_ports(INBOUND_CHAIN, &config.skip_inbound_ports, "weft/skip-ports"));
    rules.push(Rule::redirect(INBOUND_CHAIN, config.inbound_port));
    rules
}

/// The contents of `WEFT_OUTBOUND` for one family, in order. Skipped CIDRs of
/// the other family are left out.
pub fn outbound_rules(config: &InitConfig, family: Family) -> Vec<Rule> {
    let chain = OUTBOUND_CHAIN;
    let uid = config.proxy_uid.to_string();
    let mut rules = vec![
        Rule::new(
            chain,
            &["-m", "owner", "--uid-owner", &uid, "-m", "comment", "--comment", "weft/proxy-uid", "-j", "RETURN"],
        ),
        Rule::new(chain, &["-o", "lo", "-m", "comment", "--comment", "weft/loopback", "-j", "RETURN"]),
        Rule::new(chain, &["-d", family.loopback(), "-m", "comment", "--comment", "weft/loopback", "-j", "RETURN"]),
    ];
    rules.extend(Rule::skip_ports(chain, &config.skip_outbound_ports, "weft/skip-ports"));
    for net in config.skip_outbound_cidrs.iter().filter(|net| family.contains(net)) {
        rules.push(Rule::new(
            chain,
            &["-d", &net.to_string(), "-m", "comment", "--comment", "weft/skip-cidrs", "-j", "RETURN"],
        ));
    }
    rules.push(Rule::redirect(chain, config.outbound_port));
    rules
}

/// Our two chains, each with the built-in chain that jumps to it.
pub const CHAINS: [(&str, &str); 2] = [(INBOUND_CHAIN, "PREROUTING"), (OUTBOUND_CHAIN, "OUTPUT")];

/// The jump from `from` into `chain`, restricted to TCP.
pub fn jump_rule(from: &'static str, chain: &'static str) -> Rule {
    Rule::new(from, &["-p", "tcp", "-j", chain])
}

/// The two jumps into our chains.
pub fn jump_rules() -> [Rule; 2] {
    CHAINS.map(|(chain, from)| jump_rule(from, chain))
}

/// What an iptables command does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `-N CHAIN`
    NewChain,
    /// `-F CHAIN`
    FlushChain,
    /// `-X CHAIN`
    DeleteChain,
    /// `-A CHAIN SPEC`
    Append,
    /// `-C CHAIN SPEC`: succeeds if the rule is there.
    Check,
    /// `-D CHAIN SPEC`: deletes the first matching rule.
    Delete,
}

impl Op {
    /// The iptables option.
    pub fn flag(self) -> &'static str {
        match self {
            Self::NewChain => "-N",
            Self::FlushChain => "-F",
            Self::DeleteChain => "-X",
            Self::Append => "-A",
            Self::Check => "-C",
            Self::Delete => "-D",
        }
    }
}

/// One invocation of `iptables` or `ip6tables` on the nat table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IptablesCommand {
    /// Which binary.
    pub family: Family,
    /// What it does.
    pub op: Op,
    /// The chain it acts on.
    pub chain: &'static str,
    /// The rule specification (empty for chain operations).
    pub spec: Vec<String>,
}

impl IptablesCommand {
    fn chain(family: Family, op: Op, chain: &'static str) -> Self {
        Self { family, op, chain, spec: Vec::new() }
    }

    fn rule(family: Family, op: Op, rule: &Rule) -> Self {
        Self { family, op, chain: rule.chain, spec: rule.spec.clone() }
    }

    /// The arguments after the binary name:
    /// `-w 60 -t nat OP CHAIN [SPEC...]`.
    pub fn args(&self) -> Vec<String> {
        let mut args = vec![
            "-w".to_owned(),
            XTABLES_WAIT_SECONDS.to_string(),
            "-t".to_owned(),
            TABLE.to_owned(),
            self.op.flag().to_owned(),
            self.chain.to_owned(),
        ];
        args.extend(self.spec.iter().cloned());
        args
    }
}

/// The command line, quoted for `sh` where needed.
impl fmt::Display for IptablesCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.family.binary())?;
        for arg in self.args() {
            write!(f, " {}", shell_quote(&arg))?;
        }
        Ok(())
    }
}

fn shell_quote(arg: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_./:,=@%+".contains(c);
    if !arg.is_empty() && arg.chars().all(safe) { arg.to_owned() } else { format!("'{}'", arg.replace('\'', r"'\''")) }
}

/// One step of a plan. The guarded forms tolerate a "soft" failure of their
/// first command, i.e. one that only says that a chain or rule is, or is
/// not, there; any other failure (permission, xtables lock, bad arguments)
/// stops the run.
///
/// Displayed as one line of `sh` with the same logic, so `--dry-run` output
/// is a runnable script (the shell cannot tell soft failures from others).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Must succeed.
    Run(IptablesCommand),
    /// `first || fallback`: if `first` fails softly, `fallback` must succeed.
    /// Used for "create the chain, or flush it if it exists" and "add the
    /// jump unless `-C` finds it".
    OrElse {
        /// Tried first.
        first: IptablesCommand,
        /// Run only when `first` failed softly.
        fallback: IptablesCommand,
    },
    /// `first && then`: if `first` succeeds, `then` must succeed; if it fails
    /// softly, nothing more is done. Used for "flush the chain and, if it
    /// existed, delete it".
    AndThen {
        /// Tried first.
        first: IptablesCommand,
        /// Run only when `first` succeeded.
        then: IptablesCommand,
    },
    /// Repeat until it fails softly. Used to delete every copy of a jump.
    Repeat(IptablesCommand),
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Run(cmd) => write!(f, "{cmd}"),
            Self::OrElse { first, fallback } => write!(f, "{first} 2>/dev/null || {fallback}"),
            Self::AndThen { first, then } => write!(f, "{first} 2>/dev/null && {then}"),
            Self::Repeat(cmd) => write!(f, "while {cmd} 2>/dev/null; do :; done"),
        }
    }
}

/// The steps that carry out `config.action` for each of `families`, in order.
pub fn plan(config: &InitConfig, families: &[Family]) -> Vec<Step> {
    match config.action {
        Action::Install => install_plan(config, families),
        Action::Remove => remove_plan(families),
    }
}

/// Install: per family, create or flush each chain and fill it, then add
/// each jump unless it is already there. The jumps come last so that no
/// traffic meets a half-filled chain on the first install.
pub fn install_plan(config: &InitConfig, families: &[Family]) -> Vec<Step> {
    let mut steps = Vec::new();
    for &family in families {
        for (chain, rules) in [(INBOUND_CHAIN, inbound_rules(config)), (OUTBOUND_CHAIN, outbound_rules(config, family))]
        {
            steps.push(Step::OrElse {
                first: IptablesCommand::chain(family, Op::NewChain, chain),
                fallback: IptablesCommand::chain(family, Op::FlushChain, chain),
            });
            steps.extend(rules.iter().map(|rule| Step::Run(IptablesCommand::rule(family, Op::Append, rule))));
        }
        for jump in jump_rules() {
            steps.push(Step::OrElse {
                first: IptablesCommand::rule(family, Op::Check, &jump),
                fallback: IptablesCommand::rule(family, Op::Append, &jump),
            });
        }
    }
    steps
}

/// Remove: per family, delete every jump into our chains, then flush and
/// delete each chain that exists. Nothing installed means nothing done.
pub fn remove_plan(families: &[Family]) -> Vec<Step> {
    let mut steps = Vec::new();
    for &family in families {
        for (chain, from) in CHAINS {
            steps.push(Step::Repeat(IptablesCommand::rule(family, Op::Delete, &jump_rule(from, chain))));
            steps.push(Step::AndThen {
                first: IptablesCommand::chain(family, Op::FlushChain, chain),
                then: IptablesCommand::chain(family, Op::DeleteChain, chain),
            });
        }
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports(list: &[(u16, u16)]) -> Vec<PortRange> {
        list.iter().map(|&(a, b)| PortRange::new(a, b).unwrap()).collect()
    }

    fn lines(steps: &[Step]) -> Vec<String> {
        steps.iter().map(ToString::to_string).collect()
    }

    fn specs(rules: &[Rule]) -> Vec<String> {
        rules.iter().map(|r| format!("-A {} {}", r.chain, r.spec.join(" "))).collect()
    }

    #[test]
    fn default_install_ipv4_exact_commands() {
        let got = lines(&install_plan(&InitConfig::default(), &[Family::V4]));
        let want = [
            "iptables -w 60 -t nat -N WEFT_INBOUND 2>/dev/null || iptables -w 60 -t nat -F WEFT_INBOUND",
            "iptables -w 60 -t nat -A WEFT_INBOUND -p tcp -m multiport --dports 4143,4140,4191,4190 -m comment --comment weft/proxy-ports -j RETURN",
            "iptables -w 60 -t nat -A WEFT_INBOUND -p tcp -m comment --comment weft/redirect -j REDIRECT --to-ports 4143",
            "iptables -w 60 -t nat -N WEFT_OUTBOUND 2>/dev/null || iptables -w 60 -t nat -F WEFT_OUTBOUND",
            "iptables -w 60 -t nat -A WEFT_OUTBOUND -m owner --uid-owner 2102 -m comment --comment weft/proxy-uid -j RETURN",
            "iptables -w 60 -t nat -A WEFT_OUTBOUND -o lo -m comment --comment weft/loopback -j RETURN",
            "iptables -w 60 -t nat -A WEFT_OUTBOUND -d 127.0.0.0/8 -m comment --comment weft/loopback -j RETURN",
            "iptables -w 60 -t nat -A WEFT_OUTBOUND -p tcp -m comment --comment weft/redirect -j REDIRECT --to-ports 4140",
            "iptables -w 60 -t nat -C PREROUTING -p tcp -j WEFT_INBOUND 2>/dev/null || iptables -w 60 -t nat -A PREROUTING -p tcp -j WEFT_INBOUND",
            "iptables -w 60 -t nat -C OUTPUT -p tcp -j WEFT_OUTBOUND 2>/dev/null || iptables -w 60 -t nat -A OUTPUT -p tcp -j WEFT_OUTBOUND",
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn remove_exact_commands() {
        let got = lines(&remove_plan(&[Family::V4, Family::V6]));
        let want = [
            "while iptables -w 60 -t nat -D PREROUTING -p tcp -j WEFT_INBOUND 2>/dev/null; do :; done",
            "iptables -w 60 -t nat -F WEFT_INBOUND 2>/dev/null && iptables -w 60 -t nat -X WEFT_INBOUND",
            "while iptables -w 60 -t nat -D OUTPUT -p tcp -j WEFT_OUTBOUND 2>/dev/null; do :; done",
            "iptables -w 60 -t nat -F WEFT_OUTBOUND 2>/dev/null && iptables -w 60 -t nat -X WEFT_OUTBOUND",
            "while ip6tables -w 60 -t nat -D PREROUTING -p tcp -j WEFT_INBOUND 2>/dev/null; do :; done",
            "ip6tables -w 60 -t nat -F WEFT_INBOUND 2>/dev/null && ip6tables -w 60 -t nat -X WEFT_INBOUND",
            "while ip6tables -w 60 -t nat -D OUTPUT -p tcp -j WEFT_OUTBOUND 2>/dev/null; do :; done",
            "ip6tables -w 60 -t nat -F WEFT_OUTBOUND 2>/dev/null && ip6tables -w 60 -t nat -X WEFT_OUTBOUND",
        ];
        assert_eq!(got, want);
        let config = InitConfig { action: Action::Remove, ..InitConfig::default() };
        assert_eq!(plan(&config, &[Family::V4, Family::V6]), remove_plan(&[Family::V4, Family::V6]));
    }

    #[test]
    fn multiport_chunking() {
        let singles: Vec<(u16, u16)> = (1..=20).map(|p| (p, p)).collect();
        let cases: Vec<(Vec<(u16, u16)>, Vec<&str>)> = vec![
            (vec![], vec![]),
            (vec![(22, 22)], vec!["22"]),
            (vec![(22, 22), (4000, 4010)], vec!["22,4000:4010"]),
            (singles.clone(), vec!["1,2,3,4,5,6,7,8,9,10,11,12,13,14,15", "16,17,18,19,20"]),
            // 7 ranges = 14 slots; an 8th range would make 16.
            (
                (1..=8).map(|i| (i * 100, i * 100 + 1)).collect(),
                vec!["100:101,200:201,300:301,400:401,500:501,600:601,700:701", "800:801"],
            ),
            // 14 slots + one single port fits exactly.
            (
                (1..=7).map(|i| (i * 100, i * 100 + 1)).chain([(9, 9)]).collect(),
                vec!["100:101,200:201,300:301,400:401,500:501,600:601,700:701,9"],
            ),
        ];
        for (input, want) in cases {
            assert_eq!(multiport_chunks(&ports(&input)), want, "{input:?}");
        }
    }

    #[test]
    fn inbound_skips_proxy_ports_then_skipped_ports_then_redirects() {
        let config = InitConfig {
            inbound_port: 15006,
            outbound_port: 15001,
            admin_port: 15000,
            tap_port: 15002,
            skip_inbound_ports: ports(&[(22, 22), (4000, 4010)]),
            ..InitConfig::default()
        };
        assert_eq!(
            specs(&inbound_rules(&config)),
            [
                "-A WEFT_INBOUND -p tcp -m multiport --dports 15006,15001,15000,15002 -m comment --comment weft/proxy-ports -j RETURN",
                "-A WEFT_INBOUND -p tcp -m multiport --dports 22,4000:4010 -m comment --comment weft/skip-ports -j RETURN",
                "-A WEFT_INBOUND -p tcp -m comment --comment weft/redirect -j REDIRECT --to-ports 15006",
            ]
        );
    }

    #[test]
    fn outbound_splits_cidrs_by_family_and_uses_the_family_loopback() {
        let config = InitConfig {
            proxy_uid: 1337,
            skip_outbound_ports: ports(&[(25, 25), (6000, 6100)]),
            skip_outbound_cidrs: vec![
                "10.0.0.0/8".parse().unwrap(),
                "fd00::/8".parse().unwrap(),
                "192.168.0.1/32".parse().unwrap(),
                "2001:db8::1/128".parse().unwrap(),
            ],
            ..InitConfig::default()
        };
        let common_head = [
            "-A WEFT_OUTBOUND -m owner --uid-owner 1337 -m comment --comment weft/proxy-uid -j RETURN",
            "-A WEFT_OUTBOUND -o lo -m comment --comment weft/loopback -j RETURN",
        ];
        let ports =
            "-A WEFT_OUTBOUND -p tcp -m multiport --dports 25,6000:6100 -m comment --comment weft/skip-ports -j RETURN";
        let redirect = "-A WEFT_OUTBOUND -p tcp -m comment --comment weft/redirect -j REDIRECT --to-ports 4140";
        let cidr = |net: &str| format!("-A WEFT_OUTBOUND -d {net} -m comment --comment weft/skip-cidrs -j RETURN");
        let loopback = |net: &str| format!("-A WEFT_OUTBOUND -d {net} -m comment --comment weft/loopback -j RETURN");

        let mut want_v4: Vec<String> = common_head.iter().map(|s| s.to_string()).collect();
        want_v4.extend([
            loopback("127.0.0.0/8"),
            ports.to_owned(),
            cidr("10.0.0.0/8"),
            cidr("192.168.0.1/32"),
            redirect.to_owned(),
        ]);
        assert_eq!(specs(&outbound_rules(&config, Family::V4)), want_v4);

        let mut want_v6: Vec<String> = common_head.iter().map(|s| s.to_string()).collect();
        want_v6.extend([
            loopback("::1/128"),
            ports.to_owned(),
            cidr("fd00::/8"),
            cidr("2001:db8::1/128"),
            redirect.to_owned(),
        ]);
        assert_eq!(specs(&outbound_rules(&config, Family::V6)), want_v6);
    }

    #[test]
    fn ipv6_install_uses_ip6tables_after_ipv4() {
        let steps = install_plan(&InitConfig::default(), &[Family::V4, Family::V6]);
        let v4 = install_plan(&InitConfig::default(), &[Family::V4]);
        assert_eq!(steps.len(), 2 * v4.len());
        assert_eq!(&steps[..v4.len()], &v4[..]);
        let v6 = lines(&steps[v4.len()..]);
        assert!(v6.iter().all(|l| l.starts_with("ip6tables ")), "{v6:#?}");
        assert!(v6.iter().any(|l| l.contains(" -d ::1/128 ")), "{v6:#?}");
        assert!(!v6.iter().any(|l| l.contains("127.0.0.0/8")), "{v6:#?}");
        assert_eq!(install_plan(&InitConfig::default(), &[]), vec![]);
    }

    #[test]
    fn jumps_are_tcp_only_checked_before_added_and_come_last() {
        let steps = install_plan(&InitConfig::default(), &[Family::V4]);
        let n = steps.len();
        for (step, (chain, target)) in
            steps[n - 2..].iter().zip([("PREROUTING", INBOUND_CHAIN), ("OUTPUT", OUTBOUND_CHAIN)])
        {
            let spec: Vec<String> = ["-p", "tcp", "-j", target].iter().map(|s| s.to_string()).collect();
            let check = IptablesCommand { family: Family::V4, op: Op::Check, chain, spec: spec.clone() };
            let append = IptablesCommand { op: Op::Append, ..check.clone() };
            assert_eq!(step, &Step::OrElse { first: check, fallback: append });
        }
        // No other step touches a built-in chain.
        for step in &steps[..n - 2] {
            assert!(!step.to_string().contains("PREROUTING") && !step.to_string().contains(" OUTPUT"));
        }
    }

    #[test]
    fn shell_quoting() {
        let cmd = IptablesCommand {
            family: Family::V4,
            op: Op::Append,
            chain: OUTBOUND_CHAIN,
            spec: vec!["--comment".into(), "it's here".into(), String::new()],
        };
        assert_eq!(cmd.to_string(), r#"iptables -w 60 -t nat -A WEFT_OUTBOUND --comment 'it'\''s here' ''"#);
        assert_eq!(cmd.args()[..6], ["-w", "60", "-t", "nat", "-A", "WEFT_OUTBOUND"]);
    }
}
