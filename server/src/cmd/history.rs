//! GetMessages: one page of a conversation's history. A 1:1 page runs on the caller's
//! shard, which holds both directions (received messages are indexed on arrival, sent ones
//! on ack); a group page runs on the group's shard, for members only. Messages the caller
//! deleted for themselves are left out.

use std::rc::Rc;

use chat_protocol::pb::{self, envelope::Body};

use crate::request::Conversation;
use crate::shard::{Reply, Shard};

pub fn run(
    shard: &Rc<Shard>,
    reply: Reply,
    me: u64,
    with: Conversation,
    before_us: u64,
    limit: usize,
) {
    let page = match with {
        Conversation::User(peer) => shard.store.visible_history(me, peer, before_us, limit),
        Conversation::Group(group_id) => {
            if let Err((code, msg)) = shard.groups.visible_to(shard, group_id, me) {
                return shard.fail(reply, code, msg);
            }
            shard
                .store
                .visible_group_history(group_id, me, before_us, limit)
        }
    };
    match page {
        Ok(page) => shard.respond(
            reply,
            Body::Messages(pb::Messages {
                messages: page.messages,
                more: page.more,
            }),
        ),
        Err(e) => shard.internal(reply, &e),
    }
}
