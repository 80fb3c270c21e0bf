//! The cluster foundation with real processes on loopback: three `nats-server` processes
//! (JetStream, clustered) and chatd nodes started from the built binary. What is checked
//! is the slot map in JetStream itself (read here with async-nats), the nodes' metrics and
//! `/health`. Timings are printed (`--nocapture`), never asserted.
//!
//! `CHATD_CLUSTER_TEST_LOGS=1` prints every node's log at the end of each test.
//!
//! nats-server 2.10+ comes from `CHATD_NATS_SERVER` (set by `./dev test`, which installs
//! it) or PATH; without one these tests say so and pass without running (and fail under
//! `CI`, where ./dev test must have installed it).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chat_server::cluster::rendezvous;
use futures_lite::StreamExt;

const SLOTS: u32 = 1024;

/// One cluster test at a time: each runs six processes on a 2-core machine.
pub(crate) static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A nats-server 2.10 or newer, or `None` (and a line saying why the test is skipped).
pub(crate) fn nats_server() -> Option<PathBuf> {
    let candidates = std::env::var_os("CHATD_NATS_SERVER")
        .map(PathBuf::from)
        .into_iter()
        .chain(std::iter::once(PathBuf::from("nats-server")));
    for candidate in candidates {
        let Ok(out) = Command::new(&candidate).arg("--version").output() else {
            continue;
        };
        let text = String::from_utf8_lossy(&out.stdout);
        let version: Vec<u32> = text
            .rsplit('v')
            .next()
            .unwrap_or("")
            .trim()
            .split('.')
            .filter_map(|p| p.parse().ok())
            .collect();
        if version.len() >= 2 && (version[0], version[1]) >= (2, 10) {
            return Some(candidate);
        }
    }
    // CI runs ./dev test, which installs nats-server: there, a missing one is a failure.
    assert!(
        std::env::var_os("CI").is_none(),
        "no nats-server 2.10+ in CI: ./dev test should have installed it (CHATD_NATS_SERVER)"
    );
    eprintln!(
        "SKIPPED: no nats-server 2.10+ (set CHATD_NATS_SERVER or run ./dev test, which installs it)"
    );
    None
}

/// Three nats-server processes with JetStream in one NATS cluster, on loopback.
pub(crate) struct Nats {
    _dir: tempfile::TempDir,
    servers: Vec<Option<Child>>,
    ports: Vec<u16>,
}

impl Nats {
    pub(crate) fn start(binary: &Path, n: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let routes: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let route_urls = routes
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let servers = (0..n)
            .map(|i| {
                let store = dir.path().join(format!("nats-{i}"));
                let log = std::fs::File::create(dir.path().join(format!("nats-{i}.log"))).unwrap();
                let child = Command::new(binary)
                    .args(["-a", "127.0.0.1", "-p", &ports[i].to_string()])
                    .args(["-n", &format!("nats-{i}"), "-js", "-sd"])
                    .arg(&store)
                    .args(["--cluster_name", "chatd-test"])
                    .args(["--cluster", &format!("nats://127.0.0.1:{}", routes[i])])
                    .args(["--routes", &route_urls])
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .expect("nats-server starts");
                Some(child)
            })
            .collect();
        Self {
            _dir: dir,
            servers,
            ports,
        }
    }

    pub(crate) fn urls(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// kill -9 of server `i` (named `nats-<i>`).
    pub(crate) fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.servers[i].take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        for i in 0..self.servers.len() {
            self.kill(i);
        }
    }
}

/// A chatd process that is a node of the cluster.
pub(crate) struct Node {
    pub(crate) name: String,
    pub(crate) dir: tempfile::TempDir,
    child: Option<Child>,
    metrics: SocketAddr,
    /// Where clients connect.
    pub(crate) listen: String,
    /// What it was started with, for a restart.
    nats_urls: String,
    args: Vec<String>,
}

impl Node {
    pub(crate) fn start(name: &str, nats: &Nats) -> Self {
        Self::start_with(name, nats, "")
    }

