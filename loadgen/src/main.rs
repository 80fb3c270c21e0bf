//! `chat-loadgen`: an open-loop load generator and correctness oracle for chatd.
//!
//! Sends are scheduled at intended times for a target aggregate `--rate`; latency is measured
//! from the intended time (wrk2's model), so a stalled server shows up as latency rather than
//! as a lower rate. Each message carries (run, sender, per-sender counter, intended time) in
//! its text, so the receiving side can measure delivery latency and check that nothing is
//! lost, duplicated or reordered. Thread-per-core: one glommio executor per `--threads`.
//!
//! Besides the summary it can write the results as JSON (`--json`), an HdrHistogram interval
//! log (`--hlog`) and an SVG latency-by-percentile plot (`--plot`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;

mod accounts;
mod hlog;
mod live_latency;
mod oracle;
mod plot;
mod progress;
mod report;
mod schedule;
mod shard;
mod sizes;
mod wire;

use sizes::SizeDist;

/// Open-loop load generator and correctness oracle for chatd.
#[derive(Debug, Parser, Clone)]
#[command(version, about)]
pub struct Args {
    /// Server address, or several separated by commas (the nodes of a cluster, one --ca
    /// for all): connection N (account N, for its login, groups and uploads too) goes to
    /// server N mod the number of servers, round robin; the summary and --json say how many
    /// went to each
    #[arg(
        long,
        default_value = "127.0.0.1:7443",
        value_name = "HOST:PORT[,HOST:PORT...]"
    )]
    pub server: String,
    /// CA certificate (PEM) of the server
    #[arg(long, default_value = "./data/tls/ca.pem", value_name = "FILE")]
    pub ca: PathBuf,
    /// Target aggregate send rate, messages per second
    #[arg(long, default_value_t = 11_600.0)]
    pub rate: f64,
    /// Connections (users); users are paired and each sends to its partner
    #[arg(long, default_value_t = 200)]
    pub users: usize,
    /// Measured duration, seconds (after the ramp and the warm-up)
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Warm-up, seconds: load is applied at the full --rate but not recorded
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Ramp, seconds, before the warm-up: the offered rate rises linearly from 0 to --rate;
    /// not recorded
    #[arg(long, default_value_t = 0.0)]
    pub ramp: f64,
    /// Message text size in bytes: every message's with --size-dist fixed, the mean with exp
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Message size distribution (sizes are drawn from a fixed seed per thread, so reruns send
    /// the same sizes)
    #[arg(long, value_enum, default_value_t = SizeDist::Fixed)]
    pub size_dist: SizeDist,
    /// Load generator threads (glommio executors)
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Pin load generator thread N to this CPU + N (e.g. 1 on a 2-core box with the server on 0)
    #[arg(long, value_name = "CPU")]
    pub pin: Option<usize>,
    /// Session tokens of the accounts, kept between runs: a later run with the same file
    /// resumes sessions instead of logging in (no password hashing on the server, so
    /// thousands of connections start in seconds). Written when missing or stale.
    #[arg(long, value_name = "FILE")]
    pub tokens: Option<PathBuf>,
    /// Account name prefix: accounts PREFIX0.. are reused across runs
    #[arg(long, default_value = "lg")]
    pub prefix: String,
    /// Write the summary as one JSON object to this file
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Write an HdrHistogram interval log (V2 deflate): per second of the measured window, a
    /// histogram tagged "delivery" and one tagged "ack". Values are MICROSECONDS (latency from
    /// the intended send time); the max column is in ms. For HistogramLogProcessor, pass
    /// -outputValueUnitRatio 1000 to read milliseconds. With --max: the knee's run
    #[arg(long, value_name = "PATH")]
    pub hlog: Option<PathBuf>,
    /// Write an SVG plot of delivery and ack latency (ms) by percentile, HdrHistogram style.
    /// With --max: the knee's run (the last passing step)
    #[arg(long, value_name = "PATH")]
    pub plot: Option<PathBuf>,
    /// Find the knee: start at --rate and multiply it by --step until delivery p99 exceeds
    /// --p99-bound-ms or the oracle fails; report the highest passing rate
    #[arg(long)]
    pub max: bool,
    /// Rate multiplier per --max step
    #[arg(long, default_value_t = 1.5)]
    pub step: f64,
    /// Delivery p99 bound for --max, milliseconds
    #[arg(long, default_value_t = 10.0)]
    pub p99_bound_ms: f64,
    /// Members per group: users are put in groups of this size (their own groups, made at
    /// start-up), and --group-share of each user's sends go to their group, so each of
    /// those reaches the other members. 0 = 1:1 only (the default, which the benchmark
    /// figures use)
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub group_size: usize,
    /// Fraction of sends that go to the sender's group (with --group-size)
    #[arg(long, default_value_t = 0.1, value_name = "F")]
    pub group_share: f64,
    /// Reconnect churn: this many connections per second (over all threads) drop and
    /// reconnect as a phone changing networks does: Resume, Sync after the last event seen,
    /// resend of every unacknowledged send with its client_msg_id. 0 = none
    #[arg(long, default_value_t = 0.0, value_name = "PER_SEC")]
    pub reconnect_rate: f64,
    /// Reconnect storm: this many seconds after the load starts, every connection drops at
    /// once and all reconnect together (Resume, Sync, resends), as after a network outage
    /// or a load balancer restart
    #[arg(long, value_name = "SECS")]
    pub storm_at: Option<f64>,
    /// Fail over as a client of a cluster does: a connection the server closes, or a
    /// request answered UNAVAILABLE (a node died, its users' data is moving), reconnects
    /// (to the next --server when the connection dropped), resumes, syncs after the last
    /// event seen and resends every unacknowledged send with its client_msg_id; counted as
    /// reconnects, not errors. Without it such a run reports errors
    #[arg(long)]
    pub failover: bool,
    /// Receivers mark their 1:1 conversation read at every ack, so senders get read
    /// receipts as well as delivered ones
    #[arg(long)]
    pub mark_read: bool,
    /// A connection acknowledges what it received within this many milliseconds, with one
    /// Ack for everything that arrived meanwhile, as an app that shows ticks does (0 = an
    /// Ack after every read)
    #[arg(long, default_value_t = 5.0, value_name = "MS")]
    pub ack_interval_ms: f64,
    /// Every connection subscribes to its partner's presence (again after a reconnect)
    #[arg(long)]
    pub watch_presence: bool,
    /// Fraction of sends that carry an image (1:1 and group alike): every user uploads one
    /// --media-size image at start-up (the upload rate is printed), and those sends share
    /// it with a 1 KiB thumbnail, through the server's asset check and grant
    #[arg(long, default_value_t = 0.0, value_name = "F")]
    pub media_share: f64,
    /// Bytes of each user's image for --media-share
    #[arg(long, default_value_t = 64 * 1024, value_name = "BYTES")]
    pub media_size: usize,
    /// Busy-poll this many microseconds before a load generator thread sleeps: with a
    /// dedicated core, the server's writes then need no wake-up of a sleeping thread
    #[arg(long, default_value_t = 0, value_name = "US")]
    pub spin_us: u64,
}

