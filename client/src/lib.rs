//! Rust client for the chat protocol, and the `chat` terminal client (`src/bin/chat.rs`).
//!
//! [`Connection`] is a blocking client: one TLS connection (rustls over a std `TcpStream`)
//! with a reader thread that matches responses to requests by `request_id` and queues server
//! pushes. It does not reconnect by itself; [`Session`] adds login, token resume and
//! reconnection with resume-from-cursor on top. No async runtime is needed.
//!
//! A client may be given several servers (the nodes of a cluster, `a:7443,b:7443`): it
//! starts at a random one and fails over to the next ones ([`connect_first`]).

mod connection;
mod error;
mod media;
mod servers;
mod session;

pub use chat_protocol::pb;
pub use connection::{tls_config, Chat, Connection, CONNECT_TIMEOUT};
pub use error::{ClientError, Result};
pub use media::{sha256, MediaSpec};
pub use servers::{connect_first, parse_servers, random_start, try_order};
pub use session::{Credentials, Session};
