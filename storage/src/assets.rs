//! Media: uploads in progress, finished assets, who may fetch them, and their bytes.
//!
//! The bytes of an upload are written as they arrive, chunk by chunk, to `content` under
//! the upload's id; that column family keeps its values in blob files (RocksDB's
//! integrated BlobDB), apart from the LSM tree, so megabytes of media do not get rewritten
//! by every compaction. A finished upload becomes an asset that points at its content.
//! Content is addressed by SHA-256 (`content_by_sha`): when the same bytes are uploaded
//! again, the new asset points at the first copy and the second is deleted, so identical
//! files take space once.

use prost::Message as _;

use crate::records::{AssetRecord, UploadRecord};
use crate::{
    cf_handle, corrupt, keys, Result, Store, CF_ASSETS, CF_ASSET_GRANTS, CF_CONTENT,
    CF_CONTENT_BY_SHA, CF_UPLOADS,
};

/// Who an asset was shared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grantee {
    User(u64),
    Group(u64),
}

impl Grantee {
    fn key(self, asset_id: &[u8; 16]) -> [u8; 25] {
        match self {
            Grantee::User(id) => keys::asset_grant(asset_id, false, id),
            Grantee::Group(id) => keys::asset_grant(asset_id, true, id),
        }
    }
}

impl Store {
    // ---- uploads in progress ----

    /// The owner's unfinished uploads.
    pub fn uploads_of(&self, owner: u64) -> Result<Vec<UploadRecord>> {
        let db = self.db()?;
        let prefix = keys::user(owner);
        let mut out = Vec::new();
        for item in db.prefix_iterator_cf(cf_handle(&db, CF_UPLOADS), prefix) {
            let (key, value) = item?;
            if !key.starts_with(&prefix) {
                break;
            }
            out.push(crate::decode(CF_UPLOADS, &value)?);
        }
        Ok(out)
    }

