//! The runtime: one glommio executor per shard, the channel mesh between them, and the
//! listeners. This module and `conn.rs` are the only ones that know glommio.

use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd, RawFd};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use anyhow::Context;
use chat_storage::{Durability, Store};
use futures_rustls::TlsAcceptor;
use glommio::channels::shared_channel::{self, SharedReceiver, SharedSender};
use glommio::net::TcpListener;
use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement as CorePlacement};

use crate::config::{Config, DurabilityMode};
use crate::metrics::http::MetricsServer;
use crate::metrics::{Metrics, ShardMetrics};
use crate::placement::{NodeAddrs, Placement};
use crate::shard::{Limits, Shard, ShardMsg, ShardReplica};

type Batch = Vec<ShardMsg>;

/// Capacity, in batches, of each shard-to-shard channel.
const MESH_CAPACITY: usize = 1024;
/// How often a shard drops expired uploads.
const UPLOAD_SWEEP: Duration = Duration::from_secs(600);
/// How often a shard looks for connections past their login or idle timeout.
const TIMEOUT_SWEEP: Duration = Duration::from_millis(500);
/// How often a shard writes the ack cursors that moved (see `Store::persist_cursors`).
const CURSOR_PERSIST: Duration = Duration::from_secs(1);
/// How often a shard of a cluster node looks for sessions on nodes that left.
const DEPARTED_SWEEP: Duration = Duration::from_secs(1);
/// How often an idle shard checks for shutdown.
const STOP_POLL: Duration = Duration::from_millis(20);

/// Spawns a detached task on the current shard.
pub fn spawn(fut: impl Future<Output = ()> + 'static) {
    glommio::spawn_local(fut).detach();
}

/// Spawns a task on the current shard and returns a future of its output.
pub fn spawn_handle<T: 'static>(fut: impl Future<Output = T> + 'static) -> impl Future<Output = T> {
    glommio::spawn_local(fut)
}

/// Runs blocking work (password hashing) on the executor's thread pool, off the event loop.
pub async fn blocking<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    glommio::executor().spawn_blocking(f).await
}

pub async fn sleep(duration: Duration) {
    glommio::timer::sleep(duration).await;
}

pub async fn yield_now() {
    glommio::yield_if_needed().await;
}

/// Opens a TCP connection without blocking the shard (the push gateway client).
pub async fn connect_tcp(
    addr: SocketAddr,
) -> std::io::Result<impl futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin> {
    let stream = glommio::net::TcpStream::connect(addr).await?;
    // Requests are written in one go and answered once: no Nagle delay.
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A running server. Dropping it without [`ServerHandle::shutdown`] leaves it running
/// until the process exits.
pub struct ServerHandle {
    addr: SocketAddr,
    ca: Option<PathBuf>,
    stop: Arc<AtomicBool>,
    shards: Vec<ExecutorJoinHandle<()>>,
    /// The metrics and health endpoint, unless `metrics_listen` is off.
    metrics: Option<MetricsServer>,
    /// The cluster thread, when `[cluster]` is on.
    cluster: Option<crate::cluster::ClusterHandle>,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("addr", &self.addr)
            .finish()
    }
}

impl ServerHandle {
    /// The address clients connect to (the real port when configured with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where `/metrics` and `/health` are served (the real port when configured with port
    /// 0); `None` when `metrics_listen` is off.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(MetricsServer::local_addr)
    }

    /// The generated development CA, when no certificate was configured.
    pub fn ca_path(&self) -> Option<&std::path::Path> {
        self.ca.as_deref()
    }

    /// This node's view of the cluster's slot map; `None` for a single node.
    pub fn cluster_view(&self) -> Option<&crate::cluster::ClusterView> {
        self.cluster.as_ref().map(|c| c.view())
    }

    /// A flag that stops the server when set (for signal handlers).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// Stops accepting, closes connections, flushes and closes every shard's database.
    pub fn shutdown(self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wait();
    }

    /// Blocks until the server stops (after the stop flag is set).
    pub fn wait(self) {
        for shard in self.shards {
            let _ = shard.join();
        }
        if let Some(cluster) = self.cluster {
            cluster.stop();
        }
        if let Some(metrics) = self.metrics {
            metrics.stop();
        }
    }
}

