//! Starting servers and logged-in clients for tests.

use std::path::PathBuf;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use chat_client::{pb, ClientError, Connection};
use chat_server::{Config, ServerHandle};

/// glommio locks memory per executor and the process limit is small: cap live servers.
static LIVE_SERVERS: Mutex<usize> = Mutex::new(0);
static SERVER_FREED: Condvar = Condvar::new();
const MAX_LIVE_SERVERS: usize = 3;

pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub shards: usize,
    handle: Option<ServerHandle>,
    addr: String,
    ca: PathBuf,
    tweak: fn(&mut Config),
}

impl TestServer {
    pub fn start(shards: usize) -> Self {
        Self::start_with(shards, |_| {}, |_| {})
    }

    /// A server whose configuration `tweak` adjusts, on a data directory that `prepare`
    /// may fill before the first start.
    pub fn start_with(
        shards: usize,
        tweak: fn(&mut Config),
        prepare: impl FnOnce(&std::path::Path),
    ) -> Self {
        {
            let mut live = LIVE_SERVERS.lock().unwrap();
            while *live >= MAX_LIVE_SERVERS {
                live = SERVER_FREED.wait(live).unwrap();
            }
            *live += 1;
        }
        let dir = tempfile::tempdir().unwrap();
        prepare(dir.path());
        let mut server = TestServer {
            dir,
            shards,
            handle: None,
            addr: String::new(),
            ca: PathBuf::new(),
            tweak,
        };
        server.boot();
        server
    }

    pub fn config(&self) -> Config {
        // A restart keeps the port, so reconnecting clients find the server again.
        let listen = if self.addr.is_empty() {
            "127.0.0.1:0"
        } else {
            &self.addr
        };
        let mut config = Config {
            data_dir: self.dir.path().to_path_buf(),
            listen: listen.parse().unwrap(),
            shards: self.shards,
            pin_cores: false,
            max_frame_bytes: 256 * 1024,
            max_text_bytes: 64 * 1024,
            // Any free port: tests run servers in parallel.
            metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
            ..Config::default()
        };
        // Small chunks: a test file of a few hundred KiB takes many of them.
        config.media.max_chunk_bytes = 64 * 1024;
        (self.tweak)(&mut config);
        config
    }

    fn boot(&mut self) {
        let handle = chat_server::start(self.config()).expect("server starts");
        self.addr = handle.local_addr().to_string();
        self.ca = handle.ca_path().expect("dev CA generated").to_path_buf();
        self.handle = Some(handle);
    }

    /// Stops the server (flushing and closing every database) and starts it again on the
    /// same data directory and port.
    pub fn restart(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown();
        }
        self.boot();
    }

    /// Stops the server and starts it again on the same data directory but at `addr`
    /// (`127.0.0.1:PORT`): the node a client fails over to.
    pub fn restart_at(&mut self, addr: &str) {
        if let Some(h) = self.handle.take() {
            h.shutdown();
        }
        self.addr = addr.to_string();
        self.boot();
    }

    /// Stops the server (flushing and closing every database), e.g. to open them.
    pub fn stop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown();
        }
    }

    /// Where the running server serves /metrics and /health.
    pub fn metrics_addr(&self) -> std::net::SocketAddr {
        let handle = self.handle.as_ref().expect("server running");
        handle.metrics_addr().expect("metrics endpoint on")
    }

    /// HOST:PORT of the server.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The development CA the server's certificate chains to.
    pub fn ca(&self) -> &std::path::Path {
        &self.ca
    }

    pub fn credentials(&self, name: &str) -> chat_client::Credentials {
        chat_client::Credentials {
            server: self.addr.clone(),
            ca: self.ca.clone(),
            username: name.to_string(),
            password: password(name),
            device_name: String::new(),
        }
    }

    pub fn connect(&self) -> Connection {
        let mut conn = Connection::connect(&self.addr, &self.ca).expect("connects over TLS");
        conn.set_timeout(Duration::from_secs(20));
        conn
    }

    /// Connections each shard has accepted so far, from `/metrics`.
    pub fn accepted_per_shard(&self) -> Vec<u64> {
        use std::io::{Read, Write};
        let addr = self.metrics_addr();
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(stream, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let mut accepted = vec![0; self.shards];
        for line in response.lines() {
            let Some(rest) = line.strip_prefix("chatd_connections_accepted_total{shard=\"") else {
                continue;
            };
            let (shard, value) = rest.split_once("\"} ").unwrap();
            accepted[shard.parse::<usize>().unwrap()] = value.parse::<f64>().unwrap() as u64;
        }
        accepted
    }

    /// A connection that shard `shard` accepted (connections land on whichever shard's
    /// listener the kernel picks; the others tried on the way are closed).
    pub fn connect_on_shard(&self, shard: usize) -> Connection {
        for _ in 0..500 {
            let before = self.accepted_per_shard();
            let conn = self.connect();
            let after = self.accepted_per_shard();
            let new: Vec<usize> = (0..self.shards).filter(|&i| after[i] > before[i]).collect();
            if new == [shard] {
                return conn;
            }
        }
        panic!("no connection landed on shard {shard}");
    }

    /// Registers `name` (password "password-<name>") and returns a logged-in connection.
    pub fn user(&self, name: &str) -> (Connection, pb::LoggedIn) {
        let conn = self.connect();
        conn.register(name, &password(name)).expect("registers");
        let login = conn.login(name, &password(name)).expect("logs in");
        (conn, login)
    }

    /// A logged-in connection for an existing user.
    pub fn login(&self, name: &str) -> (Connection, pb::LoggedIn) {
        let conn = self.connect();
        let login = conn.login(name, &password(name)).expect("logs in");
        (conn, login)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown();
        }
        *LIVE_SERVERS.lock().unwrap() -= 1;
        SERVER_FREED.notify_one();
    }
}

