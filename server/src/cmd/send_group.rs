//! SendGroupMessage: runs on the group's shard, which gives the message the next group seq
//! and stores it once in the group log; after the group commit it acks the sender and hands
//! the message to the members' shards (see `groups`).

use std::rc::Rc;

use chat_protocol::pb::{self, envelope::Body, event};

use crate::request::{Conversation, SendGroup};
use crate::shard::{AfterCommit, Reply, Shard};

pub fn run(shard: &Rc<Shard>, reply: Reply, sender: u64, send: SendGroup) {
    let group = match shard.groups.visible_to(shard, send.group_id, sender) {
        Ok(g) => g,
        Err((code, msg)) => return shard.fail(reply, code, msg),
    };
    let ack = |seq, timestamp_us, duplicate| {
        Body::SendAck(pb::SendAck {
            to_user_id: 0,
            client_msg_id: send.client_msg_id,
            seq,
            timestamp_us,
            duplicate,
            group_id: send.group_id,
        })
    };
    match shard
        .store
        .find_group_send(send.group_id, sender, send.client_msg_id)
    {
        // A retry: acked (after the commit that makes the original durable) and not sent again.
        Ok(Some(prev)) => {
            return shard.after_commit(AfterCommit::Answer {
                reply,
                body: ack(prev.seq, prev.timestamp_us, true),
            })
        }
        Ok(None) => {}
        Err(e) => return shard.internal(reply, &e),
    }
    if let Some(quoted) = send.reply_to_us {
        let with = Conversation::Group(send.group_id);
        if let Err((code, msg)) = crate::changes::check_reply(shard, with, sender, quoted) {
            return shard.fail(reply, code, msg);
        }
    }
    let msg = pb::Message {
        media: send.media.and_then(|a| a.media).map(Box::new),
        from_user_id: sender,
        to_user_id: 0,
        client_msg_id: send.client_msg_id,
        seq: 0,
        timestamp_us: 0,
        text: send.text.clone(),
        group_id: send.group_id,
        reply_to_us: send.reply_to_us.unwrap_or(0),
        ..Default::default()
    };
    let staged = shard.store.stage_group_entry(
        send.group_id,
        shard.clock.next(),
        event::Kind::Message(msg),
        Some((sender, send.client_msg_id)),
    );
    match staged {
        Ok(entry) => {
            let timestamp_us = match &entry.kind {
                Some(event::Kind::Message(m)) => m.timestamp_us,
                _ => 0,
            };
            let recipients = group.members.iter().map(|m| m.user_id).collect();
            shard.after_commit(AfterCommit::GroupEntry {
                reply,
                answer: ack(entry.seq, timestamp_us, false),
                entry,
                recipients,
            });
        }
        Err(e) => shard.internal(reply, &e),
    }
}
