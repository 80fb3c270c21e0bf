//! Server timestamps: microseconds since the Unix epoch, strictly increasing per shard and
//! distinct across shards (a shard only hands out values congruent to its index modulo the
//! shard count). History pages by timestamp, so uniqueness means paging never skips a message.

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug)]
pub struct Clock {
    last: Cell<u64>,
    shard: u64,
    shards: u64,
}

impl Clock {
    pub fn new(shard: usize, shards: usize) -> Self {
        Self {
            last: Cell::new(0),
            shard: shard as u64,
            shards: shards.max(1) as u64,
        }
    }

    pub fn now_us() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0)
    }

    /// The next timestamp of this shard.
    pub fn next(&self) -> u64 {
        let floor = Self::now_us().max(self.last.get() + 1);
        // Round up to the next value in this shard's residue class.
        let rem = floor % self.shards;
        let t = floor + (self.shard + self.shards - rem) % self.shards;
        self.last.set(t);
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strictly_increasing_and_disjoint_across_shards() {
        let a = Clock::new(0, 3);
        let b = Clock::new(2, 3);
        let mut prev = 0;
        for _ in 0..1000 {
            let t = a.next();
            assert!(t > prev);
            assert_eq!(t % 3, 0);
            prev = t;
            assert_eq!(b.next() % 3, 2);
        }
    }
}
