//! One load generator thread: its connections, its open-loop schedule, its measurements.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::poll_fn;
use std::net::ToSocketAddrs;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant, SystemTime};

use bytes::BytesMut;
use chat_protocol::pb::{self, envelope::Body};
use chat_protocol::{encode_frame, envelope, FrameDecoder};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use futures_rustls::TlsConnector;
use glommio::net::TcpStream;
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;
use rustls_pki_types::ServerName;

use crate::accounts::{Account, Group};
use crate::hlog::IntervalHistograms;
use crate::oracle::{Oracle, Verdict};
use crate::progress::Progress;
use crate::schedule::{Phases, Schedule};
use crate::sizes::MessageSizes;
use crate::wire::{self, Stamp};
use crate::Args;

/// What one thread measured.
#[derive(Debug)]
pub struct ThreadResult {
    pub sent: u64,
    /// Acks that arrived inside the measured window: the achieved rate.
    pub acked_in_window: u64,
    pub errors: u64,
    pub duplicated: u64,
    pub reordered: u64,
    /// Inbox events whose seq skipped past the one after the last processed (the protocol
    /// promises none: a skipped event is one the server lost on the way).
    pub seq_gaps: u64,
    /// Message events at a seq that carried another message before (--failover checks).
    pub seq_reused: u64,
    /// Connections dropped and re-established (--reconnect-rate).
    pub reconnects: u64,
    /// Connections opened at start, per server of --server (by index).
    pub per_server: Vec<u64>,
    /// Receipt events that reached senders.
    pub receipts: u64,
    /// PresenceUpdate pushes received (--watch-presence).
    pub presence_updates: u64,
    /// Acked sends per stream (see [`stream`]).
    pub acked: HashMap<usize, u64>,
    /// Deliveries the acked sends call for, per stream (a group send: one per other member).
    pub expected: HashMap<usize, u64>,
    /// Distinct (receiver, message) deliveries per stream.
    pub delivered: HashMap<usize, u64>,
    /// Latencies in microseconds.
    pub ack: Histogram<u64>,
    pub service: Histogram<u64>,
    pub delivery: Histogram<u64>,
    pub lag: Histogram<u64>,
    /// Per-second delivery and ack histograms, with --hlog.
    pub intervals: Option<IntervalHistograms>,
}

impl ThreadResult {
    pub(crate) fn new() -> Self {
        ThreadResult {
            sent: 0,
            acked_in_window: 0,
            errors: 0,
            duplicated: 0,
            reordered: 0,
            seq_gaps: 0,
            seq_reused: 0,
            reconnects: 0,
            per_server: Vec::new(),
            receipts: 0,
            presence_updates: 0,
            acked: HashMap::new(),
            expected: HashMap::new(),
            delivered: HashMap::new(),
            ack: histogram(),
            service: histogram(),
            delivery: histogram(),
            lag: histogram(),
            intervals: None,
        }
    }

    /// An ack of a recorded send; `due_in_window` is how far into the window it was due.
    fn record_ack(&mut self, due_in_window: Duration, ack_us: u64, service_us: u64) {
        let _ = self.service.record(service_us);
        if self.ack.record(ack_us).is_ok() {
            if let Some(intervals) = &mut self.intervals {
                intervals.record_ack(due_in_window, ack_us);
            }
        }
    }

    fn record_delivery(&mut self, due_in_window: Duration, latency_us: u64) {
        if self.delivery.record(latency_us).is_ok() {
            if let Some(intervals) = &mut self.intervals {
                intervals.record_delivery(due_in_window, latency_us);
            }
        }
    }
}

pub fn histogram() -> Histogram<u64> {
    // 1 us .. 100 s at 3 significant digits; the bounds are constants, so this cannot fail.
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("valid histogram bounds")
}

/// Runs every thread to completion and returns their results.
/// A sender's messages form two streams, each with its own dense counter: to its partner
/// (1:1) and to its group. The stream id is what a message's stamp carries as "sender".
pub fn stream(sender: usize, to_group: bool) -> usize {
    sender * 2 + usize::from(to_group)
}

