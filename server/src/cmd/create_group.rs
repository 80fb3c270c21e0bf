//! CreateGroup: runs on the creator's connection shard, which becomes the group's shard
//! (the id is drawn so that it lives there). The members' existence is checked on their
//! own shards first.

use std::rc::Rc;

use chat_protocol::pb::{self, GroupChangeKind, GroupRole};
use chat_protocol::ErrorCode;
use rand::Rng;

use crate::groups::Pending;
use crate::shard::{Reply, Shard};

pub fn run(shard: &Rc<Shard>, reply: Reply, creator: u64, name: String, members: Vec<u64>) {
    let mut members: Vec<u64> = members.into_iter().filter(|&m| m != creator).collect();
    if members.len() + 1 > shard.limits.max_group_members {
        return shard.fail(
            reply,
            ErrorCode::GroupFull,
            format!(
                "a group has at most {} members",
                shard.limits.max_group_members
            ),
        );
    }
    let group_id = match new_group_id(shard) {
        Ok(id) => id,
        Err(e) => return shard.internal(reply, &e),
    };
    let to_check = members.clone();
    members.insert(0, creator);
    shard.groups.check_users(
        shard,
        &to_check,
        Pending::Create {
            reply,
            creator,
            group_id,
            name,
            members,
        },
    );
}

/// Once every member is known to exist.
pub fn create(
    shard: &Rc<Shard>,
    reply: Reply,
    creator: u64,
    group_id: u64,
    name: String,
    members: Vec<u64>,
) {
    let group = pb::Group {
        group_id,
        name,
        members: members
            .iter()
            .map(|&user_id| pb::GroupMember {
                user_id,
                role: if user_id == creator {
                    GroupRole::Creator
                } else {
                    GroupRole::Member
                } as i32,
            })
            .collect(),
        head_seq: 0,
        created_us: crate::clock::Clock::now_us(),
    };
    shard.groups.change(
        shard,
        reply,
        creator,
        group,
        GroupChangeKind::Created,
        members.clone(),
        members,
    );
}

/// A random unused group id that lives on this shard.
fn new_group_id(shard: &Shard) -> Result<u64, chat_storage::StorageError> {
    let mut rng = rand::thread_rng();
    loop {
        let id: u64 = rng.gen();
        if id != 0 && shard.place.group(id) == shard.id && !shard.groups.exists(shard, id)? {
            return Ok(id);
        }
    }
}
