//! One client connection: TLS handshake, then a reader that decodes frames and submits them
//! to the shard, and a writer that drains the connection's `OutQueue`.

use std::rc::Rc;
use std::time::Duration;

use bytes::BytesMut;
use chat_protocol::{error_envelope, ErrorCode, FrameDecoder, FrameError};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use futures_rustls::TlsAcceptor;
use glommio::net::TcpStream;

use crate::request::{Rejected, Request};
use crate::runtime;
use crate::shard::{Reply, Shard};

/// A peer that has not finished the TLS handshake by then is dropped (slow-loris).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Per-connection read buffer: small, because every idle connection holds one.
const READ_CHUNK: usize = 4 * 1024;

pub async fn serve(shard: Rc<Shard>, tcp: TcpStream, acceptor: TlsAcceptor) {
    let _ = tcp.set_nodelay(true);
    let peer = tcp.peer_addr().ok();
    let tls = match glommio::timer::timeout(HANDSHAKE_TIMEOUT, async {
        acceptor
            .accept(tcp)
            .await
            .map_err(glommio::GlommioError::from)
    })
    .await
    {
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
    let mut chunk = vec![0u8; READ_CHUNK];
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
        let read = futures_lite::future::or(reader.read(&mut chunk), async {
            entry.stop.wait().await;
            Ok(0)
        });
        match read.await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    entry.out.close();
    writing.await;
    shard.close_conn(conn);
}