impl Args {
    /// The addresses of --server, in the order given.
    pub fn servers(&self) -> Vec<String> {
        chat_client::parse_servers(&self.server)
    }

    /// The server of account (connection) `index`: round robin over --server.
    pub fn server_for(&self, index: usize) -> String {
        let servers = self.servers();
        servers
            .get(server_index(index, servers.len()))
            .cloned()
            .unwrap_or_else(|| self.server.clone())
    }

    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.servers().is_empty(),
            "--server must name at least one HOST:PORT"
        );
        anyhow::ensure!(
            self.rate > 0.0 && self.rate.is_finite(),
            "--rate must be positive"
        );
        anyhow::ensure!(
            self.users >= 2 && self.users.is_multiple_of(2),
            "--users must be even and at least 2"
        );
        anyhow::ensure!(self.threads >= 1, "--threads must be at least 1");
        anyhow::ensure!(
            self.size >= wire::MIN_TEXT,
            "--size must be at least {}",
            wire::MIN_TEXT
        );
        anyhow::ensure!(
            self.size_dist == SizeDist::Fixed || self.size <= sizes::MAX_TEXT,
            "--size must be at most {} with --size-dist exp",
            sizes::MAX_TEXT
        );
        anyhow::ensure!(self.duration > 0.0, "--duration must be positive");
        anyhow::ensure!(
            self.group_size == 0 || (2..=self.users).contains(&self.group_size),
            "--group-size must be 0 or between 2 and --users"
        );
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.group_share),
            "--group-share must be between 0 and 1"
        );
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.media_share),
            "--media-share must be between 0 and 1"
        );
        anyhow::ensure!(
            (1..=16 << 20).contains(&self.media_size),
            "--media-size must be between 1 B and 16 MiB (the server's default limit)"
        );
        // Checks that --ramp, --warmup and --duration are usable durations.
        schedule::Phases::from_args(self)?;
        Ok(())
    }
}

/// Which of `servers` servers connection `index` goes to: round robin by connection index.
pub fn server_index(index: usize, servers: usize) -> usize {
    index % servers.max(1)
}

