//! The cluster thread: one tokio current-thread runtime that holds the NATS connection,
//! keeps this node's lease, watches both buckets, claims and releases slots, and publishes
//! the [`SlotMap`] the shards read. Nothing here runs on a shard.
//!
//! One loop owns all the state (no locks): it waits on the two watches, a refresh timer,
//! the writes it has in flight and the commands from the rest of the process (a flume
//! channel), and after any change (debounced by [`SETTLE`]) re-plans with `plan.rs`.
//!
//! ## The lease
//!
//! A node `put`s its key in the nodes bucket when it joins, then refreshes it every
//! `lease_ttl / 6` with `update(key, value, last_revision)`. A node whose refresh has not
//! landed while another node landed [`REFRESHES`] of its own (in JetStream's order: the
//! stream sequence is the clock) is silent: that other node removes its lease with
//! `delete(key, expected_revision)`, which fails if the silent node refreshed after all.
//! Everyone sees the delete in the watch, and the slots of the gone node become free to
//! claim. Why not the bucket's `max_age` TTL: a JetStream leader election (measured 4.5 s
//! when the lease stream's leader was killed, nats-server 2.15) stops every refresh, and
//! the new leader then expires every lease at once; counting refreshes in the stream
//! instead judges no one while nobody can write. Why not a local timer per lease: a node
//! whose own connection stalls would judge everybody dead; here a removal needs JetStream
//! to accept this node's refreshes and to agree (compare-and-swap) that the other did not
//! refresh.
//!
//! A node that has landed no refresh for `3 * lease_ttl / 6` stops claiming it owns
//! anything (`ready` false, `/health` 503) before anyone can judge it silent (`3.5 *
//! lease_ttl / 6` after its last landed refresh at the earliest, see [`Node::fenced`]); it
//! is ready again when a refresh lands. A node whose lease was removed
//! joins again as a new incarnation; the slots its old incarnation held are claimed anew,
//! with new epochs.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, Store, UpdateErrorKind};
use async_nats::jetstream::stream::StorageType;
use async_nats::ServerAddr;
use futures_lite::StreamExt;
use tokio::task::JoinSet;

use super::metrics::ClusterMetrics;
use super::plan::{self, LeaseState, SlotState, SlotWrite};
use super::records::{self, ClusterRecord, Lease, Owner, SlotRecord, CONFIG_KEY};
use super::replica::Log;
use super::view::{ClusterView, LiveNode, SlotMap, SlotView};
use super::Command;

/// A lease is refreshed this many times per `lease_ttl`; a node is silent once another
/// landed this many refreshes after its last one.
pub const REFRESHES: u32 = 6;
/// A node that landed no refresh for this many periods stops claiming its slots.
const FENCE_AFTER: u32 = REFRESHES - 3;
/// After a change, wait this long for more before planning (a burst of watch entries
/// becomes one plan).
const SETTLE: Duration = Duration::from_millis(20);
/// Limit on one slot write or bucket request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a stopping node spends releasing its slots and its lease.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(3);
/// Wait between attempts to set up the buckets (JetStream may still be electing).
const RETRY: Duration = Duration::from_millis(200);
/// Limit on one attempt to open or create a bucket.
const SETUP_TIMEOUT: Duration = Duration::from_secs(2);

/// What the cluster thread is started with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub nats_urls: Vec<ServerAddr>,
    pub node: String,
    /// Bucket names are `<name>_nodes` and `<name>_slots`.
    pub name: String,
    pub slots: u32,
    pub lease_ttl: Duration,
    /// 0: 3 when the NATS server is part of a cluster, else 1.
    pub replicas: usize,
    /// The client address this node announces in its lease.
    pub listen: SocketAddr,
    /// This node's shard count, announced in its lease.
    pub shards: usize,
    /// Messages after a slot's last snapshot that make its owner snapshot it (0: never).
    pub snapshot_every: u64,
}

impl Settings {
    fn refresh_every(&self) -> Duration {
        self.lease_ttl / REFRESHES
    }
}

/// Why a session ended.
enum End {
    /// The process stops.
    Stop,
    /// Something failed that a new session may fix (a watch ended, a bucket is missing).
    Retry(String),
    /// A configuration error no retry fixes: stay out of the cluster.
    Fatal(String),
}

/// The shards' ends of the mesh and of replication.
pub struct Ports {
    pub mesh: super::mesh::MeshPorts,
    pub replica: super::replica::ReplicaPorts,
}

