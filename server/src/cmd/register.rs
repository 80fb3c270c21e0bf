//! Register: create an account on the shard that owns the username.

use std::rc::Rc;

use chat_protocol::pb::{self, envelope::Body};
use chat_protocol::ErrorCode;
use chat_storage::{StorageError, UserRecord};
use rand::Rng;

use crate::auth;
use crate::clock::Clock;
use crate::request::Secret;
use crate::runtime;
use crate::shard::{Reply, Shard};

pub fn run(shard: &Rc<Shard>, reply: Reply, username: String, password: Secret<String>) {
    let shard = shard.clone();
    runtime::spawn(async move {
        match shard.store.user_id_by_name(&username) {
            Ok(None) => {}
            Ok(Some(_)) => return taken(&shard, reply),
            Err(e) => return shard.internal(reply, &e),
        }
        let hash = match runtime::blocking(move || auth::hash_password(password.expose())).await {
            Ok(hash) => hash,
            Err(e) => return shard.internal(reply, &e),
        };
        let user_id = match new_user_id(&shard, &username) {
            Ok(Some(id)) => id,
            Ok(None) => return shard.internal(reply, &"no user id fits: the slot moved"),
            Err(e) => return shard.internal(reply, &e),
        };
        let record = UserRecord {
            push_previews_off: false,
            user_id,
            username,
            password_hash: hash,
            created_us: Clock::now_us(),
            read_receipts_off: false,
            presence_visibility: 0,
            tokens_revoked_us: 0,
        };
        // Checked again here: another Register may have taken the name while we hashed.
        match shard.store.create_user(&record) {
            Ok(()) => shard.respond(reply, Body::Registered(pb::Registered { user_id })),
            Err(StorageError::UsernameTaken) => taken(&shard, reply),
            Err(e) => shard.internal(reply, &e),
        }
    });
}

fn taken(shard: &Rc<Shard>, reply: Reply) {
    shard.fail(reply, ErrorCode::UsernameTaken, "username is taken");
}

/// A random unused id that lives on this shard, so the username and the user share a shard
/// (and, in a cluster, a slot: they move together).
fn new_user_id(shard: &Shard, username: &str) -> Result<Option<u64>, StorageError> {
    let mut rng = rand::thread_rng();
    // A few thousand draws on average (1 in slots x shards fits); the bound only matters
    // if the slot moved away meanwhile.
    for _ in 0..10_000_000 {
        let id: u64 = rng.gen();
        if id != 0
            && shard.place.user(id) == shard.id
            && shard.place.same_slot(id, username)
            && !shard.store.user_exists(id)?
        {
            return Ok(Some(id));
        }
    }
    Ok(None)
}
