//! What a cluster's replication needs from the store: every write, captured as it reaches
//! RocksDB, in a form another node can apply (`chat.replica.v1.Write`), and whose data
//! each written key is ([`Owner`]), so the server can put it in the log of that data's
//! hash slot. The store knows its keys; it knows nothing of slots or nodes.

use std::collections::HashMap;

use bytes::Bytes;
use chat_protocol::replica::{write::Kind, Write};
use prost::Message as _;
use rocksdb::{WriteBatch, WriteBatchIteratorCf, DB};

use crate::lists::UserList;
use crate::records::{InboxRef, TokenRecord};
use crate::{cf_handle, keys, Result, StorageError, Store, ALL_CFS};
use crate::{
    CF_ASSETS, CF_ASSET_GRANTS, CF_BLOCKS, CF_CONTACTS, CF_CONTENT, CF_CONTENT_BY_SHA, CF_CURSORS,
    CF_DEVICES, CF_GROUPS, CF_GROUP_COPIES, CF_GROUP_IDEMPOTENCY, CF_GROUP_LOG, CF_GROUP_PENDING,
    CF_GROUP_RECEIPTS, CF_HIDDEN, CF_HISTORY, CF_IDEMPOTENCY, CF_INBOX, CF_LAST_SEEN,
    CF_PUSH_TOKENS, CF_PUSH_TOKEN_OWNERS, CF_READ_MARKERS, CF_TOKENS, CF_UPLOADS, CF_USERNAMES,
    CF_USERS, CF_USER_GROUPS,
};

/// Whose data a key is: what decides which hash slot's log a write goes to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Owner {
    User(u64),
    /// A 1:1 conversation's key (history, idempotency): both users' data.
    Pair(u64, u64),
    Group(u64),
    /// A shard's copy of a group entry (group id, group seq): the data of the members whose
    /// inbox entries refer to it ([`group_ref`]).
    GroupCopy(u64, u64),
    Asset([u8; 16]),
    Token([u8; 32]),
    Username(Vec<u8>),
    /// This node's own bookkeeping (metadata, the push outbox): not replicated.
    Local,
}

/// The owner of `key` in the column family of index `cf`; `value` is the written value (a
/// put) or `None` (a delete).
pub fn owner(cf: u32, key: &[u8], value: Option<&[u8]>) -> Owner {
    let Some(&name) = ALL_CFS.get(cf as usize) else {
        return Owner::Local;
    };
    let at = |i| keys::u64_at(key, i);
    let head16 = || key.get(..16).and_then(|k| <[u8; 16]>::try_from(k).ok());
    let head32 = || key.get(..32).and_then(|k| <[u8; 32]>::try_from(k).ok());
    let found = match name {
        // An idempotency record is (recipient, sender, client_msg_id) -> where the message
        // is in the recipient's inbox: the recipient's data, in the same slot log as the
        // inbox entry it points at. (Were it the sender's too, a round published to the
        // sender's slot but not the recipient's would leave a record of a message that is
        // not there, and its retry would be acked without being stored.)
        CF_IDEMPOTENCY => at(0).map(Owner::User),
        CF_USERS | CF_INBOX | CF_CURSORS | CF_READ_MARKERS | CF_LAST_SEEN | CF_USER_GROUPS
        | CF_UPLOADS | CF_PUSH_TOKENS | CF_DEVICES | CF_BLOCKS | CF_CONTACTS | CF_HIDDEN => {
            at(0).map(Owner::User)
        }
        CF_HISTORY => at(0).zip(at(8)).map(|(a, b)| Owner::Pair(a, b)),
        CF_GROUPS | CF_GROUP_LOG | CF_GROUP_IDEMPOTENCY | CF_GROUP_PENDING | CF_GROUP_RECEIPTS => {
            at(0).map(Owner::Group)
        }
        CF_GROUP_COPIES => at(0).zip(at(8)).map(|(g, s)| Owner::GroupCopy(g, s)),
        CF_ASSETS | CF_ASSET_GRANTS | CF_CONTENT => head16().map(Owner::Asset),
        // sha256 -> content id: the content's (an asset's id) data.
        CF_CONTENT_BY_SHA => value
            .and_then(|v| <[u8; 16]>::try_from(v).ok())
            .map(Owner::Asset),
        // A session token lives with its user (Resume routes by the user in the token).
        CF_TOKENS => value
            .and_then(|v| TokenRecord::decode(v).ok())
            .map(|t| Owner::User(t.user_id)),
        CF_PUSH_TOKEN_OWNERS => head32().map(Owner::Token),
        CF_USERNAMES => Some(Owner::Username(key.to_vec())),
        _ => None,
    };
    found.unwrap_or(Owner::Local)
}

