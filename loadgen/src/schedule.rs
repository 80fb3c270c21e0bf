//! When things happen in a run: the ramp, warm-up and measured phases, and the intended send
//! time of each message of the open-loop schedule.

use std::fmt;
use std::time::Duration;

use anyhow::Context as _;

use crate::Args;

/// The phases of a run, as offsets from the start of the send schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Phases {
    pub ramp: Duration,
    pub warmup: Duration,
    pub measured: Duration,
}

/// What the load is doing at some moment of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The offered rate is still rising to --rate; not recorded.
    Ramp,
    /// Full rate, not recorded.
    Warmup,
    /// Full rate, recorded.
    Measure,
    /// No more sends; waiting for outstanding acks and deliveries.
    Drain,
}

impl Phases {
    pub fn from_args(args: &Args) -> anyhow::Result<Self> {
        let seconds = |value: f64, flag: &str| {
            Duration::try_from_secs_f64(value)
                .with_context(|| format!("{flag} must be a non-negative number of seconds"))
        };
        Ok(Phases {
            ramp: seconds(args.ramp, "--ramp")?,
            warmup: seconds(args.warmup, "--warmup")?,
            measured: seconds(args.duration, "--duration")?,
        })
    }

    /// Where recording starts: after the ramp and the warm-up.
    pub fn record_from(&self) -> Duration {
        self.ramp + self.warmup
    }

    /// Where sending stops.
    pub fn end(&self) -> Duration {
        self.record_from() + self.measured
    }

    pub fn phase_at(&self, elapsed: Duration) -> Phase {
        if elapsed < self.ramp {
            Phase::Ramp
        } else if elapsed < self.record_from() {
            Phase::Warmup
        } else if elapsed < self.end() {
            Phase::Measure
        } else {
            Phase::Drain
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Phase::Ramp => "ramp",
            Phase::Warmup => "warm-up",
            Phase::Measure => "measure",
            Phase::Drain => "drain",
        };
        // Pad through the formatter so `{:<8}` aligns the progress line.
        f.pad(name)
    }
}

/// One thread's open-loop schedule: the offered rate rises linearly from 0 to `rate` over
/// `ramp`, then stays at `rate`.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// Messages per second after the ramp.
    rate: f64,
    ramp_s: f64,
}

impl Schedule {
    pub fn new(rate: f64, ramp: Duration) -> Self {
        Schedule {
            rate,
            ramp_s: ramp.as_secs_f64(),
        }
    }

    /// When message `k` (counting from 0) is due, in seconds from the schedule's start.
    ///
    /// During the ramp the rate at t is rate * t / ramp, so rate * t^2 / (2 ramp) messages are
    /// due by t; inverting that gives t = sqrt(2 ramp k / rate). The ramp holds
    /// rate * ramp / 2 messages; after it they are 1/rate apart.
    pub fn due_s(&self, k: u64) -> f64 {
        let k = k as f64;
        let ramp_messages = self.rate * self.ramp_s / 2.0;
        if k < ramp_messages {
            (2.0 * self.ramp_s * k / self.rate).sqrt()
        } else {
            self.ramp_s + (k - ramp_messages) / self.rate
        }
    }

    pub fn due_ns(&self, k: u64) -> u64 {
        (self.due_s(k) * 1e9) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn without_a_ramp_messages_are_evenly_spaced_from_zero() {
        let s = Schedule::new(1000.0, Duration::ZERO);
        assert_eq!(s.due_ns(0), 0);
        assert!(close(s.due_s(1), 0.001));
        assert!(close(s.due_s(2500), 2.5));
    }

    #[test]
    fn a_ramp_sends_half_the_messages_of_full_rate_then_joins_it() {
        // 100 msg/s over a 10 s ramp: 500 messages during the ramp, the 500th due at its end.
        let s = Schedule::new(100.0, Duration::from_secs(10));
        assert!(close(s.due_s(500), 10.0));
        assert!(close(s.due_s(600), 11.0));
        // The rate grows linearly, so the first half of the ramp holds a quarter of its sends.
        assert!(close(s.due_s(125), 5.0));
        // The gap between sends shrinks during the ramp and is 1/rate after it.
        let gap = |k| s.due_s(k + 1) - s.due_s(k);
        assert!(gap(10) > gap(400));
        assert!(gap(400) > 0.01);
        assert!(close(gap(700), 0.01));
    }

    #[test]
    fn due_times_never_go_backwards_across_the_ramp_end() {
        let s = Schedule::new(333.0, Duration::from_millis(1500));
        let mut last = 0;
        for k in 0..2000 {
            let due = s.due_ns(k);
            assert!(due >= last, "message {k} due at {due} ns, before {last} ns");
            last = due;
        }
    }

    #[test]
    fn phases_follow_ramp_then_warmup_then_measure_then_drain() {
        let p = Phases {
            ramp: Duration::from_secs(3),
            warmup: Duration::from_secs(2),
            measured: Duration::from_secs(10),
        };
        assert_eq!(p.record_from(), Duration::from_secs(5));
        assert_eq!(p.end(), Duration::from_secs(15));
        let at = |ms| p.phase_at(Duration::from_millis(ms));
        assert_eq!(at(0), Phase::Ramp);
        assert_eq!(at(2_999), Phase::Ramp);
        assert_eq!(at(3_000), Phase::Warmup);
        assert_eq!(at(5_000), Phase::Measure);
        assert_eq!(at(15_000), Phase::Drain);
    }
}
