//! Cluster membership and the slot map, on NATS JetStream KV (its Raft is the engine: no
//! consensus of our own). Off unless `[cluster] nats_urls` (`--nats`) is set: a single
//! node runs no NATS code at all.
//!
//! What this does today:
//! - each node holds a lease in the `<name>_nodes` bucket (`node.rs` says how leases are
//!   refreshed and how a silent node's lease is removed);
//! - the `<name>_slots` bucket maps each of `slots` hash slots to an owner node and an
//!   epoch; every node computes the same rendezvous target for each slot over the live
//!   nodes (`rendezvous.rs`), claims the slots it should own that are free or whose owner
//!   has no lease, and releases the ones another live node should own (`plan.rs`), each by
//!   compare-and-swap on the slot key's revision;
//! - every node watches both buckets and publishes a [`SlotMap`] snapshot that any thread
//!   reads through a [`ClusterView`];
//! - metrics (`chatd_cluster_*`) and `/health` (ready once the node holds its lease and
//!   has loaded the map).
//!
//! - carries the messages between shards of different nodes (`mesh.rs`): shards route
//!   every key by the slot map (`crate::placement`), so a client may connect to any node.
//!
//! - replicates every shard's committed writes to its slot's log in a JetStream stream
//!   before answering what depends on them, fences a deposed owner, and rebuilds a slot
//!   from its log when it takes the slot over (`replica.rs`).
//!
//! - snapshots each slot's log once it grew by `snapshot_every` messages and purges what
//!   the snapshot covers (`snapshot.rs`), so a take-over reads a snapshot and a tail.
//!
//! The NATS client (async-nats) runs on one tokio current-thread runtime on its own
//! thread; the rest of the process talks to it over a flume channel and reads its results
//! from the `ClusterView`, never through tokio types.

pub(crate) mod mesh;
mod metrics;
mod node;
mod plan;
mod records;
pub mod rendezvous;
pub(crate) mod replica;
mod snapshot;
mod view;

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;

pub(crate) use metrics::ClusterMetrics;
pub use view::{ClusterView, LiveNode, SlotMap, SlotView};

use crate::config::ClusterConfig;

/// What the rest of the process asks of the cluster thread.
#[derive(Debug)]
pub(crate) enum Command {
    /// Hand the slots over, remove the lease, and end the thread.
    Leave,
}

/// The running cluster thread.
#[derive(Debug)]
pub(crate) struct ClusterHandle {
    view: ClusterView,
    commands: flume::Sender<Command>,
    thread: Option<JoinHandle<()>>,
}

impl ClusterHandle {
    /// Starts the cluster thread for `config` (which must have `nats_urls`); `listen` is
    /// the client address announced in this node's lease, `shards` its shard count. The
    /// thread publishes the slot map into `view` and carries the shards' `mesh` traffic.
    pub fn start(
        config: &ClusterConfig,
        listen: SocketAddr,
        shards: usize,
        view: ClusterView,
        mesh: mesh::MeshPorts,
        replica: replica::ReplicaPorts,
        metrics: Arc<ClusterMetrics>,
    ) -> anyhow::Result<Self> {
        let settings = node::Settings {
            nats_urls: parse_urls(&config.nats_urls)?,
            node: config.node.clone(),
            name: config.name.clone(),
            slots: config.slots,
            lease_ttl: Duration::from_millis(config.lease_ttl_ms),
            replicas: config.replicas,
            snapshot_every: config.snapshot_every,
            listen,
            shards,
        };
        let (commands, inbox) = flume::unbounded();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the cluster's runtime")?;
        let thread_view = view.clone();
        let thread = std::thread::Builder::new()
            .name("chatd-cluster".into())
            .spawn(move || {
                let ports = node::Ports { mesh, replica };
                runtime.block_on(node::run(settings, thread_view, metrics, inbox, ports))
            })
            .context("starting the cluster thread")?;
        Ok(Self {
            view,
            commands,
            thread: Some(thread),
        })
    }

    /// The node's view of the slot map.
    pub fn view(&self) -> &ClusterView {
        &self.view
    }

    /// Hands the slots over, removes the lease (bounded by a few seconds) and joins the
    /// thread.
    pub fn stop(mut self) {
        let _ = self.commands.send(Command::Leave);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The NATS server addresses of `urls` (`nats://host:port`, or `host:port`).
pub fn parse_urls(urls: &[String]) -> anyhow::Result<Vec<async_nats::ServerAddr>> {
    urls.iter()
        .map(|u| {
            u.parse::<async_nats::ServerAddr>()
                .map_err(|e| anyhow::anyhow!("cluster.nats_urls: {u:?}: {e}"))
        })
        .collect()
}
