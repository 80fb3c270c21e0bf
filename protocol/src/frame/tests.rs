#![allow(clippy::unwrap_used)] // reason: test code

use bytes::{BufMut, BytesMut};
use proptest::prelude::*;
use prost::Message;

use super::*;
use crate::pb::{self, envelope::Body};

fn send(request_id: u64, text: &str) -> Envelope {
    crate::envelope(
        request_id,
        Body::SendMessage(pb::SendMessage {
            media: None,
            to_user_id: 7,
            client_msg_id: 9,
            text: text.into(),
            ..Default::default()
        }),
    )
}

#[test]
fn needs_more_until_whole_frame_is_buffered() {
    let mut wire = BytesMut::new();
    encode_frame(&send(5, "hello"), &mut wire);
    let full = wire.clone();
    let dec = FrameDecoder::default();
    for cut in 0..full.len() {
        let mut partial = BytesMut::from(&full[..cut]);
        assert_eq!(dec.decode(&mut partial).unwrap(), None, "cut at {cut}");
        assert_eq!(partial.len(), cut, "nothing consumed");
    }
    assert_eq!(dec.decode(&mut wire).unwrap(), Some(send(5, "hello")));
    assert!(wire.is_empty());
}

#[test]
fn oversize_prefix_rejected_before_body_arrives() {
    let dec = FrameDecoder::new(1024);
    let mut buf = BytesMut::new();
    buf.put_u32(1025);
    assert_eq!(
        dec.decode(&mut buf),
        Err(FrameError::TooLarge {
            len: 1025,
            max: 1024
        })
    );
    assert_eq!(dec.needed(&buf), None);
}

#[test]
fn garbage_body_is_malformed_and_consumed() {
    let dec = FrameDecoder::default();
    let mut buf = BytesMut::new();
    buf.put_u32(3);
    buf.put_slice(&[0xff, 0xff, 0xff]);
    encode_frame(&send(1, "next"), &mut buf);
    assert!(matches!(
        dec.decode(&mut buf),
        Err(FrameError::Malformed { .. })
    ));
    assert_eq!(dec.decode(&mut buf).unwrap(), Some(send(1, "next")));
}

#[test]
fn empty_envelope_is_malformed_with_its_request_id() {
    let dec = FrameDecoder::default();
    let mut buf = BytesMut::new();
    let empty = Envelope {
        request_id: 42,
        body: None,
    };
    encode_frame(&empty, &mut buf);
    assert!(matches!(
        dec.decode(&mut buf),
        Err(FrameError::Malformed { request_id: 42, .. })
    ));
}

#[test]
fn invalid_utf8_text_is_reported_with_request_id() {
    // Encode a valid envelope, then corrupt the text bytes in place.
    let env = send(77, "abcd");
    let mut body = env.encode_to_vec();
    let pos = body.windows(4).position(|w| w == b"abcd").unwrap();
    body[pos] = 0xff;
    body[pos + 1] = 0xfe;
    let mut buf = BytesMut::new();
    buf.put_u32(body.len() as u32);
    buf.put_slice(&body);
    assert_eq!(
        FrameDecoder::default().decode(&mut buf),
        Err(FrameError::InvalidUtf8 { request_id: 77 })
    );
    assert!(buf.is_empty());
}

#[test]
fn ping_frame_matches_documented_bytes() {
    // docs/PROTOCOL.md shows this exact frame.
    let mut buf = BytesMut::new();
    encode_frame(
        &crate::envelope(1, Body::Ping(pb::Ping { nonce: 5 })),
        &mut buf,
    );
    assert_eq!(
        &buf[..],
        &[0, 0, 0, 7, 0x08, 0x01, 0x92, 0x01, 0x02, 0x08, 0x05]
    );
}

fn arb_body() -> impl Strategy<Value = Body> {
    prop_oneof![
        (any::<String>(), any::<String>())
            .prop_map(|(username, password)| Body::Register(pb::Register { username, password })),
        (any::<u64>(), any::<u64>(), any::<String>()).prop_map(|(to, id, text)| {
            Body::SendMessage(pb::SendMessage {
                media: None,
                to_user_id: to,
                client_msg_id: id,
                text,
                ..Default::default()
            })
        }),
        proptest::option::of(any::<u64>()).prop_map(|after_seq| Body::Sync(pb::Sync { after_seq })),
        any::<u64>().prop_map(|up_to_seq| Body::Ack(pb::Ack { up_to_seq })),
        (any::<u64>(), any::<u64>(), any::<u64>(), any::<String>()).prop_map(
            |(seq, from, ts, text)| Body::Event(pb::Event {
                seq,
                kind: Some(pb::event::Kind::Message(pb::Message {
                    media: None,
                    from_user_id: from,
                    to_user_id: 1,
                    client_msg_id: 2,
                    seq,
                    timestamp_us: ts,
                    text,
                    group_id: 0,
                    ..Default::default()
                })),
            })
        ),
    ]
}

proptest! {
    #[test]
    fn frames_round_trip_in_any_chunking(
        bodies in proptest::collection::vec((any::<u64>(), arb_body()), 1..20),
        chunk in 1usize..64,
    ) {
        let envs: Vec<Envelope> = bodies.into_iter().map(|(id, b)| crate::envelope(id, b)).collect();
        let mut wire = BytesMut::new();
        for e in &envs {
            encode_frame(e, &mut wire);
        }
        let dec = FrameDecoder::default();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in wire.chunks(chunk) {
            buf.extend_from_slice(piece);
            while let Some(env) = dec.decode(&mut buf).unwrap() {
                out.push(env);
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(out, envs);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let dec = FrameDecoder::new(256);
        let mut buf = BytesMut::from(&bytes[..]);
        // Every call either consumes a frame, stops for more input, or reports an error.
        loop {
            let before = buf.len();
            match dec.decode(&mut buf) {
                Ok(Some(_)) | Err(FrameError::Malformed { .. }) | Err(FrameError::InvalidUtf8 { .. }) => {
                    prop_assert!(buf.len() < before);
                }
                Ok(None) | Err(FrameError::TooLarge { .. }) => break,
            }
        }
        let _ = peek_request_id(&bytes);
    }
}

#[test]
fn salvaged_request_id_is_the_last_one_as_decoding_takes_it() {
    // Field 1 twice: a body-less envelope that decodes, and one that does not, report the
    // same id (found by tests/fuzz.rs, which checks this for every malformed frame).
    let dec = FrameDecoder::default();
    for body in [
        &[0x08, 0x05, 0x08, 0x07][..],
        &[0x08, 0x05, 0x08, 0x07, 0xff][..],
    ] {
        let mut buf = BytesMut::new();
        buf.put_u32(body.len() as u32);
        buf.put_slice(body);
        assert!(matches!(
            dec.decode(&mut buf),
            Err(FrameError::Malformed { request_id: 7, .. })
        ));
        assert_eq!(peek_request_id(body), Some(7));
    }
}
