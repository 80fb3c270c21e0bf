//! The users a user keeps in a list: the ones they blocked, and their contacts. Both live
//! on the owner's shard, where the decisions that use them are made (a 1:1 send or typing
//! runs on the recipient's shard, a presence check on the watched user's).

use rocksdb::{Direction, IteratorMode};

use crate::{cf_handle, corrupt, keys, Result, StorageError, Store, CF_BLOCKS, CF_CONTACTS};

/// Most users one list may hold.
pub const MAX_LISTED_USERS: usize = 5000;

/// Which of a user's lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UserList {
    /// Users the owner blocked.
    Blocked,
    /// The owner's contact list.
    Contacts,
}

impl UserList {
    pub(crate) fn cf(self) -> &'static str {
        match self {
            UserList::Blocked => CF_BLOCKS,
            UserList::Contacts => CF_CONTACTS,
        }
    }
}

impl Store {
    /// Adds `user` to `owner`'s list with the time it was added, now. Returns false (and
    /// changes nothing) when it was already there; fails with `ListFull` when the list
    /// holds [`MAX_LISTED_USERS`].
    pub fn add_listed(&self, list: UserList, owner: u64, user: u64, now_us: u64) -> Result<bool> {
        if self.is_listed(list, owner, user)? {
            return Ok(false);
        }
        if self.listed(list, owner)?.len() >= MAX_LISTED_USERS {
            return Err(StorageError::ListFull);
        }
        let db = self.db()?;
        self.put_now(
            &db,
            cf_handle(&db, list.cf()),
            keys::listed_user(owner, user),
            now_us.to_be_bytes(),
        )?;
        self.listed_owners.borrow_mut().insert((list, owner));
        Ok(true)
    }

    /// Removes `user` from `owner`'s list, now; false when they were not in it.
    pub fn remove_listed(&self, list: UserList, owner: u64, user: u64) -> Result<bool> {
        if !self.is_listed(list, owner, user)? {
            return Ok(false);
        }
        let db = self.db()?;
        self.delete_now(
            &db,
            cf_handle(&db, list.cf()),
            keys::listed_user(owner, user),
        )?;
        Ok(true)
    }

    /// Whether `user` is in `owner`'s list. Every 1:1 send asks whether the recipient
    /// blocked the sender, and nearly every list is empty: the store knows which owners
    /// have anything listed (since its open), so for the others the question costs a
    /// lookup in memory instead of one in RocksDB.
    pub fn is_listed(&self, list: UserList, owner: u64, user: u64) -> Result<bool> {
        if !self.listed_owners.borrow().contains(&(list, owner)) {
            return Ok(false);
        }
        let db = self.db()?;
        let key = keys::listed_user(owner, user);
        let listed = db.get_pinned_cf(cf_handle(&db, list.cf()), key)?.is_some();
        Ok(listed)
    }

    /// `owner`'s list as (user, added at), most recently added first.
    pub fn listed(&self, list: UserList, owner: u64) -> Result<Vec<(u64, u64)>> {
        let db = self.db()?;
        let cf = list.cf();
        let start = keys::listed_user(owner, 0);
        let iter = db.iterator_cf(
            cf_handle(&db, cf),
            IteratorMode::From(&start, Direction::Forward),
        );
        let mut out = Vec::new();
        for item in iter {
            let (key, value) = item?;
            if keys::u64_at(&key, 0) != Some(owner) {
                break;
            }
            let user = keys::u64_at(&key, 8).ok_or_else(|| corrupt(cf, "short key"))?;
            let added = keys::u64_at(&value, 0).ok_or_else(|| corrupt(cf, "not 8 bytes"))?;
            out.push((user, added));
        }
        out.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // reason: test code
    use super::*;
    use crate::Durability;

    #[test]
    fn lists_add_once_remove_once_keep_order_and_have_a_limit() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), Durability::Wal).unwrap();
        assert!(s.add_listed(UserList::Blocked, 1, 2, 100).unwrap());
        assert!(!s.add_listed(UserList::Blocked, 1, 2, 200).unwrap());
        assert!(s.add_listed(UserList::Blocked, 1, 3, 300).unwrap());
        // Lists are per owner and per kind.
        assert!(!s.is_listed(UserList::Contacts, 1, 2).unwrap());
        assert!(!s.is_listed(UserList::Blocked, 2, 1).unwrap());
        assert_eq!(
            s.listed(UserList::Blocked, 1).unwrap(),
            [(3, 300), (2, 100)]
        );
        assert!(s.remove_listed(UserList::Blocked, 1, 2).unwrap());
        assert!(!s.remove_listed(UserList::Blocked, 1, 2).unwrap());
        assert_eq!(s.listed(UserList::Blocked, 1).unwrap(), [(3, 300)]);
        for user in 0..MAX_LISTED_USERS as u64 {
            s.add_listed(UserList::Contacts, 9, 1000 + user, user)
                .unwrap();
        }
        assert!(matches!(
            s.add_listed(UserList::Contacts, 9, 1, 1),
            Err(StorageError::ListFull)
        ));
        // Adding someone already there is still fine.
        assert!(!s.add_listed(UserList::Contacts, 9, 1000, 1).unwrap());
        drop(s);
        let s = Store::open(dir.path(), Durability::Wal).unwrap();
        assert_eq!(s.listed(UserList::Blocked, 1).unwrap(), [(3, 300)]);
        assert_eq!(
            s.listed(UserList::Contacts, 9).unwrap().len(),
            MAX_LISTED_USERS
        );
    }
}
