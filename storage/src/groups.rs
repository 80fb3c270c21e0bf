//! Groups: the group record and log on the group's own shard, and each member shard's one
//! copy of every entry with a reference to it in each local member's inbox.
//!
//! A group log entry is a `pb::Event` whose seq is the group seq and whose kind is a
//! `Message` (with `group_id` set) or a `GroupChange`.

use chat_protocol::pb::{self, event};
use prost::Message as _;
use rocksdb::{Direction, IteratorMode};

use crate::records::{GroupRef, InboxRef, SendRecord};
use crate::{
    cf_handle, corrupt, decode, keys, HistoryPage, Result, StorageError, Store, CF_GROUPS,
    CF_GROUP_COPIES, CF_GROUP_IDEMPOTENCY, CF_GROUP_LOG, CF_GROUP_PENDING, CF_INBOX,
};

/// The group a log entry belongs to.
pub fn group_of(entry: &pb::Event) -> Option<u64> {
    match entry.kind.as_ref()? {
        event::Kind::Message(m) if m.group_id != 0 => Some(m.group_id),
        event::Kind::GroupChange(c) => Some(c.group_id),
        event::Kind::MessageChange(c) if c.group_id != 0 => Some(c.group_id),
        _ => None,
    }
}

fn timestamp_of(entry: &pb::Event) -> u64 {
    match entry.kind.as_ref() {
        Some(event::Kind::Message(m) | event::Kind::Sent(m)) => m.timestamp_us,
        Some(event::Kind::GroupChange(c)) => c.timestamp_us,
        Some(event::Kind::Receipt(r)) => r.timestamp_us,
        Some(event::Kind::Read(r)) => r.timestamp_us,
        Some(event::Kind::MessageChange(c)) => c.timestamp_us,
        None => 0,
    }
}

impl Store {
    /// The group's record with `head_seq` filled in, or `None` when there is no such group
    /// on this shard.
    pub fn group(&self, group_id: u64) -> Result<Option<pb::Group>> {
        let Some(mut group) = self.get::<pb::Group>(CF_GROUPS, &keys::user(group_id))? else {
            return Ok(None);
        };
        group.head_seq = self.group_head(group_id)?;
        Ok(Some(group))
    }

    /// Stages the group record (name and members; `head_seq` is not stored).
    pub fn stage_group(&self, group: &pb::Group) -> Result<()> {
        let db = self.db()?;
        let record = pb::Group {
            head_seq: 0,
            ..group.clone()
        };
        self.pending.borrow_mut().put_cf(
            cf_handle(&db, CF_GROUPS),
            keys::user(group.group_id),
            record.encode_to_vec(),
        );
        Ok(())
    }

    /// The group seq of the group's latest log entry (0 when the log is empty).
    pub fn group_head(&self, group_id: u64) -> Result<u64> {
        Ok(self.group_tail(group_id)?.0)
    }

    /// (group seq, timestamp) of the group's latest log entry; (0, 0) when empty.
    fn group_tail(&self, group_id: u64) -> Result<(u64, u64)> {
        if let Some(&tail) = self.group_heads.borrow().get(&group_id) {
            return Ok(tail);
        }
        let db = self.db()?;
        let end = keys::group_log(group_id, u64::MAX);
        let mut iter = db.iterator_cf(
            cf_handle(&db, CF_GROUP_LOG),
            IteratorMode::From(&end, Direction::Reverse),
        );
        let tail = match iter.next().transpose()? {
            Some((key, value)) if keys::u64_at(&key, 0) == Some(group_id) => {
                let entry = decode::<pb::Event>(CF_GROUP_LOG, &value)?;
                (entry.seq, timestamp_of(&entry))
            }
            _ => (0, 0),
        };
        self.group_heads.borrow_mut().insert(group_id, tail);
        Ok(tail)
    }

    /// Where an earlier group send with this (sender, client_msg_id) was stored.
    pub fn find_group_send(
        &self,
        group_id: u64,
        sender: u64,
        client_msg_id: u64,
    ) -> Result<Option<SendRecord>> {
        let key = keys::idempotency(group_id, sender, client_msg_id);
        self.staged_or_stored_send(&self.staged_group_sends, CF_GROUP_IDEMPOTENCY, &key)
    }

