//! One shard's state and its message handling.
//!
//! A shard owns a RocksDB [`Store`], the connections accepted on it, and the sessions of the
//! users that live on it (`routing::shard_of_user`). Shards share nothing; they exchange
//! [`ShardMsg`]s, batched per destination. Everything here runs on the shard's own thread,
//! hence `Rc`/`RefCell` and no locks.
//!
//! Connections stay on the shard that accepted them and are proxied: a request is routed to
//! the shard that owns the data it touches, and responses and pushes come back as
//! [`ShardMsg::ToConn`]. Why proxying rather than moving the socket after login: see
//! docs/OPERATIONS.md ("Connections and shards").

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use chat_protocol::pb::{self, envelope::Body};
use chat_protocol::{envelope, error_envelope, Envelope, ErrorCode};
use chat_storage::Store;

use crate::clock::Clock;
use crate::cmd;
use crate::groups::{self, Groups};
use crate::metrics::ShardMetrics;
use crate::placement::Placement;
use crate::presence::PresenceHub;
use crate::request::{Conversation, Request};
use crate::signal::{OutQueue, Signal};

mod conns;
mod replicate;

pub use conns::ConnEntry;
pub use replicate::ShardReplica;

/// A connection, named by the shard it lives on and its id there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnRef {
    pub shard: usize,
    pub id: u64,
}

/// Where a response goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    pub conn: ConnRef,
    pub request_id: u64,
}

/// What a response does to the connection's authentication state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    Unchanged,
    LoggedIn(u64),
    LoginFailed,
    /// Logout is answered: the connection is closed after this frame.
    LoggedOut,
}

/// Messages between shards. Sent in batches (`Vec<ShardMsg>`) per destination.
#[derive(Debug)]
pub enum ShardMsg {
    /// A validated request from a connection, for the shard that owns its data.
    Request {
        reply: Reply,
        user: Option<u64>,
        req: Request,
    },
    /// A frame for a connection on the destination shard.
    ToConn {
        conn: ConnRef,
        auth: Auth,
        env: Envelope,
    },
    /// The recipient's shard stored a message; the sender's shard records it and acks.
    Stored {
        reply: Reply,
        msg: pb::Message,
        duplicate: bool,
    },
    /// A connection of a user that lives on the destination shard went away.
    SessionClosed { user: u64, conn: ConnRef },
    /// A group's shard asks which of `ids` (users of the destination shard) do not exist.
    CheckUsers { op: u64, from: usize, ids: Vec<u64> },
    /// The answer to `CheckUsers`.
    UsersChecked { op: u64, missing: Vec<u64> },
    /// A durable group log entry for the destination shard's `members`.
    GroupDeliver {
        from: usize,
        entry: pb::Event,
        members: Vec<u64>,
    },
    /// The destination (the group's shard) learns that a member shard stored an entry.
    GroupDelivered { group_id: u64, seq: u64 },
    /// For the inbox of `to`, a user of the destination shard: some of their messages were
    /// delivered or read.
    Receipt { to: u64, receipt: pb::Receipt },
    /// For the shard of the users a presence request names.
    PresenceQuery(Box<crate::presence::PresenceQuery>),
    /// The answer, for the requester's shard.
    PresenceAnswer {
        op: u64,
        presences: Vec<pb::Presence>,
    },
    /// For the token's shard: `user` registered this push token; whoever had it before
    /// loses it (a device signed in to another account must not show the first one's
    /// notifications).
    PushTokenClaimed {
        token_hash: [u8; 32],
        token: String,
        user: u64,
    },
    /// For the user's shard: another user registered this token of theirs.
    PushTokenTaken { user: u64, token: String },
    /// For the shard of `conn`: tell shard `from` (with `Drained`) once the connection has
    /// written nearly everything queued for it; a catch-up paces itself on this.
    AwaitDrain {
        conn: ConnRef,
        from: usize,
        generation: u64,
    },
    /// The answer to `AwaitDrain`, for the stream of that generation.
    Drained { generation: u64 },
    /// For the shard of the connection: the media of its send was checked (`Ok`: the send,
    /// ready to be stored) or refused.
    MediaChecked {
        reply: Reply,
        result: Result<Request, (ErrorCode, String)>,
    },
    /// A connection that watched `targets` closed. Sent to the watcher's own shard, which
    /// forwards it to the targets' shards: the same path its SubscribePresence took, so it
    /// cannot overtake it.
    Unsubscribe {
        conn: ConnRef,
        targets: Vec<u64>,
        forward: bool,
    },
    /// A typing indication for members of a group who live on the destination shard.
    TypingFanout {
        from: u64,
        group_id: u64,
        typing: bool,
        members: Vec<u64>,
    },
    /// For a member's shard: the group's shard accepted the member's MarkRead; record the
    /// member's read marker and answer.
    GroupReadMarked {
        reply: Reply,
        member: u64,
        group_id: u64,
        up_to_seq: u64,
    },
    /// For the other participant's shard of a 1:1 message: apply a change made by the caller
    /// (`crate::changes`), then go on to `ChangeDone` on that shard.
    DirectChange {
        reply: Reply,
        change: pb::MessageChange,
        revoke: crate::changes::Revoke,
    },
    /// A message change is durable: revoke the grant of deleted media (if any), answer.
    ChangeDone {
        reply: Reply,
        revoke: crate::changes::Revoke,
    },
    /// On a group's shard, a change entry of the group log is durable: hand it to the
    /// members, then `ChangeDone`.
    ChangeLogged {
        reply: Reply,
        entry: pb::Event,
        recipients: Vec<u64>,
        revoke: crate::changes::Revoke,
    },
    /// For the asset's shard: end a grant (its message was deleted for everyone), answer.
    RevokeGrant {
        reply: Reply,
        asset_id: [u8; 16],
        grantee: chat_storage::Grantee,
    },
    /// For the user's shard: the user hid a group message; tell their devices, answer.
    Hide {
        reply: Reply,
        user: u64,
        change: pb::MessageChange,
    },
    /// For a group's shard: a member has received (`delivered`) and/or read (`read`) the
    /// group up to those group seqs (0 = no news). `reply` is answered for a MarkRead;
    /// `share_read` is false when the member turned read receipts off.
    GroupProgress {
        group_id: u64,
        member: u64,
        delivered: u64,
        read: u64,
        share_read: bool,
        reply: Option<Reply>,
    },
    /// For the shard that sent a `ToConn`: the connection is not there (it closed, or its
    /// node restarted and gave up every connection); end what still points at it.
    ConnGone { conn: ConnRef },
}

