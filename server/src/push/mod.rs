//! Push notifications for users with no online session.
//!
//! When a message (1:1 or group) is stored for a user of this shard who has no session and
//! at least one push token, a job goes into the shard's outbox in RocksDB, staged in the
//! same batch as the message, so a restart loses none. One dispatcher per shard
//! ([`run_dispatcher`]) gathers the jobs for `push.coalesce_ms`, sends one notification per
//! user to the gateway (`gateway.rs` is the JSON, `http.rs` the client) and deletes the jobs
//! once the gateway accepted them or they were given up.

mod dispatcher;
mod gateway;
pub mod http;

use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_protocol::pb::{self, event};
use chat_storage::records::PushJob;

pub use dispatcher::run_dispatcher;

use crate::config::PushConfig;
use crate::metrics::Counter;
use crate::shard::Shard;
use crate::signal::Signal;

/// Longest preview sent to the gateway, in bytes (cut at a character boundary): push
/// payloads are small (APNs allows 4 KiB in all).
pub const MAX_PREVIEW_BYTES: usize = 256;

/// How often a repeated warning (outbox full, gateway failing) is logged per shard.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// A shard's push counters, exported by the metrics endpoint (`chatd_push_*`): shared with
/// the shard's [`crate::metrics::ShardMetrics`]. All count since start.
#[derive(Debug, Default)]
pub struct PushCounters {
    /// Jobs written to the outbox.
    pub queued: Counter,
    /// Notifications the gateway accepted (one covers all of a user's unread jobs).
    pub sent: Counter,
    /// Failed requests that will be tried again.
    pub retried: Counter,
    /// Jobs not written because the outbox held `push.max_queued`.
    pub dropped_queue_full: Counter,
    /// Jobs dropped after `push.max_attempts` failed requests.
    pub dropped_failed: Counter,
    /// Jobs dropped without a request: read on another session, deleted for everyone by
    /// their sender, the user came online, or no token left.
    pub skipped: Counter,
    /// Tokens removed because the gateway rejected them.
    pub tokens_removed: Counter,
}

/// Adds `n` to a counter.
fn bump(counter: &Counter, n: u64) {
    counter.add(n);
}

/// A warning that is logged at most once per [`WARN_EVERY`].
#[derive(Debug, Default)]
struct RateLimited {
    last: Cell<Option<Instant>>,
}

impl RateLimited {
    fn ready(&self) -> bool {
        let now = Instant::now();
        let due = self.last.get().is_none_or(|t| now >= t + WARN_EVERY);
        if due {
            self.last.set(Some(now));
        }
        due
    }
}

/// One shard's push state.
#[derive(Debug)]
pub struct Push {
    config: PushConfig,
    /// `None`: push is off (no gateway configured).
    endpoint: Option<http::Endpoint>,
    /// For an `https` gateway.
    tls: Option<http::GatewayTls>,
    pub counters: Arc<PushCounters>,
    /// Wakes the dispatcher: jobs were staged, a request finished.
    wake: Signal,
    /// Jobs were staged since the dispatcher last looked: wait for more before sending.
    new_jobs: Cell<bool>,
    full_warning: RateLimited,
    failure_warning: RateLimited,
}

