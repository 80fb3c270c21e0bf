//! What the cluster keeps in its two JetStream KV buckets, and how it is encoded.
//!
//! - `<name>_nodes`: one key per node (its name), value [`Lease`]. A node refreshes its key
//!   every `lease_ttl / 6` with a compare-and-swap on the key's revision; see `node.rs`
//!   for how a silent node's lease is removed.
//! - `<name>_slots`: key `config` ([`ClusterRecord`]: the slot count, fixed when the first
//!   node creates the cluster), and one key `slot.N` per slot, value [`SlotRecord`]: owner
//!   and epoch. A slot key that does not exist yet is free at epoch 0.
//!
//! Values are small JSON objects, so an operator can read them with the `nats` CLI
//! (`nats kv get chatd_slots slot.17`); the whole map of 1024 slots is about 80 KB.

use serde::{Deserialize, Serialize};

/// The key of a slot in the slots bucket.
pub fn slot_key(slot: u32) -> String {
    format!("slot.{slot}")
}

/// The slot a slots-bucket key names; `None` for other keys (`config`).
pub fn parse_slot_key(key: &str) -> Option<u32> {
    key.strip_prefix("slot.")?.parse().ok()
}

/// The key of the cluster's settings in the slots bucket.
pub const CONFIG_KEY: &str = "config";

/// Settings every node of one cluster must share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterRecord {
    pub slots: u32,
}

/// A node's lease: present while the node is alive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Random per start of the process: a restarted node is a new incarnation, and the
    /// slots its previous one held are not its own until it claims them again.
    pub incarnation: String,
    /// Where clients reach the node (TLS).
    pub listen: String,
    /// Unix time of the process start, in milliseconds (for operators).
    pub started_ms: u64,
    /// The node's shard count: other nodes route a key to its shard on this node by it.
    #[serde(default)]
    pub shards: u32,
}

/// Who owns a slot.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Owner {
    pub node: String,
    pub incarnation: String,
}

/// A slot's record. A claim and a release increase `epoch` by one, so an (owner, epoch)
/// pair names one term of ownership that no other owner ever had.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SlotRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
    pub epoch: u64,
    /// Set by the claim; cleared (same epoch) once the owner has rebuilt the slot from its
    /// log. No node routes to the slot meanwhile.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rebuilding: bool,
}

pub fn encode<T: Serialize>(value: &T) -> bytes::Bytes {
    // Serializing these plain structs cannot fail.
    serde_json::to_vec(value).unwrap_or_default().into()
}

pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Option<T> {
    serde_json::from_slice(bytes).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // reason: test code
    use super::*;

    #[test]
    fn records_round_trip_and_stay_small() {
        let owned = SlotRecord {
            owner: Some(Owner {
                node: "node-1".into(),
                incarnation: "00c0ffee00c0ffee".into(),
            }),
            epoch: 12,
            rebuilding: false,
        };
        let bytes = encode(&owned);
        assert!(bytes.len() < 80, "{}", bytes.len());
        assert_eq!(decode::<SlotRecord>(&bytes), Some(owned));
        let free = SlotRecord {
            owner: None,
            epoch: 13,
            rebuilding: false,
        };
        assert_eq!(&encode(&free)[..], b"{\"epoch\":13}");
        assert_eq!(decode::<SlotRecord>(b"{\"epoch\":13}"), Some(free));
        assert_eq!(decode::<SlotRecord>(b"garbage"), None);
        assert_eq!(parse_slot_key(&slot_key(1023)), Some(1023));
        assert_eq!(parse_slot_key(CONFIG_KEY), None);
    }
}
