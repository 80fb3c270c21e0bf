//! UnregisterPushToken: removes a push token of the caller (an unknown token is not an
//! error). Runs on the caller's shard; answered once durable.

use std::rc::Rc;

use chat_protocol::pb::{self, envelope::Body};

use crate::shard::{Reply, Shard};

pub fn run(shard: &Rc<Shard>, reply: Reply, me: u64, token: String) {
    match shard.store.remove_push_tokens(me, &[token]) {
        Ok(_) => shard.respond(reply, Body::Done(pb::Done {})),
        Err(e) => shard.internal(reply, &e),
    }
}
