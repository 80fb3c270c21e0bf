//! `kill -9` of a real chatd process in the middle of a conversation: after a restart,
//! every message that was acked is there exactly once, in order.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_client::{pb, Connection};

use crate::support::password;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn_chatd(dir: &Path, addr: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_chatd"))
        .args(["--data-dir", dir.to_str().unwrap(), "--listen", addr])
        .args([
            "--shards",
            "2",
            "--no-pin",
            "--log",
            "warn",
            "--metrics-listen",
            "off",
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("chatd starts")
}

/// A logged-in connection, retried until the server answers (it may be restarting).
fn connect(addr: &str, ca: &Path, name: &str) -> Connection {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let attempt = Connection::connect(addr, ca).and_then(|mut c| {
            c.set_timeout(Duration::from_secs(10));
            c.login(name, &password(name))?;
            Ok(c)
        });
        match attempt {
            Ok(c) => return c,
            Err(e) => {
                assert!(Instant::now() < deadline, "cannot reach chatd: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// A chatd process on a new data directory with users alice and bob: (data directory,
/// address, CA, process).
fn first_start() -> (tempfile::TempDir, String, std::path::PathBuf, Child) {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let ca = dir.path().join("tls/ca.pem");
    let chatd = spawn_chatd(dir.path(), &addr);
    let deadline = Instant::now() + Duration::from_secs(60);
    while Connection::connect(&addr, &ca).is_err() {
        assert!(Instant::now() < deadline, "chatd did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    let setup = Connection::connect(&addr, &ca).unwrap();
    setup.register("alice", &password("alice")).unwrap();
    setup.register("bob", &password("bob")).unwrap();
    (dir, addr, ca, chatd)
}

#[test]
fn acked_messages_survive_kill_9_exactly_once_and_in_order() {
    let (dir, addr, ca, mut chatd) = first_start();
    let bob_id = connect(&addr, &ca, "alice").lookup("bob").unwrap();

    // Alice sends 1..=N with client_msg_id = i; after a failure she reconnects and sends
    // the same i again (the server stores a retry once).
    const N: u64 = 600;
    let acked = Arc::new(AtomicU64::new(0));
    let sender = {
        let (addr, ca, acked) = (addr.clone(), ca.clone(), acked.clone());
        std::thread::spawn(move || {
            let mut conn = connect(&addr, &ca, "alice");
            let mut i = 1;
            let mut retries = 0;
            while i <= N {
                match conn.send_message_with_id(bob_id, i, &format!("m{i}")) {
                    Ok(_) => {
                        acked.store(i, Ordering::SeqCst);
                        i += 1;
                    }
                    Err(_) => {
                        retries += 1;
                        conn = connect(&addr, &ca, "alice");
                    }
                }
            }
            retries
        })
    };
    // Kill the server without warning once a third is acked, and start it again.
    while acked.load(Ordering::SeqCst) < N / 3 {
        std::thread::sleep(Duration::from_millis(5));
    }
    chatd.kill().unwrap(); // SIGKILL
    chatd.wait().unwrap();
    let acked_at_kill = acked.load(Ordering::SeqCst);
    chatd = spawn_chatd(dir.path(), &addr);
    let retries = sender.join().unwrap();
    assert!(retries >= 1, "the kill went unnoticed");
    assert!(acked_at_kill < N);

    // Bob reads his whole inbox: every message once, in the order sent.
    let bob = connect(&addr, &ca, "bob");
    let head = bob.sync(Some(0)).unwrap();
    let mut texts = Vec::new();
    while texts.len() < head as usize {
        let event = bob
            .next_event(Duration::from_secs(20))
            .unwrap()
            .expect("the inbox up to its head");
        if let Some(pb::event::Kind::Message(m)) = event.kind {
            texts.push(m.text);
        }
    }
    let expected: Vec<String> = (1..=N).map(|i| format!("m{i}")).collect();
    assert_eq!(texts, expected);
    chatd.kill().unwrap();
    chatd.wait().unwrap();
}

#[test]
fn sigterm_tells_clients_flushes_and_exits_cleanly() {
    let (dir, addr, ca, mut chatd) = first_start();
    let bob_id = connect(&addr, &ca, "alice").lookup("bob").unwrap();
    let alice = connect(&addr, &ca, "alice");
    for i in 1..=10 {
        alice
            .send_message_with_id(bob_id, i, &format!("m{i}"))
            .unwrap();
    }
    // SIGTERM through the shell's kill: no extra crate, and sh is everywhere.
    let status = Command::new("sh")
        .args(["-c", &format!("kill -TERM {}", chatd.id())])
        .status()
        .unwrap();
    assert!(status.success());
    // Connected clients are told before the connection closes.
    let env = alice
        .unsolicited()
        .recv_timeout(Duration::from_secs(20))
        .expect("a goodbye frame");
    match env.body {
        Some(pb::envelope::Body::Error(e)) => assert_eq!(e.code(), pb::ErrorCode::Unavailable),
        other => panic!("unexpected {other:?}"),
    }
    assert!(alice.wait_closed(Duration::from_secs(20)));
    let exit = chatd.wait().unwrap();
    assert!(exit.success(), "chatd exited with {exit}");
    // Everything acked is there after a restart.
    let mut chatd = spawn_chatd(dir.path(), &addr);
    let bob = connect(&addr, &ca, "bob");
    let head = bob.sync(Some(0)).unwrap();
    assert_eq!(head, 10);
    chatd.kill().unwrap();
    chatd.wait().unwrap();
}
