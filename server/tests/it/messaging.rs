//! 1:1 messaging: pushes, offline store-and-forward, idempotency, shards, history.

use std::collections::HashSet;
use std::time::Duration;

use crate::support::{name_on_shard, next_message, TestServer};

#[test]
fn online_recipient_gets_a_push_and_sender_an_ack() {
    let server = TestServer::start(1);
    let (alice, _) = server.user("alice");
    let (bob, bob_login) = server.user("bob");
    assert_eq!(bob.sync(None).unwrap(), 0);
    let ack = alice.send_message(bob_login.user_id, "hello bob").unwrap();
    assert_eq!(ack.seq, 1);
    assert!(!ack.duplicate);
    assert!(ack.timestamp_us > 0);
    let m = next_message(&bob);
    assert_eq!(
        (m.text.as_str(), m.seq, m.timestamp_us),
        ("hello bob", 1, ack.timestamp_us)
    );
    assert_eq!(m.to_user_id, bob_login.user_id);
    assert_eq!(m.from_user_id, alice.lookup("alice").unwrap());
    // Nothing else arrives.
    assert!(bob
        .next_event(Duration::from_millis(200))
        .unwrap()
        .is_none());
}

#[test]
fn offline_recipient_gets_a_thousand_messages_in_order_on_connect() {
    let server = TestServer::start(2);
    let (alice, _) = server.user("alice");
    let (bob, bob_login) = server.user("bob");
    drop(bob);
    for i in 1..=1000u64 {
        let ack = alice
            .send_message_with_id(bob_login.user_id, i, &format!("message {i}"))
            .unwrap();
        assert_eq!(ack.seq, i);
    }
    let (bob, login) = server.login("bob");
    assert_eq!(login.acked_seq, 0);
    assert_eq!(bob.sync(None).unwrap(), 1000);
    for i in 1..=1000u64 {
        let m = next_message(&bob);
        assert_eq!(m.seq, i, "no gap, no duplicate, in order");
        assert_eq!(m.text, format!("message {i}"));
    }
    assert!(bob
        .next_event(Duration::from_millis(200))
        .unwrap()
        .is_none());
    // Acked events are not replayed on the next sync; the rest are.
    assert_eq!(bob.ack(600).unwrap(), 600);
    let (bob2, login) = server.login("bob");
    assert_eq!(login.acked_seq, 600);
    bob2.sync(None).unwrap();
    assert_eq!(next_message(&bob2).seq, 601);
}

#[test]
fn pipelined_sends_are_stored_in_order_and_live_stream_has_no_gaps() {
    let server = TestServer::start(2);
    let (alice, _) = server.user("alice");
    let (bob, bob_login) = server.user("bob");
    bob.sync(None).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 1..=300u64 {
                alice
                    .send_message_with_id(bob_login.user_id, i, &i.to_string())
                    .unwrap();
            }
        });
        for i in 1..=300u64 {
            let m = next_message(&bob);
            assert_eq!((m.seq, m.text.clone()), (i, i.to_string()));
        }
    });
}

#[test]
fn retried_send_is_stored_and_delivered_once() {
    let server = TestServer::start(2);
    let (alice, _) = server.user("alice");
    let (bob, bob_login) = server.user("bob");
    bob.sync(None).unwrap();
    let first = alice
        .send_message_with_id(bob_login.user_id, 77, "once")
        .unwrap();
    let retry = alice
        .send_message_with_id(bob_login.user_id, 77, "once")
        .unwrap();
    assert!(!first.duplicate);
    assert!(retry.duplicate);
    assert_eq!(
        (retry.seq, retry.timestamp_us),
        (first.seq, first.timestamp_us)
    );
    let next = alice
        .send_message_with_id(bob_login.user_id, 78, "twice?")
        .unwrap();
    assert_eq!(next.seq, first.seq + 1);
    assert_eq!(next_message(&bob).text, "once");
    assert_eq!(next_message(&bob).text, "twice?");
    assert!(bob
        .next_event(Duration::from_millis(200))
        .unwrap()
        .is_none());
    let history = alice.history(bob_login.user_id, 0, 10).unwrap();
    assert_eq!(history.messages.len(), 2);
}