/// Everything one shard's thread is handed at start.
struct ShardSeed {
    id: usize,
    shards: usize,
    listener: RawFd,
    to_peers: Vec<Option<SharedSender<Batch>>>,
    from_peers: Vec<Option<SharedReceiver<Batch>>>,
    tls: TlsAcceptor,
    store: Store,
    limits: Limits,
    stop: Arc<AtomicBool>,
    ready: mpsc::Sender<anyhow::Result<()>>,
    metrics: Arc<ShardMetrics>,
    place: Placement,
    /// This shard's end of the mesh between nodes, in a cluster.
    mesh: Option<MeshSeed>,
}

/// A shard's end of the mesh between nodes (`crate::mesh::link`, `cluster::mesh`).
struct MeshSeed {
    addrs: Arc<NodeAddrs>,
    to_nodes: flume::Sender<crate::cluster::mesh::Outbound>,
    from_nodes: flume::Receiver<bytes::Bytes>,
    metrics: Arc<crate::cluster::ClusterMetrics>,
    /// Where the shard's writes are published, and where its slots' logs come back.
    replica: ShardReplica,
    replays: flume::Receiver<crate::cluster::replica::Replay>,
}

/// Capacity, in batches, of the channel from all shards to the cluster thread and of each
/// channel from it to a shard.
const NODE_MESH_CAPACITY: usize = 4096;

/// Entries of each io_uring of a shard. Not for the depth itself: the kernel sizes a ring's
/// table of armed polls from it (ilog2(2 x depth) - 5 bits, at most 8), and glommio cancels
/// a timer on every loop round, which walks one bucket of that table. With glommio's
/// default of 128 the table has 8 buckets, so with 2000 idle connections (a poll each) every
/// round walked ~250 entries: 4-5 % of a busy shard's time. 4096 gives the 256 buckets.
const RING_DEPTH: usize = 4096;

