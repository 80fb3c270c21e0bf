//! Merging thread results, the summary table, and the JSON object scripts read.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::json;

use crate::hlog::IntervalHistograms;
use crate::shard::{histogram, ThreadResult};
use crate::Args;

/// CPU use per load generator thread above which the load generator itself may be what limits
/// the run: its own queueing then shows up as server latency.
const SATURATED_CPU_PERCENT_PER_THREAD: f64 = 85.0;

/// Whether the load generator was busy enough to distort what it measured.
fn loadgen_saturated(cpu_percent: f64, threads: usize) -> bool {
    cpu_percent / threads.max(1) as f64 > SATURATED_CPU_PERCENT_PER_THREAD
}

/// CPU time (user + system) this process has used so far.
pub fn process_cpu() -> Duration {
    // /proc/self/stat fields 14 and 15 are utime and stime in clock ticks (100 per second).
    let ticks = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(')')?.1.split_whitespace().collect::<Vec<_>>();
            let utime: u64 = after.get(11)?.parse().ok()?;
            let stime: u64 = after.get(12)?.parse().ok()?;
            Some(utime + stime)
        })
        .unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

#[derive(Debug)]
pub struct Summary {
    offered_rate: f64,
    achieved_rate: f64,
    sent: u64,
    acked: u64,
    delivered: u64,
    lost: u64,
    duplicated: u64,
    reordered: u64,
    seq_gaps: u64,
    seq_reused: u64,
    errors: u64,
    reconnects: u64,
    /// Each server of --server and the connections opened to it at start.
    per_server: Vec<(String, u64)>,
    receipts: u64,
    presence_updates: u64,
    ack: Histogram<u64>,
    service: Histogram<u64>,
    delivery: Histogram<u64>,
    lag: Histogram<u64>,
    /// Per-second delivery and ack histograms, with --hlog.
    intervals: Option<IntervalHistograms>,
    cpu_percent: f64,
    threads: usize,
}

impl Summary {
    pub fn new(
        args: &Args,
        results: Vec<ThreadResult>,
        cpu: Duration,
        wall: Duration,
        measured: Duration,
    ) -> Self {
        let mut acked_by = std::collections::HashMap::new();
        let mut delivered_by = std::collections::HashMap::new();
        let mut expected_by = std::collections::HashMap::new();
        let mut s = Summary {
            offered_rate: args.rate,
            achieved_rate: 0.0,
            sent: 0,
            acked: 0,
            delivered: 0,
            lost: 0,
            duplicated: 0,
            reordered: 0,
            seq_gaps: 0,
            seq_reused: 0,
            errors: 0,
            reconnects: 0,
            per_server: args.servers().into_iter().map(|a| (a, 0)).collect(),
            receipts: 0,
            presence_updates: 0,
            ack: histogram(),
            service: histogram(),
            delivery: histogram(),
            lag: histogram(),
            intervals: None,
            cpu_percent: 100.0 * cpu.as_secs_f64() / wall.as_secs_f64().max(1e-9),
            threads: args.threads,
        };
        let mut acked_in_window = 0;
        for r in results {
            acked_in_window += r.acked_in_window;
            s.sent += r.sent;
            s.errors += r.errors;
            s.duplicated += r.duplicated;
            s.reconnects += r.reconnects;
            for ((_, all), mine) in s.per_server.iter_mut().zip(&r.per_server) {
                *all += mine;
            }
            s.receipts += r.receipts;
            s.presence_updates += r.presence_updates;
            s.reordered += r.reordered;
            s.seq_gaps += r.seq_gaps;
            s.seq_reused += r.seq_reused;
            let _ = s.ack.add(&r.ack);
            let _ = s.service.add(&r.service);
            let _ = s.delivery.add(&r.delivery);
            let _ = s.lag.add(&r.lag);
            match (&mut s.intervals, r.intervals) {
                (Some(all), Some(mine)) => all.add(&mine),
                (all @ None, mine) => *all = mine,
                (Some(_), None) => {}
            }
            for (k, v) in r.acked {
                *acked_by.entry(k).or_insert(0u64) += v;
            }
            for (k, v) in r.expected {
                *expected_by.entry(k).or_insert(0u64) += v;
            }
            for (k, v) in r.delivered {
                *delivered_by.entry(k).or_insert(0u64) += v;
            }
        }
        s.acked = acked_by.values().sum();
        s.delivered = delivered_by.values().sum();
        // Lost: deliveries that acked (durable) sends call for and that never reached an
        // online recipient.
        s.lost = expected_by
            .iter()
            .map(|(k, &a)| a.saturating_sub(delivered_by.get(k).copied().unwrap_or(0)))
            .sum();
        s.achieved_rate = acked_in_window as f64 / measured.as_secs_f64();
        s
    }

    pub fn offered_rate(&self) -> f64 {
        self.offered_rate
    }

    pub fn delivery_p99_ms(&self) -> f64 {
        q(&self.delivery, 0.99)
    }

    /// Send -> delivered latency, microseconds.
    pub fn delivery(&self) -> &Histogram<u64> {
        &self.delivery
    }

    /// Send -> ack latency, microseconds.
    pub fn ack(&self) -> &Histogram<u64> {
        &self.ack
    }

    pub fn intervals(&self) -> Option<&IntervalHistograms> {
        self.intervals.as_ref()
    }

