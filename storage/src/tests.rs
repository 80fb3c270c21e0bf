#![allow(clippy::unwrap_used)] // reason: test code

use super::*;

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Durability::Wal).unwrap();
    (dir, store)
}

fn msg(from: u64, to: u64, client_msg_id: u64, ts: u64, text: &str) -> pb::Message {
    pb::Message {
        from_user_id: from,
        to_user_id: to,
        client_msg_id,
        seq: 0,
        timestamp_us: ts,
        text: text.into(),
        group_id: 0,
        media: None,
        ..Default::default()
    }
}

fn user(id: u64, name: &str) -> UserRecord {
    UserRecord {
        user_id: id,
        username: name.into(),
        password_hash: "$argon2id$fake".into(),
        created_us: 1,
        read_receipts_off: false,
        presence_visibility: 0,
        push_previews_off: false,
        tokens_revoked_us: 0,
    }
}

#[test]
fn users_are_unique_by_name_and_found_by_id() {
    let (_dir, s) = store();
    s.create_user(&user(10, "alice")).unwrap();
    assert!(matches!(
        s.create_user(&user(11, "alice")),
        Err(StorageError::UsernameTaken)
    ));
    assert_eq!(s.user_id_by_name("alice").unwrap(), Some(10));
    assert_eq!(s.user_id_by_name("bob").unwrap(), None);
    assert_eq!(s.user(10).unwrap().unwrap().username, "alice");
    assert!(s.user_exists(10).unwrap());
    assert!(!s.user_exists(11).unwrap());
}

#[test]
fn tokens_are_found_by_hash() {
    let (_dir, s) = store();
    let rec = TokenRecord {
        user_id: 5,
        created_us: 9,
    };
    s.put_token(&[7; 32], &rec).unwrap();
    assert_eq!(s.token(&[7; 32]).unwrap(), Some(rec));
    assert_eq!(s.token(&[8; 32]).unwrap(), None);
    s.delete_token(&[7; 32]).unwrap();
    assert_eq!(s.token(&[7; 32]).unwrap(), None);
    // Deleting an unknown token is not an error.
    s.delete_token(&[8; 32]).unwrap();
}

#[test]
fn inbox_seqs_are_dense_per_user_and_reads_resume_after_cursor() {
    let (_dir, s) = store();
    for i in 1..=10u64 {
        let (a, stored) = s.append_message(&msg(1, 2, i, 100 + i, "x")).unwrap();
        assert_eq!((a.seq, a.duplicate, stored.seq), (i, false, i));
    }
    // Another recipient has its own sequence.
    assert_eq!(s.append_message(&msg(1, 3, 1, 500, "y")).unwrap().0.seq, 1);
    assert_eq!(s.inbox_head(2).unwrap(), 10);
    let page = s.read_inbox(2, 4, 3).unwrap();
    assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), [5, 6, 7]);
    assert!(s.read_inbox(2, 10, 100).unwrap().is_empty());
    assert_eq!(s.read_inbox(2, 0, 100).unwrap().len(), 10);
    assert!(s.read_inbox(2, u64::MAX, 1).unwrap().is_empty());
}

#[test]
fn retried_send_is_stored_once() {
    let (_dir, s) = store();
    let first = s.append_message(&msg(1, 2, 42, 1000, "hi")).unwrap().0;
    let again = s.append_message(&msg(1, 2, 42, 2000, "hi")).unwrap().0;
    assert!(!first.duplicate);
    assert!(again.duplicate);
    assert_eq!((again.seq, again.timestamp_us), (first.seq, 1000));
    assert_eq!(s.read_inbox(2, 0, 10).unwrap().len(), 1);
    // The same client id from a different sender is a different message.
    assert!(
        !s.append_message(&msg(3, 2, 42, 3000, "hi"))
            .unwrap()
            .0
            .duplicate
    );
}

#[test]
fn ack_cursor_only_moves_forward() {
    let (_dir, s) = store();
    assert_eq!(s.acked(2).unwrap(), 0);
    assert_eq!(s.ack(2, 5).unwrap(), 5);
    assert_eq!(s.ack(2, 3).unwrap(), 5);
    assert_eq!(s.acked(2).unwrap(), 5);
}

