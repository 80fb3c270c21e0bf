//! Messages after sending: delete for everyone, edit and react (changes every participant
//! sees), and delete for me (the caller's own devices hide it).
//!
//! 1:1: the request runs on the caller's shard, which holds the conversation's history:
//! it checks the rules there, rewrites its copy of the message and appends a
//! `MessageChange` event to the inbox of each participant living there; then the other
//! participant's shard does the same with its copies, and the caller is answered once both
//! are durable. Group: the group's shard rewrites the message in the group log and appends
//! the change to the log as an entry of its own, handed to every member's shard like a
//! message (which also rewrites that shard's copy of the message). Deleting a message with
//! media for everyone then revokes the asset's grant (to the recipient or the group) on the
//! asset's shard before the answer.

use std::rc::Rc;

use chat_protocol::pb::{self, envelope::Body, event, MessageChangeKind};
use chat_protocol::ErrorCode;
use chat_storage::{apply_change, Grantee, StorageError};

use crate::clock::Clock;
use crate::request::{Conversation, MessageTarget};
use crate::shard::{AfterCommit, Reply, Shard, ShardMsg};

/// What a request does to a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    DeleteForEveryone,
    DeleteForMe,
    Edit(String),
    React(String),
}

/// An asset whose grant goes with a message deleted for everyone.
pub type Revoke = Option<([u8; 16], Grantee)>;

const NOT_FOUND: &str = "no such message";

/// DeleteMessage, EditMessage, React: on the caller's shard (1:1) or the group's (group).
pub fn request(shard: &Rc<Shard>, reply: Reply, me: u64, target: MessageTarget, op: Op) {
    match target.with {
        Conversation::User(peer) => direct(shard, reply, me, peer, target.timestamp_us, op),
        Conversation::Group(group_id) => group(shard, reply, me, group_id, target.timestamp_us, op),
    }
}

/// Checks a change against the rules; the change to make, or the refusal.
fn change_for(
    shard: &Shard,
    me: u64,
    m: &pb::Message,
    op: Op,
) -> Result<Option<pb::MessageChange>, (ErrorCode, String)> {
    let now = Clock::now_us();
    let within = |window: Option<std::time::Duration>, what: &str| match window {
        Some(w) if m.timestamp_us.saturating_add(w.as_micros() as u64) < now => Err((
            ErrorCode::TooLate,
            format!("messages can be {what} for {} s after sending", w.as_secs()),
        )),
        _ => Ok(()),
    };
    let sender_only = |what: &str| {
        if m.from_user_id == me {
            Ok(())
        } else {
            Err((
                ErrorCode::PermissionDenied,
                format!("only the sender may {what} a message"),
            ))
        }
    };
    let (kind, text, emoji) = match op {
        Op::DeleteForEveryone => {
            sender_only("delete for everyone")?;
            if m.deleted {
                return Ok(None); // a retry: done already
            }
            within(shard.limits.delete_window, "deleted for everyone")?;
            (MessageChangeKind::Deleted, String::new(), String::new())
        }
        Op::Edit(text) => {
            if m.deleted {
                return Err((ErrorCode::MessageNotFound, NOT_FOUND.into()));
            }
            sender_only("edit")?;
            within(shard.limits.edit_window, "edited")?;
            if text.is_empty() && m.media.is_none() {
                return Err((ErrorCode::InvalidArgument, "text is empty".into()));
            }
            (MessageChangeKind::Edited, text, String::new())
        }
        Op::React(emoji) => {
            if m.deleted {
                return Err((ErrorCode::MessageNotFound, NOT_FOUND.into()));
            }
            (MessageChangeKind::Reaction, String::new(), emoji)
        }
        Op::DeleteForMe => (MessageChangeKind::Hidden, String::new(), String::new()),
    };
    Ok(Some(pb::MessageChange {
        kind: kind as i32,
        from_user_id: m.from_user_id,
        to_user_id: m.to_user_id,
        group_id: m.group_id,
        message_us: m.timestamp_us,
        message_seq: m.seq,
        actor_user_id: me,
        text,
        emoji,
        timestamp_us: shard.clock.next(),
        seq: 0,
    }))
}

/// The grant a deletion for everyone revokes.
fn revoke_of(m: &pb::Message, kind: MessageChangeKind) -> Revoke {
    let media = m
        .media
        .as_ref()
        .filter(|_| kind == MessageChangeKind::Deleted)?;
    let asset_id = <[u8; 16]>::try_from(&media.asset_id[..]).ok()?;
    let grantee = if m.group_id != 0 {
        Grantee::Group(m.group_id)
    } else {
        Grantee::User(m.to_user_id)
    };
    Some((asset_id, grantee))
}

