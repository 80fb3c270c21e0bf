//! Presence (online state, last seen, subscriptions, visibility, debounce) and typing.

use std::time::Duration;

use chat_client::{pb, Connection};
use pb::envelope::Body;

use crate::support::{name_on_shard, TestServer};

/// The next ephemeral push on `conn`, if one arrives within `wait`.
fn next_push(conn: &Connection, wait: Duration) -> Option<Body> {
    conn.unsolicited()
        .recv_timeout(wait)
        .ok()
        .and_then(|env| env.body)
}

fn presence_update(conn: &Connection) -> pb::Presence {
    match next_push(conn, Duration::from_secs(10)) {
        Some(Body::PresenceUpdate(u)) => u.presence.expect("a presence"),
        other => panic!("expected a presence update, got {other:?}"),
    }
}

#[test]
fn subscribers_see_online_offline_and_last_seen_survives_a_restart() {
    let mut server = TestServer::start(2);
    let alice_name = name_on_shard("alice", 0, 2);
    let bob_name = name_on_shard("bob", 1, 2);
    let (alice, a) = server.user(&alice_name);
    let (bob, b) = server.user(&bob_name);
    let (_carol, c) = server.user("carol");
    let (a, b, c) = (a.user_id, b.user_id, c.user_id);
    // A conversation makes them contacts; carol is a stranger to both.
    alice.send_message(b, "hi").unwrap();

    let snapshot = alice.subscribe_presence(&[b, c, 999]).unwrap();
    assert_eq!(snapshot.len(), 3, "one answer per id, in order");
    assert_eq!(
        (snapshot[0].user_id, snapshot[0].online, snapshot[0].hidden),
        (b, true, false)
    );
    assert_eq!((snapshot[1].user_id, snapshot[1].hidden), (c, true));
    assert_eq!(
        (snapshot[2].user_id, snapshot[2].hidden),
        (999, true),
        "unknown ids look hidden"
    );

    drop(bob);
    let update = presence_update(&alice);
    assert_eq!((update.user_id, update.online), (b, false));
    assert!(update.last_seen_us > 0);
    let last_seen = update.last_seen_us;

    let (bob, _) = server.login(&bob_name);
    let update = presence_update(&alice);
    assert_eq!((update.user_id, update.online), (b, true));
    assert!(bob.get_presence(&[a]).unwrap()[0].online);
    drop(bob);
    let gone = presence_update(&alice);
    assert!(!gone.online && gone.last_seen_us >= last_seen);

    drop(alice);
    server.restart();
    let (alice, _) = server.login(&alice_name);
    let p = alice.get_presence(&[b]).unwrap();
    assert_eq!((p[0].online, p[0].last_seen_us), (false, gone.last_seen_us));
}

#[test]
fn a_flapping_connection_causes_no_updates() {
    let server = TestServer::start(1);
    let (ann, _) = server.user("ann");
    let (ben, b) = server.user("ben");
    ben.send_message(ann.lookup("ann").unwrap(), "hello")
        .unwrap();
    ann.subscribe_presence(&[b.user_id]).unwrap();
    let mut ben = ben;
    for _ in 0..5 {
        drop(ben);
        ben = server.login("ben").0;
    }
    // Every drop was followed by a return within the debounce: nothing to report.
    assert_eq!(next_push(&ann, Duration::from_secs(3)), None);
}

#[test]
fn visibility_follows_settings_and_shared_groups() {
    let server = TestServer::start(2);
    let (viewer, _) = server.user("viewer");
    let (member, m) = server.user("member");
    let (private, p) = server.user("private");
    let (public, q) = server.user("public");
    let (m, p, q) = (m.user_id, p.user_id, q.user_id);
    // A shared group makes contacts, as a 1:1 conversation does.
    member
        .create_group("club", &[viewer.lookup("viewer").unwrap(), p])
        .unwrap();
    private
        .set_settings(None, Some(pb::PresenceVisibility::Nobody))
        .unwrap();
    let settings = public
        .set_settings(None, Some(pb::PresenceVisibility::Everyone))
        .unwrap();
    assert_eq!(
        settings.presence_visibility(),
        pb::PresenceVisibility::Everyone
    );
    // Visible at once: CreateGroup answered after every member's shard knew the group.
    let seen = viewer.get_presence(&[m, p, q]).unwrap();
    let hidden: Vec<bool> = seen.iter().map(|p| p.hidden).collect();
    assert_eq!(
        hidden,
        [false, true, false],
        "group contact, nobody, everyone"
    );
    assert!(seen[0].online && seen[2].online);
    assert!(!seen[1].online, "hidden users look offline");
}

