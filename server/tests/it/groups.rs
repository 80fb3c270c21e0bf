//! Groups: membership rules, outsiders refused, one order for every member, offline members,
//! history, restarts, and a group of 10 000.

use std::time::Duration;

use chat_client::{pb, Connection};
use pb::{event::Kind, ErrorCode, GroupRole};

use crate::support::{code, name_on_shard, next_event, password, seed_users, TestServer};

fn members(g: &pb::Group) -> Vec<(u64, GroupRole)> {
    let mut m: Vec<_> = g.members.iter().map(|m| (m.user_id, m.role())).collect();
    m.sort_unstable();
    m
}

/// What a member's stream shows of a group: (group seq, description), in arrival order.
/// Receipts, and the member's own sent and read events, in between are skipped.
fn group_events(conn: &Connection, n: usize) -> Vec<(u64, String)> {
    let mut seen = Vec::with_capacity(n);
    while seen.len() < n {
        match next_event(conn).kind {
            Some(Kind::Message(m)) => {
                assert_ne!(m.group_id, 0, "a group message");
                seen.push((m.seq, format!("{}:{}", m.from_user_id, m.text)));
            }
            Some(Kind::GroupChange(c)) => {
                seen.push((c.seq, format!("{:?}{:?}", c.kind(), c.user_ids)))
            }
            Some(Kind::Receipt(_) | Kind::Sent(_) | Kind::Read(_) | Kind::MessageChange(_)) => {}
            None => panic!("event without a kind"),
        }
    }
    seen
}

fn assert_quiet(conn: &Connection) {
    let extra = conn.next_event(Duration::from_millis(300)).unwrap();
    assert!(extra.is_none(), "unexpected extra event {extra:?}");
}

#[test]
fn admins_manage_members_and_outsiders_learn_nothing() {
    let server = TestServer::start(2);
    let (alice, a) = server.user(&name_on_shard("alice", 0, 2));
    let (bob, b) = server.user(&name_on_shard("bob", 1, 2));
    let (carol, c) = server.user(&name_on_shard("carol", 1, 2));
    let (a, b, c) = (a.user_id, b.user_id, c.user_id);

    let group = alice.create_group("  friends ", &[b]).unwrap();
    let g = group.group_id;
    assert_eq!(group.name, "friends");
    assert_eq!(members(&group), {
        let mut m = vec![(a, GroupRole::Creator), (b, GroupRole::Member)];
        m.sort_unstable();
        m
    });
    assert_eq!(group.head_seq, 1, "the creation is the first entry");

    // An outsider cannot see, read, post to, join or leave the group, and cannot tell it
    // exists: the same answer as for a group id that was never used.
    for probe in [g, g ^ 1] {
        assert_eq!(code(carol.get_group(probe)), ErrorCode::GroupNotFound);
        assert_eq!(
            code(carol.send_group_message(probe, 1, "hi")),
            ErrorCode::GroupNotFound
        );
        assert_eq!(
            code(carol.group_history(probe, 0, 10)),
            ErrorCode::GroupNotFound
        );
        assert_eq!(
            code(carol.add_members(probe, &[c])),
            ErrorCode::GroupNotFound
        );
        assert_eq!(code(carol.leave_group(probe)), ErrorCode::GroupNotFound);
        assert_eq!(
            code(carol.rename_group(probe, "mine")),
            ErrorCode::GroupNotFound
        );
    }

    // A plain member may read and post but not administer.
    assert_eq!(bob.get_group(g).unwrap().group_id, g);
    assert_eq!(code(bob.add_members(g, &[c])), ErrorCode::PermissionDenied);
    assert_eq!(code(bob.remove_member(g, a)), ErrorCode::PermissionDenied);
    assert_eq!(
        code(bob.rename_group(g, "bobs")),
        ErrorCode::PermissionDenied
    );

    // Unknown users are refused by name, and nothing changes.
    assert_eq!(
        code(alice.add_members(g, &[c, 12345])),
        ErrorCode::UserNotFound
    );
    assert_eq!(
        code(alice.create_group("x", &[12345])),
        ErrorCode::UserNotFound
    );
    assert_eq!(alice.get_group(g).unwrap().members.len(), 2);

    let group = alice.add_members(g, &[c, b]).unwrap();
    assert_eq!(group.members.len(), 3, "bob was already in");
    assert_eq!(carol.get_group(g).unwrap().group_id, g);
    assert_eq!(alice.rename_group(g, "pals").unwrap().name, "pals");
    assert_eq!(code(alice.remove_member(g, 999)), ErrorCode::UserNotFound);
    let group = alice.remove_member(g, b).unwrap();
    assert_eq!(group.members.len(), 2);
    assert_eq!(
        code(bob.get_group(g)),
        ErrorCode::GroupNotFound,
        "bob is out"
    );
    assert_eq!(
        code(bob.send_group_message(g, 2, "still here?")),
        ErrorCode::GroupNotFound
    );

    // The creator leaves; carol, the only one left, becomes admin.
    let group = alice.leave_group(g).unwrap();
    assert_eq!(members(&group), vec![(c, GroupRole::Admin)]);
    assert_eq!(code(alice.get_group(g)), ErrorCode::GroupNotFound);
    assert_eq!(carol.rename_group(g, "carols").unwrap().name, "carols");
}

