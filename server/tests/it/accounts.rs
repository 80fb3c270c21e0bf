//! Registration, login, tokens and the authentication gate.

use chat_client::pb;

use crate::support::{code, password, TestServer};

#[test]
fn register_login_and_reject_bad_attempts() {
    let server = TestServer::start(2);
    let c = server.connect();
    let id = c.register("Alice", "password-alice").unwrap();
    assert_ne!(id, 0);
    // Names are case-insensitive.
    assert_eq!(
        code(c.register("alice", "another-password")),
        pb::ErrorCode::UsernameTaken
    );
    assert_eq!(
        code(c.register("a", "password-x")),
        pb::ErrorCode::InvalidArgument
    );
    assert_eq!(
        code(c.register("bob", "short")),
        pb::ErrorCode::InvalidArgument
    );
    assert_eq!(
        code(c.login("alice", "wrong-password")),
        pb::ErrorCode::BadCredentials
    );
    assert_eq!(
        code(c.login("nobody", "password-x")),
        pb::ErrorCode::BadCredentials
    );
    let login = c.login("ALICE", "password-alice").unwrap();
    assert_eq!(login.user_id, id);
    assert_eq!(
        code(c.login("alice", "password-alice")),
        pb::ErrorCode::AlreadyAuthenticated
    );
    assert_eq!(c.lookup("alice").unwrap(), id);
    assert_eq!(c.username(id).unwrap(), "alice");
    assert_eq!(code(c.username(id ^ 1)), pb::ErrorCode::UserNotFound);
    assert_eq!(code(c.lookup("nobody")), pb::ErrorCode::UserNotFound);
}

#[test]
fn unauthenticated_requests_are_refused_but_connection_stays_usable() {
    let server = TestServer::start(1);
    let (_bob, bob) = server.user("bob");
    let c = server.connect();
    assert_eq!(
        code(c.send_message(bob.user_id, "hi")),
        pb::ErrorCode::Unauthenticated
    );
    assert_eq!(code(c.sync(None)), pb::ErrorCode::Unauthenticated);
    assert_eq!(
        code(c.history(bob.user_id, 0, 10)),
        pb::ErrorCode::Unauthenticated
    );
    assert_eq!(code(c.lookup("bob")), pb::ErrorCode::Unauthenticated);
    assert_eq!(
        code(c.username(bob.user_id)),
        pb::ErrorCode::Unauthenticated
    );
    c.ping().unwrap();
    c.register("carol", &password("carol")).unwrap();
    c.login("carol", &password("carol")).unwrap();
    c.send_message(bob.user_id, "now it works").unwrap();
}

#[test]
fn resume_with_token_and_reject_forged_tokens() {
    let server = TestServer::start(2);
    let (_c, login) = server.user("dave");
    let c2 = server.connect();
    let resumed = c2.resume(&login.token).unwrap();
    assert_eq!(resumed.user_id, login.user_id);
    assert_eq!(resumed.token, login.token);

    let mut forged = login.token.to_vec();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let c3 = server.connect();
    assert_eq!(code(c3.resume(&forged)), pb::ErrorCode::BadCredentials);
    assert_eq!(code(c3.resume(b"short")), pb::ErrorCode::BadCredentials);
    // A failed resume leaves the connection free to log in properly.
    c3.resume(&login.token).unwrap();
}

#[test]
fn requests_pipelined_behind_a_login_run_after_it() {
    let server = TestServer::start(2);
    let (alice, _) = server.user("alice");
    let (_bob, bob_login) = server.user("bob");
    alice
        .send_message(bob_login.user_id, "waiting for you")
        .unwrap();
    let c = server.connect();
    // Resume and Sync in one go, without waiting for LoggedIn.
    let resume = c
        .start(pb::envelope::Body::Resume(pb::Resume {
            token: bob_login.token.clone(),
        }))
        .unwrap();
    let sync = c
        .start(pb::envelope::Body::Sync(pb::Sync { after_seq: None }))
        .unwrap();
    assert!(matches!(
        c.finish(resume).unwrap(),
        pb::envelope::Body::LoggedIn(_)
    ));
    assert!(matches!(
        c.finish(sync).unwrap(),
        pb::envelope::Body::SyncDone(_)
    ));
    assert_eq!(crate::support::next_message(&c).text, "waiting for you");
    // Behind a failed login, the held-back request is refused.
    let c2 = server.connect();
    let bad = c2
        .start(pb::envelope::Body::Resume(pb::Resume {
            token: vec![0u8; 40].into(),
        }))
        .unwrap();
    let sync = c2
        .start(pb::envelope::Body::Sync(pb::Sync { after_seq: None }))
        .unwrap();
    assert_eq!(
        c2.finish(bad).unwrap_err().code(),
        Some(pb::ErrorCode::BadCredentials)
    );
    assert_eq!(
        c2.finish(sync).unwrap_err().code(),
        Some(pb::ErrorCode::Unauthenticated)
    );
}
