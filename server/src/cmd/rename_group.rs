//! RenameGroup: admins rename the group. Runs on the group's shard.

use std::rc::Rc;

use chat_protocol::pb::GroupChangeKind;

use crate::shard::{Reply, Shard};

pub fn run(shard: &Rc<Shard>, reply: Reply, actor: u64, group_id: u64, name: String) {
    let group = match shard.groups.administered_by(shard, group_id, actor) {
        Ok(g) => g,
        Err((code, msg)) => return shard.fail(reply, code, msg),
    };
    let recipients = group.members.iter().map(|m| m.user_id).collect();
    let mut updated = (*group).clone();
    updated.name = name;
    shard.groups.change(
        shard,
        reply,
        actor,
        updated,
        GroupChangeKind::Renamed,
        Vec::new(),
        recipients,
    );
}
