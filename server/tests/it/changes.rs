//! Messages after sending: delete for everyone and for me, edit, reply and react, 1:1 and in
//! groups, to devices online and offline, across restarts, and the rules about who may.

use std::time::Duration;

use chat_client::{pb, Chat, Connection, MediaSpec};
use pb::event::Kind;
use pb::MessageChangeKind as K;

use crate::support::{code, name_on_shard, next_event, TestServer};

/// The next message change on `conn` (other events are skipped).
fn next_change(conn: &Connection) -> pb::MessageChange {
    loop {
        if let Some(Kind::MessageChange(c)) = next_event(conn).kind {
            return c;
        }
    }
}

/// Every event queued on `conn` until it stays quiet.
fn drain(conn: &Connection) -> Vec<pb::Event> {
    let mut events = Vec::new();
    while let Some(e) = conn.next_event(Duration::from_millis(400)).unwrap() {
        events.push(e);
    }
    events
}

/// Events on `conn` up to and including the `n`th message change, then whatever else
/// follows at once.
fn until_changes(conn: &Connection, n: usize) -> Vec<pb::Event> {
    let mut events = Vec::new();
    let mut seen = 0;
    while seen < n {
        let e = next_event(conn);
        seen += usize::from(matches!(e.kind, Some(Kind::MessageChange(_))));
        events.push(e);
    }
    events.extend(drain(conn));
    events
}

fn changes(events: &[pb::Event]) -> Vec<(K, u64, u64, String)> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(Kind::MessageChange(c)) => Some((
                c.kind(),
                c.actor_user_id,
                c.message_us,
                format!("{}{}", c.text, c.emoji),
            )),
            _ => None,
        })
        .collect()
}

fn image() -> MediaSpec {
    MediaSpec {
        kind: pb::MediaKind::Image,
        mime_type: "image/png".into(),
        width: 10,
        height: 10,
        ..Default::default()
    }
}

/// The message with id `id` in a history page.
fn find(page: &pb::Messages, id: u64) -> Option<pb::Message> {
    page.messages.iter().find(|m| m.timestamp_us == id).cloned()
}

