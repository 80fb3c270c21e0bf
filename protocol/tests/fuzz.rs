//! Property-based fuzzing of the frame and envelope decoder, on stable Rust.
//!
//! The decoder is the first code that touches a peer's bytes, so these properties feed it
//! arbitrary byte streams, valid frames cut at arbitrary points, and valid frames with
//! mutated bytes. Each property runs 256 cases by default; `PROPTEST_CASES=20000 cargo test
//! --workspace --all-targets decoder_fuzz` runs more (docs/OPERATIONS.md, "Fuzzing").
#![allow(clippy::unwrap_used)] // reason: test code

use bytes::{BufMut, Bytes, BytesMut};
use chat_protocol::pb::{self, envelope::Body};
use chat_protocol::{
    encode_frame, peek_request_id, Envelope, FrameDecoder, FrameError, LENGTH_PREFIX_BYTES,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::strategy::Union;
use prost::Message;

/// What one call of `decode` produced.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Frame(Envelope),
    Malformed(u64),
    InvalidUtf8(u64),
    TooLarge(usize),
}

fn prefix(buf: &[u8]) -> Option<usize> {
    let p: [u8; 4] = buf.get(..LENGTH_PREFIX_BYTES)?.try_into().ok()?;
    Some(u32::from_be_bytes(p) as usize)
}

/// Decodes everything `buf` holds, checking the decoder's contract on every call:
/// "need more" consumes nothing, a frame or a recoverable error consumes exactly one frame,
/// and TOO_LARGE is reported exactly when the prefix exceeds the maximum. Returns whether
/// the stream must be abandoned (TOO_LARGE).
fn drain(dec: &FrameDecoder, buf: &mut BytesMut, out: &mut Vec<Outcome>) -> bool {
    loop {
        let before = buf.clone();
        let announced = prefix(&before);
        let result = dec.decode(buf);
        let consumed = before.len() - buf.len();
        let whole = announced.map(|len| LENGTH_PREFIX_BYTES + len);
        let body = || &before[LENGTH_PREFIX_BYTES..whole.unwrap()];
        match result {
            Ok(None) => {
                assert_eq!(consumed, 0, "need-more consumed bytes");
                if let Some(len) = announced {
                    assert!(len <= dec.max_frame_bytes());
                    assert!(before.len() < LENGTH_PREFIX_BYTES + len);
                }
                return false;
            }
            Err(FrameError::TooLarge { len, max }) => {
                assert_eq!(consumed, 0, "TooLarge consumed bytes");
                assert_eq!(Some(len), announced);
                assert_eq!(max, dec.max_frame_bytes());
                assert!(len > max, "TooLarge for {len} <= {max}");
                out.push(Outcome::TooLarge(len));
                return true;
            }
            other => {
                let len = announced.expect("a frame needs a prefix");
                assert!(len <= dec.max_frame_bytes());
                assert_eq!(Some(consumed), whole, "exactly one frame consumed");
                assert_eq!(dec.needed(&before), whole);
                let salvaged = peek_request_id(body()).unwrap_or(0);
                out.push(match other {
                    Ok(Some(env)) => {
                        assert!(env.body.is_some(), "a frame without a body");
                        assert_eq!(env, Envelope::decode(body()).unwrap());
                        assert_eq!(env.request_id, salvaged, "peek agrees with decoding");
                        Outcome::Frame(env)
                    }
                    Err(FrameError::Malformed { request_id, .. }) => {
                        assert_eq!(request_id, salvaged);
                        Outcome::Malformed(request_id)
                    }
                    Err(FrameError::InvalidUtf8 { request_id }) => {
                        assert_eq!(request_id, salvaged);
                        Outcome::InvalidUtf8(request_id)
                    }
                    Err(e) => panic!("unknown frame error {e:?}"),
                    Ok(None) => unreachable!(),
                });
            }
        }
    }
}

/// Feeds `stream` to a decoder in the pieces `cuts` (positions, any order) delimit.
/// Returns the outcomes and the bytes left undecoded.
fn decode_in_pieces(max: usize, stream: &[u8], cuts: &[usize]) -> (Vec<Outcome>, BytesMut) {
    let dec = FrameDecoder::new(max);
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    cuts.push(stream.len());
    cuts.sort_unstable();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut at = 0;
    for cut in cuts {
        buf.extend_from_slice(&stream[at..cut]);
        at = cut;
        if drain(&dec, &mut buf, &mut out) {
            break;
        }
    }
    (out, buf)
}

