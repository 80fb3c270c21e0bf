//! `chatd`, the chat daemon: thread-per-core shards (glommio), TLS (rustls), sessions,
//! routing between shards, and the request handlers. Wire format lives in `chat-protocol`,
//! persistence in `chat-storage`; this crate is where runtime, I/O and policy meet.
//!
//! [`start`] runs a server in-process (tests use it on `127.0.0.1:0`); `main.rs` wraps it
//! in a command line.

pub mod auth;
mod changes;
pub mod clock;
pub mod cluster;
mod cmd;
pub mod config;
mod conn;
mod devices;
mod groups;
mod lists;
mod media;
pub mod mesh;
mod metrics;
pub mod placement;
mod presence;
mod push;
mod receipts;
pub mod replica;
pub mod request;
pub mod routing;
mod runtime;
pub mod shard;
mod signal;
mod tls;

pub use config::Config;
pub use runtime::{start, ServerHandle};
