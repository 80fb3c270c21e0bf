//! Block: first on the blocked user's shard (do they exist?), then on the caller's, which
//! keeps the block list; 1:1 sends and typing to the caller, and presence checks of the
//! caller, run there too and consult it.

use std::rc::Rc;

use chat_storage::UserList;

use crate::lists;
use crate::request::Request;
use crate::shard::{Reply, Shard};

pub fn run(shard: &Rc<Shard>, reply: Reply, me: u64, user_id: u64, checked: bool) {
    if checked {
        lists::add(shard, reply, me, user_id, UserList::Blocked)
    } else {
        let then = Request::Block {
            user_id,
            checked: true,
        };
        lists::check_user(shard, reply, me, user_id, then)
    }
}