#[test]
fn ack_cursors_reach_the_disk_in_batches() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(dir.path(), Durability::Wal).unwrap();
        s.ack(2, 5).unwrap();
        s.ack(2, 7).unwrap();
        s.ack(3, 1).unwrap();
        s.persist_cursors().unwrap();
        s.ack(3, 4).unwrap();
        // Closing writes what moved since.
        s.close().unwrap();
    }
    let s = Store::open(dir.path(), Durability::Wal).unwrap();
    assert_eq!(s.acked(2).unwrap(), 7);
    assert_eq!(s.acked(3).unwrap(), 4);
    assert_eq!(s.acked(4).unwrap(), 0);
}

#[test]
fn history_pages_backwards_oldest_first() {
    let (_dir, s) = store();
    // alice (1) and bob (2) alternate; timestamps 1..=25.
    for ts in 1..=25u64 {
        let m = if ts % 2 == 0 {
            msg(1, 2, ts, ts, "a")
        } else {
            msg(2, 1, ts, ts, "b")
        };
        // The recipient's copy is written by append, the sender's by record_sent.
        let (_, stored) = s.append_message(&m).unwrap();
        s.record_sent(&stored).unwrap();
    }
    // Unrelated conversation must not leak in.
    s.append_message(&msg(3, 1, 1, 12, "other")).unwrap();

    let page = s.history(1, 2, 0, 10).unwrap();
    let ts: Vec<u64> = page.messages.iter().map(|m| m.timestamp_us).collect();
    assert_eq!(ts, (16..=25).collect::<Vec<_>>());
    assert!(page.more);
    let page = s.history(1, 2, 16, 10).unwrap();
    assert_eq!(page.messages.first().unwrap().timestamp_us, 6);
    assert!(page.more);
    let page = s.history(1, 2, 6, 10).unwrap();
    let ts: Vec<u64> = page.messages.iter().map(|m| m.timestamp_us).collect();
    assert_eq!(ts, [1, 2, 3, 4, 5]);
    assert!(!page.more);
    // Bob sees the same conversation.
    assert_eq!(s.history(2, 1, 0, 100).unwrap().messages.len(), 25);
    assert!(s.history(1, 2, 1, 10).unwrap().messages.is_empty());
}

#[test]
fn everything_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(dir.path(), Durability::Fsync).unwrap();
        s.create_user(&user(10, "alice")).unwrap();
        s.append_message(&msg(1, 10, 1, 5, "a")).unwrap();
        s.append_message(&msg(1, 10, 2, 6, "b")).unwrap();
        s.ack(10, 1).unwrap();
        s.set_meta("shards", b"4").unwrap();
    }
    let s = Store::open(dir.path(), Durability::Wal).unwrap();
    assert_eq!(s.user_id_by_name("alice").unwrap(), Some(10));
    assert_eq!(s.inbox_head(10).unwrap(), 2);
    assert_eq!(s.acked(10).unwrap(), 1);
    assert_eq!(s.meta("shards").unwrap().as_deref(), Some(&b"4"[..]));
    // The seq continues after a reopen, with no gap and no reuse.
    assert_eq!(s.append_message(&msg(1, 10, 3, 7, "c")).unwrap().0.seq, 3);
}

#[test]
fn staged_writes_count_for_seqs_and_duplicates_and_land_in_one_commit() {
    let (_dir, s) = store();
    let (a, _) = s.stage_message(&msg(1, 2, 10, 100, "a")).unwrap();
    let (b, _) = s.stage_message(&msg(1, 2, 11, 101, "b")).unwrap();
    assert_eq!((a.seq, b.seq), (1, 2));
    // A retry before the commit is still recognised.
    let (again, _) = s.stage_message(&msg(1, 2, 10, 102, "a")).unwrap();
    assert!(again.duplicate);
    assert_eq!(again.seq, 1);
    // Not durable nor readable until committed.
    assert!(s.has_staged());
    assert!(s.read_inbox(2, 0, 10).unwrap().is_empty());
    s.commit().unwrap();
    assert!(!s.has_staged());
    assert_eq!(s.read_inbox(2, 0, 10).unwrap().len(), 2);
    assert!(s.find_send(2, 1, 11).unwrap().is_some());
}

fn group_msg(from: u64, client_msg_id: u64, text: &str) -> event::Kind {
    event::Kind::Message(pb::Message {
        from_user_id: from,
        client_msg_id,
        text: text.into(),
        ..Default::default()
    })
}

