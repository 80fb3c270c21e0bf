//! Restarting the server on the same data directory loses nothing.

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
