//! Storage-only protobuf records (values that never go on the wire).

/// Column family `users`, key user_id.
#[derive(Clone, PartialEq, prost::Message)]
pub struct UserRecord {
    #[prost(uint64, tag = "1")]
    pub user_id: u64,
    #[prost(string, tag = "2")]
    pub username: String,
    /// argon2id PHC string.
    #[prost(string, tag = "3")]
    pub password_hash: String,
    #[prost(uint64, tag = "4")]
    pub created_us: u64,
}

/// Column family `tokens`, key sha256(token).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TokenRecord {
    #[prost(uint64, tag = "1")]
    pub user_id: u64,
    #[prost(uint64, tag = "2")]
    pub created_us: u64,
}

/// Column family `idempotency`: where a (recipient, sender, client_msg_id) was stored.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SendRecord {
    #[prost(uint64, tag = "1")]
    pub seq: u64,
    #[prost(uint64, tag = "2")]
    pub timestamp_us: u64,
}
