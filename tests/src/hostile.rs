//! Servers that are not what a host list promises: a listener that answers PostgreSQL's start-up with a
//! message header announcing gigabytes and then streams bytes, or with random bytes. They stand for a wrong
//! port in `pg_status__hosts`, a hostile host, or a man in the middle.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::error::IoContext;
use crate::net::next_loopback;
use crate::Result;

/// What a hostile server sends after the client's first message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hostility {
    /// Declines TLS if asked, then a header announcing a 2 GiB authentication message, then zeros.
    HugeMessage,
    /// Declines TLS if asked, then pseudo-random bytes.
    RandomBytes,
    /// Declines TLS if asked, lets the client in without a password, then sends an endless series of small,
    /// well-formed notice messages (which the client library queues during its start-up).
    NoticeFlood,
}

/// The longest a hostile server streams to one connection, and the most it sends: the test's own bound.
const STREAM_TIME: Duration = Duration::from_secs(30);
const STREAM_BYTES: u64 = 4 << 30;

/// A hostile server on a fresh loopback address; it stops when dropped.
pub struct HostileServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
}

impl HostileServer {
    /// Starts a server that behaves as `how` towards every client.
    pub fn start(how: Hostility) -> Result<HostileServer> {
        let ip = next_loopback();
        let listener = TcpListener::bind((ip, 0)).context(|| format!("binding a hostile server on {ip}"))?;
        let addr = listener.local_addr().context(|| "reading the hostile server's address".to_owned())?;
        listener.set_nonblocking(true).context(|| "making the hostile listener non-blocking".to_owned())?;
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let connections = Arc::new(AtomicU64::new(0));
        let (s, b, n) = (stop.clone(), sent.clone(), connections.clone());
        thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        n.fetch_add(1, Ordering::Relaxed);
                        let (s, b) = (s.clone(), b.clone());
                        thread::spawn(move || serve(stream, how, &s, &b));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(HostileServer { addr, stop, sent, connections })
    }

    /// The host as pg-status is told it (an IP address).
    pub fn host(&self) -> String {
        self.addr.ip().to_string()
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Bytes written to clients so far, across all connections.
    pub fn bytes_sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }
}

impl Drop for HostileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(mut stream: TcpStream, how: Hostility, stop: &AtomicBool, sent: &AtomicU64) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    // The first message: an SSLRequest (declined) followed by the start-up message, or the start-up alone.
    let mut head = [0u8; 8];
    if stream.read_exact(&mut head).is_err() {
        return;
    }
    if head[4..8] == [0x04, 0xd2, 0x16, 0x2f] {
        if stream.write_all(b"N").is_err() {
            return;
        }
        let mut len = [0u8; 4];
        if stream.read_exact(&mut len).is_err() {
            return;
        }
        let mut rest = vec![0u8; (u32::from_be_bytes(len) as usize).saturating_sub(4).min(10_000)];
        if stream.read_exact(&mut rest).is_err() {
            return;
        }
    } else {
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let mut rest = vec![0u8; len.saturating_sub(8).min(10_000)];
        if stream.read_exact(&mut rest).is_err() {
            return;
        }
    }
    let mut chunk = vec![0u8; 64 * 1024];
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut first = true;
    let started = Instant::now();
    let mut total = 0u64;
    while !stop.load(Ordering::Relaxed) && started.elapsed() < STREAM_TIME && total < STREAM_BYTES {
        match how {
            Hostility::HugeMessage if first => {
                chunk.fill(0);
                chunk[..5].copy_from_slice(&[b'R', 0x7f, 0xff, 0xff, 0xf0]);
            }
            Hostility::HugeMessage => chunk.fill(0),
            Hostility::RandomBytes => {
                for byte in chunk.iter_mut() {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    *byte = state as u8;
                }
            }
            Hostility::NoticeFlood if first => {
                let notice = [b'N', 0, 0, 0, 16, b'S', b'N', b'O', b'T', b'I', b'C', b'E', 0, b'M', b'x', 0, 0];
                for (i, byte) in chunk.iter_mut().enumerate() {
                    *byte = notice[i % notice.len()];
                }
                // Whole messages only, so every chunk starts at a message boundary.
                chunk.truncate(chunk.len() / notice.len() * notice.len());
                // AuthenticationOk first: the session is in, and the notices follow.
                if stream.write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 0]).is_err() {
                    return;
                }
            }
            Hostility::NoticeFlood => {}
        }
        first = false;
        match stream.write(&chunk) {
            Ok(n) if n > 0 => {
                total += n as u64;
                sent.fetch_add(n as u64, Ordering::Relaxed);
            }
            _ => return,
        }
    }
}

/// A loopback address that nothing listens on, with a port: the host list's entry for a host that is down.
pub fn unused_addr() -> (Ipv4Addr, u16) {
    let ip = next_loopback();
    (ip, crate::net::free_port(ip).unwrap_or(1))
}
