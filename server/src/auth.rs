//! Passwords (argon2id, PHC strings) and session tokens (random, stored hashed).
//!
//! Hashing is deliberately slow; callers run it off the shard's event loop.

use argon2::password_hash::{rand_core::OsRng, PasswordHash, SaltString};
use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// A token is the owner's user id (so any shard can route it) followed by 32 random bytes.
pub const TOKEN_BYTES: usize = 8 + 32;

pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|hash| {
            Argon2::default()
                .verify_password(password.as_bytes(), &hash)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A fresh token for `user_id`.
pub fn new_token(user_id: u64) -> Vec<u8> {
    let mut token = vec![0u8; TOKEN_BYTES];
    token[..8].copy_from_slice(&user_id.to_be_bytes());
    rand::rngs::OsRng.fill_bytes(&mut token[8..]);
    token
}

/// The user id a token claims (verified only by looking up its hash on that user's shard).
pub fn token_user(token: &[u8]) -> Option<u64> {
    if token.len() != TOKEN_BYTES {
        return None;
    }
    let id: [u8; 8] = token[..8].try_into().ok()?;
    Some(u64::from_be_bytes(id))
}

pub fn token_hash(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

/// The id of the device a token was issued to: the first 8 bytes of the token's hash
/// (nonzero), so any holder of the token's hash finds its device without an index.
pub fn device_id(token_hash: &[u8; 32]) -> u64 {
    let mut id = [0u8; 8];
    id.copy_from_slice(&token_hash[..8]);
    u64::from_be_bytes(id).max(1)
}

/// Usernames: 3-32 of [a-z0-9_.-], starting with a letter or digit, compared lowercased.
pub fn normalize_username(name: &str) -> Option<String> {
    let name = name.to_ascii_lowercase();
    let ok_len = (3..=32).contains(&name.len());
    let ok_first = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric());
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    (ok_len && ok_first && ok_chars).then_some(name)
}

pub const PASSWORD_BYTES: std::ops::RangeInclusive<usize> = 8..=256;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // reason: test code
    use super::*;

    #[test]
    fn password_round_trip() {
        let phc = hash_password("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &phc));
        assert!(!verify_password("wrong horse", &phc));
        assert!(!verify_password("x", "not a phc string"));
    }

    #[test]
    fn tokens_carry_their_user_and_differ() {
        let a = new_token(42);
        assert_eq!(token_user(&a), Some(42));
        assert_ne!(a, new_token(42));
        assert_eq!(token_user(&a[..10]), None);
    }

    #[test]
    fn usernames_are_validated_and_lowercased() {
        assert_eq!(normalize_username("Alice_1").as_deref(), Some("alice_1"));
        assert_eq!(normalize_username("ab"), None);
        assert_eq!(normalize_username("-abc"), None);
        assert_eq!(normalize_username("a b c"), None);
        assert_eq!(normalize_username("ålice"), None);
    }
}
