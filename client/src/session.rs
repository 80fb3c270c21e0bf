//! A logged-in connection that survives disconnects: it reconnects with backoff, resumes with
//! its token and restarts the event stream from the server's acked cursor. Events it already
//! handed out (seq <= the last one) are dropped, so each is seen once.
//!
//! With several servers (the nodes of a cluster), the session starts at a random one and
//! reconnects to the one it was on first, then to the next ones of the list, skipping those
//! that refuse, do not answer or answer `UNAVAILABLE` (a cluster node whose data for the
//! account is moving), and resumes on whichever answers.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chat_protocol::pb;

use crate::{ClientError, Connection, Result};

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// `HOST:PORT`, or several separated by commas (`a:7443,b:7443,c:7443`): the nodes of
    /// a cluster, which all present the same TLS identity (one `ca`).
    pub server: String,
    pub ca: PathBuf,
    pub username: String,
    pub password: String,
    /// How this device is listed among the user's devices (may be empty).
    pub device_name: String,
}

#[derive(Debug)]
pub struct Session {
    creds: Credentials,
    /// `creds.server` as a list, and the index of the one `conn` is to.
    servers: Vec<String>,
    current: usize,
    conn: Connection,
    login: pb::LoggedIn,
    /// Highest seq handed out by `next_event`.
    last_seq: u64,
    /// Highest seq acked to the server.
    acked_seq: u64,
    last_ack: Instant,
}

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Acks are batched: at most one per this interval while events flow.
const ACK_INTERVAL: Duration = Duration::from_millis(100);

impl Session {
    /// Connects and logs in with the password: to one of the servers, starting at a random
    /// one and skipping those that refuse or time out.
    pub fn open(creds: Credentials) -> Result<Session> {
        let servers = crate::parse_servers(&creds.server);
        let start = crate::random_start(servers.len());
        let (current, conn, login) = crate::connect_first(&servers, &creds.ca, start, |c| {
            c.login_device(&creds.username, &creds.password, &creds.device_name)
        })?;
        Ok(Session {
            servers,
            current,
            last_seq: login.acked_seq,
            acked_seq: login.acked_seq,
            creds,
            conn,
            login,
            last_ack: Instant::now(),
        })
    }

    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    pub fn user_id(&self) -> u64 {
        self.login.user_id
    }

    /// The device this session logged in as.
    pub fn device_id(&self) -> u64 {
        self.login.device_id
    }

    /// Acks what was handed out, then logs this device out (its token is revoked), for a
    /// session that is not meant to be resumed later.
    pub fn logout(mut self) -> Result<()> {
        self.flush_ack()?;
        match self.conn.logout() {
            Ok(()) | Err(ClientError::Closed) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The address (as given in the list) of the server the session is connected to.
    pub fn server(&self) -> &str {
        &self.servers[self.current]
    }

    pub fn username(&self) -> &str {
        &self.creds.username
    }

    /// Starts the event stream. `after_seq` None resumes after the server's acked cursor.
    pub fn start_stream(&mut self, after_seq: Option<u64>) -> Result<u64> {
        if let Some(seq) = after_seq {
            self.last_seq = seq;
        }
        self.conn.sync(after_seq)
    }

    /// The next new event, reconnecting as needed. `None` when `timeout` passes idle (pending
    /// acks are flushed then).
    pub fn next_event(&mut self, timeout: Duration) -> Result<Option<pb::Event>> {
        loop {
            match self.conn.next_event(timeout) {
                Ok(Some(event)) if event.seq <= self.last_seq => continue,
                Ok(Some(event)) => {
                    self.last_seq = event.seq;
                    if self.last_ack.elapsed() >= ACK_INTERVAL {
                        self.flush_ack()?;
                    }
                    return Ok(Some(event));
                }
                Ok(None) => {
                    self.flush_ack()?;
                    return Ok(None);
                }
                Err(ClientError::Closed) => self.reconnect()?,
                Err(e) => return Err(e),
            }
        }
    }

    /// Acks everything handed out so far (call after processing, e.g. before exiting).
    pub fn flush_ack(&mut self) -> Result<()> {
        if self.last_seq > self.acked_seq {
            match self.conn.ack(self.last_seq) {
                Ok(seq) => self.acked_seq = seq,
                // Not acked now means re-delivered later and deduplicated then.
                Err(ClientError::Closed) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        self.last_ack = Instant::now();
        Ok(())
    }

    /// Reconnects with exponential backoff, resumes with the token and restarts the stream
    /// after the last event handed out.
    pub fn reconnect(&mut self) -> Result<()> {
        let mut delay = BACKOFF_MIN;
        loop {
            match self.try_reconnect() {
                Ok(()) => return Ok(()),
                Err(e) if !e.is_transient() => return Err(e),
                Err(e) => {
                    eprintln!("connection lost ({e}); retrying in {delay:?}");
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// One round over the servers: the current one first (a drop may have been the
    /// network's), then the next ones; Resume and Sync on the first that answers.
    fn try_reconnect(&mut self) -> Result<()> {
        let (token, after) = (&self.login.token, self.last_seq);
        let (current, conn, _) =
            crate::connect_first(&self.servers, &self.creds.ca, self.current, |c| {
                c.resume(token)?;
                c.sync(Some(after))
            })?;
        self.current = current;
        self.conn = conn;
        Ok(())
    }
}
