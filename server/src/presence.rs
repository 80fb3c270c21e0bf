//! Presence (online state and last seen) and typing: ephemeral, pushed only to connections
//! online now, never stored except last seen.
//!
//! A user's online state is the set of their sessions, in memory on their shard. Who may see
//! it is decided there too (the user's `PresenceVisibility`; "contacts" are the users in
//! their contact list and users with a 1:1 conversation, or a group in common, with them;
//! users they blocked see nothing). Subscriptions live on the watched user's
//! shard, keyed by the watching connection, and end with it. Going offline is announced
//! only after `OFFLINE_DEBOUNCE`, so a connection that drops and comes back at once causes
//! no updates at all.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use chat_protocol::envelope;
use chat_protocol::pb::{self, envelope::Body, PresenceVisibility};
use chat_storage::UserList;

use crate::clock::Clock;
use crate::runtime;
use crate::shard::{Auth, ConnRef, Reply, Shard, ShardMsg};

/// How long a user must stay offline before subscribers hear of it.
pub const OFFLINE_DEBOUNCE: Duration = Duration::from_secs(2);

/// Most users one SubscribePresence/GetPresence may name.
pub const MAX_PRESENCE_USERS: usize = 1000;

#[derive(Debug)]
struct Query {
    reply: Reply,
    order: Vec<u64>,
    remaining: usize,
    found: HashMap<u64, pb::Presence>,
}

/// A presence question for the shard of the users it names.
#[derive(Debug)]
pub struct PresenceQuery {
    pub op: u64,
    pub from: usize,
    pub viewer: u64,
    pub viewer_conn: ConnRef,
    pub viewer_groups: Vec<u64>,
    pub targets: Vec<u64>,
    pub subscribe: bool,
}

/// A subscription, with what is needed to check the watcher's right to see again.
#[derive(Debug, Clone)]
struct Watcher {
    conn: ConnRef,
    viewer: u64,
    viewer_groups: Rc<Vec<u64>>,
}

#[derive(Debug, Default)]
pub struct PresenceHub {
    /// watched user -> who watches, from which connection
    subscribers: RefCell<HashMap<u64, Vec<Watcher>>>,
    /// user -> the disconnect whose offline notice is waiting out the debounce
    going_offline: RefCell<HashMap<u64, u64>>,
    next_token: Cell<u64>,
    queries: RefCell<HashMap<u64, Query>>,
    next_query: Cell<u64>,
}

impl PresenceHub {
    /// On the viewer's shard: asks the shards of `targets`, answers `reply` once all have.
    pub fn query(
        &self,
        shard: &Rc<Shard>,
        reply: Reply,
        viewer: u64,
        targets: Vec<u64>,
        subscribe: bool,
    ) {
        let viewer_groups = match shard.store.user_groups(viewer) {
            Ok(g) => g,
            Err(e) => return shard.internal(reply, &e),
        };
        let by_shard = shard.place.users_by_dest(targets.iter().copied());
        let op = self.next_query.get();
        self.next_query.set(op + 1);
        self.queries.borrow_mut().insert(
            op,
            Query {
                reply,
                order: targets,
                remaining: by_shard.len(),
                found: HashMap::new(),
            },
        );
        if by_shard.is_empty() {
            return self.answered(shard, op, Vec::new());
        }
        for (dest, targets) in by_shard {
            let q = PresenceQuery {
                op,
                from: shard.id,
                viewer,
                viewer_conn: reply.conn,
                viewer_groups: viewer_groups.clone(),
                targets,
                subscribe,
            };
            shard.dispatch(dest, ShardMsg::PresenceQuery(Box::new(q)));
        }
    }

    /// On the targets' shard: their presence as the viewer may see it; subscribes.
    pub fn answer(&self, shard: &Rc<Shard>, q: PresenceQuery) {
        let mut presences = Vec::with_capacity(q.targets.len());
        let viewer_groups = Rc::new(q.viewer_groups);
        for target in q.targets {
            let visible = may_see(shard, target, q.viewer, &viewer_groups);
            if visible && q.subscribe {
                let mut subs = self.subscribers.borrow_mut();
                let list = subs.entry(target).or_default();
                if !list.iter().any(|w| w.conn == q.viewer_conn) {
                    list.push(Watcher {
                        conn: q.viewer_conn,
                        viewer: q.viewer,
                        viewer_groups: viewer_groups.clone(),
                    });
                }
            }
            presences.push(self.presence(shard, target, visible));
        }
        shard.dispatch(
            q.from,
            ShardMsg::PresenceAnswer {
                op: q.op,
                presences,
            },
        );
    }

    /// On the viewer's shard: one shard's answer; responds after the last.
    pub fn answered(&self, shard: &Rc<Shard>, op: u64, presences: Vec<pb::Presence>) {
        let done = {
            let mut queries = self.queries.borrow_mut();
            let Some(q) = queries.get_mut(&op) else {
                return;
            };
            q.found
                .extend(presences.into_iter().map(|p| (p.user_id, p)));
            q.remaining = q.remaining.saturating_sub(1);
            if q.remaining > 0 {
                return;
            }
            queries.remove(&op)
        };
        if let Some(mut q) = done {
            let users = q
                .order
                .iter()
                .map(|id| q.found.remove(id).unwrap_or_else(|| hidden(*id)))
                .collect();
            shard.respond(
                q.reply,
                Body::PresenceSnapshot(pb::PresenceSnapshot { users }),
            );
        }
    }

