//! One shard's push dispatcher: reads the outbox, sends one notification per user, retries
//! with backoff, deletes jobs once delivered or given up.
//!
//! It keeps in memory, per user with jobs, the ids of their jobs and where the user stands:
//! due (waiting for a request slot), in flight, or backing off after a failure. The jobs
//! stay in the outbox until the gateway accepted them or they were dropped, so after a
//! restart the next dispatcher reads and sends them again (at-least-once).

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

use chat_protocol::pb;
use chat_storage::StorageError;

use super::http::{self, Endpoint, Response};
use super::{bump, gateway};
use crate::runtime;
use crate::shard::Shard;

/// Jobs read from the outbox at a time (the dispatcher yields between batches).
const READ_BATCH: usize = 1024;
/// Users handled between yields when many are skipped without a request.
const DISPATCH_BATCH: usize = 256;
/// Longest wait between two attempts of one notification.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// The outbox counts jobs the dispatcher has not read (staged, their commit still to
/// come): it looks again after this.
const RECHECK: Duration = Duration::from_millis(250);

/// What the dispatcher keeps of a job: enough to group it, to see whether it was read and
/// to find its message as it is now (deleted for everyone, edited).
#[derive(Debug, Clone, Copy)]
struct JobRef {
    id: u64,
    group: bool,
    conversation: u64,
    seq: u64,
    timestamp_us: u64,
}

/// The newest job of a user that is still to be announced, with its message as it is now.
type Newest = (u64, pb::Message);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In the `due` queue.
    Due,
    InFlight,
    /// In the `backoff` heap.
    Backoff,
}

#[derive(Debug)]
struct UserJobs {
    /// In id order.
    jobs: Vec<JobRef>,
    state: State,
    /// Failed attempts of the current notification.
    attempts: u32,
}

struct Dispatcher {
    shard: Rc<Shard>,
    endpoint: Endpoint,
    users: RefCell<HashMap<u64, UserJobs>>,
    due: RefCell<VecDeque<u64>>,
    backoff: RefCell<BinaryHeap<Reverse<(Instant, u64)>>>,
    /// The last job id read from the outbox.
    cursor: Cell<u64>,
    /// Jobs read and not yet deleted.
    known: Cell<u64>,
    in_flight: Cell<usize>,
    recheck_at: Cell<Option<Instant>>,
}

/// Runs the shard's dispatcher until the shard stops; returns at once when push is off.
pub async fn run_dispatcher(shard: Rc<Shard>) {
    let push = shard.push.clone();
    let Some(endpoint) = push.endpoint.clone() else {
        return;
    };
    tracing::info!(
        shard = shard.id,
        gateway = push.config.gateway_url.as_deref().unwrap_or_default(),
        "push dispatcher started"
    );
    // New jobs are read after a timer, so the commit that makes them visible runs first
    // (its task is already woken while the dispatcher sleeps); any still uncommitted are
    // caught by the recheck (see `RECHECK`).
    let coalesce = Duration::from_millis(push.config.coalesce_ms).max(Duration::from_millis(1));
    let dispatcher = Rc::new(Dispatcher {
        shard,
        endpoint,
        users: RefCell::default(),
        due: RefCell::default(),
        backoff: RefCell::default(),
        cursor: Cell::new(0),
        known: Cell::new(0),
        in_flight: Cell::new(0),
        recheck_at: Cell::new(None),
    });
    // The first round sends what the last run left in the outbox, at once.
    push.wake.raise();
    loop {
        dispatcher.wait().await;
        if push.new_jobs.replace(false) {
            runtime::sleep(coalesce).await;
        }
        dispatcher.round().await;
    }
}

impl Dispatcher {
    /// Waits for a wake-up, the next retry or the next recheck.
    async fn wait(&self) {
        let retry = self.backoff.borrow().peek().map(|Reverse((at, _))| *at);
        let deadline = retry.into_iter().chain(self.recheck_at.get()).min();
        let woken = self.shard.push.wake.wait();
        match deadline {
            None => woken.await,
            Some(at) => {
                let left = at.saturating_duration_since(Instant::now());
                futures_lite::future::or(woken, runtime::sleep(left)).await
            }
        }
    }

