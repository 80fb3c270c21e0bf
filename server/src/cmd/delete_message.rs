//! DeleteMessage: for everyone (the sender, within the delete window) or for the caller
//! only. On the caller's shard (1:1) or the group's (see `changes`).

use std::rc::Rc;

use crate::changes::{self, Op};
use crate::request::MessageTarget;
use crate::shard::{Reply, Shard};

pub fn run(shard: &Rc<Shard>, reply: Reply, me: u64, target: MessageTarget, for_everyone: bool) {
    let op = if for_everyone {
        Op::DeleteForEveryone
    } else {
        Op::DeleteForMe
    };
    changes::request(shard, reply, me, target, op);
}
