//! ListContacts: the caller's contact list, on the caller's shard.

use std::rc::Rc;

use chat_storage::UserList;

use crate::shard::{Reply, Shard};

pub fn run(shard: &Rc<Shard>, reply: Reply, me: u64) {
    crate::lists::show(shard, reply, me, UserList::Contacts);
}
