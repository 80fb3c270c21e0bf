//! Requests as validated domain values: the only place that looks inside prost's `Body`.
//!
//! Everything past this module can rely on the invariants checked here (names normalized,
//! text non-empty and within limits, ids nonzero).

use chat_protocol::pb::{self, envelope::Body};
use chat_protocol::ErrorCode;

use crate::auth;

#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Register {
        username: String,
        password: Secret<String>,
    },
    Login {
        username: String,
        password: Secret<String>,
        device_name: String,
    },
    Resume {
        token: Secret<Vec<u8>>,
    },
    GetUser {
        user_id: u64,
    },
    Lookup {
        username: String,
    },
    Send(Send),
    Sync {
        after_seq: Option<u64>,
    },
    Ack {
        up_to_seq: u64,
    },
    History {
        with: Conversation,
        before_us: u64,
        limit: usize,
    },
    Ping {
        nonce: u64,
    },
    CreateGroup {
        name: String,
        members: Vec<u64>,
    },
    AddMembers {
        group_id: u64,
        user_ids: Vec<u64>,
    },
    RemoveMember {
        group_id: u64,
        user_id: u64,
    },
    LeaveGroup {
        group_id: u64,
    },
    RenameGroup {
        group_id: u64,
        name: String,
    },
    GetGroup {
        group_id: u64,
    },
    SendGroup(SendGroup),
    MarkRead {
        with: Conversation,
        up_to_seq: u64,
    },
    GetReceipts {
        group_id: u64,
        seq: u64,
    },
    SetSettings {
        read_receipts: Option<bool>,
        presence_visibility: Option<pb::PresenceVisibility>,
        push_previews: Option<bool>,
    },
    SubscribePresence {
        user_ids: Vec<u64>,
    },
    GetPresence {
        user_ids: Vec<u64>,
    },
    Typing {
        with: Conversation,
        typing: bool,
    },
    UploadStart(UploadSpec),
    UploadChunk {
        upload_id: [u8; ID_BYTES],
        offset: u64,
        data: bytes::Bytes,
    },
    UploadFinish {
        upload_id: [u8; ID_BYTES],
    },
    FetchAsset(Fetch),
    RegisterPushToken {
        platform: pb::PushPlatform,
        token: String,
    },
    UnregisterPushToken {
        token: String,
    },
    /// Revoke this connection's session token and close the connection.
    Logout,
    /// Revoke every session token of the caller.
    LogoutAll,
    ListDevices,
    RevokeDevice {
        device_id: u64,
    },
    /// Block a user. `checked`: the user's shard has confirmed they exist.
    Block {
        user_id: u64,
        checked: bool,
    },
    Unblock {
        user_id: u64,
    },
    ListBlocked,
    /// Add a contact. `checked`: the user's shard has confirmed they exist.
    AddContact {
        user_id: u64,
        checked: bool,
    },
    RemoveContact {
        user_id: u64,
    },
    ListContacts,
    /// Delete a message, for everyone (its sender) or for the caller only.
    DeleteMessage {
        target: MessageTarget,
        for_everyone: bool,
    },
    /// Replace a message's text (its sender).
    EditMessage {
        target: MessageTarget,
        text: String,
    },
    /// Set (or, with an empty emoji, remove) the caller's reaction to a message.
    React {
        target: MessageTarget,
        emoji: String,
    },
}

/// A message named by its conversation (as the caller sees it) and its id, the timestamp
/// the server gave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageTarget {
    pub with: Conversation,
    pub timestamp_us: u64,
}

/// A credential (password, session token) as a request carried it. Its `Debug` shows
/// `"***"`, so no log line, error message or panic that formats a request can reveal it;
/// the value is reached only through [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn expose(&self) -> &T {
        &self.0
    }

    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> std::fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"***\"")
    }
}

/// Length of upload and asset ids.
pub const ID_BYTES: usize = 16;
/// Largest thumbnail a media message may carry.
pub const MAX_THUMBNAIL_BYTES: usize = 16 * 1024;
/// Longest file name of an upload, in bytes.
pub const MAX_FILE_NAME_BYTES: usize = 255;
/// Longest push token, in bytes.
pub const MAX_PUSH_TOKEN_BYTES: usize = 4096;
/// Longest reaction (React.emoji), in bytes.
pub const MAX_EMOJI_BYTES: usize = 32;
/// Longest device name (Login.device_name), in bytes after trimming.
pub const MAX_DEVICE_NAME_BYTES: usize = 64;

