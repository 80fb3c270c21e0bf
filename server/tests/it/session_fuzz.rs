//! Property-based fuzzing of the session state machine against the real server.
//!
//! One server is started per test (not per case). Each case opens a connection and pipelines
//! a random sequence of requests on it: logins (right and wrong), Resume, sends, Sync, Ack,
//! Ping, group and media operations on real and made-up ids, Logout, server-to-client
//! types, frames with random bodies and oversize length prefixes. Then it checks that
//!
//! - every request got exactly one response of a type that answers it, or a documented error
//!   (never INTERNAL), unless the connection was closed for a documented reason first
//!   (MALFORMED_FRAME, FRAME_TOO_LARGE, Logout, or a connection-level error);
//! - a well-behaved client can still log in, send, and have its message received by a
//!   connection that was open the whole time.
//!
//! 32 cases by default, to keep CI fast; `PROPTEST_CASES=2000 cargo test --workspace
//! --all-targets session_fuzz` runs more (docs/OPERATIONS.md, "Fuzzing").

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use chat_client::pb;
use chat_protocol::{encode_frame, envelope, FrameDecoder, FrameError};
use pb::envelope::Body;
use pb::ErrorCode;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use crate::support::{password, TestServer};

/// What the random connection can name: real ids of the world below, and made-up ones.
#[derive(Debug, Clone)]
struct World {
    users: Vec<u64>,
    groups: Vec<u64>,
    assets: Vec<Vec<u8>>,
    uploads: Vec<Vec<u8>>,
    names: Vec<String>,
}

#[derive(Debug, Clone)]
enum Op {
    /// A well-formed frame with this body (a request, or a type only servers send).
    Frame(Body),
    /// Login as the fuzzer with the right password.
    Login,
    /// Resume with the token of the fuzzer's latest login.
    Resume,
    /// A frame whose body is our request id followed by random bytes.
    Garbage(Vec<u8>),
    /// A length prefix this much beyond the maximum frame size.
    Oversize(u32),
}

/// What a request id must be answered with.
#[derive(Debug, Clone)]
enum Expect {
    Answer(Body),
    Error(ErrorCode),
}

fn pick<T: Clone + std::fmt::Debug + 'static>(pool: &[T]) -> BoxedStrategy<T> {
    select(pool.to_vec()).boxed()
}

fn user_id(w: &World) -> BoxedStrategy<u64> {
    prop_oneof![6 => pick(&w.users), 1 => Just(0), 1 => any::<u64>()].boxed()
}

fn user_ids(w: &World) -> BoxedStrategy<Vec<u64>> {
    vec(user_id(w), 0..5).boxed()
}

fn group_id(w: &World) -> BoxedStrategy<u64> {
    prop_oneof![6 => pick(&w.groups), 1 => Just(0), 1 => any::<u64>()].boxed()
}

fn id_bytes(pool: &[Vec<u8>]) -> BoxedStrategy<Bytes> {
    prop_oneof![
        4 => pick(pool),
        1 => vec(any::<u8>(), 16..=16),
        1 => vec(any::<u8>(), 0..24),
    ]
    .prop_map(Bytes::from)
    .boxed()
}

/// A message named by a conversation (real or made up) and a timestamp (mostly made up),
/// or no message at all.
fn message_ref(w: &World) -> BoxedStrategy<Option<pb::MessageRef>> {
    proptest::option::weighted(
        0.9,
        (user_id(w), group_id(w), small_or_any()).prop_map(
            |(with_user_id, group_id, timestamp_us)| pb::MessageRef {
                with_user_id,
                group_id,
                timestamp_us,
            },
        ),
    )
    .boxed()
}

fn small_or_any() -> BoxedStrategy<u64> {
    prop_oneof![4 => 0u64..8, 1 => any::<u64>()].boxed()
}

fn text() -> BoxedStrategy<String> {
    prop_oneof![
        6 => "[a-z ]{1,16}",
        2 => any::<String>(),
        1 => Just(String::new()),
        1 => Just("x".repeat(64 * 1024 + 1)),
    ]
    .boxed()
}

