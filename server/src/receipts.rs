//! Receipts: delivered (a device of the recipient acked the message) and read (the
//! recipient sent MarkRead), each one cumulative ("everything up to seq N"), stored in the
//! sender's inbox and pushed to the sender's live sessions.
//!
//! 1:1 receipts go straight from the recipient's shard to the sender's. Group progress goes
//! to the group's shard, which keeps each member's marks (for GetReceipts) and sends a
//! receipt to every sender the new marks cover. Read receipts are dropped on the reader's
//! shard when the reader turned them off, and on the sender's when the sender did.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use chat_protocol::pb::{self, envelope::Body, event, ReceiptKind};
use chat_protocol::ErrorCode;

use crate::clock::Clock;
use crate::request::Conversation;
use crate::shard::{AfterCommit, Reply, Shard, ShardMsg};

/// Largest group whose members' progress is pushed to senders as receipts.
pub const MAX_GROUP_FOR_RECEIPT_PUSHES: usize = 256;

/// A member's news about a group, in group seqs (0 = none).
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub group_id: u64,
    pub member: u64,
    pub delivered: u64,
    /// Read up to here, shared with the senders (0 when the member does not share reads).
    pub read: u64,
    /// The member's own read position (MarkRead), shared or not.
    pub marker: u64,
}

/// Whether `user` (of this shard) sends and receives read receipts.
pub fn read_receipts_on(shard: &Shard, user: u64) -> bool {
    match shard.store.user(user) {
        Ok(Some(u)) => !u.read_receipts_off,
        _ => false,
    }
}

/// Sends a receipt to the shard of `to`. 1:1 receipts run on the shard of `by`, which
/// sends none to a user `by` blocked (docs/PROTOCOL.md 10.16).
pub fn send(shard: &Rc<Shard>, to: u64, by: u64, group_id: u64, kind: ReceiptKind, up_to: u64) {
    if group_id == 0 && crate::lists::blocked(shard, by, to) {
        return;
    }
    let receipt = pb::Receipt {
        by_user_id: by,
        group_id,
        kind: kind as i32,
        up_to_seq: up_to,
        timestamp_us: Clock::now_us(),
    };
    shard.dispatch(shard.place.user(to), ShardMsg::Receipt { to, receipt });
}

/// On the sender's shard: stores a receipt in the sender's inbox, then pushes it.
pub fn store(shard: &Rc<Shard>, to: u64, receipt: pb::Receipt) {
    if receipt.kind() == ReceiptKind::Read && !read_receipts_on(shard, to) {
        return;
    }
    match shard.store.stage_event(to, event::Kind::Receipt(receipt)) {
        Ok(event) => shard.after_commit(AfterCommit::Appended { user: to, event }),
        Err(e) => tracing::error!(shard = shard.id, "storing a receipt: {e}"),
    }
}

/// What acking an inbox event tells: whose 1:1 message or which group entry arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Covers {
    Direct { from: u64 },
    Group { group_id: u64, seq: u64 },
    Nothing,
}

impl Covers {
    fn of(user: u64, event: &pb::Event) -> Self {
        match &event.kind {
            Some(event::Kind::Message(m)) if m.group_id == 0 && m.from_user_id != user => {
                Covers::Direct {
                    from: m.from_user_id,
                }
            }
            Some(event::Kind::Message(pb::Message { group_id, seq, .. }))
            | Some(event::Kind::GroupChange(pb::GroupChange { group_id, seq, .. })) => {
                Covers::Group {
                    group_id: *group_id,
                    seq: *seq,
                }
            }
            _ => Covers::Nothing,
        }
    }
}

/// Most events a user's ledger keeps; a user who acks less often than that is read back
/// from the inbox instead.
const LEDGER_CAP: usize = 256;

/// The events appended for online users and not yet acked, with what they cover: an Ack
/// (usually a few ms after the push) finds its receipts here instead of reading the inbox
/// back from RocksDB.
#[derive(Debug, Default)]
pub struct Ledger {
    by_user: RefCell<HashMap<u64, VecDeque<(u64, Covers)>>>,
}

