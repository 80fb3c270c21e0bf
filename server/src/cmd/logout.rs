//! Logout: revokes the token this connection logged in with and ends its session. Runs on
//! the caller's shard, which knows each session's token (`Shard::begin_session`); the
//! connection's shard has already stopped acting for the user (`Shard::submit`), and the
//! answer closes the connection (`Auth::LoggedOut`).

use std::rc::Rc;

use chat_protocol::pb::{self, envelope::Body};
use chat_protocol::ErrorCode;

use crate::shard::{Auth, Reply, Shard};

pub fn run(shard: &Rc<Shard>, reply: Reply, me: u64) {
    // No session: the connection closed meanwhile, and nobody reads the answer.
    let token_hash = shard.session_token(me, reply.conn);
    shard.end_session(me, reply.conn);
    // The token and its device go together.
    let revoked = match token_hash {
        Some(hash) => shard
            .store
            .delete_device(me, crate::auth::device_id(&hash), &hash),
        None => Ok(()),
    };
    let body = match revoked {
        Ok(()) => Body::Done(pb::Done {}),
        Err(e) => {
            tracing::error!(shard = shard.id, "revoking a token at logout: {e}");
            Body::Error(pb::Error {
                code: ErrorCode::Internal as i32,
                message: "internal server error: the token may still be valid".into(),
                retry_after_ms: 0,
            })
        }
    };
    shard.respond_auth(reply, Auth::LoggedOut, body);
}
