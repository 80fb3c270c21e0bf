//! The connections accepted on this shard: their state, the gatekeeping and routing of
//! their requests (`submit`), frames to them, and the sweeps that close them.

use super::*;
use crate::placement::UNSERVED;

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
    /// The shard its Login or Resume went to, which holds the session (a cluster moves
    /// users' slots between nodes: see `Shard::close_moved_sessions`).
    pub home: Cell<usize>,
    /// In a cluster, this connection's sends not answered yet (see
    /// `Shard::keeps_send_order`).
    pub sends: RefCell<UnansweredSends>,
}

/// A connection's sends not answered yet, and the shard each conversation's went to: a
/// send is checked and recorded in constant time however many are in flight (a client
/// may pipeline thousands within its rate limit).
#[derive(Debug, Default)]
pub struct UnansweredSends {
    by_request: HashMap<u64, Conversation>,
    /// Per conversation: the shard its unanswered sends went to, and how many there are.
    by_conversation: HashMap<Conversation, (usize, usize)>,
}

impl UnansweredSends {
    /// Records send `request_id` of `conversation` going to shard `dest`, unless an
    /// unanswered send of the same conversation went to another shard.
    pub fn admit(&mut self, request_id: u64, conversation: Conversation, dest: usize) -> bool {
        match self.by_conversation.get_mut(&conversation) {
            Some((to, _)) if *to != dest => return false,
            Some((_, count)) => *count += 1,
            None => {
                self.by_conversation.insert(conversation, (dest, 1));
            }
        }
        // A request id used again before its answer: the newer send takes its place.
        if let Some(earlier) = self.by_request.insert(request_id, conversation) {
            self.release(earlier);
        }
        true
    }

    /// Send `request_id` was answered; whether it was one of these.
    pub fn answered(&mut self, request_id: u64) -> bool {
        match self.by_request.remove(&request_id) {
            Some(conversation) => {
                self.release(conversation);
                true
            }
            None => false,
        }
    }

    fn release(&mut self, conversation: Conversation) {
        if let Some((_, count)) = self.by_conversation.get_mut(&conversation) {
            *count -= 1;
            if *count == 0 {
                self.by_conversation.remove(&conversation);
            }
        }
    }
}

impl ConnEntry {
    /// Sends `env` as the connection's last frame and ends it: the writer flushes it and
    /// closes, the reader stops waiting for the peer.
    pub fn close_with(&self, env: &Envelope) {
        self.out.push(env);
        self.out.close();
        self.stop.raise();
    }
}

/// How many requests may wait behind an in-flight login.
const MAX_DEFERRED: usize = 256;

impl Shard {
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
                self.place.user(user),
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

    /// Closes the logged-in connections whose user is now served by another shard than
    /// the one holding their session (their slot moved to another node): that session is
    /// gone with its node, and nothing would be pushed to them. The client reconnects
    /// and resumes, as after any `UNAVAILABLE`. A user whose slot has no node yet waits
    /// until it has one.
    pub fn close_moved_sessions(&self) {
        for entry in self.conns.borrow().values() {
            let Some(user) = entry.user.get() else {
                continue;
            };
            let now = self.place.user(user);
            if entry.out.is_closed() || now == entry.home.get() || now == UNSERVED {
                continue;
            }
            entry.close_with(&error_envelope(
                0,
                ErrorCode::Unavailable,
                "your account moved to another node; reconnect and resume",
            ));
        }
    }

    /// Closes every connection of this shard (shutdown), telling clients why.
    pub fn close_all_conns(&self) {
        for entry in self.conns.borrow().values() {
            entry.close_with(&error_envelope(
                0,
                ErrorCode::Unavailable,
                "server is shutting down",
            ));
        }
    }

    pub fn open_conns(&self) -> usize {
        self.conns.borrow().len()
    }