    fn presence(&self, shard: &Shard, user: u64, visible: bool) -> pb::Presence {
        if !visible {
            return hidden(user);
        }
        let online = shard.is_online(user);
        pb::Presence {
            user_id: user,
            online,
            last_seen_us: if online {
                0
            } else {
                shard.store.last_seen(user).unwrap_or(0)
            },
            hidden: false,
        }
    }

    /// A watching connection went away: forget its subscriptions to `targets`.
    /// Ends every subscription made from a connection `gone` says is gone (its node left
    /// the cluster).
    pub fn unsubscribe_where(&self, gone: impl Fn(ConnRef) -> bool) {
        let mut subs = self.subscribers.borrow_mut();
        subs.retain(|_, list| {
            list.retain(|w| !gone(w.conn));
            !list.is_empty()
        });
    }

    pub fn unsubscribe(&self, conn: ConnRef, targets: &[u64]) {
        let mut subs = self.subscribers.borrow_mut();
        for t in targets {
            if let Some(list) = subs.get_mut(t) {
                list.retain(|w| w.conn != conn);
                if list.is_empty() {
                    subs.remove(t);
                }
            }
        }
    }

    /// The user's first session began.
    pub fn came_online(&self, shard: &Rc<Shard>, user: u64) {
        // Back within the debounce: nobody heard they had left, so nobody hears they are back.
        if self.going_offline.borrow_mut().remove(&user).is_none() {
            self.notify(shard, user, true, 0);
        }
    }

    /// The user's last session ended.
    pub fn went_offline(self: &Rc<Self>, shard: &Rc<Shard>, user: u64) {
        let now = Clock::now_us();
        if let Err(e) = shard.store.set_last_seen(user, now) {
            tracing::error!(shard = shard.id, "recording last seen: {e}");
        }
        let token = self.next_token.get();
        self.next_token.set(token + 1);
        self.going_offline.borrow_mut().insert(user, token);
        let (hub, shard) = (self.clone(), shard.clone());
        runtime::spawn(async move {
            runtime::sleep(OFFLINE_DEBOUNCE).await;
            let still = hub.going_offline.borrow().get(&user) == Some(&token);
            if still {
                hub.going_offline.borrow_mut().remove(&user);
                hub.notify(&shard, user, false, now);
            }
        });
    }

    fn notify(&self, shard: &Rc<Shard>, user: u64, online: bool, last_seen_us: u64) {
        let subs = self
            .subscribers
            .borrow()
            .get(&user)
            .cloned()
            .unwrap_or_default();
        for w in subs {
            // Checked again at every update: the user may have hidden their presence since.
            if !may_see(shard, user, w.viewer, &w.viewer_groups) {
                continue;
            }
            let update = pb::PresenceUpdate {
                presence: Some(pb::Presence {
                    user_id: user,
                    online,
                    last_seen_us,
                    hidden: false,
                }),
            };
            shard.to_conn(
                w.conn,
                Auth::Unchanged,
                envelope(0, Body::PresenceUpdate(update)),
            );
        }
    }
}

fn hidden(user: u64) -> pb::Presence {
    pb::Presence {
        user_id: user,
        online: false,
        last_seen_us: 0,
        hidden: true,
    }
}

/// Whether `viewer` may see the presence of `target` (a user of this shard).
fn may_see(shard: &Shard, target: u64, viewer: u64, viewer_groups: &[u64]) -> bool {
    if target == viewer {
        return true;
    }
    let Ok(Some(user)) = shard.store.user(target) else {
        return false;
    };
    // Blocked users see nothing, whatever the setting.
    if crate::lists::blocked(shard, target, viewer) {
        return false;
    }
    let in_contact_list = || {
        shard
            .store
            .is_listed(UserList::Contacts, target, viewer)
            .unwrap_or(false)
    };
    match PresenceVisibility::try_from(user.presence_visibility) {
        Ok(PresenceVisibility::Everyone) => true,
        Ok(PresenceVisibility::Nobody) | Err(_) => false,
        Ok(PresenceVisibility::ContactList) => in_contact_list(),
        Ok(PresenceVisibility::Contacts) => {
            in_contact_list()
                || shard
                    .store
                    .has_conversation(target, viewer)
                    .unwrap_or(false)
                || shard
                    .store
                    .user_groups(target)
                    .map(|groups| groups.iter().any(|g| viewer_groups.contains(g)))
                    .unwrap_or(false)
        }
    }
}

/// Typing in a 1:1 conversation, on the recipient's shard; false when there is no such user.
pub fn typing_to_user(shard: &Rc<Shard>, from: u64, to: u64, typing: bool) -> bool {
    if !shard.store.user_exists(to).unwrap_or(false) {
        return false;
    }
    // From a user `to` blocked: accepted and dropped (Done promises nobody saw it).
    if !crate::lists::blocked(shard, to, from) {
        push_typing(shard, &[to], from, 0, typing);
    }
    true
}

/// Pushes a typing indication to the sessions of local `users` (except the typist).
pub fn push_typing(shard: &Rc<Shard>, users: &[u64], from: u64, group_id: u64, typing: bool) {
    let update = pb::TypingUpdate {
        from_user_id: from,
        group_id,
        typing,
    };
    for &user in users.iter().filter(|&&u| u != from) {
        for conn in shard.session_conns(user) {
            let env = envelope(0, Body::TypingUpdate(update));
            shard.to_conn(conn, Auth::Unchanged, env);
        }
    }
}
