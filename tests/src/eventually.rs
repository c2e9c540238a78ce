//! Waiting without sleeping for a guessed time: poll a check until it holds or
//! a deadline passes, then fail with the last reason it did not hold.

use std::time::{Duration, Instant};

/// How often [`eventually`] re-runs its check.
const POLL: Duration = Duration::from_millis(25);

/// Runs `check` until it returns `Ok`, and returns that value. Panics with
/// `what` and the last error if it has not succeeded `within` the deadline.
#[track_caller]
pub fn eventually<T>(within: Duration, what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + within;
    loop {
        match check() {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("{what}: still not true after {within:?}; last check: {last}")
            }
            Err(_) => std::thread::sleep(POLL),
        }
    }
}