fn name(w: &World) -> BoxedStrategy<String> {
    prop_oneof![3 => pick(&w.names), 2 => "[a-zA-Z0-9_.-]{0,40}", 1 => any::<String>()].boxed()
}

fn media(w: &World) -> BoxedStrategy<Option<Box<pb::Media>>> {
    proptest::option::weighted(
        0.3,
        (id_bytes(&w.assets), vec(any::<u8>(), 0..32)).prop_map(|(asset_id, thumbnail)| {
            Box::new(pb::Media {
                asset_id,
                thumbnail: thumbnail.into(),
                ..Default::default()
            })
        }),
    )
    .boxed()
}

fn request(w: &World) -> BoxedStrategy<Body> {
    let w = w.clone();
    let password = prop_oneof![Just(password("fuzzer")), any::<String>()];
    prop_oneof![
        (name(&w), password.clone())
            .prop_map(|(username, password)| Body::Register(pb::Register { username, password })),
        (name(&w), password).prop_map(|(username, password)| Body::Login(pb::Login {
            username,
            password,
            device_name: String::new()
        })),
        vec(any::<u8>(), 0..48).prop_map(|t| Body::Resume(pb::Resume { token: t.into() })),
        name(&w).prop_map(|username| Body::LookupUser(pb::LookupUser { username })),
        user_id(&w).prop_map(|user_id| Body::GetUser(pb::GetUser { user_id })),
        (user_id(&w), small_or_any(), text(), media(&w)).prop_map(|(to, id, text, media)| {
            Body::SendMessage(pb::SendMessage {
                to_user_id: to,
                client_msg_id: id,
                text,
                media,
                ..Default::default()
            })
        }),
        proptest::option::of(small_or_any())
            .prop_map(|after_seq| Body::Sync(pb::Sync { after_seq })),
        small_or_any().prop_map(|up_to_seq| Body::Ack(pb::Ack { up_to_seq })),
        (user_id(&w), small_or_any(), any::<u32>(), group_id(&w)).prop_map(
            |(with_user_id, before_timestamp_us, limit, group_id)| {
                Body::GetMessages(pb::GetMessages {
                    with_user_id,
                    before_timestamp_us,
                    limit,
                    group_id,
                })
            }
        ),
        any::<u64>().prop_map(|nonce| Body::Ping(pb::Ping { nonce })),
        (text(), user_ids(&w))
            .prop_map(|(name, member_ids)| Body::CreateGroup(pb::CreateGroup { name, member_ids })),
        (group_id(&w), user_ids(&w)).prop_map(|(group_id, user_ids)| Body::AddMembers(
            pb::AddMembers { group_id, user_ids }
        )),
        (group_id(&w), user_id(&w)).prop_map(|(group_id, user_id)| {
            Body::RemoveMember(pb::RemoveMember { group_id, user_id })
        }),
        group_id(&w).prop_map(|group_id| Body::LeaveGroup(pb::LeaveGroup { group_id })),
        (group_id(&w), text())
            .prop_map(|(group_id, name)| Body::RenameGroup(pb::RenameGroup { group_id, name })),
        group_id(&w).prop_map(|group_id| Body::GetGroup(pb::GetGroup { group_id })),
        (group_id(&w), small_or_any(), text(), media(&w)).prop_map(
            |(group_id, client_msg_id, text, media)| {
                Body::SendGroupMessage(pb::SendGroupMessage {
                    group_id,
                    client_msg_id,
                    text,
                    media,
                    ..Default::default()
                })
            }
        ),
        (user_id(&w), group_id(&w), small_or_any()).prop_map(
            |(with_user_id, group_id, up_to_seq)| Body::MarkRead(pb::MarkRead {
                with_user_id,
                group_id,
                up_to_seq,
            })
        ),
        (group_id(&w), small_or_any())
            .prop_map(|(group_id, seq)| Body::GetReceipts(pb::GetReceipts { group_id, seq })),
        (
            proptest::option::of(any::<bool>()),
            proptest::option::of(-1i32..4),
            proptest::option::of(any::<bool>()),
        )
            .prop_map(|(read_receipts, presence_visibility, push_previews)| {
                Body::SetSettings(pb::SetSettings {
                    read_receipts,
                    presence_visibility,
                    push_previews,
                })
            }),
        user_ids(&w)
            .prop_map(|user_ids| Body::SubscribePresence(pb::SubscribePresence { user_ids })),
        user_ids(&w).prop_map(|user_ids| Body::GetPresence(pb::GetPresence { user_ids })),
        (user_id(&w), group_id(&w), any::<bool>()).prop_map(|(to_user_id, group_id, typing)| {
            Body::Typing(pb::Typing {
                to_user_id,
                group_id,
                typing,
            })
        }),
        (
            prop_oneof![1u64..100_000, any::<u64>()],
            prop_oneof![Just("image/jpeg".to_string()), "[a-z/]{0,12}"],
            prop_oneof![vec(any::<u8>(), 32..=32), vec(any::<u8>(), 0..40)],
            -1i32..5,
            "[a-z.]{0,12}",
        )
            .prop_map(|(size, mime_type, sha256, kind, file_name)| {
                Body::UploadStart(pb::UploadStart {
                    size,
                    mime_type,
                    sha256: sha256.into(),
                    kind,
                    file_name,
                    ..Default::default()
                })
            }),
        (
            id_bytes(&w.uploads),
            small_or_any(),
            vec(any::<u8>(), 0..64)
        )
            .prop_map(
                |(upload_id, offset, data)| Body::UploadChunk(pb::UploadChunk {
                    upload_id,
                    offset,
                    data: data.into(),
                })
            ),
        id_bytes(&w.uploads)
            .prop_map(|upload_id| Body::UploadFinish(pb::UploadFinish { upload_id })),
        (
            id_bytes(&w.assets),
            small_or_any(),
            any::<u32>(),
            group_id(&w)
        )
            .prop_map(|(asset_id, offset, length, group_id)| Body::FetchAsset(
                pb::FetchAsset {
                    asset_id,
                    offset,
                    length,
                    group_id,
                }
            )),
        (-1i32..5, "[a-z0-9]{0,16}").prop_map(|(platform, token)| {
            Body::RegisterPushToken(pb::RegisterPushToken { platform, token })
        }),
        "[a-z0-9]{0,16}"
            .prop_map(|token| Body::UnregisterPushToken(pb::UnregisterPushToken { token })),
        Just(Body::Logout(pb::Logout {})),
        Just(Body::LogoutAll(pb::LogoutAll {})),
        Just(Body::ListDevices(pb::ListDevices {})),
        small_or_any().prop_map(|device_id| Body::RevokeDevice(pb::RevokeDevice { device_id })),
        user_id(&w).prop_map(|user_id| Body::Block(pb::Block { user_id })),
        user_id(&w).prop_map(|user_id| Body::Unblock(pb::Unblock { user_id })),
        Just(Body::ListBlocked(pb::ListBlocked {})),
        user_id(&w).prop_map(|user_id| Body::AddContact(pb::AddContact { user_id })),
        user_id(&w).prop_map(|user_id| Body::RemoveContact(pb::RemoveContact { user_id })),
        Just(Body::ListContacts(pb::ListContacts {})),
        (message_ref(&w), any::<bool>()).prop_map(|(message, for_everyone)| {
            Body::DeleteMessage(pb::DeleteMessage {
                message,
                for_everyone,
            })
        }),
        (message_ref(&w), text())
            .prop_map(|(message, text)| { Body::EditMessage(pb::EditMessage { message, text }) }),
        (
            message_ref(&w),
            prop_oneof![Just("👍".to_string()), Just(String::new()), any::<String>()]
        )
            .prop_map(|(message, emoji)| Body::React(pb::React { message, emoji })),
        any::<u64>().prop_map(|nonce| Body::Pong(pb::Pong { nonce })),
        Just(Body::Done(pb::Done {})),
    ]
    .boxed()
}

