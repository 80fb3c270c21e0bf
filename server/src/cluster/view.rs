//! The slot map as every thread of the node reads it: an immutable snapshot behind an
//! `ArcSwap`, replaced whole by the cluster thread when the map or the set of live nodes
//! changes. A reader (a shard) pays two atomic operations per `load` and never waits for
//! the writer; the snapshot it holds stays valid while it uses it.

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::rendezvous;

/// One slot as this node last saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotView {
    /// The node that holds the slot's current term; `None` while it is free.
    pub owner: Option<String>,
    /// The term: increased by every claim and release of the slot.
    pub epoch: u64,
    /// Whether `owner` still holds a live lease (the same incarnation that claimed it).
    pub owner_live: bool,
}

/// A snapshot of the cluster as this node sees it.
#[derive(Debug, Clone, Default)]
pub struct SlotMap {
    /// This node's name.
    pub node: String,
    /// Every slot, indexed by slot number (empty until the map is loaded).
    pub slots: Vec<SlotView>,
    /// Live nodes, by name.
    pub nodes: BTreeMap<String, LiveNode>,
    /// This node holds its lease and has loaded the whole map: its `owned` slots are its own.
    pub ready: bool,
}

/// A node that holds a lease, as its lease announces it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveNode {
    /// The address clients reach it at.
    pub listen: String,
    /// How many shards it runs: where a key goes within it.
    pub shards: usize,
}

impl SlotMap {
    /// The slot count of the cluster (0 before the map is loaded).
    pub fn slot_count(&self) -> u32 {
        self.slots.len() as u32
    }

    /// The slot of a user or group id.
    pub fn slot_of(&self, id: u64) -> u32 {
        rendezvous::slot_of(id, self.slot_count())
    }

    /// The live node that serves `slot` now, if any.
    pub fn serving(&self, slot: u32) -> Option<&str> {
        let view = self.slots.get(slot as usize)?;
        view.owner.as_deref().filter(|_| view.owner_live)
    }

    /// Whether this node serves `slot` now.
    pub fn owned(&self, slot: u32) -> bool {
        self.ready && self.serving(slot) == Some(self.node.as_str())
    }

    /// How many slots this node serves.
    pub fn owned_count(&self) -> usize {
        if !self.ready {
            return 0;
        }
        (0..self.slot_count()).filter(|&s| self.owned(s)).count()
    }
}

/// A handle on the node's current [`SlotMap`]; cheap to clone, `Send + Sync`.
#[derive(Debug, Clone, Default)]
pub struct ClusterView(Arc<ArcSwap<SlotMap>>);

impl ClusterView {
    /// The current snapshot.
    pub fn load(&self) -> Arc<SlotMap> {
        self.0.load_full()
    }

    pub(crate) fn store(&self, map: SlotMap) {
        self.0.store(Arc::new(map));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_ready_node_owns_and_only_live_owners_serve() {
        let mut map = SlotMap {
            node: "a".into(),
            slots: vec![
                SlotView {
                    owner: Some("a".into()),
                    epoch: 1,
                    owner_live: true,
                },
                SlotView {
                    owner: Some("b".into()),
                    epoch: 3,
                    owner_live: false,
                },
                SlotView::default(),
            ],
            ..SlotMap::default()
        };
        assert_eq!(map.owned_count(), 0);
        map.ready = true;
        assert!(map.owned(0));
        assert_eq!(map.serving(1), None);
        assert_eq!(map.serving(2), None);
        assert_eq!(map.owned_count(), 1);
        let view = ClusterView::default();
        view.store(map);
        assert_eq!(view.load().slot_count(), 3);
    }
}
