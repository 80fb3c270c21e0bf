//! Per-shard storage on RocksDB.
//!
//! One [`Store`] is one RocksDB instance owned by one shard. It offers typed operations
//! (create a user, append to an inbox, page history, ...) over column families whose keys are
//! built in [`keys`]. It knows nothing of networking or of the runtime: calls are synchronous
//! and a `Store` is meant to be used from the single thread of the shard that owns it.
//!
//! Writes that belong together (an inbox entry, its history entry and its idempotency record)
//! go in one `WriteBatch`, so a crash leaves all or none of them.

mod assets;
mod changes;
mod devices;
mod groups;
pub mod keys;
mod lists;
mod own;
mod presence;
mod push;
mod receipts;
pub mod records;
pub mod replica;

use std::cell::{Cell, Ref, RefCell};
use std::collections::{HashMap, HashSet};
use std::path::Path;

use chat_protocol::pb::{self, event};
use prost::Message as _;
use rocksdb::{
    BlockBasedOptions, ColumnFamily, ColumnFamilyDescriptor, DBCompressionType, Direction, Env,
    IteratorMode, MemtableFactory, Options, SliceTransform, WriteBatch, WriteOptions, DB,
};

pub use assets::Grantee;
pub use changes::apply_change;
pub use groups::group_of;
pub use lists::{UserList, MAX_LISTED_USERS};
pub use push::MAX_PUSH_TOKENS;
pub use receipts::RECEIPT_SCAN_LIMIT;
pub use records::{
    AssetRecord, DeviceRecord, GroupMarks, SendRecord, TokenRecord, UploadRecord, UserRecord,
};

const CF_USERS: &str = "users";
const CF_USERNAMES: &str = "usernames";
const CF_TOKENS: &str = "tokens";
const CF_INBOX: &str = "inbox";
const CF_CURSORS: &str = "cursors";
const CF_HISTORY: &str = "history";
const CF_IDEMPOTENCY: &str = "idempotency";
const CF_META: &str = "meta";
const CF_GROUPS: &str = "groups";
const CF_GROUP_LOG: &str = "group_log";
const CF_GROUP_IDEMPOTENCY: &str = "group_idempotency";
const CF_GROUP_PENDING: &str = "group_pending";
const CF_GROUP_COPIES: &str = "group_copies";
const CF_READ_MARKERS: &str = "read_markers";
const CF_GROUP_RECEIPTS: &str = "group_receipts";
const CF_LAST_SEEN: &str = "last_seen";
const CF_USER_GROUPS: &str = "user_groups";
const CF_UPLOADS: &str = "uploads";
const CF_CONTENT: &str = "content";
const CF_CONTENT_BY_SHA: &str = "content_by_sha";
const CF_ASSETS: &str = "assets";
const CF_ASSET_GRANTS: &str = "asset_grants";
const CF_PUSH_TOKENS: &str = "push_tokens";
const CF_PUSH_OUTBOX: &str = "push_outbox";
const CF_PUSH_TOKEN_OWNERS: &str = "push_token_owners";
const CF_DEVICES: &str = "devices";
const CF_BLOCKS: &str = "blocks";
const CF_CONTACTS: &str = "contacts";
const CF_HIDDEN: &str = "hidden";
/// Column families whose values are media bytes: kept in blob files (see `assets`).
const BLOB_CFS: [&str; 1] = [CF_CONTENT];
const ALL_CFS: [&str; 29] = [
    CF_USERS,
    CF_USERNAMES,
    CF_TOKENS,
    CF_INBOX,
    CF_CURSORS,
    CF_HISTORY,
    CF_IDEMPOTENCY,
    CF_META,
    CF_GROUPS,
    CF_GROUP_LOG,
    CF_GROUP_IDEMPOTENCY,
    CF_GROUP_PENDING,
    CF_GROUP_COPIES,
    CF_READ_MARKERS,
    CF_GROUP_RECEIPTS,
    CF_LAST_SEEN,
    CF_USER_GROUPS,
    CF_UPLOADS,
    CF_CONTENT,
    CF_CONTENT_BY_SHA,
    CF_ASSETS,
    CF_ASSET_GRANTS,
    CF_PUSH_TOKENS,
    CF_PUSH_OUTBOX,
    CF_PUSH_TOKEN_OWNERS,
    CF_DEVICES,
    CF_BLOCKS,
    CF_CONTACTS,
    CF_HIDDEN,
];

