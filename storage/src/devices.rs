//! Devices: one record per session token issued by Login, listed per user, each with the
//! name the device gave and its last activity. The token record (`tokens`, by the token's
//! hash) and the device record (`devices`, by user and device) are written and removed
//! together.

use prost::Message as _;
use rocksdb::{Direction, IteratorMode, WriteBatch};

use crate::records::{DeviceRecord, TokenRecord};
use crate::{cf_handle, corrupt, decode, keys, Result, Store, CF_DEVICES, CF_TOKENS};

impl Store {
    /// Stores a new session token and its device in one write, now.
    pub fn create_session(
        &self,
        token_hash: &[u8; 32],
        token: &TokenRecord,
        device: &DeviceRecord,
    ) -> Result<()> {
        let db = self.db()?;
        let mut batch = WriteBatch::default();
        batch.put_cf(cf_handle(&db, CF_TOKENS), token_hash, token.encode_to_vec());
        batch.put_cf(
            cf_handle(&db, CF_DEVICES),
            keys::device(device.user_id, device.device_id),
            device.encode_to_vec(),
        );
        self.write_batch(&db, batch, Vec::new(), &self.write_opts)?;
        self.recount_devices(device.user_id)
    }

    /// Whether the user has more than one device. Only then is what one device does (a
    /// send, a MarkRead) also an event for the others: a single device has its answer, and
    /// a user's every 1:1 send would otherwise cost an inbox entry, a push and an Ack more.
    /// Counted at open and whenever one of the user's devices changes.
    pub fn has_several_devices(&self, user_id: u64) -> Result<bool> {
        if let Some(&count) = self.device_counts.borrow().get(&user_id) {
            return Ok(count > 1);
        }
        Ok(self.count_devices(user_id)? > 1)
    }

    /// Counts the user's devices (again, after one was written or removed) and keeps the
    /// count.
    fn count_devices(&self, user_id: u64) -> Result<usize> {
        let count = self.devices_of(user_id)?.len();
        self.device_counts.borrow_mut().insert(user_id, count);
        Ok(count)
    }

    fn recount_devices(&self, user_id: u64) -> Result<()> {
        self.count_devices(user_id).map(drop)
    }

    /// A device of the user.
    pub fn device(&self, user_id: u64, device_id: u64) -> Result<Option<DeviceRecord>> {
        self.get(CF_DEVICES, &keys::device(user_id, device_id))
    }

    /// Writes a device record (its last activity, or one for a token issued before devices
    /// were recorded), now.
    pub fn put_device(&self, device: &DeviceRecord) -> Result<()> {
        let db = self.db()?;
        self.put_now(
            &db,
            cf_handle(&db, CF_DEVICES),
            keys::device(device.user_id, device.device_id),
            device.encode_to_vec(),
        )?;
        self.recount_devices(device.user_id)
    }

    /// Every device of the user, in device id order.
    pub fn devices_of(&self, user_id: u64) -> Result<Vec<DeviceRecord>> {
        let db = self.db()?;
        let start = keys::device(user_id, 0);
        let iter = db.iterator_cf(
            cf_handle(&db, CF_DEVICES),
            IteratorMode::From(&start, Direction::Forward),
        );
        let mut out = Vec::new();
        for item in iter {
            let (key, value) = item?;
            if keys::u64_at(&key, 0) != Some(user_id) {
                break;
            }
            out.push(decode(CF_DEVICES, &value)?);
        }
        Ok(out)
    }

    /// Forgets a device and revokes its token in one write, now. Unknown ones are not an
    /// error.
    pub fn delete_device(&self, user_id: u64, device_id: u64, token_hash: &[u8]) -> Result<()> {
        let db = self.db()?;
        let mut batch = WriteBatch::default();
        batch.delete_cf(cf_handle(&db, CF_DEVICES), keys::device(user_id, device_id));
        if token_hash.len() == 32 {
            batch.delete_cf(cf_handle(&db, CF_TOKENS), token_hash);
        } else if !token_hash.is_empty() {
            return Err(corrupt(CF_DEVICES, "token hash is not 32 bytes"));
        }
        self.write_batch(&db, batch, Vec::new(), &self.write_opts)?;
        self.recount_devices(user_id)
    }

    /// Forgets every device of the user and revokes their tokens (LogoutAll), now.
    pub fn delete_devices_of(&self, user_id: u64) -> Result<()> {
        let devices = self.devices_of(user_id)?;
        let db = self.db()?;
        let mut batch = WriteBatch::default();
        for device in devices {
            batch.delete_cf(
                cf_handle(&db, CF_DEVICES),
                keys::device(user_id, device.device_id),
            );
            if device.token_hash.len() == 32 {
                batch.delete_cf(cf_handle(&db, CF_TOKENS), &device.token_hash);
            }
        }
        self.write_batch(&db, batch, Vec::new(), &self.write_opts)?;
        self.recount_devices(user_id)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // reason: test code
    use super::*;
    use crate::Durability;

    fn device(user_id: u64, device_id: u64, hash: u8) -> DeviceRecord {
        DeviceRecord {
            user_id,
            device_id,
            name: format!("device {device_id}"),
            token_hash: vec![hash; 32],
            created_us: 1,
            last_active_us: 2,
        }
    }

    #[test]
    fn devices_and_their_tokens_come_and_go_together() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), Durability::Wal).unwrap();
        let token = TokenRecord {
            user_id: 7,
            created_us: 1,
        };
        s.create_session(&[1; 32], &token, &device(7, 10, 1))
            .unwrap();
        s.create_session(&[2; 32], &token, &device(7, 20, 2))
            .unwrap();
        s.create_session(&[3; 32], &token, &device(8, 30, 3))
            .unwrap();
        let ids = |user| -> Vec<u64> {
            s.devices_of(user)
                .unwrap()
                .iter()
                .map(|d| d.device_id)
                .collect()
        };
        assert_eq!(ids(7), [10, 20]);
        assert_eq!(s.device(7, 20).unwrap(), Some(device(7, 20, 2)));
        s.delete_device(7, 10, &[1; 32]).unwrap();
        assert_eq!(ids(7), [20]);
        assert_eq!(s.token(&[1; 32]).unwrap(), None);
        assert!(s.token(&[2; 32]).unwrap().is_some());
        s.put_device(&DeviceRecord {
            last_active_us: 99,
            ..device(7, 20, 2)
        })
        .unwrap();
        assert_eq!(s.device(7, 20).unwrap().unwrap().last_active_us, 99);
        s.delete_devices_of(7).unwrap();
        assert!(ids(7).is_empty());
        assert_eq!(s.token(&[2; 32]).unwrap(), None);
        assert_eq!(ids(8), [30]);
        assert!(s.token(&[3; 32]).unwrap().is_some());
    }
}