    async fn round(self: &Rc<Self>) {
        self.recheck_at.set(None);
        self.read_new_jobs().await;
        let now = Instant::now();
        {
            let mut heap = self.backoff.borrow_mut();
            let mut users = self.users.borrow_mut();
            let mut due = self.due.borrow_mut();
            while let Some(&Reverse((at, user))) = heap.peek() {
                if at > now {
                    break;
                }
                heap.pop();
                if let Some(u) = users.get_mut(&user) {
                    u.state = State::Due;
                    due.push_back(user);
                }
            }
        }
        let max_in_flight = self.shard.push.config.max_in_flight;
        let mut handled = 0;
        while self.in_flight.get() < max_in_flight {
            let Some(user) = self.due.borrow_mut().pop_front() else {
                break;
            };
            self.dispatch(user);
            handled += 1;
            if handled % DISPATCH_BATCH == 0 {
                runtime::yield_now().await;
            }
        }
        self.shard.want_commit();
        match self.shard.store.push_jobs_queued() {
            Ok(queued) if queued > self.known.get() => {
                self.recheck_at.set(Some(Instant::now() + RECHECK));
            }
            Ok(_) => {}
            Err(e) => self.storage_error("counting the outbox", &e),
        }
    }

    /// Takes the jobs committed since the last read into memory.
    async fn read_new_jobs(&self) {
        loop {
            let batch = match self
                .shard
                .store
                .push_jobs_after(self.cursor.get(), READ_BATCH)
            {
                Ok(batch) => batch,
                Err(e) => return self.storage_error("reading the outbox", &e),
            };
            let read = batch.len();
            {
                let mut users = self.users.borrow_mut();
                let mut due = self.due.borrow_mut();
                for (id, job) in batch {
                    self.cursor.set(id);
                    self.known.set(self.known.get() + 1);
                    let job_ref = JobRef {
                        id,
                        group: job.group,
                        conversation: job.conversation,
                        seq: job.seq,
                        timestamp_us: job.timestamp_us,
                    };
                    match users.entry(job.user) {
                        Entry::Occupied(mut e) => e.get_mut().jobs.push(job_ref),
                        Entry::Vacant(e) => {
                            e.insert(UserJobs {
                                jobs: vec![job_ref],
                                state: State::Due,
                                attempts: 0,
                            });
                            due.push_back(job.user);
                        }
                    }
                }
            }
            if read < READ_BATCH {
                return;
            }
            runtime::yield_now().await;
        }
    }

