//! Operators' metrics: per-shard counters, gauges and latency histograms, rendered in the
//! Prometheus text format by a side thread (`http.rs`) that also answers `/health`.
//!
//! Each shard owns one [`ShardMetrics`] behind an `Arc`: the shard is its only writer
//! (Relaxed atomic adds, no locks, no allocation per event) and the HTTP thread only reads
//! it, so a scrape never touches shard state nor waits for a shard. Values read during a
//! scrape are each exact but not a snapshot of one instant (a counter may move between two
//! lines), as with any Prometheus exporter.
//!
//! What is not exported: the number of events pending in inboxes (stored, not yet acked).
//! Its exact value needs every user's head seq minus their acked cursor; keeping a running
//! gauge would cost a read of the cursor on every append and ack, and would have to be
//! rebuilt by a scan of the inbox at every start. Clients that lag show up instead as
//! `chatd_messages_stored_total` growing faster than `chatd_messages_delivered_total`.

pub mod http;
mod render;

use std::cell::{OnceCell, RefCell};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use chat_protocol::{Body, Envelope};

use crate::cluster::ClusterMetrics;
use crate::push::PushCounters;

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub fn inc(&self) {
        self.0.fetch_add(1, Relaxed);
    }

    pub fn dec(&self) {
        self.sub(1);
    }

    pub fn sub(&self, n: i64) {
        self.0.fetch_sub(n, Relaxed);
    }

    pub fn add(&self, n: i64) {
        self.0.fetch_add(n, Relaxed);
    }

    pub fn set(&self, n: i64) {
        self.0.store(n, Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.0.load(Relaxed)
    }
}

/// Upper bounds of the latency buckets, in nanoseconds: 100 µs to 2.5 s.
pub const LATENCY_BUCKETS_NS: [u64; 14] = [
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
];

/// A latency histogram with the fixed [`LATENCY_BUCKETS_NS`]. Each observation adds to
/// exactly one bucket (the rendering makes them cumulative), so `_count` always equals the
/// `+Inf` bucket.
#[derive(Debug)]
pub struct Histogram {
    /// One per bound, then the overflow bucket (`+Inf`).
    buckets: [AtomicU64; LATENCY_BUCKETS_NS.len() + 1],
    sum_ns: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_ns: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn observe(&self, elapsed: Duration) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let index = LATENCY_BUCKETS_NS
            .iter()
            .position(|&bound| ns <= bound)
            .unwrap_or(LATENCY_BUCKETS_NS.len());
        self.buckets[index].fetch_add(1, Relaxed);
        self.sum_ns.fetch_add(ns, Relaxed);
    }

    /// Per-bucket (not cumulative) counts and the sum in seconds.
    fn read(&self) -> ([u64; LATENCY_BUCKETS_NS.len() + 1], f64) {
        let counts = std::array::from_fn(|i| self.buckets[i].load(Relaxed));
        (counts, self.sum_ns.load(Relaxed) as f64 / 1e9)
    }
}

/// Slots of the errors-by-code vector: indexed by the `ErrorCode` number; codes beyond it
/// land in slot 0 (reported as `OTHER`).
pub const ERROR_SLOTS: usize = 64;

/// One shard's metrics. Written only by its shard, read by the metrics thread.
#[derive(Debug)]
pub struct ShardMetrics {
    pub shard: usize,
    /// Process start, the origin of `heartbeat_ms`.
    epoch: Instant,
    /// Milliseconds since `epoch` (plus one; 0 = never) of the shard loop's last tick.
    heartbeat_ms: AtomicU64,
    /// Set once the shard accepts connections, cleared when it begins to stop.
    serving: AtomicBool,
    /// TCP connections accepted (before TLS).
    pub connections_accepted: Counter,
    /// Connections that ended, at any stage (`open` = accepted - closed).
    pub connections_closed: Counter,
    pub tls_handshake_failures: Counter,
    /// Users of this shard with at least one logged-in connection.
    pub users_online: Gauge,
    /// Logged-in connections of this shard's users.
    pub sessions: Gauge,
    /// SendMessage and SendGroupMessage requests read from this shard's connections.
    pub messages_received: Counter,
    /// Messages made durable here: 1:1 inbox appends and group log entries (not duplicates).
    pub messages_stored: Counter,
    /// Message events sent to this shard's users' connections, live or catching up.
    pub messages_delivered: Counter,
    /// Events made durable in this shard's users' inboxes (messages, group changes,
    /// receipts), and events those users acknowledged: pending = appended - acked, plus
    /// whatever was pending when the process started.
    pub inbox_appended: Counter,
    pub inbox_acked: Counter,
    /// `ShardMsg`s queued for another shard.
    pub shard_messages_sent: Counter,
    /// `ShardMsg`s received from other shards.
    pub shard_messages_received: Counter,
    /// Decrypted bytes read from client connections.
    pub client_bytes_received: Counter,
    /// Bytes (before encryption) written to client connections.
    pub client_bytes_sent: Counter,
    /// Error responses queued to this shard's connections, by `ErrorCode`.
    errors: [Counter; ERROR_SLOTS],
    /// From reading a send off a connection to queuing its SendAck on that connection.
    pub send_ack_seconds: Histogram,
    /// Duration of one group commit (`Store::commit` of a non-empty batch).
    pub storage_commit_seconds: Histogram,
    /// In a cluster: from handing a group commit's writes to the cluster thread to their
    /// slots' logs acknowledging them.
    pub replication_seconds: Histogram,
    /// The push dispatcher's counters (`crate::push`).
    pub push: Arc<PushCounters>,
}

