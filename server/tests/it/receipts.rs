//! Delivered and read receipts, 1:1 and in groups, online and offline, and the privacy
//! setting that turns read receipts off both ways.

use std::time::Duration;

use chat_client::{pb, Connection};
use pb::{event::Kind, ReceiptKind};

use crate::support::{name_on_shard, next_event, TestServer};

/// The next receipt on `conn` (other events are skipped): (by, group, kind, up_to_seq).
fn next_receipt(conn: &Connection) -> (u64, u64, ReceiptKind, u64) {
    loop {
        if let Some(Kind::Receipt(r)) = next_event(conn).kind {
            return (r.by_user_id, r.group_id, r.kind(), r.up_to_seq);
        }
    }
}

fn no_receipt(conn: &Connection) {
    while let Some(e) = conn.next_event(Duration::from_millis(300)).unwrap() {
        assert!(
            !matches!(e.kind, Some(Kind::Receipt(_))),
            "unexpected {e:?}"
        );
    }
}

#[test]
fn one_to_one_delivered_and_read_reach_the_sender_live_and_after_offline() {
    let server = TestServer::start(2);
    let (alice, a) = server.user(&name_on_shard("alice", 0, 2));
    let bob_name = name_on_shard("bob", 1, 2);
    let (bob, b) = server.user(&bob_name);
    let (a, b) = (a.user_id, b.user_id);
    alice.sync(None).unwrap();
    bob.sync(None).unwrap();
    let acks: Vec<u64> = (1..=3)
        .map(|i| alice.send_message(b, &format!("m{i}")).unwrap().seq)
        .collect();
    for _ in 0..3 {
        next_event(&bob);
    }
    // One ack covering all three: one cumulative receipt.
    bob.ack(acks[2]).unwrap();
    assert_eq!(
        next_receipt(&alice),
        (b, 0, ReceiptKind::Delivered, acks[2])
    );
    bob.mark_read(a, acks[1]).unwrap();
    assert_eq!(next_receipt(&alice), (b, 0, ReceiptKind::Read, acks[1]));
    // Marking the same or older again sends nothing.
    bob.mark_read(a, acks[0]).unwrap();
    no_receipt(&alice);

    // The sender is offline: the receipts wait in their inbox.
    drop(alice);
    bob.mark_read(a, acks[2]).unwrap();
    let (alice, _) = server.login(&name_on_shard("alice", 0, 2));
    alice.sync(None).unwrap();
    assert_eq!(
        next_receipt(&alice),
        (b, 0, ReceiptKind::Delivered, acks[2])
    );
    assert_eq!(next_receipt(&alice), (b, 0, ReceiptKind::Read, acks[1]));
    assert_eq!(next_receipt(&alice), (b, 0, ReceiptKind::Read, acks[2]));

    // Reading beyond one's own inbox is refused.
    let err = bob.mark_read(a, 1000).unwrap_err();
    assert_eq!(err.code(), Some(pb::ErrorCode::InvalidArgument));
}

#[test]
fn read_receipts_off_holds_both_ways_but_delivered_still_flows() {
    let server = TestServer::start(2);
    let (ann, a) = server.user("ann");
    let (ben, b) = server.user("ben");
    let (a, b) = (a.user_id, b.user_id);
    ann.sync(None).unwrap();
    ben.sync(None).unwrap();
    assert!(
        ben.set_settings(None, None).unwrap().read_receipts,
        "on by default"
    );
    assert!(!ben.set_settings(Some(false), None).unwrap().read_receipts);

    // Ben reads Ann's message: Ann gets "delivered" but never "read".
    let seq = ann.send_message(b, "hi ben").unwrap().seq;
    next_event(&ben);
    ben.ack(seq).unwrap();
    ben.mark_read(a, seq).unwrap();
    assert_eq!(next_receipt(&ann), (b, 0, ReceiptKind::Delivered, seq));
    no_receipt(&ann);

    // Ann reads Ben's message: Ben, who shares none, receives none either.
    let seq = ben.send_message(a, "hi ann").unwrap().seq;
    next_event(&ann);
    ann.ack(seq).unwrap();
    ann.mark_read(b, seq).unwrap();
    assert_eq!(next_receipt(&ben), (a, 0, ReceiptKind::Delivered, seq));
    no_receipt(&ben);

    // Turned back on: read receipts flow again (the setting survives a new login).
    let (ben2, _) = server.login("ben");
    assert!(!ben2.set_settings(None, None).unwrap().read_receipts);
    ben2.set_settings(Some(true), None).unwrap();
    let seq = ann.send_message(b, "again").unwrap().seq;
    ben.mark_read(a, seq).unwrap();
    // Not acked: the MarkRead reports the delivery too.
    assert_eq!(next_receipt(&ann), (b, 0, ReceiptKind::Delivered, seq));
    assert_eq!(next_receipt(&ann), (b, 0, ReceiptKind::Read, seq));
}

#[test]
fn mark_read_without_ack_counts_as_delivered_with_read_receipts_on_and_off() {
    let server = TestServer::start(2);
    let (ann, a) = server.user(&name_on_shard("ann", 0, 2));
    let (ben, b) = server.user(&name_on_shard("ben", 1, 2));
    let (a, b) = (a.user_id, b.user_id);
    ann.sync(None).unwrap();
    ben.sync(None).unwrap();
    for share in [true, false] {
        ben.set_settings(Some(share), None).unwrap();
        let seq = ann.send_message(b, "read, never acked").unwrap().seq;
        next_event(&ben);
        ben.mark_read(a, seq).unwrap();
        assert_eq!(
            next_receipt(&ann),
            (b, 0, ReceiptKind::Delivered, seq),
            "read receipts {share}"
        );
        if share {
            assert_eq!(next_receipt(&ann), (b, 0, ReceiptKind::Read, seq));
        }
        no_receipt(&ann);
    }
}

