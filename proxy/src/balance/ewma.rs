//! Peak-EWMA latency estimate (Finagle's and Linkerd's load metric).

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Decay time constant: how long a past latency keeps influencing the
/// estimate. Linkerd uses 10 s; with that, one latency blip on an endpoint
/// made it lose every duel against an equally fast one for seconds in our
/// three-replica test, so a shorter memory is used.
const DECAY: Duration = Duration::from_secs(2);
/// Largest factor by which one sample can raise the estimate.
const PEAK_STEP: f64 = 2.0;
/// Estimate for an endpoint with no samples yet when nothing better is
/// known, in microseconds (Linkerd's default RTT: 30 ms).
pub const DEFAULT_RTT_MICROS: f64 = 30_000.0;

#[derive(Debug)]
pub struct PeakEwma(Mutex<State>);

#[derive(Debug)]
struct State {
    micros: f64,
    updated: Option<Instant>,
}

impl Default for PeakEwma {
    fn default() -> Self {
        Self(Mutex::new(State { micros: DEFAULT_RTT_MICROS, updated: None }))
    }
}

impl PeakEwma {
    /// The estimate now, in microseconds. It decays toward zero while no
    /// sample arrives (as tower's `PeakEwma` does), so an endpoint that was
    /// slow once is probed again instead of being shunned forever.
    /// `None` until the first sample.
    pub fn get(&self, now: Instant) -> Option<f64> {
        let s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        s.updated.map(|prev| s.micros * decay(now.saturating_duration_since(prev)))
    }

    /// Folds in a latency sample: a sample above the estimate replaces it
    /// (peak); a lower one is blended in with weight growing with the time
    /// since the last sample.
    pub fn observe(&self, now: Instant, latency: Duration) {
        let sample = latency.as_secs_f64() * 1e6;
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match s.updated {
            None => s.micros = sample,
            Some(prev) => {
                if sample > s.micros {
                    // One outlier at most doubles the estimate; a sustained
                    // slowdown still reaches its level within a few samples.
                    s.micros = sample.min(s.micros * PEAK_STEP);
                } else {
                    let w = decay(now.saturating_duration_since(prev));
                    s.micros = s.micros * w + sample * (1.0 - w);
                }
            }
        }
        s.updated = Some(now);
    }
}

fn decay(elapsed: Duration) -> f64 {
    (-elapsed.as_secs_f64() / DECAY.as_secs_f64()).exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peaks_jump_and_decay_slowly() {
        let e = PeakEwma::default();
        let t0 = Instant::now();
        assert_eq!(e.get(t0), None);
        e.observe(t0, Duration::from_millis(1));
        assert_eq!(e.get(t0), Some(1000.0));
        e.observe(t0 + Duration::from_millis(10), Duration::from_millis(50));
        assert_eq!(e.get(t0), Some(2000.0), "a peak at most doubles the estimate");
        for i in 0..5 {
            e.observe(t0 + Duration::from_millis(11 + i), Duration::from_millis(50));
        }
        assert_eq!(e.get(t0), Some(50_000.0), "a sustained peak is reached");
        // One decay constant later a fast sample pulls it ~63 % of the way.
        e.observe(t0 + Duration::from_millis(15) + DECAY, Duration::from_millis(1));
        let v = e.get(t0).expect("sampled");
        let expected = 50_000.0 * (-1.0f64).exp() + 1000.0 * (1.0 - (-1.0f64).exp());
        assert!((v - expected).abs() < 1.0, "{v} vs {expected}");
        // Without samples the estimate decays toward zero.
        let later = t0 + Duration::from_millis(15) + DECAY * 2;
        assert!((e.get(later).expect("sampled") - v * (-1.0f64).exp()).abs() < 1.0);
    }
}
