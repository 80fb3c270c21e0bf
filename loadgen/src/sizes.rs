//! Message text sizes: every message `--size` bytes, or sizes drawn from an exponential
//! distribution whose mean is `--size`.

use crate::wire::MIN_TEXT;

/// Largest drawn size: a KiB under chatd's default 64 KiB text limit.
pub const MAX_TEXT: usize = 64 * 1024 - 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SizeDist {
    /// Every message is exactly --size bytes.
    Fixed,
    /// Exponential with mean --size, starting at the 64-byte minimum, capped at 63 KiB.
    Exp,
}

/// Draws message sizes; deterministic for a given seed, so runs are repeatable.
#[derive(Debug, Clone)]
pub struct MessageSizes {
    dist: SizeDist,
    mean: usize,
    rng: SplitMix64,
}

impl MessageSizes {
    pub fn new(dist: SizeDist, mean: usize, seed: u64) -> Self {
        MessageSizes {
            dist,
            mean,
            rng: SplitMix64(seed),
        }
    }

    pub fn next_size(&mut self) -> usize {
        match self.dist {
            SizeDist::Fixed => self.mean,
            SizeDist::Exp => {
                // Shifted to start at MIN_TEXT rather than clamped up to it: clamping would pile
                // a large share of the draws onto MIN_TEXT and raise the mean above --size.
                let excess_mean = self.mean.saturating_sub(MIN_TEXT) as f64;
                // 1 - u lies in (0, 1], so the logarithm is finite.
                let excess = -excess_mean * (1.0 - self.rng.next_f64()).ln();
                // `as` saturates, so even an absurd draw lands on MAX_TEXT.
                (MIN_TEXT + excess.round() as usize).clamp(MIN_TEXT, MAX_TEXT)
            }
        }
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, and good enough for picking sizes.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1), from the top 53 bits.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draw(dist: SizeDist, mean: usize, n: usize) -> Vec<usize> {
        let mut sizes = MessageSizes::new(dist, mean, 42);
        (0..n).map(|_| sizes.next_size()).collect()
    }

    fn mean(v: &[usize]) -> f64 {
        v.iter().sum::<usize>() as f64 / v.len() as f64
    }

    #[test]
    fn fixed_is_always_the_given_size() {
        assert!(draw(SizeDist::Fixed, 100, 1000).iter().all(|&s| s == 100));
    }

    #[test]
    fn exp_stays_in_bounds_and_keeps_the_mean() {
        for target in [100, 1000, 4096] {
            let sizes = draw(SizeDist::Exp, target, 200_000);
            assert!(sizes.iter().all(|&s| (MIN_TEXT..=MAX_TEXT).contains(&s)));
            let m = mean(&sizes);
            assert!(
                (m - target as f64).abs() < 0.02 * target as f64,
                "mean {m} for target {target}"
            );
            // Exponential, not fixed: sizes spread out, with a long tail.
            assert!(sizes.iter().any(|&s| s > 3 * target));
            assert!(sizes.iter().filter(|&&s| s < target).count() > sizes.len() / 3);
        }
    }

    #[test]
    fn exp_caps_a_huge_mean_at_the_maximum() {
        let sizes = draw(SizeDist::Exp, 60 * 1024, 10_000);
        assert!(sizes.contains(&MAX_TEXT));
        assert!(sizes.iter().all(|&s| s <= MAX_TEXT));
    }

    #[test]
    fn exp_at_the_minimum_mean_is_the_minimum() {
        assert!(draw(SizeDist::Exp, MIN_TEXT, 1000)
            .iter()
            .all(|&s| s == MIN_TEXT));
    }

    #[test]
    fn the_same_seed_draws_the_same_sizes() {
        assert_eq!(draw(SizeDist::Exp, 500, 100), draw(SizeDist::Exp, 500, 100));
        let mut other = MessageSizes::new(SizeDist::Exp, 500, 43);
        let other: Vec<_> = (0..100).map(|_| other.next_size()).collect();
        assert_ne!(draw(SizeDist::Exp, 500, 100), other);
    }

    #[test]
    fn uniform_draws_stay_in_the_unit_interval() {
        let mut rng = SplitMix64(0);
        let draws: Vec<f64> = (0..100_000).map(|_| rng.next_f64()).collect();
        assert!(draws.iter().all(|u| (0.0..1.0).contains(u)));
        let m = draws.iter().sum::<f64>() / draws.len() as f64;
        assert!((m - 0.5).abs() < 0.01, "mean {m}");
    }
}