#[test]
fn group_mark_read_without_ack_counts_as_delivered_with_read_receipts_on_and_off() {
    let server = TestServer::start(2);
    let (owner, _) = server.user(&name_on_shard("owner", 0, 2));
    let (on, x) = server.user(&name_on_shard("sharer", 1, 2));
    let (off, y) = server.user(&name_on_shard("private", 0, 2));
    let (x, y) = (x.user_id, y.user_id);
    off.set_settings(Some(false), None).unwrap();
    let g = owner.create_group("r", &[x, y]).unwrap().group_id;
    owner.sync(None).unwrap();
    let seq = owner.send_group_message(g, 1, "read me").unwrap().seq;

    // Both read it without acking their inboxes.
    on.mark_group_read(g, seq).unwrap();
    off.mark_group_read(g, seq).unwrap();
    let mut got: Vec<_> = (0..3).map(|_| next_receipt(&owner)).collect();
    got.sort_unstable();
    let mut want = vec![
        (x, g, ReceiptKind::Delivered, seq),
        (x, g, ReceiptKind::Read, seq),
        (y, g, ReceiptKind::Delivered, seq),
    ];
    want.sort_unstable();
    assert_eq!(got, want);
    no_receipt(&owner);

    let r = owner.get_receipts(g, seq).unwrap();
    let mut delivered = r.delivered_to.clone();
    delivered.sort_unstable();
    let mut both = vec![x, y];
    both.sort_unstable();
    assert_eq!(delivered, both);
    assert_eq!(r.read_by, vec![x]);

    // A group seq past the group's head cannot be read.
    let err = on.mark_group_read(g, seq + 100).unwrap_err();
    assert_eq!(err.code(), Some(pb::ErrorCode::InvalidArgument));
}

#[test]
fn group_receipts_per_member_and_who_has_read() {
    let server = TestServer::start(2);
    let names: Vec<String> = (0..4)
        .map(|i| name_on_shard(&format!("g{i}_"), i % 2, 2))
        .collect();
    let users: Vec<(Connection, pb::LoggedIn)> = names.iter().map(|n| server.user(n)).collect();
    let ids: Vec<u64> = users.iter().map(|(_, l)| l.user_id).collect();
    let (owner, m1, m2, outsider) = (&users[0].0, &users[1].0, &users[2].0, &users[3].0);
    let g = owner.create_group("r", &ids[1..3]).unwrap().group_id;
    owner.sync(None).unwrap();
    let seq = owner.send_group_message(g, 1, "read me").unwrap().seq;

    // Nobody has it yet.
    let r = owner.get_receipts(g, seq).unwrap();
    assert!(r.delivered_to.is_empty() && r.read_by.is_empty());

    // Member 1 receives it (acks its inbox), then reads it; member 2 only receives it.
    for m in [m1, m2] {
        m.sync(None).unwrap();
        let head = m.sync(None).unwrap();
        m.ack(head).unwrap();
    }
    let mut got = vec![next_receipt(owner), next_receipt(owner)];
    got.sort_unstable();
    let mut want = vec![
        (ids[1], g, ReceiptKind::Delivered, seq),
        (ids[2], g, ReceiptKind::Delivered, seq),
    ];
    want.sort_unstable();
    assert_eq!(got, want);
    m1.mark_group_read(g, seq).unwrap();
    assert_eq!(next_receipt(owner), (ids[1], g, ReceiptKind::Read, seq));

    let r = owner.get_receipts(g, seq).unwrap();
    let mut delivered = r.delivered_to.clone();
    delivered.sort_unstable();
    let mut both = vec![ids[1], ids[2]];
    both.sort_unstable();
    assert_eq!(delivered, both);
    assert_eq!(r.read_by, vec![ids[1]]);

    // Outsiders learn nothing, not even that the group exists.
    let code = |r: chat_client::Result<()>| r.unwrap_err().code();
    assert_eq!(
        outsider.get_receipts(g, seq).unwrap_err().code(),
        Some(pb::ErrorCode::GroupNotFound)
    );
    assert_eq!(
        code(outsider.mark_group_read(g, seq)),
        Some(pb::ErrorCode::GroupNotFound)
    );
}

#[test]
fn group_receipts_wait_for_an_offline_sender() {
    let server = TestServer::start(2);
    let sender_name = name_on_shard("sender", 0, 2);
    let (sender, _) = server.user(&sender_name);
    let (member, m) = server.user(&name_on_shard("member", 1, 2));
    let m = m.user_id;
    let g = sender.create_group("later", &[m]).unwrap().group_id;
    let seq = sender
        .send_group_message(g, 1, "read me later")
        .unwrap()
        .seq;
    drop(sender);

    let head = member.sync(None).unwrap();
    member.ack(head).unwrap();
    member.mark_group_read(g, seq).unwrap();

    let (sender, _) = server.login(&sender_name);
    sender.sync(None).unwrap();
    let mut got = vec![next_receipt(&sender), next_receipt(&sender)];
    got.sort_unstable();
    assert_eq!(
        got,
        vec![
            (m, g, ReceiptKind::Delivered, seq),
            (m, g, ReceiptKind::Read, seq)
        ]
    );
}
