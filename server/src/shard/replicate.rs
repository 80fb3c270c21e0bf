//! A cluster shard's group commit: the round's writes go to RocksDB, then to their slots'
//! logs (`cluster::replica`), and only then is anything that depends on them answered or
//! sent on. One round is in flight per shard; what arrives meanwhile is staged for the
//! next one. Also the other direction: a slot's log replayed into this shard's store.

use bytes::Bytes;

use super::*;
use crate::cluster::replica::{Replay, ReplicaState, Round};
use crate::cluster::ClusterView;

/// A cluster shard's ends of replication.
#[derive(Debug, Clone)]
pub struct ShardReplica {
    pub rounds: flume::Sender<Round>,
    pub state: Arc<ReplicaState>,
    pub view: ClusterView,
}

impl Shard {
    /// Commits the staged writes, publishes them to their slots' logs, then finishes the
    /// work that waited for them. A round that cannot be published is failed with
    /// UNAVAILABLE (clients retry; sends are idempotent) and the slots it wrote are dirty:
    /// refused until rebuilt from their logs, so no later answer rests on its writes.
    pub async fn commit_replicated(self: &Rc<Self>) {
        let Some(work) = self.commit_local() else {
            return;
        };
        let Some(replica) = &self.replica else {
            self.finish(work);
            return;
        };
        let writes = self.store.take_captured();
        if !writes.is_empty() {
            let map = replica.view.load();
            let state = &replica.state;
            let split = crate::replica::split(&writes, map.slot_count(), |slot| {
                map.owned(slot) && !state.is_dirty(slot)
            });
            let touched: Vec<u32> = split
                .slots
                .keys()
                .chain(split.unowned.iter())
                .copied()
                .collect();
            let published = if split.unowned.is_empty() {
                self.publish(replica, split.slots).await
            } else {
                Err(format!(
                    "writes for {} slots this node does not serve",
                    split.unowned.len()
                ))
            };
            if let Err(why) = published {
                tracing::warn!(
                    shard = self.id,
                    slots = touched.len(),
                    "a group commit was not replicated: {why}"
                );
                state.mark_dirty(touched);
                self.fail_work(work, ErrorCode::Unavailable, "not replicated; retry");
                return;
            }
        }
        let (stale, work): (Vec<_>, Vec<_>) = work
            .into_iter()
            .partition(|item| self.rests_on_unserved(item));
        self.fail_work(stale, ErrorCode::Unavailable, "not replicated; retry");
        self.finish(work);
    }

    /// The last commit, at shutdown. In a cluster its writes can no longer be published
    /// (the node has left): nothing behind them is acknowledged; clients resend to the
    /// slots' new owners.
    pub fn commit_at_stop(self: &Rc<Self>) {
        if self.replica.is_none() {
            return self.commit_staged();
        }
        if let Some(work) = self.commit_local() {
            self.fail_work(work, ErrorCode::Unavailable, "server is shutting down");
        }
    }

    async fn publish(
        &self,
        replica: &ShardReplica,
        slots: std::collections::BTreeMap<u32, Vec<u8>>,
    ) -> Result<(), String> {
        if slots.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let (done, answer) = flume::bounded(1);
        let parts = slots
            .into_iter()
            .map(|(slot, part)| (slot, Bytes::from(part)))
            .collect();
        let round = Round { parts, done };
        let stopped = || "the cluster thread stopped".to_string();
        replica
            .rounds
            .send_async(round)
            .await
            .map_err(|_| stopped())?;
        let result = answer.recv_async().await.map_err(|_| stopped())?;
        self.metrics.replication_seconds.observe(started.elapsed());
        result
    }

    /// A duplicate send answered from a record this shard keeps, in a slot it does not
    /// serve cleanly now: that record may be one whose round was never replicated.
    fn rests_on_unserved(&self, item: &AfterCommit) -> bool {
        let Some(replica) = &self.replica else {
            return false;
        };
        let user = match item {
            AfterCommit::StoredForRecipient {
                msg,
                duplicate: true,
                ..
            } => msg.to_user_id,
            AfterCommit::RecordedForSender {
                msg,
                duplicate: true,
                ..
            } => msg.from_user_id,
            _ => return false,
        };
        let map = replica.view.load();
        let slot = map.slot_of(user);
        !map.owned(slot) || replica.state.is_dirty(slot)
    }

    /// Ends the sessions of users whose slots were just rebuilt, and closes their
    /// connections: a session's stream position was taken from the store before the
    /// rebuild, which may have dropped entries the log lacked, so later entries would
    /// reuse seqs the client has seen (and never be pushed to it). The client resumes and
    /// catches up from the rebuilt store.
    fn close_rebuilt_sessions(
        self: &Rc<Self>,
        slots: &std::collections::BTreeSet<u32>,
        count: u32,
    ) {
        let rebuilt: Vec<(u64, ConnRef)> = self
            .sessions
            .borrow()
            .iter()
            .filter(|(&user, _)| slots.contains(&crate::cluster::rendezvous::slot_of(user, count)))
            .flat_map(|(&user, list)| list.iter().map(move |s| (user, s.conn)))
            .collect();
        for (user, conn) in rebuilt {
            self.end_session(user, conn);
            let why = "your account's data was rebuilt on this node; reconnect and resume";
            let env = error_envelope(0, ErrorCode::Unavailable, why);
            self.to_conn(conn, Auth::LoggedOut, env);
        }
    }

    /// Replaces what this shard holds of the replayed slots by their logs' writes.
    pub fn replay(self: &Rc<Self>, replay: &Replay) -> Result<(), String> {
        let slots = &replay.slots;
        let count = replay.slot_count;
        // Writes staged before the take-over (a node paused with work queued) land now,
        // not over the rebuilt slot; their round publishes them, or fails and marks
        // their slots dirty.
        self.store
            .commit()
            .map_err(|e| format!("committing before a take-over: {e}"))?;
        let wiped = self
            .store
            .wipe(|owner| crate::replica::wiped_by(owner, slots, count))
            .map_err(|e| format!("wiping slots: {e}"))?;
        let mine: Vec<_> = replay
            .writes
            .iter()
            .filter(|w| {
                let owner = chat_storage::replica::owner_of(w);
                crate::replica::lands_on(&owner, self.id, self.shards)
            })
            .cloned()
            .collect();
        self.store
            .apply(&mine)
            .map_err(|e| format!("applying replayed writes: {e}"))?;
        // Cached groups and uploads may describe what the wipe removed.
        self.groups.forget_cached();
        self.uploads.forget_cached();
        self.close_rebuilt_sessions(slots, count);
        tracing::info!(
            shard = self.id,
            slots = slots.len(),
            wiped,
            applied = mine.len(),
            "rebuilt slots from their logs"
        );
        Ok(())
    }
}
