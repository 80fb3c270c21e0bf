//! Rendezvous (highest-random-weight) hashing: which live node a slot belongs on.
//!
//! Every node computes the same answer from the same set of live node names, with no
//! coordination: slot `s` goes to the node with the highest `weight(node, s)`. When a node
//! leaves, only its own slots move (each to the node with its next-highest weight); when
//! one joins, it takes about `1/n` of the slots, from every other node alike.
//!
//! The weights are part of the cluster's behaviour, not of its data: changing them moves
//! slots (once) but loses nothing. They are pinned by a test so that nodes of two builds
//! agree during a rolling upgrade.

use crate::routing::{fnv1a64, mix64};

/// The slot of a 64-bit id (user, group) in a cluster of `slots` slots.
pub fn slot_of(id: u64, slots: u32) -> u32 {
    (mix64(id ^ 0x5107_5107_5107_5107) % u64::from(slots.max(1))) as u32
}

/// The weight of `node` for `slot`: a hash of both.
pub fn weight(node: &str, slot: u32) -> u64 {
    mix64(fnv1a64(node.as_bytes()) ^ mix64(u64::from(slot).wrapping_add(0x9e37_79b9_7f4a_7c15)))
}

/// The node among `nodes` that `slot` belongs on: the highest weight, ties (which need a
/// 64-bit collision) broken by the smaller name. `None` when `nodes` is empty.
pub fn target<'a>(slot: u32, nodes: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    nodes
        .into_iter()
        .map(|n| (weight(n, slot), std::cmp::Reverse(n)))
        .max()
        .map(|(_, std::cmp::Reverse(n))| n)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // reason: test code
    use super::*;

    #[test]
    fn weights_are_pinned() {
        // Nodes of different builds must agree on targets: these values must not change.
        assert_eq!(weight("a", 0), 0x2235_10de_0dd4_615f);
        assert_eq!(target(7, ["a", "b", "c"]), Some("b"));
        assert_eq!(slot_of(42, 1024), 887);
        assert_eq!(target(3, Vec::<&str>::new()), None);
    }

    #[test]
    fn slots_spread_evenly_and_only_a_leavers_slots_move() {
        let three = ["n1", "n2", "n3"];
        let mut counts = [0usize; 3];
        for slot in 0..1024 {
            let t = target(slot, three).unwrap();
            counts[three.iter().position(|n| *n == t).unwrap()] += 1;
        }
        assert!(
            counts.iter().all(|&c| (280..=400).contains(&c)),
            "{counts:?}"
        );
        for slot in 0..1024 {
            let before = target(slot, three).unwrap();
            let after = target(slot, ["n1", "n2"]).unwrap();
            if before != "n3" {
                assert_eq!(before, after, "slot {slot} moved although its node stayed");
            }
        }
    }
}
