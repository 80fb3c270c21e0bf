//! Security: tokens are revocable (Logout, LogoutAll), and an outsider gets nothing out of
//! any group, asset or history operation on data that is not theirs.

use std::time::Duration;

use bytes::Bytes;
use chat_client::{pb, ClientError, Connection, MediaSpec};
use pb::envelope::Body;
use pb::ErrorCode;

use crate::support::{code, name_on_shard, next_event, TestServer};

/// A new connection that tries to resume with `token`.
fn resume(server: &TestServer, token: &[u8]) -> Result<pb::LoggedIn, ClientError> {
    server.connect().resume(token)
}

/// Nothing more arrives on `conn`: no event, no unsolicited frame (typing, presence).
fn assert_quiet(conn: &Connection) {
    let event = conn.next_event(Duration::from_millis(300)).unwrap();
    assert!(event.is_none(), "unexpected event {event:?}");
    let frame = conn.unsolicited().try_recv();
    assert!(frame.is_err(), "unexpected frame {frame:?}");
}

#[test]
fn logout_revokes_this_connections_token_only_and_closes_it() {
    let mut server = TestServer::start(2);
    let (phone, on_phone) = server.user("alice");
    let (laptop, on_laptop) = server.login("alice");
    let (_bob, _) = server.user("bob");

    phone.logout().unwrap();
    assert!(
        phone.wait_closed(Duration::from_secs(10)),
        "the server closes the connection after Done"
    );
    assert!(matches!(phone.ping(), Err(ClientError::Closed)));
    assert_eq!(
        code(resume(&server, &on_phone.token)),
        ErrorCode::BadCredentials
    );
    // The other device keeps its connection and its token.
    laptop.ping().unwrap();
    let bob_id = laptop.lookup("bob").unwrap();
    laptop.send_message(bob_id, "still here").unwrap();
    let again = resume(&server, &on_laptop.token).unwrap();
    assert_eq!(again.user_id, on_laptop.user_id);

    // Revocation is durable; the surviving token survives too.
    drop(laptop);
    server.restart();
    assert_eq!(
        code(resume(&server, &on_phone.token)),
        ErrorCode::BadCredentials
    );
    let laptop = server.connect();
    assert_eq!(
        laptop.resume(&on_laptop.token).unwrap().user_id,
        on_laptop.user_id
    );
    laptop.ping().unwrap();
}

#[test]
fn requests_after_logout_do_not_act_for_the_user() {
    let server = TestServer::start(2);
    let (alice, _) = server.user(&name_on_shard("alice", 0, 2));
    let (bob, on_bob) = server.user(&name_on_shard("bob", 1, 2));
    bob.sync(None).unwrap();
    // Logout and a send pipelined behind it: the send is refused or unanswered, never
    // stored.
    let logout = alice.start(Body::Logout(pb::Logout {})).unwrap();
    let send = alice.start(Body::SendMessage(pb::SendMessage {
        to_user_id: on_bob.user_id,
        client_msg_id: 1,
        text: "after logout".into(),
        media: None,
        ..Default::default()
    }));
    assert!(matches!(alice.finish(logout), Ok(Body::Done(_))));
    if let Ok(send) = send {
        match alice.finish(send) {
            Err(ClientError::Closed) => {}
            Err(e) => assert_eq!(e.code(), Some(ErrorCode::Unauthenticated)),
            Ok(other) => panic!("a send after logout was answered with {other:?}"),
        }
    }
    assert!(alice.wait_closed(Duration::from_secs(10)));
    assert_quiet(&bob);
}