#[test]
fn group_log_assigns_seqs_keeps_time_order_and_remembers_sends() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(dir.path(), Durability::Wal).unwrap();
        let e1 = s
            .stage_group_entry(7, 100, group_msg(1, 1, "a"), Some((1, 1)))
            .unwrap();
        // A clock that went backwards still gives a later timestamp than the last entry.
        let e2 = s
            .stage_group_entry(7, 50, group_msg(2, 1, "b"), Some((2, 1)))
            .unwrap();
        assert_eq!((e1.seq, e2.seq), (1, 2));
        let Some(event::Kind::Message(m2)) = &e2.kind else {
            panic!("a message")
        };
        assert_eq!((m2.timestamp_us, m2.group_id, m2.seq), (101, 7, 2));
        // Staged sends are already known to duplicate detection, before the commit.
        assert_eq!(s.find_group_send(7, 2, 1).unwrap().map(|r| r.seq), Some(2));
        s.commit().unwrap();
        assert_eq!(s.pending_fanouts().unwrap().len(), 2);
        s.stage_fanout_done(7, 1).unwrap();
        s.commit().unwrap();
        let pending = s.pending_fanouts().unwrap();
        assert_eq!(pending.iter().map(|(e, _)| e.seq).collect::<Vec<_>>(), [2]);
        // Extra recipients (a removed member) come back with it.
        s.stage_fanout_extras(&pending[0].0, &[42, 43]).unwrap();
        s.commit().unwrap();
        assert_eq!(s.pending_fanouts().unwrap()[0].1, [42, 43]);
    }
    // Reopened: the head and the idempotency records come back from disk.
    let s = Store::open(dir.path(), Durability::Wal).unwrap();
    assert_eq!(s.group_head(7).unwrap(), 2);
    assert_eq!(s.group_head(8).unwrap(), 0);
    assert_eq!(s.find_group_send(7, 1, 1).unwrap().map(|r| r.seq), Some(1));
    assert_eq!(s.find_group_send(7, 1, 2).unwrap(), None);
    let e3 = s
        .stage_group_entry(7, 60, group_msg(1, 2, "c"), None)
        .unwrap();
    assert_eq!(e3.seq, 3);
    s.commit().unwrap();
    let page = s.group_history(7, 0, 10).unwrap();
    let texts: Vec<&str> = page.messages.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["a", "b", "c"]);
    let page = s.group_history(7, 101, 10).unwrap();
    assert_eq!(page.messages.len(), 1, "strictly before the timestamp");
}

#[test]
fn group_delivery_stores_one_copy_and_a_reference_per_member() {
    let (_dir, s) = store();
    // bob already has a 1:1 message: group entries take his next inbox seq.
    s.append_message(&msg(1, 20, 1, 5, "direct")).unwrap();
    let entry = s
        .stage_group_entry(9, 10, group_msg(1, 1, "hi all"), None)
        .unwrap();
    s.commit().unwrap();
    let delivered = s.stage_group_delivery(&entry, &[20, 21]).unwrap();
    assert_eq!(
        delivered
            .iter()
            .map(|(u, e)| (*u, e.seq))
            .collect::<Vec<_>>(),
        [(20, 2), (21, 1)]
    );
    s.commit().unwrap();
    // Handing the same entry out again (after a restart) stores nothing.
    assert!(s
        .stage_group_delivery(&entry, &[20, 21])
        .unwrap()
        .is_empty());
    let inbox = s.read_inbox(20, 0, 10).unwrap();
    assert_eq!(inbox.len(), 2);
    let Some(event::Kind::Message(m)) = &inbox[1].kind else {
        panic!("a message")
    };
    assert_eq!(
        (inbox[1].seq, m.seq, m.group_id, m.text.as_str()),
        (2, 1, 9, "hi all")
    );
    assert_eq!(s.read_inbox(21, 0, 10).unwrap()[0].kind, inbox[1].kind);
}