#[test]
fn group_size_is_limited() {
    let server = TestServer::start_with(1, |c| c.max_group_members = 3, |_| {});
    let names = ["ann", "ben", "cat", "dan"];
    let users: Vec<_> = names.iter().map(|n| server.user(n)).collect();
    let ids: Vec<u64> = users.iter().map(|(_, l)| l.user_id).collect();
    let ann = &users[0].0;
    assert_eq!(
        code(ann.create_group("big", &ids[1..])),
        ErrorCode::GroupFull
    );
    let g = ann.create_group("ok", &ids[1..3]).unwrap().group_id;
    assert_eq!(code(ann.add_members(g, &ids[3..])), ErrorCode::GroupFull);
}

#[test]
fn concurrent_senders_give_every_member_one_order_without_gaps() {
    let server = TestServer::start(2);
    let names: Vec<String> = (0..4)
        .map(|i| name_on_shard(&format!("m{i}_"), i % 2, 2))
        .collect();
    let mut online: Vec<(Connection, pb::LoggedIn)> =
        names.iter().map(|n| server.user(n)).collect();
    let ids: Vec<u64> = online.iter().map(|(_, l)| l.user_id).collect();
    let g = online[0]
        .0
        .create_group("race", &ids[1..])
        .unwrap()
        .group_id;
    // Member 3 is offline for the whole exchange.
    drop(online.pop());
    for (conn, _) in &online {
        conn.sync(None).unwrap();
    }

    const EACH: u64 = 60;
    std::thread::scope(|s| {
        for (conn, _) in &online[..2] {
            s.spawn(move || {
                for i in 1..=EACH {
                    let ack = conn.send_group_message(g, i, &format!("{i}")).unwrap();
                    assert_eq!((ack.group_id, ack.to_user_id), (g, 0));
                }
            });
        }
    });
    // Creation + 2 x EACH messages, the same sequence for everyone, group seqs 1, 2, 3, ...
    let total = 1 + 2 * EACH as usize;
    let reference = group_events(&online[0].0, total);
    let seqs: Vec<u64> = reference.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, (1..=total as u64).collect::<Vec<_>>());
    for (conn, _) in &online[1..] {
        assert_eq!(group_events(conn, total), reference);
        assert_quiet(conn);
    }
    // Each sender's own messages appear in the order they were sent.
    for sender in &ids[..2] {
        let texts: Vec<u64> = reference
            .iter()
            .filter_map(|(_, d)| d.strip_prefix(&format!("{sender}:")))
            .map(|t| t.parse().unwrap())
            .collect();
        assert_eq!(texts, (1..=EACH).collect::<Vec<_>>());
    }

    // The offline member catches up on login, with the same order.
    let (late, _) = server.login(&names[3]);
    late.sync(None).unwrap();
    assert_eq!(group_events(&late, total), reference);
    assert_quiet(&late);

    // A retried send is stored once.
    let retry = online[0].0.send_group_message(g, 1, "1").unwrap();
    assert!(retry.duplicate);
    assert_quiet(&late);
}

