//! Server configuration: a TOML file with documented defaults, overridden by CLI flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Every option of `chatd`. Each field's default is what `chatd` uses with no file and no flag.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where shard databases (`shard-N/`) and generated TLS files (`tls/`) live.
    pub data_dir: PathBuf,
    /// TLS listen address; every shard binds it with SO_REUSEPORT.
    pub listen: SocketAddr,
    /// HTTP address of `/metrics` (Prometheus) and `/health`; `None` (`"off"` in the file)
    /// serves neither.
    #[serde(deserialize_with = "metrics_listen_from_str")]
    pub metrics_listen: Option<SocketAddr>,
    /// Number of shards (executors); 0 means one per available core.
    pub shards: usize,
    /// Pin each shard's executor to its own core. Tests turn this off.
    pub pin_cores: bool,
    /// PEM certificate chain; with `tls_key`. When unset, a dev CA and certificate are
    /// generated under `data_dir/tls/` on first start.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Largest accepted frame body in bytes.
    pub max_frame_bytes: usize,
    /// Largest accepted message text in bytes (UTF-8).
    pub max_text_bytes: usize,
    /// `wal`: acked writes survive a process crash; `fsync`: they survive power loss.
    pub durability: DurabilityMode,
    /// Most members a group may have.
    pub max_group_members: usize,
    /// A shard that runs out of work busy-polls this long before its thread sleeps: a
    /// shard on a dedicated core then sees new data without a wake-up (as Seastar always
    /// does). 0 = sleep at once, the right choice when cores are shared.
    pub spin_before_park_us: u64,
    /// A connection that has not logged in this many seconds after its TLS handshake is
    /// closed (slow-loris). 0 = never.
    pub login_timeout_s: u64,
    /// A connection from which nothing arrived (no request, not even Ping) for this many
    /// seconds is closed; clients ping every 30 s when idle. 0 = never.
    pub idle_timeout_s: u64,
    /// Most connections one user may have logged in at once.
    pub max_connections_per_user: usize,
    /// Requests per second one connection may send on average (token bucket); 0 = no limit.
    pub rate_limit_per_s: u32,
    /// Requests one connection may send in a burst above the average.
    pub rate_limit_burst: u32,
    /// A connection whose unsent output exceeds this many bytes (the client does not read)
    /// is cut off.
    pub max_outbound_bytes: usize,
    /// How long after sending its sender may delete a message for everyone, in seconds
    /// (48 h, as WhatsApp); 0 = no limit.
    pub delete_window_s: u64,
    /// How long after sending its sender may edit a message, in seconds; 0 = no limit.
    pub edit_window_s: u64,
    /// Uploads of images, voice notes and files (`[media]`).
    pub media: MediaConfig,
    /// Notifications for offline users through a push gateway (`[push]`).
    pub push: PushConfig,
    /// Membership in a cluster of nodes over NATS JetStream (`[cluster]`); off by default.
    pub cluster: ClusterConfig,
}

/// `[cluster]`: this node's membership in a cluster (docs/OPERATIONS.md, "Cluster").
/// Without `nats_urls` the server is a single node and runs no NATS code.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// NATS servers with JetStream (`nats://host:port`); the client uses whichever
    /// answers and fails over between them. Empty = a single node.
    pub nats_urls: Vec<String>,
    /// This node's name, unique in the cluster: letters, digits, `-` and `_`.
    pub node: String,
    /// Prefix of the JetStream KV buckets (`<name>_nodes`, `<name>_slots`): clusters that
    /// share a NATS deployment need different names.
    pub name: String,
    /// Hash slots of the cluster; fixed by the first node that creates the cluster.
    pub slots: u32,
    /// A node that has not refreshed its lease for about this long, while the others
    /// could, loses it and its slots; leases are refreshed 6 times per period.
    pub lease_ttl_ms: u64,
    /// Replicas of the buckets when this node creates them; 0 = 3 if the NATS server is
    /// part of a cluster, else 1.
    pub replicas: usize,
    /// A slot's log is snapshotted (and purged below the snapshot) by its owner once it
    /// has this many messages after its last snapshot; 0 = never (the log grows forever).
    pub snapshot_every: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            nats_urls: Vec::new(),
            node: String::new(),
            name: "chatd".into(),
            slots: 1024,
            lease_ttl_ms: 3000,
            replicas: 0,
            snapshot_every: 10_000,
        }
    }
}

