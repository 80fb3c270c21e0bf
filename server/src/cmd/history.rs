//! GetMessages: one page of a 1:1 conversation's history. Runs on the caller's shard, which
//! holds both directions (received messages are indexed on arrival, sent ones on ack).

use std::rc::Rc;

use chat_protocol::pb::{self, envelope::Body};

use crate::shard::{Reply, Shard};

pub fn run(shard: &Rc<Shard>, reply: Reply, me: u64, with: u64, before_us: u64, limit: usize) {
    match shard.store.history(me, with, before_us, limit) {
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
