//! Push notifications: each user's device tokens, and the shard's outbox of jobs for the
//! push gateway.
//!
//! A job is staged in the same batch as the message it announces, so the two are durable
//! together. Job ids grow in staging order; since a commit writes everything staged at
//! once, the committed jobs are always the ones up to some id, and a reader that remembers
//! the last id it read never misses one.

use std::cell::Cell;

use prost::Message as _;
use rocksdb::{Direction, IteratorMode};

use crate::records::{PushDevice, PushJob, PushTokens};
use crate::{
    cf_handle, corrupt, decode, keys, Result, Store, CF_PUSH_OUTBOX, CF_PUSH_TOKENS,
    CF_PUSH_TOKEN_OWNERS, CF_READ_MARKERS,
};

/// Most push tokens one user keeps; registering one more drops the oldest.
pub const MAX_PUSH_TOKENS: usize = 10;

/// What the store knows about its outbox without scanning it: read from disk on first use
/// (and after a failed commit), then kept current by staging and deleting.
#[derive(Debug, Default)]
pub(crate) struct OutboxState {
    /// The id the next staged job gets; 0 = not read yet. Never goes back, even when staged
    /// jobs are lost to a failed commit, so a reader's "last id read" stays valid.
    next_id: Cell<u64>,
    /// Jobs on disk plus staged, minus staged deletions; `None` = to be counted.
    len: Cell<Option<u64>>,
}

impl OutboxState {
    /// Staged jobs were dropped (a failed commit): count again from disk.
    pub(crate) fn forget_staged(&self) {
        self.len.set(None);
    }
}

impl Store {
    // ---- tokens ----

    /// The user's push devices, oldest first.
    pub fn push_tokens(&self, user: u64) -> Result<Vec<PushDevice>> {
        let tokens: Option<PushTokens> = self.get(CF_PUSH_TOKENS, &keys::user(user))?;
        Ok(tokens.map(|t| t.devices).unwrap_or_default())
    }

    /// Adds a push token for `user`, now (not staged: two registrations in one group commit
    /// would otherwise overwrite each other). A token already registered is moved to the
    /// newest place with `platform`; beyond [`MAX_PUSH_TOKENS`] the oldest is dropped.
    pub fn add_push_token(&self, user: u64, platform: i32, token: &str, now_us: u64) -> Result<()> {
        let mut devices = self.push_tokens(user)?;
        devices.retain(|d| d.token != token);
        devices.push(PushDevice {
            platform,
            token: token.to_string(),
            created_us: now_us,
        });
        let excess = devices.len().saturating_sub(MAX_PUSH_TOKENS);
        devices.drain(..excess);
        self.put_push_tokens(user, devices)
    }

    /// On the token's shard (`routing::shard_of_token`): records `user` as the owner of
    /// the token with this SHA-256, now; returns the previous owner if it was someone else.
    pub fn claim_push_token(&self, token_hash: &[u8; 32], user: u64) -> Result<Option<u64>> {
        let db = self.db()?;
        let cf = cf_handle(&db, CF_PUSH_TOKEN_OWNERS);
        let previous = match db.get_pinned_cf(cf, token_hash)? {
            Some(v) => Some(
                keys::u64_at(&v, 0)
                    .ok_or_else(|| corrupt(CF_PUSH_TOKEN_OWNERS, "owner is not 8 bytes"))?,
            ),
            None => None,
        };
        self.put_now(&db, cf, token_hash, keys::user(user))?;
        Ok(previous.filter(|&p| p != user))
    }

    /// Removes those of `tokens` that `user` has, now; returns how many were removed.
    pub fn remove_push_tokens(&self, user: u64, tokens: &[String]) -> Result<usize> {
        let mut devices = self.push_tokens(user)?;
        let before = devices.len();
        devices.retain(|d| !tokens.contains(&d.token));
        let removed = before - devices.len();
        if removed > 0 {
            self.put_push_tokens(user, devices)?;
        }
        Ok(removed)
    }

