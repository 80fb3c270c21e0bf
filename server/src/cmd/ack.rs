//! Ack: move the user's acknowledged cursor forward, and send delivered receipts for what
//! it covers. Runs on the user's shard.

use std::rc::Rc;

use chat_protocol::pb::{self, envelope::Body};
use chat_protocol::ErrorCode;

use crate::shard::{Reply, Shard};

pub fn run(shard: &Rc<Shard>, reply: Reply, user: u64, up_to_seq: u64) {
    let head = match shard.store.inbox_head(user) {
        Ok(head) => head,
        Err(e) => return shard.internal(reply, &e),
    };
    if up_to_seq > head {
        let msg = format!("cannot ack seq {up_to_seq}: the inbox head is {head}");
        return shard.fail(reply, ErrorCode::InvalidArgument, msg);
    }
    let before = match shard.store.acked(user) {
        Ok(seq) => seq,
        Err(e) => return shard.internal(reply, &e),
    };
    match shard.store.ack(user, up_to_seq) {
        Ok(acked_seq) => {
            shard.respond(reply, Body::Acked(pb::Acked { acked_seq }));
            if acked_seq > before {
                shard.metrics.inbox_acked.add(acked_seq - before);
                // The events just acked were delivered: tell their senders.
                crate::receipts::acked(shard, user, before, acked_seq);
            }
        }
        Err(e) => shard.internal(reply, &e),
    }
}
