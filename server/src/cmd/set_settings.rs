//! SetSettings: the caller's privacy and notification settings. Runs on the caller's shard.

use std::rc::Rc;

use chat_protocol::pb::{self, envelope::Body};
use chat_protocol::ErrorCode;

use crate::shard::{Reply, Shard};

pub fn run(
    shard: &Rc<Shard>,
    reply: Reply,
    me: u64,
    read_receipts: Option<bool>,
    presence_visibility: Option<pb::PresenceVisibility>,
    push_previews: Option<bool>,
) {
    let mut user = match shard.store.user(me) {
        Ok(Some(u)) => u,
        Ok(None) => return shard.fail(reply, ErrorCode::UserNotFound, "no such user"),
        Err(e) => return shard.internal(reply, &e),
    };
    if let Some(on) = read_receipts {
        user.read_receipts_off = !on;
    }
    if let Some(v) = presence_visibility {
        user.presence_visibility = v as i32;
    }
    if let Some(on) = push_previews {
        user.push_previews_off = !on;
    }
    if read_receipts.is_some() || presence_visibility.is_some() || push_previews.is_some() {
        if let Err(e) = shard.store.put_user(&user) {
            return shard.internal(reply, &e);
        }
    }
    shard.respond(
        reply,
        Body::Settings(pb::Settings {
            read_receipts: !user.read_receipts_off,
            presence_visibility: user.presence_visibility,
            push_previews: !user.push_previews_off,
        }),
    );
}
