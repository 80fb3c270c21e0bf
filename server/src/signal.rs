//! Single-consumer wake-ups and the per-connection outbound queue.
//!
//! Both live on one shard and are touched by one thread, so `Cell`/`RefCell` suffice: no
//! locks, no atomics. They depend on nothing but `std::task`, not on the runtime.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::task::{Poll, Waker};

use bytes::BytesMut;
use chat_protocol::{encode_frame, Envelope};

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
#[derive(Debug, Default)]
pub struct OutQueue {
    buf: RefCell<BytesMut>,
    closed: Cell<bool>,
    signal: Signal,
}

impl OutQueue {
    /// Queues a frame; ignored once the queue is closed.
    pub fn push(&self, env: &Envelope) {
        if self.closed.get() {
            return;
        }
        encode_frame(env, &mut self.buf.borrow_mut());
        self.signal.raise();
    }

    /// No more frames will be accepted; the writer drains what is queued and stops.
    pub fn close(&self) {
        self.closed.set(true);
        self.signal.raise();
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
