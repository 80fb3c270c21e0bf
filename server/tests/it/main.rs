//! Integration tests: the real server started in-process on 127.0.0.1:0 with real RocksDB on
//! a temp dir, spoken to over real TLS by the real client library.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: test code

mod accounts;
mod bad_input;
mod blocking;
mod changes;
mod cluster;
mod cluster_mesh;
mod cluster_replica;
mod crash;
mod devices;
mod failover;
mod groups;
mod limits;
mod media;
mod messaging;
mod metrics;
mod presence;
mod push;
mod receipts;
mod restart;
mod security;
mod session_fuzz;
mod startup;
mod storm;
mod support;
