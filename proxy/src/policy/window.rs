//! A sliding window of two counters in a fixed ring of time slots, shared
//! by the retry budget (requests, retries) and the circuit breaker
//! (successes, failures). Precision is one slot, `window / SLOTS`: an event
//! counts for between `window - slot` and `window` after it happened. The
//! ring never grows, whatever the traffic.

use std::time::{Duration, Instant};

/// Slots per window.
pub const SLOTS: usize = 10;

#[derive(Clone, Copy, Debug)]
struct Slot {
    /// Slot number since `origin`; `u64::MAX` for never used.
    epoch: u64,
    a: u64,
    b: u64,
}

#[derive(Clone, Debug)]
pub struct Window {
    origin: Instant,
    slot_nanos: u64,
    slots: [Slot; SLOTS],
}

impl Window {
    pub fn new(origin: Instant, window: Duration) -> Self {
        let slot_nanos = u64::try_from(window.as_nanos() / SLOTS as u128).unwrap_or(u64::MAX).max(1);
        Self { origin, slot_nanos, slots: [Slot { epoch: u64::MAX, a: 0, b: 0 }; SLOTS] }
    }

    fn epoch(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.origin).as_nanos() / u128::from(self.slot_nanos))
            .unwrap_or(u64::MAX - 1)
    }

    pub fn add(&mut self, now: Instant, a: u64, b: u64) {
        let e = self.epoch(now);
        let slot = &mut self.slots[(e % SLOTS as u64) as usize];
        if slot.epoch != e {
            *slot = Slot { epoch: e, a: 0, b: 0 };
        }
        slot.a = slot.a.saturating_add(a);
        slot.b = slot.b.saturating_add(b);
    }

    /// Both counters summed over the window ending at `now`.
    pub fn totals(&self, now: Instant) -> (u64, u64) {
        let e = self.epoch(now);
        self.slots
            .iter()
            .filter(|s| s.epoch <= e && e - s.epoch < SLOTS as u64)
            .fold((0, 0), |(a, b), s| (a.saturating_add(s.a), b.saturating_add(s.b)))
    }

    pub fn clear(&mut self) {
        for s in &mut self.slots {
            s.epoch = u64::MAX;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_expire_slot_by_slot() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut w = Window::new(t0, s(10));
        w.add(t0, 1, 0);
        w.add(t0 + s(5), 0, 2);
        assert_eq!(w.totals(t0 + s(5)), (1, 2));
        assert_eq!(w.totals(t0 + Duration::from_millis(9999)), (1, 2));
        assert_eq!(w.totals(t0 + s(10)), (0, 2), "the first slot left the window");
        assert_eq!(w.totals(t0 + s(15)), (0, 0));
        // A slot reused after a lap starts from zero.
        w.add(t0 + s(20), 5, 0);
        assert_eq!(w.totals(t0 + s(20)), (5, 0));
        // Time before the origin or going backwards never panics.
        assert_eq!(w.totals(t0 - s(1)), (0, 0));
        w.clear();
        assert_eq!(w.totals(t0 + s(20)), (0, 0));
        let mut tiny = Window::new(t0, Duration::ZERO);
        tiny.add(t0 + s(1), 1, 1);
        assert_eq!(tiny.totals(t0 + s(1)), (1, 1));
    }
}
