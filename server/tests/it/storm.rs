//! A reconnect storm: every client drops at the same moment and all come back together
//! (Resume, Sync from the last event seen, the unacknowledged send again). Nothing may be
//! lost or stored twice.

use std::sync::Barrier;
use std::time::Duration;

use chat_client::{pb, Connection};

use crate::support::{password, seed_users, TestServer};

const PAIRS: usize = 150;
const BEFORE: u64 = 5;
const AFTER: u64 = 5;

fn resume(server: &TestServer, token: &[u8]) -> Connection {
    let conn = server.connect();
    conn.resume(token).unwrap();
    conn
}

/// The texts of the messages in an inbox after `after`, up to its head.
fn messages(conn: &Connection, after: u64) -> Vec<(u64, String)> {
    let head = conn.sync(Some(after)).unwrap();
    let mut out = Vec::new();
    let mut seen = after;
    while seen < head {
        let event = conn
            .next_event(Duration::from_secs(20))
            .unwrap()
            .expect("events up to the head");
        seen = event.seq;
        if let Some(pb::event::Kind::Message(m)) = event.kind {
            out.push((event.seq, m.text));
        }
    }
    out
}

#[test]
fn a_reconnect_storm_loses_and_duplicates_nothing() {
    let mut users = Vec::new();
    let server = TestServer::start_with(
        2,
        |_| {},
        |dir| users = seed_users(dir, 2, "storm", 2 * PAIRS),
    );
    // Sessions for everyone (the password is hashed once per user, here).
    let tokens: Vec<Vec<u8>> = std::thread::scope(|s| {
        let handles: Vec<_> = users
            .iter()
            .map(|(name, _)| {
                let server = &server;
                s.spawn(move || {
                    let conn = server.connect();
                    conn.login(name, &password("storm")).unwrap().token.to_vec()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let everyone = Barrier::new(2 * PAIRS);
    let received: Vec<Vec<(u64, String)>> = std::thread::scope(|s| {
        let mut receivers = Vec::new();
        for pair in 0..PAIRS {
            let (sender_token, receiver_token) = (&tokens[2 * pair], &tokens[2 * pair + 1]);
            let to = users[2 * pair + 1].1;
            let (server, everyone) = (&server, &everyone);
            s.spawn(move || {
                let conn = resume(server, sender_token);
                for i in 1..BEFORE {
                    conn.send_message_with_id(to, i, &format!("m{i}")).unwrap();
                }
                // The last one goes out, and the connection drops before its ack is read.
                let unacked = conn
                    .start(pb::envelope::Body::SendMessage(pb::SendMessage {
                        to_user_id: to,
                        client_msg_id: BEFORE,
                        text: format!("m{BEFORE}"),
                        media: None,
                        ..Default::default()
                    }))
                    .unwrap();
                everyone.wait();
                drop(unacked);
                drop(conn);
                everyone.wait();
                // All back at once: the unacknowledged send again, then the rest.
                let conn = resume(server, sender_token);
                for i in BEFORE..=BEFORE + AFTER {
                    let ack = conn.send_message_with_id(to, i, &format!("m{i}")).unwrap();
                    // The resent one may or may not have been stored before the drop.
                    assert!(i == BEFORE || !ack.duplicate);
                }
            });
            receivers.push(s.spawn(move || {
                let conn = resume(server, receiver_token);
                conn.sync(None).unwrap();
                everyone.wait();
                drop(conn);
                everyone.wait();
                let conn = resume(server, receiver_token);
                // Everything from the start, to check for duplicates too.
                let mut all = messages(&conn, 0);
                while all.len() < (BEFORE + AFTER) as usize {
                    std::thread::sleep(Duration::from_millis(50));
                    all = messages(&resume(server, receiver_token), 0);
                }
                all
            }));
        }
        receivers.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let expected: Vec<String> = (1..=BEFORE + AFTER).map(|i| format!("m{i}")).collect();
    for inbox in received {
        let texts: Vec<String> = inbox.iter().map(|(_, t)| t.clone()).collect();
        assert_eq!(texts, expected);
        let seqs: Vec<u64> = inbox.iter().map(|(s, _)| *s).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    }
}