/// What UploadStart declares about the file.
#[derive(Debug, Clone, PartialEq)]
pub struct UploadSpec {
    pub size: u64,
    pub mime_type: String,
    pub sha256: [u8; 32],
    pub kind: pb::MediaKind,
    pub duration_ms: u32,
    pub width: u32,
    pub height: u32,
    pub file_name: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Fetch {
    pub asset_id: [u8; ID_BYTES],
    pub offset: u64,
    /// 0 = as much as one response carries.
    pub length: u32,
    /// The group the asset was seen in.
    pub group: Option<u64>,
    /// The group's shard has confirmed the caller is a member of `group`.
    pub member_checked: bool,
}

/// Media attached to a send: the asset and the sender's thumbnail. Everything else about
/// the media comes from the asset's shard, which checks that the sender may share the
/// asset and fills in `media` before the send goes on to be stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Attachment {
    pub asset_id: [u8; ID_BYTES],
    pub thumbnail: bytes::Bytes,
    pub media: Option<pb::Media>,
}

/// The other side of a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Conversation {
    User(u64),
    Group(u64),
}

#[derive(Debug, Clone, PartialEq)]
pub struct SendGroup {
    pub group_id: u64,
    pub client_msg_id: u64,
    pub text: String,
    pub media: Option<Attachment>,
    /// The id (timestamp) of the message of the group this one replies to.
    pub reply_to_us: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Send {
    pub to_user_id: u64,
    pub client_msg_id: u64,
    pub text: String,
    pub media: Option<Attachment>,
    /// The id (timestamp) of the message of the conversation this one replies to.
    pub reply_to_us: Option<u64>,
}

/// A request that failed validation: the code and message the client gets.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected(pub ErrorCode, pub String);

pub const DEFAULT_HISTORY_LIMIT: usize = 50;
/// Longest group name, in bytes.
pub const MAX_GROUP_NAME_BYTES: usize = 128;
pub const MAX_HISTORY_LIMIT: usize = 200;

impl Request {
    /// Validates a client envelope body. `max_text_bytes` is the configured text limit.
    pub fn parse(body: Body, max_text_bytes: usize) -> Result<Self, Rejected> {
        Ok(match body {
            Body::Register(r) => Request::Register {
                username: username(&r.username)?,
                password: password(r.password)?,
            },
            // A malformed name cannot exist; report it as bad credentials, not as a hint.
            Body::Login(r) => Request::Login {
                username: auth::normalize_username(&r.username).unwrap_or_default(),
                password: Secret(r.password),
                device_name: device_name(&r.device_name)?,
            },
            Body::Resume(r) => Request::Resume {
                token: Secret(r.token.to_vec()),
            },
            Body::LookupUser(r) => Request::Lookup {
                username: auth::normalize_username(&r.username).unwrap_or_default(),
            },
            Body::GetUser(g) => Request::GetUser { user_id: g.user_id },
            Body::SendMessage(m) => Request::Send(send(m, max_text_bytes)?),
            Body::Sync(s) => Request::Sync {
                after_seq: s.after_seq,
            },
            Body::Ack(a) => Request::Ack {
                up_to_seq: a.up_to_seq,
            },
            Body::GetMessages(g) => Request::History {
                with: conversation(g.with_user_id, g.group_id)?,
                before_us: g.before_timestamp_us,
                limit: match g.limit as usize {
                    0 => DEFAULT_HISTORY_LIMIT,
                    n => n.min(MAX_HISTORY_LIMIT),
                },
            },
            Body::Ping(p) => Request::Ping { nonce: p.nonce },
            Body::CreateGroup(c) => Request::CreateGroup {
                name: group_name(c.name)?,
                members: user_ids(c.member_ids)?,
            },
            Body::AddMembers(a) => Request::AddMembers {
                group_id: group_id(a.group_id)?,
                user_ids: user_ids(a.user_ids)?,
            },
            Body::RemoveMember(r) => Request::RemoveMember {
                group_id: group_id(r.group_id)?,
                user_id: r.user_id,
            },
            Body::LeaveGroup(l) => Request::LeaveGroup {
                group_id: group_id(l.group_id)?,
            },
            Body::RenameGroup(r) => Request::RenameGroup {
                group_id: group_id(r.group_id)?,
                name: group_name(r.name)?,
            },
            Body::GetGroup(g) => Request::GetGroup {
                group_id: group_id(g.group_id)?,
            },
            Body::MarkRead(m) => Request::MarkRead {
                with: conversation(m.with_user_id, m.group_id)?,
                up_to_seq: m.up_to_seq,
            },
            Body::GetReceipts(g) => Request::GetReceipts {
                group_id: group_id(g.group_id)?,
                seq: g.seq,
            },
            Body::SetSettings(s) => Request::SetSettings {
                read_receipts: s.read_receipts,
                presence_visibility: match s.presence_visibility {
                    None => None,
                    Some(v) => Some(
                        pb::PresenceVisibility::try_from(v)
                            .map_err(|_| invalid("unknown presence_visibility"))?,
                    ),
                },
                push_previews: s.push_previews,
            },
            Body::SubscribePresence(s) => Request::SubscribePresence {
                user_ids: presence_users(s.user_ids)?,
            },
            Body::GetPresence(g) => Request::GetPresence {
                user_ids: presence_users(g.user_ids)?,
            },
            Body::Typing(t) => Request::Typing {
                with: conversation(t.to_user_id, t.group_id)?,
                typing: t.typing,
            },
            Body::SendGroupMessage(m) => {
                let media = attachment(m.media)?;
                Request::SendGroup(SendGroup {
                    group_id: group_id(m.group_id)?,
                    client_msg_id: m.client_msg_id,
                    text: text(m.text, m.client_msg_id, max_text_bytes, media.is_some())?,
                    media,
                    reply_to_us: (m.reply_to_us != 0).then_some(m.reply_to_us),
                })
            }
            Body::UploadStart(u) => Request::UploadStart(upload_spec(u)?),
            Body::UploadChunk(c) => {
                if c.data.is_empty() {
                    return Err(invalid("chunk data is empty"));
                }
                Request::UploadChunk {
                    upload_id: id_bytes(&c.upload_id, "upload_id")?,
                    offset: c.offset,
                    data: c.data,
                }
            }
            Body::UploadFinish(f) => Request::UploadFinish {
                upload_id: id_bytes(&f.upload_id, "upload_id")?,
            },
            Body::FetchAsset(f) => Request::FetchAsset(Fetch {
                asset_id: id_bytes(&f.asset_id, "asset_id")?,
                offset: f.offset,
                length: f.length,
                group: (f.group_id != 0).then_some(f.group_id),
                member_checked: false,
            }),
            Body::RegisterPushToken(r) => Request::RegisterPushToken {
                platform: match pb::PushPlatform::try_from(r.platform) {
                    Ok(pb::PushPlatform::Unspecified) | Err(_) => {
                        return Err(invalid("platform must be APNS, FCM or WEB"))
                    }
                    Ok(p) => p,
                },
                token: push_token(r.token)?,
            },
            Body::UnregisterPushToken(u) => Request::UnregisterPushToken {
                token: push_token(u.token)?,
            },
            Body::Logout(pb::Logout {}) => Request::Logout,
            Body::LogoutAll(pb::LogoutAll {}) => Request::LogoutAll,
            Body::ListDevices(pb::ListDevices {}) => Request::ListDevices,
            Body::RevokeDevice(r) => Request::RevokeDevice {
                device_id: nonzero(r.device_id, "device_id")?,
            },
            Body::Block(b) => Request::Block {
                user_id: nonzero(b.user_id, "user_id")?,
                checked: false,
            },
            Body::Unblock(u) => Request::Unblock {
                user_id: nonzero(u.user_id, "user_id")?,
            },
            Body::ListBlocked(pb::ListBlocked {}) => Request::ListBlocked,
            Body::AddContact(a) => Request::AddContact {
                user_id: nonzero(a.user_id, "user_id")?,
                checked: false,
            },
            Body::RemoveContact(r) => Request::RemoveContact {
                user_id: nonzero(r.user_id, "user_id")?,
            },
            Body::ListContacts(pb::ListContacts {}) => Request::ListContacts,
            Body::DeleteMessage(d) => Request::DeleteMessage {
                target: message_target(d.message)?,
                for_everyone: d.for_everyone,
            },
            Body::EditMessage(e) => {
                if e.text.len() > max_text_bytes {
                    return Err(Rejected(
                        ErrorCode::TextTooLong,
                        format!(
                            "text is {} bytes; the limit is {max_text_bytes}",
                            e.text.len()
                        ),
                    ));
                }
                Request::EditMessage {
                    target: message_target(e.message)?,
                    text: e.text,
                }
            }
            Body::React(r) => Request::React {
                target: message_target(r.message)?,
                emoji: emoji(r.emoji)?,
            },
            other => {
                return Err(Rejected(
                    ErrorCode::UnexpectedMessage,
                    format!("{} is a server-to-client message", body_name(&other)),
                ))
            }
        })
    }