/// Errors from the storage layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("corrupt record in {cf}: {reason}")]
    Corrupt { cf: &'static str, reason: String },
    #[error("username is taken")]
    UsernameTaken,
    #[error("the store is closed")]
    Closed,
    #[error("sequence for user {0} is exhausted")]
    SeqExhausted(u64),
    #[error("the list holds the most users allowed")]
    ListFull,
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// When a write counts as done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Written to the write-ahead log (the OS has it): survives a process crash.
    #[default]
    Wal,
    /// The write-ahead log is fsynced: survives power loss.
    Fsync,
}

/// Result of appending a message to its recipient's inbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub seq: u64,
    pub timestamp_us: u64,
    /// The (sender, client_msg_id) was already stored; nothing was written.
    pub duplicate: bool,
}

/// One page of a conversation's history, oldest first.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HistoryPage {
    pub messages: Vec<pb::Message>,
    /// Older messages exist before `messages[0]`.
    pub more: bool,
}

/// How long the idempotency records of sends are kept (at least: compaction drops them
/// some time after). A client retries a send whose ack it lost within minutes or hours.
pub const IDEMPOTENCY_TTL_US: u64 = 7 * 24 * 3600 * 1_000_000;

/// One shard's RocksDB instance.
pub struct Store {
    /// `None` once closed: closing must not wait for every holder of the store to go away.
    db: RefCell<Option<DB>>,
    write_opts: WriteOptions,
    /// For the ack cursors' batches: no sync even in fsync mode. Losing a cursor update in
    /// a crash only means events are delivered again, which clients deduplicate by seq.
    cursor_opts: WriteOptions,
    /// Writes staged for the next group commit.
    pending: RefCell<WriteBatch>,
    /// Idempotency records staged but not yet committed.
    staged_sends: RefCell<HashMap<[u8; 24], SendRecord>>,
    /// Cache of each user's last inbox seq, so appends don't read the disk for it.
    heads: RefCell<HashMap<u64, u64>>,
    /// Acknowledged cursors: every Ack reads and moves one, and only this shard writes
    /// them, so they live here after the first read and reach the disk in batches
    /// ([`Store::persist_cursors`]) instead of a RocksDB write per Ack.
    cursors: RefCell<HashMap<u64, u64>>,
    /// Users whose cursor moved since the last [`Store::persist_cursors`].
    dirty_cursors: RefCell<HashSet<u64>>,
    /// Every user of this store (accounts are never deleted), loaded at open
    /// ([`Store::load_hot_sets`]): a send's recipient check is a map lookup instead of a
    /// RocksDB read, also for the first send after a start, when the read would miss
    /// every cache.
    known_users: RefCell<HashSet<u64>>,
    /// How many devices each user with any has (`devices::has_several_devices`), loaded at
    /// open and counted again whenever one of the user's devices is written or removed.
    device_counts: RefCell<HashMap<u64, usize>>,
    /// Owners with anything in their block or contact list, loaded at open
    /// (`lists::is_listed`): nearly every list is empty, and every 1:1 send asks.
    listed_owners: RefCell<HashSet<(UserList, u64)>>,
    /// Group idempotency records staged but not yet committed.
    staged_group_sends: RefCell<HashMap<[u8; 24], SendRecord>>,
    /// Read markers and group marks staged but not yet committed: two advances before one
    /// commit must see each other, or both report the same progress (and its receipt).
    staged_read_markers: RefCell<HashMap<[u8; 17], u64>>,
    staged_group_marks: RefCell<HashMap<[u8; 16], GroupMarks>>,
    /// Messages rewritten by a change (edit, delete, reaction) staged but not yet committed,
    /// by column family and key: a second change before the commit must build on the first.
    staged_rewrites: RefCell<changes::Rewrites>,
    /// Cache of each group's last (group seq, timestamp).
    group_heads: RefCell<HashMap<u64, (u64, u64)>>,
    /// Next push job id and the outbox's length.
    push_outbox: push::OutboxState,
    /// Whether writes are kept for replication (`replica`), and those kept so far.
    capture: Cell<bool>,
    captured: RefCell<Vec<chat_protocol::replica::Write>>,
    /// Range deletions staged in `pending` (a batch's iteration does not show them).
    pending_ranges: RefCell<Vec<chat_protocol::replica::Write>>,
    /// RocksDB's column family ids, to their index in `ALL_CFS`.
    cf_ids: HashMap<u32, u32>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = self.db.borrow().as_ref().map(|db| db.path().to_path_buf());
        f.debug_struct("Store").field("path", &path).finish()
    }
}

