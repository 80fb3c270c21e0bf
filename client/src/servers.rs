//! Several servers for one client: `HOST:PORT,HOST:PORT,...`, tried in turn.
//!
//! Every node of a cluster presents the same TLS identity, so one CA file works for all of
//! them. A client starts at a random entry of the list (so that many clients spread over the
//! nodes instead of all piling onto the first), then tries the next ones in order, wrapping
//! around, skipping those that refuse the connection or do not answer in time.

use std::path::Path;

use crate::{ClientError, Connection, Result};

/// The addresses of a comma-separated list (`a:7443,b:7443`); blanks around entries and empty
/// entries are ignored. One address is a list of one.
pub fn parse_servers(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The indexes of a list of `n` servers in the order to try them: `start` (modulo `n`)
/// first, then the following ones, wrapping around.
pub fn try_order(n: usize, start: usize) -> impl Iterator<Item = usize> {
    let first = if n == 0 { 0 } else { start % n };
    (0..n).map(move |i| (first + i) % n)
}

/// A random start index in a list of `n` servers (0 for an empty list).
pub fn random_start(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        rand::random::<usize>() % n
    }
}

/// Connects to the first server of `servers`, in [`try_order`] from `start`, that accepts a
/// TLS connection and on which `step` (for example a Login or a Resume) succeeds. A server
/// that refuses, times out, closes or answers `UNAVAILABLE` (a cluster node whose data for
/// that account is moving) is skipped; any other error the server answered with (e.g. bad
/// credentials) is returned at once, since another node would answer the same.
///
/// Returns the index of the server used, the connection and what `step` returned. When every
/// server failed: with one server its error as it is, with several
/// [`ClientError::Unreachable`] naming each one's failure.
pub fn connect_first<T>(
    servers: &[String],
    ca: &Path,
    start: usize,
    mut step: impl FnMut(&Connection) -> Result<T>,
) -> Result<(usize, Connection, T)> {
    if servers.is_empty() {
        return Err(ClientError::Protocol("no server address given".into()));
    }
    let mut failures = Vec::new();
    let mut last = None;
    for i in try_order(servers.len(), start) {
        let attempt = Connection::connect(&servers[i], ca).and_then(|conn| {
            let out = step(&conn)?;
            Ok((conn, out))
        });
        match attempt {
            Ok((conn, out)) => return Ok((i, conn, out)),
            Err(e) if !e.is_transient() => return Err(e),
            Err(e) => {
                failures.push(format!("{}: {e}", servers[i]));
                last = Some(e);
            }
        }
    }
    match last {
        Some(e) if servers.len() == 1 => Err(e),
        _ => Err(ClientError::Unreachable(failures.join("; "))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_is_split_on_commas_and_blanks_are_dropped() {
        assert_eq!(parse_servers("127.0.0.1:7443"), ["127.0.0.1:7443"]);
        assert_eq!(
            parse_servers(" a:1, b:2,,c:3 ,"),
            ["a:1".to_string(), "b:2".into(), "c:3".into()]
        );
        assert!(parse_servers(" , ").is_empty());
    }

    #[test]
    fn servers_are_tried_from_the_start_index_then_wrapping() {
        assert_eq!(try_order(3, 1).collect::<Vec<_>>(), [1, 2, 0]);
        assert_eq!(try_order(3, 5).collect::<Vec<_>>(), [2, 0, 1]);
        assert_eq!(try_order(1, 7).collect::<Vec<_>>(), [0]);
        assert_eq!(try_order(0, 3).count(), 0);
        assert!((0..100).all(|_| random_start(3) < 3));
    }
}