fn frame_of(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

fn bytes_up_to(n: usize) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..n).prop_map(Bytes::from)
}

fn ids() -> impl Strategy<Value = Vec<u64>> {
    vec(any::<u64>(), 0..6)
}

fn media() -> impl Strategy<Value = pb::Media> {
    (
        bytes_up_to(20),
        any::<i32>(),
        any::<String>(),
        any::<u64>(),
        bytes_up_to(40),
        (any::<u32>(), any::<u32>(), any::<u32>()),
        bytes_up_to(64),
        any::<String>(),
    )
        .prop_map(
            |(
                asset_id,
                kind,
                mime_type,
                size,
                sha256,
                (duration_ms, width, height),
                thumbnail,
                file_name,
            )| {
                pb::Media {
                    asset_id,
                    kind,
                    mime_type,
                    size,
                    sha256,
                    duration_ms,
                    width,
                    height,
                    thumbnail,
                    file_name,
                }
            },
        )
}

fn message() -> impl Strategy<Value = pb::Message> {
    (
        (any::<u64>(), any::<u64>(), any::<u64>()),
        (any::<u64>(), any::<u64>(), any::<u64>()),
        any::<String>(),
        proptest::option::of(media()),
        (any::<u64>(), any::<u64>(), any::<bool>()),
        vec((any::<u64>(), any::<String>()), 0..3),
    )
        .prop_map(
            |(
                (from_user_id, to_user_id, client_msg_id),
                (seq, timestamp_us, group_id),
                text,
                media,
                (reply_to_us, edited_us, deleted),
                reactions,
            )| {
                pb::Message {
                    from_user_id,
                    to_user_id,
                    client_msg_id,
                    seq,
                    timestamp_us,
                    text,
                    group_id,
                    media: media.map(Box::new),
                    reply_to_us,
                    edited_us,
                    deleted,
                    reactions: reactions
                        .into_iter()
                        .map(|(user_id, emoji)| pb::Reaction { user_id, emoji })
                        .collect(),
                }
            },
        )
}

fn message_ref() -> impl Strategy<Value = Option<pb::MessageRef>> {
    proptest::option::of((any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
        |(with_user_id, group_id, timestamp_us)| pb::MessageRef {
            with_user_id,
            group_id,
            timestamp_us,
        },
    ))
}

