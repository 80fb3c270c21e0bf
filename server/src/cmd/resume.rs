//! Resume: log in with a session token (reconnect), on the token owner's shard.

use std::rc::Rc;

use chat_protocol::pb::{self, envelope::Body};
use chat_protocol::ErrorCode;

use super::login::failed;
use crate::auth;
use crate::devices;
use crate::shard::{Auth, Reply, Shard};

pub fn run(shard: &Rc<Shard>, reply: Reply, token: &[u8]) {
    let claimed = auth::token_user(token).filter(|&u| shard.place.user(u) == shard.id);
    let Some(claimed) = claimed else {
        return failed(shard, reply, ErrorCode::BadCredentials, "unknown token");
    };
    let hash = auth::token_hash(token);
    let record = match shard.store.token(&hash) {
        Ok(Some(record)) if record.user_id == claimed => record,
        Ok(_) => return failed(shard, reply, ErrorCode::BadCredentials, "unknown token"),
        Err(e) => return failed(shard, reply, ErrorCode::Internal, &e.to_string()),
    };
    // LogoutAll revoked every token created up to its time (see `cmd::logout_all`).
    match shard.store.user(claimed) {
        Ok(Some(user)) if record.created_us > user.tokens_revoked_us => {
            // Resume keeps the device: it is active now.
            if let Err(e) = devices::resumed(shard, claimed, &hash) {
                return failed(shard, reply, ErrorCode::Internal, &e.to_string());
            }
            establish(shard, reply, claimed, token.to_vec())
        }
        Ok(_) => {
            // Revoked: forget it, so the tokens column family does not keep it forever.
            if let Err(e) = shard.store.delete_token(&hash) {
                tracing::warn!(shard = shard.id, "forgetting a revoked token: {e}");
            }
            failed(shard, reply, ErrorCode::BadCredentials, "unknown token")
        }
        Err(e) => failed(shard, reply, ErrorCode::Internal, &e.to_string()),
    }
}

/// Why the user may not log in one more connection, if they may not.
pub fn no_room(shard: &Shard, user_id: u64) -> Option<String> {
    let max = shard.limits.max_connections_per_user;
    (shard.session_conns(user_id).len() >= max)
        .then(|| format!("this user already has {max} connections, the most allowed"))
}

/// Registers the session on this (the user's) shard and answers LoggedIn, which also marks
/// the connection authenticated on its own shard.
pub fn establish(shard: &Rc<Shard>, reply: Reply, user_id: u64, token: Vec<u8>) {
    if let Some(msg) = no_room(shard, user_id) {
        return failed(shard, reply, ErrorCode::TooManyConnections, &msg);
    }
    let acked_seq = match shard.store.acked(user_id) {
        Ok(seq) => seq,
        Err(e) => return failed(shard, reply, ErrorCode::Internal, &e.to_string()),
    };
    let hash = auth::token_hash(&token);
    shard.begin_session(user_id, reply.conn, hash);
    let body = Body::LoggedIn(pb::LoggedIn {
        user_id,
        token: token.into(),
        acked_seq,
        device_id: auth::device_id(&hash),
    });
    shard.respond_auth(reply, Auth::LoggedIn(user_id), body);
}