/// The thread's body: sessions until told to stop.
pub async fn run(
    settings: Settings,
    view: ClusterView,
    metrics: Arc<ClusterMetrics>,
    commands: flume::Receiver<Command>,
    ports: Ports,
) {
    let started = Instant::now();
    let events = metrics.clone();
    let options = async_nats::ConnectOptions::new()
        .name(format!("chatd {}", settings.node))
        .retry_on_initial_connect()
        .ignore_discovered_servers()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(2))
        .reconnect_delay_callback(|attempts| Duration::from_millis(100 * attempts.min(10) as u64))
        .event_callback(move |event| {
            let metrics = events.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        tracing::info!("connected to NATS");
                        metrics.set_connected(true);
                    }
                    async_nats::Event::Disconnected => {
                        tracing::warn!("disconnected from NATS; reconnecting");
                        metrics.set_connected(false);
                    }
                    // The client dropped messages for a subscription it could not keep up
                    // with: for the mesh, requests and pushes lost on the way.
                    async_nats::Event::SlowConsumer(_)
                    | async_nats::Event::ServerError(_)
                    | async_nats::Event::ClientError(_) => tracing::warn!("NATS: {event}"),
                    other => tracing::debug!("NATS: {other}"),
                }
            }
        });
    let client = match options.connect(settings.nats_urls.clone()).await {
        Ok(client) => client,
        Err(e) => {
            let why = format!("cluster: cannot use the NATS servers: {e}");
            tracing::error!("{why}");
            metrics.set_problem(&why);
            let _ = commands.recv_async().await;
            return;
        }
    };
    tokio::spawn(super::mesh::bridge(
        client.clone(),
        settings.name.clone(),
        settings.node.clone(),
        ports.mesh,
        metrics.clone(),
    ));
    let mut node = Node::new(settings, view, metrics, started, ports.replica);
    loop {
        match node.session(&client, &commands).await {
            End::Stop => break,
            End::Retry(why) => {
                tracing::warn!("cluster: {why}; starting over");
                node.lost_view();
                node.metrics.set_problem(&format!("cluster: {why}"));
                if wait_or_stop(&commands, RETRY).await {
                    break;
                }
            }
            End::Fatal(why) => {
                tracing::error!("cluster: {why}");
                node.lost_view();
                node.metrics.set_problem(&format!("cluster: {why}"));
                let _ = commands.recv_async().await;
                break;
            }
        }
    }
    tracing::info!("cluster thread stopped");
}

/// Sleeps `pause`; true if a stop command came (or the channel closed) meanwhile.
async fn wait_or_stop(commands: &flume::Receiver<Command>, pause: Duration) -> bool {
    tokio::select! {
        _ = commands.recv_async() => true,
        _ = tokio::time::sleep(pause) => false,
    }
}

/// The result of one write the loop started.
enum Done {
    Refreshed {
        sent: Instant,
        result: Result<u64, kv::UpdateError>,
    },
    Evicted {
        node: String,
        /// The silent lease's revision, and this node's refreshes past it.
        revision: u64,
        past: Vec<u64>,
        result: Result<(), kv::DeleteError>,
    },
    Wrote {
        write: SlotWrite,
        result: Result<u64, String>,
    },
    /// Claims, and the take-over of the ones that landed.
    Claimed {
        results: Vec<(SlotWrite, Result<u64, String>)>,
        taken_over: Result<(), String>,
    },
    /// New watches of both buckets, resuming after the last entries seen.
    Rewatched(Result<Box<(kv::Watch, kv::Watch)>, String>),
}

/// The buckets of one session.
struct Buckets {
    nodes: Store,
    slots: Store,
}

struct Node {
    settings: Settings,
    view: ClusterView,
    metrics: Arc<ClusterMetrics>,
    started: Instant,
    /// This process's identity in leases and slot records; new after a lease loss.
    me: Owner,
    lease: Lease,
    /// Revision of this node's latest landed lease write (0: none this session).
    lease_revision: u64,
    /// Revisions of this node's latest landed refreshes, oldest first.
    recent: VecDeque<u64>,
    /// When the newest refresh in `recent` was sent.
    counted_at: Option<Instant>,
    /// When the latest landed refresh was sent: the node is fenced some time after.
    refreshed_at: Instant,
    leases: BTreeMap<String, LeaseState>,
    slots: Vec<SlotState>,
    leases_loaded: bool,
    slots_loaded: bool,
    /// Slots with a write in flight; nodes whose eviction is in flight.
    busy: HashSet<u32>,
    evicting: HashSet<String>,
    refreshing: bool,
    /// Refreshes that failed in a row.
    refresh_failures: u32,
    /// Highest revision each watch delivered: where a new watch resumes.
    lease_seen: u64,
    slot_seen: u64,
    /// Replace both watches (after an outage their consumers may be gone with a server).
    rewatch: bool,
    /// Since when a change waits to be planned and published.
    dirty_since: Option<Instant>,
    /// The shards' ends of replication, and the slot logs once opened.
    replica: super::replica::ReplicaPorts,
    log: Option<Arc<Log>>,
    /// Replicas of the buckets and the log (resolved when the buckets are opened).
    replicas: usize,
}

