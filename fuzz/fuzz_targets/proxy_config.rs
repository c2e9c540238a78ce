//! The proxy's environment configuration (`weft_proxy::config`): the
//! `WEFT_PROXY_*` variables a manifest, an injected Pod or `weft up` sets.
//!
//! Input: `NAME=value` lines, as an env file. Tests pass settings as
//! values rather than through the process environment (config.rs does the
//! same), so each known name overrides its field of the defaults. The two
//! settings that name files to read (`WEFT_PROXY_TRUST_ANCHORS`,
//! `WEFT_PROXY_IDENTITY_TOKEN_FILE`) are left out: fuzzing them would read
//! arbitrary files of this machine, not parse bytes.
//!
//! Checks: no panic; every refusal lists its problems (at most one per
//! setting, and no more text than the values given can explain); an
//! accepted configuration keeps its documented invariants.
#![no_main]

use std::sync::OnceLock;

use clap::Parser as _;
use libfuzzer_sys::fuzz_target;
use weft_proxy::config::*;

#[derive(clap::Parser)]
struct Cli {
    #[command(flatten)]
    run: RunArgs,
}

fn defaults() -> &'static RunArgs {
    static DEFAULTS: OnceLock<RunArgs> = OnceLock::new();
    DEFAULTS.get_or_init(|| Cli::try_parse_from(["weft-proxy"]).expect("the defaults parse").run)
}

/// The field a variable sets; `None` for unknown names and the file paths.
fn field<'a>(args: &'a mut RunArgs, name: &str) -> Option<&'a mut String> {
    Some(match name {
        ENV_INBOUND_ADDR => &mut args.inbound_addr,
        ENV_OUTBOUND_ADDR => &mut args.outbound_addr,
        ENV_EXPLICIT_PROXY => &mut args.explicit_proxy,
        ENV_ADMIN_ADDR => &mut args.admin_addr,
        ENV_TAP_ADDR => &mut args.tap_addr,
        ENV_INBOUND_DETECT_TIMEOUT => &mut args.inbound_detect_timeout,
        ENV_OUTBOUND_DETECT_TIMEOUT => &mut args.outbound_detect_timeout,
        ENV_INBOUND_OPAQUE_PORTS => &mut args.inbound_opaque_ports,
        ENV_OUTBOUND_OPAQUE_PORTS => &mut args.outbound_opaque_ports,
        ENV_MAX_HEADER_BYTES => &mut args.max_header_bytes,
        ENV_HEADER_READ_TIMEOUT => &mut args.header_read_timeout,
        ENV_KEEP_ALIVE_TIMEOUT => &mut args.keep_alive_timeout,
        ENV_CONNECT_TIMEOUT => &mut args.connect_timeout,
        ENV_REQUEST_TIMEOUT => &mut args.request_timeout,
        ENV_TCP_IDLE_TIMEOUT => &mut args.tcp_idle_timeout,
        ENV_POOL_IDLE_TIMEOUT => &mut args.pool_idle_timeout,
        ENV_MAX_CONNECTIONS => &mut args.max_connections,
        ENV_DRAIN_TIMEOUT => &mut args.drain_timeout,
        ENV_WORKER_THREADS => &mut args.worker_threads,
        ENV_LOG => &mut args.log,
        ENV_CONTROL_PLANE => &mut args.control_plane,
        ENV_DISCOVERY_TIMEOUT => &mut args.discovery_timeout,
        ENV_POLICY_TIMEOUT => &mut args.policy_timeout,
        ENV_DEFAULT_INBOUND_POLICY => &mut args.default_inbound_policy,
        ENV_PROXY_ID => &mut args.proxy_id,
        ENV_NAMESPACE => &mut args.namespace,
        ENV_WORKLOAD_NAME => &mut args.workload_name,
        ENV_POD_NAME => &mut args.pod_name,
        ENV_SERVICE_ACCOUNT => &mut args.service_account,
        ENV_WORKLOAD_LABELS => &mut args.workload_labels,
        ENV_WORKLOAD_ADDRESS => &mut args.workload_address,
        ENV_WORKLOAD_PORTS => &mut args.workload_ports,
        ENV_DEREGISTER_GRACE => &mut args.deregister_grace,
        ENV_TRUST_ANCHORS_PEM => &mut args.trust_anchors_pem,
        ENV_TRUST_DOMAIN => &mut args.trust_domain,
        ENV_CONTROL_PLANE_NAME => &mut args.control_plane_name,
        _ => return None,
    })
}

/// Settings that can be refused one by one, plus the cross-field checks.
const MAX_PROBLEMS: usize = 48;

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else { return };
    let mut args = defaults().clone();
    for line in text.lines() {
        if let Some((name, value)) = line.split_once('=')
            && let Some(slot) = field(&mut args, name)
        {
            *slot = value.to_owned();
        }
    }
    match args.into_config() {
        Ok(c) => {
            let ports = [c.inbound_addr.port(), c.outbound_addr.port(), c.admin_addr.port()];
            assert!(ports[0] != ports[1] && ports[0] != ports[2] && ports[1] != ports[2], "{ports:?}");
            assert!((8 * 1024..=16 << 20).contains(&c.http.max_header_bytes));
            assert!((1..=64).contains(&c.worker_threads));
            assert!((1..=1 << 20).contains(&c.max_connections));
            assert!(!c.inbound.detect_timeout.is_zero() && !c.outbound.detect_timeout.is_zero());
            assert!(c.http.request_timeout.is_none_or(|d| !d.is_zero()));
            if let Some(control) = &c.control {
                assert!(control.url.starts_with("http://") || control.url.starts_with("https://"));
            }
        }
        Err(ConfigErrors(problems)) => {
            assert!(!problems.is_empty(), "refused without a reason");
            assert!(problems.len() <= MAX_PROBLEMS, "{} problems", problems.len());
            let said: usize = problems.iter().map(String::len).sum();
            // Values are quoted with `{:?}` (at most 10 bytes per input
            // byte, `\u{10ffff}`) and each appears in at most a few messages.
            assert!(said <= 30 * text.len() + 400 * MAX_PROBLEMS, "{said} bytes of errors for {} of input", text.len());
        }
    }
});