/// The owner of a captured write. A delete in a family whose keys do not name their
/// owner carries the value it removed (see [`Store::write_batch`]).
pub fn owner_of(w: &Write) -> Owner {
    let value = match Kind::try_from(w.kind) {
        Ok(Kind::Put) => Some(&w.value[..]),
        Ok(Kind::Delete) if !w.value.is_empty() => Some(&w.value[..]),
        _ => None,
    };
    owner(w.cf, &w.key, value)
}

/// Families whose owner is named by the value, not the key.
const OWNED_BY_VALUE: [&str; 2] = [CF_TOKENS, CF_CONTENT_BY_SHA];

/// The group entry (group id, group seq) an inbox value refers to, if it is a reference.
pub fn group_ref(inbox_value: &[u8]) -> Option<(u64, u64)> {
    let r = InboxRef::decode(inbox_value).ok()?.group_ref?;
    Some((r.group_id, r.seq))
}

/// The index of the `inbox` column family in [`Write::cf`].
pub fn inbox_cf() -> u32 {
    cf_index(CF_INBOX)
}

pub(crate) fn cf_index(name: &str) -> u32 {
    ALL_CFS.iter().position(|n| *n == name).unwrap_or(0) as u32
}

/// Maps RocksDB's column family ids to indices in `ALL_CFS`, learned by writing one put of
/// each family into a batch that is never written.
pub(crate) fn cf_ids(db: &DB) -> HashMap<u32, u32> {
    struct Ids(Vec<u32>);
    impl WriteBatchIteratorCf for Ids {
        fn put_cf(&mut self, cf_id: u32, _: &[u8], _: &[u8]) {
            self.0.push(cf_id);
        }
        fn delete_cf(&mut self, _: u32, _: &[u8]) {}
        fn merge_cf(&mut self, _: u32, _: &[u8], _: &[u8]) {}
    }
    let mut batch = WriteBatch::default();
    for name in ALL_CFS {
        batch.put_cf(cf_handle(db, name), b"", b"");
    }
    let mut ids = Ids(Vec::new());
    batch.iterate_cf(&mut ids);
    ids.0
        .into_iter()
        .enumerate()
        .map(|(index, id)| (id, index as u32))
        .collect()
}

/// Appends the puts and deletes of a batch to `out` as replication writes.
struct Capture<'a> {
    ids: &'a HashMap<u32, u32>,
    out: &'a mut Vec<Write>,
}

impl Capture<'_> {
    fn push(&mut self, kind: Kind, cf_id: u32, key: &[u8], value: &[u8]) {
        // A family outside ALL_CFS (the default one) is never written by the store.
        let Some(&cf) = self.ids.get(&cf_id) else {
            return;
        };
        self.out.push(Write {
            kind: kind as i32,
            cf,
            key: Bytes::copy_from_slice(key),
            value: Bytes::copy_from_slice(value),
        });
    }
}

impl WriteBatchIteratorCf for Capture<'_> {
    fn put_cf(&mut self, cf_id: u32, key: &[u8], value: &[u8]) {
        self.push(Kind::Put, cf_id, key, value);
    }
    fn delete_cf(&mut self, cf_id: u32, key: &[u8]) {
        self.push(Kind::Delete, cf_id, key, b"");
    }
    fn merge_cf(&mut self, cf_id: u32, key: &[u8], value: &[u8]) {
        // The store uses no merge operator; kept as a put so nothing is silently lost.
        self.push(Kind::Put, cf_id, key, value);
    }
}