    /// Stages the group's next log entry: assigns its group seq, and marks it as not yet
    /// handed to the members' shards (see [`Store::pending_fanouts`]). `sent_by` records a
    /// message's (sender, client_msg_id) so that a retry is stored once. The entry's
    /// timestamp is raised above the previous entry's if needed (a clock that stepped back
    /// across a restart), so the log's time order stays its seq order. Returns the entry.
    pub fn stage_group_entry(
        &self,
        group_id: u64,
        timestamp_us: u64,
        kind: event::Kind,
        sent_by: Option<(u64, u64)>,
    ) -> Result<pb::Event> {
        let (last_seq, last_us) = self.group_tail(group_id)?;
        let seq = last_seq
            .checked_add(1)
            .ok_or(StorageError::SeqExhausted(group_id))?;
        let timestamp_us = timestamp_us.max(last_us + 1);
        let kind = match kind {
            event::Kind::Message(m) => event::Kind::Message(pb::Message {
                seq,
                group_id,
                timestamp_us,
                ..m
            }),
            event::Kind::GroupChange(c) => event::Kind::GroupChange(pb::GroupChange {
                seq,
                group_id,
                timestamp_us,
                ..c
            }),
            event::Kind::MessageChange(c) => event::Kind::MessageChange(pb::MessageChange {
                seq,
                group_id,
                timestamp_us,
                ..c
            }),
            event::Kind::Receipt(_) | event::Kind::Sent(_) | event::Kind::Read(_) => {
                return Err(corrupt(CF_GROUP_LOG, "not a group log entry"))
            }
        };
        let entry = pb::Event {
            seq,
            kind: Some(kind),
        };
        {
            let db = self.db()?;
            let mut batch = self.pending.borrow_mut();
            batch.put_cf(
                cf_handle(&db, CF_GROUP_LOG),
                keys::group_log(group_id, timestamp_us),
                entry.encode_to_vec(),
            );
            batch.put_cf(
                cf_handle(&db, CF_GROUP_PENDING),
                keys::group_entry(group_id, seq),
                timestamp_us.to_be_bytes(),
            );
            if let Some((sender, client_msg_id)) = sent_by {
                let key = keys::idempotency(group_id, sender, client_msg_id);
                let record = SendRecord { seq, timestamp_us };
                batch.put_cf(
                    cf_handle(&db, CF_GROUP_IDEMPOTENCY),
                    key,
                    record.encode_to_vec(),
                );
                self.staged_group_sends.borrow_mut().insert(key, record);
            }
        }
        self.group_heads
            .borrow_mut()
            .insert(group_id, (seq, timestamp_us));
        Ok(entry)
    }

    /// Every member shard has stored the entry: it no longer needs handing out after a
    /// restart.
    pub fn stage_fanout_done(&self, group_id: u64, seq: u64) -> Result<()> {
        let db = self.db()?;
        self.pending.borrow_mut().delete_cf(
            cf_handle(&db, CF_GROUP_PENDING),
            keys::group_entry(group_id, seq),
        );
        Ok(())
    }

    /// Records who, besides the group's members at hand-out time, must receive `entry`
    /// (the member a REMOVED or LEFT change is about), in case it is handed out again after
    /// a restart. Staged.
    pub fn stage_fanout_extras(&self, entry: &pb::Event, extras: &[u64]) -> Result<()> {
        let group_id =
            group_of(entry).ok_or_else(|| corrupt(CF_GROUP_PENDING, "entry of no group"))?;
        let mut value = timestamp_of(entry).to_be_bytes().to_vec();
        for user in extras {
            value.extend_from_slice(&user.to_be_bytes());
        }
        let db = self.db()?;
        self.pending.borrow_mut().put_cf(
            cf_handle(&db, CF_GROUP_PENDING),
            keys::group_entry(group_id, entry.seq),
            value,
        );
        Ok(())
    }

    /// Log entries whose hand-out to member shards was not confirmed before the last stop,
    /// in (group, seq) order, each with its extra recipients (see
    /// [`Store::stage_fanout_extras`]).
    pub fn pending_fanouts(&self) -> Result<Vec<(pb::Event, Vec<u64>)>> {
        let db = self.db()?;
        let mut out = Vec::new();
        for item in db.iterator_cf(cf_handle(&db, CF_GROUP_PENDING), IteratorMode::Start) {
            let (key, value) = item?;
            let group_id =
                keys::u64_at(&key, 0).ok_or_else(|| corrupt(CF_GROUP_PENDING, "short key"))?;
            let timestamp_us =
                keys::u64_at(&value, 0).ok_or_else(|| corrupt(CF_GROUP_PENDING, "short value"))?;
            let entry = db.get_pinned_cf(
                cf_handle(&db, CF_GROUP_LOG),
                keys::group_log(group_id, timestamp_us),
            )?;
            let extras = value
                .get(8..)
                .unwrap_or_default()
                .chunks_exact(8)
                .filter_map(|c| keys::u64_at(c, 0))
                .collect();
            match entry {
                Some(bytes) => out.push((decode(CF_GROUP_LOG, &bytes)?, extras)),
                None => return Err(corrupt(CF_GROUP_PENDING, "entry missing from the log")),
            }
        }
        Ok(out)
    }

