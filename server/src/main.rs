//! `chatd`: the chat server. Configuration comes from embedded defaults, then `--config`
//! (TOML), then flags. See docs/OPERATIONS.md.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;

use clap::Parser;

use chat_server::config::DurabilityMode;
use chat_server::Config;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The chat server: thread-per-core shards serving the chat protocol over TLS 1.3.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// TOML configuration file; flags override its values.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Directory for shard databases and generated TLS files [default: ./data]
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Address to serve TLS on [default: 127.0.0.1:7443]
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<std::net::SocketAddr>,
    /// Address of the HTTP /metrics and /health endpoint, or `off` [default: 127.0.0.1:9464]
    #[arg(long, value_name = "HOST:PORT")]
    metrics_listen: Option<String>,
    /// Number of shards (one executor each); 0 = one per core [default: 0]
    #[arg(long)]
    shards: Option<usize>,
    /// Do not pin shards to cores.
    #[arg(long)]
    no_pin: bool,
    /// PEM certificate chain (with --tls-key); default: a generated dev certificate
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// When a send counts as durable [default: wal]
    #[arg(long, value_enum)]
    durability: Option<DurabilityMode>,
    /// Busy-poll this many microseconds before a shard's thread sleeps [default: 0]
    #[arg(long, value_name = "US")]
    spin_us: Option<u64>,
    /// Join a cluster over these NATS servers (comma-separated `nats://host:port`);
    /// without it chatd is a single node [config: cluster.nats_urls]
    #[arg(long, value_name = "URLS", value_delimiter = ',')]
    nats: Option<Vec<String>>,
    /// This node's name in the cluster, unique among its nodes [config: cluster.node]
    #[arg(long, value_name = "NAME")]
    node: Option<String>,
    /// Log filter, e.g. `info` or `chat_server=debug` [env: RUST_LOG; default: info]
    #[arg(long, value_name = "FILTER")]
    log: Option<String>,
    /// Log lines as human-readable text or as one JSON object per line
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Validate the configuration, print it, and exit.
    #[arg(long)]
    check_config: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Errors end the process with one line on stderr and exit status 1: no backtrace, even
/// with RUST_BACKTRACE set (an operator needs what failed, where and why, not frames).
fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chatd: cannot start: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, with a hint for the common ones.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = format!("{e:#}");
    let io = e.chain().find_map(|c| c.downcast_ref::<std::io::Error>());
    match io.map(std::io::Error::kind) {
        Some(std::io::ErrorKind::AddrInUse) => {
            let flag = if line.contains("metrics_listen") {
                "--metrics-listen"
            } else {
                "--listen"
            };
            line.push_str(&format!(
                " (another process holds that port: stop it, or choose another address with {flag})"
            ));
        }
        Some(std::io::ErrorKind::PermissionDenied) => {
            line.push_str(" (permission denied: check the path's owner, or use a port >= 1024)")
        }
        _ => {}
    }
    line.replace('\n', " ")
}

fn run(args: Args) -> anyhow::Result<()> {
    let filter = args
        .log
        .clone()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info".into());
    let logs =
        tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::new(filter));
    match args.log_format {
        LogFormat::Text => logs.init(),
        // One JSON object per line, fields included, for log shippers.
        LogFormat::Json => logs.json().init(),
    }

    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(v) = args.data_dir {
        config.data_dir = v;
    }
    if let Some(v) = args.listen {
        config.listen = v;
    }
    if let Some(v) = args.metrics_listen {
        config.metrics_listen = chat_server::config::parse_metrics_listen(&v)
            .map_err(|e| anyhow::anyhow!("--metrics-listen: {e}"))?;
    }
    if let Some(v) = args.shards {
        config.shards = v;
    }
    if args.no_pin {
        config.pin_cores = false;
    }
    if let (Some(cert), Some(key)) = (args.tls_cert, args.tls_key) {
        config.tls_cert = Some(cert);
        config.tls_key = Some(key);
    }
    if let Some(v) = args.durability {
        config.durability = v;
    }
    if let Some(v) = args.spin_us {
        config.spin_before_park_us = v;
    }
    if let Some(v) = args.nats {
        config.cluster.nats_urls = v.into_iter().filter(|u| !u.trim().is_empty()).collect();
    }
    if let Some(v) = args.node {
        config.cluster.node = v;
    }
    config.validate()?;
    if args.check_config {
        println!("configuration is valid:\n{config:#?}");
        return Ok(());
    }

    let cluster = config.cluster.enabled().then(|| {
        format!(
            "cluster node {:?} over NATS {} (ready on /health once it holds its lease)",
            config.cluster.node,
            config.cluster.nats_urls.join(",")
        )
    });
    let server = chat_server::start(config)?;
    if let Some(ca) = server.ca_path() {
        println!(
            "chatd listening on {} (development CA: {})",
            server.local_addr(),
            ca.display()
        );
    } else {
        println!("chatd listening on {}", server.local_addr());
    }
    if let Some(addr) = server.metrics_addr() {
        println!("metrics on http://{addr}/metrics, health on http://{addr}/health");
    }
    if let Some(line) = cluster {
        println!("{line}");
    }
    let stop = server.stop_flag();
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    server.wait();
    if stop.load(Ordering::SeqCst) {
        tracing::info!("stopped cleanly");
    }
    Ok(())
}