impl ClusterConfig {
    /// Whether this node is part of a cluster.
    pub fn enabled(&self) -> bool {
        !self.nats_urls.is_empty()
    }

    fn validate(&self) -> anyhow::Result<()> {
        let name_ok = |n: &str| {
            (1..=64).contains(&n.len())
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        anyhow::ensure!(
            name_ok(&self.name),
            "cluster.name must be 1 to 64 letters, digits, '-' or '_'"
        );
        anyhow::ensure!(
            (1..=65_536).contains(&self.slots),
            "cluster.slots must be between 1 and 65536"
        );
        anyhow::ensure!(
            (600..=600_000).contains(&self.lease_ttl_ms),
            "cluster.lease_ttl_ms must be between 600 and 600000 (10 min)"
        );
        anyhow::ensure!(
            self.replicas <= 5,
            "cluster.replicas must be between 0 (auto) and 5"
        );
        if self.enabled() {
            anyhow::ensure!(
                name_ok(&self.node),
                "cluster.node (--node) must be set with cluster.nats_urls (--nats): \
                 1 to 64 letters, digits, '-' or '_', unique in the cluster"
            );
            crate::cluster::parse_urls(&self.nats_urls)?;
        }
        Ok(())
    }
}

/// `[media]`: what may be uploaded.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MediaConfig {
    /// Largest file one upload may declare, in bytes.
    pub max_asset_bytes: u64,
    /// Largest data of one UploadChunk, and of one AssetData answering a FetchAsset.
    pub max_chunk_bytes: usize,
    /// Mime types that may be uploaded (lowercase, exact match).
    pub allowed_mime_types: Vec<String>,
}

impl Default for MediaConfig {
    fn default() -> Self {
        let types = [
            "image/jpeg",
            "image/png",
            "image/gif",
            "image/webp",
            "image/heic",
            "audio/ogg",
            "audio/opus",
            "audio/mpeg",
            "audio/mp4",
            "audio/aac",
            "audio/webm",
            "video/mp4",
            "application/pdf",
            "application/octet-stream",
            "text/plain",
        ];
        Self {
            max_asset_bytes: 16 << 20,
            max_chunk_bytes: 256 << 10,
            allowed_mime_types: types.iter().map(|t| t.to_string()).collect(),
        }
    }
}

/// `[push]`: the push gateway that announces messages to users with no online session.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PushConfig {
    /// `https://host:port/path` (or `http://` for a gateway on a trusted network) of the
    /// gateway; unset = no notifications (no jobs are written).
    pub gateway_url: Option<String>,
    /// PEM file of the certificate authorities an `https` gateway's certificate must
    /// chain to; unset = the system's bundle, `/etc/ssl/certs/ca-certificates.crt`.
    pub ca_file: Option<std::path::PathBuf>,
    /// How long a shard gathers jobs before sending, so a burst becomes one notification
    /// per user.
    pub coalesce_ms: u64,
    /// Most jobs a shard's outbox holds; further ones are dropped and counted.
    pub max_queued: u64,
    /// Attempts per notification before its jobs are dropped and counted.
    pub max_attempts: u32,
    /// Wait before the first retry; doubles per attempt up to 60 s.
    pub retry_initial_ms: u64,
    /// Most requests one shard has open to the gateway at once.
    pub max_in_flight: usize,
    /// Limit on one request, from connecting to the end of the response.
    pub timeout_ms: u64,
}

impl Default for PushConfig {
    fn default() -> Self {
        Self {
            gateway_url: None,
            ca_file: None,
            coalesce_ms: 1000,
            max_queued: 100_000,
            max_attempts: 8,
            retry_initial_ms: 1000,
            max_in_flight: 32,
            timeout_ms: 10_000,
        }
    }
}