/// Work that waits for the shard's next group commit (see [`Shard::commit_staged`]).
#[derive(Debug)]
pub enum AfterCommit {
    /// A message staged in the recipient's inbox (and in the sender's history when
    /// `sender_recorded`: the sender lives on this shard too).
    StoredForRecipient {
        reply: Reply,
        msg: pb::Message,
        duplicate: bool,
        sender_recorded: bool,
    },
    /// A message staged in the sender's history.
    RecordedForSender {
        reply: Reply,
        msg: pb::Message,
        duplicate: bool,
    },
    /// On a group's shard: an answer to send and a log entry to hand to the members.
    GroupEntry {
        reply: Reply,
        answer: Body,
        entry: pb::Event,
        recipients: Vec<u64>,
    },
    /// An answer to send once staged writes are durable.
    Answer { reply: Reply, body: Body },
    /// An answer that changes the connection's state, sent once the writes made for it
    /// are replicated (`Shard::respond_auth`).
    Reply {
        reply: Reply,
        auth: Auth,
        body: Body,
    },
    /// A message for a shard (a request's next step) once staged writes are durable.
    Dispatch { dest: usize, msg: Box<ShardMsg> },
    /// An event appended to a user's inbox, to push once durable.
    Appended { user: u64, event: pb::Event },
    /// On a member shard: a group entry stored for local members (seq is the group seq).
    GroupDelivery {
        from: usize,
        group_id: u64,
        seq: u64,
        delivered: Vec<(u64, pb::Event)>,
    },
}

