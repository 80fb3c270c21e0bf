//! A minimal HTTP/1.1 client for the push gateway: one POST per connection
//! (`Connection: close`), over TLS for `https://` (rustls, the roots of `push.ca_file`),
//! non-blocking on the shard (glommio sockets via `runtime`; name resolution on the
//! blocking pool).

use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use futures_rustls::TlsConnector;

use crate::runtime;

/// Largest gateway response read; the rest is an error (a gateway answers a few bytes).
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Where the gateway is: parsed from `push.gateway_url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `https://`.
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl Endpoint {
    /// Parses `http[s]://host[:port][/path]` (port 80 or 443 and path `/` when absent;
    /// an IPv6 host in brackets).
    pub fn parse(url: &str) -> Result<Self, String> {
        let (tls, rest) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
            (Some(rest), _) => (true, rest),
            (None, Some(rest)) => (false, rest),
            (None, None) => return Err("must start with https:// or http://".into()),
        };
        if url.chars().any(|c| c.is_whitespace() || c.is_control()) || url.contains('#') {
            return Err("must not contain spaces, control characters or a #fragment".into());
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err("must not contain credentials".into());
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or("unclosed [ in the host")?;
            host.parse::<std::net::Ipv6Addr>()
                .map_err(|_| "bad IPv6 address")?;
            match after {
                "" => (host, None),
                p => (host, Some(p.strip_prefix(':').ok_or("junk after ]")?)),
            }
        } else {
            match authority.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err("has no host".into());
        }
        let default_port = if tls { 443 } else { 80 };
        let port = match port {
            None => default_port,
            Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0).ok_or("bad port")?,
        };
        Ok(Self {
            tls,
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }

    /// The `Host` header's value.
    fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == if self.tls { 443 } else { 80 } {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    async fn resolve(&self) -> io::Result<SocketAddr> {
        if let Ok(ip) = self.host.parse::<IpAddr>() {
            return Ok(SocketAddr::new(ip, self.port));
        }
        // getaddrinfo blocks: off the shard's thread.
        let (host, port) = (self.host.clone(), self.port);
        runtime::blocking(move || {
            (host.as_str(), port)
                .to_socket_addrs()
                .map(|mut a| a.next())
        })
        .await?
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address found"))
    }
}

/// A gateway's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Where the system keeps its certificate authorities (Debian, Ubuntu).
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// TLS for an `https` gateway: its certificate must chain to a root in `ca_file` (PEM;
/// the system's bundle when unset).
pub fn tls_connector(ca_file: Option<&std::path::Path>) -> Result<GatewayTls, String> {
    use rustls_pki_types::pem::PemObject;
    let path = ca_file.unwrap_or(std::path::Path::new(SYSTEM_ROOTS));
    let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("reading {}: {e}", path.display()))?
        .filter_map(Result::ok);
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!("{} holds no usable certificate", path.display()));
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(GatewayTls(TlsConnector::from(std::sync::Arc::new(config))))
}

/// The TLS client side for an `https` gateway.
#[derive(Clone)]
pub struct GatewayTls(TlsConnector);

impl std::fmt::Debug for GatewayTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GatewayTls")
    }
}

/// POSTs a JSON body and reads the answer, all within `timeout`; over TLS with `tls` for
/// an `https` endpoint.
pub async fn post_json(
    endpoint: &Endpoint,
    tls: Option<&GatewayTls>,
    body: &[u8],
    timeout: Duration,
) -> io::Result<Response> {
    let exchange = async {
        let addr = endpoint.resolve().await?;
        let tcp = runtime::connect_tcp(addr).await?;
        let request = request(endpoint, body);
        match (endpoint.tls, tls) {
            (false, _) => exchange(tcp, &request).await,
            (true, Some(GatewayTls(connector))) => {
                let name = rustls_pki_types::ServerName::try_from(endpoint.host.clone())
                    .map_err(|_| invalid("the gateway's host is not a valid TLS name"))?;
                exchange(connector.connect(name, tcp).await?, &request).await
            }
            (true, None) => Err(invalid("https gateway without TLS roots")),
        }
    };
    futures_lite::future::or(exchange, async {
        runtime::sleep(timeout).await;
        Err(io::Error::new(io::ErrorKind::TimedOut, "gateway timed out"))
    })
    .await
}

