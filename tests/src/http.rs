//! A minimal HTTP/1.1 client over `std::net::TcpStream`: enough to check status lines, headers and bodies
//! exactly, and to send malformed, half-sent or oversized requests. Every call is bounded by a timeout.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// The default bound of one request/response exchange.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A parsed HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The reason phrase.
    pub reason: String,
    /// Header fields in the order received, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked), empty for `HEAD`.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.body).map_err(|source| Error::Json { body: self.text(), source })
    }

    /// The `Content-Type` without parameters, lower-cased (empty when absent).
    pub fn content_type(&self) -> String {
        self.header("content-type").unwrap_or("").split(';').next().unwrap_or("").trim().to_ascii_lowercase()
    }
}

impl std::fmt::Display for HttpResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {:?}", self.status, self.content_type(), self.text())
    }
}

/// `GET path` with an optional `Accept` header.
pub fn get(addr: SocketAddr, path: &str, accept: Option<&str>) -> Result<HttpResponse> {
    let headers: Vec<(&str, &str)> = accept.map(|a| vec![("Accept", a)]).unwrap_or_default();
    request(addr, "GET", path, &headers, DEFAULT_TIMEOUT)
}

/// `GET path` with `Accept: application/json`.
pub fn get_json(addr: SocketAddr, path: &str) -> Result<HttpResponse> {
    get(addr, path, Some("application/json"))
}

/// Sends one request with `Host` and `Connection: close` plus `headers`, and reads the response.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Result<HttpResponse> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    if method == "POST" || method == "PUT" {
        req.push_str("Content-Length: 0\r\n");
    }
    req.push_str("\r\n");
    let mut stream = connect(addr, timeout)?;
    stream.write_all(req.as_bytes()).map_err(|e| Error::Http(format!("sending to {addr}: {e}")))?;
    read_response(&mut stream, method == "HEAD", timeout)
}

/// Connects with `timeout` bounding the connect and every later read and write.
pub fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream> {
    let stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| Error::Http(format!("connecting to {addr}: {e}")))?;
    stream.set_read_timeout(Some(timeout)).map_err(|e| Error::Http(e.to_string()))?;
    stream.set_write_timeout(Some(timeout)).map_err(|e| Error::Http(e.to_string()))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Sends raw bytes on a new connection and reads one response.
pub fn raw(addr: SocketAddr, bytes: &[u8], head: bool, timeout: Duration) -> Result<HttpResponse> {
    let mut stream = connect(addr, timeout)?;
    stream.write_all(bytes).map_err(|e| Error::Http(format!("sending to {addr}: {e}")))?;
    read_response(&mut stream, head, timeout)
}

/// Reads one response from `stream` (which may carry more, e.g. pipelined responses; bytes after this
/// response are not consumed beyond what one read returned, so use it for one response per connection or
/// use [`ResponseReader`]).
pub fn read_response(stream: &mut TcpStream, head: bool, timeout: Duration) -> Result<HttpResponse> {
    ResponseReader::new().read(stream, head, timeout)
}

/// Reads successive responses from one connection, keeping bytes that arrived early (pipelining).
#[derive(Debug, Default)]
pub struct ResponseReader {
    buf: Vec<u8>,
}

impl ResponseReader {
    /// A reader with an empty buffer.
    pub fn new() -> ResponseReader {
        ResponseReader::default()
    }