    /// Sends one notification for all of a due user's unread jobs, or drops the jobs when
    /// no request is needed.
    fn dispatch(self: &Rc<Self>, user: u64) {
        let shard = &self.shard;
        let counters = &shard.push.counters;
        // Only a due user: never two requests for one user at once.
        let jobs = match self.users.borrow().get(&user) {
            Some(u) if u.state == State::Due => u.jobs.clone(),
            _ => return,
        };
        let all: Vec<u64> = jobs.iter().map(|j| j.id).collect();
        // Online again: their sessions got the messages.
        if shard.is_online(user) {
            bump(&counters.skipped, all.len() as u64);
            return self.settle(user, &all);
        }
        let read = match self.read_jobs(user, &jobs) {
            Ok(read) => read,
            Err(e) => return self.finish_attempt(user, all, Err(storage_io(&e))),
        };
        if !read.is_empty() {
            bump(&counters.skipped, read.len() as u64);
            self.forget(user, &read);
        }
        let unread: Vec<JobRef> = jobs
            .iter()
            .filter(|j| read.binary_search(&j.id).is_err())
            .copied()
            .collect();
        // Messages their sender deleted for everyone are not announced; the newest left
        // gives the preview as it is now (edited).
        let (deleted, newest) = match self.deleted_jobs(user, &unread) {
            Ok(found) => found,
            Err(e) => {
                let ids = unread.iter().map(|j| j.id).collect();
                return self.finish_attempt(user, ids, Err(storage_io(&e)));
            }
        };
        if !deleted.is_empty() {
            bump(&counters.skipped, deleted.len() as u64);
            self.forget(user, &deleted);
        }
        let unread: Vec<u64> = unread
            .iter()
            .map(|j| j.id)
            .filter(|id| deleted.binary_search(id).is_err())
            .collect();
        let Some(&latest_id) = unread.last() else {
            return self.settle(user, &[]);
        };
        let devices = match shard.store.push_tokens(user) {
            Ok(d) if d.is_empty() => {
                bump(&counters.skipped, unread.len() as u64);
                return self.settle(user, &unread);
            }
            Ok(d) => d,
            Err(e) => return self.finish_attempt(user, unread, Err(storage_io(&e))),
        };
        let mut latest = match shard.store.push_job(latest_id) {
            Ok(Some(job)) => job,
            Ok(None) => {
                tracing::error!(shard = shard.id, "push job {latest_id} vanished");
                return self.settle(user, &unread);
            }
            Err(e) => return self.finish_attempt(user, unread, Err(storage_io(&e))),
        };
        // The preview was cut when the message was stored; show its text now instead (an
        // edit). Previews the user turned off stay off.
        if let (Some(preview), Some((id, m))) = (latest.preview.as_mut(), &newest) {
            if *id == latest_id {
                *preview = super::preview(&m.text).to_string();
            }
        }
        let body = match gateway::notification(&latest, unread.len() as u64, &devices) {
            Ok(body) => body,
            Err(e) => {
                tracing::error!(shard = shard.id, "push: encoding a notification: {e}");
                return self.settle(user, &unread);
            }
        };
        if let Some(u) = self.users.borrow_mut().get_mut(&user) {
            u.state = State::InFlight;
        }
        self.in_flight.set(self.in_flight.get() + 1);
        let timeout = Duration::from_millis(shard.push.config.timeout_ms);
        let this = self.clone();
        runtime::spawn(async move {
            let tls = this.shard.push.tls.as_ref();
            let result = http::post_json(&this.endpoint, tls, &body, timeout).await;
            this.in_flight.set(this.in_flight.get().saturating_sub(1));
            this.finish_attempt(user, unread, result);
            this.shard.want_commit();
            this.shard.push.wake.raise();
        });
    }

    /// Ids of `jobs` whose message `user` has read (on another session).
    fn read_jobs(&self, user: u64, jobs: &[JobRef]) -> Result<Vec<u64>, StorageError> {
        let mut markers: HashMap<(bool, u64), u64> = HashMap::new();
        let mut read = Vec::new();
        for job in jobs {
            let marker = match markers.entry((job.group, job.conversation)) {
                Entry::Occupied(e) => *e.get(),
                Entry::Vacant(e) => *e.insert(self.shard.store.read_marker(
                    user,
                    job.group,
                    job.conversation,
                )?),
            };
            if marker >= job.seq {
                read.push(job.id);
            }
        }
        Ok(read)
    }

    /// Of `jobs` (in id order), the ids of those whose message was deleted for everyone, and
    /// the newest other job with its message as it is now (if stored). 1:1: the history
    /// entry on this shard (the recipient's); group: this shard's copy of the group entry.
    fn deleted_jobs(
        &self,
        user: u64,
        jobs: &[JobRef],
    ) -> Result<(Vec<u64>, Option<Newest>), StorageError> {
        let store = &self.shard.store;
        let mut deleted = Vec::new();
        let mut newest = None;
        for job in jobs {
            let now = if job.group {
                store.group_copy_message(job.conversation, job.seq)?
            } else {
                store.history_message(user, job.conversation, job.timestamp_us)?
            };
            match now {
                Some(m) if m.deleted => deleted.push(job.id),
                Some(m) => newest = Some((job.id, m)),
                // Not found (not expected): announced as staged.
                None => newest = None,
            }
        }
        Ok((deleted, newest))
    }