pub fn run_all(
    args: &Args,
    accounts: Vec<Account>,
    groups: &[Option<Group>],
    media: &[Option<pb::Media>],
) -> anyhow::Result<Vec<ThreadResult>> {
    let tls = chat_client::tls_config(&args.ca)?;
    let phases = Phases::from_args(args)?;
    let run: u32 = std::process::id()
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
    let start = Instant::now();
    let shared = Shared {
        run,
        start,
        start_wall: SystemTime::now(),
        phases,
        peer_ids: Arc::new(accounts.iter().map(|a| a.user_id).collect()),
        groups: Arc::new(groups.to_vec()),
        media: Arc::new(media.to_vec()),
        barrier: Arc::new(Barrier::new(args.threads)),
        progress: Arc::new(Progress::new(phases)),
    };
    let reporter = shared.progress.report();
    let mut handles = Vec::new();
    for t in 0..args.threads {
        let mine: Vec<Account> = accounts
            .iter()
            .filter(|a| a.index % args.threads == t)
            .cloned()
            .collect();
        let (args, tls, shared) = (args.clone(), tls.clone(), shared.clone());
        let placement = match args.pin {
            Some(cpu) => Placement::Fixed(cpu + t),
            None => Placement::Unbound,
        };
        let mut builder = LocalExecutorBuilder::new(placement).name(&format!("loadgen-{t}"));
        if args.spin_us > 0 {
            builder = builder.spin_before_park(Duration::from_micros(args.spin_us));
        }
        let handle = builder
            .spawn(move || async move { run_thread(args, t, tls, mine, shared).await })
            .map_err(|e| anyhow::anyhow!("starting loadgen thread {t}: {e}"))?;
        handles.push(handle);
    }
    let results = handles
        .into_iter()
        .map(|h| {
            h.join()
                .map_err(|e| anyhow::anyhow!("loadgen thread: {e}"))?
        })
        .collect();
    shared.progress.finish();
    reporter.thread().unpark();
    let _ = reporter.join();
    results
}

/// What every thread of a run shares.
#[derive(Clone)]
struct Shared {
    run: u32,
    /// One clock origin: a receiver compares a sender's intended time.
    start: Instant,
    /// The wall-clock time of `start`, for the interval log.
    start_wall: SystemTime,
    phases: Phases,
    peer_ids: Arc<Vec<u64>>,
    groups: Arc<Vec<Option<Group>>>,
    /// Each account's image for --media-share, by account index.
    media: Arc<Vec<Option<pb::Media>>>,
    barrier: Arc<Barrier>,
    progress: Arc<Progress>,
}

/// Per-thread state shared by its connection tasks (one thread: RefCell, no locks).
struct State {
    run: u32,
    start: Instant,
    progress: Arc<Progress>,
    /// Intended times before this are warm-up: sent and checked, not recorded.
    record_from_ns: Cell<u64>,
    /// End of the measured window (acks after it, e.g. while draining, do not count).
    record_until_ns: Cell<u64>,
    result: RefCell<ThreadResult>,
    /// Keyed by (receiving account, sender stream).
    oracle: RefCell<Oracle<(usize, usize)>>,
    inflight: Cell<u64>,
    /// User id of every account, by index (a partner is index ^ 1).
    peer_ids: Arc<Vec<u64>>,
    mark_read: bool,
    /// How soon a connection acknowledges what it received (--ack-interval-ms).
    ack_every: Duration,
    watch_presence: bool,
    /// --failover
    failover: bool,
    /// With --failover: the text of every message event seen, by (account, seq), so a seq
    /// the server gives a second, different message is caught (the receiver would drop it
    /// as seen).
    seen_texts: RefCell<HashMap<(usize, u64), u64>>,
}

/// One connection's outgoing bytes and its writer's wake-up.
#[derive(Default)]
struct Out {
    buf: RefCell<BytesMut>,
    waker: Cell<Option<Waker>>,
    /// request id -> a send awaiting its ack
    pending: RefCell<HashMap<u64, Pending>>,
    next_id: Cell<u64>,
    ready: Cell<bool>,
    /// Highest inbox seq processed: after a reconnect, older events are skipped.
    seen_seq: Cell<u64>,
    /// The connection's reader and writer; dropping them closes it.
    tasks: RefCell<Vec<glommio::Task<()>>>,
    /// The account's index and session token, for a reconnect by --failover.
    account: RefCell<Option<(usize, Vec<u8>)>>,
    /// Servers skipped past the account's own (`server_index`) by --failover.
    server_shift: Cell<usize>,
    /// Failovers since the last SendAck: the next one waits longer.
    failures: Cell<u32>,
}

/// A send awaiting its ack.
struct Pending {
    intended_ns: u64,
    actual_ns: u64,
    stream: usize,
    /// Deliveries it calls for (a group send: one per other member).
    fanout: u64,
    /// Sent again, with the same client_msg_id, after a reconnect.
    body: Body,
}

