//! A [`Request`] on the wire between nodes: its client form (the body a client would send
//! for it) plus what shards learned about it on the way. The receiving shard validates the
//! body again with [`Request::parse`], so a request from another node meets the same checks
//! as one from a client, and the two forms cannot drift apart.

use chat_protocol::mesh::InternalRequest;
use chat_protocol::pb::{self, envelope::Body};
use chat_protocol::Envelope;

use super::wire::WireError;
use crate::request::{Attachment, Conversation, MessageTarget, Request};

/// The wire form of `req`.
pub fn to_wire(req: Request) -> InternalRequest {
    let mut wire = InternalRequest::default();
    let body = match req {
        Request::Register { username, password } => Body::Register(pb::Register {
            username,
            password: password.into_inner(),
        }),
        Request::Login {
            username,
            password,
            device_name,
        } => Body::Login(pb::Login {
            username,
            password: password.into_inner(),
            device_name,
        }),
        Request::Resume { token } => Body::Resume(pb::Resume {
            token: token.into_inner().into(),
        }),
        Request::GetUser { user_id } => Body::GetUser(pb::GetUser { user_id }),
        Request::Lookup { username } => Body::LookupUser(pb::LookupUser { username }),
        Request::Send(s) => Body::SendMessage(pb::SendMessage {
            to_user_id: s.to_user_id,
            client_msg_id: s.client_msg_id,
            text: s.text,
            media: attachment(s.media, &mut wire),
            reply_to_us: s.reply_to_us.unwrap_or(0),
        }),
        Request::Sync { after_seq } => Body::Sync(pb::Sync { after_seq }),
        Request::Ack { up_to_seq } => Body::Ack(pb::Ack { up_to_seq }),
        Request::History {
            with,
            before_us,
            limit,
        } => {
            let (with_user_id, group_id) = ids(with);
            Body::GetMessages(pb::GetMessages {
                with_user_id,
                before_timestamp_us: before_us,
                limit: limit as u32,
                group_id,
            })
        }
        Request::Ping { nonce } => Body::Ping(pb::Ping { nonce }),
        Request::CreateGroup { name, members } => Body::CreateGroup(pb::CreateGroup {
            name,
            member_ids: members,
        }),
        Request::AddMembers { group_id, user_ids } => {
            Body::AddMembers(pb::AddMembers { group_id, user_ids })
        }
        Request::RemoveMember { group_id, user_id } => {
            Body::RemoveMember(pb::RemoveMember { group_id, user_id })
        }
        Request::LeaveGroup { group_id } => Body::LeaveGroup(pb::LeaveGroup { group_id }),
        Request::RenameGroup { group_id, name } => {
            Body::RenameGroup(pb::RenameGroup { group_id, name })
        }
        Request::GetGroup { group_id } => Body::GetGroup(pb::GetGroup { group_id }),
        Request::SendGroup(s) => Body::SendGroupMessage(pb::SendGroupMessage {
            group_id: s.group_id,
            client_msg_id: s.client_msg_id,
            text: s.text,
            media: attachment(s.media, &mut wire),
            reply_to_us: s.reply_to_us.unwrap_or(0),
        }),
        Request::MarkRead { with, up_to_seq } => {
            let (with_user_id, group_id) = ids(with);
            Body::MarkRead(pb::MarkRead {
                with_user_id,
                group_id,
                up_to_seq,
            })
        }
        Request::GetReceipts { group_id, seq } => {
            Body::GetReceipts(pb::GetReceipts { group_id, seq })
        }
        Request::SetSettings {
            read_receipts,
            presence_visibility,
            push_previews,
        } => Body::SetSettings(pb::SetSettings {
            read_receipts,
            presence_visibility: presence_visibility.map(|v| v as i32),
            push_previews,
        }),
        Request::SubscribePresence { user_ids } => {
            Body::SubscribePresence(pb::SubscribePresence { user_ids })
        }
        Request::GetPresence { user_ids } => Body::GetPresence(pb::GetPresence { user_ids }),
        Request::Typing { with, typing } => {
            let (to_user_id, group_id) = ids(with);
            Body::Typing(pb::Typing {
                to_user_id,
                group_id,
                typing,
            })
        }
        Request::UploadStart(u) => Body::UploadStart(pb::UploadStart {
            size: u.size,
            mime_type: u.mime_type,
            sha256: u.sha256.to_vec().into(),
            kind: u.kind as i32,
            duration_ms: u.duration_ms,
            width: u.width,
            height: u.height,
            file_name: u.file_name,
        }),
        Request::UploadChunk {
            upload_id,
            offset,
            data,
        } => Body::UploadChunk(pb::UploadChunk {
            upload_id: upload_id.to_vec().into(),
            offset,
            data,
        }),
        Request::UploadFinish { upload_id } => Body::UploadFinish(pb::UploadFinish {
            upload_id: upload_id.to_vec().into(),
        }),
        Request::FetchAsset(f) => {
            wire.member_checked = f.member_checked;
            Body::FetchAsset(pb::FetchAsset {
                asset_id: f.asset_id.to_vec().into(),
                offset: f.offset,
                length: f.length,
                group_id: f.group.unwrap_or(0),
            })
        }
        Request::RegisterPushToken { platform, token } => {
            Body::RegisterPushToken(pb::RegisterPushToken {
                platform: platform as i32,
                token,
            })
        }
        Request::UnregisterPushToken { token } => {
            Body::UnregisterPushToken(pb::UnregisterPushToken { token })
        }
        Request::Logout => Body::Logout(pb::Logout {}),
        Request::LogoutAll => Body::LogoutAll(pb::LogoutAll {}),
        Request::ListDevices => Body::ListDevices(pb::ListDevices {}),
        Request::RevokeDevice { device_id } => Body::RevokeDevice(pb::RevokeDevice { device_id }),
        Request::Block { user_id, checked } => {
            wire.checked = checked;
            Body::Block(pb::Block { user_id })
        }
        Request::Unblock { user_id } => Body::Unblock(pb::Unblock { user_id }),
        Request::ListBlocked => Body::ListBlocked(pb::ListBlocked {}),
        Request::AddContact { user_id, checked } => {
            wire.checked = checked;
            Body::AddContact(pb::AddContact { user_id })
        }
        Request::RemoveContact { user_id } => Body::RemoveContact(pb::RemoveContact { user_id }),
        Request::ListContacts => Body::ListContacts(pb::ListContacts {}),
        Request::DeleteMessage {
            target,
            for_everyone,
        } => Body::DeleteMessage(pb::DeleteMessage {
            message: Some(message_ref(target)),
            for_everyone,
        }),
        Request::EditMessage { target, text } => Body::EditMessage(pb::EditMessage {
            message: Some(message_ref(target)),
            text,
        }),
        Request::React { target, emoji } => Body::React(pb::React {
            message: Some(message_ref(target)),
            emoji,
        }),
    };
    wire.request = Some(chat_protocol::envelope(0, body));
    wire
}

