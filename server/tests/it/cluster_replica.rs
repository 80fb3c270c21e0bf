//! Replication: what a node acknowledged is in its slots' logs, so killing it loses none of
//! it; the nodes that take its slots over rebuild them from the logs (snapshots and the
//! tails after them: these tests snapshot a slot every few messages, so the logs they
//! rebuild from have been purged below their snapshots). Three nats-server processes and
//! three chatd nodes, as in `cluster_mesh.rs`.

use std::time::{Duration, Instant};

use chat_client::{pb, Connection};

use crate::cluster::{converged, nats_server, nodes_agree, wait_for, Nats, Node, ONE_AT_A_TIME};
use crate::cluster_mesh::{
    name_homed_on, register_and_login, retrying, start_cluster, start_cluster_with,
};
use crate::support::{next_message, password};

/// Snapshots every few messages of a slot's log, where the default waits for 10 000.
const SNAPSHOT_OFTEN: &str = "[cluster]\nsnapshot_every = 5\n";

/// The sum of `metric` over `nodes`.
fn total(nodes: &[&Node], metric: &str) -> f64 {
    nodes.iter().map(|n| n.metric(metric).unwrap_or(0.0)).sum()
}

/// Waits up to 15 s for `nodes` to have purged slot log messages below a snapshot.
fn wait_for_purges(nodes: &[&Node]) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let purged = total(nodes, "chatd_cluster_snapshot_purged_total");
        if purged > 0.0 {
            return purged;
        }
        assert!(
            Instant::now() < deadline,
            "no snapshot purged a log in 15 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn acked_messages_survive_a_kill_9_of_the_node_that_stored_them() {
    let Some(binary) = nats_server() else { return };
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let nats = Nats::start(&binary, 3);
    let (mut nodes, ca) = start_cluster_with(&nats, SNAPSHOT_OFTEN);

    // Bob's account, inbox and history live on b; he signs up through a and goes offline.
    let (alice_name, bob_name) = (name_homed_on("alice", "c"), name_homed_on("bob", "b"));
    let (alice, alice_in) = register_and_login(&nodes[0], &ca, &alice_name);
    let (bob, bob_in) = register_and_login(&nodes[0], &ca, &bob_name);
    drop(bob);
    alice.sync(None).unwrap();
    // Carol's account is on b too; she is online through c.
    let carol_name = name_homed_on("carol", "b");
    let (carol, _) = register_and_login(&nodes[2], &ca, &carol_name);
    carol.sync(None).unwrap();

    // Every send is acked only once b's writes are in JetStream (R3).
    let texts: Vec<String> = (0..20)
        .map(|i| format!("while you were away {i}"))
        .collect();
    let mut acks = Vec::new();
    for text in &texts {
        acks.push(alice.send_message(bob_in.user_id, text).unwrap());
    }
    let published = nodes[1].metric("chatd_cluster_replica_rounds_total");
    assert!(published.unwrap_or(0.0) > 0.0, "b published {published:?}");
    // b snapshots Bob's slot and purges its log below: the take-over must use the snapshot.
    let purged = wait_for_purges(&[&nodes[1]]);
    println!("b purged {purged} log messages below its snapshots");

    let killed = Instant::now();
    nodes[1].kill_9();
    let survivors = [&nodes[0], &nodes[2]];
    let (_, moved) = wait_for(Duration::from_secs(30), &survivors, || {
        converged(&nats.urls(), &["a", "c"])
    });
    wait_for(Duration::from_secs(30), &survivors, || {
        nodes_agree(&survivors, &["a", "c"])
    });
    println!(
        "b's slots moved {:?} after the kill, ready on both survivors after {:?}",
        moved,
        killed.elapsed()
    );
    // Carol's session was on b: c closes her connection, for her client to resume.
    assert!(
        carol.wait_closed(Duration::from_secs(10)),
        "c closes the connection of a user whose account moved"
    );

    // Bob's account came back with his slot: his token resumes on a, his password works.
    let again = Connection::connect(&nodes[0].listen, &ca).unwrap();
    let resumed = retrying(|| again.resume(&bob_in.token));
    assert_eq!(resumed.user_id, bob_in.user_id);
    let fresh = Connection::connect(&nodes[2].listen, &ca).unwrap();
    let login = retrying(|| fresh.login(&bob_name, &password(&bob_name)));
    assert_eq!(login.user_id, bob_in.user_id);

    // Every acked message, in order, with its seq.
    again.sync(None).unwrap();
    for (text, ack) in texts.iter().zip(&acks) {
        let got = next_message(&again);
        assert_eq!((&got.text, got.seq), (text, ack.seq));
        assert_eq!(got.from_user_id, alice_in.user_id);
    }
    let page = again.history(alice_in.user_id, 0, 50).unwrap();
    assert_eq!(page.messages.len(), texts.len(), "{page:?}");

    // A message after the failover goes on from the replicated seq.
    let after = retrying(|| alice.send_message(bob_in.user_id, "after the failover"));
    assert!(after.seq > acks.last().unwrap().seq, "{after:?}");
    assert_eq!(next_message(&again).text, "after the failover");

    let replayed: f64 = survivors
        .iter()
        .map(|n| {
            n.metric("chatd_cluster_replayed_writes_total")
                .unwrap_or(0.0)
        })
        .sum();
    assert!(replayed > 0.0, "the survivors replayed b's slots");
    // Their take-overs are over, and what they had left to read went with them.
    for n in survivors {
        assert_eq!(n.metric("chatd_cluster_replaying"), Some(0.0));
        assert_eq!(n.metric("chatd_cluster_replay_lag"), Some(0.0));
    }
    nodes.clear();
}