impl Out {
    fn push(&self, env: &pb::Envelope) {
        encode_frame(env, &mut self.buf.borrow_mut());
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    fn request_id(&self) -> u64 {
        let id = self.next_id.get() + 1;
        self.next_id.set(id);
        id
    }

    async fn next(&self) -> BytesMut {
        poll_fn(|cx| {
            let mut buf = self.buf.borrow_mut();
            if buf.is_empty() {
                self.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            } else {
                Poll::Ready(buf.split())
            }
        })
        .await
    }
}

struct Sender {
    index: usize,
    token: Vec<u8>,
    to: u64,
    counter: u64,
    group: Option<Group>,
    group_counter: u64,
    sends: u64,
    media: Option<pb::Media>,
    out: Rc<Out>,
}

async fn run_thread(
    args: Args,
    thread: usize,
    tls: Arc<rustls::ClientConfig>,
    mine: Vec<Account>,
    shared: Shared,
) -> anyhow::Result<ThreadResult> {
    let Shared {
        run,
        start,
        start_wall,
        phases,
        peer_ids,
        groups,
        media,
        barrier,
        progress,
    } = shared;
    let state = Rc::new(State {
        run,
        start,
        progress,
        record_from_ns: Cell::new(u64::MAX),
        record_until_ns: Cell::new(u64::MAX),
        result: RefCell::new(ThreadResult::new()),
        oracle: RefCell::default(),
        inflight: Cell::new(0),
        peer_ids: peer_ids.clone(),
        mark_read: args.mark_read,
        ack_every: Duration::from_secs_f64(args.ack_interval_ms.max(0.0) / 1000.0),
        watch_presence: args.watch_presence,
        failover: args.failover,
        seen_texts: RefCell::default(),
    });
    let mut servers = Vec::new();
    for server in args.servers() {
        let addr = server
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| anyhow::anyhow!("cannot resolve {server}"))?;
        let host = server
            .rsplit_once(':')
            .map_or("localhost", |(h, _)| {
                h.trim_start_matches('[').trim_end_matches(']')
            })
            .to_string();
        servers.push((addr, ServerName::try_from(host)?));
    }
    let dial = Rc::new(Dial {
        servers,
        connector: TlsConnector::from(tls),
    });
    let mut per_server = vec![0u64; dial.servers.len()];
    let mut senders = Vec::new();
    // Pings keep connections that send little (many users, a low rate) within the
    // server's idle timeout, as real clients do; from the first connection on.
    let opened: Rc<RefCell<Vec<Rc<Out>>>> = Rc::default();
    let keepalive = glommio::spawn_local(keepalive(opened.clone()));
    for account in &mine {
        let out = Rc::new(Out::default());
        // Sync from the acked cursor: leftovers of earlier runs are drained and ignored.
        dial.open(&state, &out, account, None).await?;
        if let Some(n) = per_server.get_mut(dial.server_index(account.index)) {
            *n += 1;
        }
        opened.borrow_mut().push(out.clone());
        let partner = account.index ^ 1;
        senders.push(Sender {
            index: account.index,
            to: peer_ids[partner],
            counter: 0,
            group: groups.get(account.index).copied().flatten(),
            group_counter: 0,
            sends: 0,
            media: media.get(account.index).cloned().flatten(),
            token: account.token.clone(),
            out,
        });
    }
    // Wait until every connection is logged in and caught up.
    let deadline = Instant::now() + Duration::from_secs(30);
    while senders.iter().any(|s| !s.out.ready.get()) {
        if Instant::now() > deadline || state.result.borrow().errors > 0 {
            barrier.wait();
            anyhow::bail!("connections did not log in and sync within 30 s");
        }
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    barrier.wait();

    // The open-loop schedule: message k of this thread is due at start + schedule.due(k).
    let schedule = Schedule::new(args.rate / args.threads as f64, phases.ramp);
    // Seeded by thread, so a rerun with the same flags sends the same sizes.
    let mut sizes = MessageSizes::new(args.size_dist, args.size, thread as u64);
    let t0 = state.start.elapsed().as_nanos() as u64;
    state
        .progress
        .schedule_started(state.start + Duration::from_nanos(t0));
    let record_from_ns = t0 + phases.record_from().as_nanos() as u64;
    let end_ns = t0 + phases.end().as_nanos() as u64;
    state.record_from_ns.set(record_from_ns);
    state.record_until_ns.set(end_ns);
    if args.hlog.is_some() {
        let window_start = start_wall + Duration::from_nanos(record_from_ns);
        state.result.borrow_mut().intervals =
            Some(IntervalHistograms::new(window_start, phases.measured));
    }
    let churn = (args.reconnect_rate > 0.0).then(|| {
        let period = Duration::from_secs_f64(args.threads as f64 / args.reconnect_rate);
        let conns: Vec<(Account, Rc<Out>)> = mine
            .iter()
            .cloned()
            .zip(senders.iter().map(|s| s.out.clone()))
            .collect();
        glommio::spawn_local(churn(state.clone(), dial.clone(), conns, period))
    });
    let storm = args.storm_at.map(|at| {
        let conns: Vec<(Account, Rc<Out>)> = mine
            .iter()
            .cloned()
            .zip(senders.iter().map(|s| s.out.clone()))
            .collect();
        let at = Duration::from_secs_f64(at.max(0.0));
        glommio::spawn_local(storm(state.clone(), dial.clone(), conns, at))
    });
    // Every n-th send of a user goes to its group: --group-share, spread evenly.
    let group_every = if args.group_share > 0.0 {
        (1.0 / args.group_share).round().max(1.0) as u64
    } else {
        u64::MAX
    };
    // Every n-th send carries the sender's image: --media-share, spread evenly.
    let media_every = if args.media_share > 0.0 {
        (1.0 / args.media_share).round().max(1.0) as u64
    } else {
        u64::MAX
    };
    let thumbnail = bytes::Bytes::from(vec![0x5a; 1024]);
    let mut k: u64 = 0;
    let mut next_sender = 0;
    loop {
        let now = state.start.elapsed().as_nanos() as u64;
        if now >= end_ns {
            break;
        }
        loop {
            let due = t0 + schedule.due_ns(k);
            if due > now {
                // Sleep, never spin: a task that stays runnable starves glommio's I/O polling
                // (and so the readers that time acks and deliveries). Timer slack shows up
                // in the schedule-lag histogram, and sends that fell due meanwhile go out at
                // once with their original intended time.
                glommio::timer::sleep(Duration::from_nanos(due - now)).await;
                break;
            }
            let actual = state.start.elapsed().as_nanos() as u64;
            let count = senders.len();
            let s = &mut senders[next_sender];
            next_sender = (next_sender + 1) % count;
            s.sends += 1;
            let group = s.group.filter(|_| s.sends % group_every == 0);
            let counter = if group.is_some() {
                s.group_counter += 1;
                s.group_counter
            } else {
                s.counter += 1;
                s.counter
            };
            let stream = stream(s.index, group.is_some());
            let stamp = Stamp {
                run: state.run,
                sender: stream as u32,
                counter,
                intended_ns: due,
            };
            let id = s.out.request_id();
            let fanout = group.map_or(1, |g| g.fanout);
            let pending_at = (due, actual, stream, fanout);
            let client_msg_id = (u64::from(state.run) << 32) | counter;
            let text = wire::encode(stamp, sizes.next_size());
            // The send names the asset; the server fills in the rest of the media.
            let media = s
                .media
                .as_ref()
                .filter(|_| s.sends % media_every == 0)
                .map(|m| {
                    Box::new(pb::Media {
                        asset_id: m.asset_id.clone(),
                        thumbnail: thumbnail.clone(),
                        ..Default::default()
                    })
                });
            let body = match group {
                Some(g) => Body::SendGroupMessage(pb::SendGroupMessage {
                    media,
                    group_id: g.id,
                    client_msg_id,
                    text,
                    ..Default::default()
                }),
                None => Body::SendMessage(pb::SendMessage {
                    media,
                    to_user_id: s.to,
                    client_msg_id,
                    text,
                    ..Default::default()
                }),
            };
            s.out.push(&envelope(id, body.clone()));
            let (intended_ns, actual_ns, stream, fanout) = pending_at;
            s.out.pending.borrow_mut().insert(
                id,
                Pending {
                    intended_ns,
                    actual_ns,
                    stream,
                    fanout,
                    body,
                },
            );
            state.inflight.set(state.inflight.get() + 1);
            state.progress.sent.fetch_add(1, Ordering::Relaxed);
            let mut r = state.result.borrow_mut();
            r.sent += 1;
            if due >= state.record_from_ns.get() {
                let _ = r.lag.record(((actual.saturating_sub(due)) / 1000).max(1));
            }
            k += 1;
        }
    }
    drop(churn);
    drop(storm);
    // Drain: wait for outstanding acks and deliveries, for a bounded time.
    let drain_until = Instant::now() + Duration::from_secs(5);
    while state.inflight.get() > 0 && Instant::now() < drain_until {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    // Deliveries trail their acks slightly (and may land on another thread's receivers).
    glommio::timer::sleep(Duration::from_millis(300)).await;
    drop(keepalive);
    for s in &senders {
        drop(s.out.tasks.take());
    }
    // Cancelled tasks may still hold the state until the executor drops them: take, not unwrap.
    let mut result = std::mem::replace(&mut *state.result.borrow_mut(), ThreadResult::new());
    result.per_server = per_server;
    for ((_receiver, stream), delivered) in state.oracle.borrow().delivered() {
        *result.delivered.entry(stream).or_default() += delivered;
    }
    // Where a failed run lost messages: receiver, sender stream, missing counters.
    for ((receiver, stream), missing) in state.oracle.borrow().gaps().take(5) {
        let shown: Vec<u64> = missing.iter().copied().take(8).collect();
        eprintln!(
            "gap: receiver {receiver} never got counters {shown:?} ({} in all) of stream {stream}",
            missing.len()
        );
    }
    Ok(result)
}

/// Where and how to connect: connection N to server N mod the number of servers.
struct Dial {
    servers: Vec<(std::net::SocketAddr, ServerName<'static>)>,
    connector: TlsConnector,
}

impl Dial {
    fn server_index(&self, account: usize) -> usize {
        crate::server_index(account, self.servers.len())
    }

    /// The server `out` connects to now (its own, unless --failover moved it on).
    fn server_of(&self, out: &Out, account: usize) -> usize {
        (self.server_index(account) + out.server_shift.get()) % self.servers.len().max(1)
    }

    /// (Re)connects `out`'s account: Resume, Sync after `after_seq` (None: from the acked
    /// cursor), then every send still awaiting its ack, again with its client_msg_id (the
    /// server stores a retry once). Whatever was queued for the old connection is dropped.
    async fn open(
        self: &Rc<Self>,
        state: &Rc<State>,
        out: &Rc<Out>,
        account_token: &impl TokenOf,
        after_seq: Option<u64>,
    ) -> anyhow::Result<()> {
        *out.account.borrow_mut() = Some((account_token.index(), account_token.token().to_vec()));
        let (addr, name) = self
            .servers
            .get(self.server_of(out, account_token.index()))
            .ok_or_else(|| anyhow::anyhow!("no server to connect to"))?;
        let glommio_err =
            |e: glommio::GlommioError<()>| anyhow::anyhow!("connecting to {addr}: {e}");
        let tcp = TcpStream::connect(*addr).await.map_err(glommio_err)?;
        tcp.set_nodelay(true).map_err(glommio_err)?;
        let stream = self.connector.connect(name.clone(), tcp).await?;
        let (reader, writer) = futures_lite::io::split(stream);
        out.buf.borrow_mut().clear();
        out.ready.set(false);
        out.push(&envelope(
            out.request_id(),
            Body::Resume(pb::Resume {
                token: account_token.token().to_vec().into(),
            }),
        ));
        out.push(&envelope(
            out.request_id(),
            Body::Sync(pb::Sync { after_seq }),
        ));
        let me = account_token.index();
        if state.watch_presence {
            if let Some(&partner) = state.peer_ids.get(me ^ 1) {
                let req = Body::SubscribePresence(pb::SubscribePresence {
                    user_ids: vec![partner],
                });
                out.push(&envelope(out.request_id(), req));
            }
        }
        let mut resend: Vec<(u64, Body)> = out
            .pending
            .borrow()
            .iter()
            .map(|(id, p)| (*id, p.body.clone()))
            .collect();
        resend.sort_unstable_by_key(|(id, _)| *id);
        for (id, body) in resend {
            out.push(&envelope(id, body));
        }
        let reading = {
            let (state, out, dial) = (state.clone(), out.clone(), self.clone());
            async move {
                let ended = read_loop(state.clone(), out.clone(), reader, me).await;
                if state.failover {
                    // Detached: reopening replaces (and so cancels) this very task.
                    glommio::spawn_local(failover(state, dial, out, ended)).detach();
                }
            }
        };
        let mut tasks = vec![
            glommio::spawn_local(write_loop(out.clone(), writer)),
            glommio::spawn_local(reading),
        ];
        if state.failover {
            tasks.push(glommio::spawn_local(watchdog(
                state.clone(),
                self.clone(),
                out.clone(),
            )));
        }
        *out.tasks.borrow_mut() = tasks;
        Ok(())
    }
}

/// Why a connection's reader stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// The server closed the connection (or it broke).
    Closed,
    /// A request was answered UNAVAILABLE, with --failover.
    Unavailable,
}

/// --failover: reopens the connection, on the next server if this one closed it, with
/// exponential backoff and jitter (growing over failovers that bring no SendAck), until it
/// is back (or 100 attempts failed: an error).
async fn failover(state: Rc<State>, dial: Rc<Dial>, out: Rc<Out>, ended: Ended) {
    drop(out.tasks.take());
    let Some((index, token)) = out.account.borrow().clone() else {
        return;
    };
    let account = Stored { index, token };
    for attempt in 0..100u32 {
        if ended == Ended::Closed || attempt > 0 {
            out.server_shift.set(out.server_shift.get() + 1);
        }
        let failures = out.failures.get();
        out.failures.set(failures.saturating_add(1));
        let backoff = (25u64 << failures.min(6)).min(1000);
        // Spread by account, so connections that failed together come back apart.
        let spread = (index as u64).wrapping_mul(7919) ^ u64::from(attempt).wrapping_mul(104_729);
        let jitter = spread % (backoff / 2 + 1);
        glommio::timer::sleep(Duration::from_millis(backoff / 2 + jitter)).await;
        let after = Some(out.seen_seq.get());
        if dial.open(&state, &out, &account, after).await.is_ok() {
            state.result.borrow_mut().reconnects += 1;
            return;
        }
    }
    state.result.borrow_mut().errors += 1;
}

/// How long --failover waits for a Resume and Sync, or for a send's ack, before it gives
/// the connection up: a request sent to a node that died is never answered (the mesh
/// between nodes delivers at most once), and a client's timeout is what recovers it.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// --failover: reopens the connection when its Resume and Sync, or its oldest send, has
/// waited longer than [`ANSWER_TIMEOUT`]. Ends with the connection (it is one of its tasks).
async fn watchdog(state: Rc<State>, dial: Rc<Dial>, out: Rc<Out>) {
    let opened = Instant::now();
    loop {
        glommio::timer::sleep(Duration::from_millis(500)).await;
        let now = state.start.elapsed().as_nanos() as u64;
        let timeout = ANSWER_TIMEOUT.as_nanos() as u64;
        // Sends from before this connection were sent again when it opened.
        let waited = opened.elapsed() > ANSWER_TIMEOUT;
        let stuck_login = waited && !out.ready.get();
        let stuck_send = waited
            && out
                .pending
                .borrow()
                .values()
                .any(|p| now.saturating_sub(p.actual_ns) > timeout);
        if stuck_login || stuck_send {
            glommio::spawn_local(failover(state, dial, out, Ended::Closed)).detach();
            return;
        }
    }
}

/// An account as a reconnect needs it.
struct Stored {
    index: usize,
    token: Vec<u8>,
}

impl TokenOf for Stored {
    fn token(&self) -> &[u8] {
        &self.token
    }
    fn index(&self) -> usize {
        self.index
    }
}

/// Reconnect churn: every `period`, the next connection in turn drops and reconnects.
async fn churn(state: Rc<State>, dial: Rc<Dial>, conns: Vec<(Account, Rc<Out>)>, period: Duration) {
    for (account, out) in conns.iter().cycle() {
        glommio::timer::sleep(period).await;
        drop(out.tasks.take());
        let after = Some(out.seen_seq.get());
        match dial.open(&state, out, account, after).await {
            Ok(()) => state.result.borrow_mut().reconnects += 1,
            Err(_) => state.result.borrow_mut().errors += 1,
        }
    }
}

/// --storm-at: after `at`, every connection drops at once, then all reconnect together;
/// one that cannot get through retries, as a client would.
async fn storm(state: Rc<State>, dial: Rc<Dial>, conns: Vec<(Account, Rc<Out>)>, at: Duration) {
    glommio::timer::sleep(at).await;
    for (_, out) in &conns {
        drop(out.tasks.take());
    }
    let reopening: Vec<_> = conns
        .into_iter()
        .map(|(account, out)| {
            let (state, dial) = (state.clone(), dial.clone());
            glommio::spawn_local(async move {
                for attempt in 0..50u32 {
                    let after = Some(out.seen_seq.get());
                    if dial.open(&state, &out, &account, after).await.is_ok() {
                        state.result.borrow_mut().reconnects += 1;
                        return;
                    }
                    glommio::timer::sleep(Duration::from_millis(20 * u64::from(attempt + 1))).await;
                }
                state.result.borrow_mut().errors += 1;
            })
        })
        .collect();
    for task in reopening {
        task.await;
    }
}

/// What reconnecting needs of an account.
trait TokenOf {
    fn token(&self) -> &[u8];
    fn index(&self) -> usize;
}

impl TokenOf for Account {
    fn token(&self) -> &[u8] {
        &self.token
    }
    fn index(&self) -> usize {
        self.index
    }
}

impl TokenOf for Sender {
    fn token(&self) -> &[u8] {
        &self.token
    }
    fn index(&self) -> usize {
        self.index
    }
}

/// How often every connection pings (the server closes connections silent for 90 s).
const KEEPALIVE: Duration = Duration::from_secs(30);

/// Pings every open connection every [`KEEPALIVE`]; the Pongs are ignored.
async fn keepalive(outs: Rc<RefCell<Vec<Rc<Out>>>>) {
    loop {
        glommio::timer::sleep(KEEPALIVE).await;
        for out in outs.borrow().iter() {
            if !out.tasks.borrow().is_empty() {
                out.push(&envelope(
                    out.request_id(),
                    Body::Ping(pb::Ping { nonce: 0 }),
                ));
            }
        }
    }
}

async fn write_loop(out: Rc<Out>, mut writer: impl futures_lite::AsyncWrite + Unpin) {
    loop {
        let batch = out.next().await;
        if writer.write_all(&batch).await.is_err() || writer.flush().await.is_err() {
            return;
        }
    }
}

async fn read_loop(
    state: Rc<State>,
    out: Rc<Out>,
    mut reader: impl futures_lite::AsyncRead + Unpin,
    me: usize,
) -> Ended {
    let decoder = FrameDecoder::new(16 << 20);
    let mut buf = BytesMut::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut unacked_seq = 0u64;
    // Highest inbox seq of a 1:1 message not yet marked read (--mark-read).
    let mut unread_direct = 0u64;
    let mut last_ack = Instant::now();
    loop {
        // With something to acknowledge, wait for more bytes only until the Ack is due.
        let read = if unacked_seq > 0 {
            let due = (last_ack + state.ack_every).saturating_duration_since(Instant::now());
            let timeout = async {
                glommio::timer::sleep(due).await;
                Ok(None)
            };
            futures_lite::future::or(async { reader.read(&mut chunk).await.map(Some) }, timeout)
                .await
        } else {
            reader.read(&mut chunk).await.map(Some)
        };
        match read {
            Ok(Some(0)) | Err(_) => return Ended::Closed,
            Ok(Some(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(None) => {}
        }
        let now = state.start.elapsed().as_nanos() as u64;
        while let Ok(Some(env)) = decoder.decode(&mut buf) {
            match env.body {
                Some(Body::SendAck(_)) => {
                    let Some(Pending {
                        intended_ns: intended,
                        actual_ns: actual,
                        stream,
                        fanout,
                        ..
                    }) = out.pending.borrow_mut().remove(&env.request_id)
                    else {
                        continue;
                    };
                    state.inflight.set(state.inflight.get().saturating_sub(1));
                    out.failures.set(0);
                    let mut r = state.result.borrow_mut();
                    *r.acked.entry(stream).or_default() += 1;
                    *r.expected.entry(stream).or_default() += fanout;
                    state.progress.acked.fetch_add(1, Ordering::Relaxed);
                    let window = state.record_from_ns.get()..state.record_until_ns.get();
                    if window.contains(&now) {
                        r.acked_in_window += 1;
                    }
                    let record_from = state.record_from_ns.get();
                    if intended >= record_from {
                        r.record_ack(
                            Duration::from_nanos(intended - record_from),
                            ((now.saturating_sub(intended)) / 1000).max(1),
                            ((now.saturating_sub(actual)) / 1000).max(1),
                        );
                    }
                }
                Some(Body::Event(event)) => {
                    // Seen before a reconnect: a real client drops it by seq, and so do we.
                    if state.failover {
                        if let Some(pb::event::Kind::Message(m)) = &event.kind {
                            check_seq_reuse(&state, me, event.seq, &m.text);
                        }
                    }
                    if event.seq <= out.seen_seq.get() {
                        continue;
                    }
                    let seen = out.seen_seq.get();
                    if seen > 0 && event.seq > seen + 1 {
                        let mut r = state.result.borrow_mut();
                        r.seq_gaps += 1;
                        if r.seq_gaps <= 5 {
                            eprintln!(
                                "seq gap: account {me} (user {}) got seq {} after {seen}, {:.1} s in",
                                state.peer_ids[me],
                                event.seq,
                                state.start.elapsed().as_secs_f64()
                            );
                        }
                    }
                    out.seen_seq.set(event.seq);
                    unacked_seq = unacked_seq.max(event.seq);
                    match event.kind {
                        Some(pb::event::Kind::Message(m)) => {
                            if m.group_id == 0 {
                                unread_direct = unread_direct.max(event.seq);
                            }
                            on_message(&state, me, &m.text, now);
                        }
                        Some(pb::event::Kind::Receipt(_)) => {
                            state.result.borrow_mut().receipts += 1;
                        }
                        _ => {}
                    }
                }
                Some(Body::SyncDone(_)) => out.ready.set(true),
                Some(Body::PresenceUpdate(_)) => state.result.borrow_mut().presence_updates += 1,
                Some(Body::Error(e))
                    if state.failover && e.code == pb::ErrorCode::Unavailable as i32 =>
                {
                    // Everything unacknowledged is sent again on the new connection.
                    return Ended::Unavailable;
                }
                Some(Body::Error(e)) => {
                    // The first few, so a failed run says what failed.
                    if state.result.borrow().errors < 5 {
                        eprintln!("error from the server: {:?} {}", e.code(), e.message);
                    }
                    if out.pending.borrow_mut().remove(&env.request_id).is_some() {
                        state.inflight.set(state.inflight.get().saturating_sub(1));
                    }
                    state.result.borrow_mut().errors += 1;
                    state.progress.errors.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
        }
        // Acknowledge what arrived, batched as a real client does: within --ack-interval-ms.
        if unacked_seq > 0 && last_ack.elapsed() >= state.ack_every {
            last_ack = Instant::now();
            out.push(&envelope(
                out.request_id(),
                Body::Ack(pb::Ack {
                    up_to_seq: unacked_seq,
                }),
            ));
            unacked_seq = 0;
            if state.mark_read && unread_direct > 0 {
                if let Some(&partner) = state.peer_ids.get(me ^ 1) {
                    out.push(&envelope(
                        out.request_id(),
                        Body::MarkRead(pb::MarkRead {
                            with_user_id: partner,
                            group_id: 0,
                            up_to_seq: unread_direct,
                        }),
                    ));
                }
                unread_direct = 0;
            }
        }
    }
}

/// Counts a message event whose seq an earlier, different message of this account had.
fn check_seq_reuse(state: &State, me: usize, seq: u64, text: &str) {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    let hash = h.finish();
    let earlier = *state
        .seen_texts
        .borrow_mut()
        .entry((me, seq))
        .or_insert(hash);
    if earlier != hash {
        let mut r = state.result.borrow_mut();
        r.seq_reused += 1;
        if r.seq_reused <= 5 {
            let stamp = wire::decode(text).map(|s| (s.sender, s.counter));
            eprintln!(
                "seq reused: account {me} (user {}) seq {seq} now carries another message \
                 (stream, counter {stamp:?}), {:.1} s in",
                state.peer_ids[me],
                state.start.elapsed().as_secs_f64()
            );
        }
    }
}

/// A message arrived at receiver `me`: judge it, and time it.
fn on_message(state: &State, me: usize, text: &str, now: u64) {
    let Some(stamp) = wire::decode(text) else {
        return;
    };
    if stamp.run != state.run {
        return; // a leftover of an earlier run
    }
    let stream = stamp.sender as usize;
    if stream / 2 == me {
        return; // our own group message, echoed to us as a member
    }
    let mut r = state.result.borrow_mut();
    match state
        .oracle
        .borrow_mut()
        .observe((me, stream), stamp.counter)
    {
        Verdict::Duplicate => {
            r.duplicated += 1;
            state.progress.duplicated.fetch_add(1, Ordering::Relaxed);
            return;
        }
        Verdict::Reordered => {
            r.reordered += 1;
            // The first few, so a failed run says where (the stream's later counters came first).
            if r.reordered <= 5 {
                eprintln!(
                    "reordered: receiver {me} got counter {} of stream {stream} after a later one, {:.1} s in",
                    stamp.counter,
                    state.start.elapsed().as_secs_f64()
                );
            }
            state.progress.reordered.fetch_add(1, Ordering::Relaxed);
        }
        Verdict::InOrder => {}
    }
    let latency_us = (now.saturating_sub(stamp.intended_ns) / 1000).max(1);
    state.progress.delivered(latency_us);
    let record_from = state.record_from_ns.get();
    if stamp.intended_ns >= record_from {
        r.record_delivery(
            Duration::from_nanos(stamp.intended_ns - record_from),
            latency_us,
        );
    }
}
