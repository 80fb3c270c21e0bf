//! Messages after sending: edits, deletions for everyone, reactions (changes that rewrite
//! the stored message) and deletions for oneself (a per-user "hidden" mark that history
//! pages skip).
//!
//! A 1:1 message is stored in its conversation's history on each user's shard (once when
//! they share one) and in full in the recipient's inbox; a group message in the group's log
//! and, once per member shard, in `group_copies`. A change rewrites the copies on the shard
//! that applies it, so history, a catch-up from the inbox and the sender's `sent` events
//! (references to history) all show the message as it is now. Rewrites staged for the next
//! commit are kept in `Store::staged_rewrites`, so two changes before one commit build on
//! each other.

use std::collections::HashSet;

use chat_protocol::pb::{self, event, MessageChangeKind};
use prost::Message as _;
use rocksdb::{Direction, IteratorMode};

use crate::{
    cf_handle, decode, keys, HistoryPage, Result, Store, CF_GROUP_COPIES, CF_GROUP_LOG, CF_HIDDEN,
    CF_HISTORY, CF_INBOX,
};

/// Values staged by changes, by (column family, key): see `Store::staged_rewrites`.
pub(crate) type Rewrites = std::collections::HashMap<(&'static str, Vec<u8>), Vec<u8>>;

/// Applies a deletion, an edit or a reaction to a message. False when it changes nothing:
/// the same reaction again, removing a reaction that is not there, or anything but a
/// deletion of a message that is already deleted.
pub fn apply_change(m: &mut pb::Message, c: &pb::MessageChange) -> bool {
    if m.deleted {
        return false;
    }
    match c.kind() {
        MessageChangeKind::Deleted => {
            m.deleted = true;
            m.text.clear();
            m.media = None;
            m.reactions.clear();
        }
        MessageChangeKind::Edited => {
            m.text = c.text.clone();
            m.edited_us = c.timestamp_us;
        }
        MessageChangeKind::Reaction => {
            let at = m
                .reactions
                .iter()
                .position(|r| r.user_id == c.actor_user_id);
            match (at, c.emoji.is_empty()) {
                (Some(i), true) => {
                    m.reactions.remove(i);
                }
                (Some(i), false) if m.reactions[i].emoji == c.emoji => return false,
                (Some(i), false) => m.reactions[i].emoji = c.emoji.clone(),
                (None, true) => return false,
                (None, false) => m.reactions.push(pb::Reaction {
                    user_id: c.actor_user_id,
                    emoji: c.emoji.clone(),
                }),
            }
        }
        MessageChangeKind::Hidden | MessageChangeKind::Unspecified => return false,
    }
    true
}

impl Store {
    /// A value staged by a change, or else the stored one.
    fn rewritten<M: prost::Message + Default>(
        &self,
        cf: &'static str,
        key: &[u8],
    ) -> Result<Option<M>> {
        if let Some(bytes) = self.staged_rewrites.borrow().get(&(cf, key.to_vec())) {
            return decode(cf, bytes).map(Some);
        }
        self.get(cf, key)
    }

    fn stage_rewrite(&self, cf: &'static str, key: &[u8], value: Vec<u8>) -> Result<()> {
        let db = self.db()?;
        self.pending
            .borrow_mut()
            .put_cf(cf_handle(&db, cf), key, &value);
        self.staged_rewrites
            .borrow_mut()
            .insert((cf, key.to_vec()), value);
        Ok(())
    }

    /// The 1:1 message of `a` and `b` (either direction) with this timestamp, as it is now.
    pub fn history_message(
        &self,
        a: u64,
        b: u64,
        timestamp_us: u64,
    ) -> Result<Option<pb::Message>> {
        self.rewritten(CF_HISTORY, &keys::history(a, b, timestamp_us))
    }

    /// Stages a 1:1 message's history entry as changed (it must exist).
    pub fn stage_history_message(&self, m: &pb::Message) -> Result<()> {
        let key = keys::history(m.from_user_id, m.to_user_id, m.timestamp_us);
        self.stage_rewrite(CF_HISTORY, &key, m.encode_to_vec())
    }

    /// Stages the recipient's inbox copy of a changed 1:1 message (at its seq), if the
    /// inbox entry there is that message.
    pub fn stage_inbox_message(&self, m: &pb::Message) -> Result<()> {
        let key = keys::inbox(m.to_user_id, m.seq);
        let Some(event) = self.rewritten::<pb::Event>(CF_INBOX, &key)? else {
            return Ok(());
        };
        match &event.kind {
            Some(event::Kind::Message(old))
                if old.from_user_id == m.from_user_id && old.timestamp_us == m.timestamp_us =>
            {
                let event = pb::Event {
                    seq: m.seq,
                    kind: Some(event::Kind::Message(m.clone())),
                };
                self.stage_rewrite(CF_INBOX, &key, event.encode_to_vec())
            }
            _ => Ok(()),
        }
    }

    /// The message of a group with this timestamp, as it is now (on the group's shard).
    pub fn group_message(&self, group_id: u64, timestamp_us: u64) -> Result<Option<pb::Message>> {
        let key = keys::group_log(group_id, timestamp_us);
        let entry = self.rewritten::<pb::Event>(CF_GROUP_LOG, &key)?;
        Ok(match entry.and_then(|e| e.kind) {
            Some(event::Kind::Message(m)) => Some(m),
            _ => None,
        })
    }

    /// On a member shard: this shard's copy of a group's message at group seq `seq`, as it
    /// is now (`None` when the entry there is not a message).
    pub fn group_copy_message(&self, group_id: u64, seq: u64) -> Result<Option<pb::Message>> {
        let key = keys::group_entry(group_id, seq);
        let entry = self.rewritten::<pb::Event>(CF_GROUP_COPIES, &key)?;
        Ok(match entry.and_then(|e| e.kind) {
            Some(event::Kind::Message(m)) => Some(m),
            _ => None,
        })
    }

    /// Stages a group message's log entry as changed (it must exist).
    pub fn stage_group_message(&self, m: &pb::Message) -> Result<()> {
        let key = keys::group_log(m.group_id, m.timestamp_us);
        let entry = pb::Event {
            seq: m.seq,
            kind: Some(event::Kind::Message(m.clone())),
        };
        self.stage_rewrite(CF_GROUP_LOG, &key, entry.encode_to_vec())
    }

    /// On a member shard: applies a group change (an entry handed out like any other) to
    /// this shard's copy of the message, which the members' inboxes refer to.
    pub fn stage_group_copy_change(&self, c: &pb::MessageChange) -> Result<()> {
        let key = keys::group_entry(c.group_id, c.message_seq);
        let Some(mut entry) = self.rewritten::<pb::Event>(CF_GROUP_COPIES, &key)? else {
            return Ok(());
        };
        let changed = match entry.kind.as_mut() {
            Some(event::Kind::Message(m)) if m.timestamp_us == c.message_us => apply_change(m, c),
            _ => false,
        };
        if !changed {
            return Ok(());
        }
        self.stage_rewrite(CF_GROUP_COPIES, &key, entry.encode_to_vec())
    }

    /// Hides a message from `owner`'s history pages (delete for me). Staged.
    pub fn stage_hidden(
        &self,
        owner: u64,
        group: bool,
        conversation: u64,
        timestamp_us: u64,
    ) -> Result<()> {
        let db = self.db()?;
        self.pending.borrow_mut().put_cf(
            cf_handle(&db, CF_HIDDEN),
            keys::hidden(owner, group, conversation, timestamp_us),
            [],
        );
        Ok(())
    }

    /// The timestamps of the messages `owner` hid in a conversation.
    fn hidden_in(&self, owner: u64, group: bool, conversation: u64) -> Result<HashSet<u64>> {
        let db = self.db()?;
        let start = keys::hidden(owner, group, conversation, 0);
        let iter = db.iterator_cf(
            cf_handle(&db, CF_HIDDEN),
            IteratorMode::From(&start, Direction::Forward),
        );
        let mut out = HashSet::new();
        for item in iter {
            let (key, _) = item?;
            if key.get(..17) != Some(&start[..17]) {
                break;
            }
            if let Some(ts) = keys::u64_at(&key, 17) {
                out.insert(ts);
            }
        }
        Ok(out)
    }

    /// [`Store::history`] without the messages `owner` hid.
    pub fn visible_history(
        &self,
        owner: u64,
        peer: u64,
        before_us: u64,
        limit: usize,
    ) -> Result<HistoryPage> {
        let hidden = self.hidden_in(owner, false, peer)?;
        page_without(&hidden, before_us, limit, |before, n| {
            self.history(owner, peer, before, n)
        })
    }

    /// [`Store::group_history`] without the messages `viewer` hid (on the group's shard).
    pub fn visible_group_history(
        &self,
        group_id: u64,
        viewer: u64,
        before_us: u64,
        limit: usize,
    ) -> Result<HistoryPage> {
        let hidden = self.hidden_in(viewer, true, group_id)?;
        page_without(&hidden, before_us, limit, |before, n| {
            self.group_history(group_id, before, n)
        })
    }
}

/// The newest `limit` messages before `before_us` that are not `hidden`, oldest first, read
/// through `page` (which pages as `Store::history` does).
fn page_without(
    hidden: &HashSet<u64>,
    before_us: u64,
    limit: usize,
    page: impl Fn(u64, usize) -> Result<HistoryPage>,
) -> Result<HistoryPage> {
    if hidden.is_empty() {
        return page(before_us, limit);
    }
    let mut newest_first: Vec<pb::Message> = Vec::with_capacity(limit);
    let mut before = before_us;
    loop {
        let got = page(before, limit.max(1))?;
        let Some(oldest) = got.messages.first().map(|m| m.timestamp_us) else {
            break;
        };
        for m in got.messages.into_iter().rev() {
            if hidden.contains(&m.timestamp_us) {
                continue;
            }
            if newest_first.len() == limit {
                // A visible message older than the page: there is more.
                newest_first.reverse();
                return Ok(HistoryPage {
                    messages: newest_first,
                    more: true,
                });
            }
            newest_first.push(m);
        }
        if !got.more {
            break;
        }
        before = oldest;
    }
    newest_first.reverse();
    Ok(HistoryPage {
        messages: newest_first,
        more: false,
    })
}

impl Store {
    /// Stages the end of a grant: a message that shared the asset was deleted for everyone.
    pub fn stage_revoke_grant(&self, asset_id: &[u8; 16], from: crate::Grantee) -> Result<()> {
        let key = match from {
            crate::Grantee::User(id) => keys::asset_grant(asset_id, false, id),
            crate::Grantee::Group(id) => keys::asset_grant(asset_id, true, id),
        };
        let db = self.db()?;
        self.pending
            .borrow_mut()
            .delete_cf(cf_handle(&db, crate::CF_ASSET_GRANTS), key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // reason: test code
    use super::*;
    use crate::Durability;

    fn change(kind: MessageChangeKind, actor: u64, text: &str, emoji: &str) -> pb::MessageChange {
        pb::MessageChange {
            kind: kind as i32,
            actor_user_id: actor,
            text: text.into(),
            emoji: emoji.into(),
            timestamp_us: 77,
            ..Default::default()
        }
    }

    #[test]
    fn changes_apply_once_and_nothing_changes_a_deleted_message() {
        let mut m = pb::Message {
            text: "helo".into(),
            media: Some(Box::default()),
            ..Default::default()
        };
        assert!(apply_change(
            &mut m,
            &change(MessageChangeKind::Edited, 1, "hello", "")
        ));
        assert_eq!((m.text.as_str(), m.edited_us), ("hello", 77));
        let react = |user, emoji| change(MessageChangeKind::Reaction, user, "", emoji);
        assert!(apply_change(&mut m, &react(2, "👍")));
        assert!(!apply_change(&mut m, &react(2, "👍")), "the same again");
        assert!(apply_change(&mut m, &react(3, "😂")));
        assert!(apply_change(&mut m, &react(2, "❤️")), "replaced in place");
        let emojis: Vec<&str> = m.reactions.iter().map(|r| r.emoji.as_str()).collect();
        assert_eq!(emojis, ["❤️", "😂"]);
        assert!(apply_change(&mut m, &react(3, "")));
        assert!(!apply_change(&mut m, &react(3, "")), "nothing to remove");
        assert!(!apply_change(
            &mut m,
            &change(MessageChangeKind::Hidden, 2, "", "")
        ));
        assert!(apply_change(
            &mut m,
            &change(MessageChangeKind::Deleted, 1, "", "")
        ));
        assert!(m.deleted && m.text.is_empty() && m.media.is_none() && m.reactions.is_empty());
        for c in [
            change(MessageChangeKind::Deleted, 1, "", ""),
            change(MessageChangeKind::Edited, 1, "back", ""),
            react(2, "👍"),
        ] {
            assert!(!apply_change(&mut m, &c));
        }
    }

    #[test]
    fn history_pages_skip_hidden_messages_and_staged_rewrites_build_on_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), Durability::Wal).unwrap();
        for ts in 1..=10u64 {
            let m = pb::Message {
                from_user_id: 1,
                to_user_id: 2,
                client_msg_id: ts,
                timestamp_us: ts * 10,
                text: format!("m{ts}"),
                ..Default::default()
            };
            s.stage_message(&m).unwrap();
        }
        s.commit().unwrap();
        for ts in [100, 90, 80, 50, 10] {
            s.stage_hidden(2, false, 1, ts).unwrap();
        }
        s.commit().unwrap();
        let texts = |page: &HistoryPage| -> Vec<String> {
            page.messages.iter().map(|m| m.text.clone()).collect()
        };
        let page = s.visible_history(2, 1, 0, 2).unwrap();
        assert_eq!(
            (texts(&page), page.more),
            (vec!["m6".into(), "m7".into()], true)
        );
        let page = s.visible_history(2, 1, 60, 3).unwrap();
        assert_eq!(
            (texts(&page), page.more),
            (vec!["m2".into(), "m3".into(), "m4".into()], false)
        );
        // The other user hid nothing.
        assert_eq!(s.visible_history(1, 2, 0, 50).unwrap().messages.len(), 10);

        // Two changes staged before one commit: the second sees the first.
        let mut m = s.history_message(1, 2, 30).unwrap().unwrap();
        apply_change(&mut m, &change(MessageChangeKind::Edited, 1, "edited", ""));
        s.stage_history_message(&m).unwrap();
        let mut m = s.history_message(2, 1, 30).unwrap().unwrap();
        assert_eq!(m.text, "edited");
        apply_change(&mut m, &change(MessageChangeKind::Reaction, 2, "", "👍"));
        s.stage_history_message(&m).unwrap();
        s.stage_inbox_message(&m).unwrap();
        s.commit().unwrap();
        let m = s.history_message(1, 2, 30).unwrap().unwrap();
        assert_eq!((m.text.as_str(), m.reactions.len()), ("edited", 1));
        let inbox = s.read_inbox(2, 2, 1).unwrap();
        assert_eq!(inbox[0].kind, Some(event::Kind::Message(m)));
    }
}