#[test]
fn a_paused_owner_is_fenced_and_a_retried_send_is_stored_once() {
    let Some(binary) = nats_server() else { return };
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let nats = Nats::start(&binary, 3);
    let (mut nodes, ca) = start_cluster(&nats);
    let (alice_name, bob_name) = (name_homed_on("alice", "c"), name_homed_on("bob", "b"));
    let (mut alice, alice_in) = register_and_login(&nodes[0], &ca, &alice_name);
    let (bob, bob_in) = register_and_login(&nodes[0], &ca, &bob_name);
    drop(bob);
    alice.set_timeout(Duration::from_secs(2));

    // b freezes past its lease: its slots move, fenced in their logs. The send waits on
    // the frozen b, times out, and is retried with the same id until a node that took
    // b's slots stores it.
    nodes[1].signal("STOP");
    let started = Instant::now();
    let text = "sent while b was frozen";
    let first = alice
        .start(pb::envelope::Body::SendMessage(pb::SendMessage {
            to_user_id: bob_in.user_id,
            client_msg_id: 42,
            text: text.into(),
            ..Default::default()
        }))
        .unwrap();
    let survivors = [&nodes[0], &nodes[2]];
    wait_for(Duration::from_secs(30), &survivors, || {
        converged(&nats.urls(), &["a", "c"])
    });
    wait_for(Duration::from_secs(30), &survivors, || {
        nodes_agree(&survivors, &["a", "c"])
    });
    // The first send went to frozen b and is unanswered; a second one to bob now goes to
    // c and could be stored before the first one's resend: refused, and the connection
    // ends, so the client resends both in order.
    let second = alice.send_message_with_id(bob_in.user_id, 43, "and after it");
    assert!(
        matches!(&second, Err(chat_client::ClientError::Server { code, .. }) if *code == pb::ErrorCode::Unavailable),
        "{second:?}"
    );
    assert!(
        alice.wait_closed(Duration::from_secs(10)),
        "the connection ends"
    );
    drop(first);
    let ack = loop {
        match alice.send_message_with_id(bob_in.user_id, 42, text) {
            Ok(ack) => break ack,
            Err(e) => {
                assert!(started.elapsed() < Duration::from_secs(60), "{e}");
                std::thread::sleep(Duration::from_millis(200));
                // A send refused while its slot is between nodes closes the connection
                // (a later send must not overtake it): the client resumes on a new one.
                if alice.is_closed() {
                    if let Ok(mut again) = Connection::connect(&nodes[0].listen, &ca) {
                        again.set_timeout(Duration::from_secs(2));
                        if again.resume(&alice_in.token).is_ok() {
                            alice = again;
                        }
                    }
                }
            }
        }
    };
    let after = retrying(|| alice.send_message_with_id(bob_in.user_id, 43, "and after it"));
    assert!(after.seq > ack.seq, "{after:?} after {ack:?}");

    // b wakes up with what it had queued: whatever it writes for its old slots now is
    // refused (its publishes name a last sequence the fence replaced), and it comes back
    // as a new incarnation that takes its slots over again from their logs.
    nodes[1].signal("CONT");
    let all: Vec<&_> = nodes.iter().collect();
    wait_for(Duration::from_secs(60), &all, || {
        converged(&nats.urls(), &["a", "b", "c"])
    });
    wait_for(Duration::from_secs(30), &all, || {
        nodes_agree(&all, &["a", "b", "c"])
    });
    let losses = nodes[1].metric("chatd_cluster_lease_losses_total");
    assert!(losses.unwrap_or(0.0) >= 1.0, "b lost its lease: {losses:?}");

    // Bob, back on b's slot, has the message exactly once, at the acked seq.
    let again = Connection::connect(&nodes[2].listen, &ca).unwrap();
    retrying(|| again.resume(&bob_in.token));
    again.sync(Some(0)).unwrap();
    let got = next_message(&again);
    assert_eq!((got.text.as_str(), got.seq), (text, ack.seq));
    let got = next_message(&again);
    assert_eq!((got.text.as_str(), got.seq), ("and after it", after.seq));
    let dup = again.next_event(Duration::from_secs(2)).unwrap();
    assert!(
        !matches!(&dup, Some(e) if matches!(&e.kind, Some(pb::event::Kind::Message(m)) if m.text == text)),
        "stored twice: {dup:?}"
    );
    nodes.clear();
}