/// Limits applied to client input.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_frame_bytes: usize,
    pub max_text_bytes: usize,
    pub max_group_members: usize,
    pub login_timeout: Option<std::time::Duration>,
    pub idle_timeout: Option<std::time::Duration>,
    pub max_connections_per_user: usize,
    /// Requests per second and burst of one connection's token bucket; `None`: no limit.
    pub rate_limit: Option<(u32, u32)>,
    pub max_outbound_bytes: usize,
    /// How long after sending a message may be deleted for everyone, and edited; `None`: no
    /// limit.
    pub delete_window: Option<std::time::Duration>,
    pub edit_window: Option<std::time::Duration>,
    pub media: crate::config::MediaConfig,
    pub push: crate::config::PushConfig,
}

/// The event stream of one synced connection.
#[derive(Debug, Clone, Copy)]
pub struct Stream {
    /// Next seq this connection must receive.
    pub next_seq: u64,
    /// Caught up: new events are pushed as they are stored.
    pub live: bool,
    /// Bumped by every Sync, so a superseded catch-up task stops.
    pub generation: u64,
}

/// A logged-in connection of a user who lives on this shard.
#[derive(Debug)]
pub struct Session {
    pub conn: ConnRef,
    pub stream: Option<Stream>,
    /// SHA-256 of the token the connection logged in with (Logout revokes it).
    pub token_hash: [u8; 32],
}

pub struct Shard {
    pub id: usize,
    pub shards: usize,
    pub store: Store,
    pub clock: Clock,
    pub limits: Limits,
    /// Where keys live: this node's shards, or other nodes' (`crate::placement`).
    pub place: Placement,
    conns: RefCell<HashMap<u64, Rc<ConnEntry>>>,
    next_conn_id: Cell<u64>,
    sessions: RefCell<HashMap<u64, Vec<Session>>>,
    next_generation: Cell<u64>,
    outboxes: Vec<RefCell<Vec<ShardMsg>>>,
    outbox_ready: Vec<Signal>,
    /// Messages for shards of other nodes, by destination (in a cluster).
    remote_outbox: RefCell<std::collections::BTreeMap<usize, Vec<ShardMsg>>>,
    remote_ready: Signal,
    after_commit: RefCell<Vec<AfterCommit>>,
    commit_ready: Signal,
    pub groups: Groups,
    pub uploads: crate::media::Uploads,
    pub presence: Rc<PresenceHub>,
    /// Push notifications: settings, the dispatcher's wake-up, counters (`crate::push`).
    pub push: Rc<crate::push::Push>,
    /// Events pushed to online users and not yet acked (`crate::receipts::Ledger`).
    pub ledger: crate::receipts::Ledger,
    /// Catch-ups waiting for their connection to drain, by stream generation.
    pub drained: RefCell<HashMap<u64, Rc<Signal>>>,
    /// Decrypted bytes pass through here on their way to a connection's frame buffer.
    pub read_buf: RefCell<Vec<u8>>,
    /// Counters for the metrics endpoint, read by its thread (`crate::metrics`).
    pub metrics: Arc<ShardMetrics>,
    /// In a cluster: where this shard's writes are published (`shard/replicate.rs`).
    pub replica: Option<ShardReplica>,
}

impl Shard {
    pub fn new(
        id: usize,
        shards: usize,
        store: Store,
        limits: Limits,
        place: Placement,
        metrics: Arc<ShardMetrics>,
        replica: Option<ShardReplica>,
    ) -> Self {
        let push = Rc::new(crate::push::Push::new(
            id,
            &limits.push,
            metrics.push.clone(),
        ));
        Self {
            id,
            shards,
            store,
            clock: Clock::new(id, shards),
            limits,
            place,
            conns: RefCell::default(),
            // Random start: another node may still name a connection of this shard's last
            // run (a node that restarts within its lease), and must not reach a new one.
            next_conn_id: Cell::new(rand::random::<u64>() >> 2 | 1),
            sessions: RefCell::default(),
            next_generation: Cell::new(1),
            outboxes: (0..shards).map(|_| RefCell::default()).collect(),
            outbox_ready: (0..shards).map(|_| Signal::default()).collect(),
            remote_outbox: RefCell::default(),
            remote_ready: Signal::default(),
            after_commit: RefCell::default(),
            commit_ready: Signal::default(),
            groups: Groups::default(),
            uploads: Default::default(),
            presence: Rc::default(),
            push,
            ledger: Default::default(),
            drained: RefCell::default(),
            read_buf: RefCell::new(vec![0; crate::conn::READ_CHUNK]),
            metrics,
            replica,
        }
    }