#[test]
fn logout_all_revokes_every_device_and_login_still_works() {
    let mut server = TestServer::start(2);
    let (phone, on_phone) = server.user("alice");
    let (laptop, on_laptop) = server.login("alice");
    let (_bob, on_bob) = server.user("bob");

    phone.logout_all().unwrap();
    // Open connections stay open and usable, this one too.
    phone.ping().unwrap();
    laptop.send_message(on_bob.user_id, "still open").unwrap();
    phone.send_message(on_bob.user_id, "me too").unwrap();
    for token in [&on_phone.token, &on_laptop.token] {
        assert_eq!(code(resume(&server, token)), ErrorCode::BadCredentials);
    }
    // A fresh login right away gets a token that works.
    let (_tablet, on_tablet) = server.login("alice");
    assert_eq!(
        resume(&server, &on_tablet.token).unwrap().user_id,
        on_tablet.user_id
    );
    // LogoutAll again, then log in again: only the newest token works.
    laptop.logout_all().unwrap();
    let (_desk, on_desk) = server.login("alice");
    assert_eq!(
        code(resume(&server, &on_tablet.token)),
        ErrorCode::BadCredentials
    );
    resume(&server, &on_desk.token).unwrap();

    drop((phone, laptop));
    server.restart();
    for token in [&on_phone.token, &on_laptop.token, &on_tablet.token] {
        assert_eq!(code(resume(&server, token)), ErrorCode::BadCredentials);
    }
    assert_eq!(
        resume(&server, &on_desk.token).unwrap().user_id,
        on_desk.user_id
    );
    let (_, after_restart) = server.login("alice");
    resume(&server, &after_restart.token).unwrap();
}

fn image() -> MediaSpec {
    MediaSpec {
        kind: pb::MediaKind::Image,
        mime_type: "image/png".into(),
        width: 8,
        height: 8,
        file_name: "secret.png".into(),
        ..Default::default()
    }
}