/// Starts the server; returns once every shard is accepting connections.
pub fn start(config: Config) -> anyhow::Result<ServerHandle> {
    config.validate()?;
    let shards = config.shard_count();
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    check_layout(&config, shards)?;
    let (tls, ca) = crate::tls::server_config(&config)?;
    let (addr, listeners) = bind_listeners(config.listen, shards)?;

    // One bounded channel per ordered pair of shards.
    let mut to_peers: Vec<Vec<Option<SharedSender<Batch>>>> = (0..shards)
        .map(|_| (0..shards).map(|_| None).collect())
        .collect();
    let mut from_peers: Vec<Vec<Option<SharedReceiver<Batch>>>> = (0..shards)
        .map(|_| (0..shards).map(|_| None).collect())
        .collect();
    for from in 0..shards {
        for to in 0..shards {
            if from != to {
                let (tx, rx) = shared_channel::new_bounded(MESH_CAPACITY);
                to_peers[from][to] = Some(tx);
                from_peers[to][from] = Some(rx);
            }
        }
    }

    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = mpsc::channel();
    let metrics = Arc::new(Metrics::new(shards));

    // In a cluster: the slot map every shard routes by, and the mesh to other nodes.
    let view = crate::cluster::ClusterView::default();
    let cluster_metrics = Arc::new(crate::cluster::ClusterMetrics::new());
    let addrs = Arc::new(NodeAddrs::new(&config.cluster.node, shards));
    let (to_nodes, from_shards) = flume::bounded(NODE_MESH_CAPACITY);
    let (to_shards, from_nodes): (Vec<_>, Vec<_>) = (0..shards)
        .map(|_| flume::bounded(NODE_MESH_CAPACITY))
        .unzip();
    let mesh_ports = crate::cluster::mesh::MeshPorts {
        outbound: from_shards,
        inbound: to_shards,
    };
    let replica_state = Arc::new(crate::cluster::replica::ReplicaState::default());
    let (rounds, from_rounds) = flume::bounded(NODE_MESH_CAPACITY);
    let (replays, to_replay): (Vec<_>, Vec<_>) = (0..shards).map(|_| flume::bounded(1)).unzip();
    let replica_ports = crate::cluster::replica::ReplicaPorts {
        rounds: from_rounds,
        replays,
        state: replica_state.clone(),
    };
    let limits = Limits {
        max_frame_bytes: config.max_frame_bytes,
        max_text_bytes: config.max_text_bytes,
        max_group_members: config.max_group_members,
        login_timeout: (config.login_timeout_s > 0)
            .then(|| Duration::from_secs(config.login_timeout_s)),
        idle_timeout: (config.idle_timeout_s > 0)
            .then(|| Duration::from_secs(config.idle_timeout_s)),
        max_connections_per_user: config.max_connections_per_user,
        rate_limit: (config.rate_limit_per_s > 0)
            .then_some((config.rate_limit_per_s, config.rate_limit_burst)),
        max_outbound_bytes: config.max_outbound_bytes,
        delete_window: (config.delete_window_s > 0)
            .then(|| Duration::from_secs(config.delete_window_s)),
        edit_window: (config.edit_window_s > 0).then(|| Duration::from_secs(config.edit_window_s)),
        media: config.media.clone(),
        push: config.push.clone(),
    };
    let durability = match config.durability {
        DurabilityMode::Wal => Durability::Wal,
        DurabilityMode::Fsync => Durability::Fsync,
    };
    // Open every database here, on this unpinned thread: RocksDB's flush and compaction
    // threads inherit the CPU affinity of the thread that starts them, and must not compete
    // with a shard on its own core.
    let stores = (0..shards)
        .map(|id| {
            open_store(
                &config.data_dir.join(format!("shard-{id}")),
                durability,
                shards,
            )
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut handles = Vec::with_capacity(shards);
    let seeds = listeners
        .into_iter()
        .zip(to_peers)
        .zip(from_peers)
        .zip(stores)
        .enumerate();
    for (id, (((listener, to_peers), from_peers), store)) in seeds {
        let seed = ShardSeed {
            id,
            shards,
            listener,
            to_peers,
            from_peers,
            tls: TlsAcceptor::from(tls.clone()),
            store,
            limits: limits.clone(),
            stop: stop.clone(),
            ready: ready_tx.clone(),
            metrics: metrics.shard(id),
            place: if config.cluster.enabled() {
                Placement::cluster(shards, view.clone(), addrs.clone(), replica_state.clone())
            } else {
                Placement::single(shards)
            },
            mesh: config.cluster.enabled().then(|| MeshSeed {
                addrs: addrs.clone(),
                to_nodes: to_nodes.clone(),
                from_nodes: from_nodes[id].clone(),
                metrics: cluster_metrics.clone(),
                replica: ShardReplica {
                    rounds: rounds.clone(),
                    state: replica_state.clone(),
                    view: view.clone(),
                },
                replays: to_replay[id].clone(),
            }),
        };
        let placement = if config.pin_cores {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            CorePlacement::Fixed(id % cores)
        } else {
            CorePlacement::Unbound
        };
        let mut builder = LocalExecutorBuilder::new(placement)
            .name(&format!("shard-{id}"))
            .ring_depth(RING_DEPTH);
        if config.spin_before_park_us > 0 {
            builder = builder.spin_before_park(Duration::from_micros(config.spin_before_park_us));
        }
        let handle = builder
            .spawn(move || run_shard(seed))
            .map_err(|e| anyhow::anyhow!("starting shard {id}: {e}"))?;
        handles.push(handle);
    }
    drop(ready_tx);
    let mut server = ServerHandle {
        addr,
        ca,
        stop,
        shards: handles,
        metrics: None,
        cluster: None,
    };
    if config.cluster.enabled() {
        metrics.set_cluster(cluster_metrics.clone());
        match crate::cluster::ClusterHandle::start(
            &config.cluster,
            addr,
            shards,
            view,
            mesh_ports,
            replica_ports,
            cluster_metrics,
        ) {
            Ok(handle) => server.cluster = Some(handle),
            Err(e) => {
                server.shutdown();
                return Err(e);
            }
        }
    }
    // Bound before the shards are ready: /health answers 503 until they are.
    if let Some(listen) = config.metrics_listen {
        match MetricsServer::start(listen, metrics) {
            Ok(endpoint) => server.metrics = Some(endpoint),
            Err(e) => {
                server.shutdown();
                return Err(e);
            }
        }
    }
    for _ in 0..shards {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                server.shutdown();
                return Err(e);
            }
            Err(_) => {
                server.shutdown();
                anyhow::bail!("a shard exited during start-up");
            }
        }
    }
    tracing::info!(%addr, shards, "chatd is serving");
    Ok(server)
}