    // ---- cross-shard plumbing ----

    /// Delivers `msg` to shard `dest` (`crate::placement`: this node's or another's):
    /// handled right away when it is this shard, otherwise queued for that shard's batch.
    /// Queue order is delivery order.
    pub fn dispatch(self: &Rc<Self>, dest: usize, msg: ShardMsg) {
        if dest == crate::placement::UNSERVED {
            let why = "that data's node is changing; retry shortly";
            self.refuse(msg, ErrorCode::Unavailable, why);
        } else if dest == self.id {
            self.handle(msg);
        } else if dest < self.shards {
            self.metrics.shard_messages_sent.inc();
            self.outboxes[dest].borrow_mut().push(msg);
            self.outbox_ready[dest].raise();
        } else {
            self.remote_outbox
                .borrow_mut()
                .entry(dest)
                .or_default()
                .push(msg);
            self.remote_ready.raise();
        }
    }

    /// Waits for, then takes, everything queued for other nodes, by destination.
    pub async fn next_remote_batches(&self) -> std::collections::BTreeMap<usize, Vec<ShardMsg>> {
        loop {
            let batches = std::mem::take(&mut *self.remote_outbox.borrow_mut());
            if !batches.is_empty() {
                return batches;
            }
            self.remote_ready.wait().await;
        }
    }

    /// Waits for, then takes, everything queued for shard `dest`.
    pub async fn next_outbound_batch(&self, dest: usize) -> Vec<ShardMsg> {
        loop {
            let batch = std::mem::take(&mut *self.outboxes[dest].borrow_mut());
            if !batch.is_empty() {
                return batch;
            }
            self.outbox_ready[dest].wait().await;
        }
    }