#[test]
fn membership_changes_are_in_the_log_and_history_pages_by_time() {
    let server = TestServer::start(2);
    let (ann, a) = server.user("ann");
    let (ben, b) = server.user("ben");
    let (_cid, c) = server.user("cid");
    let (a, b, c) = (a.user_id, b.user_id, c.user_id);
    ben.sync(None).unwrap();
    let g = ann.create_group("log", &[b]).unwrap().group_id;
    let mut stamps = Vec::new();
    for i in 1..=5 {
        stamps.push(
            ann.send_group_message(g, i, &format!("m{i}"))
                .unwrap()
                .timestamp_us,
        );
    }
    ann.add_members(g, &[c]).unwrap();
    ann.rename_group(g, "renamed").unwrap();
    ann.remove_member(g, c).unwrap();
    let seen = group_events(&ben, 9);
    let kinds: Vec<&str> = seen.iter().map(|(_, d)| d.as_str()).collect();
    assert_eq!(kinds[0], format!("Created{:?}", vec![a, b]));
    assert_eq!(kinds[1], format!("{a}:m1"));
    assert_eq!(kinds[6], format!("Added{:?}", vec![c]));
    assert_eq!(kinds[7], "Renamed[]");
    assert_eq!(kinds[8], format!("Removed{:?}", vec![c]));

    // History holds the messages only, oldest first, paged by timestamp like 1:1.
    let page = ben.group_history(g, 0, 3).unwrap();
    let texts: Vec<&str> = page.messages.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["m3", "m4", "m5"]);
    assert!(page.more);
    let page = ben
        .group_history(g, page.messages[0].timestamp_us, 10)
        .unwrap();
    let texts: Vec<&str> = page.messages.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["m1", "m2"]);
    assert!(!page.more);
    assert_eq!(page.messages[0].timestamp_us, stamps[0]);
    assert!(page
        .messages
        .iter()
        .all(|m| m.group_id == g && m.to_user_id == 0));
}

#[test]
fn offline_members_get_group_messages_after_a_restart() {
    let mut server = TestServer::start(2);
    let (ann, _) = server.user(&name_on_shard("ann", 0, 2));
    let ben_name = name_on_shard("ben", 1, 2);
    let (ben, b) = server.user(&ben_name);
    drop(ben);
    let g = ann.create_group("durable", &[b.user_id]).unwrap().group_id;
    for i in 1..=20 {
        ann.send_group_message(g, i, &format!("m{i}")).unwrap();
    }
    drop(ann);
    server.restart();
    let (ben, _) = server.login(&ben_name);
    ben.sync(None).unwrap();
    let seen = group_events(&ben, 21);
    assert_eq!(
        seen.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        (1..=21).collect::<Vec<u64>>()
    );
    assert_quiet(&ben);
    assert_eq!(ben.get_group(g).unwrap().head_seq, 21);
}

