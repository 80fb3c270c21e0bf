//! Where a key's data lives, as a destination a shard can `dispatch` to: a core of this node
//! or a core of another node of the cluster.
//!
//! Destinations are plain indices. `0..shards` are this node's shards, as on a single node;
//! the indices above name (node, shard) pairs of other nodes, handed out once per pair by
//! the node-wide [`NodeAddrs`] and never reused, so a `ConnRef` or a `from` field keeps its
//! meaning on every shard of this node. Only the mesh's wire form (`mesh::wire`) spells a
//! destination as (node name, shard).
//!
//! In a cluster a key belongs to a hash slot (`cluster::rendezvous::slot_of`); the slot map
//! says which node serves the slot, and within that node the key goes to the shard the
//! single-node functions of [`crate::routing`] give for that node's shard count. A slot
//! that no live node serves (a node just died, or the map is not loaded yet), or that this
//! node holds but cannot serve yet (it is rebuilding it from its log, or its writes there
//! were not all replicated), is [`UNSERVED`]: a request for it is refused with
//! UNAVAILABLE at once, and the client retries once the slot has a node again. Serving it
//! here instead would accept writes that no log holds.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use chat_protocol::mesh::ShardAddr;

use crate::cluster::replica::ReplicaState;
use crate::cluster::{rendezvous, ClusterView};
use crate::mesh::wire::Addresses;
use crate::routing::{
    fnv1a64, shard_of_asset, shard_of_group, shard_of_token, shard_of_user, shard_of_username,
};

/// The destination of a key whose slot no node serves now: `Shard::dispatch` refuses
/// what is sent there.
pub const UNSERVED: usize = usize::MAX;

/// The (node, shard) pairs of other nodes, by destination index.
#[derive(Debug)]
pub struct NodeAddrs {
    node: String,
    shards: usize,
    remote: RwLock<Remote>,
}

#[derive(Debug, Default)]
struct Remote {
    /// Destination `shards + i` is `pairs[i]`.
    pairs: Vec<(Arc<str>, u32)>,
    index: HashMap<(Arc<str>, u32), usize>,
}

impl NodeAddrs {
    pub fn new(node: &str, shards: usize) -> Self {
        Self {
            node: node.to_string(),
            shards,
            remote: RwLock::default(),
        }
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The destination of `shard` on `node`.
    pub fn index(&self, node: &str, shard: u32) -> usize {
        if node == self.node {
            return shard as usize;
        }
        if let Ok(remote) = self.remote.read() {
            if let Some(&i) = remote.index.get(&(Arc::from(node), shard)) {
                return i;
            }
        }
        let mut remote = self.remote.write().unwrap_or_else(|e| e.into_inner());
        let key = (Arc::<str>::from(node), shard);
        if let Some(&i) = remote.index.get(&key) {
            return i;
        }
        let i = self.shards + remote.pairs.len();
        remote.pairs.push(key.clone());
        remote.index.insert(key, i);
        i
    }

    /// The node and shard of a destination above this node's shards.
    pub fn remote(&self, dest: usize) -> Option<(Arc<str>, u32)> {
        let i = dest.checked_sub(self.shards)?;
        let remote = self.remote.read().unwrap_or_else(|e| e.into_inner());
        remote.pairs.get(i).cloned()
    }
}

impl Addresses for NodeAddrs {
    fn addr_of(&self, shard: usize) -> ShardAddr {
        match self.remote(shard) {
            Some((node, shard)) => ShardAddr {
                node: node.to_string(),
                shard,
            },
            None => ShardAddr {
                node: self.node.clone(),
                shard: shard as u32,
            },
        }
    }

    fn shard_at(&self, addr: &ShardAddr) -> Option<usize> {
        if addr.node.is_empty() || (addr.node == self.node && addr.shard as usize >= self.shards) {
            return None;
        }
        Some(self.index(&addr.node, addr.shard))
    }
}

/// Where keys live, for one shard.
#[derive(Debug, Clone)]
pub struct Placement {
    shards: usize,
    cluster: Option<Cluster>,
}

#[derive(Debug, Clone)]
struct Cluster {
    view: ClusterView,
    addrs: Arc<NodeAddrs>,
    replica: Arc<ReplicaState>,
}

impl Placement {
    /// A single node: every key lives on one of its `shards`.
    pub fn single(shards: usize) -> Self {
        Self {
            shards,
            cluster: None,
        }
    }

    pub fn cluster(
        shards: usize,
        view: ClusterView,
        addrs: Arc<NodeAddrs>,
        replica: Arc<ReplicaState>,
    ) -> Self {
        let cluster = Cluster {
            view,
            addrs,
            replica,
        };
        Self {
            shards,
            cluster: Some(cluster),
        }
    }

    /// The destination of a key whose slot is that of `slot_id`; `local(n)` is its shard
    /// on a node of `n` shards.
    fn place(&self, slot_id: u64, local: impl Fn(usize) -> usize) -> usize {
        let Some(cluster) = &self.cluster else {
            return local(self.shards);
        };
        let map = cluster.view.load();
        let slot = map.slot_of(slot_id);
        match map.serving(slot) {
            Some(node) if node != map.node => {
                // A lease without a shard count comes from a node that predates it: 1.
                let shards = map.nodes.get(node).map_or(1, |n| n.shards).max(1);
                cluster.addrs.index(node, local(shards) as u32)
            }
            Some(_) if map.owned(slot) && !cluster.replica.is_dirty(slot) => local(self.shards),
            _ => UNSERVED,
        }
    }

    pub fn user(&self, id: u64) -> usize {
        self.place(id, |n| shard_of_user(id, n))
    }

    pub fn group(&self, id: u64) -> usize {
        self.place(id, |n| shard_of_group(id, n))
    }

