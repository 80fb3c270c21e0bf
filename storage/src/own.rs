//! What a user did on one of their devices, as events in their own inbox, so that their
//! other devices learn it: the 1:1 messages they sent, and how far they read.
//!
//! A sent message is already in the sender's history (keyed by conversation and
//! timestamp); its inbox entry is a small reference to that entry (`records::SentRef`),
//! resolved when the inbox is read, so the text is not stored twice.

use chat_protocol::pb::{self, event};
use prost::Message as _;

use crate::records::{InboxRef, SentRef};
use crate::{cf_handle, corrupt, keys, Result, Store, CF_HISTORY, CF_INBOX};

impl Store {
    /// Stages a "sent" event for `msg` (as stored, with its seq and timestamp) in its
    /// sender's inbox. The message's history entry must be staged in the same commit or be
    /// on disk already. Returns the event as it is pushed.
    pub fn stage_sent_event(&self, msg: &pb::Message) -> Result<pb::Event> {
        let owner = msg.from_user_id;
        let seq = self.next_inbox_seq(owner)?;
        let reference = InboxRef {
            seq,
            group_ref: None,
            sent_ref: Some(SentRef {
                from: msg.from_user_id,
                to: msg.to_user_id,
                timestamp_us: msg.timestamp_us,
            }),
        };
        {
            let db = self.db()?;
            self.pending.borrow_mut().put_cf(
                cf_handle(&db, CF_INBOX),
                keys::inbox(owner, seq),
                reference.encode_to_vec(),
            );
        }
        self.heads.borrow_mut().insert(owner, seq);
        Ok(pb::Event {
            seq,
            kind: Some(event::Kind::Sent(msg.clone())),
        })
    }

    /// Whether the history of `a` and `b` holds a message at `timestamp_us` (on disk).
    pub fn has_history_entry(&self, a: u64, b: u64, timestamp_us: u64) -> Result<bool> {
        let db = self.db()?;
        let key = keys::history(a, b, timestamp_us);
        let found = db.get_pinned_cf(cf_handle(&db, CF_HISTORY), key)?.is_some();
        Ok(found)
    }

    /// The event an inbox reference to a sent message stands for.
    pub(crate) fn resolve_sent_ref(&self, seq: u64, sent: SentRef) -> Result<pb::Event> {
        let key = keys::history(sent.from, sent.to, sent.timestamp_us);
        let message: pb::Message = self
            .get(CF_HISTORY, &key)?
            .ok_or_else(|| corrupt(CF_HISTORY, "a sent message's history entry is missing"))?;
        Ok(pb::Event {
            seq,
            kind: Some(event::Kind::Sent(message)),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // reason: test code
    use super::*;
    use crate::Durability;

    #[test]
    fn a_sent_event_resolves_to_the_message_in_history() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), Durability::Wal).unwrap();
        let msg = pb::Message {
            from_user_id: 1,
            to_user_id: 2,
            client_msg_id: 5,
            seq: 0,
            timestamp_us: 1000,
            text: "hello".into(),
            group_id: 0,
            media: None,
            ..Default::default()
        };
        // Both users in this store: the recipient's staging writes the one history entry.
        let (_, stored) = s.stage_message(&msg).unwrap();
        let event = s.stage_sent_event(&stored).unwrap();
        assert_eq!(event.seq, 1);
        assert!(
            !s.has_history_entry(1, 2, 1000).unwrap(),
            "not before the commit"
        );
        s.commit().unwrap();
        assert!(s.has_history_entry(2, 1, 1000).unwrap());
        assert_eq!(
            s.read_inbox(1, 0, 10).unwrap(),
            std::slice::from_ref(&event)
        );
        assert_eq!(
            event.kind,
            Some(event::Kind::Sent(pb::Message { seq: 1, ..msg }))
        );
        drop(s);
        let s = Store::open(dir.path(), Durability::Wal).unwrap();
        assert_eq!(s.read_inbox(1, 0, 10).unwrap(), [event]);
    }
}
