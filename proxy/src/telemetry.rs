//! Logging setup. Logs go to stderr as text; the filter comes from `--log`.

/// Installs the global tracing subscriber. The filter was validated by the
/// config, so a failure here only means a subscriber is already installed
/// (as in tests), which is fine to ignore.
pub fn init_logging(filter: &str) {
    let filter = log_filter(filter).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).try_init();
}

/// The filter `--log` names (`EnvFilter` directives). Field values match as
/// literal strings, not regexes: tracing-subscriber compiles a value regex
/// into a full DFA, which a mistyped (or hostile) filter can make take
/// minutes to build, hanging the proxy at start-up (found by the fuzz
/// target `proxy_config`, issue #14).
pub fn log_filter(directives: &str) -> Result<tracing_subscriber::EnvFilter, tracing_subscriber::filter::ParseError> {
    tracing_subscriber::EnvFilter::builder().with_regex(false).parse(directives)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn a_field_value_is_a_literal_and_parses_at_once() {
        // The fuzzer's input: 72 dots in a field value made a regex whose
        // DFA took over a minute to build.
        let hostile = format!("[{{aONNECTICTIONS=E{}FT_\u{0}\u{3}OG=[{{a=1}}.]", ".".repeat(72));
        let started = Instant::now();
        let _ = log_filter(&hostile);
        assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
        assert!(log_filter("info,weft_proxy=debug,[request{path=/a.b}]=trace").is_ok());
        assert!(log_filter("=nonsense=").is_err());
    }
}
