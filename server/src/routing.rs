//! Which shard owns what. Stable across releases: these functions decide where data lives
//! on disk, so they must never change for an existing data directory.

/// The shard that owns `user_id` (its inbox, history, tokens, sessions).
pub fn shard_of_user(user_id: u64, shards: usize) -> usize {
    (mix64(user_id) % shards as u64) as usize
}

/// The shard that owns a group (its record, log and membership).
pub fn shard_of_group(group_id: u64, shards: usize) -> usize {
    (mix64(group_id) % shards as u64) as usize
}

/// The shard that owns an asset (its record, grants and bytes): the uploader's shard,
/// because asset ids are drawn until this lands there.
pub fn shard_of_asset(asset_id: &[u8; 16], shards: usize) -> usize {
    shard_of_head(asset_id, shards)
}

/// The shard that knows which user a push token (by its SHA-256) belongs to.
pub fn shard_of_token(token_hash: &[u8; 32], shards: usize) -> usize {
    shard_of_head(token_hash, shards)
}

/// The shard of a random or hashed id of at least 8 bytes, by its first 8.
fn shard_of_head(id: &[u8], shards: usize) -> usize {
    let mut head = [0u8; 8];
    head.copy_from_slice(&id[..8]);
    (mix64(u64::from_be_bytes(head)) % shards as u64) as usize
}

/// The shard that owns a (normalized) username. Registration picks a user id that lives on
/// this same shard, so a login touches one shard.
pub fn shard_of_username(username: &str, shards: usize) -> usize {
    shard_of_username_bytes(username.as_bytes(), shards)
}

/// [`shard_of_username`] of a username as stored (its bytes).
pub fn shard_of_username_bytes(username: &[u8], shards: usize) -> usize {
    (fnv1a64(username) % shards as u64) as usize
}

/// splitmix64 finalizer: spreads sequential or structured ids evenly. Also the cluster's
/// slot and rendezvous hashing (`cluster::rendezvous`).
pub(crate) fn mix64(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_is_stable_and_spread() {
        // Pinned values: changing the hash would orphan existing data.
        assert_eq!(
            shard_of_username("alice", 4),
            (fnv1a64(b"alice") % 4) as usize
        );
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        let mut counts = [0usize; 4];
        for id in 1..=4000u64 {
            counts[shard_of_user(id, 4)] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
        assert_eq!(shard_of_user(12345, 1), 0);
    }
}
