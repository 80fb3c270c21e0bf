//! LogoutAll: revokes every session token of the caller, on the caller's shard. The tokens
//! of the user's devices are deleted with the device records; tokens issued before devices
//! were recorded cannot be listed per user, so the user record also gets a time, and Resume
//! refuses tokens created at or before it (`cmd::resume`). Login creates later tokens after
//! it (`cmd::login`). Open connections stay open.

use std::rc::Rc;

use chat_protocol::pb::{self, envelope::Body};
use chat_protocol::ErrorCode;

use crate::shard::{Reply, Shard};

pub fn run(shard: &Rc<Shard>, reply: Reply, me: u64) {
    let mut user = match shard.store.user(me) {
        Ok(Some(u)) => u,
        Ok(None) => return shard.fail(reply, ErrorCode::UserNotFound, "no such user"),
        Err(e) => return shard.internal(reply, &e),
    };
    // The shard's clock is strictly increasing, and Login runs on this shard too: every
    // token created before this point has a smaller time, every later one a larger time.
    user.tokens_revoked_us = user.tokens_revoked_us.max(shard.clock.next());
    // The devices' tokens are deleted too (tokens from before devices were recorded are
    // revoked by the time alone).
    match shard
        .store
        .put_user(&user)
        .and_then(|()| shard.store.delete_devices_of(me))
    {
        Ok(()) => shard.respond(reply, Body::Done(pb::Done {})),
        Err(e) => shard.internal(reply, &e),
    }
}
