//! Media on the uploader's shard: uploads in progress and the ids of new assets.
//!
//! An upload's record and bytes are in the shard's store from the first chunk on, so an
//! interrupted upload resumes after a reconnect or a restart. What lives only here is the
//! running SHA-256 of the bytes received so far, so UploadFinish need not read a whole
//! file back to check it; after a restart it is recomputed from the stored bytes once.

use std::cell::RefCell;
use std::collections::HashMap;

use chat_storage::{StorageError, UploadRecord};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::clock::Clock;
use crate::shard::Shard;

/// Unfinished uploads a user may have; starting one more drops the oldest.
pub const MAX_UPLOADS_PER_USER: usize = 16;
/// An upload not finished within a day is dropped when its owner next starts one.
pub const UPLOAD_TTL_US: u64 = 24 * 3600 * 1_000_000;

/// An upload in progress.
#[derive(Debug, Clone)]
pub struct Active {
    pub record: UploadRecord,
    /// SHA-256 of `record.received` bytes; `None` when that state was lost (a restart).
    hasher: Option<Sha256>,
}

impl Active {
    pub fn id(&self) -> [u8; 16] {
        <[u8; 16]>::try_from(&self.record.upload_id[..]).unwrap_or_default()
    }

    pub fn size(&self) -> u64 {
        self.record.media.as_ref().map_or(0, |m| m.size)
    }

    pub fn sha256(&self) -> &[u8] {
        self.record.media.as_ref().map_or(&[], |m| &m.sha256[..])
    }

    /// Accounts for `data` appended at the end.
    pub fn append(&mut self, data: &[u8]) {
        if let Some(h) = self.hasher.as_mut() {
            h.update(data);
        }
        self.record.received += data.len() as u64;
    }
}

/// This shard's uploads in progress: the authority on how far each one is, including
/// chunks staged for the next commit (pipelined chunks see each other).
#[derive(Debug, Default)]
pub struct Uploads {
    active: RefCell<HashMap<[u8; 16], Active>>,
}

impl Uploads {
    /// Starts tracking a new upload.
    pub fn begin(&self, record: UploadRecord) -> Active {
        let active = Active {
            record,
            hasher: Some(Sha256::new()),
        };
        self.active.borrow_mut().insert(active.id(), active.clone());
        active
    }

    /// The owner's upload `id`, from memory or from the store.
    pub fn get(
        &self,
        shard: &Shard,
        owner: u64,
        id: &[u8; 16],
    ) -> Result<Option<Active>, StorageError> {
        if let Some(a) = self.active.borrow().get(id) {
            return Ok((a.record.owner == owner).then(|| a.clone()));
        }
        let Some(record) = shard.store.upload(owner, id)? else {
            return Ok(None);
        };
        let hasher = (record.received == 0).then(Sha256::new);
        let active = Active { record, hasher };
        self.active.borrow_mut().insert(*id, active.clone());
        Ok(Some(active))
    }

    /// The owner's uploads, the ones in memory being the most recent state.
    pub fn of(&self, shard: &Shard, owner: u64) -> Result<Vec<Active>, StorageError> {
        let active = self.active.borrow();
        let mut out: Vec<Active> = active
            .values()
            .filter(|a| a.record.owner == owner)
            .cloned()
            .collect();
        for record in shard.store.uploads_of(owner)? {
            let known = out.iter().any(|a| a.record.upload_id == record.upload_id);
            if !known {
                let hasher = (record.received == 0).then(Sha256::new);
                out.push(Active { record, hasher });
            }
        }
        Ok(out)
    }

    pub fn put(&self, active: Active) {
        self.active.borrow_mut().insert(active.id(), active);
    }

    pub fn remove(&self, id: &[u8; 16]) {
        self.active.borrow_mut().remove(id);
    }

    /// A commit failed: the state in memory may be ahead of the disk.
    pub fn forget_cached(&self) {
        self.active.borrow_mut().clear();
    }
}

/// The SHA-256 of a finished upload: the running one, or recomputed from the stored bytes
/// when it was lost.
pub fn digest(shard: &Shard, active: Active) -> Result<[u8; 32], StorageError> {
    let complete = active.record.received == active.size();
    let id = active.id();
    if let (Some(h), true) = (active.hasher, complete) {
        return Ok(h.finalize().into());
    }
    let mut h = Sha256::new();
    shard
        .store
        .for_each_content_chunk(&id, |chunk| h.update(chunk))?;
    Ok(h.finalize().into())
}

/// A random 16-byte id.
pub fn random_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut id);
    id
}

/// A new upload id whose bytes (keyed by it) live on this shard: in a cluster they are
/// then in a slot of this node, replicated with the asset they become.
pub fn new_upload_id(shard: &Shard) -> [u8; 16] {
    loop {
        let id = random_id();
        if shard.place.asset(&id) == shard.id {
            return id;
        }
    }
}

/// A new unguessable asset id that lives on this shard.
pub fn new_asset_id(shard: &Shard) -> Result<[u8; 16], StorageError> {
    loop {
        let id = random_id();
        if shard.place.asset(&id) == shard.id && shard.store.asset(&id)?.is_none() {
            return Ok(id);
        }
    }
}

/// Drops this shard's uploads that have expired, a batch at a time: abandoned uploads of
/// users who never come back would otherwise keep their bytes forever.
pub fn sweep_expired(shard: &Shard) {
    const BATCH: usize = 256;
    let before = Clock::now_us().saturating_sub(UPLOAD_TTL_US);
    let expired = match shard.store.uploads_started_before(before, BATCH) {
        Ok(e) => e,
        Err(e) => return tracing::error!(shard = shard.id, "finding expired uploads: {e}"),
    };
    for record in &expired {
        let Ok(id) = <[u8; 16]>::try_from(&record.upload_id[..]) else {
            continue;
        };
        if let Err(e) = shard.store.stage_end_upload(record.owner, &id, false) {
            return tracing::error!(shard = shard.id, "dropping an expired upload: {e}");
        }
        shard.uploads.remove(&id);
    }
    if !expired.is_empty() {
        tracing::info!(
            shard = shard.id,
            count = expired.len(),
            "dropped expired uploads"
        );
        shard.want_commit();
    }
}

/// Whether an upload started at `created_us` has expired.
pub fn expired(created_us: u64) -> bool {
    Clock::now_us().saturating_sub(created_us) > UPLOAD_TTL_US
}