    pub(super) fn deliver_local(self: &Rc<Self>, conn_id: u64, auth: Auth, env: &Envelope) {
        let entry = self.conns.borrow().get(&conn_id).cloned();
        let Some(entry) = entry else {
            // The connection closed while its login was in flight: undo the session.
            if let Auth::LoggedIn(user) = auth {
                let conn = ConnRef {
                    shard: self.id,
                    id: conn_id,
                };
                self.dispatch(
                    self.place.user(user),
                    ShardMsg::SessionClosed { user, conn },
                );
            }
            return;
        };
        if self.replica.is_some()
            && env.request_id != 0
            && entry.sends.borrow_mut().answered(env.request_id)
            && is_unavailable(env)
        {
            // A send that failed this way: later ones must not overtake its resend.
            entry.close_with(env);
            return;
        }
        match auth {
            Auth::Unchanged => {}
            Auth::LoggedIn(user) => {
                entry.user.set(Some(user));
                entry.login_pending.set(false);
            }
            Auth::LoginFailed => entry.login_pending.set(false),
            Auth::LoggedOut => {
                // Logout already stopped acting for the user; a revoked device stops here.
                if let Some(user) = entry.user.take() {
                    let conn = ConnRef {
                        shard: self.id,
                        id: conn_id,
                    };
                    self.unwatch_all(&entry, conn, user);
                }
                entry.close_with(env);
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
        self.respond_auth(reply, Auth::Unchanged, body);
    }

    /// In a cluster, whether a send may go on to `dest` (and if so, it is remembered until
    /// answered). A conversation's node can change between two sends of a connection: the
    /// earlier one, sent to the old node, may then fail or be lost on the way while the
    /// later one is stored by the new node, out of order. So a send to another shard than
    /// an unanswered earlier send of the same conversation may not go on, and a send
    /// answered `UNAVAILABLE` ends the connection (`deliver_local`): the client resends,
    /// in order, on a new connection.
    fn keeps_send_order(
        &self,
        reply: &Reply,
        entry: &ConnEntry,
        req: &Request,
        dest: usize,
    ) -> bool {
        if self.replica.is_none() || req.has_unchecked_media() {
            return true; // A media send goes to its asset first, and holds the later ones.
        }
        let conversation = match req {
            Request::Send(send) => Conversation::User(send.to_user_id),
            Request::SendGroup(send) => Conversation::Group(send.group_id),
            _ => return true,
        };
        entry
            .sends
            .borrow_mut()
            .admit(reply.request_id, conversation, dest)
    }

    /// Answers a request. In a cluster, an answer given after a write made directly (not
    /// staged for the group commit) waits for the round that replicates that write.
    pub fn respond_auth(self: &Rc<Self>, reply: Reply, auth: Auth, body: Body) {
        if self.replica.is_some() && self.store.has_captured() {
            self.after_commit(AfterCommit::Reply { reply, auth, body });
            return;
        }
        self.answer_now(reply, auth, body);
    }

    /// Answers a request whose writes are durable (and replicated, in a cluster).
    pub(super) fn answer_now(self: &Rc<Self>, reply: Reply, auth: Auth, body: Body) {
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
        match (&req, user) {
            (Request::Ping { nonce }, _) => {
                let pong = Body::Pong(pb::Pong { nonce: *nonce });
                entry.out.push(&envelope(reply.request_id, pong));
                return;
            }
            (Request::Register { .. } | Request::Login { .. } | Request::Resume { .. }, _) => {}
            (_, None) => {
                return reject(ErrorCode::Unauthenticated, "log in (Login or Resume) first")
            }
            (Request::Logout, Some(me)) => {
                self.logging_out(entry, reply.conn, me);
            }
            (Request::SubscribePresence { user_ids }, Some(_)) => {
                entry.watching.borrow_mut().extend(user_ids.iter().copied());
            }
            _ => {}
        }
        let dest = self.route(&req, user);
        let send = matches!(req, Request::Send(_) | Request::SendGroup(_));
        if send && (dest == UNSERVED || !self.keeps_send_order(&reply, entry, &req, dest)) {
            // A send behind this one on the connection could reach a node that serves its
            // slot (again) and overtake it: the client resends both, in order, on a new
            // connection.
            let why = "that conversation's node is changing; reconnect and resend";
            entry.close_with(&error_envelope(
                reply.request_id,
                ErrorCode::Unavailable,
                why,
            ));
            return;
        }
        if matches!(req, Request::Login { .. } | Request::Resume { .. }) {
            entry.login_pending.set(true);
            // The session will be where this goes, whatever the map says by the answer.
            entry.home.set(dest);
        }
        self.dispatch(dest, ShardMsg::Request { reply, user, req });
    }

    /// The shard that runs `req` of `user` (a connection's request) as this shard sees
    /// the placement now: where `submit` sends it, and what the shard it reaches checks
    /// (`Shard::run_request`).
    pub fn route(&self, req: &Request, user: Option<u64>) -> usize {
        match (req, user) {
            (Request::Register { username, .. } | Request::Login { username, .. }, _) => {
                self.place.username(username)
            }
            (Request::Resume { token }, _) => crate::auth::token_user(token.expose())
                .map(|u| self.place.user(u))
                .unwrap_or(self.id),
            (Request::Ping { .. }, _) | (_, None) => self.id,
            (Request::Lookup { username }, Some(_)) => self.place.username(username),
            (Request::GetUser { user_id }, Some(_)) => self.place.user(*user_id),
            // Media is checked and shared on the asset's shard first (`cmd::share_media`).
            (Request::Send(send), Some(_)) => match &send.media {
                Some(a) if a.media.is_none() => self.place.asset(&a.asset_id),
                _ => self.place.user(send.to_user_id),
            },
            (Request::SendGroup(send), Some(_)) => match &send.media {
                Some(a) if a.media.is_none() => self.place.asset(&a.asset_id),
                _ => self.place.group(send.group_id),
            },
            // Fetching media seen in a group: the group's shard checks membership first.
            (Request::FetchAsset(fetch), Some(_)) => match fetch.group {
                Some(group_id) if !fetch.member_checked => self.place.group(group_id),
                _ => self.place.asset(&fetch.asset_id),
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
                | Request::LogoutAll
                | Request::ListDevices
                | Request::RevokeDevice { .. }
                | Request::Unblock { .. }
                | Request::ListBlocked
                | Request::RemoveContact { .. }
                | Request::ListContacts,
                Some(me),
            ) => self.place.user(me),
            // A 1:1 message's change starts where the caller's copy of it is; a group's where
            // the group's log is.
            (
                Request::DeleteMessage { target, .. }
                | Request::EditMessage { target, .. }
                | Request::React { target, .. },
                Some(me),
            ) => match target.with {
                Conversation::User(_) => self.place.user(me),
                Conversation::Group(group_id) => self.place.group(group_id),
            },
            // The user's shard says whether they exist, then the caller's keeps the list.
            (
                Request::Block {
                    user_id,
                    checked: false,
                }
                | Request::AddContact {
                    user_id,
                    checked: false,
                },
                Some(_),
            ) => self.place.user(*user_id),
            (
                Request::Block { checked: true, .. } | Request::AddContact { checked: true, .. },
                Some(me),
            ) => self.place.user(me),
            (Request::Logout | Request::SubscribePresence { .. }, Some(me)) => self.place.user(me),
            (
                Request::Typing {
                    with: Conversation::User(peer),
                    ..
                },
                Some(_),
            ) => self.place.user(*peer),
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
            ) => self.place.group(*group_id),
        }
    }

    /// On the connection's shard: the media check of a send is done. The send goes on (or
    /// its error to the client), then the sends held behind it, in order.
    pub(super) fn media_checked(
        self: &Rc<Self>,
        reply: Reply,
        result: Result<Request, (ErrorCode, String)>,
    ) {
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
}

fn is_unavailable(env: &Envelope) -> bool {
    matches!(&env.body, Some(Body::Error(e)) if e.code == ErrorCode::Unavailable as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conversation_keeps_its_shard_while_any_of_its_sends_is_unanswered() {
        let (alice, team) = (Conversation::User(7), Conversation::Group(9));
        let mut sends = UnansweredSends::default();
        assert!(sends.admit(1, alice, 0));
        assert!(sends.admit(2, alice, 0));
        assert!(
            sends.admit(3, team, 1),
            "another conversation goes where it goes"
        );
        assert!(
            !sends.admit(4, alice, 1),
            "alice's node changed under 1 and 2"
        );
        assert!(sends.answered(1));
        assert!(!sends.admit(5, alice, 1), "2 is still unanswered");
        assert!(sends.answered(2));
        assert!(!sends.answered(2), "answered once");
        assert!(!sends.answered(4), "refused sends are not recorded");
        assert!(
            sends.admit(6, alice, 1),
            "none unanswered: the new shard is fine"
        );
        // A request id used again: the newer send replaces the older one.
        assert!(sends.admit(3, alice, 1));
        assert!(sends.admit(7, team, 2), "team's only send (3) was replaced");
        assert!(sends.answered(3) && sends.answered(6) && sends.answered(7));
        assert!(sends.by_request.is_empty() && sends.by_conversation.is_empty());
    }
}
