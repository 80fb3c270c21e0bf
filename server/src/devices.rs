//! Devices: a device is a session token issued by Login, named by the Login and listed with
//! its last activity. Devices, tokens and sessions (which know the token each connection
//! logged in with) all live on the user's shard, so listing and revoking are local.

use std::rc::Rc;

use chat_protocol::pb::{self, envelope::Body};
use chat_protocol::{error_envelope, ErrorCode};
use chat_storage::{DeviceRecord, StorageError};

use crate::auth;
use crate::clock::Clock;
use crate::shard::{Auth, Reply, Shard};

/// The record of a device that Login is about to create.
pub fn new_device(user_id: u64, token_hash: &[u8; 32], name: String, now_us: u64) -> DeviceRecord {
    DeviceRecord {
        user_id,
        device_id: auth::device_id(token_hash),
        name,
        token_hash: token_hash.to_vec(),
        created_us: now_us,
        last_active_us: now_us,
    }
}

/// A Resume with the device's token succeeded: its last activity is now. A token issued
/// before devices were recorded gets a record (without a name) here.
pub fn resumed(shard: &Shard, user: u64, token_hash: &[u8; 32]) -> Result<(), StorageError> {
    let now = Clock::now_us();
    let device = match shard.store.device(user, auth::device_id(token_hash))? {
        Some(d) => DeviceRecord {
            last_active_us: now,
            ..d
        },
        None => new_device(user, token_hash, String::new(), now),
    };
    shard.store.put_device(&device)
}

/// The device's last connection closed: its last activity is now (if it still exists).
pub fn went_idle(shard: &Shard, user: u64, token_hash: &[u8; 32]) {
    let id = auth::device_id(token_hash);
    let touched = shard
        .store
        .device(user, id)
        .and_then(|device| match device {
            Some(d) if d.token_hash[..] == token_hash[..] => {
                shard.store.put_device(&DeviceRecord {
                    last_active_us: Clock::now_us(),
                    ..d
                })
            }
            _ => Ok(()),
        });
    if let Err(e) = touched {
        tracing::warn!(shard = shard.id, "recording a device's last activity: {e}");
    }
}

/// ListDevices, on the caller's shard.
pub fn list(shard: &Rc<Shard>, reply: Reply, me: u64) {
    let records = match shard.store.devices_of(me) {
        Ok(r) => r,
        Err(e) => return shard.internal(reply, &e),
    };
    let current = shard.session_token(me, reply.conn);
    let mut devices: Vec<pb::Device> = records
        .into_iter()
        .map(|d| pb::Device {
            online: !shard.device_conns(me, &d.token_hash).is_empty(),
            current: current.is_some_and(|h| h[..] == d.token_hash[..]),
            device_id: d.device_id,
            name: d.name,
            created_us: d.created_us,
            last_active_us: d.last_active_us,
        })
        .collect();
    devices.sort_by(|a, b| {
        (b.online, b.last_active_us, a.device_id).cmp(&(a.online, a.last_active_us, b.device_id))
    });
    shard.respond(reply, Body::Devices(pb::Devices { devices }));
}

/// RevokeDevice, on the caller's shard: revokes the token, answers, then closes the
/// device's connections (the caller's own, when it named its own device).
pub fn revoke(shard: &Rc<Shard>, reply: Reply, me: u64, device_id: u64) {
    let device = match shard.store.device(me, device_id) {
        Ok(Some(d)) => d,
        Ok(None) => return shard.fail(reply, ErrorCode::DeviceNotFound, "no such device"),
        Err(e) => return shard.internal(reply, &e),
    };
    if let Err(e) = shard
        .store
        .delete_device(me, device.device_id, &device.token_hash)
    {
        return shard.internal(reply, &e);
    }
    shard.respond(reply, Body::Done(pb::Done {}));
    for conn in shard.device_conns(me, &device.token_hash) {
        shard.end_session(me, conn);
        let env = error_envelope(0, ErrorCode::SessionRevoked, "this device was logged out");
        shard.to_conn(conn, Auth::LoggedOut, env);
    }
}
