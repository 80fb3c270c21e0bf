//! Login: verify the password on the user's shard and issue a session token, which is a new
//! device of the user (see `devices`).

use std::rc::Rc;

use chat_protocol::ErrorCode;
use chat_storage::TokenRecord;

use crate::auth;
use crate::clock::Clock;
use crate::devices;
use crate::request::Secret;
use crate::runtime;
use crate::shard::{Auth, Reply, Shard};

pub fn run(
    shard: &Rc<Shard>,
    reply: Reply,
    username: String,
    password: Secret<String>,
    device_name: String,
) {
    let shard = shard.clone();
    runtime::spawn(async move {
        let user = match shard.store.user_id_by_name(&username) {
            Ok(Some(id)) => shard.store.user(id),
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        };
        let user = match user {
            Ok(user) => user,
            Err(e) => return failed(&shard, reply, ErrorCode::Internal, &e.to_string()),
        };
        // Verify even for unknown names, so timing does not reveal which names exist.
        let phc = user
            .as_ref()
            .map(|u| u.password_hash.clone())
            .unwrap_or_else(|| DUMMY_HASH.to_string());
        let ok = runtime::blocking(move || auth::verify_password(password.expose(), &phc)).await;
        let Some(user) = user.filter(|_| ok) else {
            return failed(
                &shard,
                reply,
                ErrorCode::BadCredentials,
                "wrong username or password",
            );
        };
        // Refused before a token is made, so a refused login leaves none behind.
        if let Some(msg) = super::resume::no_room(&shard, user.user_id) {
            return failed(&shard, reply, ErrorCode::TooManyConnections, &msg);
        }
        let token = auth::new_token(user.user_id);
        // Created after any LogoutAll, even one in the same microsecond or one stamped
        // before the wall clock stepped back (Resume takes only tokens created after it).
        let record = TokenRecord {
            user_id: user.user_id,
            created_us: shard
                .clock
                .next()
                .max(user.tokens_revoked_us.saturating_add(1)),
        };
        // A new token is a new device of the user, stored in the same write.
        let hash = auth::token_hash(&token);
        let device = devices::new_device(user.user_id, &hash, device_name, Clock::now_us());
        if let Err(e) = shard.store.create_session(&hash, &record, &device) {
            return failed(&shard, reply, ErrorCode::Internal, &e.to_string());
        }
        super::resume::establish(&shard, reply, user.user_id, token);
    });
}

/// Answers a failed login and clears the connection's pending-login state.
pub fn failed(shard: &Rc<Shard>, reply: Reply, code: ErrorCode, message: &str) {
    if code == ErrorCode::Internal {
        tracing::error!(shard = shard.id, "login failed internally: {message}");
    }
    let message = if code == ErrorCode::Internal {
        "internal server error"
    } else {
        message
    };
    let env = chat_protocol::error_envelope(reply.request_id, code, message);
    shard.to_conn(reply.conn, Auth::LoginFailed, env);
}

/// An argon2id hash of a random password, used to spend the same time on unknown names.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$3Yt0uP5Vgd8r5tGm2h3t0dJ0m3wKk7o0Zq1m8bZr3cU";
