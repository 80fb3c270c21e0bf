//! Each hash slot's log of committed writes, in one JetStream stream (docs/PROTOCOL.md
//! appendix C): the owner of a slot publishes what its shards wrote there before anything
//! that depends on it is answered, and a node that takes a slot over rebuilds it from the
//! log before it serves it.
//!
//! - Stream `<name>_writes`, subjects `<name>.writes.<slot>`, file storage, the buckets'
//!   replicas. A message is a `chat.replica.v1.SlotWrites` (an empty one is a fence).
//! - Publishing ([`publish_rounds`]): the shards send [`Round`]s; everything queued is
//!   published together, one message per slot (parts of several shards concatenated, which
//!   protobuf reads as one list), each with the subject's expected last sequence. A
//!   message that names another last sequence was fenced: someone else took the slot.
//! - Taking over ([`take_over`]), after the slot's claim landed: publish a fence (an empty
//!   message, no expectation: whatever the previous owner publishes after it is refused),
//!   read every slot's log up to its fence, hand each shard the writes (it wipes what it
//!   kept of those slots and applies them), and only then serve the slots.
//! - Snapshots (`snapshot.rs`) stand in for the part of a slot's log they cover, and
//!   what they cover is purged; a reader assembles each slot's log with [`SlotLog`].
//! - A slot whose writes this node committed locally but could not publish is dirty
//!   ([`ReplicaState`]): refused by placement until the node released it and took it over
//!   again (the take-over wipes the local copy), so a retried send cannot be acked from
//!   a local record the log lacks.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, AckPolicy};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{self, StorageType};
use bytes::{Bytes, BytesMut};
use chat_protocol::replica::{SlotWrites, Write};
use futures_lite::StreamExt;
use prost::Message as _;
use tokio::task::JoinSet;

use super::snapshot::{in_stream_order, SlotLog};
use super::ClusterMetrics;
use crate::metrics::Gauge;

/// Largest message published: NATS refuses payloads over its `max_payload` (1 MiB by
/// default). A part over it still goes alone (and fails loudly if NATS refuses it).
pub const MAX_MESSAGE_BYTES: usize = 512 * 1024;
/// How long a slot's publish is retried (same message id: JetStream keeps one copy)
/// before its round fails.
const PUBLISH_DEADLINE: Duration = Duration::from_secs(10);
/// Limit on one JetStream request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Up to this many slots, a take-over reads only their subjects; beyond, the whole stream.
const FILTERED_SLOTS: usize = 32;
/// Messages asked for at once while replaying.
const REPLAY_BATCH: usize = 10_000;

/// One shard's writes of one group commit, by slot, for the cluster thread to publish.
#[derive(Debug)]
pub struct Round {
    pub parts: Vec<(u32, Bytes)>,
    pub done: flume::Sender<Result<(), String>>,
}

/// For a shard: replace what it holds of `slots` by `writes`, their logs replayed.
#[derive(Debug)]
pub struct Replay {
    pub slots: Arc<BTreeSet<u32>>,
    pub slot_count: u32,
    pub writes: Arc<Vec<Write>>,
    pub done: flume::Sender<Result<(), String>>,
}

/// What the shards and the cluster thread share about replication.
#[derive(Debug, Default)]
pub struct ReplicaState {
    dirty: Mutex<HashSet<u32>>,
    /// Fast path: placement reads this on every key.
    any_dirty: AtomicBool,
}

impl ReplicaState {
    /// Marks slots whose local writes are not all in their logs.
    pub fn mark_dirty(&self, slots: impl IntoIterator<Item = u32>) {
        let mut dirty = self.dirty.lock().unwrap_or_else(|e| e.into_inner());
        dirty.extend(slots);
        self.any_dirty.store(!dirty.is_empty(), Ordering::Release);
    }

    pub fn is_dirty(&self, slot: u32) -> bool {
        self.any_dirty.load(Ordering::Acquire)
            && self
                .dirty
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&slot)
    }

    pub fn dirty(&self) -> Vec<u32> {
        if !self.any_dirty.load(Ordering::Acquire) {
            return Vec::new();
        }
        let dirty = self.dirty.lock().unwrap_or_else(|e| e.into_inner());
        dirty.iter().copied().collect()
    }

    /// The slots were rebuilt from their logs.
    pub fn clean(&self, slots: &BTreeSet<u32>) {
        let mut dirty = self.dirty.lock().unwrap_or_else(|e| e.into_inner());
        dirty.retain(|s| !slots.contains(s));
        self.any_dirty.store(!dirty.is_empty(), Ordering::Release);
    }
}

