//! Blocking (1:1 messages refused, typing dropped, presence hidden, groups unaffected) and
//! the contact list that presence visibility consults.

use std::time::Duration;

use chat_client::{pb, Connection};
use pb::envelope::Body;
use pb::event::Kind;
use pb::PresenceVisibility;

use crate::support::{code, name_on_shard, next_event, TestServer};

/// Unsolicited pushes that arrive on `conn` within `wait`.
fn pushes(conn: &Connection, wait: Duration) -> Vec<Body> {
    std::thread::sleep(wait);
    conn.unsolicited()
        .try_iter()
        .filter_map(|env| env.body)
        .collect()
}

/// Waits (up to 20 s) for an unsolicited push that `wanted` accepts.
fn wait_push(conn: &Connection, wanted: impl Fn(&Body) -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let env = conn
            .unsolicited()
            .recv_timeout(left)
            .expect("the push within 20 s");
        if env.body.as_ref().is_some_and(&wanted) {
            return;
        }
    }
}

fn no_message(conn: &Connection) {
    while let Some(e) = conn.next_event(Duration::from_millis(300)).unwrap() {
        assert!(
            !matches!(e.kind, Some(Kind::Message(_))),
            "unexpected {e:?}"
        );
    }
}

/// The text of the next message on `conn` from `sender`.
fn no_receipt(conn: &Connection) {
    while let Some(e) = conn.next_event(Duration::from_millis(300)).unwrap() {
        assert!(
            !matches!(e.kind, Some(Kind::Receipt(_))),
            "unexpected {e:?}"
        );
    }
}

fn next_text(conn: &Connection, sender: u64) -> String {
    loop {
        match next_event(conn).kind {
            Some(Kind::Message(m)) if m.from_user_id == sender => return m.text,
            _ => {}
        }
    }
}

/// Starts the connection's event stream at the inbox head: only new events from now on.
fn live(conn: &Connection) {
    let head = conn.sync(Some(u64::MAX - 1)).unwrap();
    conn.sync(Some(head)).unwrap();
}

fn visible(conn: &Connection, user: u64) -> bool {
    let p = conn.get_presence(&[user]).unwrap();
    !p[0].hidden
}

#[test]
fn a_blocked_user_cannot_message_type_or_see_presence_but_groups_work() {
    let mut server = TestServer::start(2);
    let ann_name = name_on_shard("ann", 0, 2);
    let ben_name = name_on_shard("ben", 1, 2);
    let (ann, a) = server.user(&ann_name);
    let (ben, b) = server.user(&ben_name);
    let (a, b) = (a.user_id, b.user_id);
    ann.sync(None).unwrap();
    ben.sync(None).unwrap();
    // They talked: each sees the other's presence, and ben watches ann.
    let before_block = ben.send_message(a, "hello").unwrap();
    assert_eq!(next_text(&ann, b), "hello");
    assert!(!ben.subscribe_presence(&[a]).unwrap()[0].hidden);

    ann.block(b).unwrap();
    ann.block(b).unwrap(); // again: no change
    let blocked = ann.list_blocked().unwrap();
    assert_eq!(blocked.len(), 1);
    assert_eq!(blocked[0].user_id, b);
    assert!(blocked[0].added_us > 0);

    // 1:1 messages are refused and nothing reaches ann.
    assert_eq!(
        code(ben.send_message(a, "are you there?")),
        pb::ErrorCode::Blocked
    );
    no_message(&ann);
    assert_eq!(ann.history(b, 0, 10).unwrap().messages.len(), 1);
    // A retry of what was stored before the block is still acked as such.
    let retry = ben
        .send_message_with_id(a, before_block.client_msg_id, "hello")
        .unwrap();
    assert!(retry.duplicate);
    assert_eq!(retry.seq, before_block.seq);
    // Nor does ben learn that ann received or read it: no receipts from her.
    ann.ack(before_block.seq).unwrap();
    ann.mark_read(b, before_block.seq).unwrap();
    no_receipt(&ben);

    // Typing is accepted and dropped.
    ben.typing(a, 0, true).unwrap();
    assert!(pushes(&ann, Duration::from_millis(300))
        .iter()
        .all(|p| !matches!(p, Body::TypingUpdate(_))));

    // Ann's presence and last seen are hidden from ben, also from his subscription.
    assert!(!visible(&ben, a));
    let snapshot = ben.subscribe_presence(&[a]).unwrap();
    assert!(snapshot[0].hidden && !snapshot[0].online && snapshot[0].last_seen_us == 0);
    drop(ann);
    std::thread::sleep(Duration::from_millis(2500)); // the offline debounce, and a margin
    assert!(pushes(&ben, Duration::from_millis(300))
        .iter()
        .all(|p| !matches!(p, Body::PresenceUpdate(_))));
    let (ann, _) = server.login(&ann_name);
    live(&ann);
    assert!(!visible(&ben, a));

    // Blocking is one way: ann may still write to ben, and see his presence.
    ann.send_message(b, "bye").unwrap();
    assert_eq!(next_text(&ben, a), "bye");
    assert!(visible(&ann, b));

    // Groups keep working, both ways, typing included.
    let group = ann.create_group("club", &[b]).unwrap();
    ben.send_group_message(group.group_id, 1, "in the group")
        .unwrap();
    assert_eq!(next_text(&ann, b), "in the group");
    ann.send_group_message(group.group_id, 2, "me too").unwrap();
    assert_eq!(next_text(&ben, a), "me too");
    let _ = pushes(&ann, Duration::ZERO);
    ben.typing(0, group.group_id, true).unwrap();
    wait_push(
        &ann,
        |p| matches!(p, Body::TypingUpdate(t) if t.from_user_id == b && t.group_id == group.group_id),
    );
    // A shared group does not make ann's presence visible to ben.
    assert!(!visible(&ben, a));

    // The block survives a restart.
    drop((ann, ben));
    server.restart();
    let (ann, _) = server.login(&ann_name);
    let (ben, _) = server.login(&ben_name);
    live(&ann);
    live(&ben);
    assert_eq!(
        code(ben.send_message(a, "after restart")),
        pb::ErrorCode::Blocked
    );
    assert_eq!(ann.list_blocked().unwrap()[0].user_id, b);

    // Unblocking restores everything.
    ann.unblock(b).unwrap();
    ann.unblock(b).unwrap(); // not blocked: no change
    assert!(ann.list_blocked().unwrap().is_empty());
    let again = ben.send_message(a, "friends again").unwrap();
    assert_eq!(next_text(&ann, b), "friends again");
    ann.mark_read(b, again.seq).unwrap();
    loop {
        if let Some(Kind::Receipt(r)) = next_event(&ben).kind {
            if r.kind() == pb::ReceiptKind::Read && r.up_to_seq == again.seq {
                break;
            }
        }
    }
    assert!(visible(&ben, a));
    let _ = pushes(&ann, Duration::ZERO);
    ben.typing(a, 0, true).unwrap();
    wait_push(
        &ann,
        |p| matches!(p, Body::TypingUpdate(t) if t.from_user_id == b),
    );

    // Bad requests.
    assert_eq!(code(ann.block(a)), pb::ErrorCode::InvalidArgument);
    assert_eq!(code(ann.block(0)), pb::ErrorCode::InvalidArgument);
    assert_eq!(code(ann.block(u64::MAX - 3)), pb::ErrorCode::UserNotFound);
    assert_eq!(code(ann.unblock(0)), pb::ErrorCode::InvalidArgument);
    assert!(ann.list_blocked().unwrap().is_empty());
}

