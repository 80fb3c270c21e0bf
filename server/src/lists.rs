//! The users a user keeps in a list (the ones they blocked, their contacts), on the owner's
//! shard. Adding someone first asks the shard of the user added whether they exist.

use std::rc::Rc;

use chat_protocol::pb::{self, envelope::Body};
use chat_protocol::ErrorCode;
use chat_storage::{StorageError, UserList, MAX_LISTED_USERS};

use crate::clock::Clock;
use crate::request::Request;
use crate::shard::{Reply, Shard, ShardMsg};

/// On the shard of `user`: whether they exist; if they do, the request goes on to the
/// owner's shard (`checked`).
pub fn check_user(shard: &Rc<Shard>, reply: Reply, me: u64, user: u64, then: Request) {
    if user == me {
        return shard.fail(reply, ErrorCode::InvalidArgument, "that is yourself");
    }
    match shard.store.user_exists(user) {
        Ok(true) => shard.dispatch(
            shard.place.user(me),
            ShardMsg::Request {
                reply,
                user: Some(me),
                req: then,
            },
        ),
        Ok(false) => shard.fail(reply, ErrorCode::UserNotFound, "no such user"),
        Err(e) => shard.internal(reply, &e),
    }
}

/// On the owner's shard: adds `user` to the list (once), answers Done.
pub fn add(shard: &Rc<Shard>, reply: Reply, me: u64, user: u64, list: UserList) {
    match shard.store.add_listed(list, me, user, Clock::now_us()) {
        Ok(_) => shard.respond(reply, Body::Done(pb::Done {})),
        Err(StorageError::ListFull) => shard.fail(
            reply,
            ErrorCode::ListFull,
            format!("a list holds at most {MAX_LISTED_USERS} users"),
        ),
        Err(e) => shard.internal(reply, &e),
    }
}

/// On the owner's shard: removes `user` from the list if there, answers Done.
pub fn remove(shard: &Rc<Shard>, reply: Reply, me: u64, user: u64, list: UserList) {
    match shard.store.remove_listed(list, me, user) {
        Ok(_) => shard.respond(reply, Body::Done(pb::Done {})),
        Err(e) => shard.internal(reply, &e),
    }
}

/// On the owner's shard: the list, most recently added first.
pub fn show(shard: &Rc<Shard>, reply: Reply, me: u64, list: UserList) {
    match shard.store.listed(list, me) {
        Ok(entries) => {
            let users = entries
                .into_iter()
                .map(|(user_id, added_us)| pb::ListedUser { user_id, added_us })
                .collect();
            shard.respond(reply, Body::UserList(pb::UserList { users }));
        }
        Err(e) => shard.internal(reply, &e),
    }
}

/// Whether `blocker` (a user of this shard) blocked `user`. A storage error counts as
/// not blocked: it is logged, and the message or indication goes through.
pub fn blocked(shard: &Shard, blocker: u64, user: u64) -> bool {
    shard
        .store
        .is_listed(UserList::Blocked, blocker, user)
        .unwrap_or_else(|e| {
            tracing::error!(shard = shard.id, "reading a block list: {e}");
            false
        })
}
