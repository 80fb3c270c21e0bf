//! UploadFinish: runs on the uploader's shard. Checks size and SHA-256, then turns the
//! upload into an asset: its own bytes, or the bytes already stored with that SHA-256.

use std::rc::Rc;

use bytes::Bytes;
use chat_protocol::pb::{self, envelope::Body};
use chat_protocol::ErrorCode;
use chat_storage::{AssetRecord, StorageError};

use crate::clock::Clock;
use crate::media;
use crate::shard::{AfterCommit, Reply, Shard};

pub fn run(shard: &Rc<Shard>, reply: Reply, me: u64, upload_id: [u8; 16]) {
    // Earlier chunks, and earlier finishes of the same bytes, may still be staged: put
    // them on disk, where this reads them.
    if shard.store.has_staged() {
        shard.commit_staged();
    }
    let active = match shard.uploads.get(shard, me, &upload_id) {
        Ok(Some(a)) => a,
        Ok(None) => return shard.fail(reply, ErrorCode::AssetNotFound, "no such upload"),
        Err(e) => return shard.internal(reply, &e),
    };
    if active.record.received < active.size() {
        return shard.fail(
            reply,
            ErrorCode::UploadIncomplete,
            format!(
                "{} of {} bytes are stored",
                active.record.received,
                active.size()
            ),
        );
    }
    shard.uploads.remove(&upload_id);
    match finish(shard, me, upload_id, active) {
        Ok(body) => shard.after_commit(AfterCommit::Answer { reply, body }),
        Err(e) => shard.internal(reply, &e),
    }
}

fn finish(
    shard: &Shard,
    me: u64,
    upload_id: [u8; 16],
    active: media::Active,
) -> Result<Body, StorageError> {
    let declared = active.sha256().to_vec();
    let mut media = active.record.media.clone().unwrap_or_default();
    let actual = media::digest(shard, active)?;
    if actual[..] != declared[..] {
        shard.store.stage_end_upload(me, &upload_id, false)?;
        return Ok(Body::Error(pb::Error {
            retry_after_ms: 0,
            code: ErrorCode::ChecksumMismatch as i32,
            message: format!(
                "the bytes have SHA-256 {}, not the declared {}; the upload is discarded",
                hex::encode(actual),
                hex::encode(&declared)
            ),
        }));
    }
    let existing = shard.store.content_by_sha(&actual)?;
    // Bytes stored before are kept once: this upload's copy goes.
    shard
        .store
        .stage_end_upload(me, &upload_id, existing.is_none())?;
    let asset_id = media::new_asset_id(shard)?;
    media.asset_id = Bytes::copy_from_slice(&asset_id);
    let record = AssetRecord {
        owner: me,
        media: Some(media.clone()),
        content_id: existing.unwrap_or(upload_id).to_vec(),
        created_us: Clock::now_us(),
    };
    shard
        .store
        .stage_asset(&asset_id, &record, existing.is_none())?;
    Ok(Body::AssetReady(pb::AssetReady { media: Some(media) }))
}