impl Push {
    pub fn new(shard: usize, config: &PushConfig, counters: Arc<PushCounters>) -> Self {
        let endpoint =
            config
                .gateway_url
                .as_deref()
                .and_then(|url| match http::Endpoint::parse(url) {
                    Ok(e) => Some(e),
                    Err(e) => {
                        // `Config::validate` refuses this before a shard starts.
                        tracing::error!(shard, "push is off: push.gateway_url {url:?}: {e}");
                        None
                    }
                });
        let tls = endpoint.as_ref().filter(|e| e.tls).and_then(|_| {
            http::tls_connector(config.ca_file.as_deref())
                .map_err(|e| tracing::error!(shard, "push is off: push.ca_file: {e}"))
                .ok()
        });
        // An https gateway without usable roots cannot be reached (`Config::validate`
        // refuses this before a shard starts).
        let endpoint = endpoint.filter(|e| !e.tls || tls.is_some());
        Self {
            config: config.clone(),
            endpoint,
            tls,
            counters,
            wake: Signal::default(),
            new_jobs: Cell::new(false),
            full_warning: RateLimited::default(),
            failure_warning: RateLimited::default(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.endpoint.is_some()
    }
}

/// On the recipient's shard, once a new 1:1 message is staged in their inbox.
pub fn stage_for_message(shard: &Shard, msg: &pb::Message) {
    let recipient = msg.to_user_id;
    if shard.push.enabled() && !shard.is_online(recipient) {
        stage_job(shard, recipient, msg, msg.from_user_id, false, msg.seq);
    }
}

/// On a member shard, once a group entry is staged for the local members in `delivered`:
/// a job for each offline member other than the sender, for messages only (membership
/// changes are not announced).
pub fn stage_for_group_entry(shard: &Shard, entry: &pb::Event, delivered: &[(u64, pb::Event)]) {
    if !shard.push.enabled() {
        return;
    }
    let Some(event::Kind::Message(msg)) = &entry.kind else {
        return;
    };
    for &(member, _) in delivered {
        if member != msg.from_user_id && !shard.is_online(member) {
            stage_job(shard, member, msg, msg.group_id, true, entry.seq);
        }
    }
}

/// Stages a job for `user` if they have a token and the outbox has room. A failure here
/// never fails the message: it only costs the notification.
fn stage_job(
    shard: &Shard,
    user: u64,
    msg: &pb::Message,
    conversation: u64,
    group: bool,
    seq: u64,
) {
    let push = &shard.push;
    let store = &shard.store;
    let previews_off = match (store.push_tokens(user), store.user(user)) {
        (Ok(tokens), _) if tokens.is_empty() => return,
        (Ok(_), Ok(Some(u))) => u.push_previews_off,
        (Ok(_), Ok(None)) => return,
        (Err(e), _) | (_, Err(e)) => {
            return tracing::error!(shard = shard.id, "push: reading user {user}: {e}");
        }
    };
    match store.push_jobs_queued() {
        Ok(n) if n >= push.config.max_queued => {
            bump(&push.counters.dropped_queue_full, 1);
            if push.full_warning.ready() {
                tracing::warn!(
                    shard = shard.id,
                    queued = n,
                    dropped = push.counters.dropped_queue_full.get(),
                    "push outbox is full (push.max_queued): notifications are dropped"
                );
            }
            return;
        }
        Ok(_) => {}
        Err(e) => return tracing::error!(shard = shard.id, "push: counting the outbox: {e}"),
    }
    let job = PushJob {
        user,
        sender: msg.from_user_id,
        conversation,
        group,
        seq,
        timestamp_us: msg.timestamp_us,
        preview: (!previews_off).then(|| preview(&msg.text).to_string()),
        media_kind: msg.media.as_ref().map_or(0, |m| m.kind),
    };
    match store.stage_push_job(&job) {
        Ok(_) => {
            bump(&push.counters.queued, 1);
            push.new_jobs.set(true);
            push.wake.raise();
        }
        Err(e) => tracing::error!(shard = shard.id, "push: staging a job: {e}"),
    }
}

/// The start of `text`, at most [`MAX_PREVIEW_BYTES`], cut at a character boundary.
fn preview(text: &str) -> &str {
    if text.len() <= MAX_PREVIEW_BYTES {
        return text;
    }
    let mut end = MAX_PREVIEW_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // reason: test code
    use super::*;

    #[test]
    fn previews_are_cut_at_a_character_boundary() {
        assert_eq!(preview("hi"), "hi");
        let long = "é".repeat(200); // 400 bytes
        let cut = preview(&long);
        assert!(cut.len() <= MAX_PREVIEW_BYTES && cut.len() >= MAX_PREVIEW_BYTES - 1);
        assert!(long.starts_with(cut));
    }

    #[test]
    fn the_push_table_parses_and_is_validated() {
        let cfg: crate::Config = toml::from_str(
            "[push]\ngateway_url = \"http://127.0.0.1:8088/_matrix/push/v1/notify\"\ncoalesce_ms = 50",
        )
        .unwrap();
        assert_eq!(cfg.push.coalesce_ms, 50);
        assert_eq!(cfg.push.max_queued, 100_000);
        assert!(cfg.validate().is_ok());
        assert!(toml::from_str::<crate::Config>("[push]\nurl = \"x\"").is_err());
        // An https gateway needs roots it can read.
        let mut bad = cfg.clone();
        bad.push.gateway_url = Some("https://gw.example/notify".into());
        bad.push.ca_file = Some("/nonexistent/ca.pem".into());
        assert!(bad.validate().is_err());
        let mut bad = cfg;
        bad.push.max_in_flight = 0;
        assert!(bad.validate().is_err());
        assert!(!Push::new(0, &PushConfig::default(), Arc::default()).enabled());
    }
}