#[test]
fn users_on_different_shards_chat_both_ways() {
    let server = TestServer::start(3);
    let a_name = name_on_shard("ann", 0, 3);
    let b_name = name_on_shard("ben", 2, 3);
    let (a, a_login) = server.user(&a_name);
    let (b, b_login) = server.user(&b_name);
    a.sync(None).unwrap();
    b.sync(None).unwrap();
    for round in 0..20 {
        a.send_message(b_login.user_id, &format!("a{round}"))
            .unwrap();
        assert_eq!(next_message(&b).text, format!("a{round}"));
        b.send_message(a_login.user_id, &format!("b{round}"))
            .unwrap();
        assert_eq!(next_message(&a).text, format!("b{round}"));
    }
    // Both sides see the whole conversation, in the same order.
    let from_a = a.history(b_login.user_id, 0, 100).unwrap();
    let from_b = b.history(a_login.user_id, 0, 100).unwrap();
    assert_eq!(from_a.messages.len(), 40);
    assert_eq!(from_a.messages, from_b.messages);
    // Connections land on whichever shard accepted them: many connections of one user
    // across shards all get the push.
    // (His inbox holds the 20 messages from ann and the 20 he sent her.)
    let extra: Vec<_> = (0..6).map(|_| server.login(&b_name).0).collect();
    for c in &extra {
        c.sync(Some(40)).unwrap();
    }
    a.send_message(b_login.user_id, "to every device").unwrap();
    for c in &extra {
        assert_eq!(next_message(c).text, "to every device");
    }
}

#[test]
fn history_pages_backwards_without_gaps() {
    let server = TestServer::start(2);
    let (alice, alice_login) = server.user("alice");
    let (bob, bob_login) = server.user("bob");
    for i in 0..45 {
        if i % 3 == 0 {
            bob.send_message(alice_login.user_id, &format!("m{i}"))
                .unwrap();
        } else {
            alice
                .send_message(bob_login.user_id, &format!("m{i}"))
                .unwrap();
        }
    }
    let mut seen = Vec::new();
    let mut before = 0;
    loop {
        let page = alice.history(bob_login.user_id, before, 10).unwrap();
        assert!(page.messages.len() <= 10);
        let ts: Vec<u64> = page.messages.iter().map(|m| m.timestamp_us).collect();
        assert!(ts.windows(2).all(|w| w[0] < w[1]), "oldest first");
        seen.splice(0..0, page.messages.iter().map(|m| m.text.clone()));
        if !page.more {
            break;
        }
        before = page.messages[0].timestamp_us;
    }
    let expected: Vec<String> = (0..45).map(|i| format!("m{i}")).collect();
    assert_eq!(seen, expected);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 45);
    // Someone else's conversation is empty for us.
    let (carol, _) = server.user("carol");
    assert!(carol
        .history(bob_login.user_id, 0, 10)
        .unwrap()
        .messages
        .is_empty());
}

#[test]
fn sync_beyond_the_head_answers_the_inbox_head() {
    let server = TestServer::start(2);
    let (alice, _) = server.user("alice");
    let (bob, b) = server.user("bob");
    for text in ["one", "two"] {
        alice.send_message(b.user_id, text).unwrap();
    }
    // SyncDone.head_seq is the inbox head, also below after_seq; nothing is pushed.
    assert_eq!(bob.sync(Some(3)).unwrap(), 2);
    assert_eq!(bob.sync(Some(1000)).unwrap(), 2);
    assert!(bob
        .next_event(Duration::from_millis(200))
        .unwrap()
        .is_none());
    // So a client may ack what it was told.
    assert_eq!(bob.ack(2).unwrap(), 2);
    assert_eq!(bob.sync(Some(2)).unwrap(), 2);
    alice.send_message(b.user_id, "three").unwrap();
    assert_eq!(next_message(&bob).seq, 3);
    assert_eq!(bob.sync(Some(1)).unwrap(), 3);
    assert_eq!(next_message(&bob).seq, 2);
}
