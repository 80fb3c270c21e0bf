//! Key encoding for every column family, in one place.
//!
//! Keys are fixed-width big-endian so that RocksDB's bytewise order is numeric order:
//! iterating `inbox` for one user walks seqs ascending, and `history` walks timestamps.

pub const ID: usize = 8;

pub fn user(user_id: u64) -> [u8; ID] {
    user_id.to_be_bytes()
}

/// inbox: user_id | seq
pub fn inbox(user_id: u64, seq: u64) -> [u8; 16] {
    pair(user_id, seq)
}

/// history: the conversation's lower user id | its higher one | timestamp_us (timestamps are
/// unique per server). One key for both users: a shard that holds both stores a message once.
pub fn history(user: u64, peer: u64, timestamp_us: u64) -> [u8; 24] {
    triple(user.min(peer), user.max(peer), timestamp_us)
}

/// Whether a `history` key belongs to the conversation of `user` and `peer`.
pub fn in_conversation(key: &[u8], user: u64, peer: u64) -> bool {
    key.get(..16) == Some(&history(user, peer, 0)[..16])
}

/// idempotency: recipient | sender | client_msg_id (recipient is a group id in
/// group_idempotency)
pub fn idempotency(recipient: u64, sender: u64, client_msg_id: u64) -> [u8; 24] {
    triple(recipient, sender, client_msg_id)
}

fn triple(a: u64, b: u64, c: u64) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&a.to_be_bytes());
    k[8..16].copy_from_slice(&b.to_be_bytes());
    k[16..].copy_from_slice(&c.to_be_bytes());
    k
}

fn pair(a: u64, b: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&a.to_be_bytes());
    k[8..].copy_from_slice(&b.to_be_bytes());
    k
}

/// Reads the big-endian u64 at `at` in `key`, if the key is long enough.
pub fn u64_at(key: &[u8], at: usize) -> Option<u64> {
    let bytes: [u8; 8] = key.get(at..at + 8)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// group_log: group_id | timestamp_us (timestamps are unique per shard and grow with the
/// group seq, so this is also seq order, and history pages by time like 1:1 history)
pub fn group_log(group_id: u64, timestamp_us: u64) -> [u8; 16] {
    pair(group_id, timestamp_us)
}

/// group_pending and group_copies: group_id | group seq
pub fn group_entry(group_id: u64, seq: u64) -> [u8; 16] {
    pair(group_id, seq)
}

/// read_markers: reader | 0 (user) or 1 (group) | peer user id or group id
pub fn read_marker(reader: u64, group: bool, conversation: u64) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[..8].copy_from_slice(&reader.to_be_bytes());
    k[8] = u8::from(group);
    k[9..].copy_from_slice(&conversation.to_be_bytes());
    k
}

/// uploads: owner | upload_id
pub fn upload(owner: u64, upload_id: &[u8; 16]) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&owner.to_be_bytes());
    k[8..].copy_from_slice(upload_id);
    k
}

/// content: content_id | offset of the chunk's first byte
pub fn content(content_id: &[u8; 16], offset: u64) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..16].copy_from_slice(content_id);
    k[16..].copy_from_slice(&offset.to_be_bytes());
    k
}

/// asset_grants: asset_id | 0 (user) or 1 (group) | user or group id
pub fn asset_grant(asset_id: &[u8; 16], group: bool, id: u64) -> [u8; 25] {
    let mut k = [0u8; 25];
    k[..16].copy_from_slice(asset_id);
    k[16] = u8::from(group);
    k[17..].copy_from_slice(&id.to_be_bytes());
    k
}

/// push_outbox: job id (ascending in the order jobs were staged)
pub fn push_job(job_id: u64) -> [u8; ID] {
    job_id.to_be_bytes()
}

/// devices: user_id | device_id
pub fn device(user_id: u64, device_id: u64) -> [u8; 16] {
    pair(user_id, device_id)
}

/// blocks and contacts: owner | the user in the owner's list
pub fn listed_user(owner: u64, user: u64) -> [u8; 16] {
    pair(owner, user)
}

/// hidden: owner | 0 (user) or 1 (group) | peer user id or group id | the message's
/// timestamp_us
pub fn hidden(owner: u64, group: bool, conversation: u64, timestamp_us: u64) -> [u8; 25] {
    let mut k = [0u8; 25];
    k[..8].copy_from_slice(&owner.to_be_bytes());
    k[8] = u8::from(group);
    k[9..17].copy_from_slice(&conversation.to_be_bytes());
    k[17..].copy_from_slice(&timestamp_us.to_be_bytes());
    k
}