/// `127.0.0.1:PORT` where nothing listens: a port that was free a moment ago (bound, then
/// released), so connecting to it is refused.
pub fn closed_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    addr
}

pub fn password(name: &str) -> String {
    format!("password-{name}")
}

/// Waits for the next pushed message event. The user's own `sent` and `read` events (what
/// their devices did) in between are skipped.
pub fn next_message(conn: &Connection) -> pb::Message {
    loop {
        let event = conn
            .next_event(Duration::from_secs(20))
            .expect("connection open")
            .expect("an event within 20 s");
        match event.kind {
            Some(pb::event::Kind::Message(m)) => {
                assert_eq!(m.seq, event.seq);
                return m;
            }
            Some(pb::event::Kind::Sent(_) | pb::event::Kind::Read(_)) => {}
            other => panic!("expected a message event, got {other:?}"),
        }
    }
}

/// A username that lives on `shard` of `shards`.
pub fn name_on_shard(prefix: &str, shard: usize, shards: usize) -> String {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .find(|n| chat_server::routing::shard_of_username(n, shards) == shard)
        .unwrap()
}

/// Waits for the next pushed event of any kind.
pub fn next_event(conn: &Connection) -> pb::Event {
    conn.next_event(Duration::from_secs(20))
        .expect("connection open")
        .expect("an event within 20 s")
}

/// Creates `n` accounts (password "password-<name>") directly in the shards' databases of a
/// data directory the server has not started on yet: registering thousands of users over
/// the protocol would spend minutes hashing passwords. Returns (name, user id) pairs.
pub fn seed_users(
    dir: &std::path::Path,
    shards: usize,
    prefix: &str,
    n: usize,
) -> Vec<(String, u64)> {
    use chat_server::routing::{shard_of_user, shard_of_username};
    let hash = chat_server::auth::hash_password(&password(prefix)).unwrap();
    let stores: Vec<_> = (0..shards)
        .map(|i| {
            let store = chat_storage::Store::open(
                &dir.join(format!("shard-{i}")),
                chat_storage::Durability::Wal,
            )
            .unwrap();
            store
                .set_meta("shards", shards.to_string().as_bytes())
                .unwrap();
            store
        })
        .collect();
    let mut next_id = 1u64;
    (0..n)
        .map(|i| {
            let name = format!("{prefix}{i}");
            let shard = shard_of_username(&name, shards);
            let user_id = loop {
                next_id += 1;
                if shard_of_user(next_id, shards) == shard {
                    break next_id;
                }
            };
            stores[shard]
                .create_user(&chat_storage::UserRecord {
                    user_id,
                    username: name.clone(),
                    password_hash: hash.clone(),
                    created_us: 1,
                    read_receipts_off: false,
                    presence_visibility: 0,
                    push_previews_off: false,
                    tokens_revoked_us: 0,
                })
                .unwrap();
            (name, user_id)
        })
        .collect()
}

/// The error code of a request that must fail with an error from the server.
pub fn code<T: std::fmt::Debug>(r: Result<T, ClientError>) -> pb::ErrorCode {
    match r {
        Ok(v) => panic!("the request must fail, got {v:?}"),
        Err(e) => e.code().expect("a server error code"),
    }
}
