//! SendMessage: staged on the recipient's shard and made durable by that shard's next group
//! commit; then pushed to the recipient's live sessions and handed to the sender's shard,
//! which records it in the sender's history (its own group commit) and acks. When both
//! users live on one shard, the one history entry serves both and the ack follows the
//! recipient's commit. The sender's inbox gets a "sent" event in the commit that records
//! the sender's copy, so the sender's other devices see the message too.

use std::rc::Rc;

use chat_protocol::pb::{self, envelope::Body};
use chat_protocol::ErrorCode;

use crate::changes;
use crate::lists;
use crate::request::{Conversation, Send};
use crate::shard::{AfterCommit, Reply, Shard, ShardMsg};

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
    // Refused, not dropped: a SendAck says the message is in the recipient's inbox (see
    // docs/PROTOCOL.md 10.16). A retry of a message stored before is acked whatever
    // happened since (a block, the deletion of the message it replies to).
    let blocked = lists::blocked(shard, send.to_user_id, sender);
    if blocked || send.reply_to_us.is_some() {
        match shard
            .store
            .find_send(send.to_user_id, sender, send.client_msg_id)
        {
            Ok(Some(_)) => {}
            Ok(None) if blocked => {
                return shard.fail(reply, ErrorCode::Blocked, "the recipient blocked you")
            }
            Ok(None) => {
                let with = Conversation::User(send.to_user_id);
                let quoted = send.reply_to_us.unwrap_or_default();
                if let Err((code, msg)) = changes::check_reply(shard, with, sender, quoted) {
                    return shard.fail(reply, code, msg);
                }
            }
            Err(e) => return shard.internal(reply, &e),
        }
    }
    let msg = pb::Message {
        media: send.media.and_then(|a| a.media).map(Box::new),
        from_user_id: sender,
        to_user_id: send.to_user_id,
        client_msg_id: send.client_msg_id,
        seq: 0,
        timestamp_us: shard.clock.next_message(sender, send.to_user_id),
        text: send.text,
        group_id: 0,
        reply_to_us: send.reply_to_us.unwrap_or(0),
        ..Default::default()
    };
    let (appended, stored) = match shard.store.stage_message(&msg) {
        Ok(staged) => staged,
        Err(e) => return shard.internal(reply, &e),
    };
    if !appended.duplicate {
        // In the same batch as the message: an offline recipient's notification.
        crate::push::stage_for_message(shard, &stored);
    }
    // A sender of this shard shares the history entry just staged (history is keyed by
    // conversation): one copy, one commit, then the ack. The "sent" event for the
    // sender's devices goes into the same commit.
    let sender_recorded = shard.place.user(sender) == shard.id;
    let sent_event = if sender_recorded && !appended.duplicate {
        match stage_sent_event(shard, &stored) {
            Ok(event) => event,
            Err(e) => return shard.internal(reply, &e),
        }
    } else {
        None
    };
    shard.after_commit(AfterCommit::StoredForRecipient {
        reply,
        msg: stored,
        duplicate: appended.duplicate,
        sender_recorded,
    });
    if let Some(event) = sent_event {
        shard.after_commit(AfterCommit::Appended {
            user: sender,
            event,
        });
    }
}

/// Stages the "sent" event of `msg` in its sender's inbox, when the sender has other
/// devices to tell (PROTOCOL 10.5): a user with one device has the SendAck.
fn stage_sent_event(
    shard: &Shard,
    msg: &pb::Message,
) -> Result<Option<pb::Event>, chat_storage::StorageError> {
    if !shard.store.has_several_devices(msg.from_user_id)? {
        return Ok(None);
    }
    shard.store.stage_sent_event(msg).map(Some)
}

/// On the recipient's shard, once the message is durable: push it, then ack (when the
/// sender's copy was in the same commit) or tell the sender's shard.
pub fn durable_for_recipient(
    shard: &Rc<Shard>,
    reply: Reply,
    msg: pb::Message,
    duplicate: bool,
    sender_recorded: bool,
) {
    if !duplicate {
        let event = pb::Event {
            seq: msg.seq,
            kind: Some(pb::event::Kind::Message(msg.clone())),
        };
        shard.on_appended(msg.to_user_id, &event);
    }
    if sender_recorded {
        return durable_for_sender(shard, reply, &msg, duplicate);
    }
    shard.dispatch(
        shard.place.user(msg.from_user_id),
        ShardMsg::Stored {
            reply,
            msg,
            duplicate,
        },
    );
}

/// Runs on the sender's shard once the recipient's shard has made the message durable.
pub fn stored(shard: &Rc<Shard>, reply: Reply, msg: pb::Message, duplicate: bool) {
    // The sender's history copy and the "sent" event for the sender's devices, in one
    // commit. A retry finds them there, unless the first attempt's commit here failed.
    let recorded = if duplicate {
        shard
            .store
            .has_history_entry(msg.from_user_id, msg.to_user_id, msg.timestamp_us)
    } else {
        Ok(false)
    };
    let sent_event = match recorded {
        Ok(true) => None,
        Ok(false) => match shard
            .store
            .stage_sent(&msg)
            .and_then(|()| stage_sent_event(shard, &msg))
        {
            Ok(event) => event,
            Err(e) => return shard.internal(reply, &e),
        },
        Err(e) => return shard.internal(reply, &e),
    };
    let sender = msg.from_user_id;
    shard.after_commit(AfterCommit::RecordedForSender {
        reply,
        msg,
        duplicate,
    });
    if let Some(event) = sent_event {
        shard.after_commit(AfterCommit::Appended {
            user: sender,
            event,
        });
    }
}

/// On the sender's shard, once its history copy is durable: the ack.
pub fn durable_for_sender(shard: &Rc<Shard>, reply: Reply, msg: &pb::Message, duplicate: bool) {
    shard.respond(
        reply,
        Body::SendAck(pb::SendAck {
            to_user_id: msg.to_user_id,
            client_msg_id: msg.client_msg_id,
            seq: msg.seq,
            timestamp_us: msg.timestamp_us,
            duplicate,
            group_id: 0,
        }),
    );
}