impl Store {
    /// Starts (or stops) keeping every write for [`Store::take_captured`]: a cluster node's
    /// shards replicate what they write.
    pub fn set_capture(&self, on: bool) {
        self.capture.set(on);
    }

    /// The writes made since the last call, in the order they reached RocksDB.
    pub fn take_captured(&self) -> Vec<Write> {
        std::mem::take(&mut *self.captured.borrow_mut())
    }

    /// Whether writes wait in [`Store::take_captured`].
    pub fn has_captured(&self) -> bool {
        !self.captured.borrow().is_empty()
    }

    /// Writes `batch` (and `ranges`, range deletions RocksDB's batch iteration cannot
    /// show), capturing it first when capture is on.
    pub(crate) fn write_batch(
        &self,
        db: &DB,
        batch: WriteBatch,
        ranges: Vec<Write>,
        opts: &rocksdb::WriteOptions,
    ) -> Result<()> {
        if !self.capture.get() {
            return Ok(db.write_opt(batch, opts)?);
        }
        let mut captured = self.captured.borrow_mut();
        let before = captured.len();
        batch.iterate_cf(&mut Capture {
            ids: &self.cf_ids,
            out: &mut captured,
        });
        captured.extend(ranges);
        self.add_removed_values(db, &mut captured[before..]);
        let written = db.write_opt(batch, opts);
        if written.is_err() {
            captured.truncate(before);
        }
        Ok(written?)
    }

    /// Gives each delete in a family owned by value the value it removes (from an earlier
    /// put of the same batch, else from the database), so its owner can be named.
    fn add_removed_values(&self, db: &DB, writes: &mut [Write]) {
        let valued = OWNED_BY_VALUE.map(cf_index);
        for i in 0..writes.len() {
            let w = &writes[i];
            if w.kind != Kind::Delete as i32 || !valued.contains(&w.cf) {
                continue;
            }
            let earlier = writes[..i]
                .iter()
                .rev()
                .find(|e| e.cf == w.cf && e.key == w.key)
                .map(|e| e.value.clone());
            let value = earlier.or_else(|| {
                let name = ALL_CFS.get(w.cf as usize)?;
                let stored = db.get_cf(cf_handle(db, name), &w.key).ok()??;
                Some(Bytes::from(stored))
            });
            if let Some(value) = value {
                writes[i].value = value;
            }
        }
    }

    /// Applies writes replicated from another node, then drops every cache that may now
    /// be stale. Nothing applied is captured again.
    pub fn apply(&self, writes: &[Write]) -> Result<()> {
        self.persist_cursors()?;
        let db = self.db()?;
        let mut batch = WriteBatch::default();
        for w in writes {
            let Some(name) = ALL_CFS.get(w.cf as usize) else {
                return Err(StorageError::Corrupt {
                    cf: "replica",
                    reason: format!("no column family {}", w.cf),
                });
            };
            let cf = cf_handle(&db, name);
            match Kind::try_from(w.kind) {
                Ok(Kind::Put) => batch.put_cf(cf, &w.key, &w.value),
                Ok(Kind::Delete) => batch.delete_cf(cf, &w.key),
                Ok(Kind::DeleteRange) => batch.delete_range_cf(cf, &w.key, &w.value),
                Err(_) => {
                    return Err(StorageError::Corrupt {
                        cf: "replica",
                        reason: format!("unknown write kind {}", w.kind),
                    })
                }
            }
        }
        db.write_opt(batch, &self.write_opts)?;
        drop(db);
        self.forget_caches();
        self.note_applied(writes)
    }

