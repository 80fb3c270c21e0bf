//! Snapshots of the slot logs (docs/PROTOCOL.md C.6): what bounds a take-over's replay and
//! a log's size. A snapshot is made from the log itself, not from this node's store: the
//! fold of the slot's messages up to a sequence JetStream acknowledged, so it holds exactly
//! what was replicated, whatever this node committed since. Its parts are published on the
//! slot's subject like a round (a deposed owner's are refused by the same fence), and only
//! once all are in is the log purged at and below the sequence it covers. A reader that
//! meets a complete snapshot drops what it read of the slot before it, so a purge that
//! races a reader is harmless: whatever it removes, the snapshot the reader still reads
//! covers.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chat_protocol::replica::{write::Kind, SlotWrites, Snapshot, Write};
use chat_storage::replica::{owner_of, Owner};
use prost::Message as _;

use super::replica::{read_logs, Log, MAX_MESSAGE_BYTES};

/// How often the slots served here are checked for a log grown past `snapshot_every`.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// One slot's log as read so far, a complete snapshot in place of what it covers.
#[derive(Debug, Default)]
pub struct SlotLog {
    /// Writes by stream sequence; a snapshot's at the sequence it covers.
    entries: BTreeMap<u64, Vec<Write>>,
    /// Where the newest complete snapshot stands in `entries`.
    snapshot_at: Option<u64>,
    /// A snapshot whose parts are still being read.
    pending: Option<Pending>,
}

#[derive(Debug)]
struct Pending {
    covers: u64,
    parts: u32,
    next: u32,
    writes: Vec<Write>,
}

impl SlotLog {
    /// Adds the slot's message at stream `sequence` (messages come in stream order).
    pub fn add(&mut self, sequence: u64, message: SlotWrites) {
        let Some(snapshot) = message.snapshot else {
            self.entries.insert(sequence, message.writes);
            return;
        };
        if snapshot.part == 0 {
            self.pending = Some(Pending {
                covers: snapshot.covers,
                parts: snapshot.parts,
                next: 0,
                writes: Vec::new(),
            });
        }
        let Some(pending) = self.pending.as_mut() else {
            return; // A part without its first: a snapshot cut short, ignored.
        };
        if pending.covers != snapshot.covers || pending.next != snapshot.part {
            self.pending = None; // Parts out of order: not a whole snapshot.
            return;
        }
        pending.writes.extend(message.writes);
        pending.next += 1;
        if pending.next < pending.parts {
            return;
        }
        if let Some(done) = self.pending.take() {
            // Everything at or below `covers` is in the snapshot; what came after stays.
            self.entries = self.entries.split_off(&(done.covers + 1));
            self.entries.insert(done.covers, done.writes);
            self.snapshot_at = Some(done.covers);
        }
    }

    /// Messages read after the newest complete snapshot: what the next one would fold.
    pub fn since_snapshot(&self) -> u64 {
        let snapshot = u64::from(
            self.snapshot_at
                .is_some_and(|s| self.entries.contains_key(&s)),
        );
        self.entries.len() as u64 - snapshot
    }
}

/// The writes of several slots' logs in stream order (a snapshot's at the sequence it
/// covers): a key two slots share (a conversation's) ends as the later write left it.
pub fn in_stream_order(logs: BTreeMap<u32, SlotLog>) -> Vec<Write> {
    let mut all: Vec<(u64, u32, Vec<Write>)> = logs
        .into_iter()
        .flat_map(|(slot, log)| log.entries.into_iter().map(move |(s, w)| (s, slot, w)))
        .collect();
    all.sort_by_key(|(sequence, slot, _)| (*sequence, *slot));
    all.into_iter().flat_map(|(_, _, w)| w).collect()
}

/// What applying `writes` in order to an empty store leaves, as puts in key order, and
/// the deletes of the keys a take-over does not wipe (a shard's copies of group entries,
/// which other slots' members may share): a take-over replaces everything else of the
/// slot, so a key missing from the snapshot is gone, but such a copy has to be deleted.
pub fn fold(writes: impl IntoIterator<Item = Write>) -> Vec<Write> {
    // `None`: a delete kept as such.
    let mut state: BTreeMap<(u32, Bytes), Option<Bytes>> = BTreeMap::new();
    for w in writes {
        match Kind::try_from(w.kind) {
            Ok(Kind::Put) => {
                state.insert((w.cf, w.key), Some(w.value));
            }
            Ok(Kind::Delete) => {
                if matches!(owner_of(&w), Owner::GroupCopy(..)) {
                    state.insert((w.cf, w.key), None);
                } else {
                    state.remove(&(w.cf, w.key));
                }
            }
            Ok(Kind::DeleteRange) => {
                if w.key < w.value {
                    let doomed: Vec<_> = state
                        .range((w.cf, w.key)..(w.cf, w.value))
                        .map(|(k, _)| k.clone())
                        .collect();
                    for k in doomed {
                        state.remove(&k);
                    }
                }
            }
            // Refused by every store's apply as well: kept out of the snapshot.
            Err(_) => tracing::warn!(kind = w.kind, "a write of unknown kind in a slot log"),
        }
    }
    state
        .into_iter()
        .map(|((cf, key), value)| match value {
            Some(value) => Write {
                kind: Kind::Put as i32,
                cf,
                key,
                value,
            },
            None => Write {
                kind: Kind::Delete as i32,
                cf,
                key,
                value: Bytes::new(),
            },
        })
        .collect()
}