#[test]
fn abandoned_uploads_are_found_by_age_and_ending_them_frees_their_bytes() {
    let (_dir, store) = store();
    let upload = |id: u8, created_us| records::UploadRecord {
        upload_id: vec![id; 16],
        owner: 7,
        media: Some(pb::Media::default()),
        received: 3,
        created_us,
    };
    for (id, created) in [(1u8, 100u64), (2, 5_000)] {
        store.stage_upload(&upload(id, created)).unwrap();
        store.stage_upload_chunk(&[id; 16], 0, b"abc").unwrap();
    }
    store.commit().unwrap();
    assert_eq!(store.content_stats().unwrap(), (2, 6));
    let old = store.uploads_started_before(1_000, 10).unwrap();
    assert_eq!(old.len(), 1);
    assert_eq!(old[0].upload_id, vec![1u8; 16]);
    store.stage_end_upload(7, &[1; 16], false).unwrap();
    store.commit().unwrap();
    assert_eq!(store.content_stats().unwrap(), (1, 3));
    assert!(store.upload(7, &[1; 16]).unwrap().is_none());
    assert!(store.upload(7, &[2; 16]).unwrap().is_some());
}

#[test]
fn idempotency_records_expire_at_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let hour_us = 3600 * 1_000_000;
    let store = Store::open_with_ttl(dir.path(), Durability::Wal, hour_us).unwrap();
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    store
        .append_message(&msg(1, 2, 10, now_us - 2 * hour_us, "old"))
        .unwrap();
    store.append_message(&msg(1, 2, 11, now_us, "new")).unwrap();
    store.flush().unwrap();
    store.compact().unwrap();
    assert!(store.find_send(2, 1, 10).unwrap().is_none(), "expired");
    assert!(store.find_send(2, 1, 11).unwrap().is_some(), "kept");
    // The messages themselves stay.
    assert_eq!(store.read_inbox(2, 0, 10).unwrap().len(), 2);
}

#[test]
fn marks_advanced_twice_before_a_commit_see_each_other() {
    let (_dir, store) = store();
    // Delivered up to 2 (an Ack), then read up to 2 (a MarkRead), one commit for both.
    let first = store.advance_group_marks(9, 1, 2, 0).unwrap();
    let second = store.advance_group_marks(9, 1, 0, 2).unwrap();
    assert_eq!((first.delivered, second.delivered), (0, 2));
    assert_eq!(store.advance_read_marker(1, false, 5, 3).unwrap(), Some(0));
    assert_eq!(store.advance_read_marker(1, false, 5, 3).unwrap(), None);
    store.commit().unwrap();
    assert_eq!(
        store.advance_group_marks(9, 1, 2, 2).unwrap(),
        GroupMarks {
            delivered: 2,
            read: 2
        }
    );
}

#[test]
fn history_of_the_old_layout_is_rekeyed_by_conversation_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (7u64, 3u64);
    {
        let s = Store::open(dir.path(), Durability::Wal).unwrap();
        let db = s.db().unwrap();
        let cf = cf_handle(&db, CF_HISTORY);
        // Before: each user's copy under (owner, peer, timestamp), both on this shard.
        for (owner, peer, ts) in [(alice, bob, 10), (bob, alice, 10), (alice, bob, 11)] {
            let m = msg(alice, bob, ts, ts, "hi");
            let mut key = owner.to_be_bytes().to_vec();
            key.extend(peer.to_be_bytes());
            key.extend(ts.to_be_bytes());
            db.put_cf(cf, key, m.encode_to_vec()).unwrap();
        }
        db.delete_cf(cf_handle(&db, CF_META), HISTORY_LAYOUT)
            .unwrap();
    }
    let s = Store::open(dir.path(), Durability::Wal).unwrap();
    for (owner, peer) in [(alice, bob), (bob, alice)] {
        let ts: Vec<u64> = s
            .history(owner, peer, 0, 10)
            .unwrap()
            .messages
            .iter()
            .map(|m| m.timestamp_us)
            .collect();
        assert_eq!(ts, [10, 11], "history of {owner} with {peer}");
        assert!(s.has_conversation(owner, peer).unwrap());
    }
    let db = s.db().unwrap();
    let left = db
        .iterator_cf(cf_handle(&db, CF_HISTORY), IteratorMode::Start)
        .count();
    assert_eq!(left, 2, "one entry per message");
}

