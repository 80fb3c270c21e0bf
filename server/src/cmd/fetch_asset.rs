//! FetchAsset: for media seen in a group, first on the group's shard (is the caller a
//! member?), then on the asset's shard (was the asset shared with the caller or that
//! group?), which answers with the bytes. Every refusal is ASSET_NOT_FOUND, like an id
//! that does not exist, so nobody learns which assets exist.

use std::rc::Rc;

use bytes::Bytes;
use chat_protocol::pb::{self, envelope::Body};
use chat_protocol::ErrorCode;
use chat_storage::Grantee;

use crate::request::{Fetch, Request};
use crate::shard::{Reply, Shard, ShardMsg};

const NOT_FOUND: &str = "no such asset";

pub fn run(shard: &Rc<Shard>, reply: Reply, me: u64, mut fetch: Fetch) {
    if let (Some(group_id), false) = (fetch.group, fetch.member_checked) {
        if shard.groups.visible_to(shard, group_id, me).is_err() {
            return shard.fail(reply, ErrorCode::AssetNotFound, NOT_FOUND);
        }
        fetch.member_checked = true;
        let dest = shard.place.asset(&fetch.asset_id);
        let req = Request::FetchAsset(fetch);
        let user = Some(me);
        return shard.dispatch(dest, ShardMsg::Request { reply, user, req });
    }
    let record = match shard.store.asset(&fetch.asset_id) {
        Ok(Some(r)) => r,
        Ok(None) => return shard.fail(reply, ErrorCode::AssetNotFound, NOT_FOUND),
        Err(e) => return shard.internal(reply, &e),
    };
    let via_group = fetch.group.filter(|_| fetch.member_checked);
    let allowed = record.owner == me
        || shard
            .store
            .has_grant(&fetch.asset_id, Grantee::User(me))
            .and_then(|user_grant| match (user_grant, via_group) {
                (true, _) => Ok(true),
                (false, Some(g)) => shard.store.has_grant(&fetch.asset_id, Grantee::Group(g)),
                (false, None) => Ok(false),
            })
            .unwrap_or_else(|e| {
                tracing::error!(shard = shard.id, "reading asset grants: {e}");
                false
            });
    if !allowed {
        return shard.fail(reply, ErrorCode::AssetNotFound, NOT_FOUND);
    }
    let max = shard.limits.media.max_chunk_bytes;
    let length = match fetch.length as usize {
        0 => max,
        n => n.min(max),
    };
    let size = record.media.as_ref().map_or(0, |m| m.size);
    let content_id = <[u8; 16]>::try_from(&record.content_id[..]).unwrap_or_default();
    let data = if fetch.offset >= size {
        Vec::new()
    } else {
        match shard.store.read_content(&content_id, fetch.offset, length) {
            Ok(d) => d,
            Err(e) => return shard.internal(reply, &e),
        }
    };
    shard.respond(
        reply,
        Body::AssetData(pb::AssetData {
            asset_id: Bytes::copy_from_slice(&fetch.asset_id),
            offset: fetch.offset,
            data: Bytes::from(data),
            size,
        }),
    );
}