/// The messages of a snapshot of `writes` covering `covers`, each at most `max_bytes` (one
/// write larger than that goes alone); an empty slot is one empty part.
pub fn snapshot_messages(writes: Vec<Write>, covers: u64, max_bytes: usize) -> Vec<Bytes> {
    let mut chunks: Vec<Vec<Write>> = vec![Vec::new()];
    let mut size = 0;
    for w in writes {
        let len = w.encoded_len() + 8;
        if size > 0 && size + len > max_bytes {
            chunks.push(Vec::new());
            size = 0;
        }
        size += len;
        if let Some(last) = chunks.last_mut() {
            last.push(w);
        }
    }
    let parts = chunks.len() as u32;
    chunks
        .into_iter()
        .enumerate()
        .map(|(part, writes)| {
            let message = SlotWrites {
                writes,
                snapshot: Some(Snapshot {
                    covers,
                    part: part as u32,
                    parts,
                }),
            };
            Bytes::from(message.encode_to_vec())
        })
        .collect()
}

/// Snapshots, one at a time, the slots served here whose logs grew by `every` messages
/// since their last snapshot, and trims each log below its snapshot; 0 turns it off.
pub async fn snapshot_slots(log: Arc<Log>, every: u64) {
    if every == 0 {
        return;
    }
    let mut tick = tokio::time::interval(CHECK_EVERY);
    loop {
        tick.tick().await;
        for slot in log.grown_since_snapshot(every) {
            if let Err(why) = snapshot(&log, slot).await {
                log.metrics.snapshots_failed.inc();
                tracing::warn!(slot, "snapshotting a slot failed: {why}");
            }
        }
    }
}