// ---- 1:1 ----

fn direct(shard: &Rc<Shard>, reply: Reply, me: u64, peer: u64, timestamp_us: u64, op: Op) {
    // History holds the caller's own conversations only: anyone else's message is not found.
    let m = match shard.store.history_message(me, peer, timestamp_us) {
        Ok(Some(m)) => m,
        Ok(None) => return shard.fail(reply, ErrorCode::MessageNotFound, NOT_FOUND),
        Err(e) => return shard.internal(reply, &e),
    };
    let change = match change_for(shard, me, &m, op) {
        Ok(Some(change)) => change,
        Ok(None) => return shard.respond(reply, Body::Done(pb::Done {})),
        Err((code, msg)) => return shard.fail(reply, code, msg),
    };
    if change.kind() == MessageChangeKind::Hidden {
        let staged = shard
            .store
            .stage_hidden(me, false, peer, timestamp_us)
            .and_then(|()| append(shard, me, &change));
        return match staged {
            Ok(()) => shard.after_commit(AfterCommit::Answer {
                reply,
                body: Body::Done(pb::Done {}),
            }),
            Err(e) => shard.internal(reply, &e),
        };
    }
    let revoke = revoke_of(&m, change.kind());
    if let Err(e) = apply_direct(shard, &change) {
        return shard.internal(reply, &e);
    }
    // Then the other participant's shard, unless it is this one (one copy, one commit).
    let dest = shard.place.user(peer);
    let next = if dest == shard.id {
        ShardMsg::ChangeDone { reply, revoke }
    } else {
        ShardMsg::DirectChange {
            reply,
            change,
            revoke,
        }
    };
    shard.after_commit(AfterCommit::Dispatch {
        dest,
        msg: Box::new(next),
    });
}

/// Applies a 1:1 change to this shard's copies of the message (history, and the
/// recipient's inbox entry for a deletion or an edit) and appends the change to the inbox of
/// each participant living here. Staged.
fn apply_direct(shard: &Rc<Shard>, change: &pb::MessageChange) -> Result<(), StorageError> {
    let (from, to) = (change.from_user_id, change.to_user_id);
    let Some(mut m) = shard.store.history_message(from, to, change.message_us)? else {
        return Ok(());
    };
    if !apply_change(&mut m, change) {
        return Ok(()); // nothing changes (a reaction that is already there, ...)
    }
    shard.store.stage_history_message(&m)?;
    let here = |user| shard.place.user(user) == shard.id;
    if here(to)
        && matches!(
            change.kind(),
            MessageChangeKind::Deleted | MessageChangeKind::Edited
        )
    {
        shard.store.stage_inbox_message(&m)?;
    }
    for user in [from, to] {
        if here(user) {
            append(shard, user, change)?;
        }
    }
    Ok(())
}

/// Appends a change to a user's inbox, pushed once durable. Staged.
fn append(shard: &Rc<Shard>, user: u64, change: &pb::MessageChange) -> Result<(), StorageError> {
    let event = shard
        .store
        .stage_event(user, event::Kind::MessageChange(change.clone()))?;
    shard.after_commit(AfterCommit::Appended { user, event });
    Ok(())
}

/// On the other participant's shard: the same change to its copies.
pub fn direct_change(shard: &Rc<Shard>, reply: Reply, change: pb::MessageChange, revoke: Revoke) {
    if let Err(e) = apply_direct(shard, &change) {
        return shard.internal(reply, &e);
    }
    shard.after_commit(AfterCommit::Dispatch {
        dest: shard.id,
        msg: Box::new(ShardMsg::ChangeDone { reply, revoke }),
    });
}

/// The change is durable everywhere: revoke the grant of deleted media, then answer.
pub fn change_done(shard: &Rc<Shard>, reply: Reply, revoke: Revoke) {
    match revoke {
        Some((asset_id, grantee)) => shard.dispatch(
            shard.place.asset(&asset_id),
            ShardMsg::RevokeGrant {
                reply,
                asset_id,
                grantee,
            },
        ),
        None => shard.respond(reply, Body::Done(pb::Done {})),
    }
}

/// On the asset's shard: the grant of a deleted message's media ends, then the answer.
pub fn revoke_grant(shard: &Rc<Shard>, reply: Reply, asset_id: [u8; 16], grantee: Grantee) {
    match shard.store.stage_revoke_grant(&asset_id, grantee) {
        Ok(()) => shard.after_commit(AfterCommit::Answer {
            reply,
            body: Body::Done(pb::Done {}),
        }),
        Err(e) => shard.internal(reply, &e),
    }
}