#[test]
fn captured_writes_rebuild_the_same_data_in_another_store() {
    let (_a, primary) = store();
    let (_b, replica) = store();
    primary.set_capture(true);
    primary.create_user(&user(10, "alice")).unwrap();
    primary.create_user(&user(11, "bob")).unwrap();
    let token = TokenRecord {
        user_id: 10,
        created_us: 9,
    };
    primary.put_token(&[7; 32], &token).unwrap();
    let (first, _) = primary.stage_message(&msg(10, 11, 1, 100, "hi")).unwrap();
    primary.commit().unwrap();
    primary.delete_token(&[7; 32]).unwrap();
    let writes = primary.take_captured();
    assert!(!primary.has_captured());
    // Every write has an owner a slot can be found for, except none here.
    for w in &writes {
        assert_ne!(replica::owner_of(w), replica::Owner::Local, "cf {}", w.cf);
    }
    // The token's delete names its user, as its put did.
    let tokens: Vec<_> = writes
        .iter()
        .filter(|w| w.cf == replica::cf_index("tokens"))
        .map(replica::owner_of)
        .collect();
    assert_eq!(tokens, [replica::Owner::User(10), replica::Owner::User(10)]);
    // Something the replica had cached before is dropped when writes arrive.
    assert!(!replica.user_exists(10).unwrap());
    replica.apply(&writes).unwrap();
    assert!(replica.user_exists(10).unwrap());
    assert_eq!(replica.user_id_by_name("bob").unwrap(), Some(11));
    assert!(
        replica.token(&[7; 32]).unwrap().is_none(),
        "the delete came too"
    );
    let inbox = replica.read_inbox(11, 0, 10).unwrap();
    assert_eq!(inbox.len(), 1);
    assert_eq!(inbox[0].seq, first.seq);
    // The next append continues after the replicated one, not over it.
    let (next, _) = replica
        .stage_message(&msg(10, 11, 2, 200, "again"))
        .unwrap();
    assert_eq!(next.seq, first.seq + 1);
    // Nothing applied is captured, and capture is off unless asked for.
    assert!(!replica.has_captured());
}

#[test]
fn a_wipe_drops_every_key_of_its_owners_memtable_and_disk_alike() {
    let (_dir, store) = store();
    store.create_user(&user(10, "alice")).unwrap();
    store.create_user(&user(11, "bob")).unwrap();
    // One message flushed to disk, one still in the memtables (the idempotency family's
    // is hashed: a plain scan of it sees nothing).
    store
        .stage_message(&msg(10, 11, 1, 100, "on disk"))
        .unwrap();
    store.commit().unwrap();
    store.flush().unwrap();
    store
        .stage_message(&msg(10, 11, 2, 200, "in memory"))
        .unwrap();
    store.commit().unwrap();
    assert!(store.find_send(11, 10, 2).unwrap().is_some());
    let wiped = store
        .wipe(|owner| *owner == replica::Owner::User(11))
        .unwrap();
    assert!(wiped > 0);
    assert!(store.read_inbox(11, 0, 10).unwrap().is_empty());
    for client_msg_id in [1, 2] {
        assert!(
            store.find_send(11, 10, client_msg_id).unwrap().is_none(),
            "the record of send {client_msg_id} went with the inbox it points into"
        );
    }
    // A retry is a new message again, at the first seq, not a duplicate of one not there.
    let (again, _) = store
        .stage_message(&msg(10, 11, 2, 300, "in memory"))
        .unwrap();
    assert!(!again.duplicate);
    assert_eq!(again.seq, 1);
    // The other user's data stays.
    assert!(store.user_exists(10).unwrap());
}

#[test]
fn keys_name_their_owner() {
    use replica::{owner, Owner};
    let cf = |name| ALL_CFS.iter().position(|n| *n == name).unwrap() as u32;
    assert_eq!(
        owner(cf(CF_INBOX), &keys::inbox(5, 1), None),
        Owner::User(5)
    );
    assert_eq!(
        owner(cf(CF_HISTORY), &keys::history(9, 5, 1), None),
        Owner::Pair(5, 9)
    );
    // The recipient's alone: it points into the recipient's inbox.
    assert_eq!(
        owner(cf(CF_IDEMPOTENCY), &keys::idempotency(5, 9, 1), None),
        Owner::User(5)
    );
    assert_eq!(
        owner(cf(CF_GROUP_LOG), &keys::group_log(3, 1), None),
        Owner::Group(3)
    );
    assert_eq!(
        owner(cf(CF_GROUP_COPIES), &keys::group_entry(3, 4), None),
        Owner::GroupCopy(3, 4)
    );
    assert_eq!(
        owner(cf(CF_CONTENT_BY_SHA), &[1; 32], Some(&[2; 16])),
        Owner::Asset([2; 16])
    );
    assert_eq!(
        owner(cf(CF_PUSH_TOKEN_OWNERS), &[7; 32], None),
        Owner::Token([7; 32])
    );
    assert_eq!(owner(cf(CF_META), b"x", None), Owner::Local);
    assert_eq!(owner(cf(CF_PUSH_OUTBOX), &[0; 8], None), Owner::Local);
    assert_eq!(owner(cf(CF_USERS), b"short", None), Owner::Local);
}