    /// A node whose `--config` file holds `toml`.
    pub(crate) fn start_with(name: &str, nats: &Nats, toml: &str) -> Self {
        Self::start_args(name, nats, toml, &[])
    }

    /// A node whose `--config` file holds `toml`, with more command-line `args`.
    pub(crate) fn start_args(name: &str, nats: &Nats, toml: &str, args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("chatd.toml");
        std::fs::write(&config, toml).unwrap();
        let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let listen = format!("127.0.0.1:{}", free_port());
        let mut node = Self {
            name: name.to_string(),
            dir,
            child: None,
            metrics,
            listen,
            nats_urls: nats.urls(),
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        node.spawn();
        node
    }

    /// Starts the process (again) with the node's data dir, ports and arguments.
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("chatd.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_chatd"))
            .arg("--config")
            .arg(self.dir.path().join("chatd.toml"))
            .arg("--data-dir")
            .arg(self.dir.path())
            .args([
                "--listen",
                &self.listen,
                "--metrics-listen",
                &self.metrics.to_string(),
            ])
            .args(["--shards", "1", "--no-pin", "--log", "info"])
            .args(["--nats", &self.nats_urls, "--node", &self.name])
            .args(&self.args)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("chatd starts");
        self.child = Some(child);
    }

    /// SIGTERM, wait for the process to end, and start it again as it was.
    pub(crate) fn restart(&mut self) {
        self.terminate();
        self.spawn();
    }

    pub(crate) fn kill_9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// SIGTERM, and wait for the process to end.
    fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            let status = Command::new("sh")
                .args(["-c", &format!("kill -TERM {}", child.id())])
                .status()
                .unwrap();
            assert!(status.success());
            let deadline = Instant::now() + Duration::from_secs(30);
            while child.try_wait().unwrap().is_none() {
                assert!(Instant::now() < deadline, "{} did not stop", self.name);
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Sends `signal` (`STOP`, `CONT`) to the process.
    pub(crate) fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let status = Command::new("sh")
            .args(["-c", &format!("kill -{signal} {pid}")])
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("chatd.log")).unwrap_or_default()
    }

    /// (HTTP status, body) of a GET on the metrics port; `None` if it does not answer.
    fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut stream = TcpStream::connect_timeout(&self.metrics, Duration::from_secs(2)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let (head, body) = response.split_once("\r\n\r\n")?;
        let status = head.split(' ').nth(1)?.parse().ok()?;
        Some((status, body.to_string()))
    }

    fn healthy(&self) -> bool {
        matches!(self.get("/health"), Some((200, _)))
    }

    /// The value of an unlabelled metric.
    pub(crate) fn metric(&self, name: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics")?;
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill_9();
        // CHATD_CLUSTER_TEST_LOGS=1 shows every node's log, also when the test passes.
        if std::env::var_os("CHATD_CLUSTER_TEST_LOGS").is_some() {
            eprintln!("--- log of {} ---\n{}", self.name, self.log());
        }
    }
}

/// One slot's record as stored in the slots bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Slot {
    owner: Option<(String, String)>,
    epoch: u64,
    /// Claimed, not yet rebuilt from its log by its owner.
    rebuilding: bool,
}

/// The cluster's state as JetStream holds it.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    /// Node name -> incarnation, for every lease.
    leases: BTreeMap<String, String>,
    /// Every slot key present.
    slots: BTreeMap<u32, Slot>,
}