fn incarnation() -> String {
    format!("{:016x}", rand::random::<u64>())
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Node {
    fn new(
        settings: Settings,
        view: ClusterView,
        metrics: Arc<ClusterMetrics>,
        started: Instant,
        replica: super::replica::ReplicaPorts,
    ) -> Self {
        let me = Owner {
            node: settings.node.clone(),
            incarnation: incarnation(),
        };
        let lease = Lease {
            incarnation: me.incarnation.clone(),
            listen: settings.listen.to_string(),
            started_ms: unix_ms(),
            shards: settings.shards as u32,
        };
        metrics.slots.set(i64::from(settings.slots));
        Self {
            slots: vec![SlotState::default(); settings.slots as usize],
            settings,
            view,
            metrics,
            started,
            me,
            lease,
            lease_revision: 0,
            recent: VecDeque::new(),
            counted_at: None,
            refreshed_at: Instant::now(),
            leases: BTreeMap::new(),
            leases_loaded: false,
            slots_loaded: false,
            busy: HashSet::new(),
            evicting: HashSet::new(),
            refreshing: false,
            refresh_failures: 0,
            lease_seen: 0,
            slot_seen: 0,
            rewatch: false,
            dirty_since: None,
            replica,
            log: None,
            replicas: 1,
        }
    }

    /// Forgets the watched state (a new session loads it again) and stops being ready.
    fn lost_view(&mut self) {
        // Take-overs cut short may have claimed slots they did not rebuild: dirty, so they
        // are released and taken over again.
        self.replica.state.mark_dirty(self.busy.iter().copied());
        self.metrics.replaying.set(0);
        self.leases.clear();
        self.slots = vec![SlotState::default(); self.settings.slots as usize];
        self.leases_loaded = false;
        self.slots_loaded = false;
        self.busy.clear();
        self.evicting.clear();
        self.refreshing = false;
        self.rewatch = false;
        self.lease_seen = 0;
        self.slot_seen = 0;
        self.publish();
    }

    /// A new identity: what the previous one held is no longer ours.
    fn new_incarnation(&mut self) {
        self.me.incarnation = incarnation();
        self.lease.incarnation = self.me.incarnation.clone();
        self.recent.clear();
        self.counted_at = None;
        self.lease_revision = 0;
    }

    /// No refresh sent in the last `FENCE_AFTER` periods has landed. Another node removes
    /// this one's lease after landing `REFRESHES` refreshes of its own past this one's last
    /// (at `L`), counted only when sent at least 0.9 periods apart (`count`), the first sent
    /// at the earliest one request timeout (a period) before `L`: so not before `L + 3.5`
    /// periods. This node's last landed refresh was sent before `L`, so it stops by `L + 3`
    /// periods.
    fn fenced(&self) -> bool {
        self.refreshed_at.elapsed() > self.settings.refresh_every() * FENCE_AFTER
    }

    fn ready(&self) -> bool {
        self.leases_loaded
            && self.slots_loaded
            && self.lease_revision > 0
            && plan::owner_live(&self.me, &self.leases)
            && !self.fenced()
    }

    fn mark_dirty(&mut self) {
        self.dirty_since.get_or_insert_with(Instant::now);
    }

    /// Connects the buckets, joins, and runs until something ends the session.
    async fn session(
        &mut self,
        client: &async_nats::Client,
        commands: &flume::Receiver<Command>,
    ) -> End {
        // With retry_on_initial_connect the client may not be connected yet.
        while client.connection_state() != async_nats::connection::State::Connected {
            self.metrics.set_problem("cluster: connecting to NATS");
            if wait_or_stop(commands, Duration::from_millis(100)).await {
                return End::Stop;
            }
        }
        let buckets = tokio::select! {
            _ = commands.recv_async() => return End::Stop,
            b = self.open_buckets(client) => match b {
                Ok(b) => b,
                Err(end) => return end,
            },
        };
        if self.log.is_none() {
            let js = async_nats::jetstream::new(client.clone());
            let name = self.settings.name.clone();
            let log = tokio::select! {
                _ = commands.recv_async() => return End::Stop,
                log = Log::open(js, &name, self.replicas, self.metrics.clone()) => match log {
                    Ok(log) => Arc::new(log),
                    Err(e) => return End::Retry(e),
                },
            };
            tokio::spawn(super::replica::publish_rounds(
                log.clone(),
                self.replica.rounds.clone(),
            ));
            tokio::spawn(super::snapshot::snapshot_slots(
                log.clone(),
                self.settings.snapshot_every,
            ));
            self.log = Some(log);
        }
        if let Err(end) = self.join(&buckets).await {
            return end;
        }
        let watches = tokio::time::timeout(SETUP_TIMEOUT, async {
            let nodes = buckets.nodes.watch_with_history(">").await;
            let slots = buckets.slots.watch_with_history(">").await;
            (nodes, slots)
        })
        .await;
        let (mut lease_watch, mut slot_watch) = match watches {
            Ok((Ok(n), Ok(s))) => (n, s),
            Ok((Err(e), _) | (_, Err(e))) => {
                return End::Retry(format!("watching the buckets: {e}"))
            }
            Err(_) => return End::Retry("watching the buckets: no answer from JetStream".into()),
        };
        self.metrics.set_problem("cluster: loading the slot map");
        let period = self.settings.refresh_every();
        let mut tick = tokio::time::interval_at((Instant::now() + period).into(), period);
        // Refreshes are sent at least `refresh_every` apart, whatever their latency: the
        // bound on how early another node can count this one silent relies on it.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut ops: JoinSet<Done> = JoinSet::new();
        loop {
            if std::mem::take(&mut self.rewatch) {
                // A consumer on a server that died is only noticed by the watch after its
                // idle heartbeat (5 s) is missed; new ones resume where the old ones were.
                // Created by a task, bounded: the loop must go on refreshing meanwhile.
                let (nodes, slots) = (buckets.nodes.clone(), buckets.slots.clone());
                let (from_lease, from_slot) = (self.lease_seen + 1, self.slot_seen + 1);
                ops.spawn(async move {
                    let watches = tokio::time::timeout(SETUP_TIMEOUT, async move {
                        let n = nodes.watch_from_revision(">", from_lease).await;
                        let s = slots.watch_from_revision(">", from_slot).await;
                        match (n, s) {
                            (Ok(n), Ok(s)) => Ok((n, s)),
                            (Err(e), _) | (_, Err(e)) => Err(e.to_string()),
                        }
                    })
                    .await
                    .unwrap_or_else(|_| Err("no answer from JetStream".into()));
                    Done::Rewatched(watches.map(Box::new))
                });
            }
            let settle = self.dirty_since.map(|t| t + SETTLE);
            tokio::select! {
                _ = commands.recv_async() => {
                    drop(ops);
                    self.leave(&buckets).await;
                    return End::Stop;
                }
                _ = tick.tick() => {
                    if !self.refreshing {
                        self.refreshing = true;
                        let store = buckets.nodes.clone();
                        let (key, value) = (self.me.node.clone(), records::encode(&self.lease));
                        let revision = self.lease_revision;
                        ops.spawn(async move {
                            let sent = Instant::now();
                            let result = store.update(key, value, revision).await;
                            Done::Refreshed { sent, result }
                        });
                    }
                    // Fencing starts or ends with time, not only with events.
                    self.mark_dirty();
                }
                entry = lease_watch.next() => match entry {
                    Some(Ok(entry)) => self.lease_entry(entry),
                    // A lost consumer (its server died): the watch recreates it from the
                    // last entry it delivered, at its next poll.
                    Some(Err(e)) => tracing::warn!("the nodes watch: {e}; resuming"),
                    None => return End::Retry("the nodes watch ended".into()),
                },
                entry = slot_watch.next() => match entry {
                    Some(Ok(entry)) => self.slot_entry(entry),
                    Some(Err(e)) => tracing::warn!("the slots watch: {e}; resuming"),
                    None => return End::Retry("the slots watch ended".into()),
                },
                Some(done) = ops.join_next(), if !ops.is_empty() => match done {
                    Ok(Done::Rewatched(result)) => match result {
                        // The old watches may have missed nothing yet: the new ones start
                        // after what the old ones delivered, and anything delivered twice
                        // is ignored by revision.
                        Ok(watches) => {
                            (lease_watch, slot_watch) = *watches;
                            tracing::info!("watching both buckets again after an outage");
                        }
                        Err(e) => tracing::warn!("watching again after an outage: {e}"),
                    },
                    Ok(done) => {
                        if let Err(end) = self.done(done, &buckets, &mut ops).await {
                            return end;
                        }
                    }
                    Err(e) => return End::Retry(format!("a cluster task failed: {e}")),
                },
                _ = sleep_until(settle), if settle.is_some() => {
                    self.dirty_since = None;
                    self.publish();
                    if self.ready() {
                        self.start_writes(&buckets, &mut ops);
                    }
                }
            }
        }
    }

    /// Opens (creating them if needed) both buckets and checks the cluster's settings.
    async fn open_buckets(&mut self, client: &async_nats::Client) -> Result<Buckets, End> {
        let replicas = match self.settings.replicas {
            0 if client.server_info().cluster.is_some() => 3,
            0 => 1,
            n => n,
        };
        let mut fast = async_nats::jetstream::new(client.clone());
        // A refresh is given up after one period (it may still land: see `lease_moved`).
        fast.set_timeout(self.settings.refresh_every());
        let mut slow = async_nats::jetstream::new(client.clone());
        slow.set_timeout(REQUEST_TIMEOUT);
        let name = &self.settings.name;
        let nodes = kv::Config {
            bucket: format!("{name}_nodes"),
            description: "chatd node leases".into(),
            history: 1,
            max_value_size: 4096,
            // A lease is worthless once the process is gone: no disk needed.
            storage: StorageType::Memory,
            num_replicas: replicas,
            ..Default::default()
        };
        let slots = kv::Config {
            bucket: format!("{name}_slots"),
            description: "chatd slot map".into(),
            history: 1,
            max_value_size: 4096,
            storage: StorageType::File,
            num_replicas: replicas,
            ..Default::default()
        };
        let mut attempt = 0u32;
        let buckets = loop {
            attempt += 1;
            let nodes = open_bucket(&fast, nodes.clone()).await;
            let slots = open_bucket(&slow, slots.clone()).await;
            match (nodes, slots) {
                (Ok(nodes), Ok(slots)) => break Buckets { nodes, slots },
                (Err(e), _) | (_, Err(e)) => {
                    let why = format!("cluster: setting up the JetStream buckets: {e}");
                    if attempt % 10 == 1 {
                        tracing::warn!("{why} (retrying)");
                    }
                    self.metrics.set_problem(&why);
                    tokio::time::sleep(RETRY).await;
                }
            }
        };
        let replicas = buckets.slots.stream.cached_info().config.num_replicas;
        self.replicas = replicas;
        tracing::info!(
            bucket = %buckets.slots.name,
            replicas,
            "cluster buckets ready"
        );
        // The slot count is fixed by the first node: every other one must agree.
        let record = records::encode(&ClusterRecord {
            slots: self.settings.slots,
        });
        loop {
            match buckets.slots.create(CONFIG_KEY, record.clone()).await {
                Ok(_) => {
                    tracing::info!(slots = self.settings.slots, "created the cluster");
                    break;
                }
                Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {
                    let existing = match buckets.slots.get(CONFIG_KEY).await {
                        Ok(Some(v)) => records::decode::<ClusterRecord>(&v),
                        Ok(None) => continue,
                        Err(e) => return Err(End::Retry(format!("reading the config: {e}"))),
                    };
                    match existing {
                        Some(c) if c.slots == self.settings.slots => break,
                        Some(c) => {
                            return Err(End::Fatal(format!(
                                "the cluster has {} slots but this node is configured with {}: \
                                 set cluster.slots = {} (it is fixed when the cluster is created)",
                                c.slots, self.settings.slots, c.slots
                            )))
                        }
                        None => {
                            return Err(End::Fatal(format!(
                                "the {CONFIG_KEY} key of bucket {} is not a chatd cluster record",
                                buckets.slots.name
                            )))
                        }
                    }
                }
                Err(e) => return Err(End::Retry(format!("writing the config: {e}"))),
            }
        }
        Ok(buckets)
    }

    /// Puts this node's lease. The first session of a process replaces whatever a previous
    /// run of this node left; a later session keeps its incarnation (and so its slots) only
    /// if the bucket still holds its lease, and is a new incarnation otherwise.
    async fn join(&mut self, buckets: &Buckets) -> Result<(), End> {
        let current = buckets
            .nodes
            .entry(self.me.node.as_str())
            .await
            .map_err(|e| End::Retry(format!("reading this node's lease: {e}")))?
            .filter(|e| e.operation == Operation::Put)
            .and_then(|e| records::decode::<Lease>(&e.value));
        let ours = current
            .as_ref()
            .is_some_and(|l| l.incarnation == self.me.incarnation);
        if self.lease_revision == 0 && current.is_some() && !ours {
            tracing::info!(node = %self.me.node, "replacing the lease of a previous run of this node");
        }
        if self.lease_revision != 0 && !ours {
            self.new_incarnation();
        }
        let sent = Instant::now();
        let revision = buckets
            .nodes
            .put(self.me.node.as_str(), records::encode(&self.lease))
            .await
            .map_err(|e| End::Retry(format!("putting this node's lease: {e}")))?;
        self.lease_revision = revision;
        self.refreshed_at = sent;
        self.recent.clear();
        self.counted_at = None;
        self.count(sent, revision);
        tracing::info!(
            node = %self.me.node,
            incarnation = %self.me.incarnation,
            "joined the cluster"
        );
        Ok(())
    }

    fn lease_entry(&mut self, entry: kv::Entry) {
        if entry.seen_current && !self.leases_loaded {
            self.leases_loaded = true;
        }
        // Entries come in revision order; an older one is a replay by a renewed watch.
        if entry.revision <= self.lease_seen {
            return;
        }
        self.lease_seen = entry.revision;
        match entry.operation {
            Operation::Put => match records::decode::<Lease>(&entry.value) {
                Some(lease) => {
                    let state = LeaseState {
                        lease,
                        revision: entry.revision,
                    };
                    self.leases.insert(entry.key, state);
                }
                None => tracing::warn!(key = %entry.key, "ignoring a malformed lease"),
            },
            Operation::Delete | Operation::Purge => {
                if self.leases.remove(&entry.key).is_some() {
                    tracing::info!(node = %entry.key, "node left the cluster");
                }
            }
        }
        self.mark_dirty();
    }

    fn slot_entry(&mut self, entry: kv::Entry) {
        if entry.seen_current && !self.slots_loaded {
            self.slots_loaded = true;
            tracing::info!(
                ms = self.started.elapsed().as_millis() as u64,
                "slot map loaded"
            );
        }
        // Entries come in revision order; an older one is a replay by a renewed watch.
        if entry.revision <= self.slot_seen {
            return;
        }
        self.slot_seen = entry.revision;
        let Some(slot) = records::parse_slot_key(&entry.key) else {
            return;
        };
        let Some(state) = self.slots.get_mut(slot as usize) else {
            tracing::warn!(slot, "ignoring a slot beyond the cluster's slot count");
            return;
        };
        if entry.revision < state.revision {
            return; // Our own write's result arrived first.
        }
        let record = match entry.operation {
            Operation::Put => match records::decode::<SlotRecord>(&entry.value) {
                Some(r) => r,
                None => {
                    tracing::warn!(slot, "ignoring a malformed slot record");
                    return;
                }
            },
            Operation::Delete | Operation::Purge => SlotRecord {
                owner: None,
                epoch: state.record.epoch,
                rebuilding: false,
            },
        };
        if self.slots_loaded && changed_hands(&state.record, &record) {
            self.metrics.slot_moves.inc();
        }
        *state = SlotState {
            record,
            revision: entry.revision,
        };
        self.mark_dirty();
    }

    /// Starts the claims and releases the plan asks for, all at once (JetStream pipelines
    /// them; each is a compare-and-swap on the slot's revision).
    ///
    /// Claims go together, marked `rebuilding`: once they landed, the slots are rebuilt
    /// from their logs (`replica::take_over`), then marked rebuilt, and only then served.
    /// A slot of ours still marked `rebuilding` (a take-over that failed or was cut short)
    /// is taken over again. A dirty slot (local writes its log lacks) is released, to be
    /// claimed, and so rebuilt, again.
    fn start_writes(&mut self, buckets: &Buckets, ops: &mut JoinSet<Done>) {
        let mut writes = plan::plan(&self.me, &self.leases, &self.slots, &self.busy);
        let dirty = self.replica.state.dirty();
        self.metrics.dirty_slots.set(dirty.len() as i64);
        for slot in dirty {
            let Some(state) = self.slots.get(slot as usize) else {
                continue;
            };
            let mine = state.record.owner.as_ref() == Some(&self.me);
            if mine
                && !state.record.rebuilding
                && !self.busy.contains(&slot)
                && !writes.iter().any(|w| w.slot == slot)
            {
                writes.push(SlotWrite {
                    slot,
                    expect: state.revision,
                    record: SlotRecord {
                        owner: None,
                        epoch: state.record.epoch + 1,
                        rebuilding: false,
                    },
                });
            }
        }
        let (claims, releases): (Vec<_>, Vec<_>) = writes.into_iter().partition(|w| w.is_claim());
        for write in releases {
            self.busy.insert(write.slot);
            let store = buckets.slots.clone();
            ops.spawn(async move {
                let result = write_slot(&store, &write).await;
                Done::Wrote { write, result }
            });
        }
        let Some(log) = self.log.clone() else {
            return;
        };
        // Ours, but not rebuilt: as if just claimed.
        let unfinished: Vec<(SlotWrite, u64)> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(slot, s)| {
                s.record.rebuilding
                    && s.record.owner.as_ref() == Some(&self.me)
                    && !self.busy.contains(&(*slot as u32))
                    && !claims.iter().any(|c| c.slot == *slot as u32)
            })
            .map(|(slot, s)| {
                let write = SlotWrite {
                    slot: slot as u32,
                    expect: s.revision,
                    record: s.record.clone(),
                };
                (write, s.revision)
            })
            .collect();
        if claims.is_empty() && unfinished.is_empty() {
            return;
        }
        for write in claims.iter().chain(unfinished.iter().map(|(w, _)| w)) {
            self.busy.insert(write.slot);
        }
        self.metrics.replaying.inc();
        let store = buckets.slots.clone();
        let shards = self.replica.replays.clone();
        let slot_count = self.settings.slots;
        ops.spawn(async move {
            let (mut landed, mut results) = write_all(&store, claims).await;
            landed.extend(unfinished);
            let slots: std::collections::BTreeSet<u32> =
                landed.iter().map(|(w, _)| w.slot).collect();
            let taken_over = if slots.is_empty() {
                Ok(())
            } else {
                super::replica::take_over(&log, &slots, slot_count, &shards).await
            };
            if taken_over.is_ok() {
                let rebuilt = landed.into_iter().map(|(w, revision)| SlotWrite {
                    slot: w.slot,
                    expect: revision,
                    record: SlotRecord {
                        rebuilding: false,
                        ..w.record
                    },
                });
                let (marked, failed) = write_all(&store, rebuilt.collect()).await;
                results.extend(failed);
                results.extend(marked.into_iter().map(|(w, r)| (w, Ok(r))));
            } else {
                results.extend(landed.into_iter().map(|(w, r)| (w, Ok(r))));
            }
            Done::Claimed {
                results,
                taken_over,
            }
        });
    }

    async fn done(
        &mut self,
        done: Done,
        buckets: &Buckets,
        ops: &mut JoinSet<Done>,
    ) -> Result<(), End> {
        match done {
            Done::Refreshed { sent, result } => {
                self.refreshing = false;
                match result {
                    Ok(revision) => {
                        if std::mem::take(&mut self.refresh_failures) > 0 {
                            self.rewatch = true;
                        }
                        self.refreshed(sent, revision, buckets, ops);
                    }
                    Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                        self.lease_moved(buckets).await?;
                    }
                    Err(e) => {
                        self.refresh_failures += 1;
                        tracing::debug!("lease refresh failed: {e}");
                    }
                }
            }
            Done::Evicted {
                node,
                revision,
                past,
                result,
            } => {
                self.evicting.remove(&node);
                match result {
                    Ok(()) => {
                        self.metrics.nodes_evicted.inc();
                        tracing::warn!(
                            node = %node,
                            revision,
                            ?past,
                            "removed the lease of a silent node"
                        );
                    }
                    Err(e) => tracing::debug!(node = %node, "eviction refused: {e}"),
                }
            }
            Done::Rewatched(_) => {}
            Done::Claimed {
                results,
                taken_over,
            } => {
                self.metrics.replaying.dec();
                let claimed: std::collections::BTreeSet<u32> = results
                    .iter()
                    .filter(|(_, r)| r.is_ok())
                    .map(|(w, _)| w.slot)
                    .collect();
                match taken_over {
                    Ok(()) => self.replica.state.clean(&claimed),
                    // Still marked rebuilding: the next plan takes them over again.
                    Err(e) => tracing::warn!(
                        slots = claimed.len(),
                        "taking slots over failed: {e}; trying again"
                    ),
                }
                for (write, result) in results {
                    self.wrote(write, result);
                }
            }
            Done::Wrote { write, result } => {
                if !write.is_claim() {
                    if let Some(log) = &self.log {
                        log.forget(write.slot);
                    }
                }
                self.wrote(write, result);
            }
        }
        self.mark_dirty();
        Ok(())
    }

    /// Records the result of one slot write.
    fn wrote(&mut self, write: SlotWrite, result: Result<u64, String>) {
        self.busy.remove(&write.slot);
        match result {
            Ok(revision) => {
                match (write.is_claim(), write.record.rebuilding) {
                    (true, true) => self.metrics.slot_claims.inc(),
                    (true, false) => {} // marked rebuilt
                    (false, _) => self.metrics.slot_releases.inc(),
                }
                let state = &mut self.slots[write.slot as usize];
                if state.revision < revision {
                    if self.slots_loaded && changed_hands(&state.record, &write.record) {
                        self.metrics.slot_moves.inc();
                    }
                    *state = SlotState {
                        record: write.record,
                        revision,
                    };
                }
            }
            Err(e) => tracing::debug!(slot = write.slot, "slot write refused: {e}"),
        }
    }

    fn refreshed(
        &mut self,
        sent: Instant,
        revision: u64,
        buckets: &Buckets,
        ops: &mut JoinSet<Done>,
    ) {
        if self.fenced() {
            tracing::info!("lease refreshed again");
        }
        self.lease_revision = revision;
        self.refreshed_at = sent;
        self.count(sent, revision);
        let silent = plan::silent(
            &self.me.node,
            &self.leases,
            &self.recent,
            REFRESHES as usize,
        );
        for (node, revision) in silent {
            if !self.evicting.insert(node.clone()) {
                continue;
            }
            let store = buckets.nodes.clone();
            let past: Vec<u64> = self.recent.iter().copied().collect();
            ops.spawn(async move {
                let result = store.delete_expect_revision(&node, Some(revision)).await;
                Done::Evicted {
                    node,
                    revision,
                    past,
                    result,
                }
            });
        }
    }

    /// Counts a landed lease write in `recent`, the clock other leases are judged by, if it
    /// was sent (nearly) a period after the last one counted: that spacing is what bounds
    /// how early a silent node can be judged (see [`Node::fenced`]), whatever path (a join,
    /// a late tick) wrote it.
    fn count(&mut self, sent: Instant, revision: u64) {
        let spacing = self.settings.refresh_every() * 9 / 10;
        if self.counted_at.is_some_and(|last| sent < last + spacing) {
            return;
        }
        self.counted_at = Some(sent);
        self.recent.push_back(revision);
        while self.recent.len() > REFRESHES as usize {
            self.recent.pop_front();
        }
    }

    /// A refresh found the lease at another revision than ours: it was our own refresh
    /// whose answer was lost, another process using our name, or our lease was removed.
    async fn lease_moved(&mut self, buckets: &Buckets) -> Result<(), End> {
        let entry = buckets
            .nodes
            .entry(self.me.node.as_str())
            .await
            .map_err(|e| End::Retry(format!("reading this node's lease: {e}")))?;
        match entry {
            Some(e) if e.operation == Operation::Put => {
                let holder = records::decode::<Lease>(&e.value);
                if holder.as_ref().map(|l| &l.incarnation) == Some(&self.me.incarnation) {
                    // Our refresh landed; only its answer was lost. It is not counted in
                    // `recent` (its send time is unknown) and does not end a fence.
                    self.lease_revision = e.revision;
                    return Ok(());
                }
                let listen = holder.map(|l| l.listen).unwrap_or_default();
                Err(End::Fatal(format!(
                    "another process took over node name {:?} (it serves {listen}); \
                     every node needs a name of its own (--node)",
                    self.me.node
                )))
            }
            _ => {
                tracing::warn!(
                    node = %self.me.node,
                    "this node's lease was removed (it was silent too long); joining again"
                );
                self.metrics.lease_losses.inc();
                self.new_incarnation();
                self.join(buckets).await
            }
        }
    }

    /// Publishes the snapshot the shards read, and the metrics.
    fn publish(&mut self) {
        let ready = self.ready();
        // A slot being rebuilt from its log is served by nobody yet, and one of ours with a
        // write in flight is not served here (a released one is on its way elsewhere).
        let slots: Vec<SlotView> = self
            .slots
            .iter()
            .enumerate()
            .map(|(i, s)| SlotView {
                owner: s.record.owner.as_ref().map(|o| o.node.clone()),
                epoch: s.record.epoch,
                owner_live: s.record.owner.as_ref().is_some_and(|o| {
                    plan::owner_live(o, &self.leases)
                        && !s.record.rebuilding
                        && !(o == &self.me && self.busy.contains(&(i as u32)))
                }),
            })
            .collect();
        let map = SlotMap {
            node: self.me.node.clone(),
            nodes: self
                .leases
                .iter()
                .map(|(name, l)| {
                    let node = LiveNode {
                        listen: l.lease.listen.clone(),
                        shards: l.lease.shards as usize,
                    };
                    (name.clone(), node)
                })
                .collect(),
            slots: if self.slots_loaded { slots } else { Vec::new() },
            ready,
        };
        let owned = self
            .slots
            .iter()
            .filter(|s| ready && !s.record.rebuilding && s.record.owner.as_ref() == Some(&self.me))
            .count();
        let unowned = self
            .slots
            .iter()
            .filter(|s| {
                !s.record
                    .owner
                    .as_ref()
                    .is_some_and(|o| plan::owner_live(o, &self.leases))
            })
            .count();
        self.metrics.slots_owned.set(owned as i64);
        self.metrics.slots_unowned.set(unowned as i64);
        self.metrics.live_nodes.set(self.leases.len() as i64);
        self.metrics.set_ready(ready);
        if !ready {
            let why = if !self.leases_loaded || !self.slots_loaded {
                "cluster: loading the slot map"
            } else if self.fenced() {
                "cluster: cannot refresh this node's lease"
            } else {
                "cluster: joining"
            };
            self.metrics.set_problem(why);
        } else if self
            .metrics
            .first_claimed_ms
            .load(std::sync::atomic::Ordering::Relaxed)
            == 0
        {
            let targets = (0..self.settings.slots)
                .filter(|&s| {
                    super::rendezvous::target(s, self.leases.keys().map(String::as_str))
                        == Some(self.me.node.as_str())
                })
                .count();
            if targets > 0 && owned >= targets {
                let ms = self.started.elapsed().as_millis().max(1) as u64;
                self.metrics
                    .first_claimed_ms
                    .store(ms, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(ms, slots = owned, "holding every slot this node should own");
            }
        }
        self.view.store(map);
    }

    /// Hands this node's slots back and removes its lease, so the others take over now
    /// instead of after `lease_ttl`.
    async fn leave(&mut self, buckets: &Buckets) {
        let mut writes = JoinSet::new();
        let mut count = 0;
        for (slot, state) in self.slots.iter().enumerate() {
            if state.record.owner.as_ref() != Some(&self.me) {
                continue;
            }
            count += 1;
            let write = SlotWrite {
                slot: slot as u32,
                expect: state.revision,
                record: SlotRecord {
                    owner: None,
                    epoch: state.record.epoch + 1,
                    rebuilding: false,
                },
            };
            let store = buckets.slots.clone();
            writes.spawn(async move { write_slot(&store, &write).await.is_ok() });
        }
        let released = tokio::time::timeout(LEAVE_TIMEOUT, async {
            let mut released = 0;
            while let Some(ok) = writes.join_next().await {
                released += usize::from(ok.unwrap_or(false));
            }
            released
        })
        .await
        .unwrap_or(0);
        let node = self.me.node.clone();
        let revision = Some(self.lease_revision);
        let removed = tokio::time::timeout(
            LEAVE_TIMEOUT,
            buckets.nodes.delete_expect_revision(&node, revision),
        )
        .await;
        tracing::info!(
            released,
            of = count,
            lease_removed = matches!(removed, Ok(Ok(()))),
            "left the cluster"
        );
        self.lost_view();
    }
}