impl Store {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: &Path, durability: Durability) -> Result<Self> {
        Self::open_with_ttl(dir, durability, IDEMPOTENCY_TTL_US)
    }

    /// [`Store::open`] with another lifetime for idempotency records (tests).
    pub fn open_with_ttl(
        dir: &Path,
        durability: Durability,
        idempotency_ttl_us: u64,
    ) -> Result<Self> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_compression_type(DBCompressionType::Lz4);
        // Shards already run one per core; RocksDB's own flush/compaction threads stay few.
        opts.set_max_background_jobs(2);
        // Flushes and compactions run at the lowest CPU priority: on a core a shard keeps
        // busy they take the idle time instead of stalling the shard (a 64 MB flush on the
        // shard's core put ~100 ms into p99).
        let mut env = Env::new()?;
        env.lower_thread_pool_cpu_priority();
        env.lower_high_priority_thread_pool_cpu_priority();
        opts.set_env(&env);
        // One shard thread writes each instance; and the hashed memtables below need it.
        opts.set_allow_concurrent_memtable_write(false);
        let cfs = ALL_CFS.iter().map(|name| {
            let mut cf = Options::default();
            cf.set_compression_type(DBCompressionType::Lz4);
            // Most point lookups miss (a new client_msg_id, a new username): bloom filters
            // answer those without reading data blocks.
            let mut table = BlockBasedOptions::default();
            table.set_bloom_filter(10.0, false);
            cf.set_block_based_table_factory(&table);
            if [CF_IDEMPOTENCY, CF_GROUP_IDEMPOTENCY].contains(name) {
                // Only point lookups here, and every send makes one (nearly always a miss)
                // and an insert: a hash of small skip lists, one per (recipient, sender),
                // costs a fraction of one skip list over every record, and a memtable
                // bloom filter answers most misses without even that.
                cf.set_prefix_extractor(SliceTransform::create_fixed_prefix(16));
                cf.set_memtable_factory(MemtableFactory::HashSkipList {
                    bucket_count: 100_000,
                    height: 4,
                    branching_factor: 4,
                });
                cf.set_memtable_prefix_bloom_ratio(0.05);
                cf.set_memtable_whole_key_filtering(true);
                // Without this the records of every send ever made would stay forever.
                cf.set_compaction_filter("idempotency-ttl", move |_, _, value: &[u8]| {
                    expired_send_record(value, idempotency_ttl_us)
                });
            }
            if BLOB_CFS.contains(name) {
                // Media is already compressed; blob files keep it out of compactions, and
                // blob GC reclaims the space of deleted uploads.
                cf.set_enable_blob_files(true);
                cf.set_min_blob_size(1024);
                cf.set_blob_compression_type(DBCompressionType::None);
                cf.set_enable_blob_gc(true);
            }
            // Appends: an inbox grows at its user's end, a conversation's history at its
            // newest message. A hint per prefix (kept by the memtable across batches)
            // starts each insert where the last one of that prefix went, instead of a
            // search from the top of a skip list holding every key.
            let hint_prefix = match *name {
                CF_INBOX => Some(keys::ID),
                CF_HISTORY => Some(2 * keys::ID),
                _ => None,
            };
            if let Some(len) = hint_prefix {
                let hint =
                    format!("memtable_insert_with_hint_prefix_extractor=rocksdb.FixedPrefix.{len}");
                cf = cf.get_options_from_string(hint)?;
            }
            Ok(ColumnFamilyDescriptor::new(*name, cf))
        });
        let cfs = cfs.collect::<Result<Vec<_>>>()?;
        let db = DB::open_cf_descriptors(&opts, dir, cfs)?;
        migrate_history(&db)?;
        let cf_ids = replica::cf_ids(&db);
        let mut write_opts = WriteOptions::default();
        write_opts.set_sync(durability == Durability::Fsync);
        let cursor_opts = WriteOptions::default();
        let store = Self {
            db: RefCell::new(Some(db)),
            write_opts,
            cursor_opts,
            pending: RefCell::default(),
            staged_sends: RefCell::default(),
            heads: RefCell::new(HashMap::new()),
            cursors: RefCell::default(),
            dirty_cursors: RefCell::default(),
            known_users: RefCell::default(),
            device_counts: RefCell::default(),
            listed_owners: RefCell::default(),
            staged_group_sends: RefCell::default(),
            staged_read_markers: RefCell::default(),
            staged_group_marks: RefCell::default(),
            staged_rewrites: RefCell::default(),
            group_heads: RefCell::default(),
            push_outbox: push::OutboxState::default(),
            capture: Cell::new(false),
            captured: RefCell::default(),
            pending_ranges: RefCell::default(),
            cf_ids,
        };
        store.load_hot_sets()?;
        Ok(store)
    }

    /// Loads the sets every send consults (users, device counts, owners of non-empty
    /// lists) by one scan of their keys: far cheaper than a point lookup per user that
    /// misses RocksDB's caches, which is what the first send of each user after a start
    /// would pay.
    fn load_hot_sets(&self) -> Result<()> {
        let users = self.scan_owners(CF_USERS)?;
        let devices = self.scan_owners(CF_DEVICES)?;
        let mut counts = HashMap::new();
        for user in devices {
            *counts.entry(user).or_insert(0) += 1;
        }
        let mut listed = HashSet::new();
        for list in [UserList::Blocked, UserList::Contacts] {
            for owner in self.scan_owners(list.cf())? {
                listed.insert((list, owner));
            }
        }
        *self.known_users.borrow_mut() = users.into_iter().collect();
        *self.device_counts.borrow_mut() = counts;
        *self.listed_owners.borrow_mut() = listed;
        Ok(())
    }

    /// The id at the start of every key of a column family, in key order (one per key).
    fn scan_owners(&self, cf: &'static str) -> Result<Vec<u64>> {
        let db = self.db()?;
        let mut out = Vec::new();
        // Total order: a family with a prefix extractor would otherwise be read by prefix.
        let mut all = rocksdb::ReadOptions::default();
        all.set_total_order_seek(true);
        let mut iter = db.raw_iterator_cf_opt(cf_handle(&db, cf), all);
        iter.seek_to_first();
        while iter.valid() {
            if let Some(id) = iter.key().and_then(|key| keys::u64_at(key, 0)) {
                out.push(id);
            }
            iter.next();
        }
        iter.status()?;
        Ok(out)
    }

    fn db(&self) -> Result<Ref<'_, DB>> {
        Ref::filter_map(self.db.borrow(), Option::as_ref).map_err(|_| StorageError::Closed)
    }

    fn get<M: prost::Message + Default>(&self, cf: &'static str, key: &[u8]) -> Result<Option<M>> {
        let db = self.db()?;
        let value = db.get_pinned_cf(cf_handle(&db, cf), key)?;
        match value {
            None => Ok(None),
            Some(bytes) => decode(cf, &bytes).map(Some),
        }
    }

    /// Compacts every column family now (which also applies the idempotency records'
    /// lifetime); RocksDB otherwise compacts by itself as data grows.
    pub fn compact(&self) -> Result<()> {
        let db = self.db()?;
        for cf in ALL_CFS {
            db.compact_range_cf(cf_handle(&db, cf), None::<&[u8]>, None::<&[u8]>);
        }
        Ok(())
    }

    /// Flushes memtables and the WAL to disk.
    pub fn flush(&self) -> Result<()> {
        self.persist_cursors()?;
        let db = self.db()?;
        db.flush_wal(true)?;
        for cf in ALL_CFS {
            db.flush_cf(cf_handle(&db, cf))?;
        }
        Ok(())
    }

    /// Flushes and closes the database now, even while others still hold the `Store`;
    /// later calls fail with `Closed`.
    pub fn close(&self) -> Result<()> {
        let flushed = self.flush();
        drop(self.db.borrow_mut().take());
        flushed
    }

    // ---- metadata ----

    pub fn meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let db = self.db()?;
        Ok(db.get_cf(cf_handle(&db, CF_META), key.as_bytes())?)
    }

    pub fn set_meta(&self, key: &str, value: &[u8]) -> Result<()> {
        let db = self.db()?;
        self.put_now(&db, cf_handle(&db, CF_META), key.as_bytes(), value)
    }

    // ---- users ----

    /// Creates a user. `user.username` must already be normalized; it must be unique.
    pub fn create_user(&self, user: &UserRecord) -> Result<()> {
        let db = self.db()?;
        if self.user_id_by_name(&user.username)?.is_some() {
            return Err(StorageError::UsernameTaken);
        }
        let mut batch = WriteBatch::default();
        batch.put_cf(
            cf_handle(&db, CF_USERNAMES),
            user.username.as_bytes(),
            keys::user(user.user_id),
        );
        batch.put_cf(
            cf_handle(&db, CF_USERS),
            keys::user(user.user_id),
            user.encode_to_vec(),
        );
        self.write_batch(&db, batch, Vec::new(), &self.write_opts)
    }

    pub fn user_id_by_name(&self, username: &str) -> Result<Option<u64>> {
        let db = self.db()?;
        let value = db.get_pinned_cf(cf_handle(&db, CF_USERNAMES), username.as_bytes())?;
        match value {
            None => Ok(None),
            Some(v) => keys::u64_at(&v, 0)
                .map(Some)
                .ok_or_else(|| corrupt(CF_USERNAMES, "user id is not 8 bytes")),
        }
    }

    pub fn user(&self, user_id: u64) -> Result<Option<UserRecord>> {
        self.get(CF_USERS, &keys::user(user_id))
    }

    pub fn user_exists(&self, user_id: u64) -> Result<bool> {
        if self.known_users.borrow().contains(&user_id) {
            return Ok(true);
        }
        let db = self.db()?;
        let exists = db
            .get_pinned_cf(cf_handle(&db, CF_USERS), keys::user(user_id))?
            .is_some();
        if exists {
            self.known_users.borrow_mut().insert(user_id);
        }
        Ok(exists)
    }

    // ---- tokens ----

    /// Stores a session token by its hash (the token itself is never stored).
    pub fn put_token(&self, token_hash: &[u8; 32], record: &TokenRecord) -> Result<()> {
        let db = self.db()?;
        self.put_now(
            &db,
            cf_handle(&db, CF_TOKENS),
            token_hash,
            record.encode_to_vec(),
        )
    }

    pub fn token(&self, token_hash: &[u8; 32]) -> Result<Option<TokenRecord>> {
        self.get(CF_TOKENS, token_hash)
    }

    /// Forgets a session token (Logout); forgetting an unknown one is not an error.
    pub fn delete_token(&self, token_hash: &[u8; 32]) -> Result<()> {
        let db = self.db()?;
        self.delete_now(&db, cf_handle(&db, CF_TOKENS), token_hash)
    }

    // ---- inbox ----

    /// The highest seq in `user_id`'s inbox (0 when empty).
    pub fn inbox_head(&self, user_id: u64) -> Result<u64> {
        let db = self.db()?;
        if let Some(&head) = self.heads.borrow().get(&user_id) {
            return Ok(head);
        }
        let end = keys::inbox(user_id, u64::MAX);
        let mut iter = db.iterator_cf(
            cf_handle(&db, CF_INBOX),
            IteratorMode::From(&end, Direction::Reverse),
        );
        let head = match iter.next().transpose()? {
            Some((key, _)) if keys::u64_at(&key, 0) == Some(user_id) => {
                keys::u64_at(&key, 8).ok_or_else(|| corrupt(CF_INBOX, "short key"))?
            }
            _ => 0,
        };
        self.heads.borrow_mut().insert(user_id, head);
        Ok(head)
    }

    /// Where an earlier send with this (sender, client_msg_id) to `recipient` was stored.
    pub fn find_send(
        &self,
        recipient: u64,
        sender: u64,
        client_msg_id: u64,
    ) -> Result<Option<SendRecord>> {
        let key = keys::idempotency(recipient, sender, client_msg_id);
        self.staged_or_stored_send(&self.staged_sends, CF_IDEMPOTENCY, &key)
    }

    /// An idempotency record: staged for the next commit, or already on disk.
    fn staged_or_stored_send(
        &self,
        staged: &RefCell<HashMap<[u8; 24], SendRecord>>,
        cf: &'static str,
        key: &[u8; 24],
    ) -> Result<Option<SendRecord>> {
        if let Some(record) = staged.borrow().get(key) {
            return Ok(Some(record.clone()));
        }
        self.get(cf, key)
    }

    /// The seq the next event appended to `user_id`'s inbox gets.
    fn next_inbox_seq(&self, user_id: u64) -> Result<u64> {
        self.inbox_head(user_id)?
            .checked_add(1)
            .ok_or(StorageError::SeqExhausted(user_id))
    }

    /// Stores an incoming 1:1 message for `msg.to_user_id` now: [`Store::stage_message`]
    /// followed by [`Store::commit`].
    pub fn append_message(&self, msg: &pb::Message) -> Result<(Appended, pb::Message)> {
        let appended = self.stage_message(msg)?;
        self.commit()?;
        Ok(appended)
    }

    /// Stages an incoming 1:1 message for `msg.to_user_id`: appends it to the recipient's
    /// inbox with the next seq, indexes it in the recipient's history and records the
    /// (sender, client_msg_id) so a retry is stored once. The three writes go into the
    /// pending batch; nothing is durable (or visible to readers) until [`Store::commit`], but
    /// seqs and duplicate detection already account for it.
    ///
    /// `msg.seq` is ignored and assigned here; `msg.timestamp_us` must be set by the caller.
    /// On a duplicate nothing is staged and the original seq and timestamp are returned.
    pub fn stage_message(&self, msg: &pb::Message) -> Result<(Appended, pb::Message)> {
        let (to, from) = (msg.to_user_id, msg.from_user_id);
        if let Some(prev) = self.find_send(to, from, msg.client_msg_id)? {
            let appended = Appended {
                seq: prev.seq,
                timestamp_us: prev.timestamp_us,
                duplicate: true,
            };
            let stored = pb::Message {
                seq: prev.seq,
                timestamp_us: prev.timestamp_us,
                ..msg.clone()
            };
            return Ok((appended, stored));
        }
        let seq = self.next_inbox_seq(to)?;
        let stored = pb::Message { seq, ..msg.clone() };
        let event = pb::Event {
            seq,
            kind: Some(event::Kind::Message(stored.clone())),
        };
        let record = SendRecord {
            seq,
            timestamp_us: msg.timestamp_us,
        };
        let idem_key = keys::idempotency(to, from, msg.client_msg_id);
        {
            let db = self.db()?;
            let mut batch = self.pending.borrow_mut();
            batch.put_cf(
                cf_handle(&db, CF_INBOX),
                keys::inbox(to, seq),
                event.encode_to_vec(),
            );
            batch.put_cf(
                cf_handle(&db, CF_HISTORY),
                keys::history(to, from, msg.timestamp_us),
                stored.encode_to_vec(),
            );
            batch.put_cf(
                cf_handle(&db, CF_IDEMPOTENCY),
                idem_key,
                record.encode_to_vec(),
            );
        }
        self.staged_sends.borrow_mut().insert(idem_key, record);
        self.heads.borrow_mut().insert(to, seq);
        let appended = Appended {
            seq,
            timestamp_us: msg.timestamp_us,
            duplicate: false,
        };
        Ok((appended, stored))
    }

    /// Records a message the owner sent in the owner's own history now.
    pub fn record_sent(&self, msg: &pb::Message) -> Result<()> {
        self.stage_sent(msg)?;
        self.commit()
    }

    /// Stages the sender-side history copy of a message (durable after [`Store::commit`]).
    /// Idempotent: the key is (conversation, timestamp), so a retry overwrites itself. Not
    /// needed when the recipient lives in this store too: [`Store::stage_message`] wrote the
    /// conversation's one copy.
    pub fn stage_sent(&self, msg: &pb::Message) -> Result<()> {
        let db = self.db()?;
        self.pending.borrow_mut().put_cf(
            cf_handle(&db, CF_HISTORY),
            keys::history(msg.from_user_id, msg.to_user_id, msg.timestamp_us),
            msg.encode_to_vec(),
        );
        Ok(())
    }

    /// Whether staged writes wait for [`Store::commit`].
    pub fn has_staged(&self) -> bool {
        !self.pending.borrow().is_empty()
    }

    /// Writes everything staged as one batch: one WAL append (and one fsync in
    /// `Durability::Fsync`) for all of it, i.e. group commit. On failure nothing staged is
    /// kept and cached sequence heads are dropped, so they are re-read from disk.
    pub fn commit(&self) -> Result<()> {
        let batch = std::mem::take(&mut *self.pending.borrow_mut());
        if batch.is_empty() {
            return Ok(());
        }
        let ranges = std::mem::take(&mut *self.pending_ranges.borrow_mut());
        let written = self
            .db()
            .and_then(|db| self.write_batch(&db, batch, ranges, &self.write_opts));
        self.staged_sends.borrow_mut().clear();
        self.staged_group_sends.borrow_mut().clear();
        self.staged_read_markers.borrow_mut().clear();
        self.staged_group_marks.borrow_mut().clear();
        self.staged_rewrites.borrow_mut().clear();
        if written.is_err() {
            self.heads.borrow_mut().clear();
            self.group_heads.borrow_mut().clear();
            self.push_outbox.forget_staged();
        }
        written
    }

    /// Up to `limit` inbox events of `user_id` with seq > `after_seq`, in seq order.
    pub fn read_inbox(&self, user_id: u64, after_seq: u64, limit: usize) -> Result<Vec<pb::Event>> {
        let db = self.db()?;
        let Some(first) = after_seq.checked_add(1) else {
            return Ok(Vec::new());
        };
        let start = keys::inbox(user_id, first);
        let iter = db.iterator_cf(
            cf_handle(&db, CF_INBOX),
            IteratorMode::From(&start, Direction::Forward),
        );
        let mut out = Vec::new();
        for item in iter {
            if out.len() >= limit {
                break;
            }
            let (key, value) = item?;
            if keys::u64_at(&key, 0) != Some(user_id) {
                break;
            }
            let event: pb::Event = decode(CF_INBOX, &value)?;
            if event.kind.is_some() {
                out.push(event);
            } else {
                out.push(self.resolve_inbox_ref(&value)?);
            }
        }
        Ok(out)
    }

    /// The user's acknowledged cursor (0 when never acked).
    pub fn acked(&self, user_id: u64) -> Result<u64> {
        if let Some(&seq) = self.cursors.borrow().get(&user_id) {
            return Ok(seq);
        }
        let db = self.db()?;
        let value = db.get_pinned_cf(cf_handle(&db, CF_CURSORS), keys::user(user_id))?;
        let seq = match value {
            None => 0,
            Some(v) => {
                keys::u64_at(&v, 0).ok_or_else(|| corrupt(CF_CURSORS, "cursor is not 8 bytes"))?
            }
        };
        self.cursors.borrow_mut().insert(user_id, seq);
        Ok(seq)
    }

    /// Moves the acknowledged cursor forward to `seq` (never backwards); returns the cursor.
    /// Kept in memory and written by the next [`Store::persist_cursors`]: after a crash the
    /// cursor may be older, so events are delivered again, which clients deduplicate by
    /// seq. Not worth a log write per Ack.
    pub fn ack(&self, user_id: u64, seq: u64) -> Result<u64> {
        let current = self.acked(user_id)?;
        if seq <= current {
            return Ok(current);
        }
        self.cursors.borrow_mut().insert(user_id, seq);
        self.dirty_cursors.borrow_mut().insert(user_id);
        Ok(seq)
    }

    /// Writes the cursors moved since the last call, in one batch. The shard calls this
    /// about once a second; [`Store::flush`] and [`Store::close`] call it too.
    pub fn persist_cursors(&self) -> Result<()> {
        let dirty = std::mem::take(&mut *self.dirty_cursors.borrow_mut());
        if dirty.is_empty() {
            return Ok(());
        }
        let db = self.db()?;
        let mut batch = WriteBatch::default();
        {
            let cursors = self.cursors.borrow();
            for user_id in &dirty {
                if let Some(seq) = cursors.get(user_id) {
                    batch.put_cf(
                        cf_handle(&db, CF_CURSORS),
                        keys::user(*user_id),
                        seq.to_be_bytes(),
                    );
                }
            }
        }
        let written = self.write_batch(&db, batch, Vec::new(), &self.cursor_opts);
        if written.is_err() {
            // Tried again next time.
            self.dirty_cursors.borrow_mut().extend(dirty);
        }
        written
    }

    // ---- history ----

    /// Up to `limit` messages between `owner` and `peer` with timestamp < `before_us`
    /// (0 = no bound), oldest first.
    pub fn history(
        &self,
        owner: u64,
        peer: u64,
        before_us: u64,
        limit: usize,
    ) -> Result<HistoryPage> {
        let db = self.db()?;
        let bound = if before_us == 0 {
            u64::MAX
        } else {
            before_us - 1
        };
        if before_us == 1 || limit == 0 {
            return Ok(HistoryPage::default());
        }
        let start = keys::history(owner, peer, bound);
        let iter = db.iterator_cf(
            cf_handle(&db, CF_HISTORY),
            IteratorMode::From(&start, Direction::Reverse),
        );
        let mut messages = Vec::with_capacity(limit.min(256));
        let mut more = false;
        for item in iter {
            let (key, value) = item?;
            if !keys::in_conversation(&key, owner, peer) {
                break;
            }
            if messages.len() == limit {
                more = true;
                break;
            }
            messages.push(decode(CF_HISTORY, &value)?);
        }
        messages.reverse();
        Ok(HistoryPage { messages, more })
    }
}

