//! ListDevices: the caller's devices with their last activity, on the caller's shard.

use std::rc::Rc;

use crate::shard::{Reply, Shard};

pub fn run(shard: &Rc<Shard>, reply: Reply, me: u64) {
    crate::devices::list(shard, reply, me);
}