/// A claim of a slot that had an owner before (directly or through a release): what
/// `chatd_cluster_slot_moves_total` counts. A slot's first claim is not a move.
fn changed_hands(old: &SlotRecord, new: &SlotRecord) -> bool {
    new.owner.is_some() && new.owner != old.owner && old.epoch > 0
}

async fn sleep_until(deadline: Option<Instant>) {
    if let Some(deadline) = deadline {
        tokio::time::sleep_until(deadline.into()).await;
    }
}

/// Opens a bucket, creating it if it does not exist. Each attempt is bounded by
/// [`SETUP_TIMEOUT`]: while JetStream elects its leaders, requests go unanswered.
async fn open_bucket(
    js: &async_nats::jetstream::Context,
    config: kv::Config,
) -> Result<Store, String> {
    let bucket = config.bucket.clone();
    tokio::time::timeout(SETUP_TIMEOUT, try_open_bucket(js, config))
        .await
        .unwrap_or_else(|_| Err(format!("bucket {bucket}: no answer from JetStream")))
}

async fn try_open_bucket(
    js: &async_nats::jetstream::Context,
    config: kv::Config,
) -> Result<Store, String> {
    match js.get_key_value(config.bucket.as_str()).await {
        Ok(store) => Ok(store),
        Err(_) => match js.create_key_value(config.clone()).await {
            Ok(store) => Ok(store),
            // Another node created it meanwhile, or it exists with other settings.
            Err(create) => js
                .get_key_value(config.bucket.as_str())
                .await
                .map_err(|_| format!("bucket {}: {create}", config.bucket)),
        },
    }
}

