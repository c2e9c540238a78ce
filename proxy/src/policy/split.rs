//! Weighted backend choice for a route (canary, blue/green, A/B by weight).
//!
//! Weights are relative (`90`/`10` sends 90 % to the first); a backend of
//! weight 0 never receives a request; when every weight is 0 there is no
//! backend and the caller answers 500, as the Gateway API says for a rule
//! whose backends cannot take traffic. The cumulative weights are computed
//! once per policy; a pick is one multiplication and a binary search.

use weft_api::policy as api;

/// The cumulative weights of a route's backends.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Split {
    /// `cumulative[i]` = sum of the weights of backends `0..=i`.
    cumulative: Box<[u64]>,
}

impl Split {
    pub fn new(weights: impl IntoIterator<Item = u32>) -> Self {
        let mut sum = 0u64;
        let cumulative = weights
            .into_iter()
            .map(|w| {
                sum += u64::from(w);
                sum
            })
            .collect();
        Self { cumulative }
    }

    /// The split over a route's backends, in their order.
    pub fn of_backends(backends: &[api::Backend]) -> Self {
        Self::new(backends.iter().map(|b| b.weight))
    }

    /// Sum of the weights; 0 means no backend can be chosen.
    pub fn total(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(0)
    }

    /// The index of the chosen backend for a uniformly random `random`, or
    /// `None` when every weight is 0 (answer 500). Backend `i` is chosen for
    /// exactly `weight_i / total` of the `u32` range.
    pub fn pick(&self, random: u32) -> Option<usize> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        // total ≤ 2^32 × n backends; the product fits in u128 comfortably.
        let target = u64::try_from((u128::from(random) * u128::from(total)) >> 32).unwrap_or(u64::MAX);
        let i = self.cumulative.partition_point(|&c| c <= target);
        (i < self.cumulative.len()).then_some(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts picks over `n` random values, the midpoints of `n` equal
    /// slices of the `u32` range.
    fn sweep(split: &Split, n: u64, backends: usize) -> Vec<u64> {
        let mut counts = vec![0; backends];
        for k in 0..n {
            let r = u32::try_from(((2 * k + 1) << 31) / n).unwrap();
            counts[split.pick(r).unwrap()] += 1;
        }
        counts
    }

    #[test]
    fn distribution_is_exact() {
        // (weights, sweep size, expected counts)
        let cases: &[(&[u32], u64, &[u64])] = &[
            (&[90, 10], 1000, &[900, 100]),
            (&[1, 1], 1000, &[500, 500]),
            (&[0, 100], 1000, &[0, 1000]),
            (&[100, 0], 1000, &[1000, 0]),
            (&[1, 2, 3, 4], 1000, &[100, 200, 300, 400]),
            (&[0, 1, 0, 3, 0], 400, &[0, 100, 0, 300, 0]),
            (&[1], 7, &[7]),
            (&[1_000_000, 1], 1_000_001, &[1_000_000, 1]),
            (&[u32::MAX, u32::MAX], 1024, &[512, 512]),
        ];
        for (weights, n, want) in cases {
            let split = Split::new(weights.iter().copied());
            assert_eq!(sweep(&split, *n, weights.len()), *want, "{weights:?}");
        }
    }

    #[test]
    fn zero_weight_never_chosen_even_at_the_edges() {
        let split = Split::new([0, 5, 0, 5, 0]);
        for r in [0, 1, u32::MAX / 2 - 1, u32::MAX / 2, u32::MAX / 2 + 1, u32::MAX - 1, u32::MAX] {
            assert!(matches!(split.pick(r), Some(1 | 3)), "{r}");
        }
        assert_eq!(split.pick(0), Some(1));
        assert_eq!(split.pick(u32::MAX), Some(3));
    }

    #[test]
    fn no_weight_no_backend() {
        assert_eq!(Split::new([0, 0]).pick(123), None);
        assert_eq!(Split::new([]).pick(0), None);
        assert_eq!(Split::of_backends(&[]).total(), 0);
        let b = |w| api::Backend { service: "web.default".into(), port: 80, weight: w, filters: Vec::new() };
        assert_eq!(Split::of_backends(&[b(0), b(0)]).pick(u32::MAX), None);
        assert_eq!(Split::of_backends(&[b(0), b(3)]).pick(0), Some(1));
    }
}
