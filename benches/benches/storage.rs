//! Storage: appending a message (inbox + history + idempotency in one WriteBatch) and
//! reading an inbox page, on a real RocksDB in a temp dir.

use chat_protocol::pb;
use chat_storage::{Durability, Store};
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
            };
            store.append_message(&msg).expect("append");
        })
    });
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
