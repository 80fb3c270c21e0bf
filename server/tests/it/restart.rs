//! Restarting the server on the same data directory loses nothing.

use std::time::Duration;

use chat_client::{pb, Session};

use crate::support::{next_message, TestServer};

#[test]
fn users_tokens_and_undelivered_messages_survive_restart() {
    let mut server = TestServer::start(2);
    let (alice, _) = server.user("alice");
    let (bob, bob_login) = server.user("bob");
    drop(bob);
    for i in 1..=50u64 {
        alice
            .send_message_with_id(bob_login.user_id, i, &format!("m{i}"))
            .unwrap();
    }
    drop(alice);
    server.restart();

    // Passwords and tokens still work.
    let (alice, _) = server.login("alice");
    let bob = server.connect();
    assert_eq!(
        bob.resume(&bob_login.token).unwrap().user_id,
        bob_login.user_id
    );
    assert_eq!(bob.sync(None).unwrap(), 50);
    for i in 1..=50u64 {
        assert_eq!(next_message(&bob).text, format!("m{i}"));
    }
    // Sequence numbers and idempotency records continue across the restart.
    let retry = alice
        .send_message_with_id(bob_login.user_id, 50, "m50")
        .unwrap();
    assert!(retry.duplicate);
    let ack = alice
        .send_message_with_id(bob_login.user_id, 51, "m51")
        .unwrap();
    assert_eq!(ack.seq, 51);
    assert_eq!(next_message(&bob).text, "m51");
    assert_eq!(
        alice
            .history(bob_login.user_id, 0, 200)
            .unwrap()
            .messages
            .len(),
        51
    );
}

#[test]
fn client_session_reconnects_and_resumes_without_duplicates() {
    let mut server = TestServer::start(2);
    let (alice, _) = server.user("alice");
    let (_bob, bob_login) = server.user("bob");
    let mut bob = Session::open(server.credentials("bob")).unwrap();
    bob.start_stream(None).unwrap();
    alice.send_message(bob_login.user_id, "before").unwrap();
    let text = |e: pb::Event| match e.kind {
        Some(pb::event::Kind::Message(m)) => m.text,
        other => panic!("unexpected {other:?}"),
    };
    let first = bob.next_event(Duration::from_secs(10)).unwrap().unwrap();
    assert_eq!(text(first), "before");
    // Not acked yet: the server would replay it, the session must not.
    drop(alice);
    server.restart();
    let (alice, _) = server.login("alice");
    alice.send_message(bob_login.user_id, "after").unwrap();
    let next = bob.next_event(Duration::from_secs(20)).unwrap().unwrap();
    assert_eq!((next.seq, text(next.clone())), (2, "after".to_string()));
    assert!(bob
        .next_event(Duration::from_millis(300))
        .unwrap()
        .is_none());
    // The idle poll flushed the ack: a fresh login starts after both.
    assert_eq!(server.login("bob").1.acked_seq, 2);
}