// ---- groups ----

fn group(shard: &Rc<Shard>, reply: Reply, me: u64, group_id: u64, timestamp_us: u64, op: Op) {
    // Outsiders get what any invisible message gets.
    let Ok(group) = shard.groups.visible_to(shard, group_id, me) else {
        return shard.fail(reply, ErrorCode::MessageNotFound, NOT_FOUND);
    };
    let mut m = match shard.store.group_message(group_id, timestamp_us) {
        Ok(Some(m)) => m,
        Ok(None) => return shard.fail(reply, ErrorCode::MessageNotFound, NOT_FOUND),
        Err(e) => return shard.internal(reply, &e),
    };
    let change = match change_for(shard, me, &m, op) {
        Ok(Some(change)) => change,
        Ok(None) => return shard.respond(reply, Body::Done(pb::Done {})),
        Err((code, msg)) => return shard.fail(reply, code, msg),
    };
    if change.kind() == MessageChangeKind::Hidden {
        // Marked here, where the group's history is paged; the caller's devices hear of it
        // from the caller's inbox.
        return match shard.store.stage_hidden(me, true, group_id, timestamp_us) {
            Ok(()) => shard.after_commit(AfterCommit::Dispatch {
                dest: shard.place.user(me),
                msg: Box::new(ShardMsg::Hide {
                    reply,
                    user: me,
                    change,
                }),
            }),
            Err(e) => shard.internal(reply, &e),
        };
    }
    let revoke = revoke_of(&m, change.kind());
    if !apply_change(&mut m, &change) {
        return shard.respond(reply, Body::Done(pb::Done {}));
    }
    let staged = shard.store.stage_group_message(&m).and_then(|()| {
        shard.store.stage_group_entry(
            group_id,
            change.timestamp_us,
            event::Kind::MessageChange(change),
            None,
        )
    });
    match staged {
        Ok(entry) => {
            let recipients = group.members.iter().map(|m| m.user_id).collect();
            shard.after_commit(AfterCommit::Dispatch {
                dest: shard.id,
                msg: Box::new(ShardMsg::ChangeLogged {
                    reply,
                    entry,
                    recipients,
                    revoke,
                }),
            });
        }
        Err(e) => shard.internal(reply, &e),
    }
}

/// On the group's shard, once the change is durable in the log: hand it to the members
/// (like any entry), then revoke and answer.
pub fn change_logged(
    shard: &Rc<Shard>,
    reply: Reply,
    entry: pb::Event,
    recipients: Vec<u64>,
    revoke: Revoke,
) {
    shard.groups.fan_out(shard, &entry, &recipients);
    change_done(shard, reply, revoke);
}

/// On a member's shard, with a group entry: a deletion or an edit also rewrites this
/// shard's copy of the message, which the members' inboxes refer to. Staged.
pub fn stage_for_group_entry(shard: &Shard, entry: &pb::Event) {
    let Some(event::Kind::MessageChange(change)) = &entry.kind else {
        return;
    };
    if !matches!(
        change.kind(),
        MessageChangeKind::Deleted | MessageChangeKind::Edited
    ) {
        return;
    }
    if let Err(e) = shard.store.stage_group_copy_change(change) {
        tracing::error!(shard = shard.id, "changing a group message's copy: {e}");
    }
}

/// On the caller's shard: a group message the caller hid; their devices hear of it.
pub fn hide(shard: &Rc<Shard>, reply: Reply, user: u64, change: pb::MessageChange) {
    match append(shard, user, &change) {
        Ok(()) => shard.after_commit(AfterCommit::Answer {
            reply,
            body: Body::Done(pb::Done {}),
        }),
        Err(e) => shard.internal(reply, &e),
    }
}

/// The quoted message of a reply: it must be in the conversation and not deleted. On the
/// recipient's shard (1:1) or the group's (group).
pub fn check_reply(
    shard: &Shard,
    with: Conversation,
    me: u64,
    reply_to_us: u64,
) -> Result<(), (ErrorCode, String)> {
    let found = match with {
        Conversation::User(peer) => shard.store.history_message(me, peer, reply_to_us),
        Conversation::Group(group_id) => shard.store.group_message(group_id, reply_to_us),
    };
    match found {
        Ok(Some(m)) if !m.deleted => Ok(()),
        Ok(_) => Err((
            ErrorCode::MessageNotFound,
            "the message replied to is not in this conversation".into(),
        )),
        Err(e) => {
            tracing::error!(shard = shard.id, "reading a quoted message: {e}");
            Err((ErrorCode::Internal, "internal server error".into()))
        }
    }
}
