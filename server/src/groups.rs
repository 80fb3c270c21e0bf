//! Groups on their shard: the cached records, membership rules, the check that added users
//! exist (on their own shards), and the hand-out of every log entry to the members' shards.
//!
//! A group lives on `shard_of_group(group_id)`. Every message and membership change is an
//! entry of the group's log with the next group seq; once it is durable there, it is handed
//! to each member shard in one `GroupDeliver` per shard (not one per member), in log order
//! over the ordered shard-to-shard queue. The member shard stores the entry once and a
//! reference in each local member's inbox, then confirms with `GroupDelivered`; entries not
//! yet confirmed by every shard are handed out again after a restart (member shards skip
//! what they already have).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use chat_protocol::pb::{self, envelope::Body, event, GroupChangeKind, GroupRole};
use chat_protocol::ErrorCode;

use crate::shard::{AfterCommit, Reply, Shard, ShardMsg};

/// A group operation that waits for the member shards to confirm that its users exist.
#[derive(Debug)]
pub enum Pending {
    Create {
        reply: Reply,
        creator: u64,
        group_id: u64,
        name: String,
        members: Vec<u64>,
    },
    Add {
        reply: Reply,
        actor: u64,
        group_id: u64,
        user_ids: Vec<u64>,
    },
}

#[derive(Debug)]
struct Check {
    remaining: usize,
    missing: Vec<u64>,
    then: Pending,
}

/// This shard's groups and group work in flight.
#[derive(Debug, Default)]
pub struct Groups {
    cache: RefCell<HashMap<u64, Rc<pb::Group>>>,
    checks: RefCell<HashMap<u64, Check>>,
    next_check: Cell<u64>,
    /// (group, seq) -> member shards that have not confirmed the entry yet.
    unconfirmed: RefCell<HashMap<(u64, u64), usize>>,
    /// (group, seq) of a membership or name change -> its answer, sent once every member
    /// shard has stored the change (see [`Groups::entry_durable`]).
    answers: RefCell<HashMap<(u64, u64), (Reply, Body)>>,
}