#[test]
fn one_to_one_edits_reactions_replies_and_deletions_reach_every_device() {
    let mut server = TestServer::start(2);
    let alice_name = name_on_shard("alice", 0, 2);
    let bob_name = name_on_shard("bob", 1, 2);
    let (alice, a) = server.user(&alice_name);
    let (bob, b) = server.user(&bob_name);
    let (a, b) = (a.user_id, b.user_id);
    // Alice has a second device (a tablet, offline), so what she sends is a sent event too.
    drop(server.login(&alice_name));
    // Bob's laptop is offline through all of it.
    let (laptop, laptop_login) = server.login(&bob_name);
    let laptop_seen = laptop.sync(None).unwrap();
    drop(laptop);
    alice.sync(None).unwrap();
    bob.sync(None).unwrap();

    let photo: Vec<u8> = (0..4000u32).map(|i| (i * 7) as u8).collect();
    let media = alice.upload(&photo, &image()).unwrap();
    let with_photo = alice.send_media(b, &media, "look").unwrap();
    let typo = alice.send_message(b, "helo bob").unwrap();
    drain(&bob);
    drain(&alice);

    // An edit: bob (and alice's own devices) hear of it; history shows the latest text.
    alice
        .edit_message(Chat::User(b), typo.timestamp_us, "hello bob")
        .unwrap();
    for conn in [&bob, &alice] {
        let c = next_change(conn);
        assert_eq!(c.kind(), K::Edited);
        assert_eq!((c.from_user_id, c.to_user_id, c.group_id), (a, b, 0));
        assert_eq!((c.message_us, c.message_seq), (typo.timestamp_us, typo.seq));
        assert_eq!((c.actor_user_id, c.text.as_str()), (a, "hello bob"));
    }
    for page in [
        bob.history(a, 0, 50).unwrap(),
        alice.history(b, 0, 50).unwrap(),
    ] {
        let m = find(&page, typo.timestamp_us).unwrap();
        assert_eq!(m.text, "hello bob");
        assert!(m.edited_us > typo.timestamp_us);
    }

    // Reactions: one per user, replaced, removed.
    bob.react(Chat::User(a), typo.timestamp_us, "👍").unwrap();
    bob.react(Chat::User(a), typo.timestamp_us, "❤️").unwrap();
    alice.react(Chat::User(b), typo.timestamp_us, "😂").unwrap();
    let m = find(&alice.history(b, 0, 50).unwrap(), typo.timestamp_us).unwrap();
    let reactions: Vec<(u64, &str)> = m
        .reactions
        .iter()
        .map(|r| (r.user_id, r.emoji.as_str()))
        .collect();
    assert_eq!(reactions, [(b, "❤️"), (a, "😂")]);
    alice.react(Chat::User(b), typo.timestamp_us, "").unwrap();
    alice.react(Chat::User(b), typo.timestamp_us, "").unwrap(); // nothing to remove
    let m = find(&bob.history(a, 0, 50).unwrap(), typo.timestamp_us).unwrap();
    assert_eq!(m.reactions.len(), 1);
    assert_eq!(
        changes(&until_changes(&alice, 4)),
        [
            (K::Reaction, b, typo.timestamp_us, "👍".to_string()),
            (K::Reaction, b, typo.timestamp_us, "❤️".to_string()),
            (K::Reaction, a, typo.timestamp_us, "😂".to_string()),
            (K::Reaction, a, typo.timestamp_us, String::new()),
        ]
    );

    // A reply quotes a message of the conversation.
    let answer = bob.send_reply(a, typo.timestamp_us, "hi alice").unwrap();
    let m = find(&alice.history(b, 0, 50).unwrap(), answer.timestamp_us).unwrap();
    assert_eq!(m.reply_to_us, typo.timestamp_us);
    assert_eq!(
        code(bob.send_reply(a, 12345, "to nothing")),
        pb::ErrorCode::MessageNotFound
    );

    // Delete for everyone: the photo is gone, for the recipient's media too.
    drain(&bob);
    assert_eq!(
        bob.fetch_asset_range(&media.asset_id, 0, 100, 0)
            .unwrap()
            .size,
        4000
    );
    alice
        .delete_message(Chat::User(b), with_photo.timestamp_us, true)
        .unwrap();
    let c = next_change(&bob);
    assert_eq!(
        (c.kind(), c.message_us),
        (K::Deleted, with_photo.timestamp_us)
    );
    let m = find(&bob.history(a, 0, 50).unwrap(), with_photo.timestamp_us).unwrap();
    assert!(m.deleted && m.text.is_empty() && m.media.is_none());
    assert_eq!(
        code(bob.fetch_asset_range(&media.asset_id, 0, 100, 0)),
        pb::ErrorCode::AssetNotFound
    );
    // The sender keeps their upload; deleting again is done already.
    alice.fetch_asset_range(&media.asset_id, 0, 100, 0).unwrap();
    alice
        .delete_message(Chat::User(b), with_photo.timestamp_us, true)
        .unwrap();
    // A deleted message can be neither edited, nor reacted to, nor replied to.
    assert_eq!(
        code(alice.edit_message(Chat::User(b), with_photo.timestamp_us, "again")),
        pb::ErrorCode::MessageNotFound
    );
    assert_eq!(
        code(bob.react(Chat::User(a), with_photo.timestamp_us, "👍")),
        pb::ErrorCode::MessageNotFound
    );
    assert_eq!(
        code(bob.send_reply(a, with_photo.timestamp_us, "what was it?")),
        pb::ErrorCode::MessageNotFound
    );

    // Delete for me: gone from bob's history only; his devices hear of it.
    bob.delete_message(Chat::User(a), answer.timestamp_us, false)
        .unwrap();
    let c = next_change(&bob);
    assert_eq!((c.kind(), c.actor_user_id), (K::Hidden, b));
    assert!(find(&bob.history(a, 0, 50).unwrap(), answer.timestamp_us).is_none());
    assert!(find(&alice.history(b, 0, 50).unwrap(), answer.timestamp_us).is_some());
    assert!(
        changes(&drain(&alice))
            .iter()
            .all(|(kind, ..)| *kind != K::Hidden),
        "nobody else hears of it"
    );

    // Only the sender edits or deletes for everyone; outsiders cannot even see it.
    assert_eq!(
        code(bob.edit_message(Chat::User(a), typo.timestamp_us, "hacked")),
        pb::ErrorCode::PermissionDenied
    );
    assert_eq!(
        code(bob.delete_message(Chat::User(a), typo.timestamp_us, true)),
        pb::ErrorCode::PermissionDenied
    );
    let (carol, _) = server.user("carol");
    for with in [a, b] {
        let chat = Chat::User(with);
        let ts = typo.timestamp_us;
        assert_eq!(
            code(carol.edit_message(chat, ts, "x")),
            pb::ErrorCode::MessageNotFound
        );
        assert_eq!(
            code(carol.delete_message(chat, ts, true)),
            pb::ErrorCode::MessageNotFound
        );
        assert_eq!(
            code(carol.delete_message(chat, ts, false)),
            pb::ErrorCode::MessageNotFound
        );
        assert_eq!(
            code(carol.react(chat, ts, "👍")),
            pb::ErrorCode::MessageNotFound
        );
    }
    assert_eq!(
        code(alice.edit_message(Chat::User(b), typo.timestamp_us + 1, "x")),
        pb::ErrorCode::MessageNotFound
    );
    assert_eq!(
        code(alice.edit_message(Chat::User(b), typo.timestamp_us, "")),
        pb::ErrorCode::InvalidArgument
    );
    assert_eq!(
        code(alice.react(Chat::User(b), typo.timestamp_us, "two words")),
        pb::ErrorCode::InvalidArgument
    );

    // Bob's laptop comes back after a restart: it catches up with every change in order,
    // and what it replays of the deleted message has no content.
    drop((alice, bob, carol));
    server.restart();
    let laptop = server.connect();
    laptop.resume(&laptop_login.token).unwrap();
    laptop.sync(Some(laptop_seen)).unwrap();
    let events = drain(&laptop);
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "no gaps: {seqs:?}"
    );
    let kinds: Vec<K> = changes(&events).iter().map(|c| c.0).collect();
    assert_eq!(
        kinds,
        [
            K::Edited,
            K::Reaction,
            K::Reaction,
            K::Reaction,
            K::Reaction,
            K::Deleted,
            K::Hidden
        ]
    );
    let replayed: Vec<pb::Message> = events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(Kind::Message(m)) if m.timestamp_us == with_photo.timestamp_us => Some(m.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(replayed.len(), 1);
    assert!(replayed[0].deleted && replayed[0].text.is_empty() && replayed[0].media.is_none());
    let page = laptop.history(a, 0, 50).unwrap();
    assert_eq!(find(&page, typo.timestamp_us).unwrap().text, "hello bob");
    assert!(find(&page, with_photo.timestamp_us).unwrap().deleted);
    assert!(find(&page, answer.timestamp_us).is_none());
    // Alice's sent events show her messages as they are now.
    let (alice, _) = server.login(&alice_name);
    alice.sync(Some(0)).unwrap();
    let sent: Vec<pb::Message> = drain(&alice)
        .into_iter()
        .filter_map(|e| match e.kind {
            Some(Kind::Sent(m)) => Some(m),
            _ => None,
        })
        .collect();
    assert_eq!(sent.len(), 2);
    assert!(sent[0].deleted);
    assert_eq!(sent[1].text, "hello bob");
}

