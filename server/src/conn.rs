//! One client connection: TLS handshake, then a reader that decodes frames and submits them
//! to the shard, and a writer that drains the connection's `OutQueue`.

use std::rc::Rc;
use std::time::Duration;

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
            tracing::debug!(?peer, "TLS handshake failed: {e}");
            return;
        }
    };
    let (conn, entry) = shard.open_conn();
    let (mut reader, mut writer) = futures_lite::io::split(tls);

    let out = entry.clone();
    let writing = runtime::spawn_handle(async move {
        while let Some(batch) = out.out.next_batch().await {
            if writer.write_all(&batch).await.is_err() || writer.flush().await.is_err() {
                out.out.close();
                return;
            }
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
                    match Request::parse(body, shard.limits.max_text_bytes) {
                        Ok(req) => shard.submit(reply, &entry, req),
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
        let read = futures_lite::future::or(read_into(&shard, &mut reader, &mut buf), async {
            entry.stop.wait().await;
            Ok(0)
        });
        match read.await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    entry.out.close();
    writing.await;
    shard.close_conn(conn);
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
                buf.extend_from_slice(&chunk[..n]);
                std::task::Poll::Ready(Ok(n))
            }
            other => other,
        }
    })
    .await
}
