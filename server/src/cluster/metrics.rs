//! The cluster's metrics and readiness, written by the cluster thread and read by the
//! metrics thread (`/metrics`, `/health`).

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use crate::metrics::{Counter, Gauge};

/// Node-level cluster counters and gauges (no `shard` label).
#[derive(Debug, Default)]
pub(crate) struct ClusterMetrics {
    /// The cluster's slot count, once known.
    pub slots: Gauge,
    /// Slots this node holds while it is ready.
    pub slots_owned: Gauge,
    /// Slots that are free or held by a node without a lease.
    pub slots_unowned: Gauge,
    /// Nodes with a lease, this one included.
    pub live_nodes: Gauge,
    /// Slots that changed hands (a claim after an earlier owner, any node's) since this
    /// node loaded the map.
    pub slot_moves: Counter,
    /// Slots this node claimed.
    pub slot_claims: Counter,
    /// Slots this node released to their target.
    pub slot_releases: Counter,
    /// Leases of silent nodes this node removed.
    pub nodes_evicted: Counter,
    /// Times this node lost its lease (evicted, or unable to refresh) and joined again.
    pub lease_losses: Counter,
    /// Reconnections to NATS after the first connection.
    pub nats_reconnects: Counter,
    /// Messages between shards sent to and received from other nodes, in batches.
    pub mesh_sent: Counter,
    pub mesh_received: Counter,
    pub mesh_batches_sent: Counter,
    pub mesh_batches_received: Counter,
    /// Messages from other nodes that could not be read (malformed, another version, a
    /// shard this node does not have), or not sent (NATS refused the publish).
    pub mesh_dropped: Counter,
    /// Shard rounds published to the slot logs, messages and payload bytes that carried
    /// them, rounds that could not be published, publishes refused because another node
    /// fenced the slot.
    pub replica_rounds: Counter,
    pub replica_messages: Counter,
    pub replica_bytes: Counter,
    pub replica_failed: Counter,
    pub replica_fenced: Counter,
    /// Slot log messages and writes replayed by take-overs.
    pub replayed_entries: Counter,
    pub replayed_writes: Counter,
    /// Slot snapshots published (their logs purged below them), snapshots that failed,
    /// the snapshots' payload bytes, and the log messages their purges removed.
    pub snapshots: Counter,
    pub snapshots_failed: Counter,
    pub snapshot_bytes: Counter,
    pub snapshot_purged: Counter,
    /// Take-overs running now: `/health` is not ready meanwhile.
    pub replaying: Gauge,
    /// Stream sequences the running take-overs have still to read, up to their fences.
    pub replay_lag: Gauge,
    /// Slots with local writes their logs lack, waiting to be rebuilt.
    pub dirty_slots: Gauge,
    connected: AtomicBool,
    ever_connected: AtomicBool,
    ready: AtomicBool,
    /// Milliseconds from the start of the cluster thread to the first time this node held
    /// every slot whose target it is (0: not yet).
    pub first_claimed_ms: AtomicU64,
    /// Why the node is not ready (for `/health`).
    problem: Mutex<String>,
}

impl ClusterMetrics {
    pub fn new() -> Self {
        let metrics = Self::default();
        metrics.set_problem("cluster: connecting to NATS");
        metrics
    }

    pub fn set_connected(&self, connected: bool) {
        if connected && self.ever_connected.swap(true, Relaxed) {
            self.nats_reconnects.inc();
        }
        self.connected.store(connected, Relaxed);
    }