    fn put_push_tokens(&self, user: u64, devices: Vec<PushDevice>) -> Result<()> {
        let db = self.db()?;
        let cf = cf_handle(&db, CF_PUSH_TOKENS);
        if devices.is_empty() {
            self.delete_now(&db, cf, keys::user(user))?;
        } else {
            let value = PushTokens { devices }.encode_to_vec();
            self.put_now(&db, cf, keys::user(user), value)?;
        }
        Ok(())
    }

    // ---- outbox ----

    /// Reads the outbox's length and last id from disk if not known yet.
    fn outbox_loaded(&self) -> Result<u64> {
        if let Some(len) = self.push_outbox.len.get() {
            return Ok(len);
        }
        let db = self.db()?;
        let mut len = 0u64;
        let mut last = 0u64;
        for item in db.iterator_cf(cf_handle(&db, CF_PUSH_OUTBOX), IteratorMode::Start) {
            let (key, _) = item?;
            last = keys::u64_at(&key, 0).ok_or_else(|| corrupt(CF_PUSH_OUTBOX, "short key"))?;
            len += 1;
        }
        let state = &self.push_outbox;
        state.next_id.set(state.next_id.get().max(last + 1));
        state.len.set(Some(len));
        Ok(len)
    }

    /// How many jobs the outbox holds, staged ones included.
    pub fn push_jobs_queued(&self) -> Result<u64> {
        self.outbox_loaded()
    }

    /// Stages a job (durable after [`Store::commit`]); returns its id.
    pub fn stage_push_job(&self, job: &PushJob) -> Result<u64> {
        let len = self.outbox_loaded()?;
        let state = &self.push_outbox;
        let id = state.next_id.get();
        {
            let db = self.db()?;
            self.pending.borrow_mut().put_cf(
                cf_handle(&db, CF_PUSH_OUTBOX),
                keys::push_job(id),
                job.encode_to_vec(),
            );
        }
        state.next_id.set(id + 1);
        state.len.set(Some(len + 1));
        Ok(id)
    }

    /// Up to `limit` committed jobs with id > `after_id`, in id order.
    pub fn push_jobs_after(&self, after_id: u64, limit: usize) -> Result<Vec<(u64, PushJob)>> {
        let Some(first) = after_id.checked_add(1) else {
            return Ok(Vec::new());
        };
        let db = self.db()?;
        let start = keys::push_job(first);
        let iter = db.iterator_cf(
            cf_handle(&db, CF_PUSH_OUTBOX),
            IteratorMode::From(&start, Direction::Forward),
        );
        let mut out = Vec::new();
        for item in iter.take(limit) {
            let (key, value) = item?;
            let id = keys::u64_at(&key, 0).ok_or_else(|| corrupt(CF_PUSH_OUTBOX, "short key"))?;
            out.push((id, decode(CF_PUSH_OUTBOX, &value)?));
        }
        Ok(out)
    }

    /// One committed job.
    pub fn push_job(&self, id: u64) -> Result<Option<PushJob>> {
        self.get(CF_PUSH_OUTBOX, &keys::push_job(id))
    }

    /// Stages the deletion of jobs that were delivered or given up (each id once).
    pub fn stage_push_jobs_done(&self, ids: &[u64]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let len = self.outbox_loaded()?;
        {
            let db = self.db()?;
            let cf = cf_handle(&db, CF_PUSH_OUTBOX);
            let mut batch = self.pending.borrow_mut();
            for &id in ids {
                batch.delete_cf(cf, keys::push_job(id));
            }
        }
        let removed = u64::try_from(ids.len()).unwrap_or(u64::MAX);
        self.push_outbox.len.set(Some(len.saturating_sub(removed)));
        Ok(())
    }

    // ---- read state ----

