//! Several devices of one user: each sees what the others sent and read, live and after
//! being offline; devices are named, listed with their last activity, and revoked.

use std::time::Duration;

use chat_client::{pb, Connection};
use pb::event::Kind;

use crate::support::{code, name_on_shard, next_event, password, TestServer};

/// The next event that is not a receipt.
fn next_non_receipt(conn: &Connection) -> pb::Event {
    loop {
        let e = next_event(conn);
        if !matches!(e.kind, Some(Kind::Receipt(_))) {
            return e;
        }
    }
}

fn expect_sent(conn: &Connection) -> (u64, pb::Message) {
    let e = next_non_receipt(conn);
    match e.kind {
        Some(Kind::Sent(m)) => (e.seq, m),
        other => panic!("expected a sent event, got {other:?}"),
    }
}

fn expect_message(conn: &Connection) -> (u64, pb::Message) {
    let e = next_non_receipt(conn);
    match e.kind {
        Some(Kind::Message(m)) => (e.seq, m),
        other => panic!("expected a message event, got {other:?}"),
    }
}

fn expect_read(conn: &Connection) -> (u64, pb::ReadMarker) {
    let e = next_non_receipt(conn);
    match e.kind {
        Some(Kind::Read(r)) => (e.seq, r),
        other => panic!("expected a read event, got {other:?}"),
    }
}

/// Drops whatever events are queued on the connection.
fn drain(conn: &Connection) {
    while conn
        .next_event(Duration::from_millis(300))
        .unwrap()
        .is_some()
    {}
}

fn nothing_more(conn: &Connection) {
    while let Some(e) = conn.next_event(Duration::from_millis(300)).unwrap() {
        assert!(
            matches!(e.kind, Some(Kind::Receipt(_))),
            "unexpected event {e:?}"
        );
    }
}

/// Logs `name` in as a device called `device` on a connection that shard `shard` accepted.
fn device_on(
    server: &TestServer,
    name: &str,
    device: &str,
    shard: usize,
) -> (Connection, pb::LoggedIn) {
    let conn = server.connect_on_shard(shard);
    let login = conn.login_device(name, &password(name), device).unwrap();
    (conn, login)
}

#[test]
fn two_devices_on_different_shards_see_what_the_other_sent_and_read() {
    let server = TestServer::start(2);
    let alice_name = name_on_shard("alice", 0, 2);
    let (_, a) = server.user(&alice_name);
    let (bob, b) = server.user(&name_on_shard("bob", 1, 2));
    let (a, b) = (a.user_id, b.user_id);
    // Alice lives on shard 0; her phone is connected to shard 0 and her laptop to shard 1.
    let (phone, _) = device_on(&server, &alice_name, "phone", 0);
    let (laptop, laptop_login) = device_on(&server, &alice_name, "laptop", 1);
    phone.sync(None).unwrap();
    laptop.sync(None).unwrap();
    bob.sync(None).unwrap();

    // What the phone sends appears on the laptop (and on the phone itself), live.
    let ack = phone
        .send_message_with_id(b, 7, "hi from my phone")
        .unwrap();
    for device in [&laptop, &phone] {
        let (_, m) = expect_sent(device);
        assert_eq!((m.from_user_id, m.to_user_id), (a, b));
        assert_eq!((m.seq, m.timestamp_us), (ack.seq, ack.timestamp_us));
        assert_eq!((m.client_msg_id, m.text.as_str()), (7, "hi from my phone"));
    }
    let (_, m) = expect_message(&bob);
    assert_eq!(m.text, "hi from my phone");
    // A retry is stored once: no second sent event.
    let again = phone
        .send_message_with_id(b, 7, "hi from my phone")
        .unwrap();
    assert!(again.duplicate);
    nothing_more(&laptop);

    // Bob answers: both devices get it; the laptop reads it, the phone learns that.
    bob.send_message(a, "hello alice").unwrap();
    let (seq_on_phone, _) = expect_message(&phone);
    let (seq_on_laptop, m) = expect_message(&laptop);
    assert_eq!(seq_on_phone, seq_on_laptop);
    assert_eq!(m.text, "hello alice");
    laptop.mark_read(b, seq_on_laptop).unwrap();
    let mut last_seen = 0;
    for device in [&phone, &laptop] {
        let (seq, r) = expect_read(device);
        assert_eq!(
            (r.with_user_id, r.group_id, r.up_to_seq),
            (b, 0, seq_on_laptop)
        );
        last_seen = seq;
    }
    // Marking the same again is no news.
    phone.mark_read(b, seq_on_laptop).unwrap();
    nothing_more(&laptop);

    // The laptop goes offline; meanwhile the phone sends, and reads a group.
    let token = laptop_login.token.clone();
    drop(laptop);
    let group = bob.create_group("lunch", &[a]).unwrap();
    let group_ack = bob.send_group_message(group.group_id, 1, "12:30?").unwrap();
    phone
        .send_message(b, "sent while the laptop slept")
        .unwrap();
    phone
        .mark_group_read(group.group_id, group_ack.seq)
        .unwrap();
    // Back on shard 1, the laptop catches up from where it was, in inbox order.
    let laptop = server.connect_on_shard(1);
    laptop.resume(&token).unwrap();
    laptop.sync(Some(last_seen)).unwrap();
    let mut texts = Vec::new();
    let mut group_read = None;
    let mut prev = last_seen;
    while let Some(e) = laptop.next_event(Duration::from_millis(500)).unwrap() {
        assert_eq!(e.seq, prev + 1, "no gaps");
        prev = e.seq;
        match e.kind {
            Some(Kind::Message(m)) => texts.push(format!("got {}", m.text)),
            Some(Kind::Sent(m)) => texts.push(format!("sent {}", m.text)),
            Some(Kind::Read(r)) => group_read = Some((r.group_id, r.up_to_seq)),
            _ => {}
        }
    }
    // (The group message and the phone's send race between shards: either order.)
    texts.sort();
    assert_eq!(texts, ["got 12:30?", "sent sent while the laptop slept"]);
    assert_eq!(group_read, Some((group.group_id, group_ack.seq)));

    // Both devices show the same conversation.
    let on_phone = phone.history(b, 0, 50).unwrap();
    let on_laptop = laptop.history(b, 0, 50).unwrap();
    assert_eq!(on_phone.messages, on_laptop.messages);
    assert_eq!(on_phone.messages.len(), 3);

    // And after a restart, the whole inbox replays the same events.
    drain(&phone);
    let head = phone.sync(Some(0)).unwrap();
    let before: Vec<pb::Event> = (0..head).map(|_| next_event(&phone)).collect();
    drop((phone, laptop, bob));
    let mut server = server;
    server.restart();
    let (phone, _) = server.login(&alice_name);
    assert_eq!(phone.sync(Some(0)).unwrap(), head);
    let after: Vec<pb::Event> = (0..head).map(|_| next_event(&phone)).collect();
    assert_eq!(before, after);
}

