//! The decisions of a node, as pure functions of what it has seen in the two buckets (so
//! they are tested without NATS): which slots to claim or release, and which silent
//! leases to remove. JetStream's compare-and-swap makes each decision safe to act on even
//! when the view it was made from is stale: a write based on an old revision is refused.

use std::collections::{BTreeMap, HashSet, VecDeque};

use super::records::{Lease, Owner, SlotRecord};
use super::rendezvous;

/// A lease as seen in the nodes bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseState {
    pub lease: Lease,
    /// The KV revision of the lease's latest refresh.
    pub revision: u64,
}

/// A slot as seen in the slots bucket.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SlotState {
    pub record: SlotRecord,
    /// The KV revision of the slot's key; 0 while the key does not exist.
    pub revision: u64,
}

/// A compare-and-swap write of one slot's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotWrite {
    pub slot: u32,
    /// The revision the key must still have (0: the key must not exist).
    pub expect: u64,
    pub record: SlotRecord,
}

impl SlotWrite {
    pub fn is_claim(&self) -> bool {
        self.record.owner.is_some()
    }
}

/// Whether `owner` still holds its lease: the same node, in the same incarnation.
pub fn owner_live(owner: &Owner, leases: &BTreeMap<String, LeaseState>) -> bool {
    leases
        .get(&owner.node)
        .is_some_and(|l| l.lease.incarnation == owner.incarnation)
}

/// The writes that move the map toward every slot owned by its rendezvous target among
/// the live nodes, as far as `me` is concerned:
///
/// - a slot whose target is `me` and that is free, or held by a node (or an incarnation)
///   without a lease, is claimed;
/// - a slot that `me` holds and whose target is another live node is released, for that
///   node to claim;
/// - everything else is left to the other nodes (a live owner releases by itself).
///
/// Slots in `busy` (a write in flight) are skipped. Nothing is planned unless `me` is
/// among the live nodes.
pub fn plan(
    me: &Owner,
    leases: &BTreeMap<String, LeaseState>,
    slots: &[SlotState],
    busy: &HashSet<u32>,
) -> Vec<SlotWrite> {
    if !owner_live(me, leases) {
        return Vec::new();
    }
    let mut writes = Vec::new();
    for (slot, state) in slots.iter().enumerate() {
        let slot = slot as u32;
        if busy.contains(&slot) {
            continue;
        }
        let Some(target) = rendezvous::target(slot, leases.keys().map(String::as_str)) else {
            continue;
        };
        let mine = state.record.owner.as_ref() == Some(me);
        let claim = if target == me.node {
            match &state.record.owner {
                None => true,
                Some(owner) => !mine && !owner_live(owner, leases),
            }
        } else {
            false
        };
        let release = mine && target != me.node;
        if claim || release {
            writes.push(SlotWrite {
                slot,
                expect: state.revision,
                record: SlotRecord {
                    owner: claim.then(|| me.clone()),
                    epoch: state.record.epoch + 1,
                    rebuilding: claim,
                },
            });
        }
    }
    writes
}

