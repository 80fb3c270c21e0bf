//! What presence needs from disk: last seen, which groups a user is in (kept on the user's
//! shard from the group changes it receives), and whether two users have talked 1:1.

use chat_protocol::pb::{self, GroupChangeKind};
use rocksdb::{Direction, IteratorMode, WriteBatch, DB};

use crate::{cf_handle, corrupt, keys, Result, Store, CF_HISTORY, CF_LAST_SEEN, CF_USER_GROUPS};

impl Store {
    /// Records when the user's last connection closed, now.
    pub fn set_last_seen(&self, user_id: u64, timestamp_us: u64) -> Result<()> {
        let db = self.db()?;
        self.put_now(
            &db,
            cf_handle(&db, CF_LAST_SEEN),
            keys::user(user_id),
            timestamp_us.to_be_bytes(),
        )?;
        Ok(())
    }

    /// When the user was last seen (0 = never recorded).
    pub fn last_seen(&self, user_id: u64) -> Result<u64> {
        let db = self.db()?;
        let value = db.get_pinned_cf(cf_handle(&db, CF_LAST_SEEN), keys::user(user_id))?;
        match value {
            None => Ok(0),
            Some(v) => keys::u64_at(&v, 0).ok_or_else(|| corrupt(CF_LAST_SEEN, "not 8 bytes")),
        }
    }

    /// The groups `user_id` is a member of, as far as this shard has been told.
    pub fn user_groups(&self, user_id: u64) -> Result<Vec<u64>> {
        let db = self.db()?;
        let start = keys::group_entry(user_id, 0);
        let iter = db.iterator_cf(
            cf_handle(&db, CF_USER_GROUPS),
            IteratorMode::From(&start, Direction::Forward),
        );
        let mut groups = Vec::new();
        for item in iter {
            let (key, _) = item?;
            if keys::u64_at(&key, 0) != Some(user_id) {
                break;
            }
            groups.push(keys::u64_at(&key, 8).ok_or_else(|| corrupt(CF_USER_GROUPS, "short key"))?);
        }
        Ok(groups)
    }

    /// Whether `owner` has a 1:1 message with `peer` in either direction.
    pub fn has_conversation(&self, owner: u64, peer: u64) -> Result<bool> {
        let db = self.db()?;
        let start = keys::history(owner, peer, 0);
        let mut iter = db.iterator_cf(
            cf_handle(&db, CF_HISTORY),
            IteratorMode::From(&start, Direction::Forward),
        );
        Ok(match iter.next().transpose()? {
            Some((key, _)) => keys::in_conversation(&key, owner, peer),
            None => false,
        })
    }

    /// Keeps `user_groups` in step with a group change delivered to local `members`.
    pub(crate) fn index_membership(
        &self,
        batch: &mut WriteBatch,
        db: &DB,
        change: &pb::GroupChange,
        members: &[u64],
    ) {
        let cf = cf_handle(db, CF_USER_GROUPS);
        for user in change.user_ids.iter().filter(|u| members.contains(u)) {
            let key = keys::group_entry(*user, change.group_id);
            match change.kind() {
                GroupChangeKind::Created | GroupChangeKind::Added => batch.put_cf(cf, key, []),
                GroupChangeKind::Removed | GroupChangeKind::Left => batch.delete_cf(cf, key),
                _ => {}
            }
        }
    }
}