    /// Ready: the node holds its lease and has loaded the whole map.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Relaxed);
    }

    /// Why the node is not ready, as `/health` says it.
    pub fn set_problem(&self, why: &str) {
        if let Ok(mut problem) = self.problem.lock() {
            if *problem != why {
                why.clone_into(&mut problem);
            }
        }
    }

    pub fn health(&self) -> Result<(), String> {
        if self.replaying.get() > 0 {
            return Err("cluster: rebuilding slots it took over from their logs".into());
        }
        if self.ready.load(Relaxed) {
            return Ok(());
        }
        let why = self.problem.lock().map(|p| p.clone()).unwrap_or_default();
        Err(if why.is_empty() {
            "cluster: joining".into()
        } else {
            why
        })
    }

    /// The Prometheus text of these metrics.
    pub fn render(&self, out: &mut String) {
        let gauge = |out: &mut String, name: &str, help: &str, value: i64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        };
        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        gauge(
            out,
            "chatd_cluster_nats_connected",
            "1 while the node's NATS connection is up.",
            i64::from(self.connected.load(Relaxed)),
        );
        counter(
            out,
            "chatd_cluster_nats_reconnects_total",
            "Reconnections to NATS after the first connection.",
            self.nats_reconnects.get(),
        );
        gauge(
            out,
            "chatd_cluster_ready",
            "1 while the node holds its lease and has loaded the slot map.",
            i64::from(self.ready.load(Relaxed)),
        );
        gauge(
            out,
            "chatd_cluster_live_nodes",
            "Nodes holding a lease, this one included.",
            self.live_nodes.get(),
        );
        gauge(
            out,
            "chatd_cluster_slots",
            "Slots of the cluster.",
            self.slots.get(),
        );
        gauge(
            out,
            "chatd_cluster_slots_owned",
            "Slots this node holds.",
            self.slots_owned.get(),
        );
        gauge(
            out,
            "chatd_cluster_slots_unowned",
            "Slots that are free or held by a node without a lease.",
            self.slots_unowned.get(),
        );
        counter(
            out,
            "chatd_cluster_slot_moves_total",
            "Slots that changed hands (claimed after an earlier owner) since the map was loaded.",
            self.slot_moves.get(),
        );
        counter(
            out,
            "chatd_cluster_slot_claims_total",
            "Slots this node claimed.",
            self.slot_claims.get(),
        );
        counter(
            out,
            "chatd_cluster_slot_releases_total",
            "Slots this node released to the node they belong on.",
            self.slot_releases.get(),
        );
        counter(
            out,
            "chatd_cluster_nodes_evicted_total",
            "Leases of silent nodes this node removed.",
            self.nodes_evicted.get(),
        );
        counter(
            out,
            "chatd_cluster_lease_losses_total",
            "Times this node lost its lease and joined again.",
            self.lease_losses.get(),
        );
        counter(
            out,
            "chatd_cluster_replica_rounds_total",
            "Group commits of shards published to the slot logs.",
            self.replica_rounds.get(),
        );
        counter(
            out,
            "chatd_cluster_replica_messages_total",
            "Messages published to the slot logs (one per slot per batch of rounds).",
            self.replica_messages.get(),
        );
        counter(
            out,
            "chatd_cluster_replica_bytes_total",
            "Payload bytes published to the slot logs.",
            self.replica_bytes.get(),
        );
        counter(
            out,
            "chatd_cluster_replica_failed_total",
            "Group commits that could not be published (their requests failed with UNAVAILABLE).",
            self.replica_failed.get(),
        );
        counter(
            out,
            "chatd_cluster_replica_fenced_total",
            "Publishes refused because another node took the slot over.",
            self.replica_fenced.get(),
        );
        counter(
            out,
            "chatd_cluster_replayed_entries_total",
            "Slot log messages read by take-overs.",
            self.replayed_entries.get(),
        );
        counter(
            out,
            "chatd_cluster_replayed_writes_total",
            "Storage writes applied by take-overs.",
            self.replayed_writes.get(),
        );
        counter(
            out,
            "chatd_cluster_snapshots_total",
            "Slot snapshots published; each slot's log was purged below its snapshot.",
            self.snapshots.get(),
        );
        counter(
            out,
            "chatd_cluster_snapshots_failed_total",
            "Slot snapshots that could not be read, published or purged (retried later).",
            self.snapshots_failed.get(),
        );
        counter(
            out,
            "chatd_cluster_snapshot_bytes_total",
            "Payload bytes of the slot snapshots published.",
            self.snapshot_bytes.get(),
        );
        counter(
            out,
            "chatd_cluster_snapshot_purged_total",
            "Slot log messages removed by the purges that followed snapshots.",
            self.snapshot_purged.get(),
        );
        gauge(
            out,
            "chatd_cluster_replaying",
            "Take-overs of slots running now (the node is not ready meanwhile).",
            self.replaying.get(),
        );
        gauge(
            out,
            "chatd_cluster_replay_lag",
            "Stream sequences that the running take-overs have still to read, up to their fences (0 when none runs).",
            self.replay_lag.get(),
        );
        gauge(
            out,
            "chatd_cluster_dirty_slots",
            "Slots with local writes their logs lack, waiting to be released and rebuilt.",
            self.dirty_slots.get(),
        );
        counter(
            out,
            "chatd_cluster_mesh_messages_sent_total",
            "Messages between shards sent to shards of other nodes.",
            self.mesh_sent.get(),
        );
        counter(
            out,
            "chatd_cluster_mesh_messages_received_total",
            "Messages between shards received from shards of other nodes.",
            self.mesh_received.get(),
        );
        counter(
            out,
            "chatd_cluster_mesh_batches_sent_total",
            "NATS messages (batches of messages between shards) published to other nodes.",
            self.mesh_batches_sent.get(),
        );
        counter(
            out,
            "chatd_cluster_mesh_batches_received_total",
            "NATS messages (batches of messages between shards) received from other nodes.",
            self.mesh_batches_received.get(),
        );
        counter(
            out,
            "chatd_cluster_mesh_dropped_total",
            "Messages between nodes dropped: unreadable, for a shard this node lacks, or refused by NATS.",
            self.mesh_dropped.get(),
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // reason: test code
    use super::*;

    #[test]
    fn health_follows_readiness_with_the_reason() {
        let m = ClusterMetrics::new();
        assert!(m.health().unwrap_err().contains("connecting"));
        m.set_connected(true);
        m.set_connected(false);
        m.set_connected(true);
        assert_eq!(m.nats_reconnects.get(), 1);
        m.set_ready(true);
        assert!(m.health().is_ok());
        let mut text = String::new();
        m.render(&mut text);
        assert!(text.contains("\nchatd_cluster_ready 1\n"));
        assert!(text.contains("# TYPE chatd_cluster_slot_moves_total counter\n"));
    }
}
