//! Running a plan: the thin layer that spawns `iptables` / `ip6tables`,
//! tells "the chain or rule is (not) there" apart from real failures, and
//! counts what changed.

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::error::InitError;
use super::rules::{Family, IptablesCommand, Op, Step};

/// How a finished command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Exit status; `None` if it was killed by a signal.
    pub status: Option<i32>,
    /// What it wrote to stderr.
    pub stderr: String,
}

impl Output {
    /// Exit status 0.
    pub fn success() -> Self {
        Self { status: Some(0), stderr: String::new() }
    }

    fn is_success(&self) -> bool {
        self.status == Some(0)
    }
}

/// Runs single iptables commands. The system implementation spawns the
/// binaries; tests use a model of the nat table.
pub trait Runner {
    /// Runs `cmd` to completion. `Err` only when it could not be run at all.
    fn run(&mut self, cmd: &IptablesCommand) -> Result<Output, InitError>;
}

/// Spawns the resolved `iptables` / `ip6tables` binaries.
#[derive(Debug, Default)]
pub struct SystemRunner {
    binaries: BTreeMap<Family, PathBuf>,
}

impl SystemRunner {
    /// Uses `path` for the commands of `family`.
    pub fn with_binary(mut self, family: Family, path: PathBuf) -> Self {
        self.binaries.insert(family, path);
        self
    }
}

impl Runner for SystemRunner {
    fn run(&mut self, cmd: &IptablesCommand) -> Result<Output, InitError> {
        let program = self.binaries.get(&cmd.family).cloned().unwrap_or_else(|| PathBuf::from(cmd.family.binary()));
        tracing::debug!(command = %cmd, "running");
        let output = Command::new(&program)
            .args(cmd.args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|source| match source.kind() {
                io::ErrorKind::NotFound => InitError::missing_binary(cmd.family.binary(), None),
                _ => InitError::Spawn { command: cmd.to_string(), source },
            })?;
        Ok(Output { status: output.status.code(), stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned() })
    }
}

/// Why a command failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Only that a chain or rule is, or is not, there: exit status 1
    /// ("Chain already exists", "No chain/target/match by that name", "Bad
    /// rule (does a matching rule exist in that chain?)"), or status 2 for a
    /// jump to a chain that does not exist (nft: "Chain 'X' does not exist",
    /// legacy: "Couldn't load target `X'").
    Soft,
    /// Not root / no CAP_NET_ADMIN.
    Permission,
    /// Gave up waiting for the xtables lock.
    Lock,
    /// Anything else.
    Other,
}

/// Classifies a failed command from its exit status and stderr, as written
/// by iptables 1.8 (both the nft and the legacy backend).
pub fn classify(output: &Output) -> Failure {
    let err = output.stderr.as_str();
    if err.contains("Permission denied") || err.contains("must be root") || err.contains("Operation not permitted") {
        Failure::Permission
    } else if err.contains("xtables lock") {
        Failure::Lock
    } else {
        match output.status {
            Some(1) => Failure::Soft,
            Some(2) if err.contains("does not exist") || err.contains("Couldn't load target") => Failure::Soft,
            _ => Failure::Other,
        }
    }
}

fn failure_error(cmd: &IptablesCommand, output: &Output, kind: Failure) -> InitError {
    let command = cmd.to_string();
    let stderr = output.stderr.clone();
    match kind {
        Failure::Permission => InitError::PermissionDenied { command, stderr },
        Failure::Lock => InitError::XtablesLock { command, stderr },
        Failure::Soft | Failure::Other => InitError::CommandFailed { command, status: output.status, stderr },
    }
}

/// What a run changed (or found), per family.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Chains created with `-N`.
    pub chains_created: usize,
    /// Existing chains flushed before refilling them (install).
    pub chains_flushed: usize,
    /// Rules appended to our chains.
    pub rules_added: usize,
    /// Jumps appended to `PREROUTING` / `OUTPUT`.
    pub jumps_added: usize,
    /// Jumps that `-C` found already there.
    pub jumps_present: usize,
    /// Jumps deleted (remove).
    pub jumps_deleted: usize,
    /// Chains deleted (remove).
    pub chains_deleted: usize,
}

impl Changes {
    /// Whether anything was installed before a removal.
    pub fn removed_anything(&self) -> bool {
        self.jumps_deleted + self.chains_deleted > 0
    }

    fn record(&mut self, cmd: &IptablesCommand) {
        let builtin = matches!(cmd.chain, "PREROUTING" | "OUTPUT");
        match (cmd.op, builtin) {
            (Op::NewChain, _) => self.chains_created += 1,
            (Op::FlushChain, _) => self.chains_flushed += 1,
            (Op::Append, false) => self.rules_added += 1,
            (Op::Append, true) => self.jumps_added += 1,
            (Op::Check, _) => self.jumps_present += 1,
            (Op::Delete, _) => self.jumps_deleted += 1,
            (Op::DeleteChain, _) => self.chains_deleted += 1,
        }
    }
}