    /// How far `reader` has read a conversation (a seq of their inbox for a user, a group
    /// seq for a group); 0 when never marked.
    pub fn read_marker(&self, reader: u64, group: bool, conversation: u64) -> Result<u64> {
        let db = self.db()?;
        let key = keys::read_marker(reader, group, conversation);
        let value = db.get_pinned_cf(cf_handle(&db, CF_READ_MARKERS), key)?;
        match value {
            None => Ok(0),
            Some(v) => {
                keys::u64_at(&v, 0).ok_or_else(|| corrupt(CF_READ_MARKERS, "marker is not 8 bytes"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // reason: test code
    use super::*;
    use crate::Durability;

    fn job(user: u64, seq: u64) -> PushJob {
        PushJob {
            user,
            sender: 7,
            conversation: 7,
            group: false,
            seq,
            timestamp_us: seq * 10,
            preview: Some(format!("m{seq}")),
            media_kind: 0,
        }
    }

    #[test]
    fn tokens_are_capped_replaced_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Durability::Wal).unwrap();
        for i in 0..12u64 {
            store.add_push_token(1, 1, &format!("t{i}"), i).unwrap();
        }
        let tokens: Vec<_> = store.push_tokens(1).unwrap();
        assert_eq!(tokens.len(), MAX_PUSH_TOKENS);
        assert_eq!(tokens[0].token, "t2", "the two oldest were dropped");
        // Registering again replaces the platform and makes the token the newest.
        store.add_push_token(1, 2, "t2", 99).unwrap();
        let tokens = store.push_tokens(1).unwrap();
        assert_eq!(tokens.len(), MAX_PUSH_TOKENS);
        let last = tokens.last().unwrap();
        assert_eq!((last.token.as_str(), last.platform), ("t2", 2));
        let removed = store
            .remove_push_tokens(1, &["t2".into(), "nope".into()])
            .unwrap();
        assert_eq!(removed, 1);
        assert_eq!(store.push_tokens(1).unwrap().len(), MAX_PUSH_TOKENS - 1);
        assert!(store.push_tokens(2).unwrap().is_empty());
    }

    #[test]
    fn jobs_are_durable_with_their_commit_and_ids_continue_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), Durability::Wal).unwrap();
            let ids: Vec<u64> = (1..=3)
                .map(|s| store.stage_push_job(&job(5, s)).unwrap())
                .collect();
            assert_eq!(store.push_jobs_queued().unwrap(), 3);
            assert!(
                store.push_jobs_after(0, 10).unwrap().is_empty(),
                "staged, not committed"
            );
            store.commit().unwrap();
            let read = store.push_jobs_after(0, 2).unwrap();
            assert_eq!(read.len(), 2);
            assert_eq!((read[0].0, read[1].1.seq), (ids[0], 2));
            assert_eq!(store.push_jobs_after(ids[1], 10).unwrap().len(), 1);
            store.stage_push_jobs_done(&ids[..1]).unwrap();
            assert_eq!(store.push_jobs_queued().unwrap(), 2);
            store.commit().unwrap();
            store.close().unwrap();
        }
        let store = Store::open(dir.path(), Durability::Wal).unwrap();
        assert_eq!(store.push_jobs_queued().unwrap(), 2);
        let remaining = store.push_jobs_after(0, 10).unwrap();
        assert_eq!(remaining.len(), 2);
        let last = remaining[1].0;
        assert_eq!(store.push_job(last).unwrap().unwrap().seq, 3);
        let next = store.stage_push_job(&job(5, 4)).unwrap();
        assert!(next > last, "ids keep growing across a reopen");
        store.commit().unwrap();
        assert_eq!(store.push_jobs_queued().unwrap(), 3);
    }

    #[test]
    fn read_marker_reads_what_mark_read_advanced() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Durability::Wal).unwrap();
        assert_eq!(store.read_marker(1, false, 2).unwrap(), 0);
        store.advance_read_marker(1, false, 2, 9).unwrap();
        store.advance_read_marker(1, true, 2, 4).unwrap();
        store.commit().unwrap();
        assert_eq!(store.read_marker(1, false, 2).unwrap(), 9);
        assert_eq!(store.read_marker(1, true, 2).unwrap(), 4);
    }
}
