//! How many TCP connections came into a pod from outside it during a run,
//! from the pod's `/proc/net/snmp` (per network namespace).
//!
//! The server pod's kernel counts a connection it accepts in `PassiveOpens`
//! and one it opens in `ActiveOpens`. Its own loopback connections (the
//! inbound proxy or a peer's server side to the app) count once in each,
//! so `ΔPassiveOpens − ΔActiveOpens` is what arrived from the client pod:
//! the generator's own connections in the direct setup, and the client-side
//! proxy's upstream connections in every proxied one. That is the figure
//! that shows whether a proxy shares kept-alive upstream connections across
//! its clients' connections.

use anyhow::Context as _;
use weft_tests::Pod;

/// `Tcp: ActiveOpens` and `PassiveOpens` of one network namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opens {
    pub active: u64,
    pub passive: u64,
}

impl Opens {
    /// Connections that came in from other namespaces between `before` and
    /// `self` (see the module's docs).
    pub fn arrived_since(self, before: Opens) -> u64 {
        let passive = self.passive.saturating_sub(before.passive);
        let active = self.active.saturating_sub(before.active);
        passive.saturating_sub(active)
    }
}

/// Reads the counters of `pod`'s namespace.
pub fn read(pod: &Pod) -> anyhow::Result<Opens> {
    let run = pod.exec("cat", &["/proc/net/snmp"]);
    anyhow::ensure!(run.status.success(), "reading /proc/net/snmp in pod {}:\n{run}", pod.name());
    parse(&run.stdout)
        .with_context(|| format!("pod {}'s /proc/net/snmp has no Tcp ActiveOpens/PassiveOpens", pod.name()))
}

/// The `Tcp:` header line names the fields of the `Tcp:` line after it.
fn parse(snmp: &str) -> Option<Opens> {
    let mut tcp = snmp.lines().filter_map(|l| l.strip_prefix("Tcp:"));
    let names: Vec<&str> = tcp.next()?.split_whitespace().collect();
    let values: Vec<&str> = tcp.next()?.split_whitespace().collect();
    let field = |name: &str| values.get(names.iter().position(|n| *n == name)?)?.parse().ok();
    Some(Opens { active: field("ActiveOpens")?, passive: field("PassiveOpens")? })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SNMP: &str = "\
Ip: Forwarding DefaultTTL InReceives
Ip: 1 64 1234
Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab
Tcp: 1 200 120000 -1 57 43 0 1 3
Udp: InDatagrams NoPorts
Udp: 0 0
";

    #[test]
    fn reads_the_tcp_counters_by_name() {
        assert_eq!(parse(SNMP), Some(Opens { active: 57, passive: 43 }));
        assert_eq!(parse("Ip: Forwarding\nIp: 1\n"), None);
        assert_eq!(parse("Tcp: ActiveOpens\nTcp: 5\n"), None, "no PassiveOpens");
    }

    #[test]
    fn loopback_connections_cancel_out() {
        let before = Opens { active: 10, passive: 10 };
        // 3 from the client pod, each proxied to the app over loopback.
        assert_eq!(Opens { active: 13, passive: 16 }.arrived_since(before), 3);
        // Only loopback.
        assert_eq!(Opens { active: 12, passive: 12 }.arrived_since(before), 0);
        // Counters never go back; if they did, nothing arrived.
        assert_eq!(Opens { active: 9, passive: 9 }.arrived_since(before), 0);
    }
}