/// Why a group operation was refused.
pub type Refusal = (ErrorCode, &'static str);

const NOT_FOUND: Refusal = (ErrorCode::GroupNotFound, "no such group");
const NOT_ADMIN: Refusal = (
    ErrorCode::PermissionDenied,
    "only the group's admins may do that",
);

pub fn role_of(group: &pb::Group, user: u64) -> Option<GroupRole> {
    group
        .members
        .iter()
        .find(|m| m.user_id == user)
        .map(|m| m.role())
}

pub fn is_admin(role: GroupRole) -> bool {
    matches!(role, GroupRole::Admin | GroupRole::Creator)
}

impl Groups {
    /// The group as `user` may see it: `None` for a missing group and for a non-member
    /// alike, so outsiders learn nothing.
    pub fn visible_to(
        &self,
        shard: &Shard,
        group_id: u64,
        user: u64,
    ) -> Result<Rc<pb::Group>, Refusal> {
        match self.load(shard, group_id) {
            Ok(Some(g)) if role_of(&g, user).is_some() => Ok(g),
            Ok(_) => Err(NOT_FOUND),
            Err(e) => {
                tracing::error!(shard = shard.id, "loading group {group_id}: {e}");
                Err((ErrorCode::Internal, "internal server error"))
            }
        }
    }

    /// The group if `user` is one of its admins.
    pub fn administered_by(
        &self,
        shard: &Shard,
        group_id: u64,
        user: u64,
    ) -> Result<Rc<pb::Group>, Refusal> {
        let group = self.visible_to(shard, group_id, user)?;
        match role_of(&group, user) {
            Some(role) if is_admin(role) => Ok(group),
            _ => Err(NOT_ADMIN),
        }
    }

    fn load(
        &self,
        shard: &Shard,
        group_id: u64,
    ) -> Result<Option<Rc<pb::Group>>, chat_storage::StorageError> {
        if let Some(g) = self.cache.borrow().get(&group_id) {
            return Ok(Some(g.clone()));
        }
        let Some(group) = shard.store.group(group_id)? else {
            return Ok(None);
        };
        let group = Rc::new(group);
        self.cache.borrow_mut().insert(group_id, group.clone());
        Ok(Some(group))
    }

    /// Drops every cached group, so the next use reads the disk (after a failed commit).
    pub fn forget_cached(&self) {
        self.cache.borrow_mut().clear();
    }

    pub fn exists(&self, shard: &Shard, group_id: u64) -> Result<bool, chat_storage::StorageError> {
        Ok(self.load(shard, group_id)?.is_some())
    }

    /// The group as a client sees it (with its current head seq).
    pub fn info(&self, shard: &Shard, group: &pb::Group) -> Body {
        let head_seq = shard
            .store
            .group_head(group.group_id)
            .unwrap_or(group.head_seq);
        Body::GroupInfo(pb::GroupInfo {
            group: Some(pb::Group {
                head_seq,
                ..group.clone()
            }),
        })
    }

    // ---- changes ----

    /// Stages a new version of the group and the change entry that explains it; once
    /// durable, answers `reply` with the new GroupInfo and hands the entry to `recipients`
    /// (for a removal, the members before it).
    #[allow(clippy::too_many_arguments)]
    pub fn change(
        &self,
        shard: &Rc<Shard>,
        reply: Reply,
        actor: u64,
        group: pb::Group,
        kind: GroupChangeKind,
        user_ids: Vec<u64>,
        recipients: Vec<u64>,
    ) {
        let change = pb::GroupChange {
            group_id: group.group_id,
            seq: 0,
            timestamp_us: 0,
            actor_user_id: actor,
            kind: kind as i32,
            user_ids,
            name: match kind {
                GroupChangeKind::Created | GroupChangeKind::Renamed => group.name.clone(),
                _ => String::new(),
            },
        };
        let staged = shard.store.stage_group(&group).and_then(|()| {
            shard.store.stage_group_entry(
                group.group_id,
                shard.clock.next(),
                event::Kind::GroupChange(change),
                None,
            )
        });
        // Recipients who are not members after the change (the one removed or leaving).
        let extras: Vec<u64> = recipients
            .iter()
            .copied()
            .filter(|r| role_of(&group, *r).is_none())
            .collect();
        let staged = staged.and_then(|entry| {
            if !extras.is_empty() {
                shard.store.stage_fanout_extras(&entry, &extras)?;
            }
            Ok(entry)
        });
        match staged {
            Ok(entry) => {
                let group = Rc::new(pb::Group {
                    head_seq: entry.seq,
                    ..group
                });
                self.cache
                    .borrow_mut()
                    .insert(group.group_id, group.clone());
                let answer = self.info(shard, &group);
                shard.after_commit(AfterCommit::GroupEntry {
                    reply,
                    answer,
                    entry,
                    recipients,
                });
            }
            Err(e) => {
                // The cached record may be ahead of the disk now: reload it next time.
                self.cache.borrow_mut().remove(&group.group_id);
                shard.internal(reply, &e);
            }
        }
    }

    // ---- checking that users exist ----

    /// Asks the shards of `user_ids` whether they exist, then runs `then` (see
    /// [`Groups::checked`]).
    pub fn check_users(&self, shard: &Rc<Shard>, user_ids: &[u64], then: Pending) {
        let by_shard = shard.place.users_by_dest(user_ids.iter().copied());
        let op = self.next_check.get();
        self.next_check.set(op + 1);
        self.checks.borrow_mut().insert(
            op,
            Check {
                remaining: by_shard.len(),
                missing: Vec::new(),
                then,
            },
        );
        if by_shard.is_empty() {
            return self.users_checked(shard, op, Vec::new());
        }
        for (dest, ids) in by_shard {
            shard.dispatch(
                dest,
                ShardMsg::CheckUsers {
                    op,
                    from: shard.id,
                    ids,
                },
            );
        }
    }

    /// One shard's answer to a [`Groups::check_users`]; runs the operation after the last.
    pub fn users_checked(&self, shard: &Rc<Shard>, op: u64, missing: Vec<u64>) {
        let done = {
            let mut checks = self.checks.borrow_mut();
            let Some(check) = checks.get_mut(&op) else {
                return;
            };
            check.missing.extend(missing);
            check.remaining = check.remaining.saturating_sub(1);
            if check.remaining > 0 {
                return;
            }
            checks.remove(&op)
        };
        if let Some(check) = done {
            self.checked(shard, check.missing, check.then);
        }
    }

    fn checked(&self, shard: &Rc<Shard>, mut missing: Vec<u64>, then: Pending) {
        let reply = match &then {
            Pending::Create { reply, .. } | Pending::Add { reply, .. } => *reply,
        };
        if !missing.is_empty() {
            missing.sort_unstable();
            return shard.fail(
                reply,
                ErrorCode::UserNotFound,
                format!("no such users: {missing:?}"),
            );
        }
        match then {
            Pending::Create {
                reply,
                creator,
                group_id,
                name,
                members,
            } => crate::cmd::create_group::create(shard, reply, creator, group_id, name, members),
            Pending::Add {
                reply,
                actor,
                group_id,
                user_ids,
            } => crate::cmd::add_members::add(shard, reply, actor, group_id, user_ids),
        }
    }

    // ---- handing entries to member shards ----

    /// A log entry is durable on the group's shard: hands it to the members. A message is
    /// acked at once; a change is answered once every member shard has stored it, so when
    /// the caller hears of it, every member's shard knows the new membership (presence
    /// counts group members as contacts, and asks their shards, not this one).
    pub fn entry_durable(
        &self,
        shard: &Rc<Shard>,
        reply: Reply,
        answer: Body,
        entry: &pb::Event,
        recipients: &[u64],
    ) {
        match (&entry.kind, chat_storage::group_of(entry)) {
            (Some(event::Kind::GroupChange(_)), Some(group_id)) => {
                self.answers
                    .borrow_mut()
                    .insert((group_id, entry.seq), (reply, answer));
            }
            _ => shard.respond(reply, answer),
        }
        self.fan_out(shard, entry, recipients);
    }

    /// Hands a durable log entry to the shards of `recipients`, one batch per shard.
    pub fn fan_out(&self, shard: &Rc<Shard>, entry: &pb::Event, recipients: &[u64]) {
        let Some(group_id) = chat_storage::group_of(entry) else {
            return;
        };
        let by_shard = shard.place.users_by_dest(recipients.iter().copied());
        if by_shard.is_empty() {
            return self.confirm_all(shard, group_id, entry.seq);
        }
        self.unconfirmed
            .borrow_mut()
            .insert((group_id, entry.seq), by_shard.len());
        // Ascending shard order: deterministic, and the local shard's part is not special.
        let mut dests: Vec<_> = by_shard.into_iter().collect();
        dests.sort_unstable_by_key(|(dest, _)| *dest);
        for (dest, members) in dests {
            shard.dispatch(
                dest,
                ShardMsg::GroupDeliver {
                    from: shard.id,
                    entry: entry.clone(),
                    members,
                },
            );
        }
    }

    /// A member shard has stored the entry.
    pub fn delivered(&self, shard: &Rc<Shard>, group_id: u64, seq: u64) {
        let all = {
            let mut unconfirmed = self.unconfirmed.borrow_mut();
            match unconfirmed.get_mut(&(group_id, seq)) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    false
                }
                Some(_) => {
                    unconfirmed.remove(&(group_id, seq));
                    true
                }
                None => false,
            }
        };
        if all {
            self.confirm_all(shard, group_id, seq);
        }
    }

    fn confirm_all(&self, shard: &Rc<Shard>, group_id: u64, seq: u64) {
        let answer = self.answers.borrow_mut().remove(&(group_id, seq));
        if let Some((reply, body)) = answer {
            shard.respond(reply, body);
        }
        match shard.store.stage_fanout_done(group_id, seq) {
            Ok(()) => shard.want_commit(),
            Err(e) => tracing::error!(shard = shard.id, "confirming group entry: {e}"),
        }
    }

    /// After a restart: hands out again every entry some member shard had not confirmed,
    /// to the group's current members and the entry's recorded extra recipients.
    pub fn resume_fanouts(&self, shard: &Rc<Shard>) {
        let pending = match shard.store.pending_fanouts() {
            Ok(p) => p,
            Err(e) => return tracing::error!(shard = shard.id, "reading pending fan-outs: {e}"),
        };
        if !pending.is_empty() {
            tracing::info!(
                shard = shard.id,
                entries = pending.len(),
                "resuming group fan-out"
            );
        }
        for (entry, extras) in pending {
            let Some(group_id) = chat_storage::group_of(&entry) else {
                continue;
            };
            // In a cluster the group's slot may be another node's by now: its log holds
            // the entry, and its owner hands it out.
            if shard.place.group(group_id) != shard.id {
                continue;
            }
            let mut recipients: Vec<u64> = match self.load(shard, group_id) {
                Ok(Some(g)) => g.members.iter().map(|m| m.user_id).collect(),
                _ => Vec::new(),
            };
            for extra in extras {
                if !recipients.contains(&extra) {
                    recipients.push(extra);
                }
            }
            self.fan_out(shard, &entry, &recipients);
        }
    }
}

