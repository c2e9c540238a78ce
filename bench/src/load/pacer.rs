//! The open-loop clock: a dedicated OS thread that releases request `i` at
//! `start + i / rate`, whatever happened to the previous ones.
//!
//! tokio's timer has a resolution of one millisecond, coarser than the
//! 500 µs between requests at 2,000/s and than the latencies measured, so
//! the schedule is kept by `nanosleep` with the timer slack cut to 1 µs.
//! Each shot carries its intended time: latency is measured from it
//! (coordinated-omission correction), so a pacer that wakes late, or a
//! generator that falls behind, shows up in the figures instead of hiding.

use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

/// One request to send.
#[derive(Debug, Clone, Copy)]
pub struct Shot {
    /// When the request should have been sent.
    pub intended: Instant,
    /// False during warm-up: sent, but not recorded.
    pub measured: bool,
}

/// How late the pacer itself released the shots.
#[derive(Debug, Default, Clone, Copy)]
pub struct PacerStats {
    pub sent: u64,
    pub late_max: Duration,
    /// Shots released more than 1 ms after their intended time.
    pub late_over_1ms: u64,
}

/// Releases `warmup + measured` shots at `rate` per second from `start`,
/// then drops `tx` (which ends the receiving loop). Blocks; run it on its
/// own thread.
pub fn pace(tx: UnboundedSender<Shot>, start: Instant, rate: f64, warmup: u64, measured: u64) -> PacerStats {
    // Best effort: without it sleeps overshoot by up to 50 µs.
    let _ = nix::sys::prctl::set_timerslack(1_000);
    let mut stats = PacerStats::default();
    for i in 0..warmup + measured {
        let intended = start + Duration::from_secs_f64(i as f64 / rate);
        let now = Instant::now();
        if intended > now {
            std::thread::sleep(intended - now);
        }
        let late = Instant::now().saturating_duration_since(intended);
        stats.late_max = stats.late_max.max(late);
        if late > Duration::from_millis(1) {
            stats.late_over_1ms += 1;
        }
        if tx.send(Shot { intended, measured: i >= warmup }).is_err() {
            break;
        }
        stats.sent += 1;
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shots_follow_the_schedule_and_warmup_comes_first() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let start = Instant::now();
        let stats = pace(tx, start, 10_000.0, 3, 7);
        assert_eq!(stats.sent, 10);
        let shots: Vec<Shot> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        assert_eq!(shots.len(), 10);
        assert!(shots[..3].iter().all(|s| !s.measured) && shots[3..].iter().all(|s| s.measured));
        for (i, s) in shots.iter().enumerate() {
            assert_eq!(s.intended - start, Duration::from_secs_f64(i as f64 / 10_000.0));
        }
    }
}
