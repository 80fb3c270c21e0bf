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
    /// The user turned read receipts off (sends none, receives none).
    #[prost(bool, tag = "5")]
    pub read_receipts_off: bool,
    /// `pb::PresenceVisibility`: who may see the user's presence.
    #[prost(int32, tag = "6")]
    pub presence_visibility: i32,
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

/// Column family `inbox`, for a group entry: a reference to the shard's one copy of it in
/// `group_copies`, so a message to a big group stores its body once per shard, not once
/// per member. Other inbox values are encoded `pb::Event`s; this shares `pb::Event`'s seq
/// tag and uses a tag `pb::Event` does not, so decoding it as an event gives no kind.
#[derive(Clone, PartialEq, prost::Message)]
pub struct InboxRef {
    #[prost(uint64, tag = "1")]
    pub seq: u64,
    #[prost(message, optional, tag = "90")]
    pub group_ref: Option<GroupRef>,
}

/// A group log entry by its group seq.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct GroupRef {
    #[prost(uint64, tag = "1")]
    pub group_id: u64,
    #[prost(uint64, tag = "2")]
    pub seq: u64,
}

/// Column family `group_receipts`, key group_id | member: how far the member has received
/// and read the group (group seqs).
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct GroupMarks {
    #[prost(uint64, tag = "1")]
    pub delivered: u64,
    #[prost(uint64, tag = "2")]
    pub read: u64,
}
