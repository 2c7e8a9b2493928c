//! The accept loop survives running out of file descriptors: with a tiny open-file limit, clients pile up
//! until accepting fails (EMFILE), and once some leave, new clients are served again.
//!
//! A test binary of its own, because it lowers the open-file limit of the whole process.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use pg_status::process::log::Logger;
use pg_status::publish::Published;
use pg_status::server::{self, HttpServer, Limits};
use pg_status_core::config::{Config, LogLevel};
use pg_status_core::monitor::Monitor;
use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// Sends `GET /live` and returns the status line, or `None` if the server did not answer within `limit`.
fn live(addr: std::net::SocketAddr, limit: Duration) -> Option<String> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(limit)).ok()?;
    stream.write_all(b"GET /live HTTP/1.1\r\nHost: test\r\n\r\n").ok()?;
    let mut buf = [0u8; 256];
    let n = stream.read(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    text.lines().next().map(str::to_owned)
}

/// File descriptors this process has open now.
fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count() as u64).unwrap_or(64)
}

#[test]
fn accept_loop_survives_emfile() {
    let config = Config::from_vars([("pg_status__hosts", "db1")]).expect("valid configuration");
    let (published, _refresh) = Published::new(Monitor::new(&config, Instant::now()).snapshot());
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    listener.set_nonblocking(true).expect("non-blocking listener");
    let addr = listener.local_addr().expect("address");
    thread::spawn(move || {
        let server =
            HttpServer::new(listener, published, Limits::default(), Logger::new(LogLevel::Fatal)).expect("server");
        server::block_on(server.run(futures_lite::future::pending())).expect("runtime").expect("served");
    });
    assert_eq!(live(addr, Duration::from_secs(5)).as_deref(), Some("HTTP/1.1 200 OK"));

    // Room for 40 more descriptors: clients and the server's accepted sockets share it.
    let before = getrlimit(Resource::Nofile);
    let limit = open_fds() + 40;
    setrlimit(Resource::Nofile, Rlimit { current: Some(limit), maximum: before.maximum }).expect("lower the limit");

    let mut clients = Vec::new();
    for _ in 0..30 {
        match TcpStream::connect(addr) {
            Ok(client) => clients.push(client),
            Err(_) => break,
        }
    }
    // Let the server accept until it runs out of descriptors and starts failing.
    thread::sleep(Duration::from_millis(300));
    assert!(clients.len() >= 20, "only {} clients connected", clients.len());
    assert!(live(addr, Duration::from_millis(300)).is_none(), "the server still had descriptors to spare");

    // Clients leave: the server closes their connections, gets descriptors back and serves again.
    clients.clear();
    let started = Instant::now();
    let mut answer = None;
    while answer.is_none() && started.elapsed() < Duration::from_secs(10) {
        answer = live(addr, Duration::from_millis(500));
    }
    assert_eq!(answer.as_deref(), Some("HTTP/1.1 200 OK"));
    setrlimit(Resource::Nofile, before).expect("restore the limit");
}
