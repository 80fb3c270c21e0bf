//! RegisterPushToken: adds a device's push token for the caller. Runs on the caller's
//! shard; written at once (see `Store::add_push_token`), answered once durable. The
//! token's shard then takes the token from any other user who had registered it.

use std::rc::Rc;

use chat_protocol::pb::{self, envelope::Body};

use sha2::{Digest, Sha256};

use crate::clock::Clock;
use crate::shard::{Reply, Shard, ShardMsg};

pub fn run(shard: &Rc<Shard>, reply: Reply, me: u64, platform: pb::PushPlatform, token: String) {
    match shard
        .store
        .add_push_token(me, platform as i32, &token, Clock::now_us())
    {
        Ok(()) => {
            // One user per token: the token's shard takes it from anyone who had it.
            let token_hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
            let dest = shard.place.token(&token_hash);
            let user = me;
            let claim = ShardMsg::PushTokenClaimed {
                token_hash,
                token,
                user,
            };
            shard.dispatch(dest, claim);
            shard.respond(reply, Body::Done(pb::Done {}))
        }
        Err(e) => shard.internal(reply, &e),
    }
}