impl PushConfig {
    fn validate(&self) -> anyhow::Result<()> {
        if let Some(url) = &self.gateway_url {
            let endpoint = crate::push::http::Endpoint::parse(url)
                .map_err(|e| anyhow::anyhow!("push.gateway_url {url:?}: {e}"))?;
            if endpoint.tls {
                crate::push::http::tls_connector(self.ca_file.as_deref())
                    .map_err(|e| anyhow::anyhow!("push.ca_file: {e}"))?;
            }
        }
        anyhow::ensure!(
            self.coalesce_ms <= 60_000,
            "push.coalesce_ms must be at most 60000 (1 min)"
        );
        anyhow::ensure!(self.max_queued > 0, "push.max_queued must be positive");
        anyhow::ensure!(
            (1..=100).contains(&self.max_attempts),
            "push.max_attempts must be between 1 and 100"
        );
        anyhow::ensure!(
            (1..=60_000).contains(&self.retry_initial_ms),
            "push.retry_initial_ms must be between 1 and 60000"
        );
        anyhow::ensure!(
            (1..=1024).contains(&self.max_in_flight),
            "push.max_in_flight must be between 1 and 1024"
        );
        anyhow::ensure!(
            (1..=300_000).contains(&self.timeout_ms),
            "push.timeout_ms must be between 1 and 300000 (5 min)"
        );
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityMode {
    #[default]
    Wal,
    Fsync,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 7443)),
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
            shards: 0,
            pin_cores: true,
            tls_cert: None,
            tls_key: None,
            max_frame_bytes: chat_protocol::DEFAULT_MAX_FRAME_BYTES,
            max_text_bytes: 64 * 1024,
            durability: DurabilityMode::Wal,
            max_group_members: 1024,
            spin_before_park_us: 0,
            login_timeout_s: 30,
            idle_timeout_s: 90,
            max_connections_per_user: 16,
            rate_limit_per_s: 1000,
            rate_limit_burst: 2000,
            max_outbound_bytes: 8 << 20,
            delete_window_s: 48 * 3600,
            edit_window_s: 15 * 60,
            media: MediaConfig::default(),
            push: PushConfig::default(),
            cluster: ClusterConfig::default(),
        }
    }
}

/// Parses a `metrics_listen` value: `HOST:PORT`, or `off` (or empty) for no endpoint.
pub fn parse_metrics_listen(value: &str) -> Result<Option<SocketAddr>, String> {
    let value = value.trim();
    if value.is_empty() || value.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    value
        .parse()
        .map(Some)
        .map_err(|e| format!("{value:?} is neither HOST:PORT nor \"off\": {e}"))
}

fn metrics_listen_from_str<'de, D>(d: D) -> Result<Option<SocketAddr>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let value = String::deserialize(d)?;
    parse_metrics_listen(&value).map_err(serde::de::Error::custom)
}

/// Largest shard count the locked-memory budget of one process allows (glommio needs
/// 512 KiB of it per executor and the limit here is 8 MiB).
pub const MAX_SHARDS: usize = 16;