/// Refuses a data directory created with another shard count: data placement depends on it.
fn check_layout(config: &Config, shards: usize) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(&config.data_dir)? {
        let name = entry?.file_name();
        let index = name
            .to_str()
            .and_then(|n| n.strip_prefix("shard-"))
            .and_then(|n| n.parse::<usize>().ok());
        if let Some(index) = index {
            anyhow::ensure!(
                index < shards,
                "{} holds data of shard {index}, but the server is configured with {shards} shards; \
                 start it with the shard count it was created with",
                config.data_dir.display()
            );
        }
    }
    Ok(())
}

/// Binds one SO_REUSEPORT listener per shard on the same address; the kernel spreads
/// incoming connections over them.
fn bind_listeners(addr: SocketAddr, shards: usize) -> anyhow::Result<(SocketAddr, Vec<RawFd>)> {
    use socket2::{Domain, Socket, Type};
    let mut bound = addr;
    let mut fds = Vec::with_capacity(shards);
    for _ in 0..shards {
        let socket = Socket::new(Domain::for_address(bound), Type::STREAM, None)?;
        socket.set_reuse_port(true)?;
        socket.set_reuse_address(true)?;
        socket
            .bind(&bound.into())
            .with_context(|| format!("binding {bound}"))?;
        socket.listen(1024)?;
        if let Some(real) = socket.local_addr()?.as_socket() {
            // Port 0: the first bind picks the port; the others join it.
            bound = real;
        }
        fds.push(socket.into_raw_fd());
    }
    Ok((bound, fds))
}