/// Reads both buckets (every key's latest value) over its own NATS connection.
fn read_cluster(urls: &str) -> Result<Snapshot, String> {
    within_3s("reading the buckets", async {
        let js = jetstream(urls).await?;
        let mut snapshot = Snapshot::default();
        for entry in latest(&js, "chatd_nodes").await? {
            let value: serde_json::Value =
                serde_json::from_slice(&entry.value).map_err(|e| e.to_string())?;
            let incarnation = value["incarnation"].as_str().unwrap_or("").to_string();
            snapshot.leases.insert(entry.key, incarnation);
        }
        for entry in latest(&js, "chatd_slots").await? {
            let Some(slot_key) = entry.key.strip_prefix("slot.") else {
                continue;
            };
            let value: serde_json::Value =
                serde_json::from_slice(&entry.value).map_err(|e| e.to_string())?;
            let owner = value.get("owner").map(|o| {
                let field = |f: &str| o[f].as_str().unwrap_or("").to_string();
                (field("node"), field("incarnation"))
            });
            let epoch = value["epoch"].as_u64().unwrap_or(0);
            let rebuilding = value["rebuilding"].as_bool().unwrap_or(false);
            let slot = Slot {
                owner,
                epoch,
                rebuilding,
            };
            snapshot.slots.insert(slot_number(slot_key)?, slot);
        }
        Ok(snapshot)
    })
}

fn slot_number(key: &str) -> Result<u32, String> {
    key.parse().map_err(|e| format!("slot key {key:?}: {e}"))
}

/// A JetStream context over a connection of its own to `urls` (comma-separated).
async fn jetstream(urls: &str) -> Result<async_nats::jetstream::Context, String> {
    let client = async_nats::ConnectOptions::new()
        .ignore_discovered_servers()
        .connect(urls.split(',').collect::<Vec<_>>())
        .await
        .map_err(|e| e.to_string())?;
    let mut js = async_nats::jetstream::new(client);
    js.set_timeout(Duration::from_secs(1));
    Ok(js)
}

/// Runs `work` on a runtime of its own, failing with "`what` timed out" after 3 s.
fn within_3s<T>(
    what: &str,
    work: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(3), work)
            .await
            .map_err(|_| format!("{what} timed out"))?
    })
}

/// The latest entry of every key of `bucket` that is not deleted.
async fn latest(
    js: &async_nats::jetstream::Context,
    bucket: &str,
) -> Result<Vec<async_nats::jetstream::kv::Entry>, String> {
    let kv = js.get_key_value(bucket).await.map_err(|e| e.to_string())?;
    // A watch of an empty bucket would wait for a first entry.
    let info = kv.stream.get_info().await.map_err(|e| e.to_string())?;
    if info.state.messages == 0 {
        return Ok(Vec::new());
    }
    let mut watch = kv
        .watch_with_history(">")
        .await
        .map_err(|e| e.to_string())?;
    let mut entries: BTreeMap<String, async_nats::jetstream::kv::Entry> = BTreeMap::new();
    loop {
        let entry = watch
            .next()
            .await
            .ok_or("watch ended")?
            .map_err(|e| e.to_string())?;
        let current = entry.seen_current;
        if entry.operation == async_nats::jetstream::kv::Operation::Put {
            entries.insert(entry.key.clone(), entry);
        } else {
            entries.remove(&entry.key);
        }
        if current {
            return Ok(entries.into_values().collect());
        }
    }
}

/// The name of the server that leads `stream`.
fn stream_leader(urls: &str, stream: &str) -> Result<String, String> {
    within_3s("asking for the stream's leader", async {
        let js = jetstream(urls).await?;
        let mut stream = js.get_stream(stream).await.map_err(|e| e.to_string())?;
        let info = stream.info().await.map_err(|e| e.to_string())?;
        info.cluster
            .as_ref()
            .and_then(|c| c.leader.clone())
            .ok_or_else(|| "no leader".to_string())
    })
}

/// The wall clock as HH:MM:SS.mmm UTC, to compare with the nodes' log lines.
fn utc_now() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        % 86_400_000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// Ok when the buckets show exactly `live` holding leases and every slot owned, once, by
/// its rendezvous target among them, in the incarnation that holds the lease.
pub(crate) fn converged(urls: &str, live: &[&str]) -> Result<Snapshot, String> {
    let snapshot = read_cluster(urls)?;
    let names: Vec<&str> = snapshot.leases.keys().map(String::as_str).collect();
    if names != live {
        return Err(format!("leases held by {names:?}, expected {live:?}"));
    }
    for slot in 0..SLOTS {
        let target = rendezvous::target(slot, live.iter().copied()).unwrap();
        let record = snapshot
            .slots
            .get(&slot)
            .ok_or(format!("slot {slot} never claimed"))?;
        let Some((owner, incarnation)) = &record.owner else {
            return Err(format!("slot {slot} is free"));
        };
        if owner != target {
            return Err(format!("slot {slot} is on {owner}, its target is {target}"));
        }
        if snapshot.leases.get(owner) != Some(incarnation) {
            return Err(format!(
                "slot {slot} is held by an old incarnation of {owner}"
            ));
        }
        if record.rebuilding {
            return Err(format!("slot {slot} is still being rebuilt by {owner}"));
        }
    }
    Ok(snapshot)
}

