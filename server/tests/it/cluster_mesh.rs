//! Users homed on different nodes, connected to yet other nodes: every request crosses the
//! mesh between nodes (NATS) and behaves as on one node. Three nats-server processes and
//! three chatd nodes, as in `cluster.rs`, sharing one TLS identity.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chat_client::{pb, Connection, MediaSpec};
use chat_server::cluster::rendezvous;
use chat_server::routing::fnv1a64;

use crate::cluster::{converged, nats_server, nodes_agree, wait_for, Nats, Node, ONE_AT_A_TIME};
use crate::support::{code, next_event, next_message, password};

const SLOTS: u32 = 1024;
const NODES: [&str; 3] = ["a", "b", "c"];

/// A username whose slot (and so the account) lives on `node` of a, b and c.
pub(crate) fn name_homed_on(prefix: &str, node: &str) -> String {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .find(|n| {
            let slot = rendezvous::slot_of(fnv1a64(n.as_bytes()), SLOTS);
            rendezvous::target(slot, NODES) == Some(node)
        })
        .unwrap()
}

/// Node a, then b and c with a's certificate: one CA file works against every node.
pub(crate) fn start_cluster(nats: &Nats) -> (Vec<Node>, PathBuf) {
    start_cluster_with(nats, "")
}

/// [`start_cluster`] with every node's `--config` file holding `toml`.
pub(crate) fn start_cluster_with(nats: &Nats, toml: &str) -> (Vec<Node>, PathBuf) {
    let a = Node::start_with("a", nats, toml);
    let tls = a.dir.path().join("tls");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !tls.join("server.key").exists() || !tls.join("ca.pem").exists() {
        assert!(Instant::now() < deadline, "a wrote no certificate");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The files are written one after the other: give the last one its bytes.
    std::thread::sleep(Duration::from_millis(200));
    let (cert, key) = (tls.join("server.pem"), tls.join("server.key"));
    let args = [
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ];
    let b = Node::start_args("b", nats, toml, &args);
    let c = Node::start_args("c", nats, toml, &args);
    let nodes = vec![a, b, c];
    let refs: Vec<&Node> = nodes.iter().collect();
    wait_for(Duration::from_secs(90), &refs, || {
        converged(&nats.urls(), &NODES)
    });
    wait_for(Duration::from_secs(30), &refs, || {
        nodes_agree(&refs, &NODES)
    });
    (nodes, tls.join("ca.pem"))
}

/// Signs a user up and in, retrying as an app does while the account's slot is between
/// owners (a busy machine can still be moving slots just after the cluster converged).
pub(crate) fn register_and_login(node: &Node, ca: &Path, name: &str) -> (Connection, pb::LoggedIn) {
    let conn = Connection::connect(&node.listen, ca).unwrap();
    retrying(|| conn.register(name, &password(name)));
    let login = retrying(|| conn.login(name, &password(name)));
    (conn, login)
}

/// Retries `op` while the cluster answers UNAVAILABLE (a slot between owners), for up
/// to 15 s.
pub(crate) fn retrying<T>(mut op: impl FnMut() -> chat_client::Result<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match op() {
            Ok(v) => return v,
            Err(chat_client::ClientError::Server { code, message })
                if code == pb::ErrorCode::Unavailable && Instant::now() < deadline =>
            {
                eprintln!("retrying: {message}");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("{e}"),
        }
    }
}

fn mesh_total(nodes: &[Node], metric: &str) -> f64 {
    nodes.iter().map(|n| n.metric(metric).unwrap_or(0.0)).sum()
}

#[test]
fn users_homed_on_other_nodes_chat_through_any_node() {
    let Some(binary) = nats_server() else { return };
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let nats = Nats::start(&binary, 3);
    let (nodes, ca) = start_cluster(&nats);
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);

    // Each user connects to a node that is not their home.
    let (alice_name, bob_name, carol_name) = (
        name_homed_on("alice", "a"),
        name_homed_on("bob", "b"),
        name_homed_on("carol", "c"),
    );
    let (alice, alice_in) = register_and_login(b, &ca, &alice_name);
    let (bob, bob_in) = register_and_login(c, &ca, &bob_name);
    let (carol, carol_in) = register_and_login(a, &ca, &carol_name);
    assert_eq!(alice.lookup(&bob_name).unwrap(), bob_in.user_id);
    alice.sync(None).unwrap();
    bob.sync(None).unwrap();
    carol.sync(None).unwrap();

    // 1:1 with its delivery receipt.
    let ack = alice
        .send_message(bob_in.user_id, "hello across nodes")
        .unwrap();
    let got = next_message(&bob);
    assert_eq!(got.text, "hello across nodes");
    assert_eq!(got.from_user_id, alice_in.user_id);
    assert_eq!(got.seq, ack.seq);
    bob.ack(got.seq).unwrap();
    let receipt = loop {
        match next_event(&alice).kind {
            Some(pb::event::Kind::Receipt(r)) => break r,
            Some(pb::event::Kind::Sent(_)) => {}
            other => panic!("expected a receipt, got {other:?}"),
        }
    };
    assert_eq!(receipt.by_user_id, bob_in.user_id);

    // History, from the recipient's side.
    let page = bob.history(alice_in.user_id, 0, 10).unwrap();
    assert!(
        page.messages.iter().any(|m| m.text == "hello across nodes"),
        "{page:?}"
    );

    // An image uploaded through one node, its asset on whichever node its id's slot names,
    // sent to a user of a second node and fetched through a third; nobody else may fetch it.
    let image: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let spec = MediaSpec {
        kind: pb::MediaKind::Image,
        mime_type: "image/png".into(),
        width: 10,
        height: 10,
        ..Default::default()
    };
    let media = alice.upload(&image, &spec).unwrap();
    alice
        .send_media(bob_in.user_id, &media, "a picture")
        .unwrap();
    let got = next_message(&bob);
    assert_eq!(got.text, "a picture");
    let attached = got.media.expect("the message carries the image");
    assert_eq!(bob.fetch_asset(&attached, 0).unwrap(), image);
    bob.ack(got.seq).unwrap();
    assert_eq!(
        code(carol.fetch_asset(&attached, 0)),
        pb::ErrorCode::AssetNotFound
    );

    // A group of the three: every member gets the message, whoever's node has the group.
    let group = alice
        .create_group("three nodes", &[bob_in.user_id, carol_in.user_id])
        .unwrap();
    alice
        .send_group_message(group.group_id, 1, "to the group")
        .unwrap();
    for member in [&bob, &carol] {
        let m = loop {
            match next_event(member).kind {
                Some(pb::event::Kind::Message(m)) => break m,
                Some(pb::event::Kind::GroupChange(_)) => {}
                other => panic!("expected the group message, got {other:?}"),
            }
        };
        assert_eq!(
            (m.group_id, m.text.as_str()),
            (group.group_id, "to the group")
        );
    }

    // Presence of a user of another node, as seen through a third.
    let presence = carol.subscribe_presence(&[alice_in.user_id]).unwrap();
    assert!(presence[0].online, "{presence:?}");

    // Resume on another node with the token bob got on c.
    let again = Connection::connect(&a.listen, &ca).unwrap();
    let resumed = again.resume(&bob_in.token).unwrap();
    assert_eq!(resumed.user_id, bob_in.user_id);
    again.sync(None).unwrap();
    alice.send_message(bob_in.user_id, "after resume").unwrap();
    // What bob had not acked (the group's creation and message) comes first.
    loop {
        match next_event(&again).kind {
            Some(pb::event::Kind::Message(m)) if m.text == "after resume" => break,
            Some(pb::event::Kind::Message(_) | pb::event::Kind::GroupChange(_)) => {}
            other => panic!("expected bob's backlog, got {other:?}"),
        }
    }

    let sent = mesh_total(&nodes, "chatd_cluster_mesh_messages_sent_total");
    let received = mesh_total(&nodes, "chatd_cluster_mesh_messages_received_total");
    println!("cluster mesh: {sent} messages sent between nodes, {received} received");
    assert!(sent > 0.0 && received > 0.0);
    assert_eq!(mesh_total(&nodes, "chatd_cluster_mesh_dropped_total"), 0.0);
}
