//! What `init` needs to know about the namespace and the machine: whether
//! the namespace has IPv6, and where the iptables binaries are. Reading
//! these is separate from deciding on them ([`select_families`]) so that the
//! decision can be tested.

use std::net::Ipv6Addr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use super::config::{InitConfig, Ipv6Mode};
use super::error::InitError;
use super::rules::Family;

/// Where the kernel lists the namespace's IPv6 addresses.
pub const IF_INET6: &str = "/proc/net/if_inet6";

/// Directories searched after `PATH`: iptables lives in sbin, which a
/// non-login shell's `PATH` may lack.
const SBIN_DIRS: [&str; 3] = ["/usr/sbin", "/sbin", "/usr/local/sbin"];

/// The facts [`select_families`] decides on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Probe {
    /// An IPv6 address of the namespace other than `::1`, if any.
    pub ipv6_address: Option<Ipv6Addr>,
    /// Where `iptables` is.
    pub iptables: Option<PathBuf>,
    /// Where `ip6tables` is.
    pub ip6tables: Option<PathBuf>,
}

impl Probe {
    /// Looks at the current network namespace and the filesystem.
    pub fn system() -> Self {
        Self {
            ipv6_address: std::fs::read_to_string(IF_INET6).ok().and_then(|text| non_loopback_ipv6(&text)),
            iptables: find_binary(Family::V4.binary()),
            ip6tables: find_binary(Family::V6.binary()),
        }
    }

    /// The binary found for `family`.
    pub fn binary(&self, family: Family) -> Option<&Path> {
        match family {
            Family::V4 => self.iptables.as_deref(),
            Family::V6 => self.ip6tables.as_deref(),
        }
    }
}

/// The first address in `/proc/net/if_inet6` text other than `::1`. Each
/// line is `ADDRESS(32 hex digits) IFINDEX PREFIXLEN SCOPE FLAGS IFNAME`.
pub fn non_loopback_ipv6(if_inet6: &str) -> Option<Ipv6Addr> {
    if_inet6
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter_map(|hex| u128::from_str_radix(hex, 16).ok().filter(|_| hex.len() == 32))
        .map(Ipv6Addr::from)
        .find(|addr| !addr.is_loopback())
}

/// Finds an executable named `name` in `PATH`, then in the sbin directories.
pub fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(SBIN_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// Which families to act on: IPv4 always, IPv6 per `--ipv6`. `--remove`
/// chooses the same way, as rules are only ever installed for a family chosen
/// so. Outside a dry run, the binary of every chosen family must exist.
pub fn select_families(config: &InitConfig, probe: &Probe) -> Result<Vec<Family>, InitError> {
    let ipv6_reason = match (config.ipv6, probe.ipv6_address) {
        (Ipv6Mode::Off, _) | (Ipv6Mode::Auto, None) => None,
        (Ipv6Mode::On, _) => Some("--ipv6 is on".to_owned()),
        (Ipv6Mode::Auto, Some(addr)) => Some(format!(
            "this network namespace has the IPv6 address {addr} and --ipv6 is auto (pass \
             --ipv6 off to leave IPv6 alone)"
        )),
    };
    let mut families = vec![(Family::V4, None)];
    if let Some(reason) = ipv6_reason {
        families.push((Family::V6, Some(reason)));
    }
    if !config.dry_run {
        for (family, reason) in &families {
            if probe.binary(*family).is_none() {
                return Err(InitError::missing_binary(family.binary(), reason.clone()));
            }
        }
    }
    Ok(families.into_iter().map(|(family, _)| family).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const IF_INET6_SAMPLE: &str = "\
fe8000000000000000fc00fffe000001 04 40 20 80     eth0
00000000000000000000000000000001 01 80 10 80       lo
fd000000000000000000000000000002 04 40 00 82     eth0
";

    #[test]
    fn ipv6_detection() {
        let cases: &[(&str, Option<&str>)] = &[
            ("", None),
            ("00000000000000000000000000000001 01 80 10 80       lo\n", None),
            (IF_INET6_SAMPLE, Some("fe80::fc:ff:fe00:1")),
            (
                "00000000000000000000000000000001 01 80 10 80 lo\nfd000000000000000000000000000002 04 40 00 82 v0\n",
                Some("fd00::2"),
            ),
            ("garbage\nzz 1 2 3\n", None),
            // A truncated address is not mistaken for one.
            ("fd00 04 40 00 82 v0\n", None),
        ];
        for (text, want) in cases {
            let want = want.map(|a| a.parse::<Ipv6Addr>().unwrap());
            assert_eq!(non_loopback_ipv6(text), want, "{text:?}");
        }
    }

    fn probe(ipv6: bool, iptables: bool, ip6tables: bool) -> Probe {
        Probe {
            ipv6_address: ipv6.then(|| "fd00::2".parse().unwrap()),
            iptables: iptables.then(|| "/usr/sbin/iptables".into()),
            ip6tables: ip6tables.then(|| "/usr/sbin/ip6tables".into()),
        }
    }

    #[test]
    fn family_selection() {
        use Family::{V4, V6};
        use Ipv6Mode::{Auto, Off, On};
        // (mode, has v6 address, ip6tables installed, dry run) -> families or missing binary
        let cases: &[(Ipv6Mode, bool, bool, bool, Result<&[Family], &str>)] = &[
            (Auto, false, true, false, Ok(&[V4])),
            (Auto, true, true, false, Ok(&[V4, V6])),
            (Auto, true, false, false, Err("fd00::2 and --ipv6 is auto")),
            (Auto, true, false, true, Ok(&[V4, V6])),
            (Auto, false, false, false, Ok(&[V4])),
            (On, false, true, false, Ok(&[V4, V6])),
            (On, false, false, false, Err("--ipv6 is on")),
            (On, false, false, true, Ok(&[V4, V6])),
            (Off, true, true, false, Ok(&[V4])),
            (Off, true, false, false, Ok(&[V4])),
        ];
        for &(mode, addr, ip6tables, dry_run, ref want) in cases {
            let config = InitConfig { ipv6: mode, dry_run, ..InitConfig::default() };
            let got = select_families(&config, &probe(addr, true, ip6tables));
            let case = format!("{mode} addr={addr} ip6tables={ip6tables} dry_run={dry_run}");
            match (want, got) {
                (Ok(want), Ok(got)) => assert_eq!(&got, want, "{case}"),
                (Err(reason), Err(err)) => {
                    let text = err.to_string();
                    assert!(text.starts_with("`ip6tables` was not found"), "{case}: {text}");
                    assert!(text.contains(reason), "{case}: {text}");
                }
                (want, got) => panic!("{case}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn missing_iptables_is_an_error_except_in_a_dry_run() {
        let err = select_families(&InitConfig::default(), &probe(false, false, false)).unwrap_err();
        assert!(matches!(err, InitError::MissingBinary { ref binary, .. } if binary == "iptables"));
        let dry = InitConfig { dry_run: true, ..InitConfig::default() };
        assert_eq!(select_families(&dry, &probe(false, false, false)).unwrap(), [Family::V4]);
    }

    #[test]
    fn finds_binaries_in_path_or_sbin() {
        assert!(find_binary("sh").is_some());
        assert_eq!(find_binary("weft-no-such-binary-here"), None);
    }
}