#[test]
fn a_sender_sharing_a_shard_with_the_recipient_gets_its_sent_event_too() {
    let server = TestServer::start(2);
    let (phone, a) = server.user(&name_on_shard("carol", 1, 2));
    let (dave, d) = server.user(&name_on_shard("dave", 1, 2));
    let laptop = server.login(&name_on_shard("carol", 1, 2)).0;
    laptop.sync(None).unwrap();
    dave.sync(None).unwrap();
    let ack = phone.send_message(d.user_id, "same shard").unwrap();
    let (_, m) = expect_sent(&laptop);
    assert_eq!((m.seq, m.text.as_str()), (ack.seq, "same shard"));
    assert_eq!(m.from_user_id, a.user_id);
    assert_eq!(expect_message(&dave).1.text, "same shard");
    let again = phone
        .send_message_with_id(d.user_id, ack.client_msg_id, "same shard")
        .unwrap();
    assert!(again.duplicate);
    nothing_more(&laptop);
}

#[test]
fn devices_are_named_listed_with_their_activity_and_revoked() {
    let mut server = TestServer::start(2);
    let name = name_on_shard("erin", 1, 2);
    server.connect().register(&name, &password(&name)).unwrap();
    let (phone, phone_login) = device_on(&server, &name, "  Erin's phone ", 0);
    let (laptop, laptop_login) = device_on(&server, &name, "laptop", 1);
    assert_ne!(phone_login.device_id, laptop_login.device_id);

    let devices = phone.list_devices().unwrap();
    assert_eq!(devices.len(), 2);
    let find = |devices: &[pb::Device], id| {
        devices
            .iter()
            .find(|d| d.device_id == id)
            .cloned()
            .expect("listed")
    };
    let p = find(&devices, phone_login.device_id);
    assert_eq!(p.name, "Erin's phone", "trimmed");
    assert!(p.online && p.current && p.created_us > 0);
    let l = find(&devices, laptop_login.device_id);
    assert_eq!(l.name, "laptop");
    assert!(l.online && !l.current);

    // The laptop closes: offline, with its last activity.
    let closed_at = chat_server::clock::Clock::now_us();
    drop(laptop);
    let l = (0..500)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(20));
            find(&phone.list_devices().unwrap(), laptop_login.device_id)
        })
        .find(|d| !d.online)
        .expect("the laptop goes offline");
    assert!(l.last_active_us >= closed_at, "{l:?}");
    // The phone's list is most recently active first: itself (online), then the laptop.
    let order: Vec<u64> = phone
        .list_devices()
        .unwrap()
        .iter()
        .map(|d| d.device_id)
        .collect();
    assert_eq!(order, [phone_login.device_id, laptop_login.device_id]);

    // Resume keeps the device; a second connection of the laptop is the same device.
    let laptop = server.connect_on_shard(0);
    assert_eq!(
        laptop.resume(&laptop_login.token).unwrap().device_id,
        laptop_login.device_id
    );
    let laptop2 = server.connect_on_shard(1);
    laptop2.resume(&laptop_login.token).unwrap();
    let devices = laptop.list_devices().unwrap();
    assert_eq!(devices.len(), 2);
    assert!(find(&devices, laptop_login.device_id).current);

    // Devices survive a restart.
    drop((phone, laptop, laptop2));
    server.restart();
    let phone = server.connect();
    phone.resume(&phone_login.token).unwrap();
    let laptop = server.connect_on_shard(0);
    laptop.resume(&laptop_login.token).unwrap();
    let laptop2 = server.connect_on_shard(1);
    laptop2.resume(&laptop_login.token).unwrap();
    laptop.sync(None).unwrap();
    let devices = phone.list_devices().unwrap();
    assert_eq!(find(&devices, phone_login.device_id).name, "Erin's phone");
    assert_eq!(find(&devices, laptop_login.device_id).name, "laptop");

    // The phone logs the laptop out: both its connections are told and closed, its token
    // is dead, and it is no longer listed.
    phone.revoke_device(laptop_login.device_id).unwrap();
    for conn in [&laptop, &laptop2] {
        assert!(conn.wait_closed(Duration::from_secs(10)));
        let told = conn
            .unsolicited()
            .try_iter()
            .filter_map(|env| match env.body {
                Some(pb::envelope::Body::Error(e)) => Some((env.request_id, e.code())),
                _ => None,
            })
            .collect::<Vec<_>>();
        assert_eq!(told, [(0, pb::ErrorCode::SessionRevoked)]);
    }
    assert_eq!(
        code(server.connect().resume(&laptop_login.token)),
        pb::ErrorCode::BadCredentials
    );
    let devices = phone.list_devices().unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].device_id, phone_login.device_id);
    assert_eq!(
        code(phone.revoke_device(laptop_login.device_id)),
        pb::ErrorCode::DeviceNotFound
    );
    assert_eq!(code(phone.revoke_device(0)), pb::ErrorCode::InvalidArgument);
    // Someone else's device is not found either.
    let (other, _) = server.user("frank");
    assert_eq!(
        code(other.revoke_device(phone_login.device_id)),
        pb::ErrorCode::DeviceNotFound
    );

    // A device may log itself out: answered, then closed.
    phone.revoke_device(phone_login.device_id).unwrap();
    assert!(phone.wait_closed(Duration::from_secs(10)));
    assert_eq!(
        code(server.connect().resume(&phone_login.token)),
        pb::ErrorCode::BadCredentials
    );

    // Logout removes its device; LogoutAll every device.
    let (a, a_login) = device_on(&server, &name, "a", 0);
    let (b, _) = device_on(&server, &name, "b", 1);
    b.logout().unwrap();
    let ids: Vec<u64> = a
        .list_devices()
        .unwrap()
        .iter()
        .map(|d| d.device_id)
        .collect();
    assert_eq!(ids, [a_login.device_id]);
    let (c, _) = device_on(&server, &name, "c", 1);
    c.logout_all().unwrap();
    assert!(c.list_devices().unwrap().is_empty());
    assert_eq!(
        code(server.connect().resume(&a_login.token)),
        pb::ErrorCode::BadCredentials
    );

    // Names are checked.
    let conn = server.connect();
    let long = "x".repeat(65);
    assert_eq!(
        code(conn.login_device(&name, &password(&name), &long)),
        pb::ErrorCode::InvalidArgument
    );
    assert_eq!(
        code(conn.login_device(&name, &password(&name), "tab\there")),
        pb::ErrorCode::InvalidArgument
    );
    conn.login_device(&name, &password(&name), &"é".repeat(32))
        .unwrap();
}