    pub fn handle(self: &Rc<Self>, msg: ShardMsg) {
        match msg {
            ShardMsg::Request { reply, user, req } => self.run_request(reply, user, req),
            ShardMsg::ToConn { conn, auth, env } => self.deliver_local(conn.id, auth, &env),
            ShardMsg::Stored {
                reply,
                msg,
                duplicate,
            } => cmd::send::stored(self, reply, msg, duplicate),
            ShardMsg::SessionClosed { user, conn } => self.end_session(user, conn),
            ShardMsg::ConnGone { conn } => self.forget_conns(|c| c == conn),
            ShardMsg::MediaChecked { reply, result } => self.media_checked(reply, result),
            ShardMsg::PushTokenClaimed {
                token_hash,
                token,
                user,
            } => match self.store.claim_push_token(&token_hash, user) {
                Ok(Some(previous)) => {
                    let msg = ShardMsg::PushTokenTaken {
                        user: previous,
                        token,
                    };
                    self.dispatch(self.place.user(previous), msg);
                }
                Ok(None) => {}
                Err(e) => tracing::error!(shard = self.id, "recording a push token's owner: {e}"),
            },
            ShardMsg::PushTokenTaken { user, token } => {
                if let Err(e) = self.store.remove_push_tokens(user, &[token]) {
                    tracing::error!(shard = self.id, "removing a push token: {e}");
                }
            }
            ShardMsg::AwaitDrain {
                conn,
                from,
                generation,
            } => {
                let shard = self.clone();
                let notify = move || shard.dispatch(from, ShardMsg::Drained { generation });
                let entry = self.conns.borrow().get(&conn.id).cloned();
                match entry {
                    Some(entry) => entry.out.when_drained(Box::new(notify)),
                    None => notify(),
                }
            }
            ShardMsg::Drained { generation } => {
                if let Some(go) = self.drained.borrow().get(&generation) {
                    go.raise();
                }
            }
            ShardMsg::CheckUsers { op, from, ids } => groups::check_users(self, op, from, ids),
            ShardMsg::UsersChecked { op, missing } => self.groups.users_checked(self, op, missing),
            ShardMsg::GroupDeliver {
                from,
                entry,
                members,
            } => groups::deliver(self, from, entry, members),
            ShardMsg::GroupDelivered { group_id, seq } => {
                self.groups.delivered(self, group_id, seq)
            }
            ShardMsg::PresenceQuery(q) => self.presence.answer(self, *q),
            ShardMsg::PresenceAnswer { op, presences } => {
                self.presence.answered(self, op, presences)
            }
            ShardMsg::Unsubscribe {
                conn,
                targets,
                forward: true,
            } => {
                for (dest, targets) in self.place.users_by_dest(targets) {
                    let forward = false;
                    self.dispatch(
                        dest,
                        ShardMsg::Unsubscribe {
                            conn,
                            targets,
                            forward,
                        },
                    );
                }
            }
            ShardMsg::Unsubscribe { conn, targets, .. } => {
                self.presence.unsubscribe(conn, &targets)
            }
            ShardMsg::TypingFanout {
                from,
                group_id,
                typing,
                members,
            } => crate::presence::push_typing(self, &members, from, group_id, typing),
            ShardMsg::Receipt { to, receipt } => crate::receipts::store(self, to, receipt),
            ShardMsg::GroupProgress {
                group_id,
                member,
                delivered,
                read,
                share_read,
                reply,
            } => crate::receipts::group_progress(
                self,
                crate::receipts::Progress {
                    group_id,
                    member,
                    delivered,
                    read: if share_read { read } else { 0 },
                    marker: read,
                },
                reply,
            ),
            ShardMsg::GroupReadMarked {
                reply,
                member,
                group_id,
                up_to_seq,
            } => crate::receipts::group_read_marked(self, reply, member, group_id, up_to_seq),
            ShardMsg::DirectChange {
                reply,
                change,
                revoke,
            } => crate::changes::direct_change(self, reply, change, revoke),
            ShardMsg::ChangeDone { reply, revoke } => {
                crate::changes::change_done(self, reply, revoke)
            }
            ShardMsg::ChangeLogged {
                reply,
                entry,
                recipients,
                revoke,
            } => crate::changes::change_logged(self, reply, entry, recipients, revoke),
            ShardMsg::RevokeGrant {
                reply,
                asset_id,
                grantee,
            } => crate::changes::revoke_grant(self, reply, asset_id, grantee),
            ShardMsg::Hide {
                reply,
                user,
                change,
            } => crate::changes::hide(self, reply, user, change),
        }
    }

    /// Runs a connection's request here, unless (in a cluster) this shard does not serve
    /// its data now: the node that routed it saw another slot map (a slot just moved, or
    /// this node is rebuilding or handing it over), and an answer from here, like "unknown
    /// token", would be wrong. The client retries.
    fn run_request(self: &Rc<Self>, reply: Reply, user: Option<u64>, req: Request) {
        if self.replica.is_some() && self.route(&req, user) != self.id {
            let why = "that data's node is changing; retry shortly";
            return self.fail_request(reply, &req, ErrorCode::Unavailable, why);
        }
        cmd::execute(self, reply, user, req)
    }

    /// Answers a connection's request with an error; a Login or Resume that fails this
    /// way leaves the connection logged out (and runs what waited behind it).
    fn fail_request(self: &Rc<Self>, reply: Reply, req: &Request, code: ErrorCode, why: &str) {
        let auth = if req.is_login() {
            Auth::LoginFailed
        } else {
            Auth::Unchanged
        };
        self.to_conn(
            reply.conn,
            auth,
            error_envelope(reply.request_id, code, why),
        );
    }

    // ---- group commit ----

    /// Queues work for after the next commit of the staged writes. Everything staged while
    /// the shard works through its ready tasks (a read's worth of frames, a batch from
    /// another shard) is committed together: one WAL write, one fsync in fsync mode.
    pub fn after_commit(&self, work: AfterCommit) {
        self.after_commit.borrow_mut().push(work);
        self.commit_ready.raise();
    }

    /// Asks for a commit of writes staged without follow-up work.
    pub fn want_commit(&self) {
        self.commit_ready.raise();
    }

    /// Waits until there is something to commit.
    pub async fn commit_wanted(&self) {
        self.commit_ready.wait().await;
    }

