//! RemoveMember: an admin removes a member (not the creator). The removed member still
//! receives the change, so their clients learn they are out. Runs on the group's shard.

use std::rc::Rc;

use chat_protocol::pb::{GroupChangeKind, GroupRole};
use chat_protocol::ErrorCode;

use crate::groups::role_of;
use crate::shard::{Reply, Shard};

pub fn run(shard: &Rc<Shard>, reply: Reply, actor: u64, group_id: u64, user_id: u64) {
    if user_id == actor {
        return crate::cmd::leave_group::run(shard, reply, actor, group_id);
    }
    let group = match shard.groups.administered_by(shard, group_id, actor) {
        Ok(g) => g,
        Err((code, msg)) => return shard.fail(reply, code, msg),
    };
    match role_of(&group, user_id) {
        None => {
            return shard.fail(
                reply,
                ErrorCode::UserNotFound,
                "that user is not a member of the group",
            )
        }
        Some(GroupRole::Creator) => {
            return shard.fail(
                reply,
                ErrorCode::PermissionDenied,
                "the group's creator cannot be removed",
            )
        }
        Some(_) => {}
    }
    let recipients = group.members.iter().map(|m| m.user_id).collect();
    let mut updated = (*group).clone();
    updated.members.retain(|m| m.user_id != user_id);
    shard.groups.change(
        shard,
        reply,
        actor,
        updated,
        GroupChangeKind::Removed,
        vec![user_id],
        recipients,
    );
}