/// A user with one device gets no `sent` or `read` events (the SendAck and Done say it
/// all, and every send would cost an inbox entry, a push and an Ack more); once a second
/// device has logged in, both devices get them.
#[test]
fn one_device_gets_no_sent_or_read_events_until_a_second_one_logs_in() {
    let server = TestServer::start(2);
    let fay_name = name_on_shard("fay", 0, 2);
    let (phone, fay) = server.user(&fay_name);
    let (gus, g) = server.user(&name_on_shard("gus", 1, 2));
    phone.sync(None).unwrap();
    gus.sync(None).unwrap();
    phone.send_message(g.user_id, "one device").unwrap();
    let hi = gus.send_message(fay.user_id, "hi").unwrap();
    assert_eq!(expect_message(&phone).0, hi.seq);
    phone.mark_read(g.user_id, hi.seq).unwrap();
    // Had the send or the MarkRead added an event to fay's inbox, it would come first.
    let again = gus.send_message(fay.user_id, "again").unwrap();
    assert_eq!(again.seq, hi.seq + 1, "nothing else went into fay's inbox");
    assert_eq!(expect_message(&phone).1.text, "again");

    let (laptop, _) = device_on(&server, &fay_name, "laptop", 1);
    laptop.sync(Some(again.seq)).unwrap();
    let ack = phone.send_message(g.user_id, "two devices").unwrap();
    for device in [&phone, &laptop] {
        let (_, m) = expect_sent(device);
        assert_eq!((m.seq, m.text.as_str()), (ack.seq, "two devices"));
    }
    phone.mark_read(g.user_id, again.seq).unwrap();
    for device in [&phone, &laptop] {
        assert_eq!(expect_read(device).1.up_to_seq, again.seq);
    }
}