    /// Commits the staged writes, then finishes the work that waited for them, in order.
    /// (In a cluster the commit loop calls [`Shard::commit_replicated`] instead.)
    pub fn commit_staged(self: &Rc<Self>) {
        if let Some(work) = self.commit_local() {
            self.finish(work);
        }
    }

    /// Writes the staged batch; the work that waited for it, or `None` when the write
    /// failed (that work has been failed).
    fn commit_local(self: &Rc<Self>) -> Option<Vec<AfterCommit>> {
        let work = std::mem::take(&mut *self.after_commit.borrow_mut());
        let started = self.store.has_staged().then(Instant::now);
        let committed = self.store.commit();
        if let Some(started) = started {
            self.metrics
                .storage_commit_seconds
                .observe(started.elapsed());
        }
        match committed {
            Ok(()) => Some(work),
            Err(e) => {
                tracing::error!(
                    shard = self.id,
                    "group commit of {} sends failed: {e}",
                    work.len()
                );
                // Cached groups and uploads may hold changes that did not reach the disk.
                self.groups.forget_cached();
                self.uploads.forget_cached();
                self.fail_work(work, ErrorCode::Internal, "internal server error");
                None
            }
        }
    }

    /// Answers the requests behind `work` with an error instead of finishing it.
    fn fail_work(self: &Rc<Self>, work: Vec<AfterCommit>, code: ErrorCode, why: &str) {
        for item in work {
            match item {
                AfterCommit::StoredForRecipient { reply, .. }
                | AfterCommit::RecordedForSender { reply, .. }
                | AfterCommit::Answer { reply, .. }
                | AfterCommit::GroupEntry { reply, .. } => self.fail(reply, code, why),
                AfterCommit::Reply { reply, auth, .. } => {
                    // A login whose writes were not replicated: no session after all.
                    let auth = match auth {
                        Auth::LoggedIn(user) => {
                            self.end_session(user, reply.conn);
                            Auth::LoginFailed
                        }
                        other => other,
                    };
                    self.to_conn(
                        reply.conn,
                        auth,
                        error_envelope(reply.request_id, code, why),
                    );
                }
                AfterCommit::Dispatch { msg, .. } => self.refuse(*msg, code, why),
                // Unconfirmed: the group's shard hands the entry out again on restart.
                // A lost receipt is superseded by the next one (they are cumulative).
                AfterCommit::GroupDelivery { .. } | AfterCommit::Appended { .. } => {}
            }
        }
    }

    /// Answers the request behind a message that cannot go on with an error (a message
    /// that answers nobody is dropped).
    pub fn refuse(self: &Rc<Self>, msg: ShardMsg, code: ErrorCode, why: &str) {
        match msg {
            ShardMsg::Request { reply, req, .. } => self.fail_request(reply, &req, code, why),
            ShardMsg::Stored { reply, .. }
            | ShardMsg::DirectChange { reply, .. }
            | ShardMsg::ChangeDone { reply, .. }
            | ShardMsg::ChangeLogged { reply, .. }
            | ShardMsg::GroupReadMarked { reply, .. }
            | ShardMsg::RevokeGrant { reply, .. }
            | ShardMsg::Hide { reply, .. } => self.fail(reply, code, why),
            ShardMsg::GroupProgress {
                reply: Some(reply), ..
            } => self.fail(reply, code, why),
            ShardMsg::MediaChecked { reply, .. } => {
                let msg = ShardMsg::MediaChecked {
                    reply,
                    result: Err((code, why.into())),
                };
                self.dispatch(reply.conn.shard, msg);
            }
            _ => {}
        }
    }

