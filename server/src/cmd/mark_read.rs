//! MarkRead: the caller has read a conversation up to a seq. Runs on the caller's shard,
//! which keeps the caller's read marker and knows whether they share read receipts; a
//! group's part continues on the group's shard and comes back for the marker (see
//! `receipts`).

use std::rc::Rc;

use chat_protocol::pb::{self, envelope::Body, ReceiptKind};
use chat_protocol::ErrorCode;

use crate::receipts;
use crate::request::Conversation;
use crate::shard::{AfterCommit, Reply, Shard, ShardMsg};

pub fn run(shard: &Rc<Shard>, reply: Reply, me: u64, with: Conversation, up_to_seq: u64) {
    let share = receipts::read_receipts_on(shard, me);
    match with {
        Conversation::User(peer) => {
            let head = match shard.store.inbox_head(me) {
                Ok(h) => h,
                Err(e) => return shard.internal(reply, &e),
            };
            if up_to_seq > head {
                let msg = format!("cannot mark seq {up_to_seq} read: the inbox head is {head}");
                return shard.fail(reply, ErrorCode::InvalidArgument, msg);
            }
            let acked = match shard.store.acked(me) {
                Ok(seq) => seq,
                Err(e) => return shard.internal(reply, &e),
            };
            match shard.store.advance_read_marker(me, false, peer, up_to_seq) {
                Ok(Some(_)) => {
                    // Read means received, whether or not reads are shared: what no Ack
                    // has reported as delivered yet is reported now.
                    if up_to_seq > acked {
                        receipts::send(shard, peer, me, 0, ReceiptKind::Delivered, up_to_seq);
                    }
                    if share {
                        receipts::send(shard, peer, me, 0, ReceiptKind::Read, up_to_seq);
                    }
                    // The caller's other devices learn it from their inbox.
                    if let Err(e) = receipts::stage_read_event(shard, me, with, up_to_seq) {
                        return shard.internal(reply, &e);
                    }
                }
                Ok(None) => {}
                Err(e) => return shard.internal(reply, &e),
            }
            shard.after_commit(AfterCommit::Answer {
                reply,
                body: Body::Done(pb::Done {}),
            });
        }
        // The group's shard checks membership first; the read marker is written when it
        // answers (`receipts::group_read_marked`), so an outsider's MarkRead changes nothing.
        Conversation::Group(group_id) => {
            shard.dispatch(
                shard.place.group(group_id),
                ShardMsg::GroupProgress {
                    group_id,
                    member: me,
                    delivered: 0,
                    read: up_to_seq,
                    share_read: share,
                    reply: Some(reply),
                },
            );
        }
    }
}
