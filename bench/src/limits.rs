//! File-descriptor limit: 10,000 idle connections through a proxy pair take
//! about 20,000 descriptors in the outbound proxy alone (downstream and
//! upstream sockets), past the usual 1,024 or 20,000 soft limits.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// The limit asked for when running as root, which may raise the hard limit.
pub const WANT_NOFILE: u64 = 65_536;

/// Raises RLIMIT_NOFILE: the soft limit to the hard one, and both to
/// [`WANT_NOFILE`] when allowed (root). Children inherit it: the proxies,
/// haproxy, the app and the generators started after this call. Returns
/// the soft limit now in force.
pub fn raise_nofile() -> u64 {
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 0;
    };
    if soft >= WANT_NOFILE {
        return soft;
    }
    let (new_soft, new_hard) = if hard >= WANT_NOFILE { (WANT_NOFILE, hard) } else { (WANT_NOFILE, WANT_NOFILE) };
    if setrlimit(Resource::RLIMIT_NOFILE, new_soft, new_hard).is_ok() {
        return new_soft;
    }
    // Not root: as far as the hard limit allows.
    if setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() { hard } else { soft }
}