#[test]
fn an_outsider_is_refused_every_group_asset_and_history_operation() {
    let mut server = TestServer::start(2);
    let (alice, a) = server.user(&name_on_shard("alice", 0, 2));
    let (bob, b) = server.user(&name_on_shard("bob", 1, 2));
    let (mallory, m) = server.user(&name_on_shard("mallory", 1, 2));
    let (a, b, m) = (a.user_id, b.user_id, m.user_id);
    bob.sync(None).unwrap();

    // Alice and bob: a group with a message and a picture, a 1:1 chat with a picture,
    // and an upload of alice's that is still in progress.
    let g = alice.create_group("private", &[b]).unwrap().group_id;
    let said = alice.send_group_message(g, 1, "group secret").unwrap();
    let group_photo: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
    let group_media = alice.upload(&group_photo, &image()).unwrap();
    alice.send_group_media(g, &group_media, "").unwrap();
    let photo: Vec<u8> = (0..3000u32).map(|i| (i * 13) as u8).collect();
    let media = alice.upload(&photo, &image()).unwrap();
    alice.send_media(b, &media, "for bob only").unwrap();
    alice.send_message(b, "1:1 secret").unwrap();
    bob.send_message(a, "1:1 answer").unwrap();
    let pending: Vec<u8> = (0..2000u32).map(|i| (i * 3) as u8).collect();
    let upload = alice
        .upload_start(
            pending.len() as u64,
            &chat_client::sha256(&pending),
            &image(),
        )
        .unwrap();
    // Bob's stream: the group's creation, two group messages, the picture, the text (his
    // own answer is no event: he has one device).
    for _ in 0..5 {
        next_event(&bob);
    }
    assert_quiet(&bob);
    let group_before = alice.get_group(g).unwrap();
    let history_before = alice.group_history(g, 0, 50).unwrap();

    // Groups: every operation answers as for a group that does not exist.
    let not_found = |op: &str, r: Result<(), ClientError>| {
        assert_eq!(code(r), ErrorCode::GroupNotFound, "{op}");
    };
    not_found("GetGroup", mallory.get_group(g).map(drop));
    not_found("AddMembers", mallory.add_members(g, &[m]).map(drop));
    not_found("RemoveMember", mallory.remove_member(g, b).map(drop));
    not_found("LeaveGroup", mallory.leave_group(g).map(drop));
    not_found("RenameGroup", mallory.rename_group(g, "pwned").map(drop));
    let send = mallory.send_group_message(g, 7, "hello?");
    not_found("SendGroupMessage", send.map(drop));
    not_found("GetMessages", mallory.group_history(g, 0, 50).map(drop));
    not_found("MarkRead", mallory.mark_group_read(g, said.seq));
    not_found("GetReceipts", mallory.get_receipts(g, said.seq).map(drop));
    not_found("Typing", mallory.typing(0, g, true));

    // Assets: someone else's asset, with and without the group it was seen in, and
    // someone else's upload, all look like ids that do not exist.
    for (asset, group) in [
        (&group_media.asset_id, g),
        (&group_media.asset_id, 0),
        (&media.asset_id, 0),
        (&media.asset_id, g),
    ] {
        assert_eq!(
            code(mallory.fetch_asset_range(asset, 0, 0, group)),
            ErrorCode::AssetNotFound,
            "FetchAsset group {group}"
        );
    }
    assert_eq!(
        code(mallory.send_media(b, &media, "look what I found")),
        ErrorCode::AssetNotFound
    );
    assert_eq!(
        code(mallory.send_media(a, &group_media, "")),
        ErrorCode::AssetNotFound
    );
    // To a group she is not in, with an asset that is not hers: either refusal will do.
    let refused = code(mallory.send_group_media(g, &media, ""));
    assert!(
        matches!(refused, ErrorCode::AssetNotFound | ErrorCode::GroupNotFound),
        "{refused:?}"
    );
    assert_eq!(
        code(mallory.upload_chunk(&upload.upload_id, 0, &pending[..100])),
        ErrorCode::AssetNotFound
    );
    assert_eq!(
        code(mallory.upload_finish(&upload.upload_id)),
        ErrorCode::AssetNotFound
    );

    // History: the 1:1 conversations of others show nothing of theirs.
    for peer in [a, b] {
        let page = mallory.history(peer, 0, 200).unwrap();
        assert!(page.messages.is_empty(), "{:?}", page.messages);
        assert!(!page.more);
    }

    // Nothing changed: the group, its log, bob's stream, alice's upload, mallory's inbox.
    assert_eq!(alice.get_group(g).unwrap(), group_before);
    assert_eq!(alice.group_history(g, 0, 50).unwrap(), history_before);
    let receipts = alice.get_receipts(g, said.seq).unwrap();
    assert!(!receipts.delivered_to.contains(&m) && !receipts.read_by.contains(&m));
    assert_quiet(&bob);
    assert!(bob.history(m, 0, 10).unwrap().messages.is_empty());
    assert_eq!(
        alice.upload_from(&pending, &upload, u64::MAX).unwrap(),
        2000
    );
    alice.upload_finish(&upload.upload_id).unwrap();
    assert_eq!(mallory.sync(None).unwrap(), 0, "mallory received nothing");
    assert_quiet(&mallory);
    // The members still have all of it.
    assert_eq!(bob.fetch_asset(&group_media, g).unwrap(), group_photo);
    assert_eq!(bob.fetch_asset(&media, 0).unwrap(), photo);
    assert_eq!(bob.history(a, 0, 10).unwrap().messages.len(), 3);
    // Raw requests the client library has no method for get the same answers.
    let raw = mallory.request(Body::FetchAsset(pb::FetchAsset {
        asset_id: Bytes::copy_from_slice(&media.asset_id),
        offset: 0,
        length: 1,
        group_id: g,
    }));
    assert_eq!(code(raw), ErrorCode::AssetNotFound);
    // Not even mallory's own read marker for the group was written.
    drop((alice, bob, mallory));
    server.stop();
    let store = chat_storage::Store::open(
        &server.dir.path().join("shard-1"),
        chat_storage::Durability::Wal,
    )
    .unwrap();
    assert_eq!(store.read_marker(m, true, g).unwrap(), 0);
}