async fn run_shard(seed: ShardSeed) {
    // SAFETY: the fd came from `into_raw_fd` in `bind_listeners` and is owned by this shard only.
    let listener = unsafe { TcpListener::from_raw_fd(seed.listener) };
    let replica = seed.mesh.as_ref().map(|m| m.replica.clone());
    seed.store.set_capture(replica.is_some());
    let shard = Rc::new(Shard::new(
        seed.id,
        seed.shards,
        seed.store,
        seed.limits,
        seed.place,
        seed.metrics,
        replica,
    ));

    // Connect both ends of every channel concurrently: each connect waits for its peer.
    let senders: Vec<_> = seed
        .to_peers
        .into_iter()
        .map(|tx| tx.map(|tx| glommio::spawn_local(tx.connect())))
        .collect();
    let receivers: Vec<_> = seed
        .from_peers
        .into_iter()
        .map(|rx| rx.map(|rx| glommio::spawn_local(rx.connect())))
        .collect();
    // Long-lived tasks are kept (not detached) so that dropping them at shutdown cancels them.
    let mut services = Vec::new();
    for (peer, tx) in senders.into_iter().enumerate() {
        let Some(tx) = tx else { continue };
        let tx = tx.await;
        let shard = shard.clone();
        services.push(glommio::spawn_local(async move {
            loop {
                let batch = shard.next_outbound_batch(peer).await;
                if tx.send(batch).await.is_err() {
                    return;
                }
            }
        }));
    }
    for rx in receivers.into_iter().flatten() {
        let rx = rx.await;
        let shard = shard.clone();
        services.push(glommio::spawn_local(async move {
            while let Some(batch) = rx.recv().await {
                let received = batch.len() as u64;
                shard.metrics.shard_messages_received.add(received);
                for msg in batch {
                    shard.handle(msg);
                }
            }
        }));
    }

    // Other nodes' shards, through the cluster thread.
    if let Some(mesh) = seed.mesh {
        let sending = shard.clone();
        let (addrs, to_nodes) = (mesh.addrs.clone(), mesh.to_nodes);
        services.push(glommio::spawn_local(async move {
            loop {
                let queued = sending.next_remote_batches().await;
                for batch in crate::mesh::link::outbound(&sending, queued, &addrs) {
                    if to_nodes.send_async(batch).await.is_err() {
                        return;
                    }
                }
            }
        }));
        services.push(every(&shard, DEPARTED_SWEEP, |s| {
            s.forget_departed_nodes();
            s.close_moved_sessions();
        }));
        let receiving = shard.clone();
        let (addrs, from_nodes, metrics) = (mesh.addrs, mesh.from_nodes, mesh.metrics);
        services.push(glommio::spawn_local(async move {
            while let Ok(batch) = from_nodes.recv_async().await {
                crate::mesh::link::inbound(&receiving, &batch, &addrs, &metrics);
            }
        }));
        // Slots this node took over, rebuilt from their logs.
        let replaying = shard.clone();
        let replays = mesh.replays;
        services.push(glommio::spawn_local(async move {
            while let Ok(replay) = replays.recv_async().await {
                let result = replaying.replay(&replay);
                let _ = replay.done.send(result);
            }
        }));
    }

    // Group commit: runs after the tasks that staged writes, so their writes share a batch.
    // In a cluster a round also waits for its slots' logs; the next one gathers meanwhile.
    let committing = shard.clone();
    services.push(glommio::spawn_local(async move {
        loop {
            committing.commit_wanted().await;
            if committing.replica.is_some() {
                committing.commit_replicated().await;
            } else {
                committing.commit_staged();
            }
        }
    }));

    let acceptor = seed.tls;
    let accepting = shard.clone();
    services.push(glommio::spawn_local(async move {
        loop {
            match listener.accept().await {
                Ok(tcp) => spawn(crate::conn::serve(accepting.clone(), tcp, acceptor.clone())),
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    glommio::timer::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }));
    // Login and idle timeouts.
    if shard.limits.login_timeout.is_some() || shard.limits.idle_timeout.is_some() {
        services.push(every(&shard, TIMEOUT_SWEEP, |s| s.sweep_timeouts()));
    }
    services.push(every(&shard, CURSOR_PERSIST, |s| {
        if let Err(e) = s.store.persist_cursors() {
            tracing::error!(shard = s.id, "writing ack cursors: {e}");
        }
        // In a cluster the cursors are replicated with the next round: ask for one.
        if s.store.has_captured() {
            s.want_commit();
        }
    }));
    // Uploads abandoned for a day.
    let sweeping = shard.clone();
    services.push(glommio::spawn_local(async move {
        loop {
            crate::media::sweep_expired(&sweeping);
            glommio::timer::sleep(UPLOAD_SWEEP).await;
        }
    }));
    // Group entries some member shard had not confirmed before the last stop.
    shard.groups.resume_fanouts(&shard);
    // Push notifications, including jobs left in the outbox by the last run.
    services.push(glommio::spawn_local(crate::push::run_dispatcher(
        shard.clone(),
    )));
    shard.metrics.set_serving(true);
    let _ = seed.ready.send(Ok(()));

    // This loop's ticks are the shard's heartbeat for /health.
    while !seed.stop.load(Ordering::SeqCst) {
        shard.metrics.heartbeat();
        glommio::timer::sleep(STOP_POLL).await;
    }
    shard.metrics.set_serving(false);
    shard.close_all_conns();
    // Let connections send their goodbye frame and finish, for a bounded time.
    for _ in 0..50 {
        if shard.open_conns() == 0 {
            break;
        }
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    drop(services);
    shard.commit_at_stop();
    // Close the database now: a task that still holds the shard must not keep it open.
    if let Err(e) = shard.store.close() {
        tracing::error!(shard = seed.id, "flush on shutdown failed: {e}");
    }
    tracing::info!(shard = seed.id, "shard stopped");
}

/// A task that calls `tick` on the shard once every `period`, the first time after one.
fn every(
    shard: &Rc<Shard>,
    period: Duration,
    tick: impl Fn(&Rc<Shard>) + 'static,
) -> glommio::Task<()> {
    let shard = shard.clone();
    glommio::spawn_local(async move {
        loop {
            glommio::timer::sleep(period).await;
            tick(&shard);
        }
    })
}

fn open_store(
    dir: &std::path::Path,
    durability: Durability,
    shards: usize,
) -> anyhow::Result<Store> {
    let store =
        Store::open(dir, durability).with_context(|| format!("opening {}", dir.display()))?;
    let shards = shards.to_string();
    match store.meta("shards")? {
        None => store.set_meta("shards", shards.as_bytes())?,
        Some(v) if v == shards.as_bytes() => {}
        Some(v) => anyhow::bail!(
            "{} was created for {} shards, not {shards}",
            dir.display(),
            String::from_utf8_lossy(&v)
        ),
    }
    Ok(store)
}
