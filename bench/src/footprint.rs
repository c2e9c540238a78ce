//! What a process costs, from `/proc/PID`: resident memory now (`VmRSS`)
//! and at peak (`VmHWM`, which `clear_refs` resets so that each run has its
//! own peak), and CPU time (`utime + stime` from `stat`, in clock ticks).

use std::io;

use serde::{Deserialize, Serialize};

/// Memory figures in KiB, as `/proc/PID/status` gives them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memory {
    pub rss_kib: u64,
    pub hwm_kib: u64,
    /// `RssAnon`: the process's own memory (heap, stacks), as opposed to
    /// file pages (the binary's text, shared libraries), which every
    /// process of the same binary on a node shares. `None` before Linux 4.5.
    pub anon_kib: Option<u64>,
}

/// Reads `VmRSS` and `VmHWM` of `pid`.
pub fn memory(pid: u32) -> io::Result<Memory> {
    parse_status(&std::fs::read_to_string(format!("/proc/{pid}/status"))?)
        .ok_or_else(|| io::Error::other(format!("/proc/{pid}/status has no VmRSS/VmHWM (a kernel thread?)")))
}

fn parse_status(text: &str) -> Option<Memory> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    };
    Some(Memory { rss_kib: field("VmRSS:")?, hwm_kib: field("VmHWM:")?, anon_kib: field("RssAnon:") })
}

/// `utime + stime` of `pid` (all its threads), in clock ticks.
pub fn cpu_ticks(pid: u32) -> io::Result<u64> {
    parse_stat_cpu(&std::fs::read_to_string(format!("/proc/{pid}/stat"))?)
        .ok_or_else(|| io::Error::other(format!("cannot parse /proc/{pid}/stat")))
}

fn parse_stat_cpu(text: &str) -> Option<u64> {
    // `pid (comm) state ...`: comm may hold spaces and parentheses, so
    // split after the last ')'. Fields 14 and 15 (1-based) are utime and
    // stime; after the split, field 3 (state) is index 0.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second (`getconf CLK_TCK`, 100 on Linux).
pub fn ticks_per_second() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|t| u64::try_from(t).ok())
        .filter(|t| *t > 0)
        .unwrap_or(100)
}

/// Resets the peak RSS (`VmHWM`) of `pid` to its current RSS (Linux ≥ 4.0,
/// `echo 5 > /proc/PID/clear_refs`; needs root for another user's process).
pub fn reset_peak(pid: u32) -> io::Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_stat() {
        let status = "Name:\tweft-proxy\nVmPeak:\t  20000 kB\nVmHWM:\t    8120 kB\nVmRSS:\t    7004 kB\n";
        assert_eq!(parse_status(status), Some(Memory { rss_kib: 7004, hwm_kib: 8120, anon_kib: None }));
        let status = format!("{status}RssAnon:\t     664 kB\nRssFile:\t    6340 kB\n");
        assert_eq!(parse_status(&status), Some(Memory { rss_kib: 7004, hwm_kib: 8120, anon_kib: Some(664) }));
        assert_eq!(parse_status("Name:\tkthreadd\n"), None);

        let stat = "4242 (weft (proxy)) S 1 4242 4242 0 -1 4194560 900 0 0 0 17 5 0 0 20 0 2 0 123 456";
        assert_eq!(parse_stat_cpu(stat), Some(22));
        assert_eq!(parse_stat_cpu("garbage"), None);
    }

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        let m = memory(pid).unwrap();
        assert!(m.rss_kib > 0 && m.hwm_kib >= m.rss_kib, "{m:?}");
        cpu_ticks(pid).unwrap();
        assert!(ticks_per_second() >= 100);
    }
}
