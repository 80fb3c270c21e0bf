//! Which hash slot's log each captured storage write goes to (docs/PROTOCOL.md appendix
//! C). The store names whose data a key is (`chat_storage::replica::owner`); this maps that
//! owner to slots, the way `placement` routes the same keys. The shards split each group
//! commit with [`split`]; `cluster::replica` publishes the parts and replays them.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chat_protocol::replica::{write::Kind, SlotWrites, Write};
use chat_storage::replica::{group_ref, inbox_cf, owner_of, Owner};
use prost::Message as _;

use crate::cluster::rendezvous::slot_of;
use crate::placement::head;
use crate::routing::fnv1a64;

/// A round's writes, split by slot.
#[derive(Debug, Default, PartialEq)]
pub struct Split {
    /// The encoded `SlotWrites` of each slot, writes in the order they were made.
    pub slots: BTreeMap<u32, Vec<u8>>,
    /// Slots written that this node does not serve: the round cannot be replicated.
    pub unowned: BTreeSet<u32>,
}

/// The slots of `owner` in a cluster of `slots` slots (none for node-local data; a copy
/// of a group entry is handled by [`split`]).
fn slots_of(owner: &Owner, slots: u32) -> Vec<u32> {
    match owner {
        Owner::User(id) | Owner::Group(id) => vec![slot_of(*id, slots)],
        Owner::Pair(a, b) => vec![slot_of(*a, slots), slot_of(*b, slots)],
        Owner::Asset(id) => vec![slot_of(head(id), slots)],
        Owner::Token(hash) => vec![slot_of(head(hash), slots)],
        Owner::Username(name) => vec![slot_of(fnv1a64(name), slots)],
        Owner::GroupCopy(group, _) => vec![slot_of(*group, slots)],
        Owner::Local => Vec::new(),
    }
}

/// Splits a round's captured `writes` into one `SlotWrites` per slot, keeping those of
/// the slots `owned` says this node serves. A key both users of a conversation share goes
/// to each of their slots served here; a shard's copy of a group entry goes to the slots
/// of the users whose inbox entries in the round refer to it (else to the group's slot).
pub fn split(writes: &[Write], slots: u32, owned: impl Fn(u32) -> bool) -> Split {
    let mut referred: HashMap<(u64, u64), HashSet<u32>> = HashMap::new();
    let inbox = inbox_cf();
    for w in writes
        .iter()
        .filter(|w| w.cf == inbox && w.kind == Kind::Put as i32)
    {
        if let (Some(entry), Some(user)) =
            (group_ref(&w.value), chat_storage::keys::u64_at(&w.key, 0))
        {
            referred
                .entry(entry)
                .or_default()
                .insert(slot_of(user, slots));
        }
    }
    let mut out = Split::default();
    let mut lists: BTreeMap<u32, SlotWrites> = BTreeMap::new();
    for w in writes {
        let who = owner_of(w);
        let candidates = match &who {
            Owner::GroupCopy(group, seq) => match referred.get(&(*group, *seq)) {
                Some(users) => users.iter().copied().collect(),
                None => slots_of(&who, slots),
            },
            _ => slots_of(&who, slots),
        };
        if candidates.is_empty() {
            continue; // Node-local data.
        }
        let (mut mine, theirs): (Vec<u32>, Vec<u32>) =
            candidates.into_iter().partition(|&s| owned(s));
        mine.sort_unstable();
        mine.dedup();
        if mine.is_empty() {
            tracing::debug!(cf = w.cf, owner = ?who, "a write for a slot not served here");
            out.unowned.extend(theirs);
            continue;
        }
        for slot in mine {
            lists.entry(slot).or_default().writes.push(w.clone());
        }
    }
    for (slot, list) in lists {
        out.slots.insert(slot, list.encode_to_vec());
    }
    out
}

/// Whether a take-over of `slots` replaces the key of `owner` (its log holds it). A
/// shard's copy of a group entry is kept: the members of other slots may refer to it, and
/// the log puts back the ones the taken slots need.
pub fn wiped_by(owner: &Owner, slots: &BTreeSet<u32>, slot_count: u32) -> bool {
    !matches!(owner, Owner::GroupCopy(..))
        && slots_of(owner, slot_count)
            .iter()
            .any(|s| slots.contains(s))
}