    /// On a member's shard: stores the group entry once and appends a reference to it to
    /// each of `members`' inboxes. Returns each member's new inbox event, or nothing when
    /// this shard already stored the entry (a hand-out repeated after a restart).
    pub fn stage_group_delivery(
        &self,
        entry: &pb::Event,
        members: &[u64],
    ) -> Result<Vec<(u64, pb::Event)>> {
        let group_id =
            group_of(entry).ok_or_else(|| corrupt(CF_GROUP_COPIES, "entry of no group"))?;
        let copy_key = keys::group_entry(group_id, entry.seq);
        {
            let db = self.db()?;
            if db
                .get_pinned_cf(cf_handle(&db, CF_GROUP_COPIES), copy_key)?
                .is_some()
            {
                return Ok(Vec::new());
            }
        }
        let mut delivered = Vec::with_capacity(members.len());
        let db = self.db()?;
        let mut batch = self.pending.borrow_mut();
        batch.put_cf(
            cf_handle(&db, CF_GROUP_COPIES),
            copy_key,
            entry.encode_to_vec(),
        );
        if let Some(event::Kind::GroupChange(change)) = &entry.kind {
            self.index_membership(&mut batch, &db, change, members);
        }
        for &member in members {
            let seq = self.next_inbox_seq(member)?;
            let reference = InboxRef {
                seq,
                group_ref: Some(GroupRef {
                    group_id,
                    seq: entry.seq,
                }),
                sent_ref: None,
            };
            batch.put_cf(
                cf_handle(&db, CF_INBOX),
                keys::inbox(member, seq),
                reference.encode_to_vec(),
            );
            self.heads.borrow_mut().insert(member, seq);
            delivered.push((
                member,
                pb::Event {
                    seq,
                    kind: entry.kind.clone(),
                },
            ));
        }
        Ok(delivered)
    }

    /// Resolves an inbox value that decoded to an event without a kind: a group reference
    /// (or a message the owner sent, see `own`).
    pub(crate) fn resolve_inbox_ref(&self, value: &[u8]) -> Result<pb::Event> {
        let reference: InboxRef = decode(CF_INBOX, value)?;
        if let Some(sent) = reference.sent_ref {
            return self.resolve_sent_ref(reference.seq, sent);
        }
        let Some(GroupRef { group_id, seq }) = reference.group_ref else {
            return Err(corrupt(CF_INBOX, "event without a kind"));
        };
        let entry: pb::Event = self
            .get(CF_GROUP_COPIES, &keys::group_entry(group_id, seq))?
            .ok_or_else(|| corrupt(CF_GROUP_COPIES, "referenced group entry is missing"))?;
        Ok(pb::Event {
            seq: reference.seq,
            kind: entry.kind,
        })
    }

    /// Up to `limit` messages of a group with timestamp < `before_us` (0 = no bound),
    /// oldest first; membership changes are not included.
    pub fn group_history(
        &self,
        group_id: u64,
        before_us: u64,
        limit: usize,
    ) -> Result<HistoryPage> {
        if before_us == 1 || limit == 0 {
            return Ok(HistoryPage::default());
        }
        let bound = if before_us == 0 {
            u64::MAX
        } else {
            before_us - 1
        };
        let db = self.db()?;
        let start = keys::group_log(group_id, bound);
        let iter = db.iterator_cf(
            cf_handle(&db, CF_GROUP_LOG),
            IteratorMode::From(&start, Direction::Reverse),
        );
        let mut messages = Vec::with_capacity(limit.min(256));
        let mut more = false;
        for item in iter {
            let (key, value) = item?;
            if keys::u64_at(&key, 0) != Some(group_id) {
                break;
            }
            let entry: pb::Event = decode(CF_GROUP_LOG, &value)?;
            let Some(event::Kind::Message(message)) = entry.kind else {
                continue;
            };
            if messages.len() == limit {
                more = true;
                break;
            }
            messages.push(message);
        }
        messages.reverse();
        Ok(HistoryPage { messages, more })
    }
}