#[test]
fn the_contact_list_widens_contacts_and_alone_decides_contact_list_visibility() {
    let mut server = TestServer::start(2);
    let cat_name = name_on_shard("cat", 1, 2);
    let (cat, c) = server.user(&cat_name);
    let (dan, d) = server.user(&name_on_shard("dan", 0, 2));
    let (eve, e) = server.user(&name_on_shard("eve", 1, 2));
    let (c, d, e) = (c.user_id, d.user_id, e.user_id);
    // Eve shares a conversation with cat; dan shares nothing.
    eve.send_message(c, "hi cat").unwrap();
    assert!(visible(&eve, c));
    assert!(!visible(&dan, c));

    // CONTACTS (the default): the contact list counts too.
    cat.add_contact(d).unwrap();
    cat.add_contact(d).unwrap(); // again: no change
    assert!(visible(&dan, c));
    assert!(visible(&eve, c));
    assert!(!dan.subscribe_presence(&[c]).unwrap()[0].hidden);

    // CONTACT_LIST: only the list.
    let s = cat
        .set_settings(None, Some(PresenceVisibility::ContactList))
        .unwrap();
    assert_eq!(s.presence_visibility(), PresenceVisibility::ContactList);
    assert!(visible(&dan, c));
    assert!(!visible(&eve, c));
    cat.add_contact(e).unwrap();
    assert!(visible(&eve, c));
    let list: Vec<u64> = cat
        .list_contacts()
        .unwrap()
        .iter()
        .map(|u| u.user_id)
        .collect();
    assert_eq!(list, [e, d], "most recent first");

    // The list survives a restart.
    drop((cat, dan, eve));
    server.restart();
    let (cat, _) = server.login(&cat_name);
    let (dan, _) = server.login(&name_on_shard("dan", 0, 2));
    assert!(visible(&dan, c));
    assert_eq!(cat.list_contacts().unwrap().len(), 2);

    // Removing, and blocking (which wins over the list).
    cat.remove_contact(d).unwrap();
    cat.remove_contact(d).unwrap(); // not a contact: no change
    assert!(!visible(&dan, c));
    cat.add_contact(d).unwrap();
    cat.block(d).unwrap();
    assert!(!visible(&dan, c));
    cat.set_settings(None, Some(PresenceVisibility::Everyone))
        .unwrap();
    assert!(!visible(&dan, c), "blocked users never see presence");
    cat.unblock(d).unwrap();
    assert!(visible(&dan, c));

    // Bad requests.
    assert_eq!(code(cat.add_contact(c)), pb::ErrorCode::InvalidArgument);
    assert_eq!(code(cat.add_contact(0)), pb::ErrorCode::InvalidArgument);
    assert_eq!(
        code(cat.add_contact(u64::MAX - 3)),
        pb::ErrorCode::UserNotFound
    );
    assert_eq!(code(cat.remove_contact(0)), pb::ErrorCode::InvalidArgument);
    // An unknown visibility value is refused.
    let unknown = pb::SetSettings {
        read_receipts: None,
        presence_visibility: Some(99),
        push_previews: None,
    };
    assert_eq!(
        code(cat.request(Body::SetSettings(unknown))),
        pb::ErrorCode::InvalidArgument
    );
}