impl Ledger {
    /// An event appended to the inbox of `user`, who is online.
    pub fn appended(&self, user: u64, event: &pb::Event) {
        let mut by_user = self.by_user.borrow_mut();
        let list = by_user.entry(user).or_default();
        if list.len() == LEDGER_CAP {
            list.pop_front();
        }
        list.push_back((event.seq, Covers::of(user, event)));
    }

    /// The user's last session ended.
    pub fn forget(&self, user: u64) {
        self.by_user.borrow_mut().remove(&user);
    }

    /// Takes what events (`old`, `new`] cover, if the ledger holds every one of them.
    fn take(&self, user: u64, old: u64, new: u64) -> Option<Vec<(u64, Covers)>> {
        let mut by_user = self.by_user.borrow_mut();
        let list = by_user.get_mut(&user)?;
        while list.front().is_some_and(|&(seq, _)| seq <= old) {
            list.pop_front();
        }
        let end = list.partition_point(|&(seq, _)| seq <= new);
        // Seqs ascend without repeats, so first old + 1 and count new - old mean all of them.
        let complete =
            list.front().is_some_and(|&(seq, _)| seq == old + 1) && end as u64 == new - old;
        let covered: Vec<(u64, Covers)> = list.drain(..end).collect();
        complete.then_some(covered)
    }
}

/// On the user's shard, after an Ack moved their cursor from `old` to `new`: delivered
/// receipts for the 1:1 messages, progress for the groups, that the range covers.
pub fn acked(shard: &Rc<Shard>, user: u64, old: u64, new: u64) {
    let covered = match shard.ledger.take(user, old, new) {
        Some(covered) => covered,
        None => {
            let span = (new - old).min(chat_storage::RECEIPT_SCAN_LIMIT as u64);
            match shard.store.read_inbox(user, new - span, span as usize) {
                Ok(events) => events
                    .iter()
                    .map(|e| (e.seq, Covers::of(user, e)))
                    .collect(),
                Err(e) => return tracing::error!(shard = shard.id, "reading acked events: {e}"),
            }
        }
    };
    let mut senders: HashMap<u64, u64> = HashMap::new();
    let mut groups: HashMap<u64, u64> = HashMap::new();
    // Direct messages are noted by inbox seq (the receipt's up_to), groups by group seq.
    for (inbox_seq, covers) in covered {
        match covers {
            Covers::Direct { from } => {
                let at = senders.entry(from).or_default();
                *at = (*at).max(inbox_seq);
            }
            Covers::Group { group_id, seq } => {
                let at = groups.entry(group_id).or_default();
                *at = (*at).max(seq);
            }
            Covers::Nothing => {}
        }
    }
    for (sender, up_to) in senders {
        send(shard, sender, user, 0, ReceiptKind::Delivered, up_to);
    }
    for (group_id, delivered) in groups {
        shard.dispatch(
            shard.place.group(group_id),
            ShardMsg::GroupProgress {
                group_id,
                member: user,
                delivered,
                read: 0,
                share_read: false,
                reply: None,
            },
        );
    }
}

