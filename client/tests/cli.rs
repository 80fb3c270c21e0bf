//! The `chat` binary's first contact: what a newcomer sees before any server answers.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: test code

use std::process::Command;

#[test]
fn a_missing_ca_file_is_named_with_the_flag_that_sets_it() {
    // The default --ca, relative to a directory that has no data/ in it.
    let cwd = std::env::temp_dir().join(format!("chat-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&cwd).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_chat"))
        .current_dir(&cwd)
        .args(["--user", "alice", "--password", "alice-secret", "register"])
        .output()
        .unwrap();
    std::fs::remove_dir_all(&cwd).unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("./data/tls/ca.pem"), "{stderr}");
    assert!(stderr.contains("--ca"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    // An explicit path is named as given.
    let missing = cwd.join("elsewhere/ca.pem");
    let out = Command::new(env!("CARGO_BIN_EXE_chat"))
        .args(["--ca", missing.to_str().unwrap()])
        .args(["--user", "alice", "--password", "alice-secret", "register"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(missing.to_str().unwrap()), "{stderr}");
    assert!(stderr.contains("--ca"), "{stderr}");
}

/// A server started in-process on 127.0.0.1:0 (one shard, dev CA in a temp dir).
fn live_server() -> (tempfile::TempDir, chat_server::ServerHandle) {
    let dir = tempfile::tempdir().unwrap();
    let config = chat_server::Config {
        data_dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        shards: 1,
        pin_cores: false,
        metrics_listen: None,
        ..chat_server::Config::default()
    };
    let handle = chat_server::start(config).unwrap();
    (dir, handle)
}

/// `127.0.0.1:PORT` where nothing listens (bound, then released).
fn closed_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    addr
}

#[test]
fn a_server_list_with_dead_entries_reaches_the_live_one() {
    let (_dir, server) = live_server();
    let ca = server.ca_path().unwrap().to_path_buf();
    let live = server.local_addr().to_string();
    // The live one last: chat starts at a random entry, so several runs start on dead ones.
    let list = format!("{},{},{live}", closed_addr(), closed_addr());
    for i in 0..6 {
        let user = format!("carol{i}");
        let out = Command::new(env!("CARGO_BIN_EXE_chat"))
            .args(["--server", &list, "--ca", ca.to_str().unwrap()])
            .args(["--user", &user, "--password", "carol-secret", "register"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "run {i}: {stderr}");
    }
    // A session command too (login, send to oneself, logout) through the same list.
    let out = Command::new(env!("CARGO_BIN_EXE_chat"))
        .args(["--server", &list, "--ca", ca.to_str().unwrap()])
        .args(["--user", "carol0", "--password", "carol-secret"])
        .args(["send", "--to", "carol1", "hello over a list"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Nothing alive: one error that names every address tried.
    let dead = [closed_addr(), closed_addr()];
    let out = Command::new(env!("CARGO_BIN_EXE_chat"))
        .args(["--server", &dead.join(","), "--ca", ca.to_str().unwrap()])
        .args(["--user", "carol0", "--password", "carol-secret", "register"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&dead[0]) && stderr.contains(&dead[1]),
        "{stderr}"
    );
    server.shutdown();
}
