//! Server timestamps: microseconds since the Unix epoch, strictly increasing per shard and
//! distinct across the shards of a node (a shard only hands out values in its own residue
//! class modulo twice the shard count). History pages by timestamp and keys a 1:1 message by
//! (conversation, timestamp), so uniqueness means paging never skips a message and no
//! message overwrites another.
//!
//! In a cluster, shard 0 of one node and shard 0 of another share a residue class. What
//! keeps one conversation's timestamps apart there is its two directions: a message from the
//! conversation's higher user id takes the odd half of the shard's class, one from the lower
//! the even half, and each direction is stamped by one shard (the recipient's home).

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

    /// The next timestamp of this shard (for anything but a 1:1 message).
    pub fn next(&self) -> u64 {
        self.next_in(0)
    }

    /// The next timestamp of a 1:1 message from `from` to `to`.
    pub fn next_message(&self, from: u64, to: u64) -> u64 {
        self.next_in(u64::from(from > to))
    }

    fn next_in(&self, half: u64) -> u64 {
        let floor = Self::now_us().max(self.last.get() + 1);
        // Round up to the next value in this shard's residue class, in the given half.
        let modulus = 2 * self.shards;
        let class = 2 * self.shard + half;
        let rem = floor % modulus;
        let t = floor + (class + modulus - rem) % modulus;
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
            assert_eq!(t % 6, 0);
            prev = t;
            assert_eq!(b.next() % 6, 4);
        }
    }

    #[test]
    fn the_two_directions_of_a_conversation_never_share_a_timestamp() {
        // Shard 0 of two different nodes: one stamps what the lower id (7) receives, the
        // other what the higher id (9) receives, in the same microseconds.
        let (node_a, node_b) = (Clock::new(0, 1), Clock::new(0, 1));
        let mut from_lower = std::collections::HashSet::new();
        let mut from_higher = std::collections::HashSet::new();
        for _ in 0..10_000 {
            from_lower.insert(node_b.next_message(7, 9));
            from_higher.insert(node_a.next_message(9, 7));
        }
        assert_eq!((from_lower.len(), from_higher.len()), (10_000, 10_000));
        assert!(from_lower.is_disjoint(&from_higher));
        // And shards of one node still never meet, in either direction.
        let (s0, s1) = (Clock::new(0, 2), Clock::new(1, 2));
        for _ in 0..1000 {
            assert_ne!(s0.next_message(1, 2) % 4, s1.next_message(1, 2) % 4);
            assert_ne!(s0.next_message(2, 1) % 4, s1.next() % 4);
        }
    }
}
