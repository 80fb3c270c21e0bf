//! A shard's end of the mesh between nodes: what it queued for other nodes, encoded into
//! batches for the cluster thread (`cluster::mesh`), and the batches it receives, decoded
//! and handled as if a shard of this node had sent them.

use std::collections::BTreeMap;
use std::rc::Rc;

use bytes::Bytes;
use chat_protocol::mesh::MeshBatch;
use prost::Message as _;

use super::wire::{self, Addresses};
use crate::cluster::mesh::Outbound;
use crate::cluster::ClusterMetrics;
use crate::placement::NodeAddrs;
use crate::shard::{Shard, ShardMsg};

/// Largest batch published as one NATS message; a destination's messages beyond it go in
/// further batches. NATS refuses payloads over its `max_payload` (1 MiB by default).
const MAX_BATCH_BYTES: usize = 512 * 1024;

/// The batches for everything `shard` queued for other nodes (by destination).
pub fn outbound(
    shard: &Shard,
    queued: BTreeMap<usize, Vec<ShardMsg>>,
    addrs: &NodeAddrs,
) -> Vec<Outbound> {
    let mut out = Vec::new();
    let from = addrs.addr_of(shard.id);
    for (dest, msgs) in queued {
        let Some((node, to_shard)) = addrs.remote(dest) else {
            tracing::error!(shard = shard.id, dest, "mesh: a destination with no node");
            continue;
        };
        let mut batch = new_batch(&from, to_shard);
        let mut bytes = 0;
        for msg in msgs {
            let msg = wire::encode(msg, addrs);
            let len = msg.encoded_len();
            if bytes > 0 && bytes + len > MAX_BATCH_BYTES {
                let full = std::mem::replace(&mut batch, new_batch(&from, to_shard));
                out.push(seal(&node, to_shard, full));
                bytes = 0;
            }
            bytes += len;
            batch.msgs.push(msg);
        }
        if !batch.msgs.is_empty() {
            out.push(seal(&node, to_shard, batch));
        }
    }
    out
}

fn new_batch(from: &chat_protocol::mesh::ShardAddr, to_shard: u32) -> MeshBatch {
    MeshBatch {
        version: wire::VERSION,
        from: Some(from.clone()),
        to_shard,
        msgs: Vec::new(),
    }
}

fn seal(node: &std::sync::Arc<str>, shard: u32, batch: MeshBatch) -> Outbound {
    Outbound {
        node: node.clone(),
        shard,
        messages: batch.msgs.len(),
        batch: Bytes::from(batch.encode_to_vec()),
    }
}

/// Handles a batch another node sent to `shard`.
pub fn inbound(shard: &Rc<Shard>, batch: &[u8], addrs: &NodeAddrs, metrics: &ClusterMetrics) {
    let wire::Decoded {
        from,
        to_shard,
        msgs,
    } = match wire::decode_batch(batch, addrs) {
        Ok(decoded) => decoded,
        Err(e) => {
            metrics.mesh_dropped.inc();
            tracing::warn!(shard = shard.id, "mesh: an unreadable batch: {e}");
            return;
        }
    };
    if to_shard as usize != shard.id {
        metrics.mesh_dropped.add(msgs.len() as u64);
        tracing::warn!(
            shard = shard.id,
            to_shard,
            "mesh: a batch for another shard"
        );
        return;
    }
    metrics.mesh_received.add(msgs.len() as u64);
    for msg in msgs {
        match msg {
            Ok(ShardMsg::ToConn { conn, .. }) if !shard.has_conn(conn.id) => {
                // The sender still thinks the connection is here (it closed while this was
                // on the way, or this node restarted): let it end what points at it.
                shard.dispatch(from, ShardMsg::ConnGone { conn });
            }
            Ok(msg) => shard.handle(msg),
            Err(e) => {
                metrics.mesh_dropped.inc();
                tracing::warn!(shard = shard.id, "mesh: an unreadable message: {e}");
            }
        }
    }
}
