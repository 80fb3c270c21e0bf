//! Receipts and read state: each reader's read marker per conversation, each group's
//! per-member delivered/read marks, and finding whose messages a marker covers.

use std::collections::HashMap;

use chat_protocol::pb::{self, event};
use prost::Message as _;
use rocksdb::{Direction, IteratorMode};

use crate::records::GroupMarks;
use crate::{
    cf_handle, corrupt, decode, keys, Result, Store, CF_GROUP_LOG, CF_GROUP_RECEIPTS, CF_INBOX,
    CF_READ_MARKERS, CF_USERS,
};

/// How many log or inbox entries one marker update looks at to find the senders it covers;
/// a marker that jumps further only sends receipts for the newest ones.
pub const RECEIPT_SCAN_LIMIT: usize = 10_000;

impl Store {
    /// Appends an event of `kind` to `user_id`'s inbox (durable after [`Store::commit`]).
    pub fn stage_event(&self, user_id: u64, kind: event::Kind) -> Result<pb::Event> {
        let seq = self.next_inbox_seq(user_id)?;
        let event = pb::Event {
            seq,
            kind: Some(kind),
        };
        {
            let db = self.db()?;
            self.pending.borrow_mut().put_cf(
                cf_handle(&db, CF_INBOX),
                keys::inbox(user_id, seq),
                event.encode_to_vec(),
            );
        }
        self.heads.borrow_mut().insert(user_id, seq);
        Ok(event)
    }

    /// Replaces a user's record (settings), now.
    pub fn put_user(&self, user: &crate::UserRecord) -> Result<()> {
        let db = self.db()?;
        self.put_now(
            &db,
            cf_handle(&db, CF_USERS),
            keys::user(user.user_id),
            user.encode_to_vec(),
        )?;
        Ok(())
    }

    /// Moves `reader`'s read marker in a conversation forward to `seq`; returns the previous
    /// marker, or `None` when it was already at or past `seq`. Staged.
    pub fn advance_read_marker(
        &self,
        reader: u64,
        group: bool,
        conversation: u64,
        seq: u64,
    ) -> Result<Option<u64>> {
        let key = keys::read_marker(reader, group, conversation);
        let db = self.db()?;
        let staged = self.staged_read_markers.borrow().get(&key).copied();
        let old = match staged {
            Some(marker) => marker,
            None => match db.get_pinned_cf(cf_handle(&db, CF_READ_MARKERS), key)? {
                None => 0,
                Some(v) => keys::u64_at(&v, 0)
                    .ok_or_else(|| corrupt(CF_READ_MARKERS, "marker is not 8 bytes"))?,
            },
        };
        if seq <= old {
            return Ok(None);
        }
        self.pending
            .borrow_mut()
            .put_cf(cf_handle(&db, CF_READ_MARKERS), key, seq.to_be_bytes());
        self.staged_read_markers.borrow_mut().insert(key, seq);
        Ok(Some(old))
    }

    /// Moves a member's delivered and/or read marks in a group forward; returns the marks
    /// before. Staged.
    pub fn advance_group_marks(
        &self,
        group_id: u64,
        member: u64,
        delivered: u64,
        read: u64,
    ) -> Result<GroupMarks> {
        let key = keys::group_entry(group_id, member);
        let staged = self.staged_group_marks.borrow().get(&key).copied();
        let old = match staged {
            Some(marks) => marks,
            None => self.get(CF_GROUP_RECEIPTS, &key)?.unwrap_or_default(),
        };
        let new = GroupMarks {
            delivered: old.delivered.max(delivered).max(read),
            read: old.read.max(read),
        };
        if new != old {
            let db = self.db()?;
            self.pending.borrow_mut().put_cf(
                cf_handle(&db, CF_GROUP_RECEIPTS),
                key,
                new.encode_to_vec(),
            );
            self.staged_group_marks.borrow_mut().insert(key, new);
        }
        Ok(old)
    }

    /// Every member's marks in a group that has any.
    pub fn group_marks(&self, group_id: u64) -> Result<Vec<(u64, GroupMarks)>> {
        let db = self.db()?;
        let start = keys::group_entry(group_id, 0);
        let iter = db.iterator_cf(
            cf_handle(&db, CF_GROUP_RECEIPTS),
            IteratorMode::From(&start, Direction::Forward),
        );
        let mut out = Vec::new();
        for item in iter {
            let (key, value) = item?;
            if keys::u64_at(&key, 0) != Some(group_id) {
                break;
            }
            let member =
                keys::u64_at(&key, 8).ok_or_else(|| corrupt(CF_GROUP_RECEIPTS, "short key"))?;
            out.push((member, decode(CF_GROUP_RECEIPTS, &value)?));
        }
        Ok(out)
    }

    /// Senders of the group messages with group seq in (`after`, `up_to`], each with the
    /// highest such seq. Walks the log back from its newest entry.
    pub fn group_senders(
        &self,
        group_id: u64,
        after: u64,
        up_to: u64,
    ) -> Result<HashMap<u64, u64>> {
        let db = self.db()?;
        let end = keys::group_log(group_id, u64::MAX);
        let iter = db.iterator_cf(
            cf_handle(&db, CF_GROUP_LOG),
            IteratorMode::From(&end, Direction::Reverse),
        );
        let mut senders = HashMap::new();
        for item in iter.take(RECEIPT_SCAN_LIMIT) {
            let (key, value) = item?;
            if keys::u64_at(&key, 0) != Some(group_id) {
                break;
            }
            let entry: pb::Event = decode(CF_GROUP_LOG, &value)?;
            if entry.seq <= after {
                break;
            }
            if entry.seq > up_to {
                continue;
            }
            if let Some(event::Kind::Message(m)) = entry.kind {
                let seen = senders.entry(m.from_user_id).or_insert(0);
                *seen = (*seen).max(m.seq);
            }
        }
        Ok(senders)
    }
}
