//! The Prometheus text exposition format (version 0.0.4) of [`ShardMetrics`], plus the
//! process-wide values read from `/proc` at scrape time.

use std::fmt::Write;
use std::sync::Arc;

use chat_protocol::ErrorCode;

use super::{Counter, Histogram, ShardMetrics, ERROR_SLOTS, LATENCY_BUCKETS_NS};
use crate::push::PushCounters;

/// Accumulates the exposition text.
struct Text(String);

impl Text {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &str, value: impl std::fmt::Display) {
        if labels.is_empty() {
            let _ = writeln!(self.0, "{name} {value}");
        } else {
            let _ = writeln!(self.0, "{name}{{{labels}}} {value}");
        }
    }

    /// One value per shard.
    fn per_shard<V: std::fmt::Display>(
        &mut self,
        shards: &[Arc<ShardMetrics>],
        name: &str,
        kind: &str,
        help: &str,
        value: impl Fn(&ShardMetrics) -> V,
    ) {
        self.family(name, kind, help);
        for s in shards {
            self.sample(name, &format!("shard=\"{}\"", s.shard), value(s));
        }
    }

    fn counter(
        &mut self,
        shards: &[Arc<ShardMetrics>],
        name: &str,
        help: &str,
        counter: impl Fn(&ShardMetrics) -> &Counter,
    ) {
        self.per_shard(shards, name, "counter", help, |s| counter(s).get());
    }

    fn push_counter(
        &mut self,
        shards: &[Arc<ShardMetrics>],
        name: &str,
        help: &str,
        counter: impl Fn(&PushCounters) -> &Counter,
    ) {
        self.per_shard(shards, name, "counter", help, |s| counter(&s.push).get());
    }

    fn histogram(
        &mut self,
        shards: &[Arc<ShardMetrics>],
        name: &str,
        help: &str,
        histogram: impl Fn(&ShardMetrics) -> &Histogram,
    ) {
        self.family(name, "histogram", help);
        for s in shards {
            let (counts, sum) = histogram(s).read();
            let mut cumulative = 0;
            for (i, count) in counts.iter().enumerate() {
                cumulative += count;
                let le = match LATENCY_BUCKETS_NS.get(i) {
                    Some(&ns) => (ns as f64 / 1e9).to_string(),
                    None => "+Inf".to_string(),
                };
                let labels = format!("shard=\"{}\",le=\"{le}\"", s.shard);
                self.sample(&format!("{name}_bucket"), &labels, cumulative);
            }
            let labels = format!("shard=\"{}\"", s.shard);
            self.sample(&format!("{name}_sum"), &labels, sum);
            self.sample(&format!("{name}_count"), &labels, cumulative);
        }
    }
}

