//! The correctness oracle: per key (a receiver and a sender's stream), every counter must
//! arrive exactly once, in increasing order. Loss is what was acked but never observed
//! (computed at the end).

use std::collections::{HashMap, HashSet};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// First arrival, in order.
    InOrder,
    /// First arrival, but after a higher counter of the same sender.
    Reordered,
    /// Seen before.
    Duplicate,
}

#[derive(Debug)]
pub struct Oracle<K> {
    seen: HashMap<K, HashSet<u64>>,
    highest: HashMap<K, u64>,
}

impl<K> Default for Oracle<K> {
    fn default() -> Self {
        Oracle {
            seen: HashMap::new(),
            highest: HashMap::new(),
        }
    }
}

impl<K: std::hash::Hash + Eq + Copy> Oracle<K> {
    pub fn observe(&mut self, key: K, counter: u64) -> Verdict {
        if !self.seen.entry(key).or_default().insert(counter) {
            return Verdict::Duplicate;
        }
        let highest = self.highest.entry(key).or_default();
        let verdict = if counter < *highest {
            Verdict::Reordered
        } else {
            Verdict::InOrder
        };
        *highest = (*highest).max(counter);
        verdict
    }

    /// Per key, the counters below its highest that never arrived (gaps; a loss after the
    /// highest is only seen against the acks).
    pub fn gaps(&self) -> impl Iterator<Item = (K, Vec<u64>)> + '_ {
        self.seen.iter().filter_map(|(&k, set)| {
            let highest = self.highest.get(&k).copied().unwrap_or(0);
            let first = set.iter().copied().min().unwrap_or(0);
            let missing: Vec<u64> = (first..highest).filter(|c| !set.contains(c)).collect();
            (!missing.is_empty()).then_some((k, missing))
        })
    }

    /// Distinct counters observed per key.
    pub fn delivered(&self) -> impl Iterator<Item = (K, u64)> + '_ {
        self.seen.iter().map(|(&s, set)| (s, set.len() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_duplicates_and_reordering_per_sender() {
        let mut o = Oracle::default();
        assert_eq!(o.observe(1, 1), Verdict::InOrder);
        assert_eq!(o.observe(1, 3), Verdict::InOrder); // a gap is not judged here: loss is
        assert_eq!(o.observe(1, 2), Verdict::Reordered);
        assert_eq!(o.observe(1, 2), Verdict::Duplicate);
        assert_eq!(o.observe(2, 1), Verdict::InOrder); // senders are independent
        assert!(o.gaps().all(|(_, missing)| missing.is_empty()));
        o.observe(2, 3);
        assert_eq!(o.gaps().collect::<Vec<_>>(), [(2, vec![2])]);
        let mut delivered: Vec<_> = o.delivered().collect();
        delivered.sort();
        assert_eq!(delivered, [(1, 3), (2, 2)]);
    }
}
