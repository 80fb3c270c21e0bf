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
use crate::presence::PresenceHub;
use crate::request::{Conversation, Request};
use crate::routing::{
    shard_of_asset, shard_of_group, shard_of_user, shard_of_username, users_by_shard,
};
use crate::signal::{OutQueue, Signal};

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
}

/// Work that waits for the shard's next group commit (see [`Shard::commit_staged`]).
#[derive(Debug)]
pub enum AfterCommit {
    /// A message staged in the recipient's inbox.
    StoredForRecipient {
        reply: Reply,
        msg: pb::Message,
        duplicate: bool,
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
    pub media: crate::config::MediaConfig,
    pub push: crate::config::PushConfig,
}

/// A connection accepted on this shard.
#[derive(Debug, Default)]
pub struct ConnEntry {
    pub out: OutQueue,
    /// Raised at shutdown: the reader stops waiting for the peer.
    pub stop: Signal,
    pub user: Cell<Option<u64>>,
    pub login_pending: Cell<bool>,
    /// Requests pipelined behind an in-flight Login/Resume, run once it is answered.
    pub deferred: RefCell<Vec<(Reply, Request)>>,
    /// When the TLS handshake finished, and when the last bytes arrived from the client
    /// (for the login and idle timeouts).
    pub opened: Cell<Option<Instant>>,
    pub last_heard: Cell<Option<Instant>>,
    /// Some while the media of a send is checked on its asset's shard: the connection's
    /// later sends wait here, so they cannot overtake it (see `Shard::media_checked`).
    pub held_sends: RefCell<Option<Vec<(Reply, Request)>>>,
    /// Users whose presence this connection subscribed to (unsubscribed when it closes).
    pub watching: RefCell<Vec<u64>>,
}

/// How many requests may wait behind an in-flight login.
const MAX_DEFERRED: usize = 256;

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
    conns: RefCell<HashMap<u64, Rc<ConnEntry>>>,
    next_conn_id: Cell<u64>,
    sessions: RefCell<HashMap<u64, Vec<Session>>>,
    next_generation: Cell<u64>,
    outboxes: Vec<RefCell<Vec<ShardMsg>>>,
    outbox_ready: Vec<Signal>,
    after_commit: RefCell<Vec<AfterCommit>>,
    commit_ready: Signal,
    pub groups: Groups,
    pub uploads: crate::media::Uploads,
    pub presence: Rc<PresenceHub>,
    /// Push notifications: settings, the dispatcher's wake-up, counters (`crate::push`).
    pub push: Rc<crate::push::Push>,
    /// Catch-ups waiting for their connection to drain, by stream generation.
    pub drained: RefCell<HashMap<u64, Rc<Signal>>>,
    /// Decrypted bytes pass through here on their way to a connection's frame buffer.
    pub read_buf: RefCell<Vec<u8>>,
    /// Counters for the metrics endpoint, read by its thread (`crate::metrics`).
    pub metrics: Arc<ShardMetrics>,
}

