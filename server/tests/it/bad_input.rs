//! Broken frames get a clear error and never affect another client.

use std::time::Duration;

use chat_client::pb;
use prost::Message;

use crate::support::{next_message, TestServer};

fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

fn error_of(env: &pb::Envelope) -> (u64, pb::ErrorCode) {
    match &env.body {
        Some(pb::envelope::Body::Error(e)) => (env.request_id, e.code()),
        other => panic!("expected an error, got {other:?}"),
    }
}

/// A healthy pair of users whose chat must keep working while others misbehave.
fn bystanders(server: &TestServer) -> impl Fn(&str) {
    let (alice, _) = server.user("alice");
    let (bob, bob_login) = server.user("bob");
    bob.sync(None).unwrap();
    move |text: &str| {
        alice.send_message(bob_login.user_id, text).unwrap();
        assert_eq!(next_message(&bob).text, text);
    }
}

#[test]
fn malformed_frame_gets_error_and_close() {
    let server = TestServer::start(2);
    let chat = bystanders(&server);
    let bad = server.connect();
    bad.send_raw(&frame(&[0x08, 0x07, 0xff, 0xff, 0xff]))
        .unwrap();
    let env = bad
        .unsolicited()
        .recv_timeout(Duration::from_secs(10))
        .unwrap();
    assert_eq!(error_of(&env), (7, pb::ErrorCode::MalformedFrame));
    assert!(bad.wait_closed(Duration::from_secs(10)));
    chat("still fine after a malformed frame");
}

#[test]
fn oversize_length_prefix_is_rejected_before_reading_the_body() {
    let server = TestServer::start(1);
    let chat = bystanders(&server);
    let bad = server.connect();
    // Announce 1 GiB; send only the prefix.
    bad.send_raw(&(1u32 << 30).to_be_bytes()).unwrap();
    let env = bad
        .unsolicited()
        .recv_timeout(Duration::from_secs(10))
        .unwrap();
    assert_eq!(error_of(&env), (0, pb::ErrorCode::FrameTooLarge));
    assert!(bad.wait_closed(Duration::from_secs(10)));
    chat("still fine after an oversize frame");
}

#[test]
fn non_utf8_text_is_rejected_and_nothing_is_stored() {
    let server = TestServer::start(2);
    let chat = bystanders(&server);
    let (sender, _) = server.user("mallory");
    let bob_id = sender.lookup("bob").unwrap();
    let env = pb::Envelope {
        request_id: 99,
        body: Some(pb::envelope::Body::SendMessage(pb::SendMessage {
            media: None,
            to_user_id: bob_id,
            client_msg_id: 1,
            text: "abcd".into(),
            ..Default::default()
        })),
    };
    let mut body = env.encode_to_vec();
    let at = body.windows(4).position(|w| w == b"abcd").unwrap();
    body[at] = 0xc3; // a lone UTF-8 lead byte
    body[at + 1] = 0x28;
    sender.send_raw(&frame(&body)).unwrap();
    let err = sender.unsolicited().recv_timeout(Duration::from_secs(10));
    // request_id 99 is not one the client library issued, so the error is unsolicited.
    assert_eq!(error_of(&err.unwrap()), (99, pb::ErrorCode::InvalidUtf8));
    // The connection stays usable and nothing was stored for bob from mallory.
    sender.ping().unwrap();
    assert!(sender.history(bob_id, 0, 10).unwrap().messages.is_empty());
    chat("still fine after bad UTF-8");
}

#[test]
fn server_to_client_message_types_are_refused() {
    let server = TestServer::start(1);
    let c = server.connect();
    let r = c.request(pb::envelope::Body::Pong(pb::Pong { nonce: 1 }));
    assert_eq!(
        r.unwrap_err().code(),
        Some(pb::ErrorCode::UnexpectedMessage)
    );
    c.ping().unwrap();
}
