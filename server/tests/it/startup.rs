//! Starting chatd where it cannot run: one clear line on stderr and a failing exit status,
//! never a backtrace.

use std::process::Command;

/// Runs chatd on `listen` / `metrics` in a fresh data directory; (success, stderr).
fn chatd(listen: &str, metrics: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_chatd"))
        .args(["--data-dir", dir.path().to_str().unwrap()])
        .args(["--listen", listen, "--metrics-listen", metrics])
        .args(["--shards", "1", "--no-pin", "--log", "warn"])
        .env("RUST_BACKTRACE", "full")
        .output()
        .expect("chatd runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_one_line_without_backtrace(stderr: &str) {
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    for frame_marker in ["backtrace", "Backtrace", "Stack", " at "] {
        assert!(!stderr.contains(frame_marker), "{stderr}");
    }
}

#[test]
fn a_port_in_use_is_one_clear_line_and_a_failing_exit() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().to_string();

    let (ok, stderr) = chatd(&busy, "off");
    assert!(!ok, "chatd must not start: {stderr}");
    assert_one_line_without_backtrace(&stderr);
    assert!(stderr.contains(&busy), "where: {stderr}");
    assert!(stderr.contains("in use"), "why: {stderr}");
    assert!(stderr.contains("--listen"), "what to do: {stderr}");

    // The metrics port, too.
    let free = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let (ok, stderr) = chatd(&free, &busy);
    assert!(!ok, "chatd must not start: {stderr}");
    assert_one_line_without_backtrace(&stderr);
    assert!(stderr.contains("metrics_listen"), "what: {stderr}");
    assert!(stderr.contains("--metrics-listen"), "what to do: {stderr}");
    assert!(stderr.contains(&busy), "where: {stderr}");
    drop(taken);
}
