//! Single-consumer wake-ups and the per-connection outbound queue.
//!
//! Both live on one shard and are touched by one thread, so `Cell`/`RefCell` suffice: no
//! locks, no atomics (the queue's metrics meter only adds to its shard's atomic counters).
//! They depend on nothing but `std::task`, not on the runtime.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use chat_protocol::{encode_frame, error_envelope, Envelope, ErrorCode};

/// A writer that has not got a byte out for this long, with more than the limit queued
/// behind it, belongs to a client that does not read.
const STALL: Duration = Duration::from_secs(10);

/// A level-triggered flag with one waiting task.
#[derive(Default)]
pub struct Signal {
    raised: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl std::fmt::Debug for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signal")
            .field("raised", &self.raised.get())
            .finish()
    }
}

impl Signal {
    pub fn raise(&self) {
        self.raised.set(true);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Waits until raised, then lowers it.
    pub async fn wait(&self) {
        poll_fn(|cx| {
            if self.raised.replace(false) {
                Poll::Ready(())
            } else {
                self.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await
    }
}

/// Frames waiting to be written to one connection. Producers append encoded frames; the
/// connection's writer takes everything queued in one go, so many frames share one TLS
/// record and one socket write.
#[derive(Default)]
pub struct OutQueue {
    buf: RefCell<BytesMut>,
    closed: Cell<bool>,
    signal: Signal,
    /// Raised when the queue closes, for the connection's reader.
    closing: Signal,
    /// Unsent bytes beyond which a client that stopped reading is cut off (0 = no limit).
    limit: Cell<usize>,
    /// Since when the writer has been writing without finishing (`None`: it is idle), and
    /// when it last got bytes out: a writer stuck that long means a client not reading.
    writing: Cell<Option<Instant>>,
    /// Run once the queue has (nearly) drained: a catch-up waiting to send more.
    drained: RefCell<Vec<Box<dyn FnOnce()>>>,
    /// Metrics of the frames queued: errors by code, send-to-ack latency.
    pub meter: crate::metrics::ConnMeter,
}

impl std::fmt::Debug for OutQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutQueue")
            .field("queued", &self.buf.borrow().len())
            .field("closed", &self.closed.get())
            .finish()
    }
}

impl OutQueue {
    pub fn set_limit(&self, bytes: usize) {
        self.limit.set(bytes);
    }

    /// Queues a frame; ignored once the queue is closed. When more than the limit is
    /// already waiting, the client is not reading: what waits is dropped and the queue
    /// closes with a SLOW_CONSUMER error, so such a client never grows the server's memory.
    pub fn push(&self, env: &Envelope) {
        if self.closed.get() {
            return;
        }
        self.meter.queued(env);
        let mut buf = self.buf.borrow_mut();
        let limit = self.limit.get();
        // Only a queue over the limit asks the clock whether its writer is stuck.
        let stalled = || {
            self.writing
                .get()
                .is_some_and(|since| since.elapsed() > STALL)
        };
        if limit > 0 && buf.len() > limit && (buf.len() > limit * 4 || stalled()) {
            *buf = BytesMut::new();
            let why = format!("more than {limit} bytes waited for the client to read them");
            let cut_off = error_envelope(0, ErrorCode::SlowConsumer, why);
            self.meter.queued(&cut_off);
            encode_frame(&cut_off, &mut buf);
            drop(buf);
            return self.close();
        }
        encode_frame(env, &mut buf);
        self.signal.raise();
    }

    /// The writer got bytes out (and is still writing, or `done`).
    pub fn progressed(&self, done: bool) {
        self.writing.set((!done).then(Instant::now));
        if done && self.buf.borrow().len() <= self.limit.get() / 4 {
            let waiters = std::mem::take(&mut *self.drained.borrow_mut());
            for waiter in waiters {
                waiter();
            }
        }
    }

    /// Runs `f` once little is left to write: now, or when the writer gets there.
    pub fn when_drained(&self, f: Box<dyn FnOnce()>) {
        if self.writing.get().is_none() && self.buf.borrow().len() <= self.limit.get() / 4 {
            f()
        } else {
            self.drained.borrow_mut().push(f);
        }
    }

    /// No more frames will be accepted; the writer drains what is queued and stops.
    pub fn close(&self) {
        self.closed.set(true);
        self.signal.raise();
        self.closing.raise();
    }

    /// Waits until the queue is closed.
    pub async fn closing(&self) {
        while !self.closed.get() {
            self.closing.wait().await;
        }
    }

    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }

    /// The next bytes to write, or `None` when closed and drained.
    pub async fn next_batch(&self) -> Option<BytesMut> {
        loop {
            {
                let mut buf = self.buf.borrow_mut();
                if !buf.is_empty() {
                    self.writing.set(Some(Instant::now()));
                    // Take the whole buffer, not a split of it: a split would keep the
                    // allocation alive in the queue while the connection idles.
                    return Some(std::mem::take(&mut *buf));
                }
            }
            if self.closed.get() {
                return None;
            }
            self.signal.wait().await;
        }
    }
}