/// On a member's shard: stores a group entry for the local `members` (once per shard).
pub fn deliver(shard: &Rc<Shard>, from: usize, entry: pb::Event, members: Vec<u64>) {
    let Some(group_id) = chat_storage::group_of(&entry) else {
        return;
    };
    match shard.store.stage_group_delivery(&entry, &members) {
        Ok(delivered) => {
            // A deletion or an edit also rewrites this shard's copy of the message (once:
            // a repeated hand-out delivers nothing).
            if !delivered.is_empty() {
                crate::changes::stage_for_group_entry(shard, &entry);
            }
            // In the same batch as the entry: notifications for offline members.
            crate::push::stage_for_group_entry(shard, &entry, &delivered);
            shard.after_commit(AfterCommit::GroupDelivery {
                from,
                group_id,
                seq: entry.seq,
                delivered,
            })
        }
        // Not confirmed: the group's shard hands it out again after its next restart.
        Err(e) => tracing::error!(shard = shard.id, "storing group entry: {e}"),
    }
}

/// Runs on a user shard: which of `ids` do not exist here.
pub fn check_users(shard: &Rc<Shard>, op: u64, from: usize, ids: Vec<u64>) {
    let missing = ids
        .into_iter()
        .filter(|&id| !shard.store.user_exists(id).unwrap_or(false))
        .collect();
    shard.dispatch(from, ShardMsg::UsersChecked { op, missing });
}
