//! UploadStart: runs on the uploader's shard. Checks the declared file against the media
//! limits, then returns the caller's unfinished upload of the same file (resume) or a new
//! one.

use std::rc::Rc;

use bytes::Bytes;
use chat_protocol::pb::{self, envelope::Body};
use chat_protocol::ErrorCode;
use chat_storage::UploadRecord;

use crate::clock::Clock;
use crate::media::{self, MAX_UPLOADS_PER_USER};
use crate::request::UploadSpec;
use crate::shard::{AfterCommit, Reply, Shard};

pub fn run(shard: &Rc<Shard>, reply: Reply, me: u64, spec: UploadSpec) {
    let limits = &shard.limits.media;
    if !limits.allowed_mime_types.contains(&spec.mime_type) {
        return shard.fail(
            reply,
            ErrorCode::UnsupportedMediaType,
            format!("mime type {:?} is not allowed here", spec.mime_type),
        );
    }
    if spec.size > limits.max_asset_bytes {
        return shard.fail(
            reply,
            ErrorCode::AssetTooLarge,
            format!(
                "the file is {} bytes; the limit is {}",
                spec.size, limits.max_asset_bytes
            ),
        );
    }
    let mut uploads = match shard.uploads.of(shard, me) {
        Ok(u) => u,
        Err(e) => return shard.internal(reply, &e),
    };
    // Expired uploads go now, and the oldest when the user has too many.
    uploads.sort_by_key(|a| a.record.created_us);
    let excess = (uploads.len() + 1).saturating_sub(MAX_UPLOADS_PER_USER);
    let mut dropped = 0;
    for old in uploads.iter() {
        let resumable = old.size() == spec.size && old.sha256() == spec.sha256;
        if media::expired(old.record.created_us) || (dropped < excess && !resumable) {
            if let Err(e) = shard.store.stage_end_upload(me, &old.id(), false) {
                return shard.internal(reply, &e);
            }
            shard.uploads.remove(&old.id());
            dropped += 1;
        }
    }
    let resumed = uploads.into_iter().find(|a| {
        !media::expired(a.record.created_us) && a.size() == spec.size && a.sha256() == spec.sha256
    });
    let active = match resumed {
        Some(active) => active,
        None => {
            let record = UploadRecord {
                upload_id: media::new_upload_id(shard).to_vec(),
                owner: me,
                media: Some(pb::Media {
                    asset_id: Bytes::new(),
                    kind: spec.kind as i32,
                    mime_type: spec.mime_type,
                    size: spec.size,
                    sha256: Bytes::copy_from_slice(&spec.sha256),
                    duration_ms: spec.duration_ms,
                    width: spec.width,
                    height: spec.height,
                    thumbnail: Bytes::new(),
                    file_name: spec.file_name,
                }),
                received: 0,
                created_us: Clock::now_us(),
            };
            if let Err(e) = shard.store.stage_upload(&record) {
                return shard.internal(reply, &e);
            }
            shard.uploads.begin(record)
        }
    };
    shard.after_commit(AfterCommit::Answer {
        reply,
        body: status(shard, &active),
    });
}

/// Where an upload stands, as UploadStart and UploadChunk answer.
pub fn status(shard: &Shard, active: &media::Active) -> Body {
    Body::UploadStatus(pb::UploadStatus {
        upload_id: Bytes::copy_from_slice(&active.id()),
        offset: active.record.received,
        max_chunk_bytes: u32::try_from(shard.limits.media.max_chunk_bytes).unwrap_or(u32::MAX),
    })
}