    /// Requests allowed before the connection is authenticated.
    pub fn allowed_unauthenticated(&self) -> bool {
        matches!(
            self,
            Request::Register { .. }
                | Request::Login { .. }
                | Request::Resume { .. }
                | Request::Ping { .. }
        )
    }

    /// A send whose media the asset's shard has not checked yet.
    pub fn has_unchecked_media(&self) -> bool {
        let media = match self {
            Request::Send(s) => &s.media,
            Request::SendGroup(s) => &s.media,
            _ => return false,
        };
        media.as_ref().is_some_and(|a| a.media.is_none())
    }

    /// Requests that authenticate (or create an account) and so make no sense once logged in.
    pub fn is_login(&self) -> bool {
        matches!(
            self,
            Request::Register { .. } | Request::Login { .. } | Request::Resume { .. }
        )
    }
}

fn username(name: &str) -> Result<String, Rejected> {
    auth::normalize_username(name).ok_or_else(|| {
        Rejected(
            ErrorCode::InvalidArgument,
            "username must be 3-32 characters of a-z 0-9 _ . - starting with a letter or digit"
                .into(),
        )
    })
}

fn password(pw: String) -> Result<Secret<String>, Rejected> {
    if auth::PASSWORD_BYTES.contains(&pw.len()) {
        Ok(Secret(pw))
    } else {
        Err(Rejected(
            ErrorCode::InvalidArgument,
            "password must be 8-256 bytes".into(),
        ))
    }
}

fn send(m: pb::SendMessage, max_text_bytes: usize) -> Result<Send, Rejected> {
    let media = attachment(m.media)?;
    let text = text(m.text, m.client_msg_id, max_text_bytes, media.is_some())?;
    if m.to_user_id == 0 {
        return Err(invalid("to_user_id must be nonzero"));
    }
    Ok(Send {
        to_user_id: m.to_user_id,
        client_msg_id: m.client_msg_id,
        text,
        media,
        reply_to_us: (m.reply_to_us != 0).then_some(m.reply_to_us),
    })
}

/// A message's text and client_msg_id, as every send checks them. With media the text is
/// a caption and may be empty.
fn text(
    text: String,
    client_msg_id: u64,
    max_text_bytes: usize,
    has_media: bool,
) -> Result<String, Rejected> {
    if text.is_empty() && !has_media {
        return Err(invalid("text is empty"));
    }
    if text.len() > max_text_bytes {
        return Err(Rejected(
            ErrorCode::TextTooLong,
            format!(
                "text is {} bytes; the limit is {max_text_bytes}",
                text.len()
            ),
        ));
    }
    if client_msg_id == 0 {
        return Err(invalid("client_msg_id must be nonzero"));
    }
    Ok(text)
}

/// The media of a send: only the asset id and the thumbnail are the sender's to choose.
fn attachment(media: Option<Box<pb::Media>>) -> Result<Option<Attachment>, Rejected> {
    let Some(media) = media else {
        return Ok(None);
    };
    let asset_id = id_bytes(&media.asset_id, "media.asset_id")?;
    if media.thumbnail.len() > MAX_THUMBNAIL_BYTES {
        return Err(invalid(&format!(
            "thumbnail is {} bytes; the limit is {MAX_THUMBNAIL_BYTES}",
            media.thumbnail.len()
        )));
    }
    Ok(Some(Attachment {
        asset_id,
        thumbnail: media.thumbnail,
        media: None,
    }))
}

fn upload_spec(u: pb::UploadStart) -> Result<UploadSpec, Rejected> {
    if u.size == 0 {
        return Err(invalid("size must be nonzero"));
    }
    let sha256: [u8; 32] = u.sha256[..]
        .try_into()
        .map_err(|_| invalid("sha256 must be 32 bytes"))?;
    let kind = match pb::MediaKind::try_from(u.kind) {
        Ok(pb::MediaKind::Unspecified) | Err(_) => {
            return Err(invalid("kind must be IMAGE, VOICE or FILE"))
        }
        Ok(k) => k,
    };
    if u.file_name.len() > MAX_FILE_NAME_BYTES || u.file_name.contains(['/', '\\', '\0']) {
        return Err(invalid(&format!(
            "file_name must be at most {MAX_FILE_NAME_BYTES} bytes without '/', '\\' or NUL"
        )));
    }
    Ok(UploadSpec {
        size: u.size,
        mime_type: u.mime_type.trim().to_ascii_lowercase(),
        sha256,
        kind,
        duration_ms: u.duration_ms,
        width: u.width,
        height: u.height,
        file_name: u.file_name,
    })
}

fn id_bytes(bytes: &[u8], what: &str) -> Result<[u8; ID_BYTES], Rejected> {
    bytes
        .try_into()
        .map_err(|_| invalid(&format!("{what} must be {ID_BYTES} bytes")))
}

fn push_token(token: String) -> Result<String, Rejected> {
    if token.is_empty() || token.len() > MAX_PUSH_TOKEN_BYTES {
        return Err(invalid(&format!(
            "token must be 1-{MAX_PUSH_TOKEN_BYTES} bytes"
        )));
    }
    Ok(token)
}

fn presence_users(ids: Vec<u64>) -> Result<Vec<u64>, Rejected> {
    let max = crate::presence::MAX_PRESENCE_USERS;
    if ids.len() > max {
        return Err(invalid(&format!("at most {max} user ids per request")));
    }
    user_ids(ids)
}

/// A conversation named by exactly one of a user id and a group id.
fn conversation(user_id: u64, group_id: u64) -> Result<Conversation, Rejected> {
    match (user_id, group_id) {
        (user, 0) if user != 0 => Ok(Conversation::User(user)),
        (0, group) if group != 0 => Ok(Conversation::Group(group)),
        _ => Err(invalid("set exactly one of with_user_id and group_id")),
    }
}

/// Login.device_name: trimmed, at most [`MAX_DEVICE_NAME_BYTES`], no control characters.
fn device_name(name: &str) -> Result<String, Rejected> {
    let name = name.trim();
    if name.len() > MAX_DEVICE_NAME_BYTES || name.chars().any(char::is_control) {
        return Err(invalid(&format!(
            "device_name must be at most {MAX_DEVICE_NAME_BYTES} bytes without control characters"
        )));
    }
    Ok(name.to_string())
}

fn message_target(m: Option<pb::MessageRef>) -> Result<MessageTarget, Rejected> {
    let m = m.ok_or_else(|| invalid("message is required"))?;
    Ok(MessageTarget {
        with: conversation(m.with_user_id, m.group_id)?,
        timestamp_us: nonzero(m.timestamp_us, "message.timestamp_us")?,
    })
}

/// A reaction: empty (remove it) or 1-32 bytes without whitespace or control characters.
fn emoji(emoji: String) -> Result<String, Rejected> {
    if emoji.len() > MAX_EMOJI_BYTES || emoji.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(&format!(
            "emoji must be at most {MAX_EMOJI_BYTES} bytes without whitespace"
        )));
    }
    Ok(emoji)
}