    /// Deletes every replicated key whose owner `drop_it` picks: a node taking over a
    /// slot starts it from the log, not from what it may have kept of an older ownership.
    pub fn wipe(&self, mut drop_it: impl FnMut(&Owner) -> bool) -> Result<usize> {
        self.persist_cursors()?;
        let db = self.db()?;
        let mut batch = WriteBatch::default();
        let mut dropped = 0;
        // Every key, in total order: without it a family with a prefix extractor is read
        // by prefix, and the idempotency families' hashed memtables show a whole-family
        // scan nothing at all (records of a wiped slot would survive in them, and a retry
        // would be acked as stored at a seq the rebuilt inbox gives to another message).
        for (index, name) in ALL_CFS.iter().enumerate() {
            let cf = cf_handle(&db, name);
            let mut all = rocksdb::ReadOptions::default();
            all.set_total_order_seek(true);
            for item in db.iterator_cf_opt(cf, all, rocksdb::IteratorMode::Start) {
                let (key, value) = item?;
                let owner = owner(index as u32, &key, Some(&value));
                if owner != Owner::Local && drop_it(&owner) {
                    batch.delete_cf(cf, &key);
                    dropped += 1;
                }
            }
        }
        db.write_opt(batch, &self.write_opts)?;
        drop(db);
        self.forget_caches();
        self.load_hot_sets()?;
        Ok(dropped)
    }

    /// Drops the caches of what is on disk, so the next reads see it afresh.
    fn forget_caches(&self) {
        self.heads.borrow_mut().clear();
        self.group_heads.borrow_mut().clear();
        self.cursors.borrow_mut().clear();
    }

    /// Keeps the sets loaded at open true after applied writes, from the writes alone (a
    /// standby applies a batch per commit of the owner: a rescan each time would cost a
    /// read of every user). Each set may err only on its safe side: `known_users` may miss
    /// a user (the check then reads), `device_counts` may miss a count (it is counted
    /// again), `listed_owners` may hold an owner whose list is empty (the check reads).
    fn note_applied(&self, writes: &[Write]) -> Result<()> {
        let (users, devices) = (cf_index(CF_USERS), cf_index(CF_DEVICES));
        let lists = [UserList::Blocked, UserList::Contacts].map(|list| (cf_index(list.cf()), list));
        for w in writes {
            let Some(owner) = keys::u64_at(&w.key, 0) else {
                continue;
            };
            let kind = Kind::try_from(w.kind);
            if (w.cf == users || w.cf == devices) && kind == Ok(Kind::DeleteRange) {
                return self.load_hot_sets();
            }
            if w.cf == users {
                if kind == Ok(Kind::Delete) {
                    self.known_users.borrow_mut().remove(&owner);
                }
            } else if w.cf == devices {
                self.device_counts.borrow_mut().remove(&owner);
            } else if let Some((_, list)) = lists.iter().find(|(cf, _)| w.cf == *cf) {
                if kind == Ok(Kind::Put) {
                    self.listed_owners.borrow_mut().insert((*list, owner));
                }
            }
        }
        Ok(())
    }
}

impl Store {
    /// Stages a range deletion in `batch` (the pending one), and keeps it for capture
    /// at commit: a batch's iteration does not show range deletions.
    pub(crate) fn stage_delete_range(
        &self,
        db: &DB,
        batch: &mut WriteBatch,
        cf: &'static str,
        from: &[u8],
        to: &[u8],
    ) {
        batch.delete_range_cf(cf_handle(db, cf), from, to);
        if self.capture.get() {
            self.pending_ranges.borrow_mut().push(Write {
                kind: Kind::DeleteRange as i32,
                cf: cf_index(cf),
                key: Bytes::copy_from_slice(from),
                value: Bytes::copy_from_slice(to),
            });
        }
    }

    /// One put, written now (captured like any write).
    pub(crate) fn put_now(
        &self,
        db: &DB,
        cf: &rocksdb::ColumnFamily,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.put_cf(cf, key, value);
        self.write_batch(db, batch, Vec::new(), &self.write_opts)
    }

    /// One delete, written now (captured like any write).
    pub(crate) fn delete_now(
        &self,
        db: &DB,
        cf: &rocksdb::ColumnFamily,
        key: impl AsRef<[u8]>,
    ) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.delete_cf(cf, key);
        self.write_batch(db, batch, Vec::new(), &self.write_opts)
    }
}