fn group() -> impl Strategy<Value = pb::Group> {
    (
        any::<u64>(),
        any::<String>(),
        vec((any::<u64>(), any::<i32>()), 0..5),
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(
            |(group_id, name, members, head_seq, created_us)| pb::Group {
                group_id,
                name,
                members: members
                    .into_iter()
                    .map(|(user_id, role)| pb::GroupMember { user_id, role })
                    .collect(),
                head_seq,
                created_us,
            },
        )
}

fn event() -> impl Strategy<Value = pb::Event> {
    use pb::event::Kind;
    let kind = prop_oneof![
        message().prop_map(Kind::Message),
        (
            (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()),
            any::<i32>(),
            ids(),
            any::<String>()
        )
            .prop_map(
                |((group_id, seq, timestamp_us, actor_user_id), kind, user_ids, name)| {
                    Kind::GroupChange(pb::GroupChange {
                        group_id,
                        seq,
                        timestamp_us,
                        actor_user_id,
                        kind,
                        user_ids,
                        name,
                    })
                }
            ),
        (
            any::<u64>(),
            any::<u64>(),
            any::<i32>(),
            any::<u64>(),
            any::<u64>()
        )
            .prop_map(|(by_user_id, group_id, kind, up_to_seq, timestamp_us)| {
                Kind::Receipt(pb::Receipt {
                    by_user_id,
                    group_id,
                    kind,
                    up_to_seq,
                    timestamp_us,
                })
            }),
        message().prop_map(Kind::Sent),
        (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
            |(with_user_id, group_id, up_to_seq, timestamp_us)| {
                Kind::Read(pb::ReadMarker {
                    with_user_id,
                    group_id,
                    up_to_seq,
                    timestamp_us,
                })
            }
        ),
        (
            (any::<i32>(), any::<u64>(), any::<u64>(), any::<u64>()),
            (any::<u64>(), any::<u64>(), any::<u64>()),
            (any::<String>(), any::<String>(), any::<u64>(), any::<u64>()),
        )
            .prop_map(
                |(
                    (kind, from_user_id, to_user_id, group_id),
                    (message_us, message_seq, actor_user_id),
                    (text, emoji, timestamp_us, seq),
                )| {
                    Kind::MessageChange(pb::MessageChange {
                        kind,
                        from_user_id,
                        to_user_id,
                        group_id,
                        message_us,
                        message_seq,
                        actor_user_id,
                        text,
                        emoji,
                        timestamp_us,
                        seq,
                    })
                }
            ),
    ];
    (any::<u64>(), proptest::option::of(kind)).prop_map(|(seq, kind)| pb::Event { seq, kind })
}

/// Every request type, and the responses and pushes, with arbitrary field values.
fn body() -> impl Strategy<Value = Body> {
    let s = any::<String>;
    let u = any::<u64>;
    let requests = vec![
        (s(), s())
            .prop_map(|(username, password)| Body::Register(pb::Register { username, password }))
            .boxed(),
        (s(), s())
            .prop_map(|(username, password)| {
                Body::Login(pb::Login {
                    username,
                    password,
                    device_name: String::new(),
                })
            })
            .boxed(),
        bytes_up_to(64)
            .prop_map(|token| Body::Resume(pb::Resume { token }))
            .boxed(),
        s().prop_map(|username| Body::LookupUser(pb::LookupUser { username }))
            .boxed(),
        (u(), u(), s(), proptest::option::of(media()))
            .prop_map(|(to_user_id, client_msg_id, text, media)| {
                Body::SendMessage(pb::SendMessage {
                    to_user_id,
                    client_msg_id,
                    text,
                    media: media.map(Box::new),
                    ..Default::default()
                })
            })
            .boxed(),
        proptest::option::of(u())
            .prop_map(|after_seq| Body::Sync(pb::Sync { after_seq }))
            .boxed(),
        u().prop_map(|up_to_seq| Body::Ack(pb::Ack { up_to_seq }))
            .boxed(),
        (u(), u(), any::<u32>(), u())
            .prop_map(|(with_user_id, before_timestamp_us, limit, group_id)| {
                Body::GetMessages(pb::GetMessages {
                    with_user_id,
                    before_timestamp_us,
                    limit,
                    group_id,
                })
            })
            .boxed(),
        u().prop_map(|nonce| Body::Ping(pb::Ping { nonce })).boxed(),
        u().prop_map(|user_id| Body::GetUser(pb::GetUser { user_id }))
            .boxed(),
        (s(), ids())
            .prop_map(|(name, member_ids)| Body::CreateGroup(pb::CreateGroup { name, member_ids }))
            .boxed(),
        (u(), ids())
            .prop_map(|(group_id, user_ids)| {
                Body::AddMembers(pb::AddMembers { group_id, user_ids })
            })
            .boxed(),
        (u(), u())
            .prop_map(|(group_id, user_id)| {
                Body::RemoveMember(pb::RemoveMember { group_id, user_id })
            })
            .boxed(),
        u().prop_map(|group_id| Body::LeaveGroup(pb::LeaveGroup { group_id }))
            .boxed(),
        (u(), s())
            .prop_map(|(group_id, name)| Body::RenameGroup(pb::RenameGroup { group_id, name }))
            .boxed(),
        u().prop_map(|group_id| Body::GetGroup(pb::GetGroup { group_id }))
            .boxed(),
        (u(), u(), s(), proptest::option::of(media()))
            .prop_map(|(group_id, client_msg_id, text, media)| {
                Body::SendGroupMessage(pb::SendGroupMessage {
                    group_id,
                    client_msg_id,
                    text,
                    media: media.map(Box::new),
                    ..Default::default()
                })
            })
            .boxed(),
        (u(), u(), u())
            .prop_map(|(with_user_id, group_id, up_to_seq)| {
                Body::MarkRead(pb::MarkRead {
                    with_user_id,
                    group_id,
                    up_to_seq,
                })
            })
            .boxed(),
        (u(), u())
            .prop_map(|(group_id, seq)| Body::GetReceipts(pb::GetReceipts { group_id, seq }))
            .boxed(),
        (
            proptest::option::of(any::<bool>()),
            proptest::option::of(any::<i32>()),
            proptest::option::of(any::<bool>()),
        )
            .prop_map(|(read_receipts, presence_visibility, push_previews)| {
                Body::SetSettings(pb::SetSettings {
                    read_receipts,
                    presence_visibility,
                    push_previews,
                })
            })
            .boxed(),
        ids()
            .prop_map(|user_ids| Body::SubscribePresence(pb::SubscribePresence { user_ids }))
            .boxed(),
        ids()
            .prop_map(|user_ids| Body::GetPresence(pb::GetPresence { user_ids }))
            .boxed(),
        (u(), u(), any::<bool>())
            .prop_map(|(to_user_id, group_id, typing)| {
                Body::Typing(pb::Typing {
                    to_user_id,
                    group_id,
                    typing,
                })
            })
            .boxed(),
        (
            (u(), s(), bytes_up_to(40), any::<i32>()),
            (any::<u32>(), any::<u32>(), any::<u32>(), s()),
        )
            .prop_map(
                |((size, mime_type, sha256, kind), (duration_ms, width, height, file_name))| {
                    Body::UploadStart(pb::UploadStart {
                        size,
                        mime_type,
                        sha256,
                        kind,
                        duration_ms,
                        width,
                        height,
                        file_name,
                    })
                },
            )
            .boxed(),
        (bytes_up_to(20), u(), bytes_up_to(256))
            .prop_map(|(upload_id, offset, data)| {
                Body::UploadChunk(pb::UploadChunk {
                    upload_id,
                    offset,
                    data,
                })
            })
            .boxed(),
        bytes_up_to(20)
            .prop_map(|upload_id| Body::UploadFinish(pb::UploadFinish { upload_id }))
            .boxed(),
        (bytes_up_to(20), u(), any::<u32>(), u())
            .prop_map(|(asset_id, offset, length, group_id)| {
                Body::FetchAsset(pb::FetchAsset {
                    asset_id,
                    offset,
                    length,
                    group_id,
                })
            })
            .boxed(),
        (any::<i32>(), s())
            .prop_map(|(platform, token)| {
                Body::RegisterPushToken(pb::RegisterPushToken { platform, token })
            })
            .boxed(),
        s().prop_map(|token| Body::UnregisterPushToken(pb::UnregisterPushToken { token }))
            .boxed(),
        Just(Body::Logout(pb::Logout {})).boxed(),
        Just(Body::LogoutAll(pb::LogoutAll {})).boxed(),
        Just(Body::ListDevices(pb::ListDevices {})).boxed(),
        u().prop_map(|device_id| Body::RevokeDevice(pb::RevokeDevice { device_id }))
            .boxed(),
        u().prop_map(|user_id| Body::Block(pb::Block { user_id }))
            .boxed(),
        u().prop_map(|user_id| Body::Unblock(pb::Unblock { user_id }))
            .boxed(),
        Just(Body::ListBlocked(pb::ListBlocked {})).boxed(),
        u().prop_map(|user_id| Body::AddContact(pb::AddContact { user_id }))
            .boxed(),
        u().prop_map(|user_id| Body::RemoveContact(pb::RemoveContact { user_id }))
            .boxed(),
        Just(Body::ListContacts(pb::ListContacts {})).boxed(),
        (message_ref(), any::<bool>())
            .prop_map(|(message, for_everyone)| {
                Body::DeleteMessage(pb::DeleteMessage {
                    message,
                    for_everyone,
                })
            })
            .boxed(),
        (message_ref(), s())
            .prop_map(|(message, text)| Body::EditMessage(pb::EditMessage { message, text }))
            .boxed(),
        (message_ref(), s())
            .prop_map(|(message, emoji)| Body::React(pb::React { message, emoji }))
            .boxed(),
    ];
    let responses = vec![
        (any::<i32>(), s(), any::<u32>())
            .prop_map(|(code, message, retry_after_ms)| {
                Body::Error(pb::Error {
                    code,
                    message,
                    retry_after_ms,
                })
            })
            .boxed(),
        (u(), bytes_up_to(64), u(), u())
            .prop_map(|(user_id, token, acked_seq, device_id)| {
                Body::LoggedIn(pb::LoggedIn {
                    user_id,
                    token,
                    acked_seq,
                    device_id,
                })
            })
            .boxed(),
        ((u(), u(), u()), (u(), any::<bool>(), u()))
            .prop_map(
                |((to_user_id, client_msg_id, seq), (timestamp_us, duplicate, group_id))| {
                    Body::SendAck(pb::SendAck {
                        to_user_id,
                        client_msg_id,
                        seq,
                        timestamp_us,
                        duplicate,
                        group_id,
                    })
                },
            )
            .boxed(),
        (vec(message(), 0..4), any::<bool>())
            .prop_map(|(messages, more)| Body::Messages(pb::Messages { messages, more }))
            .boxed(),
        proptest::option::of(group())
            .prop_map(|group| Body::GroupInfo(pb::GroupInfo { group }))
            .boxed(),
        Just(Body::Done(pb::Done {})).boxed(),
        (bytes_up_to(20), u(), bytes_up_to(256), u())
            .prop_map(|(asset_id, offset, data, size)| {
                Body::AssetData(pb::AssetData {
                    asset_id,
                    offset,
                    data,
                    size,
                })
            })
            .boxed(),
        vec(((u(), s(), u(), u()), (any::<bool>(), any::<bool>())), 0..3)
            .prop_map(|devices| {
                Body::Devices(pb::Devices {
                    devices: devices
                        .into_iter()
                        .map(
                            |((device_id, name, created_us, last_active_us), (online, current))| {
                                pb::Device {
                                    device_id,
                                    name,
                                    created_us,
                                    last_active_us,
                                    online,
                                    current,
                                }
                            },
                        )
                        .collect(),
                })
            })
            .boxed(),
        vec((u(), u()), 0..4)
            .prop_map(|users| {
                Body::UserList(pb::UserList {
                    users: users
                        .into_iter()
                        .map(|(user_id, added_us)| pb::ListedUser { user_id, added_us })
                        .collect(),
                })
            })
            .boxed(),
        event().prop_map(Body::Event).boxed(),
        (u(), u(), any::<bool>())
            .prop_map(|(from_user_id, group_id, typing)| {
                Body::TypingUpdate(pb::TypingUpdate {
                    from_user_id,
                    group_id,
                    typing,
                })
            })
            .boxed(),
    ];
    Union::new(requests.into_iter().chain(responses))
}

fn envelope() -> impl Strategy<Value = Envelope> {
    (any::<u64>(), body()).prop_map(|(id, b)| chat_protocol::envelope(id, b))
}

/// Pieces of a hostile stream: valid frames, frames with a correct prefix and a random
/// body, random bytes, and prefixes that announce more than the maximum.
fn segment(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => envelope().prop_map(|env| {
            let mut buf = BytesMut::new();
            encode_frame(&env, &mut buf);
            buf.to_vec()
        }),
        3 => vec(any::<u8>(), 0..64).prop_map(|body| frame_of(&body)),
        2 => vec(any::<u8>(), 0..32),
        1 => (max + 1..=u32::MAX as usize).prop_map(|len| (len as u32).to_be_bytes().to_vec()),
        1 => Just(frame_of(&[])),
    ]
}