#[test]
fn what_every_send_asks_is_answered_after_a_reopen_and_a_wipe_alike() {
    use records::{DeviceRecord, TokenRecord};
    let dir = tempfile::tempdir().unwrap();
    let session = |s: &Store, user_id, device_id| {
        let hash = [device_id as u8; 32];
        let device = DeviceRecord {
            user_id,
            device_id,
            name: "phone".into(),
            token_hash: hash.to_vec(),
            created_us: 1,
            last_active_us: 1,
        };
        let token = TokenRecord {
            user_id,
            created_us: 1,
        };
        s.create_session(&hash, &token, &device).unwrap();
    };
    let s = Store::open(dir.path(), Durability::Wal).unwrap();
    for (id, name) in [(10, "alice"), (11, "bob"), (12, "carol")] {
        s.create_user(&user(id, name)).unwrap();
    }
    session(&s, 10, 1);
    session(&s, 10, 2);
    session(&s, 11, 3);
    assert!(s.add_listed(UserList::Blocked, 11, 10, 5).unwrap());
    drop(s);

    // Loaded at open: the answers are those of the data, not of an empty memory.
    let s = Store::open(dir.path(), Durability::Wal).unwrap();
    for id in [10, 11, 12] {
        assert!(s.user_exists(id).unwrap(), "user {id}");
    }
    assert!(!s.user_exists(13).unwrap());
    assert!(s.has_several_devices(10).unwrap());
    assert!(!s.has_several_devices(11).unwrap());
    assert!(!s.has_several_devices(12).unwrap());
    assert!(s.is_listed(UserList::Blocked, 11, 10).unwrap());
    assert!(!s.is_listed(UserList::Blocked, 10, 11).unwrap());
    assert!(!s.is_listed(UserList::Contacts, 11, 10).unwrap());

    // Changes after the open are seen.
    assert!(s.add_listed(UserList::Blocked, 12, 11, 6).unwrap());
    assert!(s.is_listed(UserList::Blocked, 12, 11).unwrap());
    session(&s, 12, 4);
    session(&s, 12, 5);
    assert!(s.has_several_devices(12).unwrap());
    s.delete_device(10, 1, &[1; 32]).unwrap();
    assert!(!s.has_several_devices(10).unwrap());
    s.create_user(&user(13, "dave")).unwrap();
    assert!(s.user_exists(13).unwrap());

    // A wipe (a take-over) takes bob's account, devices and list; the others stay.
    s.wipe(|owner| *owner == replica::Owner::User(11)).unwrap();
    assert!(!s.user_exists(11).unwrap());
    assert!(!s.is_listed(UserList::Blocked, 11, 10).unwrap());
    assert!(s.is_listed(UserList::Blocked, 12, 11).unwrap());
    assert!(s.has_several_devices(12).unwrap());
    assert!(s.user_exists(13).unwrap());

    // A standby that applies another node's writes answers as that node does, each
    // answer asked once before the writes arrive and once after.
    let (_b, standby) = store();
    assert!(!standby.user_exists(20).unwrap());
    assert!(!standby.has_several_devices(20).unwrap());
    assert!(!standby.is_listed(UserList::Contacts, 20, 12).unwrap());
    s.set_capture(true);
    s.create_user(&user(20, "erin")).unwrap();
    session(&s, 20, 6);
    session(&s, 20, 7);
    assert!(s.add_listed(UserList::Contacts, 20, 12, 7).unwrap());
    standby.apply(&s.take_captured()).unwrap();
    assert!(standby.user_exists(20).unwrap());
    assert!(standby.has_several_devices(20).unwrap());
    assert!(standby.is_listed(UserList::Contacts, 20, 12).unwrap());
    s.delete_device(20, 6, &[6; 32]).unwrap();
    assert!(s.remove_listed(UserList::Contacts, 20, 12).unwrap());
    standby.apply(&s.take_captured()).unwrap();
    assert!(!standby.has_several_devices(20).unwrap());
    assert!(!standby.is_listed(UserList::Contacts, 20, 12).unwrap());
}