    /// Up to `limit` unfinished uploads, of any owner, started before `before_us`.
    pub fn uploads_started_before(
        &self,
        before_us: u64,
        limit: usize,
    ) -> Result<Vec<UploadRecord>> {
        let db = self.db()?;
        let mut out = Vec::new();
        for item in db.iterator_cf(cf_handle(&db, CF_UPLOADS), rocksdb::IteratorMode::Start) {
            let (_, value) = item?;
            let record: UploadRecord = crate::decode(CF_UPLOADS, &value)?;
            if record.created_us < before_us {
                out.push(record);
                if out.len() == limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    pub fn upload(&self, owner: u64, upload_id: &[u8; 16]) -> Result<Option<UploadRecord>> {
        self.get(CF_UPLOADS, &keys::upload(owner, upload_id))
    }

    /// Stages an upload's record (new, or with more bytes received).
    pub fn stage_upload(&self, record: &UploadRecord) -> Result<()> {
        let id = upload_id(record)?;
        let db = self.db()?;
        self.pending.borrow_mut().put_cf(
            cf_handle(&db, CF_UPLOADS),
            keys::upload(record.owner, &id),
            record.encode_to_vec(),
        );
        Ok(())
    }

    /// Stages the bytes of an upload that start at `offset`.
    pub fn stage_upload_chunk(&self, upload_id: &[u8; 16], offset: u64, data: &[u8]) -> Result<()> {
        let db = self.db()?;
        self.pending.borrow_mut().put_cf(
            cf_handle(&db, CF_CONTENT),
            keys::content(upload_id, offset),
            data,
        );
        Ok(())
    }

    /// Stages the removal of an upload: its record, and its bytes unless `keep_bytes`
    /// (they became an asset's content).
    pub fn stage_end_upload(
        &self,
        owner: u64,
        upload_id: &[u8; 16],
        keep_bytes: bool,
    ) -> Result<()> {
        let db = self.db()?;
        let mut batch = self.pending.borrow_mut();
        batch.delete_cf(cf_handle(&db, CF_UPLOADS), keys::upload(owner, upload_id));
        if !keep_bytes {
            self.stage_delete_range(
                &db,
                &mut batch,
                CF_CONTENT,
                &keys::content(upload_id, 0),
                &keys::content(upload_id, u64::MAX),
            );
        }
        Ok(())
    }

    /// Calls `f` with every stored chunk of `content_id`, in order.
    pub fn for_each_content_chunk(
        &self,
        content_id: &[u8; 16],
        mut f: impl FnMut(&[u8]),
    ) -> Result<()> {
        let db = self.db()?;
        let mut iter = db.raw_iterator_cf(cf_handle(&db, CF_CONTENT));
        iter.seek(keys::content(content_id, 0));
        while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
            if !key.starts_with(content_id) {
                break;
            }
            f(value);
            iter.next();
        }
        iter.status()?;
        Ok(())
    }

    // ---- assets ----

    /// The content already stored with this SHA-256, if any.
    pub fn content_by_sha(&self, sha256: &[u8; 32]) -> Result<Option<[u8; 16]>> {
        let db = self.db()?;
        let Some(value) = db.get_pinned_cf(cf_handle(&db, CF_CONTENT_BY_SHA), sha256)? else {
            return Ok(None);
        };
        let id = <[u8; 16]>::try_from(&value[..])
            .map_err(|_| corrupt(CF_CONTENT_BY_SHA, "content id is not 16 bytes"))?;
        Ok(Some(id))
    }

    /// Stages a new asset. `new_content`: its bytes are stored for the first time, so they
    /// become the content of their SHA-256.
    pub fn stage_asset(
        &self,
        asset_id: &[u8; 16],
        record: &AssetRecord,
        new_content: bool,
    ) -> Result<()> {
        let db = self.db()?;
        let mut batch = self.pending.borrow_mut();
        if new_content {
            let sha = record
                .media
                .as_ref()
                .map(|m| &m.sha256[..])
                .unwrap_or_default();
            batch.put_cf(cf_handle(&db, CF_CONTENT_BY_SHA), sha, &record.content_id);
        }
        batch.put_cf(cf_handle(&db, CF_ASSETS), asset_id, record.encode_to_vec());
        Ok(())
    }

    pub fn asset(&self, asset_id: &[u8; 16]) -> Result<Option<AssetRecord>> {
        self.get(CF_ASSETS, asset_id)
    }

    /// Stages a grant: `to` may fetch the asset.
    pub fn stage_grant(&self, asset_id: &[u8; 16], to: Grantee) -> Result<()> {
        let db = self.db()?;
        self.pending
            .borrow_mut()
            .put_cf(cf_handle(&db, CF_ASSET_GRANTS), to.key(asset_id), []);
        Ok(())
    }

    pub fn has_grant(&self, asset_id: &[u8; 16], to: Grantee) -> Result<bool> {
        let db = self.db()?;
        let found = db
            .get_pinned_cf(cf_handle(&db, CF_ASSET_GRANTS), to.key(asset_id))?
            .is_some();
        Ok(found)
    }

    /// Up to `max_len` bytes of a content from `offset` (fewer at its end).
    pub fn read_content(
        &self,
        content_id: &[u8; 16],
        offset: u64,
        max_len: usize,
    ) -> Result<Vec<u8>> {
        let db = self.db()?;
        let mut iter = db.raw_iterator_cf(cf_handle(&db, CF_CONTENT));
        // The chunk holding `offset` is the last one starting at or before it.
        iter.seek_for_prev(keys::content(content_id, offset));
        let mut out = Vec::new();
        while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
            if !key.starts_with(content_id) || out.len() >= max_len {
                break;
            }
            let start = keys::u64_at(key, 16).ok_or_else(|| corrupt(CF_CONTENT, "short key"))?;
            let skip = usize::try_from(offset.saturating_sub(start)).unwrap_or(usize::MAX);
            if let Some(bytes) = value.get(skip..) {
                let take = bytes.len().min(max_len - out.len());
                out.extend_from_slice(&bytes[..take]);
            }
            iter.next();
        }
        iter.status()?;
        Ok(out)
    }

    /// (distinct contents, total bytes) of every media byte stored, finished or not: what
    /// media takes on disk, for tests and operators.
    pub fn content_stats(&self) -> Result<(u64, u64)> {
        let db = self.db()?;
        let mut contents = 0;
        let mut bytes = 0;
        let mut last: Option<Vec<u8>> = None;
        for item in db.iterator_cf(cf_handle(&db, CF_CONTENT), rocksdb::IteratorMode::Start) {
            let (key, value) = item?;
            let id = key
                .get(..16)
                .ok_or_else(|| corrupt(CF_CONTENT, "short key"))?;
            if last.as_deref() != Some(id) {
                contents += 1;
                last = Some(id.to_vec());
            }
            bytes += value.len() as u64;
        }
        Ok((contents, bytes))
    }
}

fn upload_id(record: &UploadRecord) -> Result<[u8; 16]> {
    <[u8; 16]>::try_from(&record.upload_id[..])
        .map_err(|_| corrupt(CF_UPLOADS, "upload id is not 16 bytes"))
}
