//! Cross-shard routing: the cost of handing a live message push (`ShardMsg::ToConn`) from one
//! shard's executor to another's over the glommio channel mesh, batched per destination as
//! the server does, against one channel send per message.

use std::time::{Duration, Instant};

use chat_benches::message_push;
use chat_server::routing::shard_of_user;
use chat_server::shard::ShardMsg;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use glommio::channels::shared_channel;
use glommio::{LocalExecutorBuilder, Placement};

/// Moves `messages` pushes from one executor to another in batches of `batch`; returns the
/// time from the first send to the last receive.
fn transfer(messages: u64, batch: u64) -> Duration {
    let (tx, rx) = shared_channel::new_bounded::<Vec<ShardMsg>>(1024);
    let receiver = LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(move || async move {
            let rx = rx.connect().await;
            let mut seen = 0u64;
            while seen < messages {
                match rx.recv().await {
                    Some(b) => seen += b.len() as u64,
                    None => break,
                }
            }
            seen
        })
        .expect("receiver executor");
    let sender = LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(move || async move {
            let tx = tx.connect().await;
            let start = Instant::now();
            let mut seq = 0u64;
            while seq < messages {
                let n = batch.min(messages - seq);
                let b: Vec<ShardMsg> = (seq..seq + n).map(|seq| message_push(1, seq)).collect();
                seq += n;
                if tx.send(b).await.is_err() {
                    break;
                }
            }
            start
        })
        .expect("sender executor");
    let start = sender.join().expect("sender");
    let seen = receiver.join().expect("receiver");
    assert_eq!(seen, messages, "every push arrives");
    start.elapsed()
}

fn routing(c: &mut Criterion) {
    let mut group = c.benchmark_group("routing");
    group.throughput(Throughput::Elements(1));
    let mut id = 0u64;
    group.bench_function("shard_of_user_16", |b| {
        b.iter(|| {
            id += 1;
            shard_of_user(std::hint::black_box(id), 16)
        })
    });
    const MESSAGES: u64 = 20_000;
    group.throughput(Throughput::Elements(MESSAGES));
    for batch in [1u64, 16, 256] {
        group.bench_with_input(
            BenchmarkId::new("cross_shard_push_batch", batch),
            &batch,
            |b, &batch| b.iter_custom(|iters| (0..iters).map(|_| transfer(MESSAGES, batch)).sum()),
        );
    }
    group.finish();
}

criterion_group!(benches, routing);
criterion_main!(benches);
