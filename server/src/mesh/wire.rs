//! [`ShardMsg`] on the wire between nodes (`chat.mesh.v1`, `protocol/proto/mesh.proto`).
//!
//! A shard index is only meaningful on its own node, so every shard a message names (a
//! `ConnRef`, a `from`) travels as a [`ShardAddr`] (node name, shard) and is turned back
//! into this node's index for it by [`Addresses`]. Decoding never trusts the peer: a missing
//! field, a wrong-sized id or a shard that does not exist is a [`WireError`] for that one
//! message, and the rest of the batch is still handled.

use chat_protocol::mesh::{self, mesh_msg::Msg, MeshBatch, MeshMsg, ShardAddr};
use chat_protocol::ErrorCode;
use chat_storage::Grantee;
use prost::Message as _;

use super::request;
use crate::changes::Revoke;
use crate::presence::PresenceQuery;
use crate::shard::{Auth, ConnRef, Reply, ShardMsg};

/// The version of `chat.mesh.v1` this build speaks. Every node of a cluster must speak it;
/// a batch of another version is dropped whole (and counted), never half-understood.
pub const VERSION: u32 = 1;

/// Turns this node's shard indices into wire addresses and back.
pub trait Addresses {
    fn addr_of(&self, shard: usize) -> ShardAddr;
    /// `None` for an address that names no shard (an empty node, a shard of this node
    /// that does not exist).
    fn shard_at(&self, addr: &ShardAddr) -> Option<usize>;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("not a MeshBatch: {0}")]
    Malformed(String),
    #[error("mesh version {0}; this node speaks {VERSION}")]
    Version(u32),
    #[error("{0} is missing")]
    Missing(&'static str),
    #[error("{0} names no shard")]
    UnknownShard(&'static str),
    #[error("{0}")]
    Invalid(String),
}

/// A received batch, its addresses already this node's indices.
#[derive(Debug)]
pub struct Decoded {
    /// The sending shard.
    pub from: usize,
    pub to_shard: u32,
    /// Each message, or why it could not be read.
    pub msgs: Vec<Result<ShardMsg, WireError>>,
}

/// Decodes a batch. An error here (not protobuf, another version, no sender) drops it
/// whole; an error in one message drops only that one.
pub fn decode_batch(bytes: &[u8], addrs: &impl Addresses) -> Result<Decoded, WireError> {
    let batch = MeshBatch::decode(bytes).map_err(|e| WireError::Malformed(e.to_string()))?;
    if batch.version != VERSION {
        return Err(WireError::Version(batch.version));
    }
    let from = shard(batch.from, addrs, "MeshBatch.from")?;
    let msgs = batch.msgs.into_iter().map(|m| decode(m, addrs)).collect();
    Ok(Decoded {
        from,
        to_shard: batch.to_shard,
        msgs,
    })
}

/// The wire form of `msg`.
pub fn encode(msg: ShardMsg, addrs: &impl Addresses) -> MeshMsg {
    let a = addrs;
    let msg = match msg {
        ShardMsg::Request { reply, user, req } => Msg::Request(mesh::Request {
            reply: Some(reply_to(reply, a)),
            user,
            req: Some(request::to_wire(req)),
        }),
        ShardMsg::ToConn { conn, auth, env } => {
            let (auth, logged_in_user) = match auth {
                Auth::Unchanged => (mesh::AuthChange::Unchanged, 0),
                Auth::LoggedIn(user) => (mesh::AuthChange::LoggedIn, user),
                Auth::LoginFailed => (mesh::AuthChange::LoginFailed, 0),
                Auth::LoggedOut => (mesh::AuthChange::LoggedOut, 0),
            };
            Msg::ToConn(mesh::ToConn {
                conn: Some(conn_to(conn, a)),
                auth: auth as i32,
                logged_in_user,
                env: Some(env),
            })
        }
        ShardMsg::Stored {
            reply,
            msg,
            duplicate,
        } => Msg::Stored(mesh::Stored {
            reply: Some(reply_to(reply, a)),
            msg: Some(msg),
            duplicate,
        }),
        ShardMsg::SessionClosed { user, conn } => Msg::SessionClosed(mesh::SessionClosed {
            user,
            conn: Some(conn_to(conn, a)),
        }),
        ShardMsg::CheckUsers { op, from, ids } => Msg::CheckUsers(mesh::CheckUsers {
            op,
            from: Some(a.addr_of(from)),
            ids,
        }),
        ShardMsg::UsersChecked { op, missing } => {
            Msg::UsersChecked(mesh::UsersChecked { op, missing })
        }
        ShardMsg::GroupDeliver {
            from,
            entry,
            members,
        } => Msg::GroupDeliver(mesh::GroupDeliver {
            from: Some(a.addr_of(from)),
            entry: Some(entry),
            members,
        }),
        ShardMsg::GroupDelivered { group_id, seq } => {
            Msg::GroupDelivered(mesh::GroupDelivered { group_id, seq })
        }
        ShardMsg::Receipt { to, receipt } => Msg::Receipt(mesh::Receipt {
            to,
            receipt: Some(receipt),
        }),
        ShardMsg::PresenceQuery(q) => {
            let q = *q;
            Msg::PresenceQuery(mesh::PresenceQuery {
                op: q.op,
                from: Some(a.addr_of(q.from)),
                viewer: q.viewer,
                viewer_conn: Some(conn_to(q.viewer_conn, a)),
                viewer_groups: q.viewer_groups,
                targets: q.targets,
                subscribe: q.subscribe,
            })
        }
        ShardMsg::PresenceAnswer { op, presences } => {
            Msg::PresenceAnswer(mesh::PresenceAnswer { op, presences })
        }
        ShardMsg::PushTokenClaimed {
            token_hash,
            token,
            user,
        } => Msg::PushTokenClaimed(mesh::PushTokenClaimed {
            token_hash: token_hash.to_vec().into(),
            token,
            user,
        }),
        ShardMsg::PushTokenTaken { user, token } => {
            Msg::PushTokenTaken(mesh::PushTokenTaken { user, token })
        }
        ShardMsg::AwaitDrain {
            conn,
            from,
            generation,
        } => Msg::AwaitDrain(mesh::AwaitDrain {
            conn: Some(conn_to(conn, a)),
            from: Some(a.addr_of(from)),
            generation,
        }),
        ShardMsg::Drained { generation } => Msg::Drained(mesh::Drained { generation }),
        ShardMsg::MediaChecked { reply, result } => Msg::MediaChecked(mesh::MediaChecked {
            reply: Some(reply_to(reply, a)),
            result: Some(match result {
                Ok(req) => mesh::media_checked::Result::Ok(request::to_wire(req)),
                Err((code, message)) => mesh::media_checked::Result::Refused(mesh::Refusal {
                    code: code as i32,
                    message,
                }),
            }),
        }),
        ShardMsg::Unsubscribe {
            conn,
            targets,
            forward,
        } => Msg::Unsubscribe(mesh::Unsubscribe {
            conn: Some(conn_to(conn, a)),
            targets,
            forward,
        }),
        ShardMsg::TypingFanout {
            from,
            group_id,
            typing,
            members,
        } => Msg::TypingFanout(mesh::TypingFanout {
            from,
            group_id,
            typing,
            members,
        }),
        ShardMsg::GroupReadMarked {
            reply,
            member,
            group_id,
            up_to_seq,
        } => Msg::GroupReadMarked(mesh::GroupReadMarked {
            reply: Some(reply_to(reply, a)),
            member,
            group_id,
            up_to_seq,
        }),
        ShardMsg::DirectChange {
            reply,
            change,
            revoke,
        } => Msg::DirectChange(mesh::DirectChange {
            reply: Some(reply_to(reply, a)),
            change: Some(change),
            revoke: grant_to(revoke),
        }),
        ShardMsg::ChangeDone { reply, revoke } => Msg::ChangeDone(mesh::ChangeDone {
            reply: Some(reply_to(reply, a)),
            revoke: grant_to(revoke),
        }),
        ShardMsg::ChangeLogged {
            reply,
            entry,
            recipients,
            revoke,
        } => Msg::ChangeLogged(mesh::ChangeLogged {
            reply: Some(reply_to(reply, a)),
            entry: Some(entry),
            recipients,
            revoke: grant_to(revoke),
        }),
        ShardMsg::RevokeGrant {
            reply,
            asset_id,
            grantee,
        } => Msg::RevokeGrant(mesh::RevokeGrant {
            reply: Some(reply_to(reply, a)),
            grant: grant_to(Some((asset_id, grantee))),
        }),
        ShardMsg::Hide {
            reply,
            user,
            change,
        } => Msg::Hide(mesh::Hide {
            reply: Some(reply_to(reply, a)),
            user,
            change: Some(change),
        }),
        ShardMsg::GroupProgress {
            group_id,
            member,
            delivered,
            read,
            share_read,
            reply,
        } => Msg::GroupProgress(mesh::GroupProgress {
            group_id,
            member,
            delivered,
            read,
            share_read,
            reply: reply.map(|r| reply_to(r, a)),
        }),
        ShardMsg::ConnGone { conn } => Msg::ConnGone(mesh::ConnGone {
            conn: Some(conn_to(conn, a)),
        }),
    };
    MeshMsg { msg: Some(msg) }
}

/// The message a wire form carries.
pub fn decode(msg: MeshMsg, addrs: &impl Addresses) -> Result<ShardMsg, WireError> {
    let a = addrs;
    Ok(match msg.msg.ok_or(WireError::Missing("MeshMsg.msg"))? {
        Msg::Request(m) => ShardMsg::Request {
            reply: reply_from(m.reply, a)?,
            user: m.user,
            req: request::from_wire(need(m.req, "Request.req")?)?,
        },
        Msg::ToConn(m) => ShardMsg::ToConn {
            conn: conn_from(m.conn, a, "ToConn.conn")?,
            auth: match mesh::AuthChange::try_from(m.auth) {
                Ok(mesh::AuthChange::Unchanged) => Auth::Unchanged,
                Ok(mesh::AuthChange::LoggedIn) => Auth::LoggedIn(m.logged_in_user),
                Ok(mesh::AuthChange::LoginFailed) => Auth::LoginFailed,
                Ok(mesh::AuthChange::LoggedOut) => Auth::LoggedOut,
                Err(_) => return Err(WireError::Invalid(format!("auth {}", m.auth))),
            },
            env: need(m.env, "ToConn.env")?,
        },
        Msg::Stored(m) => ShardMsg::Stored {
            reply: reply_from(m.reply, a)?,
            msg: need(m.msg, "Stored.msg")?,
            duplicate: m.duplicate,
        },
        Msg::SessionClosed(m) => ShardMsg::SessionClosed {
            user: m.user,
            conn: conn_from(m.conn, a, "SessionClosed.conn")?,
        },
        Msg::CheckUsers(m) => ShardMsg::CheckUsers {
            op: m.op,
            from: shard(m.from, a, "CheckUsers.from")?,
            ids: m.ids,
        },
        Msg::UsersChecked(m) => ShardMsg::UsersChecked {
            op: m.op,
            missing: m.missing,
        },
        Msg::GroupDeliver(m) => ShardMsg::GroupDeliver {
            from: shard(m.from, a, "GroupDeliver.from")?,
            entry: need(m.entry, "GroupDeliver.entry")?,
            members: m.members,
        },
        Msg::GroupDelivered(m) => ShardMsg::GroupDelivered {
            group_id: m.group_id,
            seq: m.seq,
        },
        Msg::Receipt(m) => ShardMsg::Receipt {
            to: m.to,
            receipt: need(m.receipt, "Receipt.receipt")?,
        },
        Msg::PresenceQuery(m) => ShardMsg::PresenceQuery(Box::new(PresenceQuery {
            op: m.op,
            from: shard(m.from, a, "PresenceQuery.from")?,
            viewer: m.viewer,
            viewer_conn: conn_from(m.viewer_conn, a, "PresenceQuery.viewer_conn")?,
            viewer_groups: m.viewer_groups,
            targets: m.targets,
            subscribe: m.subscribe,
        })),
        Msg::PresenceAnswer(m) => ShardMsg::PresenceAnswer {
            op: m.op,
            presences: m.presences,
        },
        Msg::PushTokenClaimed(m) => ShardMsg::PushTokenClaimed {
            token_hash: m.token_hash[..].try_into().map_err(|_| {
                WireError::Invalid("PushTokenClaimed.token_hash is not 32 bytes".into())
            })?,
            token: m.token,
            user: m.user,
        },
        Msg::PushTokenTaken(m) => ShardMsg::PushTokenTaken {
            user: m.user,
            token: m.token,
        },
        Msg::AwaitDrain(m) => ShardMsg::AwaitDrain {
            conn: conn_from(m.conn, a, "AwaitDrain.conn")?,
            from: shard(m.from, a, "AwaitDrain.from")?,
            generation: m.generation,
        },
        Msg::Drained(m) => ShardMsg::Drained {
            generation: m.generation,
        },
        Msg::MediaChecked(m) => ShardMsg::MediaChecked {
            reply: reply_from(m.reply, a)?,
            result: match need(m.result, "MediaChecked.result")? {
                mesh::media_checked::Result::Ok(req) => Ok(request::from_wire(req)?),
                mesh::media_checked::Result::Refused(r) => Err((
                    ErrorCode::try_from(r.code).unwrap_or(ErrorCode::Internal),
                    r.message,
                )),
            },
        },
        Msg::Unsubscribe(m) => ShardMsg::Unsubscribe {
            conn: conn_from(m.conn, a, "Unsubscribe.conn")?,
            targets: m.targets,
            forward: m.forward,
        },
        Msg::TypingFanout(m) => ShardMsg::TypingFanout {
            from: m.from,
            group_id: m.group_id,
            typing: m.typing,
            members: m.members,
        },
        Msg::GroupReadMarked(m) => ShardMsg::GroupReadMarked {
            reply: reply_from(m.reply, a)?,
            member: m.member,
            group_id: m.group_id,
            up_to_seq: m.up_to_seq,
        },
        Msg::DirectChange(m) => ShardMsg::DirectChange {
            reply: reply_from(m.reply, a)?,
            change: need(m.change, "DirectChange.change")?,
            revoke: grant_from(m.revoke)?,
        },
        Msg::ChangeDone(m) => ShardMsg::ChangeDone {
            reply: reply_from(m.reply, a)?,
            revoke: grant_from(m.revoke)?,
        },
        Msg::ChangeLogged(m) => ShardMsg::ChangeLogged {
            reply: reply_from(m.reply, a)?,
            entry: need(m.entry, "ChangeLogged.entry")?,
            recipients: m.recipients,
            revoke: grant_from(m.revoke)?,
        },
        Msg::RevokeGrant(m) => {
            let (asset_id, grantee) =
                grant_from(m.grant)?.ok_or(WireError::Missing("RevokeGrant.grant"))?;
            ShardMsg::RevokeGrant {
                reply: reply_from(m.reply, a)?,
                asset_id,
                grantee,
            }
        }
        Msg::Hide(m) => ShardMsg::Hide {
            reply: reply_from(m.reply, a)?,
            user: m.user,
            change: need(m.change, "Hide.change")?,
        },
        Msg::GroupProgress(m) => ShardMsg::GroupProgress {
            group_id: m.group_id,
            member: m.member,
            delivered: m.delivered,
            read: m.read,
            share_read: m.share_read,
            reply: match m.reply {
                Some(r) => Some(reply_from(Some(r), a)?),
                None => None,
            },
        },
        Msg::ConnGone(m) => ShardMsg::ConnGone {
            conn: conn_from(m.conn, a, "ConnGone.conn")?,
        },
    })
}

fn need<T>(field: Option<T>, what: &'static str) -> Result<T, WireError> {
    field.ok_or(WireError::Missing(what))
}

fn shard(
    addr: Option<ShardAddr>,
    addrs: &impl Addresses,
    what: &'static str,
) -> Result<usize, WireError> {
    addrs
        .shard_at(&need(addr, what)?)
        .ok_or(WireError::UnknownShard(what))
}

fn conn_to(conn: ConnRef, addrs: &impl Addresses) -> mesh::ConnRef {
    mesh::ConnRef {
        shard: Some(addrs.addr_of(conn.shard)),
        id: conn.id,
    }
}

fn conn_from(
    conn: Option<mesh::ConnRef>,
    addrs: &impl Addresses,
    what: &'static str,
) -> Result<ConnRef, WireError> {
    let conn = need(conn, what)?;
    Ok(ConnRef {
        shard: shard(conn.shard, addrs, what)?,
        id: conn.id,
    })
}

fn reply_to(reply: Reply, addrs: &impl Addresses) -> mesh::Reply {
    mesh::Reply {
        conn: Some(conn_to(reply.conn, addrs)),
        request_id: reply.request_id,
    }
}

fn reply_from(reply: Option<mesh::Reply>, addrs: &impl Addresses) -> Result<Reply, WireError> {
    let reply = need(reply, "Reply")?;
    Ok(Reply {
        conn: conn_from(reply.conn, addrs, "Reply.conn")?,
        request_id: reply.request_id,
    })
}

fn grant_to(revoke: Revoke) -> Option<mesh::Grant> {
    let (asset_id, grantee) = revoke?;
    Some(mesh::Grant {
        asset_id: asset_id.to_vec().into(),
        grantee: Some(match grantee {
            Grantee::User(id) => mesh::grant::Grantee::User(id),
            Grantee::Group(id) => mesh::grant::Grantee::Group(id),
        }),
    })
}

fn grant_from(grant: Option<mesh::Grant>) -> Result<Revoke, WireError> {
    let Some(grant) = grant else {
        return Ok(None);
    };
    let asset_id: [u8; 16] = grant.asset_id[..]
        .try_into()
        .map_err(|_| WireError::Invalid("Grant.asset_id is not 16 bytes".into()))?;
    let grantee = match need(grant.grantee, "Grant.grantee")? {
        mesh::grant::Grantee::User(id) => Grantee::User(id),
        mesh::grant::Grantee::Group(id) => Grantee::Group(id),
    };
    Ok(Some((asset_id, grantee)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // reason: test code
    use super::*;
    use crate::placement::NodeAddrs;
    use crate::request::{Attachment, Conversation, Fetch, MessageTarget, Request, Send};
    use chat_protocol::pb;

    /// Node "a" with 2 shards and node "b" with 3, as each other's peers.
    fn nodes() -> (NodeAddrs, NodeAddrs) {
        (NodeAddrs::new("a", 2), NodeAddrs::new("b", 3))
    }

    /// Its ordinal, by an exhaustive match: a new variant does not build until it is here
    /// and in `samples`.
    fn ordinal(msg: &ShardMsg) -> usize {
        match msg {
            ShardMsg::Request { .. } => 0,
            ShardMsg::ToConn { .. } => 1,
            ShardMsg::Stored { .. } => 2,
            ShardMsg::SessionClosed { .. } => 3,
            ShardMsg::CheckUsers { .. } => 4,
            ShardMsg::UsersChecked { .. } => 5,
            ShardMsg::GroupDeliver { .. } => 6,
            ShardMsg::GroupDelivered { .. } => 7,
            ShardMsg::Receipt { .. } => 8,
            ShardMsg::PresenceQuery(_) => 9,
            ShardMsg::PresenceAnswer { .. } => 10,
            ShardMsg::PushTokenClaimed { .. } => 11,
            ShardMsg::PushTokenTaken { .. } => 12,
            ShardMsg::AwaitDrain { .. } => 13,
            ShardMsg::Drained { .. } => 14,
            ShardMsg::MediaChecked { .. } => 15,
            ShardMsg::Unsubscribe { .. } => 16,
            ShardMsg::TypingFanout { .. } => 17,
            ShardMsg::GroupReadMarked { .. } => 18,
            ShardMsg::DirectChange { .. } => 19,
            ShardMsg::ChangeDone { .. } => 20,
            ShardMsg::ChangeLogged { .. } => 21,
            ShardMsg::RevokeGrant { .. } => 22,
            ShardMsg::Hide { .. } => 23,
            ShardMsg::GroupProgress { .. } => 24,
            ShardMsg::ConnGone { .. } => 25,
        }
    }
    const VARIANTS: usize = 26;

    /// One of each variant, as node "a" would send them; `theirs` is a destination index of
    /// a shard of node "b" on node "a".
    fn samples(theirs: usize) -> Vec<ShardMsg> {
        let mine = ConnRef { shard: 1, id: 77 };
        let reply = Reply {
            conn: mine,
            request_id: 9,
        };
        let message = pb::Message {
            from_user_id: 1,
            to_user_id: 2,
            text: "hi".into(),
            seq: 3,
            ..Default::default()
        };
        let entry = pb::Event {
            seq: 4,
            kind: Some(pb::event::Kind::Message(message.clone())),
        };
        let change = pb::MessageChange {
            kind: pb::MessageChangeKind::Edited as i32,
            text: "edited".into(),
            ..Default::default()
        };
        let send = Request::Send(Send {
            to_user_id: 2,
            client_msg_id: 5,
            text: "caption".into(),
            media: Some(Attachment {
                asset_id: [7; 16],
                thumbnail: bytes::Bytes::from_static(b"thumb"),
                media: Some(pb::Media {
                    asset_id: vec![7; 16].into(),
                    size: 1000,
                    mime_type: "image/png".into(),
                    ..Default::default()
                }),
            }),
            reply_to_us: Some(11),
        });
        vec![
            ShardMsg::Request {
                reply,
                user: Some(1),
                req: Request::Ping { nonce: 3 },
            },
            ShardMsg::ToConn {
                conn: ConnRef {
                    shard: theirs,
                    id: 5,
                },
                auth: Auth::LoggedIn(42),
                env: chat_protocol::envelope(3, pb::envelope::Body::Pong(pb::Pong { nonce: 1 })),
            },
            ShardMsg::Stored {
                reply,
                msg: message.clone(),
                duplicate: true,
            },
            ShardMsg::SessionClosed {
                user: 1,
                conn: mine,
            },
            ShardMsg::CheckUsers {
                op: 1,
                from: 0,
                ids: vec![1, 2],
            },
            ShardMsg::UsersChecked {
                op: 1,
                missing: vec![2],
            },
            ShardMsg::GroupDeliver {
                from: 1,
                entry: entry.clone(),
                members: vec![1, 2, 3],
            },
            ShardMsg::GroupDelivered {
                group_id: 8,
                seq: 4,
            },
            ShardMsg::Receipt {
                to: 1,
                receipt: pb::Receipt {
                    by_user_id: 2,
                    up_to_seq: 3,
                    ..Default::default()
                },
            },
            ShardMsg::PresenceQuery(Box::new(PresenceQuery {
                op: 2,
                from: 1,
                viewer: 1,
                viewer_conn: mine,
                viewer_groups: vec![8],
                targets: vec![2, 3],
                subscribe: true,
            })),
            ShardMsg::PresenceAnswer {
                op: 2,
                presences: vec![pb::Presence {
                    user_id: 2,
                    online: true,
                    ..Default::default()
                }],
            },
            ShardMsg::PushTokenClaimed {
                token_hash: [3; 32],
                token: "tok".into(),
                user: 1,
            },
            ShardMsg::PushTokenTaken {
                user: 2,
                token: "tok".into(),
            },
            ShardMsg::AwaitDrain {
                conn: ConnRef {
                    shard: theirs,
                    id: 6,
                },
                from: 0,
                generation: 12,
            },
            ShardMsg::Drained { generation: 12 },
            ShardMsg::MediaChecked {
                reply,
                result: Ok(send),
            },
            ShardMsg::Unsubscribe {
                conn: mine,
                targets: vec![2],
                forward: true,
            },
            ShardMsg::TypingFanout {
                from: 1,
                group_id: 8,
                typing: true,
                members: vec![2, 3],
            },
            ShardMsg::GroupReadMarked {
                reply,
                member: 2,
                group_id: 8,
                up_to_seq: 4,
            },
            ShardMsg::DirectChange {
                reply,
                change: change.clone(),
                revoke: Some(([1; 16], Grantee::User(2))),
            },
            ShardMsg::ChangeDone {
                reply,
                revoke: None,
            },
            ShardMsg::ChangeLogged {
                reply,
                entry,
                recipients: vec![2, 3],
                revoke: Some(([2; 16], Grantee::Group(8))),
            },
            ShardMsg::RevokeGrant {
                reply,
                asset_id: [4; 16],
                grantee: Grantee::Group(8),
            },
            ShardMsg::Hide {
                reply,
                user: 1,
                change,
            },
            ShardMsg::GroupProgress {
                group_id: 8,
                member: 2,
                delivered: 4,
                read: 3,
                share_read: false,
                reply: Some(reply),
            },
            ShardMsg::ConnGone { conn: mine },
        ]
    }

    fn batch(from: ShardAddr, to_shard: u32, msgs: Vec<MeshMsg>) -> Vec<u8> {
        MeshBatch {
            version: VERSION,
            from: Some(from),
            to_shard,
            msgs,
        }
        .encode_to_vec()
    }

    #[test]
    fn every_message_survives_the_trip_there_and_back() {
        let (a, b) = nodes();
        let theirs = a.index("b", 2);
        let sent = samples(theirs);
        let mut seen: Vec<usize> = sent.iter().map(ordinal).collect();
        seen.dedup();
        assert_eq!(seen, (0..VARIANTS).collect::<Vec<_>>());
        let expected: Vec<String> = sent.iter().map(|m| format!("{m:?}")).collect();

        // a -> b: b reads a's shards as its own indices for them, and b's shard 2 as 2.
        let wire: Vec<MeshMsg> = sent.into_iter().map(|m| encode(m, &a)).collect();
        let at_b = decode_batch(&batch(a.addr_of(1), 2, wire), &b).unwrap();
        assert_eq!(at_b.from, b.index("a", 1));
        assert_eq!(at_b.to_shard, 2);
        let at_b: Vec<ShardMsg> = at_b.msgs.into_iter().map(|m| m.unwrap()).collect();
        match &at_b[1] {
            ShardMsg::ToConn { conn, .. } => assert_eq!(conn.shard, 2),
            other => panic!("{other:?}"),
        }
        match &at_b[3] {
            ShardMsg::SessionClosed { conn, .. } => assert_eq!(conn.shard, b.index("a", 1)),
            other => panic!("{other:?}"),
        }

        // ... and back: the same messages, field for field.
        let wire: Vec<MeshMsg> = at_b.into_iter().map(|m| encode(m, &b)).collect();
        let back = decode_batch(&batch(b.addr_of(2), 1, wire), &a).unwrap();
        let back: Vec<String> = back
            .msgs
            .into_iter()
            .map(|m| format!("{:?}", m.unwrap()))
            .collect();
        assert_eq!(back, expected);
    }

    fn client(body: pb::envelope::Body) -> Request {
        Request::parse(body, 1000).unwrap()
    }

    #[test]
    fn requests_of_every_kind_survive_the_trip() {
        let target = MessageTarget {
            with: Conversation::Group(8),
            timestamp_us: 123,
        };
        let requests = [
            client(pb::envelope::Body::Register(pb::Register {
                username: "alice".into(),
                password: "password1".into(),
            })),
            client(pb::envelope::Body::Login(pb::Login {
                username: "alice".into(),
                password: "password1".into(),
                device_name: "phone".into(),
            })),
            client(pb::envelope::Body::Resume(pb::Resume {
                token: vec![1; 40].into(),
            })),
            Request::History {
                with: Conversation::User(2),
                before_us: 99,
                limit: 20,
            },
            Request::CreateGroup {
                name: "g".into(),
                members: vec![2, 3],
            },
            Request::SetSettings {
                read_receipts: Some(false),
                presence_visibility: Some(pb::PresenceVisibility::Nobody),
                push_previews: None,
            },
            Request::Typing {
                with: Conversation::Group(8),
                typing: true,
            },
            Request::UploadChunk {
                upload_id: [5; 16],
                offset: 10,
                data: bytes::Bytes::from_static(b"chunk"),
            },
            Request::FetchAsset(Fetch {
                asset_id: [6; 16],
                offset: 0,
                length: 100,
                group: Some(8),
                member_checked: true,
            }),
            Request::Block {
                user_id: 2,
                checked: true,
            },
            Request::AddContact {
                user_id: 2,
                checked: false,
            },
            Request::DeleteMessage {
                target,
                for_everyone: true,
            },
            Request::React {
                target,
                emoji: "👍".into(),
            },
            Request::Sync { after_seq: None },
            Request::Sync { after_seq: Some(0) },
            Request::LogoutAll,
            Request::GetUser { user_id: 2 },
            Request::Lookup {
                username: "bob".into(),
            },
            Request::Send(Send {
                to_user_id: 2,
                client_msg_id: 1,
                text: "hi".into(),
                media: None,
                reply_to_us: None,
            }),
            Request::SendGroup(crate::request::SendGroup {
                group_id: 8,
                client_msg_id: 2,
                text: String::new(),
                media: Some(Attachment {
                    asset_id: [1; 16],
                    thumbnail: bytes::Bytes::new(),
                    media: None,
                }),
                reply_to_us: Some(5),
            }),
            Request::Ack { up_to_seq: 4 },
            Request::Ping { nonce: 1 },
            Request::AddMembers {
                group_id: 8,
                user_ids: vec![4],
            },
            Request::RemoveMember {
                group_id: 8,
                user_id: 4,
            },
            Request::LeaveGroup { group_id: 8 },
            Request::RenameGroup {
                group_id: 8,
                name: "h".into(),
            },
            Request::GetGroup { group_id: 8 },
            Request::MarkRead {
                with: Conversation::User(2),
                up_to_seq: 3,
            },
            Request::GetReceipts {
                group_id: 8,
                seq: 3,
            },
            Request::SubscribePresence {
                user_ids: vec![2, 3],
            },
            Request::GetPresence { user_ids: vec![2] },
            Request::UploadStart(crate::request::UploadSpec {
                size: 10,
                mime_type: "audio/ogg".into(),
                sha256: [9; 32],
                kind: pb::MediaKind::Voice,
                duration_ms: 1500,
                width: 0,
                height: 0,
                file_name: "note.ogg".into(),
            }),
            Request::UploadFinish { upload_id: [5; 16] },
            Request::RegisterPushToken {
                platform: pb::PushPlatform::Fcm,
                token: "t".into(),
            },
            Request::UnregisterPushToken { token: "t".into() },
            Request::Logout,
            Request::ListDevices,
            Request::RevokeDevice { device_id: 3 },
            Request::Unblock { user_id: 2 },
            Request::ListBlocked,
            Request::RemoveContact { user_id: 2 },
            Request::ListContacts,
            Request::EditMessage {
                target,
                text: "fixed".into(),
            },
        ];
        for req in requests {
            let back = request::from_wire(request::to_wire(req.clone())).unwrap();
            assert_eq!(back, req);
        }
    }

    #[test]
    fn a_bad_message_is_dropped_alone_and_a_bad_batch_whole() {
        let (a, b) = nodes();
        assert!(matches!(
            decode_batch(b"\xff\xff not protobuf", &b),
            Err(WireError::Malformed(_))
        ));
        let mut other_version = MeshBatch::decode(&batch(a.addr_of(0), 0, vec![])[..]).unwrap();
        other_version.version = VERSION + 1;
        assert_eq!(
            decode_batch(&other_version.encode_to_vec(), &b).unwrap_err(),
            WireError::Version(VERSION + 1)
        );

        let good = encode(ShardMsg::Drained { generation: 1 }, &a);
        // A connection on b's shard 7, which b does not have.
        let no_such_shard = encode(
            ShardMsg::SessionClosed {
                user: 1,
                conn: ConnRef {
                    shard: a.index("b", 7),
                    id: 1,
                },
            },
            &a,
        );
        let short_hash = MeshMsg {
            msg: Some(Msg::PushTokenClaimed(mesh::PushTokenClaimed {
                token_hash: vec![0; 5].into(),
                token: "t".into(),
                user: 1,
            })),
        };
        // A server-to-client body is not a request.
        let not_a_request = MeshMsg {
            msg: Some(Msg::Request(mesh::Request {
                reply: Some(reply_to(
                    Reply {
                        conn: ConnRef { shard: 0, id: 1 },
                        request_id: 1,
                    },
                    &a,
                )),
                user: None,
                req: Some(mesh::InternalRequest {
                    request: Some(chat_protocol::envelope(
                        0,
                        pb::envelope::Body::Pong(pb::Pong { nonce: 1 }),
                    )),
                    ..Default::default()
                }),
            })),
        };
        let empty = MeshMsg { msg: None };
        let decoded = decode_batch(
            &batch(
                a.addr_of(0),
                1,
                vec![
                    good.clone(),
                    no_such_shard,
                    short_hash,
                    not_a_request,
                    empty,
                    good,
                ],
            ),
            &b,
        )
        .unwrap();
        let results: Vec<Result<usize, WireError>> = decoded
            .msgs
            .into_iter()
            .map(|m| m.map(|m| ordinal(&m)))
            .collect();
        assert_eq!(results[0], Ok(14));
        assert_eq!(
            results[1],
            Err(WireError::UnknownShard("SessionClosed.conn"))
        );
        assert!(matches!(results[2], Err(WireError::Invalid(_))));
        assert!(matches!(results[3], Err(WireError::Invalid(_))));
        assert_eq!(results[4], Err(WireError::Missing("MeshMsg.msg")));
        assert_eq!(results[5], Ok(14));

        // A batch with no sender, or one from a shard of b that b does not have, is refused.
        let mut anonymous = MeshBatch::decode(&batch(a.addr_of(0), 0, vec![])[..]).unwrap();
        anonymous.from = None;
        assert!(decode_batch(&anonymous.encode_to_vec(), &b).is_err());
        let forged = ShardAddr {
            node: "b".into(),
            shard: 9,
        };
        assert!(decode_batch(&batch(forged, 0, vec![]), &b).is_err());
    }
}