    pub fn asset(&self, id: &[u8; 16]) -> usize {
        self.place(head(id), |n| shard_of_asset(id, n))
    }

    pub fn token(&self, hash: &[u8; 32]) -> usize {
        self.place(head(hash), |n| shard_of_token(hash, n))
    }

    pub fn username(&self, name: &str) -> usize {
        self.place(fnv1a64(name.as_bytes()), |n| shard_of_username(name, n))
    }

    /// Whether `dest` is a shard of a node that no longer holds a lease.
    pub fn node_departed(&self, dest: usize) -> bool {
        let Some(cluster) = &self.cluster else {
            return false;
        };
        match cluster.addrs.remote(dest) {
            Some((node, _)) => {
                let map = cluster.view.load();
                // Before the map is loaded nothing is known to have left.
                !map.nodes.is_empty() && !map.nodes.contains_key(&*node)
            }
            None => false,
        }
    }

    /// Whether a new user id may be given to `username`: in a cluster both also share a
    /// slot, so that they move between nodes together.
    pub fn same_slot(&self, user_id: u64, username: &str) -> bool {
        match &self.cluster {
            None => true,
            Some(cluster) => {
                let slots = cluster.view.load().slot_count();
                slots == 0
                    || rendezvous::slot_of(user_id, slots)
                        == rendezvous::slot_of(fnv1a64(username.as_bytes()), slots)
            }
        }
    }

    /// `users` grouped by destination, in their order: what one batch per destination
    /// carries.
    pub fn users_by_dest(&self, users: impl IntoIterator<Item = u64>) -> HashMap<usize, Vec<u64>> {
        let mut by_dest: HashMap<usize, Vec<u64>> = HashMap::new();
        for user in users {
            by_dest.entry(self.user(user)).or_default().push(user);
        }
        by_dest
    }
}

/// The first 8 bytes of a random or hashed id, as the slot id of what it names.
pub(crate) fn head(id: &[u8]) -> u64 {
    let mut head = [0u8; 8];
    head.copy_from_slice(&id[..8]);
    u64::from_be_bytes(head)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // reason: test code
    use super::*;
    use crate::cluster::{LiveNode, SlotMap, SlotView};

    fn map(node: &str, owners: &[&str]) -> SlotMap {
        SlotMap {
            node: node.into(),
            slots: owners
                .iter()
                .map(|o| SlotView {
                    owner: Some(o.to_string()),
                    epoch: 1,
                    owner_live: true,
                })
                .collect(),
            nodes: [("a", 2), ("b", 3)]
                .map(|(name, shards)| {
                    let listen = String::new();
                    (name.to_string(), LiveNode { listen, shards })
                })
                .into(),
            ready: true,
        }
    }

    #[test]
    fn keys_go_to_the_node_serving_their_slot() {
        let view = ClusterView::default();
        let addrs = Arc::new(NodeAddrs::new("a", 2));
        let place = Placement::cluster(2, view.clone(), addrs.clone(), Arc::default());
        view.store(map("a", &["a", "b"]));
        let slots = 2;
        let (mine, theirs): (Vec<u64>, Vec<u64>) =
            (1..200u64).partition(|&u| rendezvous::slot_of(u, slots) == 0);
        for &u in &mine {
            assert_eq!(place.user(u), shard_of_user(u, 2));
        }
        for &u in &theirs {
            let dest = place.user(u);
            assert!(dest >= 2, "a user of b's slot goes off this node");
            let (node, shard) = addrs.remote(dest).unwrap();
            assert_eq!((&*node, shard as usize), ("b", shard_of_user(u, 3)));
        }
        // The same pair always gets the same index, and the wire form round-trips.
        let dest = place.user(theirs[0]);
        assert_eq!(place.user(theirs[0]), dest);
        assert_eq!(addrs.shard_at(&addrs.addr_of(dest)), Some(dest));
        assert_eq!(addrs.shard_at(&addrs.addr_of(1)), Some(1));
        // This node's shard that does not exist, and no node: refused.
        let bad = ShardAddr {
            node: "a".into(),
            shard: 2,
        };
        assert_eq!(addrs.shard_at(&bad), None);
        assert_eq!(addrs.shard_at(&ShardAddr::default()), None);
    }

    #[test]
    fn a_slot_nobody_serves_cleanly_is_refused() {
        let view = ClusterView::default();
        let replica = Arc::new(ReplicaState::default());
        let addrs = Arc::new(NodeAddrs::new("a", 2));
        let place = Placement::cluster(2, view.clone(), addrs, replica.clone());
        // Not loaded yet.
        assert_eq!(place.user(7), UNSERVED);
        let mut m = map("a", &["b", "b"]);
        m.slots[0].owner_live = false;
        m.slots[1].owner_live = false;
        view.store(m);
        assert_eq!(place.user(7), UNSERVED);
        assert_eq!(place.group(7), UNSERVED);
        // Held here: served, unless this node is not ready or the slot is dirty.
        view.store(map("a", &["a", "a"]));
        assert_eq!(place.user(7), shard_of_user(7, 2));
        replica.mark_dirty([rendezvous::slot_of(7, 2)]);
        assert_eq!(place.user(7), UNSERVED);
        let mut m = map("a", &["a", "a"]);
        m.ready = false;
        view.store(m);
        assert_eq!(place.group(8), UNSERVED);
    }

    #[test]
    fn a_single_node_places_as_routing_does() {
        let place = Placement::single(4);
        assert_eq!(place.user(99), shard_of_user(99, 4));
        assert_eq!(place.username("alice"), shard_of_username("alice", 4));
        assert!(place.same_slot(1, "x"));
    }
}
