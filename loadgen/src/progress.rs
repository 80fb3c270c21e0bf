//! Live progress on stderr while the load runs. Threads count into shared atomics; a reporter
//! thread turns them into one line a second: an indicatif bar on a terminal, a plain line per
//! second otherwise, so CI logs stay readable.

use std::fmt;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::live_latency::LiveLatency;
use crate::schedule::Phases;

/// What the load generator threads count, summed over all of them.
#[derive(Debug)]
pub struct Progress {
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    pub errors: AtomicU64,
    pub duplicated: AtomicU64,
    pub reordered: AtomicU64,
    /// Distinct messages of this run delivered.
    delivered: AtomicU64,
    /// Send -> delivered latency since the last report.
    delivery_latency: LiveLatency,
    /// When the send schedule started: set by the first thread past the start barrier.
    schedule_start: OnceLock<Instant>,
    phases: Phases,
    done: AtomicBool,
}

impl Progress {
    pub fn new(phases: Phases) -> Self {
        Progress {
            sent: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            duplicated: AtomicU64::new(0),
            reordered: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            delivery_latency: LiveLatency::default(),
            schedule_start: OnceLock::new(),
            phases,
            done: AtomicBool::new(false),
        }
    }

    pub fn delivered(&self, latency_us: u64) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
        self.delivery_latency.record(latency_us);
    }

    /// Marks the start of the send schedule; later calls (other threads) are ignored.
    pub fn schedule_started(&self, at: Instant) {
        let _ = self.schedule_start.set(at);
    }

    /// Reports once a second until [`Progress::finish`]; unpark the returned thread after
    /// `finish` to stop it without waiting out the second.
    pub fn report(self: &Arc<Self>) -> std::thread::JoinHandle<()> {
        let p = self.clone();
        std::thread::spawn(move || {
            let display = Display::on_stderr(p.phases.end());
            let mut last = p.totals();
            let mut last_at = Instant::now();
            loop {
                let next = last_at + Duration::from_secs(1);
                while !p.done.load(Ordering::Relaxed) && Instant::now() < next {
                    std::thread::park_timeout(next.saturating_duration_since(Instant::now()));
                }
                if p.done.load(Ordering::Relaxed) {
                    break;
                }
                let now = p.totals();
                let period = last_at.elapsed().as_secs_f64();
                last_at = Instant::now();
                display.show(&p.line(&last, &now, period));
                last = now;
            }
            display.finish();
        })
    }

    pub fn finish(&self) {
        self.done.store(true, Ordering::Relaxed);
    }

    fn totals(&self) -> Totals {
        Totals {
            sent: self.sent.load(Ordering::Relaxed),
            acked: self.acked.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
        }
    }

    fn line(&self, last: &Totals, now: &Totals, period_s: f64) -> Line {
        let per_second = |now: u64, last: u64| (now - last) as f64 / period_s.max(1e-9);
        let latency = self.delivery_latency.take();
        Line {
            elapsed: self.schedule_start.get().map(Instant::elapsed),
            phases: self.phases,
            sent_per_s: per_second(now.sent, last.sent),
            acked_per_s: per_second(now.acked, last.acked),
            delivered_per_s: per_second(now.delivered, last.delivered),
            delivery_p99_us: latency.quantile_us(0.99),
            delivery_max_us: latency.max_us(),
            undelivered: now.acked.saturating_sub(now.delivered),
            duplicated: self.duplicated.load(Ordering::Relaxed),
            reordered: self.reordered.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Totals {
    sent: u64,
    acked: u64,
    delivered: u64,
}

/// One second of progress.
#[derive(Debug)]
struct Line {
    /// Since the schedule started; None while connecting.
    elapsed: Option<Duration>,
    phases: Phases,
    sent_per_s: f64,
    /// The achieved rate.
    acked_per_s: f64,
    delivered_per_s: f64,
    delivery_p99_us: Option<u64>,
    delivery_max_us: Option<u64>,
    /// Acked but not (yet) delivered: what is lost if it is still there after the drain.
    undelivered: u64,
    duplicated: u64,
    reordered: u64,
    errors: u64,
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.phases.end().as_secs_f64();
        match self.elapsed {
            Some(elapsed) => write!(
                f,
                "{:>5.1}/{total:.0} s {:<7}",
                elapsed.as_secs_f64(),
                self.phases.phase_at(elapsed)
            )?,
            None => write!(f, "{:>5}/{total:.0} s {:<7}", "-", "connect")?,
        }
        let ms =
            |us: Option<u64>| us.map_or("-".to_string(), |us| format!("{:.3}", us as f64 / 1e3));
        write!(
            f,
            " | sent {:.0}/s acked {:.0}/s delivered {:.0}/s | delivery p99 {} ms max {} ms \
             | undelivered {} dup {} reord {} err {}",
            self.sent_per_s,
            self.acked_per_s,
            self.delivered_per_s,
            ms(self.delivery_p99_us),
            ms(self.delivery_max_us),
            self.undelivered,
            self.duplicated,
            self.reordered,
            self.errors
        )
    }
}

/// Where the lines go: a bar that redraws in place, or plain lines for logs.
enum Display {
    Bar(ProgressBar),
    Plain,
}

impl Display {
    fn on_stderr(total: Duration) -> Self {
        if !std::io::stderr().is_terminal() {
            return Display::Plain;
        }
        // Position in milliseconds of the send schedule (ramp + warm-up + measured).
        let bar = ProgressBar::with_draw_target(
            Some(total.as_millis() as u64),
            ProgressDrawTarget::stderr(),
        );
        if let Ok(style) = ProgressStyle::with_template("[{bar:20}] {msg}") {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message("connecting...");
        Display::Bar(bar)
    }

    fn show(&self, line: &Line) {
        match self {
            Display::Bar(bar) => {
                if let Some(elapsed) = line.elapsed {
                    bar.set_position(elapsed.as_millis() as u64);
                }
                bar.set_message(line.to_string());
            }
            Display::Plain => eprintln!("{line}"),
        }
    }

    /// Leaves the last line on screen.
    fn finish(self) {
        if let Display::Bar(bar) = self {
            bar.abandon();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phases() -> Phases {
        Phases {
            ramp: Duration::from_secs(2),
            warmup: Duration::from_secs(2),
            measured: Duration::from_secs(10),
        }
    }

    #[test]
    fn a_line_shows_elapsed_of_total_phase_rates_p99_and_failures() {
        let progress = Progress::new(phases());
        progress.schedule_started(Instant::now() - Duration::from_millis(5_500));
        progress.delivered(1_500);
        progress.delivered(40_000);
        progress.errors.fetch_add(3, Ordering::Relaxed);
        let last = Totals {
            sent: 0,
            acked: 0,
            delivered: 0,
        };
        let now = Totals {
            sent: 2_000,
            acked: 1_990,
            delivered: 1_980,
        };
        let line = progress.line(&last, &now, 2.0).to_string();
        assert!(line.starts_with("  5.5/14 s measure"), "{line}");
        assert!(
            line.contains("sent 1000/s acked 995/s delivered 990/s"),
            "{line}"
        );
        assert!(line.contains("p99 40.000 ms max 40.000 ms"), "{line}");
        assert!(
            line.contains("undelivered 10 dup 0 reord 0 err 3"),
            "{line}"
        );
        // The latency period was consumed: the next second starts empty.
        assert!(progress
            .line(&now, &now, 1.0)
            .to_string()
            .contains("p99 - ms"));
    }

    #[test]
    fn before_the_schedule_starts_the_line_says_connecting() {
        let progress = Progress::new(phases());
        let zero = progress.totals();
        let line = progress.line(&zero, &zero, 1.0).to_string();
        assert!(line.contains("connect"), "{line}");
    }
}
