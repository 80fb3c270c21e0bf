//! A client given several servers: it skips the ones that refuse, and a Session whose server
//! goes away resumes on another address of its list.

use std::time::Duration;

use chat_client::{pb, Connection, Session};

use crate::support::{closed_addr, TestServer};

#[test]
fn a_server_list_whose_first_entry_refuses_still_connects() {
    let server = TestServer::start(1);
    let (_alice, _) = server.user("alice");
    // Every start index: with the dead one first and second.
    let list = [closed_addr(), server.addr().to_string()];
    for start in 0..2 {
        let (index, conn, login) = chat_client::connect_first(&list, server.ca(), start, |c| {
            c.login("alice", &crate::support::password("alice"))
        })
        .unwrap();
        assert_eq!(index, 1, "start {start}");
        assert_ne!(login.user_id, 0);
        conn.ping().unwrap();
    }
    // The string form, as `chat --server` passes it, from a random start.
    let joined = list.join(",");
    for _ in 0..4 {
        let conn = Connection::connect_any(&joined, server.ca()).unwrap();
        assert_eq!(conn.peer_addr().unwrap().to_string(), server.addr());
        conn.ping().unwrap();
    }
    // A node that answers UNAVAILABLE (its data for the account is moving) is skipped
    // like a dead one; another error is final.
    let twice = [server.addr().to_string(), server.addr().to_string()];
    let mut calls = 0;
    let (index, _, ()) = chat_client::connect_first(&twice, server.ca(), 0, |_| {
        calls += 1;
        if calls == 1 {
            return Err(chat_client::ClientError::Server {
                code: pb::ErrorCode::Unavailable,
                message: "moving".into(),
            });
        }
        Ok(())
    })
    .unwrap();
    assert_eq!((index, calls), (1, 2));
    let err = chat_client::connect_first(&twice, server.ca(), 0, |c| {
        c.login("alice", "not her password").map(|_| ())
    })
    .unwrap_err();
    assert_eq!(err.code(), Some(pb::ErrorCode::BadCredentials), "{err}");
    // Only dead servers: an error naming each of them.
    let dead = [closed_addr(), closed_addr()];
    let err = chat_client::connect_first(&dead, server.ca(), 0, |_| Ok(())).unwrap_err();
    let text = err.to_string();
    assert!(text.contains(&dead[0]) && text.contains(&dead[1]), "{text}");
}

#[test]
fn a_session_resumes_on_another_address_of_its_list() {
    let mut server = TestServer::start(1);
    let (_alice, _) = server.user("alice");
    let (_bob, bob_login) = server.user("bob");
    // The node it will come back on does not listen yet.
    let later = closed_addr();
    let mut creds = server.credentials("bob");
    creds.server = format!("{},{later}", server.addr());
    let mut bob = Session::open(creds).unwrap();
    assert_eq!(bob.server(), server.addr());
    bob.start_stream(None).unwrap();

    // The server goes away and comes back (same data, so the token) on the other address.
    server.restart_at(&later);
    assert_eq!(server.addr(), later);
    let (alice, _) = server.login("alice");
    alice
        .send_message(bob_login.user_id, "after the move")
        .unwrap();

    // The session runs in a thread so that a client that never fails over fails the test
    // instead of retrying forever.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let event = bob.next_event(Duration::from_secs(60));
        let _ = tx.send((
            event.map(|e| e.and_then(|e| e.kind)),
            bob.server().to_string(),
        ));
    });
    let (event, now_on) = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the session reconnected within 60 s");
    match event.unwrap() {
        Some(pb::event::Kind::Message(m)) => assert_eq!(m.text, "after the move"),
        other => panic!("expected the message, got {other:?}"),
    }
    assert_eq!(now_on, later);
}

#[test]
fn a_server_that_accepts_but_never_answers_is_skipped_after_the_connect_timeout() {
    let server = TestServer::start(1);
    // The kernel completes TCP for a listener nobody accepts on; TLS then never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let list = [
        silent.local_addr().unwrap().to_string(),
        server.addr().to_string(),
    ];
    let ca = server.ca().to_path_buf();
    // In a thread: a client that waits on the silent server forever fails the test.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let got =
            chat_client::connect_first(&list, &ca, 0, |c| c.ping()).map(|(index, _, ())| index);
        let _ = tx.send(got.map_err(|e| e.to_string()));
    });
    let got = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the silent server was given up on");
    assert_eq!(got, Ok(1));
    drop(silent);
}
