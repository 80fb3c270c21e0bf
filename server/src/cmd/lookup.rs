//! LookupUser: username -> user id, on the shard that owns the username.

use std::rc::Rc;

use chat_protocol::pb::{self, envelope::Body};
use chat_protocol::ErrorCode;

use crate::shard::{Reply, Shard};

pub fn run(shard: &Rc<Shard>, reply: Reply, username: &str) {
    match shard.store.user_id_by_name(username) {
        Ok(Some(user_id)) => shard.respond(
            reply,
            Body::UserFound(pb::UserFound {
                user_id,
                username: username.to_string(),
            }),
        ),
        Ok(None) => shard.fail(reply, ErrorCode::UserNotFound, "no such user"),
        Err(e) => shard.internal(reply, &e),
    }
}
