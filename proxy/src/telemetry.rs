//! Logging setup. Logs go to stderr as text; the filter comes from `--log`.

/// Installs the global tracing subscriber. The filter was validated by the
/// config, so a failure here only means a subscriber is already installed
/// (as in tests), which is fine to ignore.
pub fn init_logging(filter: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).try_init();
}
