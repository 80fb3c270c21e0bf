//! SendMessage: stored on the recipient's shard (durable before anything else happens),
//! pushed to the recipient's live sessions, then recorded in the sender's history on the
//! sender's shard, which acks.

use std::rc::Rc;

use chat_protocol::pb::{self, envelope::Body};
use chat_protocol::ErrorCode;

use crate::request::Send;
use crate::routing::shard_of_user;
use crate::shard::{Reply, Shard, ShardMsg};

/// Runs on the recipient's shard.
pub fn run(shard: &Rc<Shard>, reply: Reply, sender: u64, send: Send) {
    if send.to_user_id == sender {
        return shard.fail(reply, ErrorCode::InvalidArgument, "cannot send to yourself");
    }
    match shard.store.user_exists(send.to_user_id) {
        Ok(true) => {}
        Ok(false) => return shard.fail(reply, ErrorCode::UserNotFound, "no such recipient"),
        Err(e) => return shard.internal(reply, &e),
    }
    let msg = pb::Message {
        from_user_id: sender,
        to_user_id: send.to_user_id,
        client_msg_id: send.client_msg_id,
        seq: 0,
        timestamp_us: shard.clock.next(),
        text: send.text,
    };
    let (appended, stored) = match shard.store.append_message(&msg) {
        Ok(done) => done,
        Err(e) => return shard.internal(reply, &e),
    };
    if !appended.duplicate {
        let event = pb::Event {
            seq: appended.seq,
            kind: Some(pb::event::Kind::Message(stored.clone())),
        };
        shard.on_appended(send.to_user_id, &event);
    }
    shard.dispatch(
        shard_of_user(sender, shard.shards),
        ShardMsg::Stored {
            reply,
            msg: stored,
            duplicate: appended.duplicate,
        },
    );
}

/// Runs on the sender's shard once the recipient's shard has stored the message.
pub fn stored(shard: &Rc<Shard>, reply: Reply, msg: pb::Message, duplicate: bool) {
    // The sender's copy: idempotent, so a retried send rewrites the same entry.
    if let Err(e) = shard.store.record_sent(&msg) {
        return shard.internal(reply, &e);
    }
    shard.respond(
        reply,
        Body::SendAck(pb::SendAck {
            to_user_id: msg.to_user_id,
            client_msg_id: msg.client_msg_id,
            seq: msg.seq,
            timestamp_us: msg.timestamp_us,
            duplicate,
        }),
    );
}
