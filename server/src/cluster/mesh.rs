//! The NATS side of the mesh between nodes: batches of messages between shards
//! (`crate::mesh::wire`) published to, and received from, core NATS subjects.
//!
//! Each shard of each node has one subject, `<name>.mesh.<node>.<shard>`; a node subscribes
//! to `<name>.mesh.<node>.*` and hands each batch to the shard its subject names. One NATS
//! connection per node publishes everything, in the order the shards queued it, and NATS
//! keeps the order of one connection's messages on one subject: what one shard sends
//! another arrives in order, as between the shards of one node.
//!
//! Core NATS delivers at most once: a batch is lost if a node's NATS connection drops while
//! it is in flight. What the batch carried fails the way a lost connection does (the
//! client's request times out and is retried; sends are idempotent by `client_msg_id`).

use std::sync::Arc;

use bytes::Bytes;
use futures_lite::StreamExt;

use super::ClusterMetrics;

/// One encoded batch for a shard of another node.
#[derive(Debug)]
pub struct Outbound {
    pub node: Arc<str>,
    pub shard: u32,
    pub batch: Bytes,
    /// Messages in the batch (for the metrics).
    pub messages: usize,
}

/// The shards' ends of the mesh, handed to the cluster thread.
#[derive(Debug)]
pub struct MeshPorts {
    /// Everything the shards send to other nodes.
    pub outbound: flume::Receiver<Outbound>,
    /// Batches for this node's shards, by shard.
    pub inbound: Vec<flume::Sender<Bytes>>,
}

/// The subject of one shard of `node`.
pub fn subject(cluster: &str, node: &str, shard: u32) -> String {
    format!("{cluster}.mesh.{node}.{shard}")
}

/// Moves batches between the shards and NATS until the shards' side closes.
pub async fn bridge(
    client: async_nats::Client,
    cluster: String,
    node: String,
    ports: MeshPorts,
    metrics: Arc<ClusterMetrics>,
) {
    let mine = format!("{cluster}.mesh.{node}.*");
    let mut inbox = loop {
        match client.subscribe(mine.clone()).await {
            Ok(sub) => break sub,
            Err(e) => {
                tracing::warn!("mesh: subscribing to {mine}: {e}; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    };
    let receiving = {
        let metrics = metrics.clone();
        async move {
            while let Some(msg) = inbox.next().await {
                metrics.mesh_batches_received.inc();
                let shard = msg
                    .subject
                    .rsplit('.')
                    .next()
                    .and_then(|s| s.parse::<usize>().ok());
                match shard.and_then(|s| ports.inbound.get(s)) {
                    // Waiting here holds back the subscription: a shard that falls behind
                    // slows its senders down instead of growing a queue without bound.
                    Some(shard) => {
                        if shard.send_async(msg.payload).await.is_err() {
                            return;
                        }
                    }
                    None => {
                        metrics.mesh_dropped.inc();
                        tracing::warn!(subject = %msg.subject, "mesh: a batch for no shard of this node");
                    }
                }
            }
        }
    };
    let sending = async move {
        while let Ok(out) = ports.outbound.recv_async().await {
            let messages = out.messages as u64;
            let to = subject(&cluster, &out.node, out.shard);
            match client.publish(to, out.batch).await {
                Ok(()) => {
                    metrics.mesh_batches_sent.inc();
                    metrics.mesh_sent.add(messages);
                }
                Err(e) => {
                    metrics.mesh_dropped.add(messages);
                    tracing::warn!("mesh: publishing to {}: {e}", out.node);
                }
            }
        }
    };
    tokio::join!(receiving, sending);
}
