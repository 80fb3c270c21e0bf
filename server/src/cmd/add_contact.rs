//! AddContact: first on the contact's shard (do they exist?), then on the caller's, which
//! keeps the contact list (presence visibility is decided there).

use std::rc::Rc;

use chat_storage::UserList;

use crate::lists;
use crate::request::Request;
use crate::shard::{Reply, Shard};

pub fn run(shard: &Rc<Shard>, reply: Reply, me: u64, user_id: u64, checked: bool) {
    if checked {
        lists::add(shard, reply, me, user_id, UserList::Contacts)
    } else {
        let then = Request::AddContact {
            user_id,
            checked: true,
        };
        lists::check_user(shard, reply, me, user_id, then)
    }
}