/// Resumes `token` on the first of `servers` (from `from` on, in turn) that takes it, for
/// up to 60 s; returns the connection and the index of its server.
fn resume_somewhere(
    servers: &[String],
    ca: &std::path::Path,
    token: &[u8],
    from: usize,
) -> (Connection, usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for i in from.. {
        let at = i % servers.len();
        if let Ok(mut conn) = Connection::connect(&servers[at], ca) {
            conn.set_timeout(Duration::from_secs(5));
            if conn.resume(token).is_ok() {
                return (conn, at);
            }
        }
        assert!(
            Instant::now() < deadline,
            "no node resumed the session in 60 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    unreachable!()
}

#[test]
fn a_rolling_restart_under_traffic_loses_reorders_and_duplicates_nothing_acked() {
    let Some(binary) = nats_server() else { return };
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let nats = Nats::start(&binary, 3);
    let (mut nodes, ca) = start_cluster_with(&nats, SNAPSHOT_OFTEN);
    let servers: Vec<String> = nodes.iter().map(|n| n.listen.clone()).collect();

    // Six senders, each writing to a receiver who stays offline: every message waits in
    // an inbox whose slot moves twice per restart.
    let pairs: Vec<(pb::LoggedIn, pb::LoggedIn)> = (0..6)
        .map(|i| {
            let (_, from) = register_and_login(&nodes[i % 3], &ca, &format!("roller{i}"));
            let (_, to) = register_and_login(&nodes[(i + 1) % 3], &ca, &format!("rollee{i}"));
            (from, to)
        })
        .collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let senders: Vec<_> = pairs
        .iter()
        .enumerate()
        .map(|(i, (from, to))| {
            let (servers, ca, stop) = (servers.clone(), ca.clone(), stop.clone());
            let (token, to) = (from.token.to_vec(), to.user_id);
            std::thread::spawn(move || {
                // As an app does: a send that fails or goes unanswered is sent again with
                // its client_msg_id, through a new connection to the next node.
                let (mut conn, mut at) = resume_somewhere(&servers, &ca, &token, i);
                let mut acked = Vec::new();
                let mut retries = 0;
                for k in 1u64.. {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    loop {
                        match conn.send_message_with_id(to, k, &format!("{k}")) {
                            Ok(ack) => {
                                acked.push((k, ack.seq));
                                break;
                            }
                            Err(_) => {
                                retries += 1;
                                std::thread::sleep(Duration::from_millis(200));
                                (conn, at) = resume_somewhere(&servers, &ca, &token, at + 1);
                            }
                        }
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                (acked, retries)
            })
        })
        .collect();

    std::thread::sleep(Duration::from_secs(2));
    // The restarts' take-overs read snapshots (and the snapshots of slots taken over
    // fold an earlier snapshot and its tail).
    let refs: Vec<&Node> = nodes.iter().collect();
    wait_for_purges(&refs);
    for i in 0..nodes.len() {
        nodes[i].restart();
        let refs: Vec<&Node> = nodes.iter().collect();
        wait_for(Duration::from_secs(90), &refs, || {
            converged(&nats.urls(), &["a", "b", "c"])
        });
        wait_for(Duration::from_secs(30), &refs, || {
            nodes_agree(&refs, &["a", "b", "c"])
        });
        println!("{} restarted and the cluster settled", nodes[i].name);
        std::thread::sleep(Duration::from_secs(1));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);

    for ((from, to), sender) in pairs.iter().zip(senders) {
        let (acked, retries) = sender.join().unwrap();
        println!("{} acked sends, {retries} retries", acked.len());
        assert!(acked.len() > 20, "traffic flowed: {}", acked.len());
        // Every acked message, once, in the order sent, at the seq its ack named.
        let (conn, _) = resume_somewhere(&servers, &ca, &to.token, 0);
        retrying(|| conn.sync(None));
        for &(k, seq) in &acked {
            let got = next_message(&conn);
            assert_eq!(got.from_user_id, from.user_id);
            assert_eq!((got.text.as_str(), got.seq), (format!("{k}").as_str(), seq));
        }
    }
    nodes.clear();
}
