//! Frame and envelope encode/decode: the per-message cost every request and push pays.

use bytes::BytesMut;
use chat_protocol::pb::{self, envelope::Body};
use chat_protocol::{encode_frame, envelope, FrameDecoder};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn message_event(text_len: usize) -> pb::Envelope {
    envelope(
        0,
        Body::Event(pb::Event {
            seq: 123_456,
            kind: Some(pb::event::Kind::Message(pb::Message {
                media: None,
                from_user_id: 0x1234_5678_9abc_def0,
                to_user_id: 0x0fed_cba9_8765_4321,
                client_msg_id: 42,
                seq: 123_456,
                timestamp_us: 1_790_000_000_000_000,
                text: "x".repeat(text_len),
                group_id: 0,
                ..Default::default()
            })),
        }),
    )
}

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame");
    for text_len in [64usize, 1024] {
        let env = message_event(text_len);
        group.throughput(Throughput::Elements(1));
        group.bench_function(format!("encode_event_{text_len}B"), |b| {
            let mut out = BytesMut::with_capacity(64 * 1024);
            b.iter(|| {
                encode_frame(&env, &mut out);
                if out.len() > 60 * 1024 {
                    out.clear();
                }
            })
        });
        let mut wire = BytesMut::new();
        for _ in 0..64 {
            encode_frame(&env, &mut wire);
        }
        let wire = wire.freeze();
        let decoder = FrameDecoder::default();
        group.throughput(Throughput::Elements(64));
        group.bench_function(format!("decode_64_events_{text_len}B"), |b| {
            b.iter(|| {
                let mut buf = BytesMut::from(&wire[..]);
                let mut n = 0;
                while let Ok(Some(_)) = decoder.decode(&mut buf) {
                    n += 1;
                }
                assert_eq!(n, 64);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
