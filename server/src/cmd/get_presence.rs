//! GetPresence: a snapshot of online state and last seen, without updates. Runs on the
//! caller's shard, which asks the users' shards (see `presence`).

use std::rc::Rc;

use crate::shard::{Reply, Shard};

pub fn run(shard: &Rc<Shard>, reply: Reply, me: u64, user_ids: Vec<u64>) {
    shard.presence.query(shard, reply, me, user_ids, false);
}
