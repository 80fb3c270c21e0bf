//! GetUser: user id -> username, on the user's shard.

use std::rc::Rc;

use chat_protocol::pb::{self, envelope::Body};
use chat_protocol::ErrorCode;

use crate::shard::{Reply, Shard};

pub fn run(shard: &Rc<Shard>, reply: Reply, user_id: u64) {
    match shard.store.user(user_id) {
        Ok(Some(user)) => shard.respond(
            reply,
            Body::UserFound(pb::UserFound {
                user_id,
                username: user.username,
            }),
        ),
        Ok(None) => shard.fail(reply, ErrorCode::UserNotFound, "no such user"),
        Err(e) => shard.internal(reply, &e),
    }
}