/// How many of `connections` connections go to each of `servers` servers.
pub fn spread(connections: usize, servers: usize) -> Vec<u64> {
    let mut counts = vec![0; servers.max(1)];
    for index in 0..connections {
        counts[server_index(index, servers)] += 1;
    }
    counts
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

/// Runs the load; Ok(false) when the oracle found loss, duplicates, reordering or errors.
fn run(args: Args) -> anyhow::Result<bool> {
    args.validate()?;
    eprintln!("preparing {} accounts...", args.users);
    let users = accounts::prepare(&args)?;
    let groups = accounts::make_groups(&args, &users)?;
    let media = accounts::upload_media(&args, &users)?;
    eprintln!(
        "offering {:.0} msg/s for {}{:.0}+{:.0} s (warm-up+measured) over {} connections on {} \
         thread(s)",
        args.rate,
        if args.ramp > 0.0 {
            format!("a {:.0} s ramp, then ", args.ramp)
        } else {
            String::new()
        },
        args.warmup,
        args.duration,
        args.users,
        args.threads
    );
    if !args.max {
        let summary = measure(&args, users, &groups, &media)?;
        write_outputs(&args, &summary, None)?;
        return Ok(summary.clean());
    }
    anyhow::ensure!(args.step > 1.0, "--step must be above 1");
    let mut step_args = args.clone();
    let mut knee: Option<report::Summary> = None;
    loop {
        eprintln!("--max: trying {:.0} msg/s", step_args.rate);
        let summary = measure(&step_args, users.clone(), &groups, &media)?;
        let passed = summary.clean() && summary.delivery_p99_ms() <= args.p99_bound_ms;
        if !passed {
            println!(
                "--max: {:.0} msg/s fails (delivery p99 {:.3} ms, clean: {})",
                step_args.rate,
                summary.delivery_p99_ms(),
                summary.clean()
            );
            break;
        }
        knee = Some(summary);
        step_args.rate *= args.step;
    }
    let Some(knee) = knee else {
        println!("--max: even the starting rate {:.0} msg/s fails", args.rate);
        return Ok(false);
    };
    println!(
        "--max: knee = {:.0} msg/s (highest rate with delivery p99 <= {} ms and a clean oracle)",
        knee.offered_rate(),
        args.p99_bound_ms
    );
    write_outputs(&args, &knee, Some(knee.offered_rate()))?;
    Ok(true)
}

/// Writes the files asked for: --json, --hlog, --plot.
fn write_outputs(
    args: &Args,
    summary: &report::Summary,
    knee_rate: Option<f64>,
) -> anyhow::Result<()> {
    let what = match knee_rate {
        Some(rate) => format!("chat-loadgen --max knee: {rate:.0} msg/s offered"),
        None => format!("chat-loadgen: {:.0} msg/s offered", summary.offered_rate()),
    };
    if let Some(path) = &args.json {
        let mut json = summary.json();
        if let Some(rate) = knee_rate {
            json["knee_rate"] = serde_json::json!(rate);
        }
        std::fs::write(path, json.to_string() + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.hlog {
        let intervals = summary
            .intervals()
            .context("no interval histograms were recorded")?;
        intervals.write(path, &what)?;
    }
    if let Some(path) = &args.plot {
        plot::write_svg(
            path,
            &format!("{what}: latency by percentile"),
            &[("delivery", summary.delivery()), ("ack", summary.ack())],
        )
        .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// One run at `args.rate`: applies the load, prints and returns the summary.
fn measure(
    args: &Args,
    users: Vec<accounts::Account>,
    groups: &[Option<accounts::Group>],
    media: &[Option<chat_client::pb::Media>],
) -> anyhow::Result<report::Summary> {
    let cpu_before = report::process_cpu();
    let wall = std::time::Instant::now();
    let results = shard::run_all(args, users, groups, media)?;
    let cpu = report::process_cpu().saturating_sub(cpu_before);
    let summary = report::Summary::new(
        args,
        results,
        cpu,
        wall.elapsed(),
        Duration::from_secs_f64(args.duration),
    );
    summary.print();
    Ok(summary)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // reason: test code
    use super::*;

    #[test]
    fn a_server_list_spreads_connections_round_robin() {
        let args = Args::parse_from(["chat-loadgen", "--server", "a:1, b:2,c:3", "--users", "8"]);
        assert_eq!(args.servers(), ["a:1", "b:2", "c:3"]);
        let order: Vec<String> = (0..5).map(|i| args.server_for(i)).collect();
        assert_eq!(order, ["a:1", "b:2", "c:3", "a:1", "b:2"]);
        assert_eq!(spread(8, 3), [3, 3, 2]);
        args.validate().unwrap();

        // One address (the default) takes every connection.
        let one = Args::parse_from(["chat-loadgen"]);
        assert_eq!(one.servers(), ["127.0.0.1:7443"]);
        assert!((0..4).all(|i| one.server_for(i) == "127.0.0.1:7443"));
        assert_eq!(spread(200, 1), [200]);

        let none = Args::parse_from(["chat-loadgen", "--server", " , "]);
        assert!(none.validate().is_err());
    }
}