    /// Finishes the work of a durable commit, in order.
    fn finish(self: &Rc<Self>, work: Vec<AfterCommit>) {
        for item in work {
            match item {
                AfterCommit::StoredForRecipient {
                    reply,
                    msg,
                    duplicate,
                    sender_recorded,
                } => {
                    if !duplicate {
                        self.metrics.messages_stored.inc();
                    }
                    cmd::send::durable_for_recipient(self, reply, msg, duplicate, sender_recorded)
                }
                AfterCommit::RecordedForSender {
                    reply,
                    msg,
                    duplicate,
                } => cmd::send::durable_for_sender(self, reply, &msg, duplicate),
                AfterCommit::Answer { reply, body } => {
                    self.answer_now(reply, Auth::Unchanged, body)
                }
                AfterCommit::Reply { reply, auth, body } => self.answer_now(reply, auth, body),
                AfterCommit::Dispatch { dest, msg } => self.dispatch(dest, *msg),
                AfterCommit::Appended { user, event } => self.on_appended(user, &event),
                AfterCommit::GroupEntry {
                    reply,
                    answer,
                    entry,
                    recipients,
                } => {
                    if matches!(entry.kind, Some(pb::event::Kind::Message(_))) {
                        self.metrics.messages_stored.inc();
                    }
                    self.groups
                        .entry_durable(self, reply, answer, &entry, &recipients);
                }
                AfterCommit::GroupDelivery {
                    from,
                    group_id,
                    seq,
                    delivered,
                } => {
                    for (member, event) in &delivered {
                        self.on_appended(*member, event);
                    }
                    self.dispatch(from, ShardMsg::GroupDelivered { group_id, seq });
                }
            }
        }
    }

    // ---- sessions of users living on this shard ----

    /// `token_hash`: the hash of the session token the connection logged in with.
    pub fn begin_session(self: &Rc<Self>, user: u64, conn: ConnRef, token_hash: [u8; 32]) {
        let first = {
            let mut sessions = self.sessions.borrow_mut();
            let list = sessions.entry(user).or_default();
            list.push(Session {
                conn,
                stream: None,
                token_hash,
            });
            list.len() == 1
        };
        self.metrics.sessions.inc();
        if first {
            self.metrics.users_online.inc();
            self.presence.came_online(self, user);
        }
    }

    pub fn end_session(self: &Rc<Self>, user: u64, conn: ConnRef) {
        let (last, device_idle) = {
            let mut sessions = self.sessions.borrow_mut();
            let Some(list) = sessions.get_mut(&user) else {
                return;
            };
            let before = list.len();
            let ended = list.iter().find(|s| s.conn == conn).map(|s| s.token_hash);
            list.retain(|s| s.conn != conn);
            self.metrics.sessions.sub((before - list.len()) as i64);
            let last = list.len() < before && list.is_empty();
            // The device's last connection closed: its last activity.
            let device_idle = ended.filter(|hash| list.iter().all(|s| s.token_hash != *hash));
            if list.is_empty() {
                sessions.remove(&user);
            }
            (last, device_idle)
        };
        if let Some(hash) = device_idle {
            crate::devices::went_idle(self, user, &hash);
        }
        if last {
            self.ledger.forget(user);
            self.metrics.users_online.dec();
            self.presence.went_offline(self, user);
        }
    }

    /// Ends the sessions and presence subscriptions of connections on nodes that left the
    /// cluster: their connections are gone with them, and no `SessionClosed` will come.
    pub fn forget_departed_nodes(self: &Rc<Self>) {
        self.forget_conns(|conn| self.place.node_departed(conn.shard));
    }

    /// Ends the sessions and presence subscriptions of the connections `gone` names.
    fn forget_conns(self: &Rc<Self>, gone: impl Fn(ConnRef) -> bool) {
        let ended: Vec<(u64, ConnRef)> = self
            .sessions
            .borrow()
            .iter()
            .flat_map(|(&user, list)| list.iter().map(move |s| (user, s.conn)))
            .filter(|&(_, conn)| gone(conn))
            .collect();
        for (user, conn) in ended {
            self.end_session(user, conn);
        }
        self.presence.unsubscribe_where(gone);
    }

    /// Whether connection `id` is open on this shard.
    pub fn has_conn(&self, id: u64) -> bool {
        self.conns.borrow().contains_key(&id)
    }

    /// The hash of the token `conn` logged in with, while its session lasts.
    pub fn session_token(&self, user: u64, conn: ConnRef) -> Option<[u8; 32]> {
        let sessions = self.sessions.borrow();
        let session = sessions.get(&user)?.iter().find(|s| s.conn == conn)?;
        Some(session.token_hash)
    }