impl Config {
    /// Reads a TOML file; missing keys take their defaults.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read config {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("invalid config {}: {e}", path.display()))
    }

    /// The shard count after resolving 0 to the number of cores.
    pub fn shard_count(&self) -> usize {
        if self.shards == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .min(MAX_SHARDS)
        } else {
            self.shards
        }
    }

    /// Checks values that serde cannot.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.shard_count() <= MAX_SHARDS,
            "shards = {} exceeds the maximum of {MAX_SHARDS}",
            self.shards
        );
        anyhow::ensure!(
            self.metrics_listen != Some(self.listen) || self.listen.port() == 0,
            "metrics_listen must differ from listen ({})",
            self.listen
        );
        anyhow::ensure!(
            self.tls_cert.is_some() == self.tls_key.is_some(),
            "tls_cert and tls_key must be set together"
        );
        anyhow::ensure!(
            (64..=64 << 20).contains(&self.max_frame_bytes),
            "max_frame_bytes must be between 64 B and 64 MiB"
        );
        anyhow::ensure!(
            self.max_text_bytes > 0 && self.max_text_bytes + 1024 <= self.max_frame_bytes,
            "max_text_bytes must be positive and at least 1 KiB below max_frame_bytes"
        );
        anyhow::ensure!(
            (2..=1_000_000).contains(&self.max_group_members),
            "max_group_members must be between 2 and 1000000"
        );
        anyhow::ensure!(
            self.spin_before_park_us <= 1_000_000,
            "spin_before_park_us must be at most 1000000 (1 s)"
        );
        anyhow::ensure!(
            self.max_connections_per_user >= 1,
            "max_connections_per_user must be at least 1"
        );
        anyhow::ensure!(
            self.rate_limit_per_s == 0 || self.rate_limit_burst >= 1,
            "rate_limit_burst must be at least 1 when rate_limit_per_s is set"
        );
        anyhow::ensure!(
            self.max_outbound_bytes >= 64 << 10,
            "max_outbound_bytes must be at least 64 KiB"
        );
        anyhow::ensure!(
            self.media.max_asset_bytes > 0 && self.media.max_asset_bytes <= 4 << 30,
            "media.max_asset_bytes must be between 1 B and 4 GiB"
        );
        anyhow::ensure!(
            self.media.max_chunk_bytes >= 1024
                && self.media.max_chunk_bytes + 1024 <= self.max_frame_bytes,
            "media.max_chunk_bytes must be at least 1 KiB and at least 1 KiB below max_frame_bytes"
        );
        anyhow::ensure!(
            self.media
                .allowed_mime_types
                .iter()
                .all(|t| t.contains('/') && *t == t.trim().to_ascii_lowercase()),
            "media.allowed_mime_types must be lowercase type/subtype strings"
        );
        self.push.validate()?;
        self.cluster.validate()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // reason: test code
    use super::*;

    #[test]
    fn file_values_override_defaults_and_unknown_keys_are_rejected() {
        let cfg: Config = toml::from_str("shards = 3\ndurability = \"fsync\"").unwrap();
        assert_eq!(cfg.shards, 3);
        assert_eq!(cfg.durability, DurabilityMode::Fsync);
        assert_eq!(cfg.max_text_bytes, 64 * 1024);
        assert!(toml::from_str::<Config>("shardz = 3").is_err());
        assert_eq!(cfg.metrics_listen, Some("127.0.0.1:9464".parse().unwrap()));
        let cfg: Config = toml::from_str("metrics_listen = \"0.0.0.0:9100\"").unwrap();
        assert_eq!(cfg.metrics_listen, Some("0.0.0.0:9100".parse().unwrap()));
        let cfg: Config = toml::from_str("metrics_listen = \"off\"").unwrap();
        assert_eq!(cfg.metrics_listen, None);
        assert!(toml::from_str::<Config>("metrics_listen = \"nowhere\"").is_err());
    }

    #[test]
    fn validate_rejects_inconsistent_values() {
        assert!(Config::default().validate().is_ok());
        let cfg = Config {
            tls_cert: Some("a.pem".into()),
            ..Config::default()
        };
        assert!(cfg.validate().is_err());
        let cfg = Config {
            shards: 64,
            ..Config::default()
        };
        assert!(cfg.validate().is_err());
    }

    #[test]
    fn a_cluster_needs_a_node_name_and_valid_urls() {
        let cfg: Config =
            toml::from_str("[cluster]\nnats_urls = [\"nats://127.0.0.1:4222\"]").unwrap();
        assert!(cfg.cluster.enabled());
        assert_eq!(cfg.cluster.slots, 1024);
        assert!(cfg.validate().unwrap_err().to_string().contains("--node"));
        let cfg: Config = toml::from_str(
            "[cluster]\nnats_urls = [\"nats://127.0.0.1:4222\", \"h2:4222\"]\nnode = \"n-1\"",
        )
        .unwrap();
        assert!(cfg.validate().is_ok());
        let mut bad = cfg.clone();
        bad.cluster.node = "a.b".into();
        assert!(bad.validate().is_err());
        let mut bad = cfg.clone();
        bad.cluster.nats_urls = vec!["nats://[::1".into()];
        assert!(bad.validate().is_err());
        let mut bad = cfg;
        bad.cluster.lease_ttl_ms = 10;
        assert!(bad.validate().is_err());
        assert!(!Config::default().cluster.enabled());
    }
}
