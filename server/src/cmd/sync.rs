//! Sync: (re)start a connection's event stream. Catch up from storage page by page, then
//! switch the stream to live pushes (see `Shard::on_appended`). Runs on the user's shard.

use std::rc::Rc;

use chat_protocol::envelope;
use chat_protocol::pb::{self, envelope::Body};

use crate::runtime;
use prost::Message as _;

use crate::shard::{Auth, Reply, Shard, ShardMsg, Stream};
use crate::signal::Signal;

/// Events read from storage per step; the task yields between steps.
const PAGE: usize = 256;

pub fn run(shard: &Rc<Shard>, reply: Reply, user: u64, after_seq: Option<u64>) {
    let after = match after_seq {
        Some(seq) => seq,
        None => match shard.store.acked(user) {
            Ok(seq) => seq,
            Err(e) => return shard.internal(reply, &e),
        },
    };
    let Some(generation) = shard.restart_stream(user, reply.conn, after.saturating_add(1)) else {
        return shard.internal(reply, &"sync on a connection without a session");
    };
    runtime::spawn(catch_up(shard.clone(), reply, user, generation));
}

async fn catch_up(shard: Rc<Shard>, reply: Reply, user: u64, generation: u64) {
    let page_bytes = (shard.limits.max_outbound_bytes / 4).clamp(16 << 10, 1 << 20);
    loop {
        // Stop if the connection closed or a newer Sync took over.
        let Some(mut stream) = shard.stream(user, reply.conn, generation) else {
            return;
        };
        let events = match shard.store.read_inbox(user, stream.next_seq - 1, PAGE) {
            Ok(events) => events,
            Err(e) => return shard.internal(reply, &e),
        };
        let mut caught_up = events.len() < PAGE;
        // A page is also bounded in bytes, and the next waits until the connection has
        // written it: a client with a large backlog gets it at the pace it reads, and the
        // server holds little of it in memory (see `OutQueue`).
        let mut bytes = 0;
        let mut full = false;
        let events: Vec<_> = events
            .into_iter()
            .take_while(|e| {
                let fits = !full;
                bytes += e.encoded_len();
                full = bytes >= page_bytes;
                fits
            })
            .collect();
        if full {
            caught_up = false;
        }
        if let Some(last) = events.last() {
            stream.next_seq = last.seq + 1;
        }
        for event in events {
            if matches!(event.kind, Some(pb::event::Kind::Message(_))) {
                shard.metrics.messages_delivered.inc();
            }
            let env = envelope(0, Body::Event(event));
            shard.to_conn(reply.conn, Auth::Unchanged, env);
        }
        if caught_up {
            // Nothing is stored between the read above and here (one thread), so the
            // stream is exactly at the head: from now on appends push it directly.
            shard.set_stream(
                user,
                reply.conn,
                Stream {
                    live: true,
                    ..stream
                },
            );
            // The inbox head, also when the Sync started beyond it (then nothing was read
            // and the head is below `after_seq`): a client may ack what this says.
            let read_up_to = stream.next_seq.saturating_sub(1);
            let head_seq = match shard.store.inbox_head(user) {
                Ok(head) => head.min(read_up_to),
                Err(e) => return shard.internal(reply, &e),
            };
            return shard.respond(reply, Body::SyncDone(pb::SyncDone { head_seq }));
        }
        shard.set_stream(user, reply.conn, stream);
        if full && !drained(&shard, reply, user, generation).await {
            return;
        }
        runtime::yield_now().await;
    }
}

/// Waits until the connection has written what was sent to it; false when the stream
/// ended meanwhile (the connection closed, or another Sync took over).
async fn drained(shard: &Rc<Shard>, reply: Reply, user: u64, generation: u64) -> bool {
    let go = Rc::new(Signal::default());
    shard.drained.borrow_mut().insert(generation, go.clone());
    let (conn, from) = (reply.conn, shard.id);
    let ask = ShardMsg::AwaitDrain {
        conn,
        from,
        generation,
    };
    shard.dispatch(conn.shard, ask);
    let alive = loop {
        let woken = futures_lite::future::or(
            async {
                go.wait().await;
                true
            },
            async {
                runtime::sleep(std::time::Duration::from_secs(1)).await;
                false
            },
        );
        if woken.await {
            break true;
        }
        if shard.stream(user, reply.conn, generation).is_none() {
            break false;
        }
    };
    shard.drained.borrow_mut().remove(&generation);
    alive
}
