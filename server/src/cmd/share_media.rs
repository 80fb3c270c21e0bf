//! The first step of a send with media, on the asset's shard: the sender must be the
//! uploader or someone it was sent to 1:1 (forwarding). The asset is granted to the
//! recipient (or the group), and once that grant is durable the send goes on to be stored
//! with the asset's media as recorded here, whatever else the client claimed.

use std::rc::Rc;

use chat_protocol::ErrorCode;
use chat_storage::Grantee;

use crate::request::Request;
use crate::routing::{shard_of_group, shard_of_user};
use crate::shard::{AfterCommit, Reply, Shard, ShardMsg};

pub fn run(shard: &Rc<Shard>, reply: Reply, me: u64, mut req: Request) {
    let (attachment, to, dest) = match &mut req {
        Request::Send(s) => (
            s.media.as_mut(),
            Grantee::User(s.to_user_id),
            shard_of_user(s.to_user_id, shard.shards),
        ),
        Request::SendGroup(s) => (
            s.media.as_mut(),
            Grantee::Group(s.group_id),
            shard_of_group(s.group_id, shard.shards),
        ),
        _ => return shard.internal(reply, &"share_media needs a send"),
    };
    let Some(attachment) = attachment else {
        return shard.internal(reply, &"share_media needs media");
    };
    let asset_id = attachment.asset_id;
    let record = match shard.store.asset(&asset_id) {
        Ok(Some(r)) => r,
        Ok(None) => return shard.fail(reply, ErrorCode::AssetNotFound, "no such asset"),
        Err(e) => return shard.internal(reply, &e),
    };
    let may_share = record.owner == me
        || match shard.store.has_grant(&asset_id, Grantee::User(me)) {
            Ok(granted) => granted,
            Err(e) => return shard.internal(reply, &e),
        };
    if !may_share {
        return shard.fail(reply, ErrorCode::AssetNotFound, "no such asset");
    }
    if let Err(e) = shard.store.stage_grant(&asset_id, to) {
        return shard.internal(reply, &e);
    }
    let mut media = record.media.unwrap_or_default();
    media.thumbnail = std::mem::take(&mut attachment.thumbnail);
    attachment.media = Some(media);
    let user = Some(me);
    shard.after_commit(AfterCommit::Dispatch {
        dest,
        msg: Box::new(ShardMsg::Request { reply, user, req }),
    });
}
