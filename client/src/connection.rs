//! One TLS connection to chatd.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::BytesMut;
use chat_protocol::pb::{self, envelope::Body};
use chat_protocol::{encode_frame, envelope, FrameDecoder};
use crossbeam_channel::{bounded, unbounded, Receiver, RecvTimeoutError, Sender};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use crate::error::{ClientError, Result};

/// Frames the client accepts from the server (pushes can carry large texts).
const MAX_FRAME_BYTES: usize = 16 << 20;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting (TCP, then the TLS handshake) may take before the server counts as
/// not answering, so that a client with a list of servers moves on to the next one.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

type Pending = Arc<Mutex<HashMap<u64, Sender<pb::Envelope>>>>;

/// A blocking, thread-safe connection. Requests may be issued from several threads at
/// once (they are pipelined); pushes arrive on [`Connection::events`].
pub struct Connection {
    tls: Arc<Mutex<ClientConnection>>,
    socket: TcpStream,
    pending: Pending,
    closed: Arc<AtomicBool>,
    closed_rx: Receiver<()>,
    next_id: AtomicU64,
    events: Receiver<pb::Event>,
    unsolicited: Receiver<pb::Envelope>,
    timeout: Duration,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("peer", &self.socket.peer_addr().ok())
            .field("closed", &self.is_closed())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking holder cannot leave these structures half-updated in a harmful way.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn tls_err(e: impl std::fmt::Display) -> ClientError {
    ClientError::Tls(e.to_string())
}

impl Connection {
    /// Connects to `addr` (`HOST:PORT`) over TLS 1.3, trusting only the CA in `ca_pem`.
    /// The certificate must be valid for HOST. Connecting and the handshake each give up
    /// after [`CONNECT_TIMEOUT`].
    pub fn connect(addr: &str, ca_pem: &Path) -> Result<Connection> {
        let host = addr
            .rsplit_once(':')
            .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']'))
            .ok_or_else(|| ClientError::Protocol(format!("address {addr} is not HOST:PORT")))?;
        let name = ServerName::try_from(host.to_string()).map_err(tls_err)?;
        let mut tls = ClientConnection::new(tls_config(ca_pem)?, name).map_err(tls_err)?;
        let mut socket = connect_tcp(addr)?;
        socket.set_nodelay(true)?;
        // A server that accepts but never answers must not hold the client forever.
        socket.set_read_timeout(Some(CONNECT_TIMEOUT))?;
        socket.set_write_timeout(Some(CONNECT_TIMEOUT))?;
        while tls.is_handshaking() {
            tls.complete_io(&mut socket)?;
        }
        // From here on the reader thread blocks until the server sends or closes.
        socket.set_read_timeout(None)?;
        socket.set_write_timeout(None)?;
        let tls = Arc::new(Mutex::new(tls));
        let pending: Pending = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));
        let (events_tx, events) = unbounded();
        let (unsolicited_tx, unsolicited) = unbounded();
        let (closed_tx, closed_rx) = bounded(0);
        let reader = Reader {
            tls: tls.clone(),
            socket: socket.try_clone()?,
            pending: pending.clone(),
            closed: closed.clone(),
            events: events_tx,
            unsolicited: unsolicited_tx,
            _closed_tx: closed_tx,
        };
        std::thread::Builder::new()
            .name("chat-client-reader".into())
            .spawn(move || reader.run())?;
        Ok(Connection {
            tls,
            socket,
            pending,
            closed,
            closed_rx,
            next_id: AtomicU64::new(1),
            events,
            unsolicited,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// Connects to the first server of a comma-separated list (`a:7443,b:7443`) that
    /// answers, starting at a random entry (see [`crate::connect_first`]). One address
    /// works as [`Connection::connect`] does.
    pub fn connect_any(servers: &str, ca_pem: &Path) -> Result<Connection> {
        let list = crate::parse_servers(servers);
        let start = crate::servers::random_start(list.len());
        crate::connect_first(&list, ca_pem, start, |_| Ok(())).map(|(_, conn, ())| conn)
    }

    /// The address of the server this connection is to.
    pub fn peer_addr(&self) -> Option<std::net::SocketAddr> {
        self.socket.peer_addr().ok()
    }

    /// How long a request waits for its response (default 30 s).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Writes plaintext bytes over TLS as they are (tests use it to send broken frames).
    pub fn send_raw(&self, bytes: &[u8]) -> Result<()> {
        if self.is_closed() {
            return Err(ClientError::Closed);
        }
        let mut tls = lock(&self.tls);
        let mut socket = &self.socket;
        let mut rest = bytes;
        loop {
            // rustls buffers a bounded amount of plaintext (64 KiB): encrypt and send what
            // it took before handing it more.
            let taken = tls.writer().write(rest)?;
            rest = &rest[taken..];
            while tls.wants_write() {
                tls.write_tls(&mut socket)?;
            }
            if rest.is_empty() {
                return Ok(());
            }
            if taken == 0 {
                return Err(ClientError::Tls("TLS connection refuses more data".into()));
            }
        }
    }

    /// Sends one framed envelope without waiting for anything.
    pub fn send_envelope(&self, env: &pb::Envelope) -> Result<()> {
        let mut buf = BytesMut::new();
        encode_frame(env, &mut buf);
        self.send_raw(&buf)
    }

    /// Sends a request and waits for its response. An `Error` response becomes
    /// [`ClientError::Server`].
    pub fn request(&self, body: Body) -> Result<Body> {
        let rx = self.start(body)?;
        self.finish(rx)
    }

    /// Sends a request and returns where its response will arrive (for pipelining).
    pub fn start(&self, body: Body) -> Result<Receiver<pb::Envelope>> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = bounded(1);
        lock(&self.pending).insert(id, tx);
        if let Err(e) = self.send_envelope(&envelope(id, body)) {
            lock(&self.pending).remove(&id);
            return Err(e);
        }
        Ok(rx)
    }

    /// Waits for the response of a request sent with [`Connection::start`].
    pub fn finish(&self, rx: Receiver<pb::Envelope>) -> Result<Body> {
        let env = match rx.recv_timeout(self.timeout) {
            Ok(env) => env,
            Err(RecvTimeoutError::Timeout) => return Err(ClientError::Timeout),
            Err(RecvTimeoutError::Disconnected) => return Err(ClientError::Closed),
        };
        match env.body {
            Some(Body::Error(e)) => Err(ClientError::Server {
                code: e.code(),
                message: e.message,
            }),
            Some(body) => Ok(body),
            None => Err(ClientError::Protocol("response without a body".into())),
        }
    }

    pub fn register(&self, username: &str, password: &str) -> Result<u64> {
        let req = Body::Register(pb::Register {
            username: username.into(),
            password: password.into(),
        });
        match self.request(req)? {
            Body::Registered(r) => Ok(r.user_id),
            other => Err(unexpected(&other)),
        }
    }

    /// Logs in as a new device without a name (see [`Connection::login_device`]).
    pub fn login(&self, username: &str, password: &str) -> Result<pb::LoggedIn> {
        self.login_device(username, password, "")
    }

    /// Logs in with the password; the new token is a new device of the user, listed by
    /// [`Connection::list_devices`] under `device_name`.
    pub fn login_device(
        &self,
        username: &str,
        password: &str,
        device_name: &str,
    ) -> Result<pb::LoggedIn> {
        let req = Body::Login(pb::Login {
            username: username.into(),
            password: password.into(),
            device_name: device_name.into(),
        });
        match self.request(req)? {
            Body::LoggedIn(l) => Ok(l),
            other => Err(unexpected(&other)),
        }
    }

    pub fn resume(&self, token: &[u8]) -> Result<pb::LoggedIn> {
        let req = Body::Resume(pb::Resume {
            token: token.to_vec().into(),
        });
        match self.request(req)? {
            Body::LoggedIn(l) => Ok(l),
            other => Err(unexpected(&other)),
        }
    }

    pub fn lookup(&self, username: &str) -> Result<u64> {
        let req = Body::LookupUser(pb::LookupUser {
            username: username.into(),
        });
        match self.request(req)? {
            Body::UserFound(u) => Ok(u.user_id),
            other => Err(unexpected(&other)),
        }
    }

    /// The username of a user id.
    pub fn username(&self, user_id: u64) -> Result<String> {
        match self.request(Body::GetUser(pb::GetUser { user_id }))? {
            Body::UserFound(u) => Ok(u.username),
            other => Err(unexpected(&other)),
        }
    }

    /// Sends a text with a fresh random `client_msg_id`.
    pub fn send_message(&self, to_user_id: u64, text: &str) -> Result<pb::SendAck> {
        self.send_message_with_id(to_user_id, new_client_msg_id(), text)
    }

    /// Sends a text; retrying with the same `client_msg_id` stores it once.
    pub fn send_message_with_id(
        &self,
        to_user_id: u64,
        client_msg_id: u64,
        text: &str,
    ) -> Result<pb::SendAck> {
        let req = Body::SendMessage(pb::SendMessage {
            media: None,
            to_user_id,
            client_msg_id,
            text: text.into(),
            ..Default::default()
        });
        match self.request(req)? {
            Body::SendAck(a) => Ok(a),
            other => Err(unexpected(&other)),
        }
    }

    /// Starts the event stream after `after_seq` (None: the server's acked cursor) and waits
    /// until it caught up; returns the inbox head. Events arrive on [`Connection::events`],
    /// and every event up to the head is already queued there when this returns.
    pub fn sync(&self, after_seq: Option<u64>) -> Result<u64> {
        match self.request(Body::Sync(pb::Sync { after_seq }))? {
            Body::SyncDone(d) => Ok(d.head_seq),
            other => Err(unexpected(&other)),
        }
    }

    pub fn ack(&self, up_to_seq: u64) -> Result<u64> {
        match self.request(Body::Ack(pb::Ack { up_to_seq }))? {
            Body::Acked(a) => Ok(a.acked_seq),
            other => Err(unexpected(&other)),
        }
    }

    /// One page of history with `with_user_id`, oldest first (`before_timestamp_us` 0 =
    /// newest).
    pub fn history(
        &self,
        with_user_id: u64,
        before_timestamp_us: u64,
        limit: u32,
    ) -> Result<pb::Messages> {
        let req = Body::GetMessages(pb::GetMessages {
            with_user_id,
            before_timestamp_us,
            limit,
            group_id: 0,
        });
        match self.request(req)? {
            Body::Messages(m) => Ok(m),
            other => Err(unexpected(&other)),
        }
    }

    /// One page of a group's messages, oldest first (`before_timestamp_us` 0 = newest).
    pub fn group_history(
        &self,
        group_id: u64,
        before_timestamp_us: u64,
        limit: u32,
    ) -> Result<pb::Messages> {
        let req = Body::GetMessages(pb::GetMessages {
            with_user_id: 0,
            before_timestamp_us,
            limit,
            group_id,
        });
        match self.request(req)? {
            Body::Messages(m) => Ok(m),
            other => Err(unexpected(&other)),
        }
    }

    /// Creates a group with the caller as creator; returns it.
    pub fn create_group(&self, name: &str, member_ids: &[u64]) -> Result<pb::Group> {
        self.group_request(Body::CreateGroup(pb::CreateGroup {
            name: name.to_string(),
            member_ids: member_ids.to_vec(),
        }))
    }

    pub fn add_members(&self, group_id: u64, user_ids: &[u64]) -> Result<pb::Group> {
        self.group_request(Body::AddMembers(pb::AddMembers {
            group_id,
            user_ids: user_ids.to_vec(),
        }))
    }

    pub fn remove_member(&self, group_id: u64, user_id: u64) -> Result<pb::Group> {
        self.group_request(Body::RemoveMember(pb::RemoveMember { group_id, user_id }))
    }

    pub fn leave_group(&self, group_id: u64) -> Result<pb::Group> {
        self.group_request(Body::LeaveGroup(pb::LeaveGroup { group_id }))
    }

    pub fn rename_group(&self, group_id: u64, name: &str) -> Result<pb::Group> {
        self.group_request(Body::RenameGroup(pb::RenameGroup {
            group_id,
            name: name.to_string(),
        }))
    }

    pub fn get_group(&self, group_id: u64) -> Result<pb::Group> {
        self.group_request(Body::GetGroup(pb::GetGroup { group_id }))
    }

    /// Marks a 1:1 conversation read up to a seq of the caller's own inbox.
    pub fn mark_read(&self, with_user_id: u64, up_to_seq: u64) -> Result<()> {
        self.done(Body::MarkRead(pb::MarkRead {
            with_user_id,
            group_id: 0,
            up_to_seq,
        }))
    }

    /// Marks a group read up to a group seq.
    pub fn mark_group_read(&self, group_id: u64, up_to_seq: u64) -> Result<()> {
        self.done(Body::MarkRead(pb::MarkRead {
            with_user_id: 0,
            group_id,
            up_to_seq,
        }))
    }

    /// Who has received and read a group message.
    pub fn get_receipts(&self, group_id: u64, seq: u64) -> Result<pb::Receipts> {
        match self.request(Body::GetReceipts(pb::GetReceipts { group_id, seq }))? {
            Body::Receipts(r) => Ok(r),
            other => Err(unexpected(&other)),
        }
    }

    /// Changes settings (None = unchanged); returns them all.
    pub fn set_settings(
        &self,
        read_receipts: Option<bool>,
        presence_visibility: Option<pb::PresenceVisibility>,
    ) -> Result<pb::Settings> {
        let req = pb::SetSettings {
            push_previews: None,
            read_receipts,
            presence_visibility: presence_visibility.map(|v| v as i32),
        };
        match self.request(Body::SetSettings(req))? {
            Body::Settings(s) => Ok(s),
            other => Err(unexpected(&other)),
        }
    }

    /// Presence of `user_ids` now, and PresenceUpdate pushes while this connection lasts
    /// (see [`Connection::unsolicited`]).
    pub fn subscribe_presence(&self, user_ids: &[u64]) -> Result<Vec<pb::Presence>> {
        let req = Body::SubscribePresence(pb::SubscribePresence {
            user_ids: user_ids.to_vec(),
        });
        self.presence_request(req)
    }

    /// Presence of `user_ids` now.
    pub fn get_presence(&self, user_ids: &[u64]) -> Result<Vec<pb::Presence>> {
        let req = Body::GetPresence(pb::GetPresence {
            user_ids: user_ids.to_vec(),
        });
        self.presence_request(req)
    }

    fn presence_request(&self, body: Body) -> Result<Vec<pb::Presence>> {
        match self.request(body)? {
            Body::PresenceSnapshot(s) => Ok(s.users),
            other => Err(unexpected(&other)),
        }
    }

    /// Tells a user (`group_id` 0) or a group (`to_user_id` 0) that the caller is typing.
    pub fn typing(&self, to_user_id: u64, group_id: u64, typing: bool) -> Result<()> {
        self.done(Body::Typing(pb::Typing {
            to_user_id,
            group_id,
            typing,
        }))
    }

    fn done(&self, body: Body) -> Result<()> {
        match self.request(body)? {
            Body::Done(_) => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    fn group_request(&self, body: Body) -> Result<pb::Group> {
        match self.request(body)? {
            Body::GroupInfo(pb::GroupInfo { group: Some(g) }) => Ok(g),
            other => Err(unexpected(&other)),
        }
    }

    /// Sends a text to a group; returns the ack (seq = group seq) once it is durable.
    pub fn send_group_message(
        &self,
        group_id: u64,
        client_msg_id: u64,
        text: &str,
    ) -> Result<pb::SendAck> {
        let req = Body::SendGroupMessage(pb::SendGroupMessage {
            media: None,
            group_id,
            client_msg_id,
            text: text.to_string(),
            ..Default::default()
        });
        match self.request(req)? {
            Body::SendAck(a) => Ok(a),
            other => Err(unexpected(&other)),
        }
    }

    /// Registers this device's push token: while the user has no connection, new
    /// messages are announced to it through the server's push gateway.
    pub fn register_push_token(&self, platform: pb::PushPlatform, token: &str) -> Result<()> {
        self.done(Body::RegisterPushToken(pb::RegisterPushToken {
            platform: platform as i32,
            token: token.into(),
        }))
    }

    /// Removes a push token (for example at logout); an unknown token is not an error.
    pub fn unregister_push_token(&self, token: &str) -> Result<()> {
        self.done(Body::UnregisterPushToken(pb::UnregisterPushToken {
            token: token.into(),
        }))
    }

    pub fn ping(&self) -> Result<()> {
        let nonce = rand::random();
        match self.request(Body::Ping(pb::Ping { nonce }))? {
            Body::Pong(p) if p.nonce == nonce => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Revokes the token this connection logged in with (Resume with it fails from now
    /// on). The server closes the connection after answering.
    pub fn logout(&self) -> Result<()> {
        self.done(Body::Logout(pb::Logout {}))
    }

    /// Revokes every session token of the user, on all devices. Open connections stay
    /// open (this one too) until they close; logging in again needs the password.
    pub fn logout_all(&self) -> Result<()> {
        self.done(Body::LogoutAll(pb::LogoutAll {}))
    }

    /// The user's devices (one per token not revoked), most recently active first.
    pub fn list_devices(&self) -> Result<Vec<pb::Device>> {
        match self.request(Body::ListDevices(pb::ListDevices {}))? {
            Body::Devices(d) => Ok(d.devices),
            other => Err(unexpected(&other)),
        }
    }

    /// Logs a device of the user out: its token is revoked, its connections closed.
    pub fn revoke_device(&self, device_id: u64) -> Result<()> {
        self.done(Body::RevokeDevice(pb::RevokeDevice { device_id }))
    }

    /// Blocks a user: their 1:1 messages are refused, their typing dropped, and they no
    /// longer see the caller's presence.
    pub fn block(&self, user_id: u64) -> Result<()> {
        self.done(Body::Block(pb::Block { user_id }))
    }

    pub fn unblock(&self, user_id: u64) -> Result<()> {
        self.done(Body::Unblock(pb::Unblock { user_id }))
    }

    /// The users the caller blocked, most recent first.
    pub fn list_blocked(&self) -> Result<Vec<pb::ListedUser>> {
        self.user_list(Body::ListBlocked(pb::ListBlocked {}))
    }

    /// Adds a user to the caller's contact list.
    pub fn add_contact(&self, user_id: u64) -> Result<()> {
        self.done(Body::AddContact(pb::AddContact { user_id }))
    }

    pub fn remove_contact(&self, user_id: u64) -> Result<()> {
        self.done(Body::RemoveContact(pb::RemoveContact { user_id }))
    }

    /// The caller's contact list, most recent first.
    pub fn list_contacts(&self) -> Result<Vec<pb::ListedUser>> {
        self.user_list(Body::ListContacts(pb::ListContacts {}))
    }

    fn user_list(&self, body: Body) -> Result<Vec<pb::ListedUser>> {
        match self.request(body)? {
            Body::UserList(l) => Ok(l.users),
            other => Err(unexpected(&other)),
        }
    }

    /// Sends a 1:1 text that replies to the message `reply_to_us` (its id, `timestamp_us`)
    /// of the conversation.
    pub fn send_reply(&self, to_user_id: u64, reply_to_us: u64, text: &str) -> Result<pb::SendAck> {
        let req = Body::SendMessage(pb::SendMessage {
            to_user_id,
            client_msg_id: new_client_msg_id(),
            text: text.into(),
            media: None,
            reply_to_us,
        });
        match self.request(req)? {
            Body::SendAck(a) => Ok(a),
            other => Err(unexpected(&other)),
        }
    }

    /// Sends a group text that replies to the group's message `reply_to_us`.
    pub fn send_group_reply(
        &self,
        group_id: u64,
        reply_to_us: u64,
        text: &str,
    ) -> Result<pb::SendAck> {
        let req = Body::SendGroupMessage(pb::SendGroupMessage {
            group_id,
            client_msg_id: new_client_msg_id(),
            text: text.into(),
            media: None,
            reply_to_us,
        });
        match self.request(req)? {
            Body::SendAck(a) => Ok(a),
            other => Err(unexpected(&other)),
        }
    }

    /// Deletes a message: for everyone (its sender, within the server's window) or only
    /// from the caller's own history.
    pub fn delete_message(&self, chat: Chat, message_us: u64, for_everyone: bool) -> Result<()> {
        self.done(Body::DeleteMessage(pb::DeleteMessage {
            message: Some(chat.message(message_us)),
            for_everyone,
        }))
    }

    /// Replaces the text of a message the caller sent (within the server's window).
    pub fn edit_message(&self, chat: Chat, message_us: u64, text: &str) -> Result<()> {
        self.done(Body::EditMessage(pb::EditMessage {
            message: Some(chat.message(message_us)),
            text: text.into(),
        }))
    }

    /// Sets the caller's reaction to a message; an empty `emoji` removes it.
    pub fn react(&self, chat: Chat, message_us: u64, emoji: &str) -> Result<()> {
        self.done(Body::React(pb::React {
            message: Some(chat.message(message_us)),
            emoji: emoji.into(),
        }))
    }

    /// Server pushes, in arrival order.
    pub fn events(&self) -> &Receiver<pb::Event> {
        &self.events
    }

    /// The next push; `None` on timeout, `Err(Closed)` once closed and drained.
    pub fn next_event(&self, timeout: Duration) -> Result<Option<pb::Event>> {
        match self.events.recv_timeout(timeout) {
            Ok(event) => Ok(Some(event)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(ClientError::Closed),
        }
    }

    /// Frames that answer no request of ours: ephemeral pushes (PresenceUpdate,
    /// TypingUpdate) and errors about undecodable frames.
    pub fn unsolicited(&self) -> &Receiver<pb::Envelope> {
        &self.unsolicited
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Waits until the server closes the connection; false on timeout.
    pub fn wait_closed(&self, timeout: Duration) -> bool {
        if self.is_closed() {
            return true;
        }
        // The reader drops its end of this channel when it stops.
        let _ = self.closed_rx.recv_timeout(timeout);
        self.is_closed()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let _ = self.socket.shutdown(Shutdown::Both);
    }
}

/// TCP to the first address `addr` resolves to that accepts within [`CONNECT_TIMEOUT`].
fn connect_tcp(addr: &str) -> Result<TcpStream> {
    let mut last = None;
    for resolved in addr.to_socket_addrs()? {
        match TcpStream::connect_timeout(&resolved, CONNECT_TIMEOUT) {
            Ok(socket) => return Ok(socket),
            Err(e) => last = Some(e),
        }
    }
    Err(last
        .unwrap_or_else(|| std::io::Error::other(format!("{addr} resolves to no address")))
        .into())
}

/// The TLS settings every client of chatd uses: TLS 1.3 only, trusting only the CA in
/// `ca_pem`. Shared with other clients (the load generator) so they cannot drift apart.
pub fn tls_config(ca_pem: &Path) -> Result<Arc<ClientConfig>> {
    let in_file = |e: &dyn std::fmt::Display| {
        tls_err(format!("CA certificate file {}: {e}", ca_pem.display()))
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem).map_err(|e| in_file(&e))? {
        roots
            .add(cert.map_err(|e| in_file(&e))?)
            .map_err(|e| in_file(&e))?;
    }
    if roots.is_empty() {
        return Err(in_file(&"no PEM certificate in it"));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

pub(crate) fn unexpected(body: &Body) -> ClientError {
    ClientError::Protocol(format!("unexpected response {body:?}"))
}

/// A conversation, as the caller sees it: the other user of a 1:1 chat, or a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chat {
    User(u64),
    Group(u64),
}

impl Chat {
    /// The conversation of a message, seen by `me`.
    pub fn of(me: u64, m: &pb::Message) -> Chat {
        if m.group_id != 0 {
            Chat::Group(m.group_id)
        } else if m.from_user_id == me {
            Chat::User(m.to_user_id)
        } else {
            Chat::User(m.from_user_id)
        }
    }

    /// Names the message with id (`timestamp_us`) `message_us` in this conversation.
    pub fn message(self, message_us: u64) -> pb::MessageRef {
        let (with_user_id, group_id) = match self {
            Chat::User(u) => (u, 0),
            Chat::Group(g) => (0, g),
        };
        pb::MessageRef {
            with_user_id,
            group_id,
            timestamp_us: message_us,
        }
    }
}

/// A random nonzero id for a new message.
pub fn new_client_msg_id() -> u64 {
    loop {
        let id: u64 = rand::random();
        if id != 0 {
            return id;
        }
    }
}

/// The reader thread: socket -> TLS -> frames -> responses, pushes, unsolicited frames.
struct Reader {
    tls: Arc<Mutex<ClientConnection>>,
    socket: TcpStream,
    pending: Pending,
    closed: Arc<AtomicBool>,
    events: Sender<pb::Event>,
    unsolicited: Sender<pb::Envelope>,
    _closed_tx: Sender<()>,
}

impl Reader {
    fn run(mut self) {
        let _ = self.read_loop();
        self.closed.store(true, Ordering::SeqCst);
        // Dropping the senders wakes every waiter with "closed".
        lock(&self.pending).clear();
    }

    fn read_loop(&mut self) -> Result<()> {
        let decoder = FrameDecoder::new(MAX_FRAME_BYTES);
        let mut net = vec![0u8; 64 * 1024];
        let mut plain = vec![0u8; 64 * 1024];
        let mut buf = BytesMut::new();
        loop {
            let n = self.socket.read(&mut net)?;
            if n == 0 {
                return Ok(());
            }
            let mut eof = false;
            {
                let mut tls = lock(&self.tls);
                let mut input = &net[..n];
                while !input.is_empty() {
                    tls.read_tls(&mut input)?;
                    let state = tls.process_new_packets().map_err(tls_err)?;
                    eof |= state.peer_has_closed();
                    loop {
                        match tls.reader().read(&mut plain) {
                            Ok(0) => {
                                eof = true;
                                break;
                            }
                            Ok(m) => buf.extend_from_slice(&plain[..m]),
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                            Err(e) => return Err(e.into()),
                        }
                    }
                }
                // Answer anything TLS itself wants to send (e.g. key updates).
                let mut socket = &self.socket;
                while tls.wants_write() {
                    tls.write_tls(&mut socket)?;
                }
            }
            while let Some(env) = decoder
                .decode(&mut buf)
                .map_err(|e| ClientError::Protocol(e.to_string()))?
            {
                self.route(env);
            }
            if eof {
                return Ok(());
            }
        }
    }

    fn route(&self, env: pb::Envelope) {
        if env.request_id != 0 {
            if let Some(tx) = lock(&self.pending).remove(&env.request_id) {
                let _ = tx.send(env);
                return;
            }
        }
        match env.body {
            Some(Body::Event(event)) if env.request_id == 0 => {
                let _ = self.events.send(event);
            }
            _ => {
                let _ = self.unsolicited.send(env);
            }
        }
    }
}
