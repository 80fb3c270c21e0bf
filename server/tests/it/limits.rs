//! Limits that protect the server and other clients from one connection: request rate,
//! connections per user, login and idle timeouts, and clients that do not read.

use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use chat_client::pb::{self, envelope::Body};

use crate::support::{password, TestServer};

#[test]
fn a_connection_over_its_request_rate_is_told_when_to_retry() {
    let server = TestServer::start_with(
        1,
        |c| {
            c.rate_limit_per_s = 20;
            c.rate_limit_burst = 5;
        },
        |_| {},
    );
    let conn = server.connect();
    let pending: Vec<_> = (0..30)
        .map(|n| conn.start(Body::Ping(pb::Ping { nonce: n })).unwrap())
        .collect();
    let mut limited = 0;
    for rx in pending {
        let env = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        match env.body {
            Some(Body::Pong(_)) => {}
            Some(Body::Error(e)) => {
                assert_eq!(e.code(), pb::ErrorCode::RateLimited);
                assert!((1..=1000).contains(&e.retry_after_ms), "{e:?}");
                limited += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // A burst of 5 passes (and a token or so refills meanwhile); most of the rest do not.
    assert!((20..=25).contains(&limited), "{limited} of 30 limited");
    // After waiting, the connection works again; another connection was never affected.
    std::thread::sleep(Duration::from_millis(300));
    conn.ping().unwrap();
    server.connect().ping().unwrap();
}

#[test]
fn a_user_may_not_hold_more_connections_than_allowed() {
    let server = TestServer::start_with(2, |c| c.max_connections_per_user = 2, |_| {});
    let (first, login) = server.user("alice");
    let second = server.connect();
    second.resume(&login.token).unwrap();
    let third = server.connect();
    let err = third.resume(&login.token).unwrap_err();
    assert_eq!(err.code(), Some(pb::ErrorCode::TooManyConnections));
    let err = third.login("alice", &password("alice")).unwrap_err();
    assert_eq!(err.code(), Some(pb::ErrorCode::TooManyConnections));
    // Once one closes, there is room again.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match third.resume(&login.token) {
            Ok(_) => break,
            Err(e) if e.code() == Some(pb::ErrorCode::TooManyConnections) => {
                assert!(
                    Instant::now() < deadline,
                    "the closed connection still counts"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("{e}"),
        }
    }
    second.ping().unwrap();
}

#[test]
fn connections_that_do_not_log_in_or_go_silent_are_closed() {
    let server = TestServer::start_with(
        2,
        |c| {
            c.login_timeout_s = 1;
            c.idle_timeout_s = 2;
        },
        |_| {},
    );
    server.user("alice");
    // Never logs in (slow-loris): closed with TIMEOUT after about a second.
    let lurker = server.connect();
    let (silent, _) = server.login("alice");
    let (chatty, _) = server.login("alice");
    let timeout_error = |conn: &chat_client::Connection| {
        let env = conn
            .unsolicited()
            .recv_timeout(Duration::from_secs(10))
            .expect("an error before the close");
        match env.body {
            Some(Body::Error(e)) => e.code(),
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(timeout_error(&lurker), pb::ErrorCode::Timeout);
    assert!(lurker.wait_closed(Duration::from_secs(10)));
    // Logged in but silent: closed after the idle timeout; one that pings stays.
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        chatty.ping().unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(timeout_error(&silent), pb::ErrorCode::Timeout);
    assert!(silent.wait_closed(Duration::from_secs(10)));
    assert!(!chatty.is_closed());
    chatty.ping().unwrap();
}

/// A TLS client that logs in, starts its event stream and then never reads.
fn deaf_client(
    server: &TestServer,
    user: &str,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let tcp = TcpStream::connect(server.addr()).unwrap();
    let socket = socket2::SockRef::from(&tcp);
    socket.set_recv_buffer_size(4096).unwrap();
    let config: Arc<rustls::ClientConfig> = chat_client::tls_config(server.ca()).unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = rustls::ClientConnection::new(config, name).unwrap();
    let mut stream = rustls::StreamOwned::new(tls, tcp);
    let mut frames = BytesMut::new();
    for (id, body) in [
        (
            1,
            Body::Login(pb::Login {
                username: user.to_string(),
                password: password(user),
                device_name: String::new(),
            }),
        ),
        (2, Body::Sync(pb::Sync { after_seq: None })),
    ] {
        chat_protocol::encode_frame(&chat_protocol::envelope(id, body), &mut frames);
    }
    stream.write_all(&frames).unwrap();
    stream.flush().unwrap();
    stream
}

#[test]
fn a_client_that_does_not_read_is_cut_off_and_harms_nobody() {
    let server = TestServer::start_with(2, |c| c.max_outbound_bytes = 64 * 1024, |_| {});
    let (alice, _) = server.user("alice");
    let (_bob, b) = server.user("bob");
    let (carol, c) = server.user("carol");
    let mut deaf = deaf_client(&server, "bob");
    // Logged in and synced by now.
    std::thread::sleep(Duration::from_millis(500));
    // 200 messages of 60 KiB for bob: far more than the socket buffers and the 64 KiB
    // limit hold. Every send is still acked: the sender never waits for bob.
    let text = "x".repeat(60 * 1024);
    for _ in 0..200 {
        alice.send_message(b.user_id, &text).unwrap();
    }
    // Others are unaffected.
    alice.send_message(c.user_id, "still here").unwrap();
    carol.sync(None).unwrap();
    assert_eq!(crate::support::next_message(&carol).text, "still here");
    // Bob's connection was closed: reading now drains what the kernel buffered, then ends
    // well before the 12 MB sent.
    deaf.sock
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut got = 0usize;
    let mut chunk = vec![0u8; 64 * 1024];
    let end = loop {
        match std::io::Read::read(&mut deaf, &mut chunk) {
            Ok(0) => break None,
            Err(e) => break Some(e.kind()),
            Ok(n) => got += n,
        }
    };
    // Reset, so what the kernel still held for bob was dropped too.
    assert_eq!(end, Some(std::io::ErrorKind::ConnectionReset));
    assert!(
        got < 8 << 20,
        "read {got} bytes: the server kept queueing for a client that does not read"
    );
    // Bob's messages are all in his inbox for his next connection, which reads them at
    // its own pace without being cut off (the catch-up waits for it).
    let bob = server.connect();
    bob.login("bob", &password("bob")).unwrap();
    assert!(bob.sync(Some(0)).unwrap() >= 200);
    assert!(!bob.is_closed());
}
