//! The mesh between nodes: what one live message push (`ShardMsg::ToConn`) costs to encode
//! into a `chat.mesh.v1` batch on one node and decode on another, batched as the server
//! publishes them (one batch per destination shard per loop round). The NATS hop itself is
//! not in it (docs/BENCHMARKS.md, "Cluster", measures the whole path).

use chat_benches::message_push;
use chat_protocol::mesh::MeshBatch;
use chat_server::mesh::wire::{self, Addresses};
use chat_server::placement::NodeAddrs;
use chat_server::shard::ShardMsg;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use prost::Message as _;

fn encode_batch(msgs: Vec<ShardMsg>, a: &NodeAddrs) -> Vec<u8> {
    MeshBatch {
        version: wire::VERSION,
        from: Some(a.addr_of(0)),
        to_shard: 0,
        msgs: msgs.into_iter().map(|m| wire::encode(m, a)).collect(),
    }
    .encode_to_vec()
}

fn mesh(c: &mut Criterion) {
    let (a, b) = (NodeAddrs::new("a", 1), NodeAddrs::new("b", 1));
    // On node a, node b's shard 0 is a destination of its own.
    let on_b = a.index("b", 0);
    let mut g = c.benchmark_group("mesh");
    for batch in [1u64, 64] {
        g.throughput(Throughput::Elements(batch));
        g.bench_with_input(
            BenchmarkId::new("encode_push", batch),
            &batch,
            |bench, &n| {
                bench.iter_batched(
                    || (0..n).map(|s| message_push(on_b, s)).collect::<Vec<_>>(),
                    |msgs| encode_batch(msgs, &a),
                    criterion::BatchSize::SmallInput,
                )
            },
        );
        let bytes = encode_batch((0..batch).map(|s| message_push(on_b, s)).collect(), &a);
        g.bench_with_input(
            BenchmarkId::new("decode_push", batch),
            &bytes,
            |bench, bytes| {
                bench.iter(|| {
                    let decoded = wire::decode_batch(bytes, &b).expect("a batch node a encoded");
                    assert_eq!(decoded.msgs.len() as u64, batch);
                    decoded
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, mesh);
criterion_main!(benches);