    fn fill(&mut self, stream: &mut TcpStream, deadline: Instant) -> Result<usize> {
        let now = Instant::now();
        if now >= deadline {
            return Err(Error::Http("timed out reading the response".into()));
        }
        stream.set_read_timeout(Some(deadline - now)).map_err(|e| Error::Http(e.to_string()))?;
        let mut chunk = [0u8; 8192];
        loop {
            match stream.read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(Error::Http(format!(
                        "timed out reading the response (got so far: {:?})",
                        String::from_utf8_lossy(&self.buf)
                    )))
                }
                Err(e) => return Err(Error::Http(format!("reading the response: {e}"))),
            }
        }
    }

    /// Reads the next response; `head` says it answers a `HEAD` request (no body).
    pub fn read(&mut self, stream: &mut TcpStream, head: bool, timeout: Duration) -> Result<HttpResponse> {
        let deadline = Instant::now() + timeout;
        let header_end = loop {
            if let Some(pos) = find(&self.buf, b"\r\n\r\n") {
                break pos;
            }
            if self.fill(stream, deadline)? == 0 {
                return Err(Error::Http(format!(
                    "connection closed before a complete response header (got {:?})",
                    String::from_utf8_lossy(&self.buf)
                )));
            }
        };
        let head_text = String::from_utf8_lossy(&self.buf[..header_end]).into_owned();
        self.buf.drain(..header_end + 4);
        let mut lines = head_text.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or("");
        if !version.starts_with("HTTP/1.") {
            return Err(Error::Http(format!("bad status line {status_line:?}")));
        }
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Error::Http(format!("bad status {status_line:?}")))?;
        let reason = parts.next().unwrap_or("").to_owned();
        let headers: Vec<(String, String)> =
            lines.filter_map(|l| l.split_once(':')).map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned())).collect();
        let mut response = HttpResponse { status, reason, headers, body: Vec::new() };
        if head || status == 204 || status == 304 || (100..200).contains(&status) {
            return Ok(response);
        }
        let chunked =
            response.header("transfer-encoding").map(|v| v.to_ascii_lowercase().contains("chunked")).unwrap_or(false);
        if chunked {
            response.body = self.read_chunked(stream, deadline)?;
        } else if let Some(len) = response.header("content-length") {
            let len: usize = len.parse().map_err(|_| Error::Http(format!("bad Content-Length {len:?}")))?;
            while self.buf.len() < len {
                if self.fill(stream, deadline)? == 0 {
                    return Err(Error::Http("connection closed inside the body".into()));
                }
            }
            response.body = self.buf.drain(..len).collect();
        } else {
            while self.fill(stream, deadline)? != 0 {}
            response.body = std::mem::take(&mut self.buf);
        }
        Ok(response)
    }

    fn read_chunked(&mut self, stream: &mut TcpStream, deadline: Instant) -> Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(pos) = find(&self.buf, b"\r\n") {
                    break pos;
                }
                if self.fill(stream, deadline)? == 0 {
                    return Err(Error::Http("connection closed inside a chunk header".into()));
                }
            };
            let size_text = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| Error::Http(format!("bad chunk size {size_text:?}")))?;
            self.buf.drain(..line_end + 2);
            if size == 0 {
                // Trailer section: skip to the empty line.
                loop {
                    if let Some(pos) = find(&self.buf, b"\r\n") {
                        let empty = pos == 0;
                        self.buf.drain(..pos + 2);
                        if empty {
                            return Ok(body);
                        }
                    } else if self.fill(stream, deadline)? == 0 {
                        return Ok(body);
                    }
                }
            }
            while self.buf.len() < size + 2 {
                if self.fill(stream, deadline)? == 0 {
                    return Err(Error::Http("connection closed inside a chunk".into()));
                }
            }
            body.extend(self.buf.drain(..size));
            self.buf.drain(..2);
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Whether the peer closed `stream` (EOF or reset) or sent something within `timeout`.
/// Returns `Ok(false)` when the connection stayed open and silent for the whole time.
pub fn closed_within(stream: &mut TcpStream, timeout: Duration) -> Result<bool> {
    stream.set_read_timeout(Some(timeout)).map_err(|e| Error::Http(e.to_string()))?;
    let deadline = Instant::now() + timeout;
    let mut byte = [0u8; 1024];
    loop {
        match stream.read(&mut byte) {
            Ok(_) => return Ok(true),
            Err(e) if e.kind() == ErrorKind::Interrupted => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(false);
                }
                stream.set_read_timeout(Some(left)).map_err(|e| Error::Http(e.to_string()))?;
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return Ok(false),
            Err(_) => return Ok(true),
        }
    }
}
