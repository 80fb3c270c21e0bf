//! The first step of a send with media, on the asset's shard: the sender must be the
//! uploader or someone it was sent to 1:1 (forwarding). The asset is granted to the
//! recipient (or the group) and, once that grant is durable, the send goes back to its
//! connection's shard with the asset's media as recorded here (whatever else the client
//! claimed), to be stored in order with the connection's other sends (`Shard::submit`).

use std::rc::Rc;

use chat_protocol::ErrorCode;
use chat_storage::Grantee;

use crate::request::Request;
use crate::shard::{AfterCommit, Reply, Shard, ShardMsg};

pub fn run(shard: &Rc<Shard>, reply: Reply, me: u64, mut req: Request) {
    let refuse = |code: ErrorCode, msg: &str| {
        let result = Err((code, msg.to_string()));
        shard.dispatch(reply.conn.shard, ShardMsg::MediaChecked { reply, result });
    };
    let internal = |e: &dyn std::fmt::Display| {
        tracing::error!(shard = shard.id, "checking media: {e}");
        refuse(ErrorCode::Internal, "internal server error");
    };
    let (attachment, to) = match &mut req {
        Request::Send(s) => (s.media.as_mut(), Grantee::User(s.to_user_id)),
        Request::SendGroup(s) => (s.media.as_mut(), Grantee::Group(s.group_id)),
        _ => return internal(&"share_media needs a send"),
    };
    let Some(attachment) = attachment else {
        return internal(&"share_media needs media");
    };
    let asset_id = attachment.asset_id;
    let record = match shard.store.asset(&asset_id) {
        Ok(Some(r)) => r,
        Ok(None) => return refuse(ErrorCode::AssetNotFound, "no such asset"),
        Err(e) => return internal(&e),
    };
    let may_share = record.owner == me
        || match shard.store.has_grant(&asset_id, Grantee::User(me)) {
            Ok(granted) => granted,
            Err(e) => return internal(&e),
        };
    if !may_share {
        return refuse(ErrorCode::AssetNotFound, "no such asset");
    }
    if let Err(e) = shard.store.stage_grant(&asset_id, to) {
        return internal(&e);
    }
    let mut media = record.media.unwrap_or_default();
    media.thumbnail = std::mem::take(&mut attachment.thumbnail);
    attachment.media = Some(media);
    shard.after_commit(AfterCommit::Dispatch {
        dest: reply.conn.shard,
        msg: Box::new(ShardMsg::MediaChecked {
            reply,
            result: Ok(req),
        }),
    });
}
