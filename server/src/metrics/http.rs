//! The operators' HTTP endpoint: a plain std thread with a blocking listener, apart from
//! the shards, answering one request per connection (`Connection: close`):
//!
//! - `GET /metrics`: every metric in the Prometheus text format 0.0.4;
//! - `GET /health`: 200 `ok` when every shard is serving and its loop ticked recently,
//!   503 with the reason otherwise (for load balancers);
//! - anything else: 404 (405 for a method other than GET and HEAD).
//!
//! Requests are served one at a time with short socket timeouts: a scrape takes
//! microseconds, and a peer that stalls holds the thread for at most [`IO_TIMEOUT`]. The
//! port is for operators' tools and is bound to localhost by default.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;

use super::Metrics;

/// Longest wait for a request to arrive, or for its response to be taken.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest request head read; the rest is ignored.
const MAX_REQUEST_BYTES: usize = 8 * 1024;

/// The running endpoint; [`MetricsServer::stop`] ends its thread.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Binds `addr` and serves `metrics` from a new thread.
    pub fn start(addr: SocketAddr, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let listener =
            TcpListener::bind(addr).with_context(|| format!("binding metrics_listen {addr}"))?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("chatd-metrics".into())
            .spawn(move || serve(listener, &metrics, &stopping))
            .context("starting the metrics thread")?;
        tracing::info!(%addr, "metrics and health endpoint listening");
        Ok(Self {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The bound address (the real port when configured with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the thread: raises the flag, then wakes the blocking `accept` with a
    /// connection of our own.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let wake = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => {
                SocketAddr::new(Ipv4Addr::LOCALHOST.into(), self.addr.port())
            }
            IpAddr::V6(ip) if ip.is_unspecified() => {
                SocketAddr::new(Ipv6Addr::LOCALHOST.into(), self.addr.port())
            }
            _ => self.addr,
        };
        match TcpStream::connect_timeout(&wake, IO_TIMEOUT) {
            Ok(_) => {
                if let Some(thread) = self.thread.take() {
                    let _ = thread.join();
                }
            }
            // Left running (it ends with the process) rather than blocking the shutdown.
            Err(e) => tracing::warn!("could not wake the metrics thread: {e}"),
        }
    }
}

fn serve(listener: TcpListener, metrics: &Metrics, stop: &AtomicBool) {
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        match stream {
            Ok(stream) => {
                if let Err(e) = answer(stream, metrics) {
                    tracing::debug!("metrics request failed: {e}");
                }
            }
            Err(e) => {
                // Out of fds, for instance: do not spin.
                tracing::warn!("metrics accept failed: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Reads one request head and writes the response.
fn answer(mut stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST_BYTES {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let (status, content_type, body) = route(&head, metrics);
    let head_only = head.starts_with(b"HEAD ");
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        response.extend_from_slice(body.as_bytes());
    }
    stream.write_all(&response)?;
    stream.flush()
}

const TEXT: &str = "text/plain; charset=utf-8";
const EXPOSITION: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Status line, content type and body for a request head.
fn route(head: &[u8], metrics: &Metrics) -> (&'static str, &'static str, String) {
    let line = head
        .split(|&b| b == b'\r' || b == b'\n')
        .next()
        .unwrap_or(&[]);
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return ("400 Bad Request", TEXT, "bad request\n".into());
    };
    if method != "GET" && method != "HEAD" {
        return ("405 Method Not Allowed", TEXT, "use GET\n".into());
    }
    let path = target.split('?').next().unwrap_or(target);
    match path {
        "/metrics" => ("200 OK", EXPOSITION, metrics.render()),
        "/health" => match metrics.health() {
            Ok(()) => ("200 OK", TEXT, "ok\n".into()),
            Err(why) => ("503 Service Unavailable", TEXT, format!("{why}\n")),
        },
        _ => (
            "404 Not Found",
            TEXT,
            "not found: try /metrics or /health\n".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // reason: test code
    use super::*;

    #[test]
    fn routes() {
        let metrics = Metrics::new(1);
        assert_eq!(
            route(b"GET /nope HTTP/1.1\r\n\r\n", &metrics).0,
            "404 Not Found"
        );
        assert_eq!(
            route(b"POST /metrics HTTP/1.1\r\n\r\n", &metrics).0,
            "405 Method Not Allowed"
        );
        assert_eq!(route(b"\r\n", &metrics).0, "400 Bad Request");
        assert_eq!(
            route(b"GET /health HTTP/1.1\r\n\r\n", &metrics).0,
            "503 Service Unavailable"
        );
        metrics.shard(0).set_serving(true);
        assert_eq!(
            route(b"GET /health?x=1 HTTP/1.1\r\n\r\n", &metrics).0,
            "200 OK"
        );
        let (status, kind, body) = route(b"GET /metrics HTTP/1.0\r\n\r\n", &metrics);
        assert_eq!((status, kind), ("200 OK", EXPOSITION));
        assert!(body.contains("chatd_connections_open{shard=\"0\"} 0"));
    }
}