/// On a group's shard: records a member's marks and sends receipts to the senders of the
/// messages they newly cover. Answers `reply` (a MarkRead) with Done, or GROUP_NOT_FOUND
/// for a non-member.
pub fn group_progress(shard: &Rc<Shard>, p: Progress, reply: Option<Reply>) {
    let group = match shard.groups.visible_to(shard, p.group_id, p.member) {
        Ok(g) => g,
        Err((code, msg)) => {
            if let Some(reply) = reply {
                shard.fail(reply, code, msg);
            }
            return;
        }
    };
    if let Some(reply) = reply {
        match shard.store.group_head(p.group_id) {
            Ok(head) if p.marker > head => {
                let msg = format!(
                    "cannot mark seq {} read: the group head is {head}",
                    p.marker
                );
                return shard.fail(reply, ErrorCode::InvalidArgument, msg);
            }
            Ok(_) => {}
            Err(e) => return shard.internal(reply, &e),
        }
    }
    // In a big group every member's progress would be a receipt for the sender: there the
    // marks are kept for GetReceipts only.
    let push = group.members.len() <= MAX_GROUP_FOR_RECEIPT_PUSHES;
    // What a member has read they have received, whether or not they share reads.
    let delivered = p.delivered.max(p.marker);
    let old = match shard
        .store
        .advance_group_marks(p.group_id, p.member, delivered, p.read)
    {
        Ok(old) => old,
        Err(e) => {
            if let Some(reply) = reply {
                shard.internal(reply, &e);
            }
            return;
        }
    };
    for (kind, from, to) in [
        (ReceiptKind::Delivered, old.delivered, delivered),
        (ReceiptKind::Read, old.read, p.read),
    ] {
        if to <= from || !push {
            continue;
        }
        match shard.store.group_senders(p.group_id, from, to) {
            Ok(senders) => {
                for (sender, up_to) in senders {
                    if sender != p.member {
                        send(shard, sender, p.member, p.group_id, kind, up_to);
                    }
                }
            }
            Err(e) => tracing::error!(shard = shard.id, "finding group senders: {e}"),
        }
    }
    match reply {
        // A MarkRead: now that membership is confirmed, the member's own shard records its
        // read marker and answers.
        Some(reply) => shard.after_commit(AfterCommit::Dispatch {
            dest: shard.place.user(p.member),
            msg: Box::new(ShardMsg::GroupReadMarked {
                reply,
                member: p.member,
                group_id: p.group_id,
                up_to_seq: p.marker,
            }),
        }),
        None => shard.want_commit(),
    }
}

/// On the member's shard, after the group's shard accepted its MarkRead: the read marker
/// (which keeps push notifications for what was read elsewhere from being sent).
pub fn group_read_marked(shard: &Rc<Shard>, reply: Reply, member: u64, group_id: u64, up_to: u64) {
    let moved = shard
        .store
        .advance_read_marker(member, true, group_id, up_to)
        .and_then(|old| match old {
            Some(_) => stage_read_event(shard, member, Conversation::Group(group_id), up_to),
            None => Ok(()),
        });
    if let Err(e) = moved {
        return shard.internal(reply, &e);
    }
    shard.after_commit(AfterCommit::Answer {
        reply,
        body: Body::Done(pb::Done {}),
    });
}

/// A user's read position in a conversation moved (MarkRead): an event in their own inbox
/// for their other devices, pushed once durable. None when they have no other device.
pub fn stage_read_event(
    shard: &Rc<Shard>,
    user: u64,
    with: Conversation,
    up_to_seq: u64,
) -> Result<(), chat_storage::StorageError> {
    if !shard.store.has_several_devices(user)? {
        return Ok(());
    }
    let (with_user_id, group_id) = match with {
        Conversation::User(peer) => (peer, 0),
        Conversation::Group(group) => (0, group),
    };
    let marker = pb::ReadMarker {
        with_user_id,
        group_id,
        up_to_seq,
        timestamp_us: Clock::now_us(),
    };
    let event = shard.store.stage_event(user, event::Kind::Read(marker))?;
    shard.after_commit(AfterCommit::Appended { user, event });
    Ok(())
}

/// GetReceipts, on the group's shard: who has received and read message `seq`.
pub fn get(shard: &Rc<Shard>, reply: Reply, me: u64, group_id: u64, seq: u64) {
    let group = match shard.groups.visible_to(shard, group_id, me) {
        Ok(g) => g,
        Err((code, msg)) => return shard.fail(reply, code, msg),
    };
    let sender = match shard
        .store
        .group_senders(group_id, seq.saturating_sub(1), seq)
    {
        Ok(s) => s.into_keys().next(),
        Err(e) => return shard.internal(reply, &e),
    };
    let marks = match shard.store.group_marks(group_id) {
        Ok(m) => m,
        Err(e) => return shard.internal(reply, &e),
    };
    let members: std::collections::HashSet<u64> = group.members.iter().map(|m| m.user_id).collect();
    let mut receipts = pb::Receipts::default();
    for (member, m) in marks {
        if Some(member) == sender || !members.contains(&member) {
            continue;
        }
        if m.delivered >= seq {
            receipts.delivered_to.push(member);
        }
        if m.read >= seq {
            receipts.read_by.push(member);
        }
    }
    shard.respond(reply, Body::Receipts(receipts));
}
