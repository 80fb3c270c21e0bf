//! RegisterPushToken: adds a device's push token for the caller. Runs on the caller's
//! shard; written at once (see `Store::add_push_token`), answered once durable.

use std::rc::Rc;

use chat_protocol::pb::{self, envelope::Body};

use crate::clock::Clock;
use crate::shard::{Reply, Shard};

pub fn run(shard: &Rc<Shard>, reply: Reply, me: u64, platform: pb::PushPlatform, token: String) {
    match shard
        .store
        .add_push_token(me, platform as i32, &token, Clock::now_us())
    {
        Ok(()) => shard.respond(reply, Body::Done(pb::Done {})),
        Err(e) => shard.internal(reply, &e),
    }
}
