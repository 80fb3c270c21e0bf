//! Push notifications, against a real HTTP push gateway stand-in on 127.0.0.1: coalescing,
//! retries, suppression (online, read elsewhere), previews, rejected tokens, restarts.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use chat_client::{pb, Chat, Connection};
use chat_server::Config;
use serde_json::{json, Value};

use crate::support::{name_on_shard, next_event, next_message, TestServer};

const NOTIFY_PATH: &str = "/_matrix/push/v1/notify";
const WAIT: Duration = Duration::from_secs(30);

/// How the stand-in answers a request.
#[derive(Debug, Clone)]
enum Answer {
    /// This status with an empty JSON object.
    Status(u16),
    /// 200 with this body.
    Ok(&'static str),
    /// 200 once [`Gateway::release`] is called; requests wait behind it.
    Hold,
}

/// One request the gateway received.
#[derive(Debug, Clone)]
struct Received {
    method: String,
    path: String,
    content_type: String,
    json: Value,
    /// The status it was answered with.
    status: u16,
}

impl Received {
    fn notification(&self) -> &Value {
        &self.json["notification"]
    }
    fn user(&self) -> u64 {
        self.notification()["user_id"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    }
}

#[derive(Debug, Default)]
struct GatewayState {
    received: Vec<Received>,
    script: VecDeque<Answer>,
    /// Once the script is used up; 200 when unset.
    default: Option<Answer>,
    released: bool,
}

/// An HTTP push gateway on 127.0.0.1 in a thread: records every request's JSON and
/// answers by script.
struct Gateway {
    url: String,
    state: Arc<(Mutex<GatewayState>, Condvar)>,
    stop: Arc<AtomicBool>,
    addr: std::net::SocketAddr,
}

impl Gateway {
    fn start(script: Vec<Answer>) -> Self {
        Self::start_with(script, None)
    }

    /// The same gateway behind TLS, with a certificate for `localhost` that the PEM file
    /// `ca` (written here) makes trusted.
    fn start_tls(script: Vec<Answer>, ca: &std::path::Path) -> Self {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        std::fs::write(ca, cert.cert.pem()).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
        Self::start_with(script, Some(Arc::new(config)))
    }

    fn start_with(script: Vec<Answer>, tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new((
            Mutex::new(GatewayState {
                script: script.into(),
                ..GatewayState::default()
            }),
            Condvar::new(),
        ));
        let stop = Arc::new(AtomicBool::new(false));
        let (shared, stopping) = (state.clone(), stop.clone());
        let url = match tls {
            None => format!("http://{addr}{NOTIFY_PATH}"),
            Some(_) => format!("https://localhost:{}{NOTIFY_PATH}", addr.port()),
        };
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                stream.set_read_timeout(Some(WAIT)).unwrap();
                match &tls {
                    None => {
                        serve(stream, &shared);
                    }
                    Some(config) => {
                        let conn = rustls::ServerConnection::new(config.clone()).unwrap();
                        if let Some(mut tls) =
                            serve(rustls::StreamOwned::new(conn, stream), &shared)
                        {
                            tls.conn.send_close_notify();
                            let _ = tls.flush();
                        }
                    }
                }
            }
        });
        Gateway {
            url,
            state,
            stop,
            addr,
        }
    }

    fn set_default(&self, answer: Answer) {
        self.state.0.lock().unwrap().default = Some(answer);
    }

    fn release(&self) {
        self.state.0.lock().unwrap().released = true;
        self.state.1.notify_all();
    }

    /// Every request so far, once `done` holds for them (fails after [`WAIT`]).
    fn wait_until(&self, what: &str, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = Instant::now() + WAIT;
        let (lock, cond) = &*self.state;
        let mut state = lock.lock().unwrap();
        while !done(&state.received) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "gateway: timed out waiting for {what}; got {:#?}",
                state.received
            );
            state = cond.wait_timeout(state, left).unwrap().0;
        }
        state.received.clone()
    }

    /// The requests for `user`, once there are at least `n`.
    fn for_user(&self, user: u64, n: usize) -> Vec<Received> {
        let of_user = |r: &[Received]| -> Vec<Received> {
            r.iter().filter(|r| r.user() == user).cloned().collect()
        };
        let all = self.wait_until(&format!("{n} requests for user {user}"), |r| {
            of_user(r).len() >= n
        });
        of_user(&all)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.release();
        let _ = TcpStream::connect(self.addr);
    }
}

