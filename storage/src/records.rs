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
    /// Push notifications for the user carry no message text.
    #[prost(bool, tag = "7")]
    pub push_previews_off: bool,
    /// LogoutAll: every session token whose `TokenRecord.created_us` is at or before this
    /// is revoked (0 = none). Tokens issued later are created after it (see `cmd::login`).
    #[prost(uint64, tag = "8")]
    pub tokens_revoked_us: u64,
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
    /// A 1:1 message the inbox owner sent: its history entry (see `own`).
    #[prost(message, optional, tag = "91")]
    pub sent_ref: Option<SentRef>,
}

/// A 1:1 message by its history key: the conversation's two users and its timestamp.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct SentRef {
    #[prost(uint64, tag = "1")]
    pub from: u64,
    #[prost(uint64, tag = "2")]
    pub to: u64,
    #[prost(uint64, tag = "3")]
    pub timestamp_us: u64,
}

/// Column family `devices`, key user_id | device_id: a device of the user, i.e. a session
/// token issued by Login (its `device_id` comes from the token's hash).
#[derive(Clone, PartialEq, prost::Message)]
pub struct DeviceRecord {
    #[prost(uint64, tag = "1")]
    pub user_id: u64,
    #[prost(uint64, tag = "2")]
    pub device_id: u64,
    #[prost(string, tag = "3")]
    pub name: String,
    /// SHA-256 of the device's session token (the key of its `tokens` record).
    #[prost(bytes = "vec", tag = "4")]
    pub token_hash: Vec<u8>,
    #[prost(uint64, tag = "5")]
    pub created_us: u64,
    /// The latest Login/Resume, or close of the device's last connection.
    #[prost(uint64, tag = "6")]
    pub last_active_us: u64,
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

/// Column family `uploads`, key owner | upload_id: an upload in progress. Its bytes so far
/// are in `content` under the upload id.
#[derive(Clone, PartialEq, prost::Message)]
pub struct UploadRecord {
    #[prost(bytes = "vec", tag = "1")]
    pub upload_id: Vec<u8>,
    #[prost(uint64, tag = "2")]
    pub owner: u64,
    /// What UploadStart declared (size, mime type, sha256, kind, duration, dimensions,
    /// file name); no asset id yet.
    #[prost(message, optional, tag = "3")]
    pub media: Option<chat_protocol::pb::Media>,
    /// Bytes stored so far.
    #[prost(uint64, tag = "4")]
    pub received: u64,
    #[prost(uint64, tag = "5")]
    pub created_us: u64,
}

/// Column family `assets`, key asset_id: a finished upload.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AssetRecord {
    #[prost(uint64, tag = "1")]
    pub owner: u64,
    /// The media as messages carry it (without a thumbnail).
    #[prost(message, optional, tag = "2")]
    pub media: Option<chat_protocol::pb::Media>,
    /// Where the bytes are in `content`: the id of the first upload of these bytes.
    #[prost(bytes = "vec", tag = "3")]
    pub content_id: Vec<u8>,
    #[prost(uint64, tag = "4")]
    pub created_us: u64,
}

/// Column family `push_tokens`, key user_id: the user's devices for push notifications,
/// oldest first.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PushTokens {
    #[prost(message, repeated, tag = "1")]
    pub devices: Vec<PushDevice>,
}

/// One device's push token.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PushDevice {
    /// `pb::PushPlatform`.
    #[prost(int32, tag = "1")]
    pub platform: i32,
    #[prost(string, tag = "2")]
    pub token: String,
    #[prost(uint64, tag = "3")]
    pub created_us: u64,
}

/// Column family `push_outbox`, key job id: a message stored for a user with no online
/// session, to announce to the push gateway.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PushJob {
    /// The recipient.
    #[prost(uint64, tag = "1")]
    pub user: u64,
    #[prost(uint64, tag = "2")]
    pub sender: u64,
    /// The sender (1:1) or the group.
    #[prost(uint64, tag = "3")]
    pub conversation: u64,
    #[prost(bool, tag = "4")]
    pub group: bool,
    /// 1:1: the seq in the recipient's inbox; group: the group seq (what MarkRead takes).
    #[prost(uint64, tag = "5")]
    pub seq: u64,
    #[prost(uint64, tag = "6")]
    pub timestamp_us: u64,
    /// The start of the text; `None` when the recipient turned previews off, so the text
    /// is never stored here.
    #[prost(string, optional, tag = "7")]
    pub preview: Option<String>,
    /// `pb::MediaKind` of a media message, 0 for text.
    #[prost(int32, tag = "8")]
    pub media_kind: i32,
}