fn nonzero(id: u64, what: &str) -> Result<u64, Rejected> {
    if id == 0 {
        return Err(invalid(&format!("{what} must be nonzero")));
    }
    Ok(id)
}

fn group_id(id: u64) -> Result<u64, Rejected> {
    if id == 0 {
        return Err(invalid("group_id must be nonzero"));
    }
    Ok(id)
}

fn group_name(name: String) -> Result<String, Rejected> {
    let name = name.trim().to_string();
    if name.is_empty() || name.len() > MAX_GROUP_NAME_BYTES {
        return Err(invalid(&format!(
            "group name must be 1-{MAX_GROUP_NAME_BYTES} bytes (not counting surrounding spaces)"
        )));
    }
    Ok(name)
}

/// User ids of a group operation: nonzero, duplicates dropped, order kept.
fn user_ids(ids: Vec<u64>) -> Result<Vec<u64>, Rejected> {
    if ids.contains(&0) {
        return Err(invalid("user ids must be nonzero"));
    }
    let mut seen = std::collections::HashSet::with_capacity(ids.len());
    Ok(ids.into_iter().filter(|id| seen.insert(*id)).collect())
}

fn invalid(msg: &str) -> Rejected {
    Rejected(ErrorCode::InvalidArgument, msg.into())
}

