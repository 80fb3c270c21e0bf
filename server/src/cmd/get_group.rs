//! GetGroup: the group's name and members, for members only. Runs on the group's shard.

use std::rc::Rc;

use crate::shard::{Reply, Shard};

pub fn run(shard: &Rc<Shard>, reply: Reply, me: u64, group_id: u64) {
    match shard.groups.visible_to(shard, group_id, me) {
        Ok(group) => {
            let info = shard.groups.info(shard, &group);
            shard.respond(reply, info)
        }
        Err((code, msg)) => shard.fail(reply, code, msg),
    }
}