/// Snapshots one slot served here, then purges its log below the snapshot.
async fn snapshot(log: &Log, slot: u32) -> Result<(), String> {
    let started = Instant::now();
    let Some(tip) = log.tip(slot) else {
        return Ok(()); // No longer served here.
    };
    let covers = tip.last;
    let (mut logs, _) = read_logs(log, &BTreeSet::from([slot]), covers, None).await?;
    let slot_log = logs.remove(&slot).unwrap_or_default();
    let read_ms = started.elapsed().as_millis() as u64;
    let messages = tokio::task::spawn_blocking(move || {
        let writes = in_stream_order(BTreeMap::from([(slot, slot_log)]));
        snapshot_messages(fold(writes), covers, MAX_MESSAGE_BYTES)
    })
    .await
    .map_err(|e| format!("folding the log: {e}"))?;
    let parts = messages.len();
    let bytes: usize = messages.iter().map(Bytes::len).sum();
    let fold_ms = started.elapsed().as_millis() as u64 - read_ms;
    log.publish_snapshot(slot, messages).await?;
    let published_ms = started.elapsed().as_millis() as u64;
    let purged = log.purge_below(slot, covers + 1).await?;
    // The parts were counted as the slot's messages too.
    log.snapshotted(slot, tip.since_snapshot + parts as u64);
    log.metrics.snapshots.inc();
    log.metrics.snapshot_bytes.add(bytes as u64);
    log.metrics.snapshot_purged.add(purged);
    tracing::debug!(
        slot,
        covers,
        parts,
        bytes,
        purged,
        read_ms,
        fold_ms,
        published_ms,
        ms = started.elapsed().as_millis() as u64,
        "snapshotted a slot"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &str) -> Write {
        Write {
            kind: Kind::Put as i32,
            cf: 1,
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
        }
    }

    fn delete(key: &str) -> Write {
        Write {
            kind: Kind::Delete as i32,
            ..put(key, "")
        }
    }

    fn round(writes: Vec<Write>) -> SlotWrites {
        SlotWrites {
            writes,
            snapshot: None,
        }
    }

    fn decode(message: &Bytes) -> SlotWrites {
        SlotWrites::decode(&message[..]).expect("a snapshot part decodes")
    }

    fn state(writes: Vec<Write>) -> Vec<(String, String)> {
        fold(writes)
            .into_iter()
            .map(|w| {
                let text = |b: &Bytes| String::from_utf8_lossy(b).into_owned();
                (text(&w.key), text(&w.value))
            })
            .collect()
    }

    #[test]
    fn a_fold_is_what_applying_the_writes_in_order_leaves() {
        let range = Write {
            kind: Kind::DeleteRange as i32,
            cf: 1,
            key: Bytes::from_static(b"c"),
            value: Bytes::from_static(b"e"),
        };
        let other_family = Write {
            cf: 2,
            ..put("c", "kept")
        };
        let writes = vec![
            put("a", "1"),
            put("c", "2"),
            put("d", "3"),
            put("e", "4"),
            other_family,
            put("a", "5"),
            delete("b"),
            range,
        ];
        let folded = fold(writes);
        let keys: Vec<_> = folded.iter().map(|w| (w.cf, w.key.clone())).collect();
        assert_eq!(
            keys,
            vec![
                (1, Bytes::from_static(b"a")),
                (1, Bytes::from_static(b"e")),
                (2, Bytes::from_static(b"c"))
            ]
        );
        assert_eq!(folded[0].value, Bytes::from_static(b"5"));
        assert!(folded.iter().all(|w| w.kind == Kind::Put as i32));
    }

    #[test]
    fn a_fold_keeps_the_deletes_of_group_entry_copies_which_take_overs_do_not_wipe() {
        let key = Bytes::from([7u8; 16].to_vec());
        let copies = (0..64)
            .find(|&cf| {
                let w = Write {
                    kind: Kind::Delete as i32,
                    cf,
                    key: key.clone(),
                    value: Bytes::new(),
                };
                matches!(owner_of(&w), Owner::GroupCopy(..))
            })
            .expect("a family of group entry copies");
        let copy = |kind: Kind| Write {
            kind: kind as i32,
            cf: copies,
            key: key.clone(),
            value: Bytes::from_static(b"entry"),
        };
        let folded = fold(vec![
            copy(Kind::Put),
            copy(Kind::Delete),
            put("a", "1"),
            delete("a"),
        ]);
        assert_eq!(folded.len(), 1, "{folded:?}");
        assert_eq!(
            (folded[0].kind, folded[0].cf, &folded[0].key),
            (Kind::Delete as i32, copies, &key)
        );
        let again = fold(vec![copy(Kind::Delete), copy(Kind::Put)]);
        assert_eq!(again[0].kind, Kind::Put as i32);
    }

    #[test]
    fn a_complete_snapshot_replaces_what_it_covers_and_keeps_what_came_after() {
        let mut log = SlotLog::default();
        log.add(1, round(vec![put("a", "old"), put("b", "gone")]));
        log.add(4, round(vec![delete("b"), put("c", "1")]));
        log.add(7, round(vec![put("a", "new")]));
        // A snapshot of the log up to 4, in two parts, with a round between them.
        let parts = snapshot_messages(fold(vec![put("a", "old"), put("c", "1")]), 4, 1);
        assert_eq!(parts.len(), 2);
        log.add(9, decode(&parts[0]));
        log.add(10, round(vec![put("d", "after")]));
        assert_eq!(
            log.since_snapshot(),
            4,
            "no snapshot until all parts are in"
        );
        log.add(12, decode(&parts[1]));
        assert_eq!(log.since_snapshot(), 2, "the rounds at 7 and 10");
        let writes = in_stream_order(BTreeMap::from([(3, log)]));
        assert_eq!(
            state(writes),
            vec![
                ("a".into(), "new".into()),
                ("c".into(), "1".into()),
                ("d".into(), "after".into())
            ]
        );
    }

    #[test]
    fn a_snapshot_missing_a_part_is_ignored() {
        let mut log = SlotLog::default();
        log.add(1, round(vec![put("a", "1")]));
        log.add(2, round(vec![put("b", "2")]));
        let parts = snapshot_messages(fold(vec![put("a", "1"), put("b", "2")]), 2, 1);
        // The first part only (its owner died), then a newer owner's whole snapshot whose
        // purge removed the messages below it: the reader starts at the new one's parts.
        log.add(3, decode(&parts[0]));
        log.add(4, round(vec![put("c", "3")]));
        assert_eq!(state(in_stream_order(BTreeMap::from([(0, log)]))).len(), 3);

        let mut purged = SlotLog::default();
        purged.add(8, decode(&parts[1])); // a second part without its first
        purged.add(9, round(vec![put("c", "3")]));
        assert_eq!(purged.since_snapshot(), 1);
        assert_eq!(
            state(in_stream_order(BTreeMap::from([(0, purged)]))).len(),
            1
        );
    }

    #[test]
    fn slots_interleave_in_stream_order_and_an_empty_slot_is_one_empty_part() {
        let mut first = SlotLog::default();
        first.add(1, round(vec![put("shared", "older")]));
        let mut second = SlotLog::default();
        second.add(2, round(vec![put("shared", "newer")]));
        let writes = in_stream_order(BTreeMap::from([(5, second), (9, first)]));
        assert_eq!(state(writes), vec![("shared".into(), "newer".into())]);

        let empty = snapshot_messages(Vec::new(), 3, MAX_MESSAGE_BYTES);
        assert_eq!(empty.len(), 1);
        let part = decode(&empty[0]);
        assert!(part.writes.is_empty());
        assert_eq!(
            part.snapshot,
            Some(Snapshot {
                covers: 3,
                part: 0,
                parts: 1
            })
        );
    }
}
