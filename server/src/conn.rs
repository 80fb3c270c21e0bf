//! One client connection: TLS handshake, then a reader that decodes frames and submits them
//! to the shard, and a writer that drains the connection's `OutQueue`.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use chat_protocol::{error_envelope, ErrorCode, FrameDecoder, FrameError};
use futures_lite::AsyncWriteExt;
use futures_rustls::TlsAcceptor;
use glommio::net::TcpStream;

use crate::request::{Rejected, Request};
use crate::runtime;
use crate::shard::{Reply, Shard};

/// A peer that has not finished the TLS handshake by then is dropped (slow-loris).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Size of the shard's one decrypted-read buffer (see `read_into`).
pub const READ_CHUNK: usize = 16 * 1024;

pub async fn serve(shard: Rc<Shard>, tcp: TcpStream, acceptor: TlsAcceptor) {
    let _ = tcp.set_nodelay(true);
    let peer = tcp.peer_addr().ok();
    // Kept to shut the socket down under a writer stuck on a client that does not read.
    let fd = std::os::fd::AsRawFd::as_raw_fd(&tcp);
    // Counted as open until this function returns, however it does.
    let _counted = shard.metrics.connection();
    // Boxed: the handshake's state (a whole TLS connection mid-handshake) is freed when it
    // ends instead of sizing this long-lived future, which every idle connection keeps.
    let handshake = Box::pin(glommio::timer::timeout(HANDSHAKE_TIMEOUT, async {
        acceptor
            .accept(tcp)
            .await
            .map_err(glommio::GlommioError::from)
    }));
    let tls = match handshake.await {
        Ok(tls) => tls,
        Err(e) => {
            shard.metrics.tls_handshake_failures.inc();
            tracing::debug!(?peer, "TLS handshake failed: {e}");
            return;
        }
    };
    let (conn, entry) = shard.open_conn();
    entry.out.set_limit(shard.limits.max_outbound_bytes);
    let (mut reader, mut writer) = futures_lite::io::split(tls);
    let mut bucket = shard
        .limits
        .rate_limit
        .map(|(rate, burst)| TokenBucket::new(rate, burst));

    let out = entry.clone();
    let metrics = shard.metrics.clone();
    let writing = runtime::spawn_handle(async move {
        while let Some(batch) = out.out.next_batch().await {
            // In pieces, so a slow but reading client shows progress (see `OutQueue`).
            for piece in batch.chunks(WRITE_PIECE) {
                if writer.write_all(piece).await.is_err() {
                    out.out.close();
                    return;
                }
                out.out.progressed(false);
            }
            if writer.flush().await.is_err() {
                out.out.close();
                return;
            }
            out.out.progressed(true);
            metrics.client_bytes_sent.add(batch.len() as u64);
        }
        let _ = writer.close().await;
    });

    let decoder = FrameDecoder::new(shard.limits.max_frame_bytes);
    let mut buf = BytesMut::new();
    'read: loop {
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(env)) => {
                    let reply = Reply {
                        conn,
                        request_id: env.request_id,
                    };
                    let Some(body) = env.body else { continue };
                    if let Some(wait) = bucket.as_mut().and_then(TokenBucket::take) {
                        entry.out.push(&rate_limited(reply.request_id, wait));
                        continue;
                    }
                    match Request::parse(body, shard.limits.max_text_bytes) {
                        Ok(req) => {
                            if matches!(req, Request::Send(_) | Request::SendGroup(_)) {
                                entry.out.meter.send_received(reply.request_id);
                            }
                            shard.submit(reply, &entry, req);
                            // Closed by the request (Logout, a refused send): what follows
                            // it in the buffer is not run.
                            if entry.out.is_closed() {
                                break 'read;
                            }
                        }
                        Err(Rejected(code, msg)) => {
                            entry.out.push(&error_envelope(reply.request_id, code, msg))
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let (request_id, code, fatal) = match &e {
                        FrameError::TooLarge { .. } => (0, ErrorCode::FrameTooLarge, true),
                        FrameError::Malformed { request_id, .. } => {
                            (*request_id, ErrorCode::MalformedFrame, true)
                        }
                        FrameError::InvalidUtf8 { request_id } => {
                            (*request_id, ErrorCode::InvalidUtf8, false)
                        }
                        _ => (0, ErrorCode::MalformedFrame, true),
                    };
                    entry
                        .out
                        .push(&error_envelope(request_id, code, e.to_string()));
                    if fatal {
                        tracing::debug!(?peer, "closing connection: {e}");
                        break 'read;
                    }
                }
            }
        }
        if entry.out.is_closed() {
            break;
        }
        if buf.is_empty() {
            // Frames were split off this buffer; its allocation would otherwise stay with
            // the connection while it waits.
            buf = BytesMut::new();
        }
        // Closed by the shard: shutdown, a client that does not read, a timeout (the
        // shard's sweep, `Shard::sweep_timeouts`, so no timer per read here).
        let stopped = async {
            futures_lite::future::or(entry.stop.wait(), entry.out.closing()).await;
            Ok(0)
        };
        match futures_lite::future::or(read_into(&shard, &mut reader, &mut buf), stopped).await {
            Ok(0) | Err(_) => break,
            Ok(_) => entry.last_heard.set(Some(Instant::now())),
        }
    }
    entry.out.close();
    // A client that does not read would keep the writer waiting forever: give it a moment
    // to take the last frames, then drop it (which closes the socket).
    let mut writing = std::pin::pin!(writing);
    let finished = futures_lite::future::or(
        async {
            (&mut writing).await;
            true
        },
        async {
            glommio::timer::sleep(WRITER_GRACE).await;
            false
        },
    );
    if !finished.await {
        tracing::debug!(
            ?peer,
            "shutting down a connection whose client does not read"
        );
        // SAFETY: the stuck writer still owns the socket (it is awaited below), so `fd` is
        // open; shutting it down fails that write at once and the writer ends.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let socket = socket2::SockRef::from(&fd);
        // Reset rather than drain: what the kernel still holds for this client goes too.
        let _ = socket.set_linger(Some(Duration::ZERO));
        let _ = socket.shutdown(std::net::Shutdown::Both);
        writing.await;
    }
    shard.close_conn(conn);
}

