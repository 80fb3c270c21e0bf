//! What a load message's text carries: `run:sender:counter:intended_ns:` then padding.

/// Smallest text that holds the header.
pub const MIN_TEXT: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub run: u32,
    pub sender: u32,
    pub counter: u64,
    /// Intended send time, nanoseconds since the run's start instant.
    pub intended_ns: u64,
}

pub fn encode(stamp: Stamp, size: usize) -> String {
    let mut text = format!(
        "{}:{}:{}:{}:",
        stamp.run, stamp.sender, stamp.counter, stamp.intended_ns
    );
    let padding = size.saturating_sub(text.len());
    text.extend(std::iter::repeat_n('x', padding));
    text
}

pub fn decode(text: &str) -> Option<Stamp> {
    let mut parts = text.splitn(5, ':');
    Some(Stamp {
        run: parts.next()?.parse().ok()?,
        sender: parts.next()?.parse().ok()?,
        counter: parts.next()?.parse().ok()?,
        intended_ns: parts.next()?.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_and_pad() {
        let s = Stamp {
            run: 7,
            sender: 3,
            counter: 99,
            intended_ns: 123_456_789,
        };
        let text = encode(s, 100);
        assert_eq!(text.len(), 100);
        assert_eq!(decode(&text), Some(s));
        assert_eq!(decode("hello"), None);
    }
}