/// The `meta` key that says history is keyed by conversation (see `keys::history`).
const HISTORY_LAYOUT: &[u8] = b"history_layout";
const BY_CONVERSATION: &[u8] = b"conversation";

/// Rewrites history written before it was keyed by conversation: each user's copy was
/// keyed (owner, peer, timestamp); a copy under (higher id, lower id) moves to the
/// conversation's key, where the other user's copy of the same message may already be.
fn migrate_history(db: &DB) -> Result<()> {
    let meta = cf_handle(db, CF_META);
    if db.get_pinned_cf(meta, HISTORY_LAYOUT)?.as_deref() == Some(BY_CONVERSATION) {
        return Ok(());
    }
    let cf = cf_handle(db, CF_HISTORY);
    let mut batch = WriteBatch::default();
    for item in db.iterator_cf(cf, IteratorMode::Start) {
        let (key, value) = item?;
        let (Some(owner), Some(peer), Some(ts)) = (
            keys::u64_at(&key, 0),
            keys::u64_at(&key, 8),
            keys::u64_at(&key, 16),
        ) else {
            return Err(corrupt(CF_HISTORY, "short key"));
        };
        if owner > peer {
            batch.put_cf(cf, keys::history(owner, peer, ts), &value);
            batch.delete_cf(cf, &key);
        }
        if batch.len() >= 10_000 {
            db.write(std::mem::take(&mut batch))?;
        }
    }
    batch.put_cf(meta, HISTORY_LAYOUT, BY_CONVERSATION);
    db.write(batch)?;
    Ok(())
}

impl Drop for Store {
    fn drop(&mut self) {
        // Cursors still in memory go with the database (a closed store has none left).
        let _ = self.persist_cursors();
    }
}

/// The compaction filter of the idempotency column families: drops records older than
/// `ttl_us` (keeps anything it cannot read).
fn expired_send_record(value: &[u8], ttl_us: u64) -> rocksdb::compaction_filter::Decision {
    use rocksdb::compaction_filter::Decision;
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    match SendRecord::decode(value) {
        Ok(r) if now_us.saturating_sub(r.timestamp_us) > ttl_us => Decision::Remove,
        _ => Decision::Keep,
    }
}

fn cf_handle<'a>(db: &'a DB, name: &'static str) -> &'a ColumnFamily {
    // Every name in ALL_CFS is opened in `Store::open`, so this cannot fail.
    #[allow(clippy::expect_used)]
    db.cf_handle(name)
        .expect("column family opened in Store::open")
}

fn decode<M: prost::Message + Default>(cf: &'static str, bytes: &[u8]) -> Result<M> {
    M::decode(bytes).map_err(|e| corrupt(cf, &e.to_string()))
}

fn corrupt(cf: &'static str, reason: &str) -> StorageError {
    StorageError::Corrupt {
        cf,
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests;