pub fn render(shards: &[Arc<ShardMetrics>]) -> String {
    let mut t = Text(String::with_capacity(16 * 1024));

    t.counter(
        shards,
        "chatd_connections_accepted_total",
        "TCP connections accepted.",
        |s| &s.connections_accepted,
    );
    t.counter(
        shards,
        "chatd_connections_closed_total",
        "Connections that ended, whether or not their TLS handshake completed.",
        |s| &s.connections_closed,
    );
    t.per_shard(
        shards,
        "chatd_connections_open",
        "gauge",
        "Connections open, including those still in the TLS handshake.",
        |s| {
            s.connections_accepted
                .get()
                .saturating_sub(s.connections_closed.get())
        },
    );
    t.counter(
        shards,
        "chatd_tls_handshake_failures_total",
        "TLS handshakes that failed or did not finish in time.",
        |s| &s.tls_handshake_failures,
    );
    t.per_shard(
        shards,
        "chatd_users_online",
        "gauge",
        "Users living on the shard with at least one logged-in connection.",
        |s| s.users_online.get().max(0),
    );
    t.per_shard(
        shards,
        "chatd_sessions",
        "gauge",
        "Logged-in connections of the users living on the shard.",
        |s| s.sessions.get().max(0),
    );
    t.counter(
        shards,
        "chatd_messages_received_total",
        "SendMessage and SendGroupMessage requests read from client connections.",
        |s| &s.messages_received,
    );
    t.counter(
        shards,
        "chatd_messages_stored_total",
        "Messages made durable: 1:1 inbox appends and group log entries (retries not counted).",
        |s| &s.messages_stored,
    );
    t.counter(
        shards,
        "chatd_messages_delivered_total",
        "Message events sent to recipients' connections, live or while catching up.",
        |s| &s.messages_delivered,
    );
    t.counter(
        shards,
        "chatd_inbox_events_appended_total",
        "Events made durable in users' inboxes (messages, group changes, receipts).",
        |s| &s.inbox_appended,
    );
    t.counter(
        shards,
        "chatd_inbox_events_acked_total",
        "Inbox events users acknowledged (Ack); appended - acked is the backlog's growth.",
        |s| &s.inbox_acked,
    );
    t.counter(
        shards,
        "chatd_shard_messages_sent_total",
        "Messages queued for another shard.",
        |s| &s.shard_messages_sent,
    );
    t.counter(
        shards,
        "chatd_shard_messages_received_total",
        "Messages received from other shards.",
        |s| &s.shard_messages_received,
    );
    t.counter(
        shards,
        "chatd_client_bytes_received_total",
        "Decrypted bytes read from client connections.",
        |s| &s.client_bytes_received,
    );
    t.counter(
        shards,
        "chatd_client_bytes_sent_total",
        "Bytes written to client connections, before TLS encryption.",
        |s| &s.client_bytes_sent,
    );

    let name = "chatd_errors_total";
    t.family(
        name,
        "counter",
        "Error responses sent to client connections, by error code.",
    );
    for s in shards {
        for slot in 0..ERROR_SLOTS {
            let count = s.errors[slot].get();
            let label = if slot == 0 {
                // Codes without a slot of their own; shown only when seen.
                if count == 0 {
                    continue;
                }
                "OTHER"
            } else {
                let code = i32::try_from(slot)
                    .ok()
                    .and_then(|c| ErrorCode::try_from(c).ok());
                let Some(code) = code else { continue };
                let name = code.as_str_name();
                name.strip_prefix("ERROR_CODE_").unwrap_or(name)
            };
            let labels = format!("shard=\"{}\",code=\"{label}\"", s.shard);
            t.sample(name, &labels, count);
        }
    }

    t.histogram(
        shards,
        "chatd_send_ack_seconds",
        "From reading a send off a client connection to queuing its SendAck on it.",
        |s| &s.send_ack_seconds,
    );
    t.histogram(
        shards,
        "chatd_storage_commit_seconds",
        "Duration of one group commit (WAL write, and fsync in fsync mode).",
        |s| &s.storage_commit_seconds,
    );
    t.histogram(
        shards,
        "chatd_replication_seconds",
        "In a cluster: from a group commit to its slots' logs acknowledging its writes.",
        |s| &s.replication_seconds,
    );

    t.push_counter(
        shards,
        "chatd_push_queued_total",
        "Push jobs written to the outbox.",
        |p| &p.queued,
    );
    t.push_counter(
        shards,
        "chatd_push_sent_total",
        "Notifications the push gateway accepted.",
        |p| &p.sent,
    );
    t.push_counter(
        shards,
        "chatd_push_retried_total",
        "Failed push gateway requests that will be retried.",
        |p| &p.retried,
    );
    t.push_counter(
        shards,
        "chatd_push_dropped_queue_full_total",
        "Messages not announced because the outbox held push.max_queued jobs.",
        |p| &p.dropped_queue_full,
    );
    t.push_counter(
        shards,
        "chatd_push_dropped_failed_total",
        "Push jobs dropped after push.max_attempts failed requests.",
        |p| &p.dropped_failed,
    );
    t.push_counter(
        shards,
        "chatd_push_skipped_total",
        "Push jobs dropped without a request (read elsewhere, user online, no token).",
        |p| &p.skipped,
    );
    t.push_counter(
        shards,
        "chatd_push_tokens_removed_total",
        "Push tokens removed because the gateway rejected them.",
        |p| &p.tokens_removed,
    );

    t.per_shard(
        shards,
        "chatd_shard_heartbeat_age_seconds",
        "gauge",
        "Time since the shard's event loop last ticked (/health fails beyond 5 s).",
        |s| s.heartbeat_age().map_or(-1.0, |age| age.as_secs_f64()),
    );

    if let Some(rss) = resident_memory_bytes() {
        let name = "chatd_process_resident_memory_bytes";
        t.family(name, "gauge", "Resident set size of the process.");
        t.sample(name, "", rss);
    }
    if let Some(fds) = open_fds() {
        let name = "chatd_process_open_fds";
        t.family(name, "gauge", "Open file descriptors of the process.");
        t.sample(name, "", fds);
    }
    t.0
}

/// `VmRSS` of /proc/self/status (Linux only).
fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Entries of /proc/self/fd, less the one the listing itself holds open (Linux only).
fn open_fds() -> Option<usize> {
    let entries = std::fs::read_dir("/proc/self/fd").ok()?;
    Some(entries.count().saturating_sub(1))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // reason: test code
    use std::time::Duration;

    use super::super::Metrics;

    #[test]
    fn the_text_has_help_type_and_cumulative_buckets() {
        let metrics = Metrics::new(2);
        let s = metrics.shard(1);
        s.connections_accepted.add(3);
        s.connections_closed.inc();
        s.send_ack_seconds.observe(Duration::from_micros(300));
        s.send_ack_seconds.observe(Duration::from_millis(30));
        s.error(chat_protocol::ErrorCode::GroupNotFound as i32);
        let text = metrics.render();
        assert!(text.contains("# TYPE chatd_connections_open gauge\n"));
        assert!(text.contains("chatd_connections_open{shard=\"1\"} 2\n"));
        assert!(text.contains("chatd_errors_total{shard=\"1\",code=\"GROUP_NOT_FOUND\"} 1\n"));
        assert!(!text.contains("code=\"OTHER\""));
        assert!(text.contains("chatd_send_ack_seconds_bucket{shard=\"1\",le=\"0.0001\"} 0\n"));
        assert!(text.contains("chatd_send_ack_seconds_bucket{shard=\"1\",le=\"0.0005\"} 1\n"));
        assert!(text.contains("chatd_send_ack_seconds_bucket{shard=\"1\",le=\"+Inf\"} 2\n"));
        assert!(text.contains("chatd_send_ack_seconds_count{shard=\"1\"} 2\n"));
        assert!(text.contains("chatd_storage_commit_seconds_bucket{shard=\"0\",le=\"1\"} 0\n"));
    }
}
