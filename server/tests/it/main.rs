//! Integration tests: the real server started in-process on 127.0.0.1:0 with real RocksDB on
//! a temp dir, spoken to over real TLS by the real client library.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: test code

mod accounts;
mod bad_input;
mod groups;
mod media;
mod messaging;
mod presence;
mod push;
mod receipts;
mod restart;
mod support;
