//! `pg-status healthcheck`: asks a running pg-status on this machine whether it is alive, for container health
//! checks (the Docker image's `HEALTHCHECK` runs it). It needs nothing but the standard library.
//!
//! It reads the same environment as the server, so it finds the port (`pg_status__http_port`) and the address
//! (`pg_status__http_listen_address` or `pg_status__http_host`) the server listens on, sends `GET /live` and
//! exits 0 on a `200` answer, 1 on anything else, all within [`TIMEOUT`].

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use pg_status_core::config::ListenAddress;

/// The whole check (connect, request, answer) must end within this time.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// The largest answer read; `/live` answers a few dozen bytes.
const MAX_ANSWER: u64 = 16 * 1024;

/// Why the check failed.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// The environment does not describe a configuration the server would start with.
    #[error("{0}")]
    Config(String),
    /// Connecting, writing or reading failed (or took longer than [`TIMEOUT`]).
    #[error("GET http://{addr}/live: {source}")]
    Io {
        /// Where the check connected.
        addr: SocketAddr,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// The server answered, but not `200`.
    #[error("GET http://{addr}/live answered {status_line:?}")]
    NotOk {
        /// Where the check connected.
        addr: SocketAddr,
        /// The status line of the answer (empty when there was none).
        status_line: String,
    },
}

/// Runs the check against the server the environment describes and returns the exit status: 0 when `/live`
/// answered `200`, else 1 (with one line on stderr saying why).
pub fn run() -> i32 {
    let config = crate::process::program::read_config().map_err(HealthError::Config).and_then(|c| match c.http_port {
        0 => Err(HealthError::Config(
            "pg_status__http_port=0: the server does not listen on TCP; check its Unix socket instead \
             (curl --unix-socket PATH http://localhost/live)"
                .to_owned(),
        )),
        _ => Ok(c),
    });
    match config.and_then(|c| check(target(c.listen, c.http_port), TIMEOUT)) {
        Ok(()) => 0,
        Err(e) => {
            crate::process::program::startup_logger().refusal(format_args!("healthcheck failed: {e}"));
            1
        }
    }
}

/// The address to check for a server listening on `listen` and `port`: the loopback address of the same
/// family when the server listens on every address (`0.0.0.0`, `::`, `*`), else the address itself.
pub fn target(listen: ListenAddress, port: u16) -> SocketAddr {
    let ip = match listen {
        ListenAddress::Any => IpAddr::V4(Ipv4Addr::LOCALHOST),
        ListenAddress::Ip(IpAddr::V4(ip)) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        ListenAddress::Ip(IpAddr::V6(ip)) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ListenAddress::Ip(ip) => ip,
    };
    SocketAddr::new(ip, port)
}

/// Sends `GET /live` to `addr` and succeeds on a `200` answer, all within `timeout`.
pub fn check(addr: SocketAddr, timeout: Duration) -> Result<(), HealthError> {
    let io_error = |source| HealthError::Io { addr, source };
    let deadline = Instant::now() + timeout;
    let left = || {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            Err(io_error(io::Error::new(io::ErrorKind::TimedOut, "no answer in time")))
        } else {
            Ok(left)
        }
    };
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(io_error)?;
    stream.set_write_timeout(Some(left()?)).map_err(io_error)?;
    let request =
        format!("GET /live HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nUser-Agent: pg-status-healthcheck\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(io_error)?;
    // Read until the status line is complete (or the server closes), re-arming the timeout with what is left.
    let mut answer = Vec::new();
    let mut buffer = [0u8; 1024];
    while !answer.contains(&b'\n') && (answer.len() as u64) < MAX_ANSWER {
        stream.set_read_timeout(Some(left()?)).map_err(io_error)?;
        let n = (&mut stream).take(buffer.len() as u64).read(&mut buffer).map_err(io_error)?;
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buffer[..n]);
    }
    let status_line = String::from_utf8_lossy(answer.split(|&b| b == b'\n').next().unwrap_or_default());
    let status_line = status_line.trim_end().to_owned();
    if is_ok(&status_line) {
        Ok(())
    } else {
        Err(HealthError::NotOk { addr, status_line })
    }
}

/// Whether an HTTP/1 status line says `200`.
fn is_ok(status_line: &str) -> bool {
    let mut parts = status_line.split(' ');
    matches!((parts.next(), parts.next()), (Some(version), Some("200")) if version.starts_with("HTTP/1."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert!(is_ok("HTTP/1.1 200 OK"));
        assert!(is_ok("HTTP/1.0 200"));
        assert!(!is_ok("HTTP/1.1 503 Service Unavailable"));
        assert!(!is_ok("HTTP/1.1 2000 OK"));
        assert!(!is_ok(""));
        assert!(!is_ok("SSH-2.0-OpenSSH"));
    }

    #[test]
    fn targets() {
        let v4 = |a: [u8; 4]| ListenAddress::Ip(IpAddr::from(a));
        assert_eq!(target(v4([0, 0, 0, 0]), 8000), "127.0.0.1:8000".parse().expect("address"));
        assert_eq!(target(v4([10, 1, 2, 3]), 80), "10.1.2.3:80".parse().expect("address"));
        assert_eq!(target(ListenAddress::Any, 1), "127.0.0.1:1".parse().expect("address"));
        let any6 = ListenAddress::Ip(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
        assert_eq!(target(any6, 9), "[::1]:9".parse().expect("address"));
    }

    #[test]
    fn nothing_listening_fails() {
        // Port 1 on loopback: nothing listens there in a test environment.
        let result = check("127.0.0.1:1".parse().expect("address"), Duration::from_millis(500));
        assert!(matches!(result, Err(HealthError::Io { .. })), "{result:?}");
    }

    #[test]
    fn answers_are_read() {
        let serve = |answer: &'static [u8]| {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let addr = listener.local_addr().expect("addr");
            let server = std::thread::spawn(move || {
                let (mut socket, _) = listener.accept().expect("accept");
                let mut request = [0u8; 512];
                let _ = socket.read(&mut request);
                let _ = socket.write_all(answer);
            });
            let result = check(addr, Duration::from_secs(2));
            let _ = server.join();
            result
        };
        assert!(serve(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nOK").is_ok());
        assert!(matches!(serve(b"HTTP/1.1 503 Service Unavailable\r\n\r\n"), Err(HealthError::NotOk { .. })));
        assert!(matches!(serve(b""), Err(HealthError::NotOk { .. })));
    }
}