/// Reads one request, records it, answers it; returns the stream to be closed.
fn serve<S: Read + Write>(stream: S, shared: &(Mutex<GatewayState>, Condvar)) -> Option<S> {
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() || request_line.is_empty() {
        return None;
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let (mut length, mut content_type) = (0, String::new());
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').unwrap();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().unwrap(),
            "content-type" => content_type = value.trim().to_string(),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    let json: Value = serde_json::from_slice(&body).unwrap();

    let (lock, cond) = shared;
    let mut state = lock.lock().unwrap();
    let answer = state
        .script
        .pop_front()
        .or_else(|| state.default.clone())
        .unwrap_or(Answer::Ok("{}"));
    let (status, reply) = match answer {
        Answer::Status(s) => (s, "{}"),
        Answer::Ok(body) => (200, body),
        Answer::Hold => (200, "{}"),
    };
    state.received.push(Received {
        method,
        path,
        content_type,
        json,
        status,
    });
    cond.notify_all();
    while matches!(answer, Answer::Hold) && !state.released {
        state = cond.wait(state).unwrap();
    }
    drop(state);
    let mut stream = reader.into_inner();
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{reply}",
        reply.len()
    );
    let _ = stream.flush();
    Some(stream)
}

thread_local! {
    /// The gateway of the test running on this thread (config tweaks are plain fns).
    static GATEWAY_URL: RefCell<String> = const { RefCell::new(String::new()) };
    /// The CA file of an https gateway.
    static GATEWAY_CA: RefCell<Option<std::path::PathBuf>> = const { RefCell::new(None) };
}

fn push_config(config: &mut Config) {
    config.push.gateway_url = Some(GATEWAY_URL.with(|u| u.borrow().clone()));
    config.push.ca_file = GATEWAY_CA.with(|c| c.borrow().clone());
    config.push.coalesce_ms = 700;
    config.push.retry_initial_ms = 100;
}

/// One request at a time per shard: a held request keeps the shard's others waiting.
fn push_config_one_slot(config: &mut Config) {
    push_config(config);
    config.push.max_in_flight = 1;
}

/// Jobs outlive many failures (they must still be there after a restart).
fn push_config_patient(config: &mut Config) {
    push_config(config);
    config.push.max_attempts = 100;
}

/// A window long enough to change messages within it.
fn push_config_slow(config: &mut Config) {
    push_config(config);
    config.push.coalesce_ms = 3000;
}

fn push_config_tiny_queue(config: &mut Config) {
    push_config(config);
    config.push.max_queued = 2;
}

fn push_config_two_attempts(config: &mut Config) {
    push_config(config);
    config.push.max_attempts = 2;
}

fn start(gateway: &Gateway, tweak: fn(&mut Config)) -> TestServer {
    GATEWAY_URL.with(|u| *u.borrow_mut() = gateway.url.clone());
    TestServer::start_with(2, tweak, |_| {})
}

fn set_settings(conn: &Connection, push_previews: Option<bool>) {
    let req = pb::SetSettings {
        read_receipts: None,
        presence_visibility: Some(pb::PresenceVisibility::Everyone as i32),
        push_previews,
    };
    conn.request(pb::envelope::Body::SetSettings(req)).unwrap();
}

