//! A throwaway throughput probe until `chat-loadgen` exists (issue 3): closed loop, so it
//! reports what the server sustains, not latency under an open-loop schedule.
//!
//! `cargo run --release -p chat-client --example flood -- ADDR CA PAIRS SECONDS`
//! registers PAIRS sender/receiver pairs, keeps a window of sends in flight per sender, and
//! prints acked and delivered messages per second.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_client::pb::{self, envelope::Body};
use chat_client::Connection;

const WINDOW: usize = 64;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let addr = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:7443".into());
    let ca = std::path::PathBuf::from(
        args.get(2)
            .cloned()
            .unwrap_or_else(|| "./data/tls/ca.pem".into()),
    );
    let pairs: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(4);
    let seconds: u64 = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(10);
    let run = rand::random::<u32>();
    let acked = Arc::new(AtomicU64::new(0));
    let delivered = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for p in 0..pairs {
        let (sname, rname) = (format!("flood{run}s{p}"), format!("flood{run}r{p}"));
        let sender = Connection::connect(&addr, &ca)?;
        sender.register(&sname, "flood-password")?;
        sender.login(&sname, "flood-password")?;
        let receiver = Connection::connect(&addr, &ca)?;
        let to = receiver.register(&rname, "flood-password")?;
        receiver.login(&rname, "flood-password")?;
        receiver.sync(None)?;
        let (acked, stop2) = (acked.clone(), stop.clone());
        threads.push(std::thread::spawn(move || -> anyhow::Result<()> {
            let mut inflight = std::collections::VecDeque::new();
            let mut id = 0u64;
            while !stop2.load(Ordering::Relaxed) {
                while inflight.len() < WINDOW {
                    id += 1;
                    inflight.push_back(sender.start(Body::SendMessage(pb::SendMessage {
                        to_user_id: to,
                        client_msg_id: id,
                        text: "x".repeat(100),
                        media: None,
                        ..Default::default()
                    }))?);
                }
                if let Some(rx) = inflight.pop_front() {
                    sender.finish(rx)?;
                    acked.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(())
        }));
        let (delivered, stop3) = (delivered.clone(), stop.clone());
        threads.push(std::thread::spawn(move || -> anyhow::Result<()> {
            let mut last = 0;
            while !stop3.load(Ordering::Relaxed) {
                if let Some(e) = receiver.next_event(Duration::from_millis(100))? {
                    anyhow::ensure!(
                        e.seq == last + 1,
                        "gap or duplicate: {} after {last}",
                        e.seq
                    );
                    last = e.seq;
                    delivered.fetch_add(1, Ordering::Relaxed);
                    if last % 1024 == 0 {
                        receiver.ack(last)?;
                    }
                }
            }
            Ok(())
        }));
    }
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let (a, d) = (
        acked.load(Ordering::Relaxed),
        delivered.load(Ordering::Relaxed),
    );
    let secs = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().map_err(|_| anyhow::anyhow!("thread panicked"))??;
    }
    println!(
        "pairs={pairs} window={WINDOW} seconds={secs:.1} acked={a} ({:.0}/s) delivered={d} ({:.0}/s)",
        a as f64 / secs,
        d as f64 / secs
    );
    Ok(())
}
