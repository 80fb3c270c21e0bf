//! AddMembers: admins add users (checked to exist on their shards); runs on the group's shard.

use std::rc::Rc;

use chat_protocol::pb::{self, GroupChangeKind, GroupRole};
use chat_protocol::ErrorCode;

use crate::groups::{role_of, Pending};
use crate::shard::{Reply, Shard};

pub fn run(shard: &Rc<Shard>, reply: Reply, actor: u64, group_id: u64, user_ids: Vec<u64>) {
    let group = match shard.groups.administered_by(shard, group_id, actor) {
        Ok(g) => g,
        Err((code, msg)) => return shard.fail(reply, code, msg),
    };
    let new = not_yet_members(&group, user_ids);
    if new.is_empty() {
        let info = shard.groups.info(shard, &group);
        return shard.respond(reply, info);
    }
    if let Err((code, msg)) = room_for(shard, &group, new.len()) {
        return shard.fail(reply, code, msg);
    }
    shard.groups.check_users(
        shard,
        &new.clone(),
        Pending::Add {
            reply,
            actor,
            group_id,
            user_ids: new,
        },
    );
}

/// Once the new members are known to exist. The group may have changed meanwhile, so
/// everything is checked again.
pub fn add(shard: &Rc<Shard>, reply: Reply, actor: u64, group_id: u64, user_ids: Vec<u64>) {
    let group = match shard.groups.administered_by(shard, group_id, actor) {
        Ok(g) => g,
        Err((code, msg)) => return shard.fail(reply, code, msg),
    };
    let new = not_yet_members(&group, user_ids);
    if let Err((code, msg)) = room_for(shard, &group, new.len()) {
        return shard.fail(reply, code, msg);
    }
    if new.is_empty() {
        let info = shard.groups.info(shard, &group);
        return shard.respond(reply, info);
    }
    let mut updated = (*group).clone();
    updated
        .members
        .extend(new.iter().map(|&user_id| pb::GroupMember {
            user_id,
            role: GroupRole::Member as i32,
        }));
    let recipients = updated.members.iter().map(|m| m.user_id).collect();
    shard.groups.change(
        shard,
        reply,
        actor,
        updated,
        GroupChangeKind::Added,
        new,
        recipients,
    );
}

fn not_yet_members(group: &pb::Group, user_ids: Vec<u64>) -> Vec<u64> {
    user_ids
        .into_iter()
        .filter(|&u| role_of(group, u).is_none())
        .collect()
}

fn room_for(shard: &Shard, group: &pb::Group, more: usize) -> Result<(), (ErrorCode, String)> {
    let max = shard.limits.max_group_members;
    if group.members.len() + more > max {
        return Err((
            ErrorCode::GroupFull,
            format!(
                "the group has {} members; adding {more} would pass the limit of {max}",
                group.members.len()
            ),
        ));
    }
    Ok(())
}