/// A guard against a `-D` that keeps succeeding (it never should: each one
/// deletes a rule).
const MAX_REPEAT: usize = 1000;

/// Runs the steps in order and stops at the first real failure.
pub fn execute(steps: &[Step], runner: &mut dyn Runner) -> Result<BTreeMap<Family, Changes>, InitError> {
    let mut changes: BTreeMap<Family, Changes> = BTreeMap::new();
    // Runs one command: Ok(true) on success, Ok(false) on a soft failure
    // when `tolerate_soft`, Err otherwise.
    let mut run = |cmd: &IptablesCommand, tolerate_soft: bool| -> Result<bool, InitError> {
        let output = runner.run(cmd)?;
        if output.is_success() {
            changes.entry(cmd.family).or_default().record(cmd);
            return Ok(true);
        }
        match classify(&output) {
            Failure::Soft if tolerate_soft => {
                tracing::debug!(command = %cmd, stderr = %output.stderr, "not applicable");
                Ok(false)
            }
            kind => Err(failure_error(cmd, &output, kind)),
        }
    };
    for step in steps {
        match step {
            Step::Run(cmd) => {
                run(cmd, false)?;
            }
            Step::OrElse { first, fallback } => {
                if !run(first, true)? {
                    run(fallback, false)?;
                }
            }
            Step::AndThen { first, then } => {
                if run(first, true)? {
                    run(then, false)?;
                }
            }
            Step::Repeat(cmd) => {
                let mut n = 0;
                while run(cmd, true)? {
                    n += 1;
                    if n >= MAX_REPEAT {
                        return Err(InitError::CommandFailed {
                            command: cmd.to_string(),
                            status: Some(0),
                            stderr: format!("still succeeding after {MAX_REPEAT} runs"),
                        });
                    }
                }
            }
        }
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::config::{Action, InitConfig};
    use crate::init::rules::{INBOUND_CHAIN, OUTBOUND_CHAIN, install_plan, remove_plan};

    fn out(status: i32, stderr: &str) -> Output {
        Output { status: Some(status), stderr: stderr.to_owned() }
    }

    #[test]
    fn classify_real_iptables_messages() {
        // Captured from iptables 1.8.9 (nf_tables and legacy) on Debian 12.
        let cases = [
            (1, "iptables: Chain already exists.", Failure::Soft),
            (1, "iptables: No chain/target/match by that name.", Failure::Soft),
            (1, "iptables: Bad rule (does a matching rule exist in that chain?).", Failure::Soft),
            (
                2,
                "iptables v1.8.9 (nf_tables): Chain 'WEFT_INBOUND' does not exist\nTry `iptables -h' or 'iptables --help' for more information.",
                Failure::Soft,
            ),
            (
                2,
                "iptables v1.8.9 (legacy): Couldn't load target `WEFT_INBOUND':No such file or directory",
                Failure::Soft,
            ),
            (
                4,
                "iptables v1.8.9 (nf_tables): Could not fetch rule set generation id: Permission denied (you must be root)",
                Failure::Permission,
            ),
            (4, "Fatal: can't open lock file /run/xtables.lock: Permission denied", Failure::Permission),
            (
                3,
                "iptables v1.8.9 (legacy): can't initialize iptables table `nat': Permission denied (you must be root)",
                Failure::Permission,
            ),
            (4, "Another app is currently holding the xtables lock. Stopped waiting after 60s.", Failure::Lock),
            (2, "iptables v1.8.9 (nf_tables): too many ports specified", Failure::Other),
            (2, "iptables v1.8.9 (nf_tables): unknown option \"--bogus\"", Failure::Other),
            (
                4,
                "iptables v1.8.9 (nf_tables):  CHAIN_DEL failed (Device or resource busy): chain WEFT_INBOUND",
                Failure::Other,
            ),
        ];
        for (status, stderr, want) in cases {
            assert_eq!(classify(&out(status, stderr)), want, "{stderr}");
        }
        let killed = Output { status: None, stderr: String::new() };
        assert_eq!(classify(&killed), Failure::Other);
    }

    /// A model of the nat table of one namespace, answering like iptables-nft.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Table {
        chains: BTreeMap<String, Vec<Vec<String>>>,
    }

    impl Table {
        fn new() -> Self {
            let chains = ["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"]
                .into_iter()
                .map(|c| (c.to_owned(), Vec::new()))
                .collect();
            Self { chains }
        }

        fn target_missing(&self, spec: &[String]) -> Option<String> {
            let target = spec.iter().skip_while(|a| *a != "-j").nth(1)?;
            let builtin = ["RETURN", "REDIRECT", "ACCEPT", "DROP", "DNAT", "SNAT"];
            (!builtin.contains(&target.as_str()) && !self.chains.contains_key(target)).then(|| target.clone())
        }

        fn apply(&mut self, cmd: &IptablesCommand) -> Output {
            let no_chain = || out(1, "iptables: No chain/target/match by that name.");
            let chain = cmd.chain.to_owned();
            match cmd.op {
                Op::NewChain if self.chains.contains_key(&chain) => out(1, "iptables: Chain already exists."),
                Op::NewChain => {
                    self.chains.insert(chain, Vec::new());
                    Output::success()
                }
                Op::FlushChain | Op::DeleteChain if !self.chains.contains_key(&chain) => no_chain(),
                Op::FlushChain => {
                    self.chains.get_mut(&chain).unwrap().clear();
                    Output::success()
                }
                Op::DeleteChain => {
                    let referenced = self
                        .chains
                        .values()
                        .flatten()
                        .any(|rule| rule.windows(2).any(|w| w[0] == "-j" && w[1] == chain));
                    if referenced || !self.chains[&chain].is_empty() {
                        out(4, "CHAIN_DEL failed (Device or resource busy)")
                    } else {
                        self.chains.remove(&chain);
                        Output::success()
                    }
                }
                Op::Append | Op::Check | Op::Delete => {
                    if let Some(target) = self.target_missing(&cmd.spec) {
                        return out(2, &format!("Chain '{target}' does not exist"));
                    }
                    let Some(rules) = self.chains.get_mut(&chain) else {
                        return no_chain();
                    };
                    let found = rules.iter().position(|r| *r == cmd.spec);
                    match (cmd.op, found) {
                        (Op::Append, _) => rules.push(cmd.spec.clone()),
                        (Op::Check, Some(_)) => {}
                        (Op::Delete, Some(i)) => {
                            rules.remove(i);
                        }
                        _ => {
                            return out(1, "iptables: Bad rule (does a matching rule exist in that chain?).");
                        }
                    }
                    Output::success()
                }
            }
        }
    }

    /// One namespace: a table per family, and a log of the commands run.
    #[derive(Debug)]
    struct FakeNetns {
        tables: BTreeMap<Family, Table>,
        log: Vec<String>,
        root: bool,
    }

    impl FakeNetns {
        fn new() -> Self {
            Self {
                tables: [(Family::V4, Table::new()), (Family::V6, Table::new())].into(),
                log: Vec::new(),
                root: true,
            }
        }
    }

    impl Runner for FakeNetns {
        fn run(&mut self, cmd: &IptablesCommand) -> Result<Output, InitError> {
            self.log.push(cmd.to_string());
            if !self.root {
                return Ok(out(
                    4,
                    "iptables v1.8.9 (nf_tables): Could not fetch rule set generation id: Permission denied (you must be root)",
                ));
            }
            Ok(self.tables.get_mut(&cmd.family).unwrap().apply(cmd))
        }
    }

    const BOTH: &[Family] = &[Family::V4, Family::V6];

    #[test]
    fn install_twice_then_remove_restores_the_table() {
        let mut ns = FakeNetns::new();
        // Someone else's rules must survive untouched.
        let foreign = IptablesCommand {
            family: Family::V4,
            op: Op::Append,
            chain: "OUTPUT",
            spec: vec!["-p".into(), "udp".into(), "-j".into(), "RETURN".into()],
        };
        assert_eq!(ns.run(&foreign).unwrap(), Output::success());
        let before = ns.tables.clone();

        let config = InitConfig::default();
        let first = execute(&install_plan(&config, BOTH), &mut ns).unwrap();
        let installed = ns.tables.clone();
        let v4 = &installed[&Family::V4];
        assert_eq!(v4.chains[INBOUND_CHAIN].len(), 2);
        assert_eq!(v4.chains[OUTBOUND_CHAIN].len(), 4);
        assert_eq!(v4.chains["PREROUTING"].len(), 1);
        assert_eq!(v4.chains["OUTPUT"].len(), 2);
        assert_eq!(
            first[&Family::V4],
            Changes { chains_created: 2, rules_added: 6, jumps_added: 2, ..Changes::default() }
        );

        let second = execute(&install_plan(&config, BOTH), &mut ns).unwrap();
        assert_eq!(ns.tables, installed, "installing twice changes nothing");
        assert_eq!(
            second[&Family::V6],
            Changes { chains_flushed: 2, rules_added: 6, jumps_present: 2, ..Changes::default() }
        );

        let removed = execute(&remove_plan(BOTH), &mut ns).unwrap();
        assert_eq!(ns.tables, before);
        assert_eq!(
            removed[&Family::V4],
            Changes { jumps_deleted: 2, chains_flushed: 2, chains_deleted: 2, ..Changes::default() }
        );
        assert!(removed[&Family::V6].removed_anything());
    }

    #[test]
    fn reinstall_with_other_settings_replaces_the_rules() {
        let mut ns = FakeNetns::new();
        let config = InitConfig { skip_outbound_ports: vec!["25".parse().unwrap()], ..InitConfig::default() };
        execute(&install_plan(&config, &[Family::V4]), &mut ns).unwrap();
        assert_eq!(ns.tables[&Family::V4].chains[OUTBOUND_CHAIN].len(), 5);
        execute(&install_plan(&InitConfig::default(), &[Family::V4]), &mut ns).unwrap();
        let mut fresh = FakeNetns::new();
        execute(&install_plan(&InitConfig::default(), &[Family::V4]), &mut fresh).unwrap();
        assert_eq!(ns.tables, fresh.tables);
    }

    #[test]
    fn remove_when_nothing_is_installed_is_a_successful_no_op() {
        let mut ns = FakeNetns::new();
        let before = ns.tables.clone();
        let changes = execute(&remove_plan(BOTH), &mut ns).unwrap();
        assert_eq!(ns.tables, before);
        assert!(changes.values().all(|c| !c.removed_anything()));
        // And removing twice after an install is fine too.
        execute(&install_plan(&InitConfig::default(), BOTH), &mut ns).unwrap();
        execute(&remove_plan(BOTH), &mut ns).unwrap();
        let again = execute(&remove_plan(BOTH), &mut ns).unwrap();
        assert!(again.values().all(|c| !c.removed_anything()));
        assert_eq!(ns.tables, before);
    }

    #[test]
    fn remove_deletes_duplicate_jumps() {
        let mut ns = FakeNetns::new();
        execute(&install_plan(&InitConfig::default(), &[Family::V4]), &mut ns).unwrap();
        let jump = IptablesCommand {
            family: Family::V4,
            op: Op::Append,
            chain: "PREROUTING",
            spec: ["-p", "tcp", "-j", INBOUND_CHAIN].map(String::from).to_vec(),
        };
        ns.run(&jump).unwrap();
        let changes = execute(&remove_plan(&[Family::V4]), &mut ns).unwrap();
        assert_eq!(changes[&Family::V4].jumps_deleted, 3);
        assert_eq!(ns.tables, FakeNetns::new().tables);
    }

    #[test]
    fn permission_failure_stops_at_the_first_command() {
        let mut ns = FakeNetns { root: false, ..FakeNetns::new() };
        for config in [InitConfig::default(), InitConfig { action: Action::Remove, ..InitConfig::default() }] {
            ns.log.clear();
            let plan = crate::init::rules::plan(&config, BOTH);
            let err = execute(&plan, &mut ns).unwrap_err();
            assert!(matches!(err, InitError::PermissionDenied { .. }), "{err}");
            assert_eq!(ns.log.len(), 1, "{:?}", ns.log);
            let text = err.to_string();
            assert!(text.contains("CAP_NET_ADMIN"), "{text}");
            assert!(text.contains(&ns.log[0]), "{text}");
        }
    }

    #[test]
    fn a_real_failure_shows_the_command_and_its_stderr() {
        struct Broken;
        impl Runner for Broken {
            fn run(&mut self, cmd: &IptablesCommand) -> Result<Output, InitError> {
                Ok(match cmd.op {
                    Op::NewChain => Output::success(),
                    _ => out(2, "iptables v1.8.9 (nf_tables): Couldn't load match `owner'"),
                })
            }
        }
        let err = execute(&install_plan(&InitConfig::default(), &[Family::V4]), &mut Broken).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("iptables -w 60 -t nat -A WEFT_INBOUND -p tcp -m multiport"), "{text}");
        assert!(text.contains("Couldn't load match `owner'"), "{text}");
        assert!(text.contains("exit status 2"), "{text}");
    }

    #[test]
    fn a_soft_failure_of_a_plain_step_is_still_an_error() {
        let mut ns = FakeNetns::new();
        // Appending to a chain that does not exist.
        let append = Step::Run(IptablesCommand {
            family: Family::V4,
            op: Op::Append,
            chain: INBOUND_CHAIN,
            spec: vec!["-j".into(), "RETURN".into()],
        });
        let err = execute(&[append], &mut ns).unwrap_err();
        assert!(matches!(err, InitError::CommandFailed { status: Some(1), .. }), "{err}");
    }

    #[test]
    fn a_missing_binary_is_reported_as_such() {
        let mut runner =
            SystemRunner::default().with_binary(Family::V4, PathBuf::from("/nonexistent/weft-test/iptables"));
        let err = execute(&install_plan(&InitConfig::default(), &[Family::V4]), &mut runner).unwrap_err();
        assert!(matches!(err, InitError::MissingBinary { .. }), "{err}");
        assert!(err.to_string().contains("apt-get install"), "{err}");
    }
}
