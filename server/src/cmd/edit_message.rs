//! EditMessage: the sender replaces a message's text within the edit window. On the
//! caller's shard (1:1) or the group's (see `changes`).

use std::rc::Rc;

use crate::changes::{self, Op};
use crate::request::MessageTarget;
use crate::shard::{Reply, Shard};

pub fn run(shard: &Rc<Shard>, reply: Reply, me: u64, target: MessageTarget, text: String) {
    changes::request(shard, reply, me, target, Op::Edit(text));
}
