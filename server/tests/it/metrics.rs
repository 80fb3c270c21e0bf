//! The operators' endpoint: `/metrics` scraped over HTTP after real traffic and parsed as
//! the Prometheus text format; `/health`; unknown paths.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use chat_client::pb;

use crate::support::{name_on_shard, next_message, TestServer};

/// One HTTP/1.1 GET; returns status, headers and body.
fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("a header block");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    assert!(head.contains("Connection: close"), "{head}");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|n| n.parse().ok())
        .expect("a Content-Length");
    assert_eq!(length, body.len());
    (status, head.to_string(), body.to_string())
}

#[derive(Debug)]
struct Sample {
    name: String,
    labels: HashMap<String, String>,
    value: f64,
}

/// Parses the text exposition format 0.0.4: `# HELP`/`# TYPE` comments and
/// `name{label="value",...} value` samples. Panics on anything else. Returns the samples
/// and the declared type of each family.
fn parse(text: &str) -> (Vec<Sample>, HashMap<String, String>) {
    let mut types = HashMap::new();
    let mut helps = HashMap::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix("# ") {
            let mut parts = comment.splitn(3, ' ');
            let (kind, name, rest) = (parts.next(), parts.next(), parts.next());
            let (Some(kind), Some(name), Some(rest)) = (kind, name, rest) else {
                panic!("bad comment line: {line}");
            };
            match kind {
                "HELP" => assert!(helps.insert(name.to_string(), rest.to_string()).is_none()),
                "TYPE" => {
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&rest),
                        "bad type: {line}"
                    );
                    assert!(types.insert(name.to_string(), rest.to_string()).is_none());
                }
                _ => panic!("unknown comment: {line}"),
            }
            continue;
        }
        assert!(!line.starts_with('#'), "bad comment: {line}");
        let (series, value) = line.rsplit_once(' ').expect("name and value");
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value: {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, HashMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("labels end with }");
                let labels = body
                    .split(',')
                    .map(|pair| {
                        let (k, v) = pair.split_once('=').expect("label=value");
                        let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"'));
                        (k.to_string(), v.expect("quoted label value").to_string())
                    })
                    .collect();
                (name, labels)
            }
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name: {line}"
        );
        assert!(name.starts_with("chatd_"), "{name}");
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    // Every sample belongs to a declared family; every family has its help.
    for s in &samples {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                let base = s.name.strip_suffix(suffix)?;
                (types.get(base).map(String::as_str) == Some("histogram")).then_some(base)
            })
            .unwrap_or(&s.name);
        assert!(types.contains_key(family), "no TYPE for {}", s.name);
        assert!(helps.contains_key(family), "no HELP for {}", s.name);
        if types[family] == "counter" {
            assert!(s.name.ends_with("_total"), "{}", s.name);
            assert!(s.value >= 0.0);
        }
    }
    (samples, types)
}

/// The sum over shards of a metric (with extra label `key=value` if given).
fn total(samples: &[Sample], name: &str, label: Option<(&str, &str)>) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| label.is_none_or(|(k, v)| s.labels.get(k).map(String::as_str) == Some(v)))
        .map(|s| s.value)
        .sum()
}

/// Buckets are cumulative, end with +Inf, and `_count` equals the +Inf bucket, per shard.
/// Returns the total count.
fn check_histogram(samples: &[Sample], name: &str, shards: usize) -> f64 {
    let mut all = 0.0;
    for shard in 0..shards {
        let shard = shard.to_string();
        let ours = |suffix: &str| {
            samples
                .iter()
                .filter(move |s| s.name == format!("{name}{suffix}"))
                .filter(|s| s.labels["shard"] == shard)
                .collect::<Vec<_>>()
        };
        let buckets = ours("_bucket");
        assert!(buckets.len() > 2, "{name}: buckets of shard {shard}");
        let bounds: Vec<f64> = buckets
            .iter()
            .map(|b| match b.labels["le"].as_str() {
                "+Inf" => f64::INFINITY,
                le => le.parse().unwrap(),
            })
            .collect();
        assert!(bounds.windows(2).all(|w| w[0] < w[1]), "{name}: le order");
        assert_eq!(*bounds.last().unwrap(), f64::INFINITY);
        assert!(
            buckets.windows(2).all(|w| w[0].value <= w[1].value),
            "{name}: buckets are cumulative"
        );
        let count = ours("_count");
        let sum = ours("_sum");
        assert_eq!((count.len(), sum.len()), (1, 1));
        assert_eq!(count[0].value, buckets.last().unwrap().value, "{name}");
        assert!(sum[0].value >= 0.0);
        all += count[0].value;
    }
    all
}

