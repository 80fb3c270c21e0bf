//! A lock-free latency histogram for the live display: every thread records into shared
//! atomic buckets and the reporter empties them once a second to read that second's p99.
//! Coarse on purpose (buckets at most 1/16 wide); the summary uses exact HdrHistograms.

use std::sync::atomic::{AtomicU64, Ordering};

/// Sub-buckets per power of two: 2^4 = 16, so a bucket spans at most 1/16 of its values.
const SUB_BUCKET_BITS: u32 = 4;
const SUB_BUCKETS: u64 = 1 << SUB_BUCKET_BITS;
/// Latencies (us) from here up (about 134 s) share the top bucket.
const MAX_VALUE: u64 = (1 << 27) - 1;
const BUCKETS: usize = bucket_of(MAX_VALUE) + 1;

/// Log-linear bucket index: exact below 16, then 16 buckets per power of two.
const fn bucket_of(value: u64) -> usize {
    if value < SUB_BUCKETS {
        return value as usize;
    }
    let magnitude = 63 - value.leading_zeros();
    let shift = magnitude - SUB_BUCKET_BITS;
    ((shift as u64 + 1) * SUB_BUCKETS + ((value >> shift) & (SUB_BUCKETS - 1))) as usize
}

/// The largest value that lands in `bucket`.
fn highest_in(bucket: usize) -> u64 {
    let bucket = bucket as u64;
    if bucket < SUB_BUCKETS {
        return bucket;
    }
    let shift = bucket / SUB_BUCKETS - 1;
    let lowest = (SUB_BUCKETS + bucket % SUB_BUCKETS) << shift;
    lowest + (1 << shift) - 1
}

#[derive(Debug)]
pub struct LiveLatency {
    counts: [AtomicU64; BUCKETS],
    /// Exact worst value, so the display's max is not rounded to a bucket.
    max: AtomicU64,
}

impl Default for LiveLatency {
    fn default() -> Self {
        LiveLatency {
            counts: [const { AtomicU64::new(0) }; BUCKETS],
            max: AtomicU64::new(0),
        }
    }
}

impl LiveLatency {
    pub fn record(&self, value_us: u64) {
        self.counts[bucket_of(value_us.min(MAX_VALUE))].fetch_add(1, Ordering::Relaxed);
        self.max.fetch_max(value_us, Ordering::Relaxed);
    }

    /// Empties the buckets and returns what they held. Records racing with this land in
    /// either this period or the next, which is fine for a display.
    pub fn take(&self) -> LatencyPeriod {
        LatencyPeriod {
            counts: self
                .counts
                .iter()
                .map(|c| c.swap(0, Ordering::Relaxed))
                .collect(),
            max_us: self.max.swap(0, Ordering::Relaxed),
        }
    }
}

/// The latencies recorded over one reporting period.
#[derive(Debug)]
pub struct LatencyPeriod {
    counts: Vec<u64>,
    max_us: u64,
}

impl LatencyPeriod {
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The smallest bucket bound that at least `quantile` of the values are at or under
    /// (never above the exact max); None when nothing was recorded.
    pub fn quantile_us(&self, quantile: f64) -> Option<u64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((quantile * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (bucket, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(highest_in(bucket).min(self.max_us));
            }
        }
        Some(self.max_us)
    }

    pub fn max_us(&self) -> Option<u64> {
        (self.count() > 0).then_some(self.max_us)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_bounded_by_their_highest_value() {
        let mut last = 0;
        for value in 0..100_000u64 {
            let bucket = bucket_of(value);
            assert!(bucket == last || bucket == last + 1, "gap at {value}");
            assert!(highest_in(bucket) >= value);
            // A bucket is at most 1/16 of its values wide.
            assert!(highest_in(bucket) - value <= value / SUB_BUCKETS);
            last = bucket;
        }
        assert_eq!(bucket_of(MAX_VALUE), BUCKETS - 1);
        assert_eq!(highest_in(BUCKETS - 1), MAX_VALUE);
    }

    #[test]
    fn p99_of_a_uniform_second_is_close_to_exact() {
        let live = LiveLatency::default();
        for us in 1..=10_000 {
            live.record(us);
        }
        let period = live.take();
        assert_eq!(period.count(), 10_000);
        let p99 = period.quantile_us(0.99).unwrap_or(0);
        assert!((9_900..=9_900 + 9_900 / 16).contains(&p99), "p99 {p99}");
        assert_eq!(period.max_us(), Some(10_000));
        assert_eq!(period.quantile_us(1.0), Some(10_000));
    }

    #[test]
    fn take_starts_a_new_period() {
        let live = LiveLatency::default();
        live.record(5_000);
        assert_eq!(live.take().max_us(), Some(5_000));
        let empty = live.take();
        assert_eq!(empty.quantile_us(0.99), None);
        assert_eq!(empty.max_us(), None);
        live.record(7);
        assert_eq!(live.take().quantile_us(0.99), Some(7));
    }

    #[test]
    fn huge_values_share_the_top_bucket_but_keep_an_exact_max() {
        let live = LiveLatency::default();
        live.record(u64::MAX / 2);
        let period = live.take();
        assert_eq!(period.quantile_us(0.5), Some(MAX_VALUE));
        assert_eq!(period.max_us(), Some(u64::MAX / 2));
    }
}
