//! LeaveGroup: any member leaves. When the last admin leaves, the longest-standing member
//! becomes admin, so a group is never left without one. Runs on the group's shard.

use std::rc::Rc;

use chat_protocol::pb::{GroupChangeKind, GroupRole};

use crate::groups::is_admin;
use crate::shard::{Reply, Shard};

pub fn run(shard: &Rc<Shard>, reply: Reply, me: u64, group_id: u64) {
    let group = match shard.groups.visible_to(shard, group_id, me) {
        Ok(g) => g,
        Err((code, msg)) => return shard.fail(reply, code, msg),
    };
    let recipients = group.members.iter().map(|m| m.user_id).collect();
    let mut updated = (*group).clone();
    updated.members.retain(|m| m.user_id != me);
    if !updated.members.iter().any(|m| is_admin(m.role())) {
        if let Some(first) = updated.members.first_mut() {
            first.set_role(GroupRole::Admin);
        }
    }
    shard.groups.change(
        shard,
        reply,
        me,
        updated,
        GroupChangeKind::Left,
        vec![me],
        recipients,
    );
}
