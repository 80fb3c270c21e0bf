//! Storage: appending a message (inbox + history + idempotency in one WriteBatch), every
//! key of a 1:1 message with its receipt, and reading an inbox page, on a real RocksDB in a
//! temp dir.

use chat_protocol::pb;
use chat_storage::{Durability, Store, UserRecord};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn storage(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path(), Durability::Wal).expect("open store");
    let mut group = c.benchmark_group("storage");
    group.throughput(Throughput::Elements(1));
    let mut n = 0u64;
    group.bench_function("append_message_100B", |b| {
        b.iter(|| {
            n += 1;
            let msg = pb::Message {
                media: None,
                from_user_id: 1 + n % 1000,
                to_user_id: 5000 + n % 100,
                client_msg_id: n,
                seq: 0,
                timestamp_us: n,
                text: "y".repeat(100),
                group_id: 0,
                ..Default::default()
            };
            store.append_message(&msg).expect("append");
        })
    });
    // Every key of one 1:1 message as the server writes and reads them on one shard: the
    // recipient's inbox entry, the conversation's history entry (both users' copy) and the
    // idempotency record in one commit; the recipient's Ack; the delivered receipt in the
    // sender's inbox (its own commit) and the sender's Ack of it.
    for id in (20_000..21_000).chain(30_000..31_000) {
        let user = UserRecord {
            user_id: id,
            username: format!("u{id}"),
            password_hash: "$argon2id$bench".into(),
            ..UserRecord::default()
        };
        store.create_user(&user).expect("create user");
    }
    let mut m = 0u64;
    group.bench_function("one_to_one_with_receipt_100B", |b| {
        b.iter(|| {
            m += 1;
            let (sender, recipient) = (20_000 + m % 1000, 30_000 + m % 1000);
            let msg = pb::Message {
                media: None,
                from_user_id: sender,
                to_user_id: recipient,
                client_msg_id: m,
                seq: 0,
                timestamp_us: 1_000_000 + m,
                text: "y".repeat(100),
                group_id: 0,
                ..Default::default()
            };
            assert!(store.user_exists(recipient).expect("user"));
            let (_, stored) = store.stage_message(&msg).expect("stage");
            store.commit().expect("commit");
            store.ack(recipient, stored.seq).expect("ack");
            let receipt = pb::Receipt {
                by_user_id: recipient,
                group_id: 0,
                kind: pb::ReceiptKind::Delivered as i32,
                up_to_seq: stored.seq,
                timestamp_us: 1_000_000 + m,
            };
            let event = store
                .stage_event(sender, pb::event::Kind::Receipt(receipt))
                .expect("receipt");
            store.commit().expect("commit");
            store.ack(sender, event.seq).expect("ack");
        })
    });
    store.persist_cursors().expect("cursors");
    // A full inbox to page through, independent of how often the append bench ran.
    for i in 1..=256u64 {
        let msg = pb::Message {
            media: None,
            from_user_id: 1,
            to_user_id: 9999,
            client_msg_id: i,
            seq: 0,
            timestamp_us: i,
            text: "z".repeat(100),
            group_id: 0,
            ..Default::default()
        };
        store.append_message(&msg).expect("seed inbox");
    }
    group.throughput(Throughput::Elements(256));
    group.bench_function("read_inbox_page_256", |b| {
        b.iter(|| {
            let events = store.read_inbox(9999, 0, 256).expect("read");
            assert_eq!(events.len(), 256);
        })
    });
    group.finish();
}

criterion_group!(benches, storage);
criterion_main!(benches);