impl ShardMetrics {
    fn new(shard: usize, epoch: Instant) -> Self {
        Self {
            shard,
            epoch,
            heartbeat_ms: AtomicU64::new(0),
            serving: AtomicBool::new(false),
            connections_accepted: Counter::default(),
            connections_closed: Counter::default(),
            tls_handshake_failures: Counter::default(),
            users_online: Gauge::default(),
            sessions: Gauge::default(),
            messages_received: Counter::default(),
            messages_stored: Counter::default(),
            inbox_appended: Counter::default(),
            inbox_acked: Counter::default(),
            messages_delivered: Counter::default(),
            shard_messages_sent: Counter::default(),
            shard_messages_received: Counter::default(),
            client_bytes_received: Counter::default(),
            client_bytes_sent: Counter::default(),
            errors: std::array::from_fn(|_| Counter::default()),
            send_ack_seconds: Histogram::default(),
            storage_commit_seconds: Histogram::default(),
            replication_seconds: Histogram::default(),
            push: Arc::default(),
        }
    }

    /// The shard loop ticked: it is alive and not blocked.
    pub fn heartbeat(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.heartbeat_ms.store(ms.saturating_add(1), Relaxed);
    }

    /// Whether the shard accepts connections (false before start and once stopping).
    pub fn set_serving(&self, serving: bool) {
        if serving {
            self.heartbeat();
        }
        self.serving.store(serving, Relaxed);
    }

    /// Time since the last heartbeat; `None` if there was none.
    fn heartbeat_age(&self) -> Option<Duration> {
        let beat = self.heartbeat_ms.load(Relaxed).checked_sub(1)?;
        Some(
            self.epoch
                .elapsed()
                .saturating_sub(Duration::from_millis(beat)),
        )
    }

    /// Counts a connection until the returned guard is dropped.
    pub fn connection(self: &Arc<Self>) -> ConnectionGuard {
        self.connections_accepted.inc();
        ConnectionGuard(self.clone())
    }

    /// Counts an error response with this `ErrorCode` number.
    pub fn error(&self, code: i32) {
        let slot = usize::try_from(code)
            .ok()
            .filter(|&c| c < ERROR_SLOTS)
            .unwrap_or(0);
        self.errors[slot].inc();
    }
}

/// Counts a connection as closed when dropped, whichever way the connection ends.
#[derive(Debug)]
pub struct ConnectionGuard(Arc<ShardMetrics>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.connections_closed.inc();
    }
}

/// Most sends per connection timed at once; beyond, sends go untimed (still counted).
const MAX_TIMED_SENDS: usize = 4096;

/// Metrics seen from one connection's outbound queue: every frame queued to a connection
/// passes [`ConnMeter::queued`], so error responses are counted by code whichever code path
/// produced them, and a send's SendAck stops the timer its frame started.
#[derive(Debug, Default)]
pub struct ConnMeter {
    /// Unset: not counted (the connection was not attached, e.g. in unit tests).
    metrics: OnceCell<Arc<ShardMetrics>>,
    /// Sends in flight: request id -> when the frame was read. Entries leave with the
    /// SendAck or error that answers them, or with the connection.
    sends: RefCell<HashMap<u64, Instant>>,
}

impl ConnMeter {
    /// Counts this connection's frames in its shard's `metrics` from now on.
    pub fn attach(&self, metrics: Arc<ShardMetrics>) {
        let _ = self.metrics.set(metrics);
    }

    /// A SendMessage or SendGroupMessage frame was read from the connection.
    pub fn send_received(&self, request_id: u64) {
        let Some(metrics) = self.metrics.get() else {
            return;
        };
        metrics.messages_received.inc();
        let mut sends = self.sends.borrow_mut();
        if sends.len() < MAX_TIMED_SENDS {
            // A request id reused while in flight keeps the first start.
            sends.entry(request_id).or_insert_with(Instant::now);
        }
    }