#[test]
fn typing_reaches_online_peers_and_is_never_stored() {
    let server = TestServer::start(2);
    let (ann, a) = server.user(&name_on_shard("ann", 0, 2));
    let (ben, b) = server.user(&name_on_shard("ben", 1, 2));
    let (cid, c) = server.user("cid");
    let (outsider, _) = server.user("outsider");
    let (a, b, c) = (a.user_id, b.user_id, c.user_id);
    ben.sync(None).unwrap();
    // No visibility rule: a stranger's typing arrives, even with presence hidden.
    ann.set_settings(None, Some(pb::PresenceVisibility::Nobody))
        .unwrap();
    ann.typing(b, 0, true).unwrap();
    match next_push(&ben, Duration::from_secs(10)) {
        Some(Body::TypingUpdate(t)) => {
            assert_eq!((t.from_user_id, t.group_id, t.typing), (a, 0, true))
        }
        other => panic!("expected typing, got {other:?}"),
    }
    assert_eq!(ben.sync(None).unwrap(), 0, "nothing was stored");
    assert!(ben
        .next_event(Duration::from_millis(200))
        .unwrap()
        .is_none());

    let g = ann.create_group("t", &[b, c]).unwrap().group_id;
    cid.typing(0, g, false).unwrap();
    for conn in [&ann, &ben] {
        loop {
            match next_push(conn, Duration::from_secs(10)) {
                Some(Body::TypingUpdate(t)) if t.group_id == g => {
                    assert_eq!((t.from_user_id, t.typing), (c, false));
                    break;
                }
                Some(_) => continue,
                None => panic!("no group typing push"),
            }
        }
    }
    assert_eq!(
        next_push(&cid, Duration::from_millis(300)),
        None,
        "not to the typist"
    );
    assert_eq!(
        outsider.typing(0, g, true).unwrap_err().code(),
        Some(pb::ErrorCode::GroupNotFound)
    );
    assert_eq!(
        ann.typing(424242, 0, true).unwrap_err().code(),
        Some(pb::ErrorCode::UserNotFound)
    );
}

#[test]
fn hiding_presence_silences_existing_subscriptions() {
    let server = TestServer::start(2);
    let (watcher, _) = server.user("watcher");
    let (target, t) = server.user("target");
    watcher.send_message(t.user_id, "hi").unwrap();
    assert!(!watcher.subscribe_presence(&[t.user_id]).unwrap()[0].hidden);
    target
        .set_settings(None, Some(pb::PresenceVisibility::Nobody))
        .unwrap();
    drop(target);
    // The offline notice would come after the 2 s debounce; it must not come at all.
    assert_eq!(next_push(&watcher, Duration::from_secs(4)), None);
    assert!(watcher.get_presence(&[t.user_id]).unwrap()[0].hidden);
}

#[test]
fn group_members_are_contacts_as_soon_as_the_change_is_answered() {
    let server = TestServer::start(2);
    // Users on both shards in turn; the group lives on the creator's connection shard.
    for round in 0..6 {
        let user = |who: &str, shard: usize| {
            server.user(&name_on_shard(&format!("r{round}{who}"), shard, 2))
        };
        let (ann, a) = user("ann", round % 2);
        let (ben, b) = user("ben", (round + 1) % 2);
        let (cat, c) = user("cat", (round / 2) % 2);
        let (a, b, c) = (a.user_id, b.user_id, c.user_id);
        assert!(ben.get_presence(&[a]).unwrap()[0].hidden, "strangers");

        let g = ann.create_group("now", &[b]).unwrap().group_id;
        let seen = ben.get_presence(&[a]).unwrap();
        assert!(!seen[0].hidden && seen[0].online, "round {round}: {seen:?}");
        assert!(!ann.get_presence(&[b]).unwrap()[0].hidden, "round {round}");

        ann.add_members(g, &[c]).unwrap();
        assert!(!cat.get_presence(&[a]).unwrap()[0].hidden, "round {round}");

        // Out of the group (and no 1:1 conversation): no longer a contact.
        ben.leave_group(g).unwrap();
        assert!(ben.get_presence(&[a]).unwrap()[0].hidden, "round {round}");
    }
}
