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
