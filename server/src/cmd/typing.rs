//! Typing: forwarded to the other side's online connections and forgotten. 1:1 runs on the
//! recipient's shard; a group's on the group's shard, which hands it to the members' shards
//! in one message per shard.

use std::rc::Rc;

use chat_protocol::pb::{self, envelope::Body};
use chat_protocol::ErrorCode;

use crate::presence;
use crate::request::Conversation;
use crate::shard::{Reply, Shard, ShardMsg};

pub fn run(shard: &Rc<Shard>, reply: Reply, me: u64, with: Conversation, typing: bool) {
    match with {
        Conversation::User(to) => {
            if to == me {
                return shard.fail(reply, ErrorCode::InvalidArgument, "cannot type to yourself");
            }
            if !presence::typing_to_user(shard, me, to, typing) {
                return shard.fail(reply, ErrorCode::UserNotFound, "no such user");
            }
        }
        Conversation::Group(group_id) => {
            let group = match shard.groups.visible_to(shard, group_id, me) {
                Ok(g) => g,
                Err((code, msg)) => return shard.fail(reply, code, msg),
            };
            let others = group.members.iter().map(|m| m.user_id).filter(|&u| u != me);
            for (dest, members) in shard.place.users_by_dest(others) {
                shard.dispatch(
                    dest,
                    ShardMsg::TypingFanout {
                        from: me,
                        group_id,
                        typing,
                        members,
                    },
                );
            }
        }
    }
    shard.respond(reply, Body::Done(pb::Done {}));
}