/// Bytes the writer hands to TLS at a time.
const WRITE_PIECE: usize = 64 * 1024;

/// How long the writer may still send after the connection was closed.
const WRITER_GRACE: Duration = Duration::from_secs(5);

/// A connection's request budget: `rate` per second on average, `burst` at once.
struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    fn new(rate: u32, burst: u32) -> Self {
        Self {
            rate: f64::from(rate),
            burst: f64::from(burst),
            tokens: f64::from(burst),
            at: Instant::now(),
        }
    }

    /// Takes a token; when there is none, how long until there is.
    fn take(&mut self) -> Option<Duration> {
        let now = Instant::now();
        let refill = now.duration_since(self.at).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return None;
        }
        Some(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
    }
}

fn rate_limited(request_id: u64, wait: Duration) -> chat_protocol::Envelope {
    let retry_after_ms = u32::try_from(wait.as_millis().max(1)).unwrap_or(u32::MAX);
    chat_protocol::envelope(
        request_id,
        chat_protocol::Body::Error(chat_protocol::pb::Error {
            code: ErrorCode::RateLimited as i32,
            message: format!("too many requests; retry in {retry_after_ms} ms"),
            retry_after_ms,
        }),
    )
}

/// Reads decrypted bytes and appends them to `buf`. The bytes pass through the shard's one
/// read buffer, borrowed only inside a poll (nothing else runs on the shard meanwhile), so
/// an idle connection holds no read buffer of its own: that is most of the memory of a
/// connection that waits.
async fn read_into(
    shard: &Shard,
    reader: &mut (impl futures_lite::AsyncRead + Unpin),
    buf: &mut BytesMut,
) -> std::io::Result<usize> {
    std::future::poll_fn(|cx| {
        let mut chunk = shard.read_buf.borrow_mut();
        match std::pin::Pin::new(&mut *reader).poll_read(cx, &mut chunk[..]) {
            std::task::Poll::Ready(Ok(n)) => {
                shard.metrics.client_bytes_received.add(n as u64);
                buf.extend_from_slice(&chunk[..n]);
                std::task::Poll::Ready(Ok(n))
            }
            other => other,
        }
    })
    .await
}
