//! RevokeDevice: logs one of the caller's devices out (its token is revoked, its
//! connections closed), on the caller's shard.

use std::rc::Rc;

use crate::shard::{Reply, Shard};

pub fn run(shard: &Rc<Shard>, reply: Reply, me: u64, device_id: u64) {
    crate::devices::revoke(shard, reply, me, device_id);
}
