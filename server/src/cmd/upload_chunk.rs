//! UploadChunk: runs on the uploader's shard. Appends the bytes at the upload's current
//! offset; they are durable, and the upload resumable from after them, once answered.

use std::rc::Rc;

use bytes::Bytes;
use chat_protocol::ErrorCode;

use crate::cmd::upload_start::status;
use crate::shard::{AfterCommit, Reply, Shard};

pub fn run(
    shard: &Rc<Shard>,
    reply: Reply,
    me: u64,
    upload_id: [u8; 16],
    offset: u64,
    data: Bytes,
) {
    let mut active = match shard.uploads.get(shard, me, &upload_id) {
        Ok(Some(a)) => a,
        Ok(None) => return shard.fail(reply, ErrorCode::AssetNotFound, "no such upload"),
        Err(e) => return shard.internal(reply, &e),
    };
    let limits = &shard.limits.media;
    if data.len() > limits.max_chunk_bytes {
        return shard.fail(
            reply,
            ErrorCode::InvalidArgument,
            format!(
                "the chunk is {} bytes; the limit is {}",
                data.len(),
                limits.max_chunk_bytes
            ),
        );
    }
    if offset != active.record.received {
        return shard.fail(
            reply,
            ErrorCode::UploadOffsetMismatch,
            format!("the upload stands at offset {}", active.record.received),
        );
    }
    let end = offset.saturating_add(data.len() as u64);
    if end > active.size() || end > limits.max_asset_bytes {
        return shard.fail(
            reply,
            ErrorCode::AssetTooLarge,
            format!(
                "the chunk ends at byte {end}, past the declared size {} or the limit {}",
                active.size(),
                limits.max_asset_bytes
            ),
        );
    }
    let staged = shard
        .store
        .stage_upload_chunk(&upload_id, offset, &data)
        .and_then(|()| {
            active.append(&data);
            shard.store.stage_upload(&active.record)
        });
    if let Err(e) = staged {
        return shard.internal(reply, &e);
    }
    let body = status(shard, &active);
    shard.uploads.put(active);
    shard.after_commit(AfterCommit::Answer { reply, body });
}