#[test]
fn metrics_are_served_in_the_prometheus_format_after_real_traffic() {
    let server = TestServer::start(2);
    let metrics = server.metrics_addr();

    // Users on different shards: sends cross the mesh.
    let alice_name = name_on_shard("alice", 0, 2);
    let bob_name = name_on_shard("bob", 1, 2);
    let (alice, _) = server.user(&alice_name);
    let (bob, bob_login) = server.user(&bob_name);
    bob.sync(None).unwrap();
    const SENT: u64 = 5;
    for i in 1..=SENT {
        alice
            .send_message_with_id(bob_login.user_id, i, &format!("hi {i}"))
            .unwrap();
        assert_eq!(next_message(&bob).seq, i);
    }
    bob.ack(3).unwrap();
    let group = alice.create_group("metrics", &[bob_login.user_id]).unwrap();
    alice
        .send_group_message(group.group_id, 100, "hi all")
        .unwrap();
    let error = alice
        .send_message(u64::MAX - 7, "nobody there")
        .expect_err("no such user");
    assert_eq!(error.code(), Some(pb::ErrorCode::UserNotFound));

    let (status, head, body) = get(metrics, "/metrics");
    assert_eq!(status, 200, "{body}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    let (samples, types) = parse(&body);

    for (name, kind) in [
        ("chatd_connections_accepted_total", "counter"),
        ("chatd_connections_open", "gauge"),
        ("chatd_users_online", "gauge"),
        ("chatd_messages_stored_total", "counter"),
        ("chatd_send_ack_seconds", "histogram"),
        ("chatd_storage_commit_seconds", "histogram"),
        ("chatd_process_resident_memory_bytes", "gauge"),
        ("chatd_process_open_fds", "gauge"),
        ("chatd_push_queued_total", "counter"),
    ] {
        assert_eq!(types.get(name).map(String::as_str), Some(kind), "{name}");
    }
    // Per-shard series have one sample per shard.
    let open: Vec<_> = samples
        .iter()
        .filter(|s| s.name == "chatd_connections_open")
        .collect();
    assert_eq!(open.len(), 2);

    let sum = |name| total(&samples, name, None);
    assert!(sum("chatd_connections_open") >= 2.0);
    assert!(sum("chatd_connections_accepted_total") >= 2.0);
    assert!(sum("chatd_users_online") >= 2.0);
    assert!(sum("chatd_sessions") >= 2.0);
    assert!(sum("chatd_messages_received_total") >= (SENT + 2) as f64);
    assert!(sum("chatd_messages_stored_total") >= (SENT + 1) as f64);
    assert!(sum("chatd_messages_delivered_total") >= SENT as f64);
    assert!(sum("chatd_shard_messages_sent_total") >= SENT as f64);
    assert!(sum("chatd_shard_messages_received_total") >= SENT as f64);
    // Bob's inbox got the five messages (and more: group events); he acked three.
    assert!(sum("chatd_inbox_events_appended_total") >= SENT as f64);
    assert_eq!(sum("chatd_inbox_events_acked_total"), 3.0);
    assert!(sum("chatd_client_bytes_received_total") > 0.0);
    assert!(sum("chatd_client_bytes_sent_total") > 0.0);
    assert!(sum("chatd_process_resident_memory_bytes") > 0.0);
    assert!(sum("chatd_process_open_fds") > 0.0);
    let not_found = Some(("code", "USER_NOT_FOUND"));
    assert!(total(&samples, "chatd_errors_total", not_found) >= 1.0);
    assert!(total(&samples, "chatd_errors_total", Some(("code", "GROUP_FULL"))) == 0.0);

    let acks = check_histogram(&samples, "chatd_send_ack_seconds", 2);
    assert!(
        acks >= (SENT + 1) as f64,
        "every acked send is timed: {acks}"
    );
    let commits = check_histogram(&samples, "chatd_storage_commit_seconds", 2);
    assert!(commits >= 1.0);

    let (status, _, body) = get(metrics, "/health");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, _, _) = get(metrics, "/nope");
    assert_eq!(status, 404);
}