/// Whether a replayed key of `owner` belongs in the store of `shard` (of `shards`): where
/// the single-node routing puts it. A conversation key is kept by both users' shards, a
/// group entry's copy by any shard with members.
pub fn lands_on(owner: &Owner, shard: usize, shards: usize) -> bool {
    use crate::routing::*;
    match owner {
        Owner::User(id) => shard_of_user(*id, shards) == shard,
        Owner::Pair(a, b) => {
            shard_of_user(*a, shards) == shard || shard_of_user(*b, shards) == shard
        }
        Owner::Group(id) => shard_of_group(*id, shards) == shard,
        Owner::GroupCopy(..) => true,
        Owner::Asset(id) => shard_of_asset(id, shards) == shard,
        Owner::Token(hash) => shard_of_token(hash, shards) == shard,
        Owner::Username(name) => shard_of_username_bytes(name, shards) == shard,
        Owner::Local => false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // reason: test code
    use super::*;
    use chat_storage::{Durability, Store};

    const SLOTS: u32 = 16;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Durability::Wal).unwrap();
        store.set_capture(true);
        (dir, store)
    }

    /// The writes a store makes for one 1:1 message from `from` to `to`.
    fn captured_message(from: u64, to: u64) -> Vec<Write> {
        let (_dir, s) = store();
        s.stage_message(&message(from, to)).unwrap();
        s.commit().unwrap();
        s.take_captured()
    }

    fn two_users_in_different_slots() -> (u64, u64) {
        let a = 1;
        let b = (2..)
            .find(|&b| slot_of(b, SLOTS) != slot_of(a, SLOTS))
            .unwrap();
        (a, b)
    }

    fn message(from: u64, to: u64) -> chat_protocol::pb::Message {
        chat_protocol::pb::Message {
            from_user_id: from,
            to_user_id: to,
            client_msg_id: 7,
            timestamp_us: 100,
            text: "hi".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_message_goes_to_its_recipients_slot_and_each_slot_rebuilds_alone() {
        let (a, b) = two_users_in_different_slots();
        let writes = captured_message(a, b);
        // Only b's slot is served here: the history key both share goes there alone.
        let split = split(&writes, SLOTS, |slot| slot == slot_of(b, SLOTS));
        assert!(
            split.unowned.is_empty(),
            "every write has a slot served here"
        );
        assert_eq!(split.slots.len(), 1);
        let part = SlotWrites::decode(&split.slots[&slot_of(b, SLOTS)][..]).unwrap();
        let (_dir2, replica) = store();
        replica.apply(&part.writes).unwrap();
        let inbox = replica.read_inbox(b, 0, 10).unwrap();
        assert_eq!(inbox.len(), 1, "b's inbox is rebuilt from b's slot alone");
        assert_eq!(replica.history(b, a, 0, 10).unwrap().messages.len(), 1);
    }

    #[test]
    fn writes_of_slots_served_elsewhere_are_counted_not_kept() {
        let (a, b) = two_users_in_different_slots();
        let split = split(&captured_message(a, b), SLOTS, |_| false);
        assert!(split.slots.is_empty());
        let both: BTreeSet<u32> = [slot_of(a, SLOTS), slot_of(b, SLOTS)].into();
        assert_eq!(split.unowned, both);
        // Concatenated parts are one list (how a node merges shards' parts).
        let one = SlotWrites {
            writes: vec![Write {
                cf: 1,
                ..Default::default()
            }],
            snapshot: None,
        };
        let two = SlotWrites {
            writes: vec![Write {
                cf: 2,
                ..Default::default()
            }],
            snapshot: None,
        };
        let mut both = one.encode_to_vec();
        both.extend(two.encode_to_vec());
        let merged = SlotWrites::decode(&both[..]).unwrap();
        assert_eq!(
            merged.writes.iter().map(|w| w.cf).collect::<Vec<_>>(),
            [1, 2]
        );
    }
}
