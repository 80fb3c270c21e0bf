//! Request handlers, one file per command. Each runs on the shard that owns the data the
//! request touches (see `Shard::submit` for the routing) and answers through the shard.

use std::rc::Rc;

use crate::request::Request;
use crate::shard::{Reply, Shard};

pub mod ack;
pub mod get_user;
pub mod history;
pub mod login;
pub mod lookup;
pub mod register;
pub mod resume;
pub mod send;
pub mod sync;

pub fn execute(shard: &Rc<Shard>, reply: Reply, user: Option<u64>, req: Request) {
    match (req, user) {
        (Request::Register { username, password }, _) => {
            register::run(shard, reply, username, password)
        }
        (Request::Login { username, password }, _) => login::run(shard, reply, username, password),
        (Request::Resume { token }, _) => resume::run(shard, reply, &token),
        (Request::Lookup { username }, Some(_)) => lookup::run(shard, reply, &username),
        (Request::GetUser { user_id }, Some(_)) => get_user::run(shard, reply, user_id),
        (Request::Send(send), Some(me)) => send::run(shard, reply, me, send),
        (Request::Sync { after_seq }, Some(me)) => sync::run(shard, reply, me, after_seq),
        (Request::Ack { up_to_seq }, Some(me)) => ack::run(shard, reply, me, up_to_seq),
        (
            Request::History {
                with_user_id,
                before_us,
                limit,
            },
            Some(me),
        ) => history::run(shard, reply, me, with_user_id, before_us, limit),
        // The connection's shard answers Ping and rejects unauthenticated requests before
        // routing, so nothing else reaches here.
        (req, _) => shard.internal(reply, &format!("unroutable request {req:?}")),
    }
}