impl Shard {
    pub fn new(
        id: usize,
        shards: usize,
        store: Store,
        limits: Limits,
        metrics: Arc<ShardMetrics>,
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
            conns: RefCell::default(),
            next_conn_id: Cell::new(1),
            sessions: RefCell::default(),
            next_generation: Cell::new(1),
            outboxes: (0..shards).map(|_| RefCell::default()).collect(),
            outbox_ready: (0..shards).map(|_| Signal::default()).collect(),
            after_commit: RefCell::default(),
            commit_ready: Signal::default(),
            groups: Groups::default(),
            uploads: Default::default(),
            presence: Rc::default(),
            push,
            drained: RefCell::default(),
            read_buf: RefCell::new(vec![0; crate::conn::READ_CHUNK]),
            metrics,
        }
    }

    // ---- cross-shard plumbing ----

    /// Delivers `msg` to shard `dest`: handled right away when it is this shard, otherwise
    /// queued for that shard's batch. Queue order is delivery order.
    pub fn dispatch(self: &Rc<Self>, dest: usize, msg: ShardMsg) {
        if dest == self.id {
            self.handle(msg);
        } else {
            self.metrics.shard_messages_sent.inc();
            self.outboxes[dest].borrow_mut().push(msg);
            self.outbox_ready[dest].raise();
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
            ShardMsg::Request { reply, user, req } => cmd::execute(self, reply, user, req),
            ShardMsg::ToConn { conn, auth, env } => self.deliver_local(conn.id, auth, &env),
            ShardMsg::Stored {
                reply,
                msg,
                duplicate,
            } => cmd::send::stored(self, reply, msg, duplicate),
            ShardMsg::SessionClosed { user, conn } => self.end_session(user, conn),
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
                    self.dispatch(shard_of_user(previous, self.shards), msg);
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
                for (dest, targets) in users_by_shard(targets, self.shards) {
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
        }
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
    pub fn commit_staged(self: &Rc<Self>) {
        let work = std::mem::take(&mut *self.after_commit.borrow_mut());
        let started = self.store.has_staged().then(Instant::now);
        let committed = self.store.commit();
        if let Some(started) = started {
            self.metrics
                .storage_commit_seconds
                .observe(started.elapsed());
        }
        if let Err(e) = committed {
            tracing::error!(
                shard = self.id,
                "group commit of {} sends failed: {e}",
                work.len()
            );
            // Cached groups and uploads may hold changes that did not reach the disk.
            self.groups.forget_cached();
            self.uploads.forget_cached();
            for item in work {
                match item {
                    AfterCommit::StoredForRecipient { reply, .. }
                    | AfterCommit::RecordedForSender { reply, .. }
                    | AfterCommit::Answer { reply, .. }
                    | AfterCommit::GroupEntry { reply, .. } => {
                        self.fail(reply, ErrorCode::Internal, "internal server error")
                    }
                    AfterCommit::Dispatch { msg, .. } => match *msg {
                        ShardMsg::Request { reply, .. } => {
                            self.fail(reply, ErrorCode::Internal, "internal server error")
                        }
                        ShardMsg::MediaChecked { reply, .. } => {
                            let failed = Err((ErrorCode::Internal, "internal server error".into()));
                            let msg = ShardMsg::MediaChecked {
                                reply,
                                result: failed,
                            };
                            self.dispatch(reply.conn.shard, msg);
                        }
                        _ => {}
                    },
                    // Unconfirmed: the group's shard hands the entry out again on restart.
                    // A lost receipt is superseded by the next one (they are cumulative).
                    AfterCommit::GroupDelivery { .. } | AfterCommit::Appended { .. } => {}
                }
            }
            return;
        }
        for item in work {
            match item {
                AfterCommit::StoredForRecipient {
                    reply,
                    msg,
                    duplicate,
                } => {
                    if !duplicate {
                        self.metrics.messages_stored.inc();
                    }
                    cmd::send::durable_for_recipient(self, reply, msg, duplicate)
                }
                AfterCommit::RecordedForSender {
                    reply,
                    msg,
                    duplicate,
                } => cmd::send::durable_for_sender(self, reply, &msg, duplicate),
                AfterCommit::Answer { reply, body } => self.respond(reply, body),
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
                    self.respond(reply, answer);
                    self.groups.fan_out(self, &entry, &recipients);
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

    // ---- connections on this shard ----

    pub fn open_conn(&self) -> (ConnRef, Rc<ConnEntry>) {
        let id = self.next_conn_id.get();
        self.next_conn_id.set(id + 1);
        let entry = Rc::new(ConnEntry::default());
        entry.opened.set(Some(Instant::now()));
        entry.last_heard.set(Some(Instant::now()));
        entry.out.meter.attach(self.metrics.clone());
        self.conns.borrow_mut().insert(id, entry.clone());
        (ConnRef { shard: self.id, id }, entry)
    }

    pub fn close_conn(self: &Rc<Self>, conn: ConnRef) {
        let entry = self.conns.borrow_mut().remove(&conn.id);
        if let Some(entry) = &entry {
            if let Some(user) = entry.user.get() {
                self.unwatch_all(entry, conn, user);
            }
        }
        if let Some(user) = entry.and_then(|e| e.user.get()) {
            self.dispatch(
                shard_of_user(user, self.shards),
                ShardMsg::SessionClosed { user, conn },
            );
        }
    }

    /// Closes the connections that did not log in in time or went silent, telling them
    /// why. Runs about once a second: cheaper than a timer per connection and read.
    pub fn sweep_timeouts(&self) {
        let now = Instant::now();
        let limits = &self.limits;
        for entry in self.conns.borrow().values() {
            if entry.out.is_closed() {
                continue; // already on its way out
            }
            let logged_in = entry.user.get().is_some() || entry.login_pending.get();
            let why = match (logged_in, limits.login_timeout, limits.idle_timeout) {
                (false, Some(t), _) if entry.opened.get().is_some_and(|at| now > at + t) => {
                    format!("no login within {} s", t.as_secs())
                }
                (_, _, Some(t)) if entry.last_heard.get().is_some_and(|at| now > at + t) => {
                    format!("nothing received for {} s", t.as_secs())
                }
                _ => continue,
            };
            tracing::debug!(shard = self.id, "closing a connection: {why}");
            entry.out.push(&error_envelope(0, ErrorCode::Timeout, why));
            entry.out.close();
        }
    }

    /// Closes every connection of this shard (shutdown), telling clients why.
    pub fn close_all_conns(&self) {
        for entry in self.conns.borrow().values() {
            entry.out.push(&error_envelope(
                0,
                ErrorCode::Unavailable,
                "server is shutting down",
            ));
            entry.out.close();
            entry.stop.raise();
        }
    }

    pub fn open_conns(&self) -> usize {
        self.conns.borrow().len()
    }

    fn deliver_local(self: &Rc<Self>, conn_id: u64, auth: Auth, env: &Envelope) {
        let entry = self.conns.borrow().get(&conn_id).cloned();
        let Some(entry) = entry else {
            // The connection closed while its login was in flight: undo the session.
            if let Auth::LoggedIn(user) = auth {
                let conn = ConnRef {
                    shard: self.id,
                    id: conn_id,
                };
                self.dispatch(
                    shard_of_user(user, self.shards),
                    ShardMsg::SessionClosed { user, conn },
                );
            }
            return;
        };
        match auth {
            Auth::Unchanged => {}
            Auth::LoggedIn(user) => {
                entry.user.set(Some(user));
                entry.login_pending.set(false);
            }
            Auth::LoginFailed => entry.login_pending.set(false),
            Auth::LoggedOut => {
                entry.out.push(env);
                entry.out.close();
                entry.stop.raise();
                return;
            }
        }
        entry.out.push(env);
        if auth != Auth::Unchanged {
            let deferred = std::mem::take(&mut *entry.deferred.borrow_mut());
            for (reply, req) in deferred {
                self.submit(reply, &entry, req);
            }
        }
    }

    /// Sends a frame to a connection on any shard.
    pub fn to_conn(self: &Rc<Self>, conn: ConnRef, auth: Auth, env: Envelope) {
        if conn.shard == self.id {
            self.deliver_local(conn.id, auth, &env);
        } else {
            self.dispatch(conn.shard, ShardMsg::ToConn { conn, auth, env });
        }
    }

    pub fn respond(self: &Rc<Self>, reply: Reply, body: Body) {
        self.to_conn(
            reply.conn,
            Auth::Unchanged,
            envelope(reply.request_id, body),
        );
    }

    pub fn respond_auth(self: &Rc<Self>, reply: Reply, auth: Auth, body: Body) {
        self.to_conn(reply.conn, auth, envelope(reply.request_id, body));
    }

    pub fn fail(self: &Rc<Self>, reply: Reply, code: ErrorCode, message: impl Into<String>) {
        let env = error_envelope(reply.request_id, code, message);
        self.to_conn(reply.conn, Auth::Unchanged, env);
    }

    pub fn internal(self: &Rc<Self>, reply: Reply, err: &dyn std::fmt::Display) {
        tracing::error!(shard = self.id, "internal error: {err}");
        self.fail(reply, ErrorCode::Internal, "internal server error");
    }

    /// Entry point for a decoded frame from a connection of this shard: gatekeeping
    /// (authentication state) here, then routing to the shard that owns the data.
    pub fn submit(self: &Rc<Self>, reply: Reply, entry: &ConnEntry, req: Request) {
        let user = entry.user.get();
        let reject = |code, msg: &str| {
            entry.out.push(&error_envelope(reply.request_id, code, msg));
        };
        if req.is_login() && (user.is_some() || entry.login_pending.get()) {
            let msg = "this connection is already authenticated";
            return reject(ErrorCode::AlreadyAuthenticated, msg);
        }
        if entry.login_pending.get() && !matches!(req, Request::Ping { .. }) {
            let mut deferred = entry.deferred.borrow_mut();
            if deferred.len() >= MAX_DEFERRED {
                return reject(
                    ErrorCode::Unavailable,
                    "too many requests behind a pending login",
                );
            }
            deferred.push((reply, req));
            return;
        }
        // A connection's sends keep their order: while the media of one is checked on its
        // asset's shard (a detour the others do not take), later ones wait.
        if user.is_some() && matches!(req, Request::Send(_) | Request::SendGroup(_)) {
            let mut held = entry.held_sends.borrow_mut();
            if let Some(queue) = held.as_mut() {
                if queue.len() >= MAX_DEFERRED {
                    drop(held);
                    return reject(
                        ErrorCode::Unavailable,
                        "too many sends behind a media check",
                    );
                }
                queue.push((reply, req));
                return;
            }
            if req.has_unchecked_media() {
                *held = Some(Vec::new());
            }
        }
        let dest = match (&req, user) {
            (Request::Ping { nonce }, _) => {
                let pong = Body::Pong(pb::Pong { nonce: *nonce });
                entry.out.push(&envelope(reply.request_id, pong));
                return;
            }
            (Request::Register { username, .. } | Request::Login { username, .. }, _) => {
                shard_of_username(username, self.shards)
            }
            (Request::Resume { token }, _) => crate::auth::token_user(token.expose())
                .map(|u| shard_of_user(u, self.shards))
                .unwrap_or(self.id),
            (_, None) => {
                return reject(ErrorCode::Unauthenticated, "log in (Login or Resume) first")
            }
            (Request::Lookup { username }, Some(_)) => shard_of_username(username, self.shards),
            (Request::GetUser { user_id }, Some(_)) => shard_of_user(*user_id, self.shards),
            // Media is checked and shared on the asset's shard first (`cmd::share_media`).
            (Request::Send(send), Some(_)) => match &send.media {
                Some(a) if a.media.is_none() => shard_of_asset(&a.asset_id, self.shards),
                _ => shard_of_user(send.to_user_id, self.shards),
            },
            (Request::SendGroup(send), Some(_)) => match &send.media {
                Some(a) if a.media.is_none() => shard_of_asset(&a.asset_id, self.shards),
                _ => shard_of_group(send.group_id, self.shards),
            },
            // Fetching media seen in a group: the group's shard checks membership first.
            (Request::FetchAsset(fetch), Some(_)) => match fetch.group {
                Some(group_id) if !fetch.member_checked => shard_of_group(group_id, self.shards),
                _ => shard_of_asset(&fetch.asset_id, self.shards),
            },
            (
                Request::Sync { .. }
                | Request::Ack { .. }
                | Request::History {
                    with: Conversation::User(_),
                    ..
                }
                | Request::MarkRead { .. }
                | Request::SetSettings { .. }
                | Request::GetPresence { .. }
                | Request::UploadStart(_)
                | Request::UploadChunk { .. }
                | Request::UploadFinish { .. }
                | Request::RegisterPushToken { .. }
                | Request::UnregisterPushToken { .. }
                | Request::LogoutAll,
                Some(me),
            ) => shard_of_user(me, self.shards),
            (Request::Logout, Some(me)) => self.logging_out(entry, reply.conn, me),
            (Request::SubscribePresence { user_ids }, Some(me)) => {
                entry.watching.borrow_mut().extend(user_ids.iter().copied());
                shard_of_user(me, self.shards)
            }
            (
                Request::Typing {
                    with: Conversation::User(peer),
                    ..
                },
                Some(_),
            ) => shard_of_user(*peer, self.shards),
            // A new group lives on the shard that creates it.
            (Request::CreateGroup { .. }, Some(_)) => self.id,
            (
                Request::AddMembers { group_id, .. }
                | Request::RemoveMember { group_id, .. }
                | Request::LeaveGroup { group_id }
                | Request::RenameGroup { group_id, .. }
                | Request::GetGroup { group_id }
                | Request::GetReceipts { group_id, .. }
                | Request::Typing {
                    with: Conversation::Group(group_id),
                    ..
                }
                | Request::History {
                    with: Conversation::Group(group_id),
                    ..
                },
                Some(_),
            ) => shard_of_group(*group_id, self.shards),
        };
        if matches!(req, Request::Login { .. } | Request::Resume { .. }) {
            entry.login_pending.set(true);
        }
        self.dispatch(dest, ShardMsg::Request { reply, user, req });
    }

    /// On the connection's shard: the media check of a send is done. The send goes on (or
    /// its error to the client), then the sends held behind it, in order.
    fn media_checked(self: &Rc<Self>, reply: Reply, result: Result<Request, (ErrorCode, String)>) {
        let Some(entry) = self.conns.borrow().get(&reply.conn.id).cloned() else {
            return; // Closed: the client resends what was not acked.
        };
        let held = entry.held_sends.take().unwrap_or_default();
        match result {
            Ok(req) => self.submit(reply, &entry, req),
            Err((code, msg)) => entry.out.push(&error_envelope(reply.request_id, code, msg)),
        }
        for (reply, req) in held {
            self.submit(reply, &entry, req);
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
        let last = {
            let mut sessions = self.sessions.borrow_mut();
            let Some(list) = sessions.get_mut(&user) else {
                return;
            };
            let before = list.len();
            list.retain(|s| s.conn != conn);
            self.metrics.sessions.sub((before - list.len()) as i64);
            let last = list.len() < before && list.is_empty();
            if list.is_empty() {
                sessions.remove(&user);
            }
            last
        };
        if last {
            self.metrics.users_online.dec();
            self.presence.went_offline(self, user);
        }
    }

    /// The hash of the token `conn` logged in with, while its session lasts.
    pub fn session_token(&self, user: u64, conn: ConnRef) -> Option<[u8; 32]> {
        let sessions = self.sessions.borrow();
        let session = sessions.get(&user)?.iter().find(|s| s.conn == conn)?;
        Some(session.token_hash)
    }

    /// Logout, on the connection's shard: from here on the connection acts for nobody
    /// (later requests get UNAUTHENTICATED until it closes) and watches no one's presence.
    /// Returns the user's shard, which revokes the token, ends the session and answers;
    /// the answer closes the connection (`Auth::LoggedOut`).
    fn logging_out(self: &Rc<Self>, entry: &ConnEntry, conn: ConnRef, user: u64) -> usize {
        entry.user.set(None);
        self.unwatch_all(entry, conn, user);
        shard_of_user(user, self.shards)
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
            self.dispatch(shard_of_user(user, self.shards), msg);
        }
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