    /// No loss, duplicate, reordering or error.
    pub fn clean(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.reordered == 0
            && self.seq_gaps == 0
            && self.seq_reused == 0
            && self.errors == 0
    }

    pub fn print(&self) {
        println!();
        println!(
            "offered {:.0} msg/s, achieved {:.0} msg/s (acks received in the measured window)",
            self.offered_rate, self.achieved_rate
        );
        println!(
            "sent {}  acked {}  delivered {}  lost {}  duplicated {}  reordered {}  seq gaps {}  errors {}  reconnects {}",
            self.sent,
            self.acked,
            self.delivered,
            self.lost,
            self.duplicated,
            self.reordered,
            self.seq_gaps,
            self.errors,
            self.reconnects
        );
        if self.seq_reused > 0 {
            println!("seqs reused for another message: {}", self.seq_reused);
        }
        if self.per_server.len() > 1 {
            let spread: Vec<String> = self
                .per_server
                .iter()
                .map(|(addr, n)| format!("{addr} {n}"))
                .collect();
            println!("connections per server: {}", spread.join("  "));
        }
        if self.receipts > 0 || self.presence_updates > 0 {
            println!(
                "receipts received {}  presence updates received {}",
                self.receipts, self.presence_updates
            );
        }
        println!(
            "{:<22}{:>9}{:>9}{:>9}{:>9}{:>10}{:>10}",
            "latency (ms)", "p50", "p90", "p99", "p99.9", "p99.99", "max"
        );
        for (name, h) in [
            ("send -> ack", &self.ack),
            ("send -> delivered", &self.delivery),
            ("service (ack)", &self.service),
            ("schedule lag", &self.lag),
        ] {
            println!(
                "{name:<22}{:>9.3}{:>9.3}{:>9.3}{:>9.3}{:>10.3}{:>10.3}",
                q(h, 0.5),
                q(h, 0.9),
                q(h, 0.99),
                q(h, 0.999),
                q(h, 0.9999),
                h.max() as f64 / 1000.0
            );
        }
        println!(
            "loadgen cpu {:.0}% of {} thread(s)",
            self.cpu_percent, self.threads
        );
        if loadgen_saturated(self.cpu_percent, self.threads) {
            println!(
                "WARNING: the load generator used {:.0}% CPU per thread (over {:.0}%): it may be \
                 the bottleneck, and its own queueing is in these latencies; rerun with more \
                 --threads (and --pin them to free cores) or a lower --rate",
                self.cpu_percent / self.threads.max(1) as f64,
                SATURATED_CPU_PERCENT_PER_THREAD
            );
        }
        if self.achieved_rate < 0.95 * self.offered_rate {
            println!("note: achieved rate is below 95% of the offered rate");
        }
        if !self.clean() {
            println!("ORACLE FAILED: see lost/duplicated/reordered/seq gaps/errors above");
        }
    }

    pub fn json(&self) -> serde_json::Value {
        json!({
            "offered_rate": self.offered_rate,
            "achieved_rate": self.achieved_rate,
            "sent": self.sent,
            "acked": self.acked,
            "delivered": self.delivered,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "reordered": self.reordered,
            "seq_gaps": self.seq_gaps,
            "seq_reused": self.seq_reused,
            "errors": self.errors,
            "reconnects": self.reconnects,
            "connections_per_server": self
                .per_server
                .iter()
                .map(|(addr, n)| json!({ "server": addr, "connections": n }))
                .collect::<Vec<_>>(),
            "receipts": self.receipts,
            "presence_updates": self.presence_updates,
            "ack_p50_ms": q(&self.ack, 0.5),
            "ack_p99_ms": q(&self.ack, 0.99),
            "delivery_p50_ms": q(&self.delivery, 0.5),
            "delivery_p99_ms": q(&self.delivery, 0.99),
            "delivery_p999_ms": q(&self.delivery, 0.999),
            "delivery_max_ms": self.delivery.max() as f64 / 1000.0,
            "schedule_lag_p99_ms": q(&self.lag, 0.99),
            "loadgen_cpu_percent": self.cpu_percent,
            "loadgen_saturated": loadgen_saturated(self.cpu_percent, self.threads),
        })
    }
}

/// A quantile in milliseconds (the histograms hold microseconds).
fn q(h: &Histogram<u64>, quantile: f64) -> f64 {
    h.value_at_quantile(quantile) as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_per_server_add_up_over_threads() {
        use clap::Parser as _;
        let args = crate::Args::parse_from(["chat-loadgen", "--server", "a:1,b:2", "--users", "6"]);
        let results: Vec<ThreadResult> = [vec![2, 1], vec![1, 2]]
            .into_iter()
            .map(|per_server| ThreadResult {
                per_server,
                ..ThreadResult::new()
            })
            .collect();
        let second = Duration::from_secs(1);
        let summary = Summary::new(&args, results, second, second, second);
        assert_eq!(
            summary.json()["connections_per_server"],
            json!([
                { "server": "a:1", "connections": 3 },
                { "server": "b:2", "connections": 3 },
            ])
        );
    }

    #[test]
    fn saturation_is_judged_per_thread() {
        assert!(!loadgen_saturated(85.0, 1));
        assert!(loadgen_saturated(86.0, 1));
        assert!(!loadgen_saturated(160.0, 2));
        assert!(loadgen_saturated(180.0, 2));
    }
}
