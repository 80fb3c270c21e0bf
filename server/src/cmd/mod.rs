//! Request handlers, one file per command. Each runs on the shard that owns the data the
//! request touches (see `Shard::submit` for the routing) and answers through the shard.

use std::rc::Rc;

use crate::request::Request;
use crate::shard::{Reply, Shard};

pub mod ack;
pub mod add_contact;
pub mod add_members;
pub mod block;
pub mod create_group;
pub mod delete_message;
pub mod edit_message;
pub mod fetch_asset;
pub mod get_group;
pub mod get_presence;
pub mod get_receipts;
pub mod get_user;
pub mod history;
pub mod leave_group;
pub mod list_blocked;
pub mod list_contacts;
pub mod list_devices;
pub mod login;
pub mod logout;
pub mod logout_all;
pub mod lookup;
pub mod mark_read;
pub mod react;
pub mod register;
pub mod register_push_token;
pub mod remove_contact;
pub mod remove_member;
pub mod rename_group;
pub mod resume;
pub mod revoke_device;
pub mod send;
pub mod send_group;
pub mod set_settings;
pub mod share_media;
pub mod subscribe_presence;
pub mod sync;
pub mod typing;
pub mod unblock;
pub mod unregister_push_token;
pub mod upload_chunk;
pub mod upload_finish;
pub mod upload_start;

pub fn execute(shard: &Rc<Shard>, reply: Reply, user: Option<u64>, req: Request) {
    match (req, user) {
        (Request::Register { username, password }, _) => {
            register::run(shard, reply, username, password)
        }
        (
            Request::Login {
                username,
                password,
                device_name,
            },
            _,
        ) => login::run(shard, reply, username, password, device_name),
        (Request::Resume { token }, _) => resume::run(shard, reply, token.expose()),
        (Request::Logout, Some(me)) => logout::run(shard, reply, me),
        (Request::LogoutAll, Some(me)) => logout_all::run(shard, reply, me),
        (Request::Lookup { username }, Some(_)) => lookup::run(shard, reply, &username),
        (Request::GetUser { user_id }, Some(_)) => get_user::run(shard, reply, user_id),
        // Media is checked and shared on the asset's shard before the send is stored.
        (Request::Send(send), Some(me))
            if send.media.as_ref().is_some_and(|a| a.media.is_none()) =>
        {
            share_media::run(shard, reply, me, Request::Send(send))
        }
        (Request::SendGroup(send), Some(me))
            if send.media.as_ref().is_some_and(|a| a.media.is_none()) =>
        {
            share_media::run(shard, reply, me, Request::SendGroup(send))
        }
        (Request::Send(send), Some(me)) => send::run(shard, reply, me, send),
        (Request::Sync { after_seq }, Some(me)) => sync::run(shard, reply, me, after_seq),
        (Request::Ack { up_to_seq }, Some(me)) => ack::run(shard, reply, me, up_to_seq),
        (
            Request::History {
                with,
                before_us,
                limit,
            },
            Some(me),
        ) => history::run(shard, reply, me, with, before_us, limit),
        (Request::CreateGroup { name, members }, Some(me)) => {
            create_group::run(shard, reply, me, name, members)
        }
        (Request::AddMembers { group_id, user_ids }, Some(me)) => {
            add_members::run(shard, reply, me, group_id, user_ids)
        }
        (Request::RemoveMember { group_id, user_id }, Some(me)) => {
            remove_member::run(shard, reply, me, group_id, user_id)
        }
        (Request::LeaveGroup { group_id }, Some(me)) => {
            leave_group::run(shard, reply, me, group_id)
        }
        (Request::RenameGroup { group_id, name }, Some(me)) => {
            rename_group::run(shard, reply, me, group_id, name)
        }
        (Request::GetGroup { group_id }, Some(me)) => get_group::run(shard, reply, me, group_id),
        (Request::SendGroup(send), Some(me)) => send_group::run(shard, reply, me, send),
        (Request::MarkRead { with, up_to_seq }, Some(me)) => {
            mark_read::run(shard, reply, me, with, up_to_seq)
        }
        (Request::GetReceipts { group_id, seq }, Some(me)) => {
            get_receipts::run(shard, reply, me, group_id, seq)
        }
        (
            Request::SetSettings {
                read_receipts,
                presence_visibility,
                push_previews,
            },
            Some(me),
        ) => set_settings::run(
            shard,
            reply,
            me,
            read_receipts,
            presence_visibility,
            push_previews,
        ),
        (Request::SubscribePresence { user_ids }, Some(me)) => {
            subscribe_presence::run(shard, reply, me, user_ids)
        }
        (Request::GetPresence { user_ids }, Some(me)) => {
            get_presence::run(shard, reply, me, user_ids)
        }
        (Request::Typing { with, typing }, Some(me)) => typing::run(shard, reply, me, with, typing),
        (Request::UploadStart(spec), Some(me)) => upload_start::run(shard, reply, me, spec),
        (
            Request::UploadChunk {
                upload_id,
                offset,
                data,
            },
            Some(me),
        ) => upload_chunk::run(shard, reply, me, upload_id, offset, data),
        (Request::UploadFinish { upload_id }, Some(me)) => {
            upload_finish::run(shard, reply, me, upload_id)
        }
        (Request::FetchAsset(fetch), Some(me)) => fetch_asset::run(shard, reply, me, fetch),
        (Request::RegisterPushToken { platform, token }, Some(me)) => {
            register_push_token::run(shard, reply, me, platform, token)
        }
        (Request::UnregisterPushToken { token }, Some(me)) => {
            unregister_push_token::run(shard, reply, me, token)
        }
        (Request::ListDevices, Some(me)) => list_devices::run(shard, reply, me),
        (Request::RevokeDevice { device_id }, Some(me)) => {
            revoke_device::run(shard, reply, me, device_id)
        }
        (Request::Block { user_id, checked }, Some(me)) => {
            block::run(shard, reply, me, user_id, checked)
        }
        (Request::Unblock { user_id }, Some(me)) => unblock::run(shard, reply, me, user_id),
        (Request::ListBlocked, Some(me)) => list_blocked::run(shard, reply, me),
        (Request::AddContact { user_id, checked }, Some(me)) => {
            add_contact::run(shard, reply, me, user_id, checked)
        }
        (Request::RemoveContact { user_id }, Some(me)) => {
            remove_contact::run(shard, reply, me, user_id)
        }
        (Request::ListContacts, Some(me)) => list_contacts::run(shard, reply, me),
        (
            Request::DeleteMessage {
                target,
                for_everyone,
            },
            Some(me),
        ) => delete_message::run(shard, reply, me, target, for_everyone),
        (Request::EditMessage { target, text }, Some(me)) => {
            edit_message::run(shard, reply, me, target, text)
        }
        (Request::React { target, emoji }, Some(me)) => react::run(shard, reply, me, target, emoji),
        // The connection's shard answers Ping and rejects unauthenticated requests before
        // routing, so nothing else reaches here.
        (req, _) => shard.internal(reply, &format!("unroutable request {req:?}")),
    }
}