/// The request a wire form carries, validated as a client's would be (without the text
/// limit, which the sending node applied with its own configuration).
pub fn from_wire(wire: InternalRequest) -> Result<Request, WireError> {
    let Some(Envelope {
        body: Some(body), ..
    }) = wire.request
    else {
        return Err(WireError::Missing("InternalRequest.request"));
    };
    let mut req = Request::parse(body, usize::MAX).map_err(|e| WireError::Invalid(e.1))?;
    match &mut req {
        Request::Block { checked, .. } | Request::AddContact { checked, .. } => {
            *checked = wire.checked
        }
        Request::FetchAsset(f) => f.member_checked = wire.member_checked,
        _ => {}
    }
    if let Some(media) = wire.media {
        let attachment = match &mut req {
            Request::Send(s) => s.media.as_mut(),
            Request::SendGroup(s) => s.media.as_mut(),
            _ => None,
        };
        attachment
            .ok_or(WireError::Invalid(
                "checked media on a request without media".into(),
            ))?
            .media = Some(media);
    }
    Ok(req)
}

/// The client's part of an attachment; the checked media travels beside the body.
fn attachment(media: Option<Attachment>, wire: &mut InternalRequest) -> Option<Box<pb::Media>> {
    let a = media?;
    wire.media = a.media;
    Some(Box::new(pb::Media {
        asset_id: a.asset_id.to_vec().into(),
        thumbnail: a.thumbnail,
        ..Default::default()
    }))
}

fn ids(with: Conversation) -> (u64, u64) {
    match with {
        Conversation::User(user) => (user, 0),
        Conversation::Group(group) => (0, group),
    }
}

fn message_ref(target: MessageTarget) -> pb::MessageRef {
    let (with_user_id, group_id) = ids(target.with);
    pb::MessageRef {
        with_user_id,
        group_id,
        timestamp_us: target.timestamp_us,
    }
}