fn body_name(body: &Body) -> &'static str {
    match body {
        Body::Error(_) => "Error",
        Body::Registered(_) => "Registered",
        Body::LoggedIn(_) => "LoggedIn",
        Body::UserFound(_) => "UserFound",
        Body::SendAck(_) => "SendAck",
        Body::SyncDone(_) => "SyncDone",
        Body::Acked(_) => "Acked",
        Body::Messages(_) => "Messages",
        Body::Pong(_) => "Pong",
        Body::Event(_) => "Event",
        Body::GroupInfo(_) => "GroupInfo",
        Body::Done(_) => "Done",
        Body::Receipts(_) => "Receipts",
        Body::Settings(_) => "Settings",
        Body::PresenceSnapshot(_) => "PresenceSnapshot",
        Body::PresenceUpdate(_) => "PresenceUpdate",
        Body::TypingUpdate(_) => "TypingUpdate",
        Body::UploadStatus(_) => "UploadStatus",
        Body::AssetReady(_) => "AssetReady",
        Body::AssetData(_) => "AssetData",
        Body::Devices(_) => "Devices",
        Body::UserList(_) => "UserList",
        _ => "request",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // reason: test code
    use super::*;

    fn send_body(text: &str, id: u64) -> Body {
        Body::SendMessage(pb::SendMessage {
            to_user_id: 2,
            client_msg_id: id,
            text: text.into(),
            media: None,
            ..Default::default()
        })
    }

    #[test]
    fn send_limits_map_to_codes() {
        assert!(Request::parse(send_body("hi", 1), 4).is_ok());
        let code = |r: Result<Request, Rejected>| r.err().map(|e| e.0);
        assert_eq!(
            code(Request::parse(send_body("hello", 1), 4)),
            Some(ErrorCode::TextTooLong)
        );
        assert_eq!(
            code(Request::parse(send_body("", 1), 4)),
            Some(ErrorCode::InvalidArgument)
        );
        assert_eq!(
            code(Request::parse(send_body("hi", 0), 4)),
            Some(ErrorCode::InvalidArgument)
        );
        let pong = Body::Pong(pb::Pong { nonce: 1 });
        assert_eq!(
            code(Request::parse(pong, 4)),
            Some(ErrorCode::UnexpectedMessage)
        );
    }

    #[test]
    fn credentials_never_show_in_debug_output() {
        let password = "correct horse battery staple";
        let register = Body::Register(pb::Register {
            username: "alice".into(),
            password: password.into(),
        });
        let login = Body::Login(pb::Login {
            username: "alice".into(),
            password: password.into(),
            device_name: String::new(),
        });
        let token = crate::auth::new_token(7);
        let resume = Body::Resume(pb::Resume {
            token: token.clone().into(),
        });
        for body in [register, login, resume] {
            let req = Request::parse(body, 16).unwrap();
            for shown in [format!("{req:?}"), format!("{req:#?}")] {
                assert!(!shown.contains(password), "{shown}");
                let secret_bytes = format!("{}, {}, {}", token[8], token[9], token[10]);
                assert!(!shown.contains(&secret_bytes), "{shown}");
                assert!(shown.contains("***"), "{shown}");
            }
        }
        // The value is still there for the handlers.
        let req = Request::parse(
            Body::Login(pb::Login {
                username: "alice".into(),
                password: password.into(),
                device_name: String::new(),
            }),
            16,
        );
        assert!(matches!(req, Ok(Request::Login { password: p, .. }) if p.expose() == password));
    }

    #[test]
    fn history_limit_defaults_and_clamps() {
        let get = |limit| {
            Request::parse(
                Body::GetMessages(pb::GetMessages {
                    with_user_id: 1,
                    before_timestamp_us: 0,
                    limit,
                    group_id: 0,
                }),
                10,
            )
        };
        assert!(matches!(get(0), Ok(Request::History { limit: 50, .. })));
        assert!(matches!(get(5000), Ok(Request::History { limit: 200, .. })));
    }
}