    /// A frame is queued to the connection.
    pub fn queued(&self, env: &Envelope) {
        let Some(metrics) = self.metrics.get() else {
            return;
        };
        match &env.body {
            Some(Body::SendAck(_)) => {
                if let Some(started) = self.take(env.request_id) {
                    metrics.send_ack_seconds.observe(started.elapsed());
                }
            }
            Some(Body::Error(e)) => {
                metrics.error(e.code);
                self.take(env.request_id);
            }
            _ => {}
        }
    }

    fn take(&self, request_id: u64) -> Option<Instant> {
        let mut sends = self.sends.borrow_mut();
        if sends.is_empty() {
            return None;
        }
        sends.remove(&request_id)
    }
}

/// A shard whose loop has not ticked for this long is reported unhealthy.
pub const HEALTH_STALE_AFTER: Duration = Duration::from_secs(5);

/// The metrics of every shard, as the metrics thread sees them.
#[derive(Debug)]
pub struct Metrics {
    shards: Vec<Arc<ShardMetrics>>,
    /// The node's cluster metrics, when it is part of a cluster.
    cluster: OnceLock<Arc<ClusterMetrics>>,
}

impl Metrics {
    pub fn new(shards: usize) -> Self {
        let epoch = Instant::now();
        Self {
            shards: (0..shards)
                .map(|id| Arc::new(ShardMetrics::new(id, epoch)))
                .collect(),
            cluster: OnceLock::new(),
        }
    }

    /// Exports `cluster` too, and makes `/health` wait for the node to be ready in it.
    pub fn set_cluster(&self, cluster: Arc<ClusterMetrics>) {
        let _ = self.cluster.set(cluster);
    }

    /// The metrics shard `id` writes.
    pub fn shard(&self, id: usize) -> Arc<ShardMetrics> {
        self.shards[id].clone()
    }

    /// `Ok` when every shard is serving and its loop ticked recently; otherwise why not.
    pub fn health(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        for shard in &self.shards {
            if !shard.serving.load(Relaxed) {
                problems.push(format!("shard {} is not serving", shard.shard));
                continue;
            }
            match shard.heartbeat_age() {
                Some(age) if age <= HEALTH_STALE_AFTER => {}
                Some(age) => problems.push(format!(
                    "shard {} has not ticked for {:.1} s",
                    shard.shard,
                    age.as_secs_f64()
                )),
                None => problems.push(format!("shard {} never ticked", shard.shard)),
            }
        }
        if let Some(Err(why)) = self.cluster.get().map(|c| c.health()) {
            problems.push(why);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    /// Every metric in the Prometheus text exposition format, version 0.0.4.
    pub fn render(&self) -> String {
        let mut text = render::render(&self.shards);
        if let Some(cluster) = self.cluster.get() {
            cluster.render(&mut text);
        }
        text
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // reason: test code
    use super::*;
    use chat_protocol::{error_envelope, ErrorCode};

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_micros(100));
        h.observe(Duration::from_micros(101));
        h.observe(Duration::from_secs(10));
        let (counts, sum) = h.read();
        assert_eq!(counts[0], 2);
        assert_eq!(counts[1], 1);
        assert_eq!(counts[LATENCY_BUCKETS_NS.len()], 1);
        assert_eq!(counts.iter().sum::<u64>(), 4);
        assert!((sum - 10.000251).abs() < 1e-9);
    }

    #[test]
    fn the_meter_times_sends_and_counts_errors() {
        let metrics = Metrics::new(1);
        let shard = metrics.shard(0);
        let meter = ConnMeter::default();
        meter.send_received(1); // not attached: not counted
        meter.attach(shard.clone());
        meter.send_received(7);
        meter.send_received(8);
        let ack = chat_protocol::envelope(7, Body::SendAck(Default::default()));
        meter.queued(&ack);
        meter.queued(&error_envelope(8, ErrorCode::UserNotFound, "no"));
        assert_eq!(shard.messages_received.get(), 2);
        assert_eq!(shard.send_ack_seconds.read().0.iter().sum::<u64>(), 1);
        assert_eq!(shard.errors[ErrorCode::UserNotFound as usize].get(), 1);
        assert!(meter.sends.borrow().is_empty());
        shard.error(1000);
        assert_eq!(shard.errors[0].get(), 1);
    }

    #[test]
    fn health_needs_every_shard_serving_and_ticking() {
        let metrics = Metrics::new(2);
        assert!(metrics.health().is_err());
        metrics.shard(0).set_serving(true);
        assert!(metrics.health().is_err());
        metrics.shard(1).set_serving(true);
        assert!(metrics.health().is_ok());
        metrics.shard(1).set_serving(false);
        assert!(metrics.health().unwrap_err().contains("shard 1"));
    }
}