/// Polls `check` until it holds; panics after `limit` with its last complaint and the
/// nodes' logs.
pub(crate) fn wait_for<T>(
    limit: Duration,
    nodes: &[&Node],
    mut check: impl FnMut() -> Result<T, String>,
) -> (T, Duration) {
    let start = Instant::now();
    loop {
        match check() {
            Ok(v) => return (v, start.elapsed()),
            Err(why) => {
                if start.elapsed() > limit {
                    for node in nodes {
                        eprintln!("--- log of {} ---\n{}", node.name, node.log());
                    }
                    panic!("not within {limit:?}: {why}");
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Every node is ready and its metrics count exactly its rendezvous share as owned.
pub(crate) fn nodes_agree(nodes: &[&Node], live: &[&str]) -> Result<(), String> {
    for node in nodes {
        if !node.healthy() {
            return Err(format!(
                "{} is not healthy: {:?}",
                node.name,
                node.get("/health")
            ));
        }
        let share = (0..SLOTS)
            .filter(|&s| rendezvous::target(s, live.iter().copied()) == Some(node.name.as_str()))
            .count() as f64;
        let owned = node.metric("chatd_cluster_slots_owned");
        if owned != Some(share) {
            return Err(format!(
                "{} reports {owned:?} slots owned, its share is {share}",
                node.name
            ));
        }
        let live_nodes = node.metric("chatd_cluster_live_nodes");
        if live_nodes != Some(live.len() as f64) {
            return Err(format!("{} sees {live_nodes:?} live nodes", node.name));
        }
    }
    Ok(())
}

#[test]
fn three_nodes_own_every_slot_once_and_a_killed_nodes_slots_move_to_the_others() {
    let Some(binary) = nats_server() else { return };
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let nats = Nats::start(&binary, 3);
    let urls = nats.urls();
    let started = Instant::now();
    let a = Node::start("a", &nats);
    let b = Node::start("b", &nats);
    let mut c = Node::start("c", &nats);
    let nodes = [&a, &b, &c];

    let (before, _) = wait_for(Duration::from_secs(90), &nodes, || {
        converged(&urls, &["a", "b", "c"])
    });
    println!(
        "cluster: 3 nodes hold all {SLOTS} slots by rendezvous {} ms after they were started",
        started.elapsed().as_millis()
    );
    wait_for(Duration::from_secs(30), &nodes, || {
        nodes_agree(&nodes, &["a", "b", "c"])
    });
    assert!(!c.log().is_empty());

    c.kill_9();
    println!("cluster: killed node c at {} UTC", utc_now());
    let (after, failover) = wait_for(Duration::from_secs(60), &[&a, &b], || {
        converged(&urls, &["a", "b"])
    });
    println!(
        "cluster: kill -9 of node c: a and b hold all {SLOTS} slots {} ms later",
        failover.as_millis()
    );
    let mut moved = 0;
    for slot in 0..SLOTS {
        let (old, new) = (&before.slots[&slot], &after.slots[&slot]);
        if old.owner.as_ref().map(|o| o.0.as_str()) == Some("c") {
            moved += 1;
            assert!(
                new.epoch > old.epoch,
                "slot {slot} moved without a new epoch"
            );
        } else {
            assert_eq!(old, new, "slot {slot} of a surviving node changed");
        }
    }
    assert!(moved > 200, "c held {moved} slots");
    wait_for(Duration::from_secs(30), &[&a, &b], || {
        nodes_agree(&[&a, &b], &["a", "b"])
    });
    let evicted = a.metric("chatd_cluster_nodes_evicted_total").unwrap()
        + b.metric("chatd_cluster_nodes_evicted_total").unwrap();
    assert_eq!(evicted, 1.0, "exactly one node removed c's lease");
}

#[test]
fn a_joining_node_takes_its_share_with_new_epochs_and_hands_it_back_on_sigterm() {
    let Some(binary) = nats_server() else { return };
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let nats = Nats::start(&binary, 3);
    let urls = nats.urls();
    let a = Node::start("a", &nats);
    let b = Node::start("b", &nats);
    let (before, _) = wait_for(Duration::from_secs(90), &[&a, &b], || {
        converged(&urls, &["a", "b"])
    });

    let joined = Instant::now();
    let mut c = Node::start("c", &nats);
    let (after, _) = wait_for(Duration::from_secs(60), &[&a, &b, &c], || {
        converged(&urls, &["a", "b", "c"])
    });
    println!(
        "cluster: node c joined and holds its share {} ms after it was started",
        joined.elapsed().as_millis()
    );
    let mut taken = 0;
    for slot in 0..SLOTS {
        let (old, new) = (&before.slots[&slot], &after.slots[&slot]);
        if rendezvous::target(slot, ["a", "b", "c"]) == Some("c") {
            taken += 1;
            // Released by its owner (+1), claimed by c (+1).
            assert_eq!(new.epoch, old.epoch + 2, "slot {slot}");
        } else {
            assert_eq!(old, new, "slot {slot} moved although c is not its target");
        }
    }
    assert!(taken > 200, "c took {taken} slots");
    wait_for(Duration::from_secs(30), &[&a, &b, &c], || {
        nodes_agree(&[&a, &b, &c], &["a", "b", "c"])
    });

    // SIGTERM: c hands its slots back and removes its lease before it exits.
    c.terminate();
    let (_, handover) = wait_for(Duration::from_secs(30), &[&a, &b], || {
        converged(&urls, &["a", "b"])
    });
    println!(
        "cluster: SIGTERM of node c: a and b hold all slots {} ms after c exited",
        handover.as_millis()
    );
    assert!(c.log().contains("left the cluster"), "{}", c.log());
    let evicted = a.metric("chatd_cluster_nodes_evicted_total").unwrap()
        + b.metric("chatd_cluster_nodes_evicted_total").unwrap();
    assert_eq!(evicted, 0.0, "c removed its own lease");
}

#[test]
fn the_slot_map_keeps_working_when_a_nats_server_dies() {
    let Some(binary) = nats_server() else { return };
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut nats = Nats::start(&binary, 3);
    let urls = nats.urls();
    let a = Node::start("a", &nats);
    let b = Node::start("b", &nats);
    let mut c = Node::start("c", &nats);
    let nodes = [&a, &b, &c];
    wait_for(Duration::from_secs(90), &nodes, || {
        converged(&urls, &["a", "b", "c"])
    });
    wait_for(Duration::from_secs(30), &nodes, || {
        nodes_agree(&nodes, &["a", "b", "c"])
    });

    // The worst server to lose: the leader of the leases' stream (its Raft group has to
    // elect another, and no lease can be refreshed meanwhile).
    let leader = stream_leader(&urls, "KV_chatd_nodes").unwrap();
    let index: usize = leader.strip_prefix("nats-").unwrap().parse().unwrap();
    nats.kill(index);
    println!("cluster: killed NATS server {leader} at {} UTC", utc_now());
    let survivors = urls
        .split(',')
        .enumerate()
        .filter(|(i, _)| *i != index)
        .map(|(_, u)| u)
        .collect::<Vec<_>>()
        .join(",");
    let (_, readable) = wait_for(Duration::from_secs(60), &nodes, || {
        stream_leader(&survivors, "KV_chatd_nodes")?;
        converged(&survivors, &["a", "b", "c"]).map(|_| ())
    });
    let (_, ready) = wait_for(Duration::from_secs(60), &nodes, || {
        nodes_agree(&nodes, &["a", "b", "c"])
    });
    println!(
        "cluster: kill -9 of NATS server {leader} (leader of the leases): the map was readable by \
         a new client {} ms later, every node ready {} ms after that",
        readable.as_millis(),
        ready.as_millis()
    );
    // Nobody could refresh during the election, so nobody was judged silent.
    for node in nodes {
        assert_eq!(node.metric("chatd_cluster_nodes_evicted_total"), Some(0.0));
        assert_eq!(node.metric("chatd_cluster_lease_losses_total"), Some(0.0));
    }

    // The map still moves: c's slots go to a and b.
    c.kill_9();
    let (_, failover) = wait_for(Duration::from_secs(60), &[&a, &b], || {
        converged(&survivors, &["a", "b"])
    });
    println!(
        "cluster: with 2 of 3 NATS servers, kill -9 of node c: a and b hold all slots {} ms later",
        failover.as_millis()
    );
}

#[test]
fn a_paused_node_loses_its_lease_and_comes_back_as_a_new_incarnation() {
    let Some(binary) = nats_server() else { return };
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let nats = Nats::start(&binary, 3);
    let urls = nats.urls();
    let a = Node::start("a", &nats);
    let b = Node::start("b", &nats);
    let c = Node::start("c", &nats);
    let nodes = [&a, &b, &c];
    let (before, _) = wait_for(Duration::from_secs(90), &nodes, || {
        converged(&urls, &["a", "b", "c"])
    });

    // SIGSTOP past the lease: a and b take c's slots.
    c.signal("STOP");
    let (during, _) = wait_for(Duration::from_secs(60), &[&a, &b], || {
        converged(&urls, &["a", "b"])
    });
    // SIGCONT: c finds its lease removed, joins again as a new incarnation and claims its
    // share back; nothing of its old incarnation is its own any more.
    c.signal("CONT");
    let (after, back) = wait_for(Duration::from_secs(60), &nodes, || {
        converged(&urls, &["a", "b", "c"])
    });
    println!(
        "cluster: SIGSTOP of node c past its lease, then SIGCONT: c holds its share again {} ms \
         after SIGCONT",
        back.as_millis()
    );
    assert_ne!(
        before.leases["c"], after.leases["c"],
        "c is a new incarnation"
    );
    for slot in 0..SLOTS {
        if rendezvous::target(slot, ["a", "b", "c"]) == Some("c") {
            let (old, mid, new) = (
                &before.slots[&slot],
                &during.slots[&slot],
                &after.slots[&slot],
            );
            assert!(
                old.epoch < mid.epoch && mid.epoch < new.epoch,
                "slot {slot}"
            );
        }
    }
    wait_for(Duration::from_secs(30), &nodes, || {
        nodes_agree(&nodes, &["a", "b", "c"])
    });
    assert_eq!(c.metric("chatd_cluster_lease_losses_total"), Some(1.0));
}

#[test]
fn a_node_configured_with_another_slot_count_stays_out_and_says_why() {
    let Some(binary) = nats_server() else { return };
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let nats = Nats::start(&binary, 3);
    let urls = nats.urls();
    let a = Node::start("a", &nats);
    wait_for(Duration::from_secs(90), &[&a], || converged(&urls, &["a"]));
    let odd = Node::start_with("odd", &nats, "[cluster]\nslots = 512\n");
    let (why, _) = wait_for(Duration::from_secs(60), &[&odd], || {
        match odd.get("/health") {
            Some((503, body)) if body.contains("1024 slots") => Ok(body),
            other => Err(format!("health of odd: {other:?}")),
        }
    });
    assert!(why.contains("cluster.slots = 1024"), "{why}");
    converged(&urls, &["a"]).unwrap();
}

#[test]
fn nats_without_a_node_name_is_one_clear_line_and_a_failing_exit() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_chatd"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "off"])
        .args(["--nats", "nats://127.0.0.1:1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--node"), "{stderr}");
}