#[test]
fn the_edit_and_delete_windows_close() {
    let server = TestServer::start_with(
        1,
        |c| {
            c.edit_window_s = 1;
            c.delete_window_s = 2;
        },
        |_| {},
    );
    let (alice, _) = server.user("alice");
    let (bob, b) = server.user("bob");
    let b = b.user_id;
    let sent = alice.send_message(b, "quick").unwrap();
    alice
        .edit_message(Chat::User(b), sent.timestamp_us, "quick!")
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        code(alice.edit_message(Chat::User(b), sent.timestamp_us, "too late")),
        pb::ErrorCode::TooLate
    );
    alice
        .delete_message(Chat::User(b), sent.timestamp_us, false)
        .unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        code(alice.delete_message(Chat::User(b), sent.timestamp_us, true)),
        pb::ErrorCode::TooLate
    );
    // Reactions and deleting for oneself have no window.
    bob.react(Chat::User(alice_id(&bob)), sent.timestamp_us, "👍")
        .unwrap();
    bob.delete_message(Chat::User(alice_id(&bob)), sent.timestamp_us, false)
        .unwrap();
}

fn alice_id(conn: &Connection) -> u64 {
    conn.lookup("alice").unwrap()
}

#[test]
fn group_messages_are_edited_reacted_to_and_deleted_for_every_member() {
    let mut server = TestServer::start(3);
    let (ann, a) = server.user(&name_on_shard("ann", 0, 3));
    let (ben, b) = server.user(&name_on_shard("ben", 1, 3));
    let cid_name = name_on_shard("cid", 2, 3);
    let (cid, c) = server.user(&cid_name);
    let (a, b, c) = (a.user_id, b.user_id, c.user_id);
    let group = ann.create_group("club", &[b, c]).unwrap().group_id;
    let cid_seen = cid.sync(None).unwrap();
    let cid_token = server.login(&cid_name).1.token;
    drop(cid); // cid is offline through all of it
    ann.sync(None).unwrap();
    ben.sync(None).unwrap();

    let photo: Vec<u8> = (0..3000u32).map(|i| (i * 13) as u8).collect();
    let media = ann.upload(&photo, &image()).unwrap();
    let pic = ann.send_group_media(group, &media, "us").unwrap();
    let msg = ann.send_group_message(group, 1, "meet at 8").unwrap();
    drain(&ann);
    drain(&ben);

    let g = Chat::Group(group);
    ann.edit_message(g, msg.timestamp_us, "meet at 9").unwrap();
    ben.react(g, msg.timestamp_us, "👍").unwrap();
    let reply = ben.send_group_reply(group, msg.timestamp_us, "ok").unwrap();
    assert_eq!(
        ben.fetch_asset_range(&media.asset_id, 0, 10, group)
            .unwrap()
            .size,
        3000
    );
    ann.delete_message(g, pic.timestamp_us, true).unwrap();
    // Everyone online hears of all of it, as group log entries with their own group seqs.
    for conn in [&ann, &ben] {
        let events = until_changes(conn, 3);
        assert_eq!(
            changes(&events),
            [
                (K::Edited, a, msg.timestamp_us, "meet at 9".to_string()),
                (K::Reaction, b, msg.timestamp_us, "👍".to_string()),
                (K::Deleted, a, pic.timestamp_us, String::new()),
            ]
        );
        let group_seqs: Vec<u64> = events
            .iter()
            .filter_map(|e| match &e.kind {
                Some(Kind::MessageChange(c)) => Some(c.seq),
                Some(Kind::Message(m)) => Some(m.seq),
                _ => None,
            })
            .collect();
        assert!(
            group_seqs.windows(2).all(|w| w[1] == w[0] + 1),
            "{group_seqs:?}"
        );
    }
    // The picture's grant to the group is gone.
    assert_eq!(
        code(ben.fetch_asset_range(&media.asset_id, 0, 10, group)),
        pb::ErrorCode::AssetNotFound
    );
    let page = ben.group_history(group, 0, 50).unwrap();
    let edited = find(&page, msg.timestamp_us).unwrap();
    assert_eq!(edited.text, "meet at 9");
    assert!(edited.edited_us > 0);
    assert_eq!(edited.reactions.len(), 1);
    assert!(find(&page, pic.timestamp_us).unwrap().deleted);
    assert_eq!(
        find(&page, reply.timestamp_us).unwrap().reply_to_us,
        msg.timestamp_us
    );
    assert_eq!(
        page.messages.len(),
        3,
        "changes are not messages of the history"
    );

    // Rules: only the sender; outsiders see nothing; replies stay in the group.
    assert_eq!(
        code(ben.edit_message(g, msg.timestamp_us, "no")),
        pb::ErrorCode::PermissionDenied
    );
    let (mallory, _) = server.user("mallory");
    assert_eq!(
        mallory.get_group(group).err().and_then(|e| e.code()),
        Some(pb::ErrorCode::GroupNotFound)
    );
    for op in [
        mallory.react(g, msg.timestamp_us, "👍"),
        mallory.edit_message(g, msg.timestamp_us, "x"),
        mallory.delete_message(g, msg.timestamp_us, true),
        mallory.delete_message(g, msg.timestamp_us, false),
        ann.react(Chat::Group(group ^ 1), msg.timestamp_us, "👍"),
    ] {
        assert_eq!(code(op), pb::ErrorCode::MessageNotFound);
    }
    let (other, _) = server.user("otto");
    let elsewhere = other.create_group("other", &[a]).unwrap().group_id;
    assert_eq!(
        code(ann.send_group_reply(elsewhere, msg.timestamp_us, "wrong group")),
        pb::ErrorCode::MessageNotFound
    );

    // Delete for me in a group: only ben's history loses it.
    ben.delete_message(g, reply.timestamp_us, false).unwrap();
    assert!(find(
        &ben.group_history(group, 0, 50).unwrap(),
        reply.timestamp_us
    )
    .is_none());
    assert!(find(
        &ann.group_history(group, 0, 50).unwrap(),
        reply.timestamp_us
    )
    .is_some());

    // Cid comes back after a restart: every change in group order, and the deleted picture
    // replays without its content.
    drop((ann, ben, mallory, other));
    server.restart();
    let cid = server.connect();
    cid.resume(&cid_token).unwrap();
    cid.sync(Some(cid_seen)).unwrap();
    let events = drain(&cid);
    assert_eq!(
        changes(&events).iter().map(|c| c.0).collect::<Vec<_>>(),
        [K::Edited, K::Reaction, K::Deleted]
    );
    let replayed = events
        .iter()
        .find_map(|e| match &e.kind {
            Some(Kind::Message(m)) if m.timestamp_us == pic.timestamp_us => Some(m.clone()),
            _ => None,
        })
        .unwrap();
    assert!(replayed.deleted && replayed.media.is_none());
    let page = cid.group_history(group, 0, 50).unwrap();
    assert_eq!(find(&page, msg.timestamp_us).unwrap().text, "meet at 9");
    assert!(
        find(&page, reply.timestamp_us).is_some(),
        "hidden for ben only"
    );
}