fn op(w: &World) -> BoxedStrategy<Op> {
    prop_oneof![
        40 => request(w).prop_map(Op::Frame),
        4 => Just(Op::Login),
        2 => Just(Op::Resume),
        2 => vec(any::<u8>(), 0..48).prop_map(Op::Garbage),
        1 => any::<u32>().prop_map(|extra| Op::Oversize(extra % 1024)),
    ]
    .boxed()
}

/// A sequence, most of them starting with a login so that authenticated requests run.
fn sequence(w: &World) -> BoxedStrategy<Vec<Op>> {
    (proptest::bool::weighted(0.7), vec(op(w), 1..16))
        .prop_map(|(login, mut ops)| {
            if login {
                ops.insert(0, Op::Login);
            }
            ops
        })
        .boxed()
}

/// Whether `resp` is a success answer to `req`.
fn answers(req: &Body, resp: &Body) -> bool {
    use Body as B;
    match (req, resp) {
        (B::Ping(p), B::Pong(q)) => p.nonce == q.nonce,
        (B::Register(_), B::Registered(_))
        | (B::Login(_) | B::Resume(_), B::LoggedIn(_))
        | (B::LookupUser(_) | B::GetUser(_), B::UserFound(_))
        | (B::SendMessage(_) | B::SendGroupMessage(_), B::SendAck(_))
        | (B::Sync(_), B::SyncDone(_))
        | (B::Ack(_), B::Acked(_))
        | (B::GetMessages(_), B::Messages(_))
        | (
            B::CreateGroup(_)
            | B::AddMembers(_)
            | B::RemoveMember(_)
            | B::LeaveGroup(_)
            | B::RenameGroup(_)
            | B::GetGroup(_),
            B::GroupInfo(_),
        )
        | (
            B::MarkRead(_)
            | B::Typing(_)
            | B::RegisterPushToken(_)
            | B::UnregisterPushToken(_)
            | B::Logout(_)
            | B::LogoutAll(_)
            | B::RevokeDevice(_)
            | B::Block(_)
            | B::Unblock(_)
            | B::AddContact(_)
            | B::RemoveContact(_)
            | B::DeleteMessage(_)
            | B::EditMessage(_)
            | B::React(_),
            B::Done(_),
        )
        | (B::ListDevices(_), B::Devices(_))
        | (B::ListBlocked(_) | B::ListContacts(_), B::UserList(_))
        | (B::GetReceipts(_), B::Receipts(_))
        | (B::SetSettings(_), B::Settings(_))
        | (B::SubscribePresence(_) | B::GetPresence(_), B::PresenceSnapshot(_))
        | (B::UploadStart(_) | B::UploadChunk(_), B::UploadStatus(_))
        | (B::UploadFinish(_), B::AssetReady(_))
        | (B::FetchAsset(_), B::AssetData(_)) => true,
        _ => false,
    }
}

