//! Benchmarks live in benches/; what several of them build is here.

use chat_protocol::envelope;
use chat_protocol::pb::{self, envelope::Body};
use chat_server::shard::{Auth, ConnRef, ShardMsg};

/// A live push of a 100-byte 1:1 message (event `seq`) to connection `seq` of `conn_shard`.
pub fn message_push(conn_shard: usize, seq: u64) -> ShardMsg {
    let event = pb::Event {
        seq,
        kind: Some(pb::event::Kind::Message(pb::Message {
            from_user_id: 7,
            to_user_id: 8,
            client_msg_id: seq,
            seq,
            timestamp_us: seq,
            text: "x".repeat(100),
            ..Default::default()
        })),
    };
    ShardMsg::ToConn {
        conn: ConnRef {
            shard: conn_shard,
            id: seq,
        },
        auth: Auth::Unchanged,
        env: envelope(0, Body::Event(event)),
    }
}
