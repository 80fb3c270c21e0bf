//! `--hlog`: per-second delivery and ack latency histograms over the measured window, written as
//! an HdrHistogram interval log (V2 deflate encoding) that HdrHistogram's log tools read.
//!
//! A sample belongs to the second in which its message was due to be sent (its intended time),
//! the same clock the latency is measured from; so the intervals add up to the summary's
//! histograms, and a stall shows up in the second whose sends it delayed.

use std::path::Path;
use std::time::{Duration, SystemTime};

use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;

const INTERVAL: Duration = Duration::from_secs(1);

/// Per-second histograms of one measured window. Values are microseconds.
#[derive(Debug)]
pub struct IntervalHistograms {
    /// Wall-clock start of the measured window: the log's StartTime and BaseTime.
    start: SystemTime,
    measured: Duration,
    delivery: Vec<Histogram<u64>>,
    ack: Vec<Histogram<u64>>,
}

impl IntervalHistograms {
    pub fn new(start: SystemTime, measured: Duration) -> Self {
        let intervals = measured.div_duration_f64(INTERVAL).ceil().max(1.0) as usize;
        IntervalHistograms {
            start,
            measured,
            delivery: (0..intervals).map(|_| interval_histogram()).collect(),
            ack: (0..intervals).map(|_| interval_histogram()).collect(),
        }
    }

    /// `due_in_window`: how far into the measured window the message was due.
    pub fn record_delivery(&mut self, due_in_window: Duration, latency_us: u64) {
        let i = self.interval_of(due_in_window);
        let _ = self.delivery[i].record(latency_us);
    }

    pub fn record_ack(&mut self, due_in_window: Duration, latency_us: u64) {
        let i = self.interval_of(due_in_window);
        let _ = self.ack[i].record(latency_us);
    }

    /// Adds another thread's intervals; threads start their windows microseconds apart, so
    /// the same index is the same second.
    pub fn add(&mut self, other: &IntervalHistograms) {
        self.start = self.start.min(other.start);
        for (mine, theirs) in [
            (&mut self.delivery, &other.delivery),
            (&mut self.ack, &other.ack),
        ] {
            for (m, t) in mine.iter_mut().zip(theirs) {
                let _ = m.add(t);
            }
        }
    }

    fn interval_of(&self, due_in_window: Duration) -> usize {
        // Sends stop at the window's end, so only rounding can reach past the last interval.
        let i = due_in_window.as_secs() as usize;
        i.min(self.delivery.len() - 1)
    }

    /// Writes the interval log: for each second, a "delivery" then an "ack" histogram.
    pub fn write(&self, path: &Path, comment: &str) -> anyhow::Result<()> {
        let mut log = Vec::new();
        let mut serializer = V2DeflateSerializer::new();
        let mut writer = IntervalLogWriterBuilder::new()
            .add_comment(comment)
            .add_comment("values: latency from the intended send time, in microseconds")
            .with_start_time(self.start)
            .with_base_time(self.start)
            // Makes the max column of each interval line read in milliseconds.
            .with_max_value_divisor(1000.0)
            .begin_log_with(&mut log, &mut serializer)?;
        for (i, (delivery, ack)) in self.delivery.iter().zip(&self.ack).enumerate() {
            let start = INTERVAL * i as u32;
            let length = (self.measured.saturating_sub(start)).min(INTERVAL);
            for (histogram, tag) in [(delivery, "delivery"), (ack, "ack")] {
                writer
                    .write_histogram(histogram, start, length, Tag::new(tag))
                    .map_err(|e| anyhow::anyhow!("encoding the {tag} histogram: {e}"))?;
            }
        }
        std::fs::write(path, log)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
        Ok(())
    }
}

/// Starts small and grows to the largest value seen: a long run has many intervals, and a
/// full 1 us..100 s histogram for each would take far more memory.
fn interval_histogram() -> Histogram<u64> {
    let mut h = Histogram::new(3).unwrap_or_else(|_| crate::shard::histogram());
    h.auto(true);
    h
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    use hdrhistogram::serialization::Deserializer;

    use super::*;

    fn decode(encoded: &str) -> Histogram<u64> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .expect("base64");
        Deserializer::new()
            .deserialize(&mut &bytes[..])
            .expect("histogram")
    }

    #[test]
    fn the_log_parses_back_into_tagged_per_second_histograms() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        // 2.5 s: two whole seconds and a half.
        let mut intervals = IntervalHistograms::new(start, Duration::from_millis(2_500));
        intervals.record_delivery(Duration::from_millis(100), 1_000);
        intervals.record_delivery(Duration::from_millis(900), 3_000);
        intervals.record_delivery(Duration::from_millis(2_400), 50_000);
        intervals.record_ack(Duration::from_millis(1_500), 700);
        let mut other = IntervalHistograms::new(start, Duration::from_millis(2_500));
        other.record_delivery(Duration::from_millis(1_000), 2_000);
        intervals.add(&other);

        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("run.hlog");
        intervals.write(&path, "test run").expect("write");
        let log = std::fs::read(&path).expect("read");

        let mut times = Vec::new();
        let mut seen = Vec::new();
        for entry in IntervalLogIterator::new(&log) {
            match entry.expect("log entry") {
                LogEntry::StartTime(t) | LogEntry::BaseTime(t) => times.push(t.as_secs()),
                LogEntry::Interval(i) => {
                    let h = decode(i.encoded_histogram());
                    seen.push((
                        i.tag().map(|t| t.as_str().to_string()),
                        i.start_timestamp().as_millis(),
                        i.duration().as_millis(),
                        h.len(),
                        h.max(),
                    ));
                }
            }
        }
        assert_eq!(times, [1_700_000_000, 1_700_000_000]);
        let tag = |t: &str| Some(t.to_string());
        assert_eq!(
            seen,
            [
                (tag("delivery"), 0, 1000, 2, h_max(3_000)),
                (tag("ack"), 0, 1000, 0, 0),
                (tag("delivery"), 1000, 1000, 1, h_max(2_000)),
                (tag("ack"), 1000, 1000, 1, h_max(700)),
                (tag("delivery"), 2000, 500, 1, h_max(50_000)),
                (tag("ack"), 2000, 500, 0, 0),
            ]
        );
    }

    /// The max a 3-digit histogram reports for `value` (its bucket's highest equivalent).
    fn h_max(value: u64) -> u64 {
        let mut h = interval_histogram();
        h.record(value).expect("record");
        h.max()
    }

    #[test]
    fn samples_past_the_window_land_in_the_last_interval() {
        let mut intervals = IntervalHistograms::new(SystemTime::UNIX_EPOCH, INTERVAL * 2);
        intervals.record_ack(Duration::from_secs(7), 10);
        assert_eq!(intervals.ack[1].len(), 1);
    }
}