/// The writes, all at once: those that landed (with their new revisions), and the
/// results of those that did not.
async fn write_all(
    store: &Store,
    writes: Vec<SlotWrite>,
) -> (Vec<(SlotWrite, u64)>, Vec<(SlotWrite, Result<u64, String>)>) {
    let mut running = JoinSet::new();
    for write in writes {
        let store = store.clone();
        running.spawn(async move {
            let result = write_slot(&store, &write).await;
            (write, result)
        });
    }
    let (mut landed, mut failed) = (Vec::new(), Vec::new());
    while let Some(done) = running.join_next().await {
        match done {
            Ok((write, Ok(revision))) => landed.push((write, revision)),
            Ok((write, Err(e))) => failed.push((write, Err(e))),
            Err(e) => tracing::error!("a slot write task failed: {e}"),
        }
    }
    (landed, failed)
}

/// One compare-and-swap of a slot's record; the new revision.
async fn write_slot(store: &Store, write: &SlotWrite) -> Result<u64, String> {
    let key = records::slot_key(write.slot);
    let value = records::encode(&write.record);
    if write.expect == 0 {
        store.create(key, value).await.map_err(|e| e.to_string())
    } else {
        store
            .update(key, value, write.expect)
            .await
            .map_err(|e| e.to_string())
    }
}