/// The shards' ends of replication, handed to the cluster thread.
#[derive(Debug)]
pub struct ReplicaPorts {
    pub rounds: flume::Receiver<Round>,
    /// One per shard of this node.
    pub replays: Vec<flume::Sender<Replay>>,
    pub state: Arc<ReplicaState>,
}

/// The snapshot of a slot, for the publishing task to put on its subject between rounds.
#[derive(Debug)]
struct SnapshotParts {
    slot: u32,
    messages: Vec<Bytes>,
    done: flume::Sender<Result<(), String>>,
}

/// Where the log of a slot this node serves stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tip {
    /// The sequence of the slot's last message.
    pub last: u64,
    /// The slot's messages after its newest snapshot.
    pub since_snapshot: u64,
}

/// The stream of slot logs, and the last sequence of each slot this node serves.
#[derive(Debug)]
pub struct Log {
    js: async_nats::jetstream::Context,
    stream: stream::Stream,
    name: String,
    /// Set by a take-over, advanced by every publish, dropped when the slot is fenced
    /// or released.
    tips: Mutex<HashMap<u32, Tip>>,
    /// Snapshots waiting for the publishing task: a slot's messages go out one at a time.
    snapshots: (flume::Sender<SnapshotParts>, flume::Receiver<SnapshotParts>),
    /// Message ids: unique per process (a random prefix), so JetStream's duplicate
    /// window only ever folds a retry of the same message.
    id_prefix: String,
    next_id: AtomicU64,
    pub(super) metrics: Arc<ClusterMetrics>,
}

impl Log {
    /// Opens (creating it if needed) the stream of cluster `name`.
    pub async fn open(
        js: async_nats::jetstream::Context,
        name: &str,
        replicas: usize,
        metrics: Arc<ClusterMetrics>,
    ) -> Result<Self, String> {
        let config = stream::Config {
            name: format!("{name}_writes"),
            description: Some("chatd: each hash slot's committed writes".into()),
            subjects: vec![format!("{name}.writes.*")],
            storage: StorageType::File,
            num_replicas: replicas,
            duplicate_window: Duration::from_secs(120),
            allow_direct: true,
            ..Default::default()
        };
        let stream = tokio::time::timeout(REQUEST_TIMEOUT, js.get_or_create_stream(config))
            .await
            .map_err(|_| "the writes stream: no answer from JetStream".to_string())?
            .map_err(|e| format!("the writes stream: {e}"))?;
        Ok(Self {
            js,
            stream,
            name: name.to_string(),
            tips: Mutex::default(),
            snapshots: flume::unbounded(),
            id_prefix: format!("{:016x}", rand::random::<u64>()),
            next_id: AtomicU64::new(1),
            metrics,
        })
    }

    fn subject(&self, slot: u32) -> String {
        format!("{}.writes.{slot}", self.name)
    }