/// The request's bytes: head and JSON body.
fn request(endpoint: &Endpoint, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: chatd\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        endpoint.path,
        endpoint.host_header(),
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

/// Writes the request and reads the whole response.
async fn exchange(
    mut stream: impl futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin,
    request: &[u8],
) -> io::Result<Response> {
    stream.write_all(request).await?;
    stream.flush().await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = match stream.read(&mut chunk).await {
            // A TLS peer that closes without close_notify: the end, for a response read
            // to the end of the connection.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => 0,
            other => other?,
        };
        buf.extend_from_slice(&chunk[..n]);
        if let Some(response) = parse_response(&buf, n == 0)? {
            return Ok(response);
        }
        if buf.len() > MAX_RESPONSE_BYTES {
            return Err(invalid("response too large"));
        }
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// Parses a complete response from `buf`; `Ok(None)` when more bytes are needed (never
/// once `eof`).
pub fn parse_response(buf: &[u8], eof: bool) -> io::Result<Option<Response>> {
    let incomplete = || {
        if eof {
            Err(invalid("connection closed mid-response"))
        } else {
            Ok(None)
        }
    };
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        return incomplete();
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| invalid("non-UTF-8 head"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.split(' ');
    let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
        return Err(invalid("bad status line"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(invalid("not an HTTP/1.x response"));
    }
    let status: u16 = code.parse().map_err(|_| invalid("bad status code"))?;
    let mut content_length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(invalid("bad header line"));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| invalid("bad Content-Length"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        }
    }
    let rest = &buf[head_end + 4..];
    let body = if chunked {
        match dechunk(rest)? {
            Some(body) => body,
            None => return incomplete(),
        }
    } else if let Some(len) = content_length {
        if len > MAX_RESPONSE_BYTES {
            return Err(invalid("response too large"));
        }
        match rest.get(..len) {
            Some(body) => body.to_vec(),
            None => return incomplete(),
        }
    } else if (100..200).contains(&status) || status == 204 || status == 304 || eof {
        // No length: the body runs to the end of the connection (Connection: close).
        rest.to_vec()
    } else {
        return Ok(None);
    };
    Ok(Some(Response { status, body }))
}

/// Decodes a chunked body; `Ok(None)` until the last chunk has arrived.
fn dechunk(mut rest: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = find(rest, b"\r\n") else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&rest[..line_end]).map_err(|_| invalid("bad chunk"))?;
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| invalid("bad chunk size"))?;
        if size > MAX_RESPONSE_BYTES {
            return Err(invalid("response too large"));
        }
        rest = &rest[line_end + 2..];
        if size == 0 {
            // Trailers, if any, are not needed.
            return Ok(Some(body));
        }
        let Some(data) = rest.get(..size) else {
            return Ok(None);
        };
        body.extend_from_slice(data);
        match rest.get(size..size + 2) {
            Some(b"\r\n") => rest = &rest[size + 2..],
            Some(_) => return Err(invalid("chunk without CRLF")),
            None => return Ok(None),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // reason: test code
    use super::*;

    #[test]
    fn urls_parse_with_http_and_https() {
        let e = Endpoint::parse("http://127.0.0.1:8088/_matrix/push/v1/notify").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.path.as_str()),
            ("127.0.0.1", 8088, "/_matrix/push/v1/notify")
        );
        assert_eq!(e.host_header(), "127.0.0.1:8088");
        let e = Endpoint::parse("http://push.example").unwrap();
        assert_eq!((e.port, e.path.as_str()), (80, "/"));
        assert_eq!(e.host_header(), "push.example");
        let e = Endpoint::parse("http://[::1]:9000/p?x=1").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.path.as_str()),
            ("::1", 9000, "/p?x=1")
        );
        assert_eq!(e.host_header(), "[::1]:9000");
        let e = Endpoint::parse("https://push.example/notify").unwrap();
        assert!(e.tls);
        assert_eq!((e.port, e.host_header()), (443, "push.example".to_string()));
        let e = Endpoint::parse("https://push.example:8443/").unwrap();
        assert_eq!(e.host_header(), "push.example:8443");
        for bad in [
            "ftp://gw/",
            "http://",
            "http://:80/",
            "http://gw:0/",
            "http://gw:99999/",
            "http://user:pw@gw/",
            "http://gw/a b",
            "http://[::1/",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn responses_parse_with_length_chunked_and_to_eof() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n{\"rejected\":[]}";
        assert_eq!(parse_response(&r[..20], false).unwrap(), None);
        let got = parse_response(r, false).unwrap().unwrap();
        assert_eq!(
            (got.status, got.body.as_slice()),
            (200, &b"{\"rejected\":[]}"[..])
        );

        let r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n2;x=y\r\nef\r\n0\r\n\r\n";
        let got = parse_response(r, false).unwrap().unwrap();
        assert_eq!(got.body, b"abcdef");
        assert_eq!(parse_response(&r[..r.len() - 7], false).unwrap(), None);

        let r = b"HTTP/1.0 500 Internal Server Error\r\nServer: x\r\n\r\noops";
        assert_eq!(parse_response(r, false).unwrap(), None, "waits for the end");
        let got = parse_response(r, true).unwrap().unwrap();
        assert_eq!((got.status, got.body.as_slice()), (500, &b"oops"[..]));
        assert!(!got.is_success());

        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab", true).is_err());
        assert!(parse_response(b"SSH-2.0\r\n\r\n", false).is_err());
        assert!(parse_response(b"HTTP/1.1 abc\r\n\r\n", false).is_err());
    }
}