    /// Logout, on the connection's shard: from here on the connection acts for nobody
    /// (later requests get UNAUTHENTICATED until it closes) and watches no one's presence.
    /// The user's shard then revokes the token, ends the session and answers; the answer
    /// closes the connection (`Auth::LoggedOut`).
    fn logging_out(self: &Rc<Self>, entry: &ConnEntry, conn: ConnRef, user: u64) {
        entry.user.set(None);
        self.unwatch_all(entry, conn, user);
    }

    /// Ends the connection's presence subscriptions, by the path they were made (through
    /// the watcher's shard, so the unsubscribe cannot overtake a subscribe).
    fn unwatch_all(self: &Rc<Self>, entry: &ConnEntry, conn: ConnRef, user: u64) {
        let targets = entry.watching.take();
        if !targets.is_empty() {
            let forward = true;
            let msg = ShardMsg::Unsubscribe {
                conn,
                targets,
                forward,
            };
            self.dispatch(self.place.user(user), msg);
        }
    }

    /// The connections logged in with the token whose hash is `token_hash` (one device).
    pub fn device_conns(&self, user: u64, token_hash: &[u8]) -> Vec<ConnRef> {
        self.sessions
            .borrow()
            .get(&user)
            .map(|list| {
                list.iter()
                    .filter(|s| s.token_hash[..] == *token_hash)
                    .map(|s| s.conn)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether the user (of this shard) has a logged-in connection.
    pub fn is_online(&self, user: u64) -> bool {
        self.sessions.borrow().contains_key(&user)
    }

    /// The connections of the user's sessions.
    pub fn session_conns(&self, user: u64) -> Vec<ConnRef> {
        self.sessions
            .borrow()
            .get(&user)
            .map(|list| list.iter().map(|s| s.conn).collect())
            .unwrap_or_default()
    }

    /// Restarts the stream of `conn` at `next_seq`; returns its new generation, or `None`
    /// when the connection has no session here (it closed).
    pub fn restart_stream(&self, user: u64, conn: ConnRef, next_seq: u64) -> Option<u64> {
        let generation = self.next_generation.get();
        self.next_generation.set(generation + 1);
        let mut sessions = self.sessions.borrow_mut();
        let session = sessions
            .get_mut(&user)?
            .iter_mut()
            .find(|s| s.conn == conn)?;
        session.stream = Some(Stream {
            next_seq,
            live: false,
            generation,
        });
        Some(generation)
    }

    /// The stream of `conn` if it is still the one of `generation`.
    pub fn stream(&self, user: u64, conn: ConnRef, generation: u64) -> Option<Stream> {
        let sessions = self.sessions.borrow();
        let stream = sessions
            .get(&user)?
            .iter()
            .find(|s| s.conn == conn)?
            .stream?;
        (stream.generation == generation).then_some(stream)
    }

    pub fn set_stream(&self, user: u64, conn: ConnRef, stream: Stream) {
        let mut sessions = self.sessions.borrow_mut();
        let found = sessions
            .get_mut(&user)
            .and_then(|list| list.iter_mut().find(|s| s.conn == conn));
        if let Some(session) = found {
            session.stream = Some(stream);
        }
    }

    /// A new event was stored in `user`'s inbox: push it to every live stream that is
    /// exactly at that seq. A stream that is behind is being caught up from storage and
    /// will read it there.
    pub fn on_appended(self: &Rc<Self>, user: u64, event: &pb::Event) {
        self.metrics.inbox_appended.inc();
        let mut pushes = Vec::new();
        {
            let mut sessions = self.sessions.borrow_mut();
            let Some(list) = sessions.get_mut(&user) else {
                return;
            };
            self.ledger.appended(user, event);
            for session in list.iter_mut() {
                let Some(stream) = session.stream.as_mut() else {
                    continue;
                };
                if stream.live && stream.next_seq == event.seq {
                    stream.next_seq += 1;
                    pushes.push(session.conn);
                }
            }
        }
        if matches!(event.kind, Some(pb::event::Kind::Message(_))) {
            self.metrics.messages_delivered.add(pushes.len() as u64);
        }
        for conn in pushes {
            let env = envelope(0, Body::Event(event.clone()));
            self.to_conn(conn, Auth::Unchanged, env);
        }
    }
}
