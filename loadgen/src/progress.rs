//! A live line per second on stderr while the load runs: rates and the worst delivery
//! latency of that second, summed over all threads through a few atomics.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub struct Progress {
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    pub delivered: AtomicU64,
    /// Worst send -> delivered latency (us) since the last report.
    pub max_delivery_us: AtomicU64,
    done: AtomicBool,
}

impl Progress {
    pub fn delivered(&self, latency_us: u64) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
        self.max_delivery_us
            .fetch_max(latency_us, Ordering::Relaxed);
    }

    /// Prints one line a second until [`Progress::finish`].
    pub fn report(self: &Arc<Self>) -> std::thread::JoinHandle<()> {
        let p = self.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            let (mut sent, mut acked, mut delivered) = (0, 0, 0);
            while !p.done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_secs(1));
                let (s, a, d) = (
                    p.sent.load(Ordering::Relaxed),
                    p.acked.load(Ordering::Relaxed),
                    p.delivered.load(Ordering::Relaxed),
                );
                let max = p.max_delivery_us.swap(0, Ordering::Relaxed);
                eprintln!(
                    "[{:>4.0}s] sent {:>7}/s  acked {:>7}/s  delivered {:>7}/s  worst delivery {:>8.3} ms",
                    start.elapsed().as_secs_f64(),
                    s - sent,
                    a - acked,
                    d - delivered,
                    max as f64 / 1000.0
                );
                (sent, acked, delivered) = (s, a, d);
            }
        })
    }

    pub fn finish(&self) {
        self.done.store(true, Ordering::Relaxed);
    }
}
