//! GetReceipts: who has received and read a group message. Runs on the group's shard.

use std::rc::Rc;

use crate::shard::{Reply, Shard};

pub fn run(shard: &Rc<Shard>, reply: Reply, me: u64, group_id: u64, seq: u64) {
    crate::receipts::get(shard, reply, me, group_id, seq)
}