/// Leases of other nodes to remove: those whose latest refresh is older (by revision)
/// than each of this node's last `refreshes` refreshes, `recent` (revisions, oldest
/// first, at most `refreshes` of them). The stream's order is the clock: while JetStream
/// accepts no writes (a leader election), no node refreshes and none is judged silent;
/// the removal itself is a compare-and-swap on the silent lease's revision, so a node
/// that did refresh meanwhile keeps its lease whatever this node saw.
pub fn silent(
    me: &str,
    leases: &BTreeMap<String, LeaseState>,
    recent: &VecDeque<u64>,
    refreshes: usize,
) -> Vec<(String, u64)> {
    let Some(&oldest) = recent.front() else {
        return Vec::new();
    };
    if recent.len() < refreshes {
        return Vec::new();
    }
    leases
        .iter()
        .filter(|(name, state)| name.as_str() != me && state.revision < oldest)
        .map(|(name, state)| (name.clone(), state.revision))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // reason: test code
    use super::*;

    fn owner(node: &str, incarnation: &str) -> Owner {
        Owner {
            node: node.into(),
            incarnation: incarnation.into(),
        }
    }

    fn leases(nodes: &[(&str, &str, u64)]) -> BTreeMap<String, LeaseState> {
        nodes
            .iter()
            .map(|&(name, incarnation, revision)| {
                let lease = Lease {
                    incarnation: incarnation.into(),
                    listen: String::new(),
                    started_ms: 0,
                    shards: 1,
                };
                (name.to_string(), LeaseState { lease, revision })
            })
            .collect()
    }

    /// Applies every node's plan until none writes: the map every node converges to.
    fn converge(nodes: &[Owner], live: &BTreeMap<String, LeaseState>, slots: &mut [SlotState]) {
        for round in 0.. {
            assert!(round < 10, "no convergence");
            let mut wrote = false;
            for me in nodes {
                for w in plan(me, live, slots, &HashSet::new()) {
                    let state = &mut slots[w.slot as usize];
                    assert_eq!(state.revision, w.expect);
                    *state = SlotState {
                        record: w.record,
                        revision: state.revision + 1,
                    };
                    wrote = true;
                }
            }
            if !wrote {
                return;
            }
        }
    }

    #[test]
    fn free_slots_go_to_their_targets_and_stay() {
        let nodes = [owner("a", "1"), owner("b", "1"), owner("c", "1")];
        let live = leases(&[("a", "1", 1), ("b", "1", 2), ("c", "1", 3)]);
        let mut slots = vec![SlotState::default(); 64];
        converge(&nodes, &live, &mut slots);
        for (slot, state) in slots.iter().enumerate() {
            let target = rendezvous::target(slot as u32, ["a", "b", "c"]).unwrap();
            let record = &state.record;
            assert_eq!(record.owner.as_ref().unwrap().node, target);
            assert_eq!(record.epoch, 1, "claimed once, straight from free");
        }
    }

    #[test]
    fn a_dead_nodes_slots_are_claimed_and_a_joiner_gets_its_share() {
        let a = owner("a", "1");
        let b = owner("b", "1");
        let c = owner("c", "1");
        let mut slots = vec![SlotState::default(); 64];
        let three = leases(&[("a", "1", 1), ("b", "1", 2), ("c", "1", 3)]);
        converge(&[a.clone(), b.clone(), c.clone()], &three, &mut slots);
        let before = slots.clone();

        // c's lease is gone: a and b take exactly c's slots, each with a new epoch.
        let two = leases(&[("a", "1", 1), ("b", "1", 2)]);
        converge(&[a.clone(), b.clone()], &two, &mut slots);
        for (slot, (old, new)) in before.iter().zip(&slots).enumerate() {
            let target = rendezvous::target(slot as u32, ["a", "b"]).unwrap();
            assert_eq!(new.record.owner.as_ref().unwrap().node, target);
            if old.record.owner.as_ref() == Some(&c) {
                assert_eq!(new.record.epoch, old.record.epoch + 1);
            } else {
                assert_eq!(new, old, "slot {slot} of a live node moved");
            }
        }

        // c comes back as a new incarnation: its old slots are released to it and claimed.
        let c2 = owner("c", "2");
        let back = leases(&[("a", "1", 1), ("b", "1", 2), ("c", "2", 9)]);
        converge(&[a, b, c2.clone()], &back, &mut slots);
        for (slot, state) in slots.iter().enumerate() {
            let target = rendezvous::target(slot as u32, ["a", "b", "c"]).unwrap();
            let owner = state.record.owner.as_ref().unwrap();
            assert_eq!(owner.node, target);
            if target == "c" {
                assert_eq!(owner, &c2);
                // Claimed by c1 (1), by a or b (2), released (3), claimed by c2 (4).
                assert_eq!(state.record.epoch, 4, "slot {slot}");
            }
        }
    }

    #[test]
    fn nothing_is_planned_without_a_lease_or_for_busy_slots() {
        let a = owner("a", "1");
        let slots = vec![SlotState::default(); 8];
        assert!(plan(&a, &leases(&[("b", "1", 1)]), &slots, &HashSet::new()).is_empty());
        assert!(plan(&a, &leases(&[("a", "0", 1)]), &slots, &HashSet::new()).is_empty());
        let live = leases(&[("a", "1", 1)]);
        assert_eq!(plan(&a, &live, &slots, &HashSet::new()).len(), 8);
        let busy: HashSet<u32> = (0..4).collect();
        assert_eq!(plan(&a, &live, &slots, &busy).len(), 4);
    }

    #[test]
    fn a_lease_is_silent_after_as_many_of_my_refreshes() {
        let live = leases(&[("a", "1", 10), ("b", "1", 4), ("c", "1", 7)]);
        let recent: VecDeque<u64> = [5, 8, 10].into();
        assert!(
            silent("a", &live, &recent, 4).is_empty(),
            "too few refreshes yet"
        );
        let found = silent("a", &live, &recent, 3);
        assert_eq!(found, vec![("b".to_string(), 4)]);
        assert!(silent("a", &live, &VecDeque::new(), 0).is_empty());
    }
}
