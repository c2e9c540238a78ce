//! Why `weft-proxy init` failed.

use std::io;

use thiserror::Error;

use super::config::ConfigErrors;

/// Why `init` failed. Every message says what to do about it.
#[derive(Debug, Error)]
pub enum InitError {
    /// One or more flags had bad values; all of them are listed.
    #[error(transparent)]
    Config(#[from] ConfigErrors),

    /// `iptables` or `ip6tables` is not installed.
    #[error(
        "`{binary}` was not found (looked in PATH, /usr/sbin, /sbin and /usr/local/sbin){}; install the Debian \
         package `iptables` (`apt-get install -y iptables`), which provides iptables and ip6tables",
        needed_for.as_deref().map(|why| format!(", and it is needed because {why}")).unwrap_or_default()
    )]
    MissingBinary {
        /// `iptables` or `ip6tables`.
        binary: String,
        /// Why this binary is needed, when that is not obvious.
        needed_for: Option<String>,
    },

    /// iptables refused: not root and no CAP_NET_ADMIN.
    #[error(
        "permission denied running `{command}`: changing iptables rules needs root or the \
         CAP_NET_ADMIN capability (with CAP_NET_RAW) in this network namespace, e.g. \
         `securityContext.capabilities.add: [NET_ADMIN, NET_RAW]` in an init container \
         (use --dry-run to see the rules without privileges)\n  iptables said: {stderr}"
    )]
    PermissionDenied {
        /// The command line that failed.
        command: String,
        /// Its stderr.
        stderr: String,
    },

    /// Another process held the xtables lock for longer than the `-w` wait.
    #[error(
        "`{command}` gave up waiting for the xtables lock (/run/xtables.lock), held by another \
         iptables user; retry, or find what holds it\n  iptables said: {stderr}"
    )]
    XtablesLock {
        /// The command line that failed.
        command: String,
        /// Its stderr.
        stderr: String,
    },

    /// A command failed for another reason.
    #[error(
        "`{command}` failed ({}){}",
        status.map_or_else(|| "killed by a signal".to_owned(), |s| format!("exit status {s}")),
        if stderr.is_empty() { String::new() } else { format!(":\n  {stderr}") }
    )]
    CommandFailed {
        /// The command line that failed.
        command: String,
        /// Its exit status, `None` if killed by a signal.
        status: Option<i32>,
        /// Its stderr.
        stderr: String,
    },

    /// A command could not be started.
    #[error("could not run `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// What the OS said.
        source: io::Error,
    },

    /// Writing the `--dry-run` output or the summary failed.
    #[error("could not write the output: {0}")]
    Output(#[source] io::Error),
}

impl InitError {
    pub(crate) fn missing_binary(binary: &str, needed_for: Option<String>) -> Self {
        Self::MissingBinary { binary: binary.to_owned(), needed_for }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages() {
        let err = InitError::missing_binary("ip6tables", Some("--ipv6 is on".into()));
        assert_eq!(
            err.to_string(),
            "`ip6tables` was not found (looked in PATH, /usr/sbin, /sbin and /usr/local/sbin), and it is needed \
             because --ipv6 is on; install the Debian package `iptables` (`apt-get install -y \
             iptables`), which provides iptables and ip6tables"
        );
        let err = InitError::CommandFailed {
            command: "iptables -w 60 -t nat -X WEFT_INBOUND".into(),
            status: Some(4),
            stderr: "CHAIN_DEL failed (Device or resource busy)".into(),
        };
        assert_eq!(
            err.to_string(),
            "`iptables -w 60 -t nat -X WEFT_INBOUND` failed (exit status 4):\n  CHAIN_DEL failed (Device or resource busy)"
        );
        let err = InitError::CommandFailed { command: "iptables".into(), status: None, stderr: String::new() };
        assert_eq!(err.to_string(), "`iptables` failed (killed by a signal)");
    }
}
