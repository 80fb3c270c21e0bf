//! A logged-in connection that survives disconnects: it reconnects with backoff, resumes with
//! its token and restarts the event stream from the server's acked cursor. Events it already
//! handed out (seq <= the last one) are dropped, so each is seen once.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chat_protocol::pb;

use crate::{ClientError, Connection, Result};

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct Credentials {
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
    /// Connects and logs in with the password.
    pub fn open(creds: Credentials) -> Result<Session> {
        let conn = Connection::connect(&creds.server, &creds.ca)?;
        let login = conn.login_device(&creds.username, &creds.password, &creds.device_name)?;
        Ok(Session {
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
                Err(e @ ClientError::Server { .. }) => return Err(e),
                Err(e) => {
                    eprintln!("connection lost ({e}); retrying in {delay:?}");
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    fn try_reconnect(&mut self) -> Result<()> {
        let conn = Connection::connect(&self.creds.server, &self.creds.ca)?;
        conn.resume(&self.login.token)?;
        conn.sync(Some(self.last_seq))?;
        self.conn = conn;
        Ok(())
    }
}