const MAX: usize = 4096;

proptest! {
    /// Arbitrary streams, fed in arbitrary pieces, decode exactly as when fed whole, and
    /// every decode call keeps the contract checked in `drain`.
    #[test]
    fn decoder_fuzz_arbitrary_streams_in_any_pieces(
        segments in vec(segment(MAX), 0..12),
        cuts in vec(any::<usize>(), 0..16),
    ) {
        let stream = segments.concat();
        let (whole, left_whole) = decode_in_pieces(MAX, &stream, &[]);
        let (split, left_split) = decode_in_pieces(MAX, &stream, &cuts);
        prop_assert_eq!(&split, &whole);
        // After TOO_LARGE the stream is abandoned, so only then may the leftovers differ.
        if !matches!(whole.last(), Some(Outcome::TooLarge(_))) {
            prop_assert_eq!(left_split, left_whole);
        }
    }

    /// Plain random bytes, the classic fuzz input, in random pieces.
    #[test]
    fn decoder_fuzz_random_bytes_never_panic(
        stream in vec(any::<u8>(), 0..2048),
        cuts in vec(any::<usize>(), 0..8),
        max in 0usize..1024,
    ) {
        let (whole, _) = decode_in_pieces(max, &stream, &[]);
        let (split, _) = decode_in_pieces(max, &stream, &cuts);
        prop_assert_eq!(split, whole);
        let _ = peek_request_id(&stream);
    }

    /// Valid envelopes of every type round-trip, whole or split at random points, also
    /// when the largest of them is exactly the maximum frame size.
    #[test]
    fn decoder_fuzz_valid_envelopes_round_trip(
        envs in vec(envelope(), 1..12),
        cuts in vec(any::<usize>(), 0..16),
    ) {
        let mut wire = BytesMut::new();
        let mut largest = 0;
        for env in &envs {
            let body = env.encode_to_vec();
            prop_assert_eq!(peek_request_id(&body), (env.request_id != 0).then_some(env.request_id));
            largest = largest.max(body.len());
            encode_frame(env, &mut wire);
        }
        let expected: Vec<Outcome> = envs.iter().cloned().map(Outcome::Frame).collect();
        for max in [largest, chat_protocol::DEFAULT_MAX_FRAME_BYTES] {
            let (whole, left) = decode_in_pieces(max, &wire, &[]);
            prop_assert_eq!(&whole, &expected);
            prop_assert!(left.is_empty());
            let (split, left) = decode_in_pieces(max, &wire, &cuts);
            prop_assert_eq!(&split, &expected);
            prop_assert!(left.is_empty());
        }
    }

    /// A valid frame whose body bytes are mutated (flipped, inserted, removed, truncated)
    /// while its prefix stays consistent decodes to an envelope or a recoverable error, and
    /// the frame after it still decodes: the stream stays in sync.
    #[test]
    fn decoder_fuzz_mutated_bodies_keep_the_stream_in_sync(
        env in envelope(),
        edits in vec((0u8..4, any::<usize>(), any::<u8>()), 1..8),
        next in envelope(),
    ) {
        let mut body = env.encode_to_vec();
        for (op, at, byte) in edits {
            let at = at % (body.len() + 1);
            match op {
                0 if at < body.len() => body[at] ^= byte | 1,
                1 => body.insert(at, byte),
                2 if at < body.len() => { body.remove(at); }
                _ => body.truncate(at),
            }
        }
        let mut wire = BytesMut::new();
        wire.put_slice(&frame_of(&body));
        encode_frame(&next, &mut wire);
        let max = chat_protocol::DEFAULT_MAX_FRAME_BYTES;
        let (outcomes, left) = decode_in_pieces(max, &wire, &[]);
        prop_assert!(left.is_empty());
        prop_assert_eq!(outcomes.len(), 2);
        prop_assert!(!matches!(outcomes[0], Outcome::TooLarge(_)));
        prop_assert_eq!(&outcomes[1], &Outcome::Frame(next));
    }

    /// Mutations anywhere in a stream of valid frames, length prefixes included, never
    /// panic and decode the same in pieces as whole.
    #[test]
    fn decoder_fuzz_mutated_streams_never_panic(
        envs in vec(envelope(), 1..6),
        edits in vec((0u8..3, any::<usize>(), any::<u8>()), 1..6),
        cuts in vec(any::<usize>(), 0..8),
    ) {
        let mut wire = BytesMut::new();
        for env in &envs {
            encode_frame(env, &mut wire);
        }
        let mut stream = wire.to_vec();
        for (op, at, byte) in edits {
            let at = at % (stream.len() + 1);
            match op {
                0 if at < stream.len() => stream[at] ^= byte | 1,
                1 => stream.insert(at, byte),
                _ if at < stream.len() => { stream.remove(at); }
                _ => {}
            }
        }
        let (whole, _) = decode_in_pieces(MAX, &stream, &[]);
        let (split, _) = decode_in_pieces(MAX, &stream, &cuts);
        prop_assert_eq!(split, whole);
    }
}