#[test]
fn a_group_of_ten_thousand_reaches_every_member_once() {
    const N: usize = 10_000;
    let mut seeded = Vec::new();
    let server = TestServer::start_with(
        2,
        |c| c.max_group_members = 10_000,
        |dir| seeded = seed_users(dir, 2, "big", N),
    );
    let login = |name: &str| {
        let conn = server.connect();
        conn.login(name, &password("big")).unwrap();
        conn
    };
    let owner = login(&seeded[0].0);
    let ids: Vec<u64> = seeded.iter().map(|(_, id)| *id).collect();
    // Created in steps: one frame with 10 000 ids would be large, and AddMembers is what a
    // growing group uses.
    let g = owner
        .create_group("everyone", &ids[1..1000])
        .unwrap()
        .group_id;
    for chunk in ids[1000..].chunks(3000) {
        owner.add_members(g, chunk).unwrap();
    }
    assert_eq!(owner.get_group(g).unwrap().members.len(), N);
    assert_eq!(
        code(owner.add_members(g, &[ids[0] + 1_000_000])),
        ErrorCode::GroupFull
    );

    // 40 members online (both shards), the rest offline.
    let online: Vec<Connection> = seeded[1..41]
        .iter()
        .map(|(name, _)| {
            let conn = login(name);
            conn.sync(None).unwrap();
            conn
        })
        .collect();
    for conn in &online {
        // Catch-up of what happened before: creation and the additions.
        while let Some(e) = conn.next_event(Duration::from_millis(200)).unwrap() {
            assert!(matches!(e.kind, Some(Kind::GroupChange(_))));
        }
    }
    let ack = owner.send_group_message(g, 1, "hello everyone").unwrap();
    let ack2 = owner.send_group_message(g, 2, "second").unwrap();
    for conn in &online {
        let seen = group_events(conn, 2);
        assert_eq!(
            seen,
            vec![
                (ack.seq, format!("{}:hello everyone", ids[0])),
                (ack2.seq, format!("{}:second", ids[0]))
            ]
        );
        assert_quiet(conn);
    }
    // A member's device acks: recorded for GetReceipts, but in a group this big no receipt
    // is pushed to the sender.
    owner.sync(None).unwrap();
    while owner
        .next_event(Duration::from_millis(300))
        .unwrap()
        .is_some()
    {}
    let head = online[0].sync(None).unwrap();
    online[0].ack(head).unwrap();
    let receipts = (0..50)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(100));
            owner.get_receipts(g, ack2.seq).unwrap()
        })
        .find(|r| !r.delivered_to.is_empty())
        .expect("the ack reaches the group's marks");
    assert_eq!(receipts.delivered_to, vec![ids[1]]);
    while let Some(e) = owner.next_event(Duration::from_millis(300)).unwrap() {
        assert!(
            !matches!(e.kind, Some(Kind::Receipt(_))),
            "no receipt pushes: {e:?}"
        );
    }

    // Offline members get both messages on login, once, after the changes since they
    // joined (their own addition first).
    for index in [5000, N - 1] {
        let conn = login(&seeded[index].0);
        conn.sync(None).unwrap();
        let chunks_after_joining = 3 - (index - 1000) / 3000;
        let seen = group_events(&conn, chunks_after_joining + 2);
        let kinds: Vec<&str> = seen.iter().map(|(_, d)| d.as_str()).collect();
        assert!(kinds[0].starts_with("Added") && kinds[0].contains(&ids[index].to_string()));
        assert_eq!(kinds[kinds.len() - 2], format!("{}:hello everyone", ids[0]));
        assert_eq!(kinds[kinds.len() - 1], format!("{}:second", ids[0]));
        assert_quiet(&conn);
    }
}

#[test]
fn leaving_answers_the_group_after_and_a_returning_creator_is_a_plain_member() {
    let server = TestServer::start(2);
    let (ann, a) = server.user(&name_on_shard("ann", 0, 2));
    let (ben, b) = server.user(&name_on_shard("ben", 1, 2));
    let (_cid, c) = server.user(&name_on_shard("cid", 0, 2));
    let (a, b, c) = (a.user_id, b.user_id, c.user_id);
    let g = ann.create_group("  club  ", &[b, c]).unwrap().group_id;
    // The name is stored trimmed, not only answered so.
    assert_eq!(ben.get_group(g).unwrap().name, "club");
    assert_eq!(ann.rename_group(g, "\tnew name ").unwrap().name, "new name");
    assert_eq!(ben.get_group(g).unwrap().name, "new name");
    // Zero ids are refused and change nothing; an empty list changes nothing.
    assert_eq!(code(ann.add_members(g, &[0])), ErrorCode::InvalidArgument);
    assert_eq!(
        code(ann.create_group("z", &[b, 0])),
        ErrorCode::InvalidArgument
    );
    assert_eq!(ann.add_members(g, &[]).unwrap().head_seq, 2);
    // Nobody but the creator is an admin while the creator is in the group.
    assert_eq!(code(ben.remove_member(g, a)), ErrorCode::PermissionDenied);

    // The creator leaves: the answer is the group after the LEFT entry (seq 3), without
    // them, with the longest-standing member made admin.
    let after = ann.leave_group(g).unwrap();
    assert_eq!(after.head_seq, 3);
    assert_eq!(members(&after), {
        let mut m = vec![(b, GroupRole::Admin), (c, GroupRole::Member)];
        m.sort_unstable();
        m
    });
    assert_eq!(code(ann.get_group(g)), ErrorCode::GroupNotFound);

    // Added back, the creator is a plain member; the new admin may remove them.
    let back = ben.add_members(g, &[a]).unwrap();
    assert!(members(&back).contains(&(a, GroupRole::Member)));
    assert!(!back.members.iter().any(|m| m.role() == GroupRole::Creator));
    assert_eq!(
        code(ann.rename_group(g, "mine")),
        ErrorCode::PermissionDenied
    );
    let without = ben.remove_member(g, a).unwrap();
    assert!(!without.members.iter().any(|m| m.user_id == a));
}