fn is_request(body: &Body) -> bool {
    !matches!(body, Body::Pong(_) | Body::Done(_))
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

/// Runs one sequence on a new connection and checks what came back.
fn run_case(server: &TestServer, token: &mut Vec<u8>, ops: &[Op]) -> Result<(), TestCaseError> {
    let max_frame = server.config().max_frame_bytes;
    let c = server.connect();
    let mut expected: HashMap<u64, Expect> = HashMap::new();
    let mut syncs = Vec::new();
    // Request ids of this sequence: far from 0 and from the client library's own.
    let ours = 1_000_000u64..1_000_000 + ops.len() as u64;
    let mut fatal_sent = false;
    for (id, op) in ours.clone().zip(ops) {
        let mut wire = BytesMut::new();
        let body = match op {
            Op::Frame(body) => Some(body.clone()),
            Op::Login => Some(Body::Login(pb::Login {
                username: "fuzzer".into(),
                password: password("fuzzer"),
                device_name: String::new(),
            })),
            Op::Resume => Some(Body::Resume(pb::Resume {
                token: token.clone().into(),
            })),
            Op::Garbage(bytes) => {
                let mut body = BytesMut::new();
                body.put_u8(0x08);
                prost::encoding::encode_varint(id, &mut body);
                body.put_slice(bytes);
                let raw = frame(&body);
                // The server decodes it as this does. The error carries the request id the
                // bytes hold (ours, unless they override it): skip ids already in use.
                let (salvaged, code) =
                    match FrameDecoder::new(max_frame).decode(&mut BytesMut::from(&raw[..])) {
                        Ok(Some(env)) => (id, Ok(env.body)),
                        Ok(None) => unreachable!("a whole frame"),
                        Err(FrameError::InvalidUtf8 { request_id }) => {
                            (request_id, Err(ErrorCode::InvalidUtf8))
                        }
                        Err(FrameError::Malformed { request_id, .. }) => {
                            (request_id, Err(ErrorCode::MalformedFrame))
                        }
                        Err(e) => unreachable!("{e}"),
                    };
                match code {
                    Ok(body) => body,
                    Err(_)
                        if expected.contains_key(&salvaged)
                            || (ours.contains(&salvaged) && salvaged != id) =>
                    {
                        continue
                    }
                    Err(code) => {
                        expected.insert(salvaged, Expect::Error(code));
                        fatal_sent = code == ErrorCode::MalformedFrame;
                        wire.put_slice(&raw);
                        None
                    }
                }
            }
            Op::Oversize(_) if expected.contains_key(&0) => continue,
            Op::Oversize(extra) => {
                wire.put_u32((max_frame + 1) as u32 + extra);
                expected.insert(0, Expect::Error(ErrorCode::FrameTooLarge));
                fatal_sent = true;
                None
            }
        };
        if let Some(body) = body {
            if matches!(body, Body::Sync(_)) {
                syncs.push(id);
            }
            encode_frame(&envelope(id, body.clone()), &mut wire);
            expected.insert(id, Expect::Answer(body));
        }
        // A write fails once the server closed the connection (after Logout, say).
        if c.send_raw(&wire).is_err() || fatal_sent {
            break;
        }
    }
    // Everything but a Sync that a later Sync superseded must be answered (the spec leaves
    // open whether a superseded Sync gets its SyncDone).
    let superseded: HashSet<u64> = syncs.iter().rev().skip(1).copied().collect();
    let mut pending: HashSet<u64> = expected
        .keys()
        .copied()
        .filter(|id| !superseded.contains(id))
        .collect();
    let mut answered = HashSet::new();
    // Whether the server said why it may close the connection (so requests may go unanswered).
    let mut may_close = false;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !pending.is_empty() {
        let env = match c.unsolicited().recv_timeout(Duration::from_millis(20)) {
            Ok(env) => env,
            Err(_) if c.is_closed() && c.unsolicited().is_empty() => break,
            Err(_) => {
                prop_assert!(
                    Instant::now() < deadline,
                    "no answer to {:?} within 20 s",
                    pending.iter().map(|id| &expected[id]).collect::<Vec<_>>()
                );
                continue;
            }
        };
        let id = env.request_id;
        let body = env.body.expect("frames from the server have a body");
        if let Body::Error(e) = &body {
            prop_assert!(
                !matches!(e.code(), ErrorCode::Internal | ErrorCode::Unspecified)
                    && ErrorCode::try_from(e.code).is_ok(),
                "undocumented error {:?} for {:?}",
                e,
                expected.get(&id)
            );
        }
        let expect_zero = matches!(
            (expected.get(&0), &body),
            (Some(Expect::Error(code)), Body::Error(e)) if e.code() == *code
        );
        if id == 0 && !expect_zero {
            // A connection-level error (the server closes after it), or an ephemeral push.
            may_close |= matches!(body, Body::Error(_));
            continue;
        }
        let Some(expect) = expected.get(&id) else {
            return Err(TestCaseError::fail(format!(
                "an answer to request {id}, which was never sent: {body:?}"
            )));
        };
        prop_assert!(answered.insert(id), "two answers to {:?}", expect);
        pending.remove(&id);
        match (expect, &body) {
            (Expect::Error(code), Body::Error(e)) => {
                prop_assert_eq!(e.code(), *code);
                if matches!(code, ErrorCode::MalformedFrame | ErrorCode::FrameTooLarge) {
                    may_close = true;
                }
            }
            (Expect::Answer(req), Body::Error(e)) if !is_request(req) => prop_assert!(
                matches!(
                    e.code(),
                    ErrorCode::UnexpectedMessage | ErrorCode::Unauthenticated
                ),
                "{:?} for a server-to-client type",
                e
            ),
            // Any documented error (checked above) may refuse a request.
            (Expect::Answer(_), Body::Error(_)) => {}
            (Expect::Answer(req), resp) => {
                prop_assert!(answers(req, resp), "{:?} answered with {:?}", req, resp);
                match resp {
                    Body::LoggedIn(l) => *token = l.token.to_vec(),
                    Body::Done(_) if matches!(req, Body::Logout(_)) => may_close = true,
                    _ => {}
                }
            }
            (Expect::Error(code), other) => {
                return Err(TestCaseError::fail(format!(
                    "expected {code:?}, got {other:?}"
                )))
            }
        }
    }
    if !pending.is_empty() {
        prop_assert!(
            may_close,
            "the server closed the connection without a reason, {} requests unanswered",
            pending.len()
        );
    }
    Ok(())
}

#[test]
fn session_fuzz_random_requests_never_hurt_the_server_or_others() {
    let server = TestServer::start(2);
    let (alice, a) = server.user("alice");
    let (bob, b) = server.user("bob");
    let (fuzzer, f) = server.user("fuzzer");
    bob.sync(None).unwrap();
    let group = alice.create_group("fuzzed", &[b.user_id]).unwrap().group_id;
    let own_group = fuzzer.create_group("own", &[b.user_id]).unwrap().group_id;
    let spec = chat_client::MediaSpec {
        kind: pb::MediaKind::Image,
        mime_type: "image/jpeg".into(),
        ..Default::default()
    };
    let asset = alice.upload(b"a picture for bob", &spec).unwrap();
    alice.send_media(b.user_id, &asset, "").unwrap();
    let own_asset = fuzzer.upload(b"the fuzzer's own picture", &spec).unwrap();
    let data = b"an upload in progress";
    let upload = fuzzer
        .upload_start(data.len() as u64, &chat_client::sha256(data), &spec)
        .unwrap();
    drop((alice, fuzzer));
    let world = World {
        users: vec![f.user_id, a.user_id, b.user_id, 0x5eed_0000_0000_0001],
        groups: vec![group, own_group],
        assets: vec![asset.asset_id.to_vec(), own_asset.asset_id.to_vec()],
        uploads: vec![upload.upload_id.to_vec()],
        names: vec!["fuzzer".into(), "alice".into(), "bob".into()],
    };

    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(32);
    let mut runner = TestRunner::new(Config {
        cases,
        max_shrink_iters: 200,
        failure_persistence: None,
        ..Config::default()
    });
    let token = std::cell::RefCell::new(f.token.to_vec());
    let round = std::cell::Cell::new(0u64);
    let result = runner.run(&sequence(&world), |ops| {
        run_case(&server, &mut token.borrow_mut(), &ops)?;
        // A well-behaved client still logs in, sends, and is received by a connection that
        // stayed open all along.
        round.set(round.get() + 1);
        let text = format!("still fine {}", round.get());
        // (Also keeps bob's connection from the idle timeout in long runs.)
        bob.ping().unwrap();
        let (alice, _) = server.login("alice");
        alice.send_message(b.user_id, &text).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let event = bob.next_event(left).unwrap();
            prop_assert!(event.is_some(), "bob did not receive {:?}", text);
            if let Some(pb::event::Kind::Message(m)) = event.and_then(|e| e.kind) {
                if m.from_user_id == a.user_id && m.text == text {
                    break;
                }
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