    fn tips(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Tip>> {
        self.tips.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The slot is no longer served here: its next take-over reads its log again.
    pub fn forget(&self, slot: u32) {
        self.tips().remove(&slot);
    }

    /// Where the log of `slot` stands, if this node serves it.
    pub fn tip(&self, slot: u32) -> Option<Tip> {
        self.tips().get(&slot).copied()
    }

    /// The slots served here with at least `every` messages after their newest snapshot.
    pub fn grown_since_snapshot(&self, every: u64) -> Vec<u32> {
        let mut due: Vec<u32> = self
            .tips()
            .iter()
            .filter(|(_, tip)| tip.since_snapshot >= every)
            .map(|(slot, _)| *slot)
            .collect();
        due.sort_unstable();
        due
    }

    /// A snapshot of `slot` taken when it had `folded` messages after the one before is
    /// in: what came since counts toward the next.
    pub fn snapshotted(&self, slot: u32, folded: u64) {
        if let Some(tip) = self.tips().get_mut(&slot) {
            tip.since_snapshot = tip.since_snapshot.saturating_sub(folded);
        }
    }

    /// Publishes a snapshot's `messages` on `slot`'s subject, in order, through the
    /// publishing task (which sends each slot's messages one at a time).
    pub async fn publish_snapshot(&self, slot: u32, messages: Vec<Bytes>) -> Result<(), String> {
        let (done, answer) = flume::bounded(1);
        let parts = SnapshotParts {
            slot,
            messages,
            done,
        };
        let stopped = || "the publishing task stopped".to_string();
        self.snapshots.0.send(parts).map_err(|_| stopped())?;
        answer.recv_async().await.map_err(|_| stopped())?
    }

    /// Removes `slot`'s messages below stream sequence `below`; how many went.
    pub async fn purge_below(&self, slot: u32, below: u64) -> Result<u64, String> {
        let purge = self
            .stream
            .purge()
            .filter(self.subject(slot))
            .sequence(below);
        let purged = tokio::time::timeout(REQUEST_TIMEOUT, async { purge.await })
            .await
            .map_err(|_| format!("purging slot {slot}: no answer from JetStream"))?
            .map_err(|e| format!("purging slot {slot}: {e}"))?;
        Ok(purged.purged)
    }

    /// Publishes `payload` to `slot`'s log after the last message this node knows there.
    async fn publish(&self, slot: u32, payload: Bytes) -> Result<(), String> {
        let Some(expected) = self.tip(slot).map(|tip| tip.last) else {
            return Err(format!("slot {slot} is not taken over here"));
        };
        let id = format!(
            "{}.{}",
            self.id_prefix,
            self.next_id.fetch_add(1, Ordering::Relaxed)
        );
        let deadline = Instant::now() + PUBLISH_DEADLINE;
        loop {
            let message = PublishMessage::build()
                .payload(payload.clone())
                .expected_last_subject_sequence(expected)
                .message_id(&id);
            let attempt = async {
                let ack = self.js.send_publish(self.subject(slot), message).await?;
                ack.await
            };
            let why = match tokio::time::timeout(REQUEST_TIMEOUT, attempt).await {
                Ok(Ok(ack)) => {
                    if let Some(tip) = self.tips().get_mut(&slot) {
                        tip.last = ack.sequence;
                        tip.since_snapshot += 1;
                    }
                    self.metrics.replica_messages.inc();
                    self.metrics.replica_bytes.add(payload.len() as u64);
                    return Ok(());
                }
                Ok(Err(e)) if e.kind() == PublishErrorKind::WrongLastSequence => {
                    self.forget(slot);
                    self.metrics.replica_fenced.inc();
                    return Err(format!("slot {slot} was fenced: another node took it"));
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => "no answer from JetStream".to_string(),
            };
            if Instant::now() > deadline {
                return Err(format!("publishing to slot {slot}: {why}"));
            }
            tracing::debug!(slot, "publishing a slot's writes: {why}; retrying");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Publishes a slot's queued parts in order, merged into as few messages as fit.
    async fn publish_parts(&self, slot: u32, parts: Vec<Bytes>) -> Result<(), String> {
        let mut merged = BytesMut::new();
        for part in parts {
            if !merged.is_empty() && merged.len() + part.len() > MAX_MESSAGE_BYTES {
                self.publish(slot, merged.split().freeze()).await?;
            }
            merged.extend_from_slice(&part);
        }
        if !merged.is_empty() {
            self.publish(slot, merged.freeze()).await?;
        }
        Ok(())
    }

    /// Publishes a slot's rounds, then the snapshots queued for it, each message alone.
    async fn publish_slot(
        &self,
        slot: u32,
        parts: Vec<Bytes>,
        snapshots: Vec<SnapshotParts>,
    ) -> Result<(), String> {
        let rounds = self.publish_parts(slot, parts).await;
        for snapshot in snapshots {
            let mut result = rounds.clone();
            for message in snapshot.messages {
                if result.is_err() {
                    break;
                }
                result = self.publish(slot, message).await;
            }
            let _ = snapshot.done.send(result);
        }
        rounds
    }
}

/// Publishes the shards' rounds until their side closes. Everything queued when a batch
/// starts goes out together, each slot's parts merged; the next batch waits for it (a
/// slot's next message needs the sequence of its last).
/// Snapshots queued meanwhile go out after their slots' rounds of the same batch.
pub async fn publish_rounds(log: Arc<Log>, rounds: flume::Receiver<Round>) {
    loop {
        let mut batch = Vec::new();
        let mut snapshots = Vec::new();
        tokio::select! {
            round = rounds.recv_async() => match round {
                Ok(round) => batch.push(round),
                Err(_) => return,
            },
            // Never closed: the log holds a sender.
            Ok(snapshot) = log.snapshots.1.recv_async() => snapshots.push(snapshot),
        }
        batch.extend(rounds.drain());
        snapshots.extend(log.snapshots.1.drain());
        let mut by_slot: BTreeMap<u32, (Vec<Bytes>, Vec<SnapshotParts>)> = BTreeMap::new();
        for round in &batch {
            for (slot, part) in &round.parts {
                by_slot.entry(*slot).or_default().0.push(part.clone());
            }
        }
        for snapshot in snapshots {
            by_slot.entry(snapshot.slot).or_default().1.push(snapshot);
        }
        let mut publishes = JoinSet::new();
        for (slot, (parts, snapshots)) in by_slot {
            let log = log.clone();
            publishes.spawn(async move { (slot, log.publish_slot(slot, parts, snapshots).await) });
        }
        let mut failed: HashMap<u32, String> = HashMap::new();
        while let Some(done) = publishes.join_next().await {
            match done {
                Ok((_, Ok(()))) => {}
                Ok((slot, Err(why))) => {
                    failed.insert(slot, why);
                }
                Err(e) => tracing::error!("a publish task failed: {e}"),
            }
        }
        if batch.is_empty() {
            continue;
        }
        log.metrics.replica_rounds.add(batch.len() as u64);
        for round in batch {
            let why = round.parts.iter().find_map(|(slot, _)| failed.get(slot));
            let result = match why {
                Some(why) => Err(why.clone()),
                None => Ok(()),
            };
            if result.is_err() {
                log.metrics.replica_failed.inc();
            }
            let _ = round.done.send(result);
        }
        for (slot, why) in &failed {
            tracing::warn!(slot, "a round was not replicated: {why}");
        }
    }
}

/// Rebuilds `slots`, whose claims just landed, from their logs on every shard of this
/// node; afterwards this node may serve them.
pub async fn take_over(
    log: &Log,
    slots: &BTreeSet<u32>,
    slot_count: u32,
    shards: &[flume::Sender<Replay>],
) -> Result<(), String> {
    let started = Instant::now();
    // Fence first: nothing the previous owner publishes after this is accepted, so the
    // log read below is the whole of what was acknowledged.
    let mut fences = JoinSet::new();
    for &slot in slots {
        let (js, subject) = (log.js.clone(), log.subject(slot));
        fences.spawn(async move {
            let sent = async {
                let ack = js.publish(subject, Bytes::new()).await?;
                ack.await
            };
            let result = match tokio::time::timeout(REQUEST_TIMEOUT, sent).await {
                Ok(Ok(ack)) => Ok(ack.sequence),
                Ok(Err(e)) => Err(format!("fencing slot {slot}: {e}")),
                Err(_) => Err(format!("fencing slot {slot}: no answer from JetStream")),
            };
            (slot, result)
        });
    }
    let mut fenced_at = BTreeMap::new();
    while let Some(done) = fences.join_next().await {
        let (slot, result) = done.map_err(|e| e.to_string())?;
        fenced_at.insert(slot, result?);
    }
    // Our fences are the last messages these slots will have until we serve them.
    let until = fenced_at.values().copied().max().unwrap_or(0);
    let (logs, entries) = read_logs(log, slots, until, Some(&log.metrics.replay_lag)).await?;
    let tips: Vec<(u32, Tip)> = fenced_at
        .iter()
        .map(|(&slot, &last)| {
            let since_snapshot = logs.get(&slot).map_or(0, SlotLog::since_snapshot);
            (
                slot,
                Tip {
                    last,
                    since_snapshot,
                },
            )
        })
        .collect();
    let writes = in_stream_order(logs);
    let read_ms = started.elapsed().as_millis() as u64;
    let writes = Arc::new(writes);
    let slots_arc = Arc::new(slots.clone());
    let mut answers = Vec::new();
    for shard in shards {
        let (done, answer) = flume::bounded(1);
        let replay = Replay {
            slots: slots_arc.clone(),
            slot_count,
            writes: writes.clone(),
            done,
        };
        shard
            .send_async(replay)
            .await
            .map_err(|_| "a shard stopped".to_string())?;
        answers.push(answer);
    }
    for answer in answers {
        answer
            .recv_async()
            .await
            .map_err(|_| "a shard stopped".to_string())??;
    }
    log.tips().extend(tips);
    log.metrics.replayed_entries.add(entries);
    log.metrics.replayed_writes.add(writes.len() as u64);
    tracing::info!(
        slots = slots.len(),
        entries,
        writes = writes.len(),
        read_ms,
        ms = started.elapsed().as_millis() as u64,
        "took slots over from their logs"
    );
    Ok(())
}

/// One take-over's part of the `replay_lag` gauge, taken back however its read ends.
struct LagShare<'a> {
    gauge: &'a Gauge,
    held: i64,
}

impl LagShare<'_> {
    fn set(&mut self, lag: u64) {
        let lag = i64::try_from(lag).unwrap_or(i64::MAX);
        self.gauge.add(lag - self.held);
        self.held = lag;
    }
}

impl Drop for LagShare<'_> {
    fn drop(&mut self) {
        self.gauge.sub(self.held);
    }
}

/// The logs of `slots` up to stream sequence `until` (for a take-over, the last of their
/// fences), and how many of their messages were read; `lag` (a take-over's) shows how
/// far the read is from `until`. One pull
/// consumer without acks, read in large batches that do not wait. Filtering on hundreds
/// of subjects was several times slower in JetStream than reading everything and keeping
/// the slots' messages here; for a few slots the filter wins.
pub(super) async fn read_logs(
    log: &Log,
    slots: &BTreeSet<u32>,
    until: u64,
    lag: Option<&Gauge>,
) -> Result<(BTreeMap<u32, SlotLog>, u64), String> {
    // A few slots: JetStream's subject index finds their messages. Many: one pass over
    // the whole stream is cheaper than filtering on hundreds of subjects.
    let (filter_subject, filter_subjects) = if slots.len() <= FILTERED_SLOTS {
        (
            String::new(),
            slots.iter().map(|&s| log.subject(s)).collect(),
        )
    } else {
        (format!("{}.writes.*", log.name), Vec::new())
    };
    let config = pull::Config {
        filter_subject,
        filter_subjects,
        ack_policy: AckPolicy::None,
        inactive_threshold: Duration::from_secs(30),
        // One replica in memory: a replicated consumer costs a Raft group per read, which
        // at a snapshot every few seconds stalled the stream's own publishes (ack p50 10x).
        num_replicas: 1,
        memory_storage: true,
        ..Default::default()
    };
    let failed = |e: &dyn std::fmt::Display| format!("replaying: {e}");
    let consumer = tokio::time::timeout(REQUEST_TIMEOUT, log.stream.create_consumer(config))
        .await
        .map_err(|_| "replaying: no answer from JetStream".to_string())?
        .map_err(|e| failed(&e))?;
    let read = read_consumer(&consumer, slots, until, lag).await;
    // Gone now rather than after its inactivity threshold.
    let (stream, name) = (log.stream.clone(), consumer.cached_info().name.clone());
    tokio::spawn(async move {
        let _ = tokio::time::timeout(REQUEST_TIMEOUT, stream.delete_consumer(&name)).await;
    });
    read
}

/// [`read_logs`]'s reading, through `consumer`.
async fn read_consumer(
    consumer: &async_nats::jetstream::consumer::Consumer<pull::Config>,
    slots: &BTreeSet<u32>,
    until: u64,
    lag: Option<&Gauge>,
) -> Result<(BTreeMap<u32, SlotLog>, u64), String> {
    let failed = |e: &dyn std::fmt::Display| format!("replaying: {e}");
    let mut logs: BTreeMap<u32, SlotLog> = BTreeMap::new();
    let mut entries = 0;
    let unshown = Gauge::default();
    let mut lag = LagShare {
        gauge: lag.unwrap_or(&unshown),
        held: 0,
    };
    loop {
        let mut batch = consumer
            .fetch()
            .max_messages(REPLAY_BATCH)
            .messages()
            .await
            .map_err(|e| failed(&e))?;
        let mut got = 0;
        loop {
            let next = tokio::time::timeout(REQUEST_TIMEOUT, batch.next())
                .await
                .map_err(|_| "replaying: no answer from JetStream".to_string())?;
            let Some(message) = next else { break };
            let message = message.map_err(|e| failed(&e))?;
            got += 1;
            let sequence = message.info().map_err(|e| failed(&e))?.stream_sequence;
            lag.set(until.saturating_sub(sequence));
            let slot = message
                .subject
                .rsplit('.')
                .next()
                .and_then(|s| s.parse::<u32>().ok());
            if let Some(slot) = slot.filter(|s| slots.contains(s)) {
                let decoded = SlotWrites::decode(&message.payload[..])
                    .map_err(|e| format!("replaying {}: {e}", message.subject))?;
                entries += 1;
                logs.entry(slot).or_default().add(sequence, decoded);
            }
            if sequence >= until {
                return Ok((logs, entries));
            }
        }
        if got == 0 {
            return Err("replaying: the log ended before its fence".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_overs_add_their_lag_and_take_it_back_however_they_end() {
        let gauge = Gauge::default();
        let mut first = LagShare {
            gauge: &gauge,
            held: 0,
        };
        let mut second = LagShare {
            gauge: &gauge,
            held: 0,
        };
        first.set(100);
        second.set(40);
        assert_eq!(gauge.get(), 140);
        first.set(30);
        assert_eq!(gauge.get(), 70);
        // The first ends early (an error): its share goes; the second's stays.
        drop(first);
        assert_eq!(gauge.get(), 40);
        second.set(0);
        drop(second);
        assert_eq!(gauge.get(), 0);
    }
}
