//! RemoveContact: removes a user from the caller's contact list, on the caller's shard.

use std::rc::Rc;

use chat_storage::UserList;

use crate::shard::{Reply, Shard};

pub fn run(shard: &Rc<Shard>, reply: Reply, me: u64, user_id: u64) {
    crate::lists::remove(shard, reply, me, user_id, UserList::Contacts);
}