/// Waits until `observer` sees `user` (visible to everyone) offline.
fn wait_offline(observer: &Connection, user: u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let p = observer.get_presence(&[user]).unwrap();
        assert!(!p[0].hidden, "presence of {user} is hidden");
        if !p[0].online {
            return;
        }
        assert!(Instant::now() < deadline, "user {user} still online");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Registers `name` with APNs `tokens`, then logs them out; returns their id once the
/// server has them offline.
fn offline_user(server: &TestServer, name: &str, tokens: &[&str], observer: &Connection) -> u64 {
    offline_user_with(server, name, tokens, observer, true)
}

fn offline_user_with(
    server: &TestServer,
    name: &str,
    tokens: &[&str],
    observer: &Connection,
    previews: bool,
) -> u64 {
    let (conn, login) = server.user(name);
    for token in tokens {
        conn.register_push_token(pb::PushPlatform::Apns, token)
            .unwrap();
    }
    set_settings(&conn, Some(previews));
    drop(conn);
    wait_offline(observer, login.user_id);
    login.user_id
}

fn devices(tokens: &[&str]) -> Value {
    Value::Array(
        tokens
            .iter()
            .map(|t| json!({"platform": "apns", "token": t}))
            .collect(),
    )
}

#[test]
fn push_coalesces_a_burst_into_one_notification_and_retries_after_a_500() {
    let gateway = Gateway::start(vec![Answer::Status(500)]);
    let server = start(&gateway, push_config);
    let (alice, alice_login) = server.user("alice");
    let alice_id = alice_login.user_id;
    let bob = offline_user(&server, "bob", &["bob-phone"], &alice);

    // Ten quick messages (pipelined), all stored before the coalescing window ends.
    let texts: Vec<String> = (1..=10).map(|i| format!("m{i}")).collect();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let last_seq = send_burst(&alice, bob, &texts)[9].seq;

    let got = gateway.for_user(bob, 2);
    assert_eq!(
        (got[0].status, got[1].status),
        (500, 200),
        "the 500 is retried"
    );
    let expected = json!({
        "user_id": bob.to_string(),
        "sender_id": alice_id.to_string(),
        "conversation": {"type": "user", "id": alice_id.to_string()},
        "seq": last_seq,
        "count": 10,
        "preview": "m10",
        "devices": devices(&["bob-phone"]),
    });
    for request in &got {
        assert_eq!(
            (
                request.method.as_str(),
                request.path.as_str(),
                request.content_type.as_str()
            ),
            ("POST", NOTIFY_PATH, "application/json")
        );
        let mut n = request.notification().clone();
        assert!(n["timestamp_us"].as_u64().unwrap() > 0);
        n.as_object_mut().unwrap().remove("timestamp_us");
        assert_eq!(
            n, expected,
            "one notification for the burst, with its count"
        );
    }

    // Delivered jobs are gone: the next message is announced on its own.
    let ack = alice.send_message(bob, "m11").unwrap();
    let got = gateway.for_user(bob, 3);
    assert_eq!(got.len(), 3);
    let n = got[2].notification();
    assert_eq!(
        (n["count"].as_u64(), n["seq"].as_u64()),
        (Some(1), Some(ack.seq))
    );
    assert_eq!(n["preview"], "m11");
}

#[test]
fn push_skips_a_user_who_is_online() {
    let gateway = Gateway::start(Vec::new());
    let server = start(&gateway, push_config);
    let (alice, _) = server.user("alice");
    let (bob_conn, bob_login) = server.user("bob");
    let bob = bob_login.user_id;
    bob_conn
        .register_push_token(pb::PushPlatform::Fcm, "bob-phone")
        .unwrap();
    set_settings(&bob_conn, None);
    bob_conn.sync(None).unwrap();

    alice.send_message(bob, "while online").unwrap();
    assert_eq!(next_message(&bob_conn).text, "while online");
    drop(bob_conn);
    wait_offline(&alice, bob);
    let ack = alice.send_message(bob, "while offline").unwrap();

    // Only the message stored while bob was offline is announced.
    let got = gateway.for_user(bob, 1);
    assert_eq!(got.len(), 1);
    let n = got[0].notification();
    assert_eq!(
        (n["count"].as_u64(), n["seq"].as_u64()),
        (Some(1), Some(ack.seq))
    );
    assert_eq!(n["preview"], "while offline");
    assert_eq!(
        n["devices"],
        json!([{"platform": "fcm", "token": "bob-phone"}])
    );
}

#[test]
fn push_announces_a_group_message_to_an_offline_member() {
    let gateway = Gateway::start(Vec::new());
    let server = start(&gateway, push_config);
    let (alice, alice_login) = server.user("alice");
    let bob = offline_user(&server, "bob", &["bob-phone"], &alice);
    let (carol_conn, carol_login) = server.user("carol");
    carol_conn
        .register_push_token(pb::PushPlatform::Web, "carol-browser")
        .unwrap();
    carol_conn.sync(None).unwrap();

    let group = alice
        .create_group("lunch", &[bob, carol_login.user_id])
        .unwrap();
    let ack = alice
        .send_group_message(group.group_id, 1, "noon?")
        .unwrap();

    let got = gateway.for_user(bob, 1);
    let mut n = got[0].notification().clone();
    n.as_object_mut().unwrap().remove("timestamp_us");
    // The group's creation is not announced: the count is the message alone.
    assert_eq!(
        n,
        json!({
            "user_id": bob.to_string(),
            "sender_id": alice_login.user_id.to_string(),
            "conversation": {"type": "group", "id": group.group_id.to_string()},
            "seq": ack.seq,
            "count": 1,
            "preview": "noon?",
            "devices": devices(&["bob-phone"]),
        })
    );
    // Carol is online: she got the creation and the message themselves, and no
    // notification.
    let created = next_event(&carol_conn);
    assert!(matches!(
        created.kind,
        Some(pb::event::Kind::GroupChange(_))
    ));
    assert_eq!(next_message(&carol_conn).text, "noon?");
    let all = gateway.wait_until("bob's notification", |r| !r.is_empty());
    assert!(all.iter().all(|r| r.user() != carol_login.user_id));
}

#[test]
fn push_without_a_preview_when_the_user_turned_previews_off() {
    let gateway = Gateway::start(Vec::new());
    let server = start(&gateway, push_config);
    let (alice, _) = server.user("alice");
    let bob = offline_user_with(&server, "bob", &["bob-phone"], &alice, false);

    let ack = alice.send_message(bob, "a secret").unwrap();
    let got = gateway.for_user(bob, 1);
    let n = got[0].notification();
    assert_eq!(n["seq"].as_u64(), Some(ack.seq));
    assert!(n.get("preview").is_none(), "no preview key: {n}");
    assert!(!got[0].json.to_string().contains("secret"));
}

#[test]
fn push_tokens_the_gateway_rejects_are_removed() {
    let gateway = Gateway::start(vec![Answer::Ok(r#"{"rejected":["bob-old"]}"#)]);
    let server = start(&gateway, push_config);
    let (alice, _) = server.user("alice");
    // Registration is validated; unregistering an unknown token is fine.
    let err = alice
        .register_push_token(pb::PushPlatform::Unspecified, "x")
        .unwrap_err();
    assert_eq!(err.code(), Some(pb::ErrorCode::InvalidArgument));
    alice.unregister_push_token("never-registered").unwrap();

    let bob = offline_user(&server, "bob", &["bob-old", "bob-gone", "bob-new"], &alice);
    let (bob_conn, _) = server.login("bob");
    bob_conn.unregister_push_token("bob-gone").unwrap();
    drop(bob_conn);
    wait_offline(&alice, bob);

    alice.send_message(bob, "one").unwrap();
    let got = gateway.for_user(bob, 1);
    assert_eq!(
        got[0].notification()["devices"],
        devices(&["bob-old", "bob-new"])
    );

    alice.send_message(bob, "two").unwrap();
    let got = gateway.for_user(bob, 2);
    assert_eq!(got[1].notification()["devices"], devices(&["bob-new"]));
    assert_eq!(got[1].notification()["count"].as_u64(), Some(1));
}

#[test]
fn push_is_not_sent_for_a_message_read_on_another_session() {
    // Carol's request is held open; with one request at a time per shard, bob's
    // notification (same shard) waits behind it while bob reads on another session.
    let gateway = Gateway::start(vec![Answer::Hold]);
    let server = start(&gateway, push_config_one_slot);
    let (alice, alice_login) = server.user("alice");
    let (bob_name, carol_name) = (name_on_shard("bob", 0, 2), name_on_shard("carol", 0, 2));
    let bob = offline_user(&server, &bob_name, &["bob-phone"], &alice);
    let carol = offline_user(&server, &carol_name, &["carol-phone"], &alice);

    alice.send_message(carol, "hold the line").unwrap();
    gateway.for_user(carol, 1);
    let first = alice.send_message(bob, "read elsewhere").unwrap();

    let (bob_conn, _) = server.login(&bob_name);
    bob_conn.mark_read(alice_login.user_id, first.seq).unwrap();
    drop(bob_conn);
    wait_offline(&alice, bob);
    gateway.release();

    // Only the unread message is ever announced.
    let second = alice.send_message(bob, "unread").unwrap();
    let got = gateway.for_user(bob, 1);
    assert_eq!(got.len(), 1, "{got:#?}");
    let n = got[0].notification();
    assert_eq!(
        (n["count"].as_u64(), n["seq"].as_u64()),
        (Some(1), Some(second.seq))
    );
    assert_eq!(n["preview"], "unread");
}

#[test]
fn push_leaves_out_messages_deleted_for_everyone_and_previews_the_edited_text() {
    let gateway = Gateway::start(Vec::new());
    let server = start(&gateway, push_config_slow);
    let (alice, alice_login) = server.user("alice");
    let bob = offline_user(&server, "bob", &["bob-phone"], &alice);

    // Within one coalescing window: two messages, the newest deleted for everyone, the
    // other edited.
    let acks = send_burst(&alice, bob, &["lunch at noon?", "a secret"]);
    alice
        .delete_message(Chat::User(bob), acks[1].timestamp_us, true)
        .unwrap();
    alice
        .edit_message(Chat::User(bob), acks[0].timestamp_us, "lunch at 12:30?")
        .unwrap();
    let got = gateway.for_user(bob, 1);
    assert_eq!(got.len(), 1, "{got:#?}");
    let n = got[0].notification();
    assert_eq!(
        (n["count"].as_u64(), n["seq"].as_u64()),
        (Some(1), Some(acks[0].seq)),
        "only the message still there: {n}"
    );
    assert_eq!(n["preview"], "lunch at 12:30?");
    assert!(!got[0].json.to_string().contains("secret"), "{n}");

    // A group message deleted for everyone is left out as well; a notification whose
    // messages were all deleted is not sent.
    let group = alice.create_group("lunch", &[bob]).unwrap();
    let ack = alice
        .send_group_message(group.group_id, 1, "group secret")
        .unwrap();
    alice
        .delete_message(Chat::Group(group.group_id), ack.timestamp_us, true)
        .unwrap();
    let ack = alice.send_message(bob, "a secret too").unwrap();
    alice
        .delete_message(Chat::User(bob), ack.timestamp_us, true)
        .unwrap();
    let last = alice.send_message(bob, "see you").unwrap();
    let got = gateway.for_user(bob, 2);
    assert_eq!(got.len(), 2, "{got:#?}");
    let n = got[1].notification();
    assert_eq!(
        (
            n["count"].as_u64(),
            n["seq"].as_u64(),
            n["conversation"]["type"].as_str()
        ),
        (Some(1), Some(last.seq), Some("user")),
        "{n}"
    );
    assert_eq!(n["preview"], "see you");
    assert_eq!(n["sender_id"], alice_login.user_id.to_string());
    assert!(!got[1].json.to_string().contains("secret"), "{n}");
}

/// Sends `texts` to `to` pipelined (so they are all stored within one coalescing window);
/// returns their acks.
fn send_burst(conn: &Connection, to: u64, texts: &[&str]) -> Vec<pb::SendAck> {
    let pending: Vec<_> = texts
        .iter()
        .map(|text| {
            conn.start(pb::envelope::Body::SendMessage(pb::SendMessage {
                to_user_id: to,
                client_msg_id: rand::random(),
                text: text.to_string(),
                media: None,
                ..Default::default()
            }))
            .unwrap()
        })
        .collect();
    pending
        .into_iter()
        .map(|rx| match conn.finish(rx).unwrap() {
            pb::envelope::Body::SendAck(a) => a,
            other => panic!("expected a SendAck, got {other:?}"),
        })
        .collect()
}

#[test]
fn push_outbox_is_bounded() {
    let gateway = Gateway::start(Vec::new());
    let server = start(&gateway, push_config_tiny_queue);
    let (alice, _) = server.user("alice");
    let bob = offline_user(&server, "bob", &["bob-phone"], &alice);

    // The outbox holds two jobs: the third message is stored but not announced.
    let acks = send_burst(&alice, bob, &["one", "two", "three"]);
    let got = gateway.for_user(bob, 1);
    let n = got[0].notification();
    assert_eq!(
        (n["count"].as_u64(), n["seq"].as_u64()),
        (Some(2), Some(acks[1].seq))
    );
    assert_eq!(n["preview"], "two");
}

#[test]
fn push_gives_up_after_max_attempts() {
    let gateway = Gateway::start(vec![Answer::Status(500), Answer::Status(503)]);
    let server = start(&gateway, push_config_two_attempts);
    let (alice, _) = server.user("alice");
    let bob = offline_user(&server, "bob", &["bob-phone"], &alice);

    let first = alice.send_message(bob, "lost").unwrap();
    let got = gateway.for_user(bob, 2);
    for request in &got {
        assert_eq!(request.notification()["seq"].as_u64(), Some(first.seq));
    }
    // Two failures: that notification is dropped; the next message is announced alone.
    let second = alice.send_message(bob, "found").unwrap();
    let got = gateway.for_user(bob, 3);
    assert_eq!(got.len(), 3);
    let n = got[2].notification();
    assert_eq!(got[2].status, 200);
    assert_eq!(
        (n["count"].as_u64(), n["seq"].as_u64()),
        (Some(1), Some(second.seq))
    );
}

#[test]
fn push_jobs_survive_a_restart() {
    let gateway = Gateway::start(Vec::new());
    gateway.set_default(Answer::Status(500));
    let mut server = start(&gateway, push_config_patient);
    let (alice, _) = server.user("alice");
    let bob = offline_user(&server, "bob", &["bob-phone"], &alice);
    let ack = alice.send_message(bob, "before the restart").unwrap();
    gateway.for_user(bob, 1);
    drop(alice);

    server.restart();
    gateway.set_default(Answer::Ok("{}"));
    let all = gateway.wait_until("a delivered notification", |r| {
        r.iter().any(|r| r.user() == bob && r.status == 200)
    });
    let delivered: Vec<_> = all
        .iter()
        .filter(|r| r.user() == bob && r.status == 200)
        .collect();
    let n = delivered[0].notification();
    assert_eq!(
        (n["count"].as_u64(), n["seq"].as_u64()),
        (Some(1), Some(ack.seq))
    );
    assert_eq!(n["preview"], "before the restart");
}

#[test]
fn push_reaches_an_https_gateway_that_the_configured_ca_vouches_for() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("gateway-ca.pem");
    let gateway = Gateway::start_tls(vec![], &ca);
    GATEWAY_CA.with(|c| *c.borrow_mut() = Some(ca.clone()));
    let server = start(&gateway, push_config);
    GATEWAY_CA.with(|c| *c.borrow_mut() = None);
    let (alice, _) = server.user("alice");
    let bob = offline_user(&server, "bob", &["tls-token"], &alice);
    alice.send_message(bob, "over tls").unwrap();
    let got = gateway.for_user(bob, 1);
    assert_eq!(got[0].path, NOTIFY_PATH);
    assert_eq!(got[0].notification()["preview"], "over tls");
    assert_eq!(got[0].notification()["devices"], devices(&["tls-token"]));
}

#[test]
fn a_token_registered_by_another_user_is_taken_from_the_first() {
    let gateway = Gateway::start(vec![]);
    let server = start(&gateway, push_config);
    let (carol, _) = server.user("carol");
    // One phone: alice used it, then bob signed in on it without alice unregistering.
    let alice = offline_user(&server, "alice", &["one-phone", "alices-tablet"], &carol);
    let bob = offline_user(&server, "bob", &["one-phone"], &carol);
    carol.send_message(alice, "for alice").unwrap();
    carol.send_message(bob, "for bob").unwrap();
    let to_alice = gateway.for_user(alice, 1);
    assert_eq!(
        to_alice[0].notification()["devices"],
        devices(&["alices-tablet"]),
        "the phone is bob's now"
    );
    let to_bob = gateway.for_user(bob, 1);
    assert_eq!(to_bob[0].notification()["devices"], devices(&["one-phone"]));
}

#[test]
fn push_token_requests_refuse_an_empty_token() {
    let server = TestServer::start(1);
    let (conn, _) = server.user("tokens");
    let code = |r: chat_client::Result<()>| r.unwrap_err().code();
    assert_eq!(
        code(conn.register_push_token(pb::PushPlatform::Fcm, "")),
        Some(pb::ErrorCode::InvalidArgument)
    );
    assert_eq!(
        code(conn.unregister_push_token("")),
        Some(pb::ErrorCode::InvalidArgument)
    );
    assert_eq!(
        code(conn.register_push_token(pb::PushPlatform::Unspecified, "t")),
        Some(pb::ErrorCode::InvalidArgument)
    );
    // A token the user does not have: success, nothing happens.
    conn.unregister_push_token("never-registered").unwrap();
}