    /// Handles the outcome of a request for the jobs `ids`: deletes them when delivered,
    /// schedules a retry or gives up when not.
    fn finish_attempt(&self, user: u64, ids: Vec<u64>, result: io::Result<Response>) {
        let shard = &self.shard;
        let push = &shard.push;
        let counters = &push.counters;
        let why = match result {
            Ok(response) if response.is_success() => {
                bump(&counters.sent, 1);
                let rejected = gateway::rejected_tokens(&response.body);
                if !rejected.is_empty() {
                    match shard.store.remove_push_tokens(user, &rejected) {
                        Ok(n) => bump(&counters.tokens_removed, n as u64),
                        Err(e) => self.storage_error("removing rejected tokens", &e),
                    }
                }
                return self.settle(user, &ids);
            }
            Ok(response) => format!("HTTP status {}", response.status),
            Err(e) => e.to_string(),
        };
        let attempts = {
            let mut users = self.users.borrow_mut();
            let Some(u) = users.get_mut(&user) else {
                return;
            };
            u.attempts += 1;
            u.attempts
        };
        if attempts >= push.config.max_attempts {
            bump(&counters.dropped_failed, ids.len() as u64);
            if push.failure_warning.ready() {
                tracing::warn!(
                    shard = shard.id,
                    user,
                    jobs = ids.len(),
                    "push gateway failed {attempts} times ({why}): notification dropped"
                );
            }
            return self.settle(user, &ids);
        }
        bump(&counters.retried, 1);
        if push.failure_warning.ready() {
            tracing::warn!(
                shard = shard.id,
                "push gateway request failed ({why}); retrying with backoff"
            );
        }
        let initial = push.config.retry_initial_ms;
        let delay = Duration::from_millis(initial.saturating_mul(1 << (attempts - 1).min(20)));
        let at = Instant::now() + delay.min(MAX_BACKOFF);
        if let Some(u) = self.users.borrow_mut().get_mut(&user) {
            u.state = State::Backoff;
        }
        self.backoff.borrow_mut().push(Reverse((at, user)));
    }

    /// Deletes `ids` (delivered, dropped or skipped) and moves the user on: due again when
    /// jobs arrived meanwhile, forgotten otherwise.
    fn settle(&self, user: u64, ids: &[u64]) {
        self.forget(user, ids);
        let mut users = self.users.borrow_mut();
        let Some(u) = users.get_mut(&user) else {
            return;
        };
        u.attempts = 0;
        if u.jobs.is_empty() {
            users.remove(&user);
        } else {
            u.state = State::Due;
            self.due.borrow_mut().push_back(user);
        }
    }

    /// Deletes jobs (`ids` ascending) from the outbox and from memory.
    fn forget(&self, user: u64, ids: &[u64]) {
        if ids.is_empty() {
            return;
        }
        if let Err(e) = self.shard.store.stage_push_jobs_done(ids) {
            self.storage_error("deleting jobs", &e);
        }
        self.known
            .set(self.known.get().saturating_sub(ids.len() as u64));
        if let Some(u) = self.users.borrow_mut().get_mut(&user) {
            u.jobs.retain(|j| ids.binary_search(&j.id).is_err());
        }
    }

    fn storage_error(&self, doing: &str, e: &StorageError) {
        // Requests finishing after the shard closed its store at shutdown.
        if matches!(e, StorageError::Closed) {
            return tracing::debug!(shard = self.shard.id, "push: {doing}: {e}");
        }
        tracing::error!(shard = self.shard.id, "push: {doing}: {e}");
    }
}

fn storage_io(e: &StorageError) -> io::Error {
    io::Error::other(format!("storage: {e}"))
}
