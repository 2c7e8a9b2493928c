//! The HTTP front end over real loopback sockets, answering from a fixed snapshot: keep-alive, pipelining,
//! HEAD, 405, the header limit, the watchdog, the connection cap and graceful shutdown; and the same over a Unix
//! socket, alone or next to TCP.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use pg_status::process::log::Logger;
use pg_status::publish::Published;
use pg_status::server::listen::{self, UnixBindError};
use pg_status::server::{self, HttpServer, Limits};
use pg_status_core::config::{Config, LogLevel, UnixSocketConfig};
use pg_status_core::monitor::{Action, Monitor};
use pg_status_core::observation::Observation;
use pg_status_core::snapshot::Snapshot;

/// A ready snapshot of two hosts: `db1` master at 0/3000060, `db2` replica that has replayed everything.
fn snapshot() -> Snapshot {
    snapshot_replayed("0/3000060")
}

/// A ready snapshot of `db1` master at 0/3000060 and `db2` replica that has replayed up to `replayed`.
fn snapshot_replayed(replayed: &str) -> Snapshot {
    let config = Config::from_vars([("pg_status__hosts", "db1,db2")]).expect("valid configuration");
    let now = Instant::now();
    let mut monitor = Monitor::new(&config, now);
    let master = [Some("f"), Some("0/3000060"), None, None, None, Some("000000010000000000000003"), None, None, None];
    let replica =
        [Some("t"), None, Some(replayed), Some(replayed), Some("0"), None, Some("77"), Some("1"), Some(replayed)];
    while let Some(Action::Poll { id, .. }) = monitor.poll_action(now) {
        let row = if id.host.get() == 0 { &master } else { &replica };
        monitor.handle_poll_result(id, Ok(Observation::from_row(row).expect("valid row")), now);
    }
    let snapshot = monitor.snapshot();
    assert!(snapshot.ready);
    snapshot
}

/// A server on its own thread; dropping `stop` shuts it down.
struct Server {
    addr: SocketAddr,
    /// The Unix socket's path, when the server has one.
    unix: Option<PathBuf>,
    published: Arc<Published>,
    stop: Option<async_channel::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(limits: Limits) -> Server {
        Server::start_on(limits, None)
    }

    /// A server on TCP and on a Unix socket at `unix`.
    fn start_on(limits: Limits, unix: Option<&Path>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        listener.set_nonblocking(true).expect("non-blocking listener");
        let addr = listener.local_addr().expect("bound address");
        let unix_socket = unix.map(|path| {
            let config = UnixSocketConfig { path: path.to_str().expect("UTF-8 path").to_owned(), mode: 0o660 };
            listen::bind_unix(&config).expect("bind the Unix socket")
        });
        let (published, _refresh) = Published::new(snapshot());
        let served = published.clone();
        let (stop, stopped) = async_channel::bounded::<()>(1);
        let thread = thread::spawn(move || {
            let logger = Logger::new(LogLevel::Error);
            let server = HttpServer::serving(Some(listener), unix_socket, served, limits, logger).expect("server");
            server::block_on(server.run(async {
                let _ = stopped.recv().await;
            }))
            .expect("runtime")
            .expect("served");
        });
        Server { addr, unix: unix.map(Path::to_owned), published, stop: Some(stop), thread: Some(thread) }
    }

    fn connect_unix(&self) -> UnixStream {
        let stream = UnixStream::connect(self.unix.as_ref().expect("a Unix socket")).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(5))).expect("read timeout");
        stream
    }

    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(self.addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(5))).expect("read timeout");
        stream
    }

    /// Shuts down and returns how long the server took to finish.
    fn shutdown(&mut self) -> Duration {
        let started = Instant::now();
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            thread.join().expect("server thread");
        }
        started.elapsed()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// One parsed response.
#[derive(Debug)]
struct Response {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }
}

/// Reads `count` responses from `stream` (`head_only`: the requests were HEAD, no bodies follow).
fn read_responses(stream: &mut impl Read, count: usize, head_only: bool) -> Vec<Response> {
    let mut buffer = Vec::new();
    let mut responses = Vec::new();
    let mut chunk = [0u8; 4096];
    while responses.len() < count {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
            let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status code");
            let mut response = Response { status, head, body: Vec::new() };
            let length: usize =
                if head_only { 0 } else { response.header("content-length").map_or(0, |v| v.parse().expect("length")) };
            if buffer.len() >= end + 4 + length {
                response.body = buffer[end + 4..end + 4 + length].to_vec();
                buffer.drain(..end + 4 + length);
                responses.push(response);
                continue;
            }
        }
        let n = stream.read(&mut chunk).expect("read a response");
        assert!(n > 0, "connection closed after {} responses", responses.len());
        buffer.extend_from_slice(&chunk[..n]);
    }
    assert!(buffer.is_empty(), "unexpected bytes after the responses: {:?}", String::from_utf8_lossy(&buffer));
    responses
}

/// A client socket whose reads can time out.
trait Client: Read + Write {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> std::io::Result<()>;
}

impl Client for TcpStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> std::io::Result<()> {
        TcpStream::set_read_timeout(self, timeout)
    }
}

impl Client for UnixStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> std::io::Result<()> {
        UnixStream::set_read_timeout(self, timeout)
    }
}

/// Whether the server closes `stream` within `limit` (reading and discarding anything it sends first).
fn closed_within(stream: &mut impl Client, limit: Duration) -> bool {
    let started = Instant::now();
    stream.set_read_timeout(Some(Duration::from_millis(50))).expect("read timeout");
    let mut chunk = [0u8; 1024];
    while started.elapsed() < limit {
        match stream.read(&mut chunk) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
    false
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n")
}

#[test]
fn keep_alive_serves_many_requests_on_one_connection() {
    let server = Server::start(Limits::default());
    let mut stream = server.connect();
    for _ in 0..5 {
        stream.write_all(get("/master").as_bytes()).unwrap();
        let response = &read_responses(&mut stream, 1, false)[0];
        assert_eq!(response.status, 200);
        assert_eq!(response.body, b"db1");
        assert_eq!(response.header("content-type"), Some("text/plain; charset=utf-8"));
    }
    stream.write_all(b"GET /replica HTTP/1.1\r\nHost: test\r\nAccept: application/json\r\n\r\n").unwrap();
    let response = &read_responses(&mut stream, 1, false)[0];
    assert_eq!(response.body, br#"{"host": "db2", "dc": null, "geo": null, "port": 5432}"#);
    assert_eq!(response.header("content-type"), Some("application/json"));
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let server = Server::start(Limits::default());
    let mut stream = server.connect();
    let batch = [get("/master"), get("/nope"), get("/replica"), get("/version")].concat();
    stream.write_all(batch.as_bytes()).unwrap();
    let responses = read_responses(&mut stream, 4, false);
    let statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 404, 200, 200]);
    assert_eq!(responses[0].body, b"db1");
    assert_eq!(responses[2].body, b"db2");
    assert_eq!(responses[3].body, env!("CARGO_PKG_VERSION").as_bytes());
}

#[test]
fn head_has_headers_and_no_body() {
    let server = Server::start(Limits::default());
    let mut stream = server.connect();
    stream.write_all(b"HEAD /master HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let response = &read_responses(&mut stream, 1, true)[0];
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("text/plain; charset=utf-8"));
    // The connection stays usable: no stray body bytes precede the next answer.
    stream.write_all(get("/master").as_bytes()).unwrap();
    assert_eq!(read_responses(&mut stream, 1, false)[0].body, b"db1");
}

#[test]
fn other_methods_get_405_with_allow() {
    let server = Server::start(Limits::default());
    let mut stream = server.connect();
    stream.write_all(b"POST /master HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\n\r\n").unwrap();
    let response = &read_responses(&mut stream, 1, false)[0];
    assert_eq!(response.status, 405);
    assert_eq!(response.header("allow"), Some("GET, HEAD"));
}

/// Sends a request with a 200 KiB header line on `stream` and checks that the answer is 431.
fn assert_oversized_head_refused(mut stream: impl Read + Write) {
    let request = format!("GET /master HTTP/1.1\r\nHost: test\r\nX-Big: {}\r\n\r\n", "a".repeat(200 * 1024));
    // The server may close while we still write; what matters is the answer it gave first.
    let _ = stream.write_all(request.as_bytes());
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 431"), "got {text:?}");
}

#[test]
fn oversized_head_gets_431_and_others_are_unaffected() {
    let server = Server::start(Limits::default());
    assert_oversized_head_refused(server.connect());

    let mut other = server.connect();
    other.write_all(get("/master").as_bytes()).unwrap();
    assert_eq!(read_responses(&mut other, 1, false)[0].status, 200);
}

#[test]
fn half_sent_request_is_dropped() {
    let limits = Limits { request_timeout: Duration::from_millis(400), ..Limits::default() };
    let server = Server::start(limits);
    let mut stream = server.connect();
    stream.write_all(b"GET /master HTTP/1.1\r\nHost: te").unwrap();
    let started = Instant::now();
    assert!(closed_within(&mut stream, Duration::from_secs(3)), "half request kept open");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(150), "closed too early: {took:?}");

    // A client trickling bytes does not keep the connection either.
    let mut slow = server.connect();
    let started = Instant::now();
    let mut closed = false;
    for byte in b"GET /master HTTP/1.1\r\nHost: test\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
        if slow.write_all(&[*byte]).is_err() || closed_within(&mut slow, Duration::from_millis(100)) {
            closed = true;
            break;
        }
    }
    assert!(closed, "trickling client kept open for {:?}", started.elapsed());
}

#[test]
fn idle_keep_alive_connection_is_closed() {
    let limits = Limits {
        request_timeout: Duration::from_millis(200),
        idle_timeout: Duration::from_millis(600),
        ..Limits::default()
    };
    let server = Server::start(limits);
    let mut stream = server.connect();
    stream.write_all(get("/live").as_bytes()).unwrap();
    assert_eq!(read_responses(&mut stream, 1, false)[0].status, 200);
    // Requests spaced below the idle timeout keep it open.
    for _ in 0..3 {
        thread::sleep(Duration::from_millis(300));
        stream.write_all(get("/live").as_bytes()).unwrap();
        assert_eq!(read_responses(&mut stream, 1, false)[0].status, 200);
    }
    let started = Instant::now();
    assert!(closed_within(&mut stream, Duration::from_secs(3)), "idle connection kept open");
    assert!(started.elapsed() >= Duration::from_millis(500), "closed too early: {:?}", started.elapsed());
}

#[test]
fn connection_cap_defers_new_clients_while_every_connection_is_busy() {
    let limits = Limits { max_connections: 2, ..Limits::default() };
    let server = Server::start(limits);
    // Two connections in the middle of a request: neither is idle, so neither may be closed for a newcomer.
    let mut first = server.connect();
    let mut second = server.connect();
    for stream in [&mut first, &mut second] {
        stream.write_all(b"GET /master HTTP/1.1\r\nHost: te").unwrap();
    }
    thread::sleep(Duration::from_millis(100));
    // The third waits in the backlog: connected, but not answered.
    let mut third = server.connect();
    third.write_all(get("/master").as_bytes()).unwrap();
    third.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let mut byte = [0u8; 1];
    let early = third.read(&mut byte);
    assert!(matches!(&early, Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)), "{early:?}");
    drop(first);
    third.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(read_responses(&mut third, 1, false)[0].body, b"db1");
}

#[test]
fn at_the_cap_the_connection_idle_the_longest_makes_room() {
    let limits = Limits {
        max_connections: 3,
        request_timeout: Duration::from_millis(400),
        idle_timeout: Duration::from_secs(60),
        ..Limits::default()
    };
    let server = Server::start(limits);
    let mut oldest = server.connect();
    oldest.write_all(get("/master").as_bytes()).unwrap();
    assert_eq!(read_responses(&mut oldest, 1, false)[0].status, 200);
    // Idle for a few watchdog ticks, then two more connections that have just been answered.
    thread::sleep(Duration::from_millis(700));
    let mut recent: Vec<TcpStream> = (0..2).map(|_| server.connect()).collect();
    for stream in &mut recent {
        stream.write_all(get("/master").as_bytes()).unwrap();
        assert_eq!(read_responses(stream, 1, false)[0].status, 200);
    }
    // A newcomer at the cap is answered at once, and the connection idle the longest is the one closed.
    let mut newcomer = server.connect();
    newcomer.write_all(get("/master").as_bytes()).unwrap();
    let started = Instant::now();
    assert_eq!(read_responses(&mut newcomer, 1, false)[0].body, b"db1");
    assert!(started.elapsed() < Duration::from_secs(1), "the newcomer waited {:?}", started.elapsed());
    assert!(closed_within(&mut oldest, Duration::from_secs(1)), "the longest-idle connection was closed");
    for stream in &mut recent {
        stream.write_all(get("/live").as_bytes()).unwrap();
        assert_eq!(read_responses(stream, 1, false)[0].status, 200, "a recently used connection stays open");
    }
}

#[test]
fn a_connection_that_never_sends_a_request_is_closed_after_the_request_timeout() {
    let limits = Limits {
        request_timeout: Duration::from_millis(400),
        idle_timeout: Duration::from_secs(60),
        ..Limits::default()
    };
    let server = Server::start(limits);
    let mut silent = server.connect();
    let started = Instant::now();
    assert!(closed_within(&mut silent, Duration::from_secs(3)), "a silent connection is held for the idle timeout");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(350), "closed too early: {took:?}");
}

#[test]
fn a_client_that_does_not_read_its_answers_is_closed() {
    let limits = Limits {
        request_timeout: Duration::from_millis(400),
        idle_timeout: Duration::from_secs(60),
        ..Limits::default()
    };
    let server = Server::start(limits);
    let mut greedy = server.connect();
    greedy.set_write_timeout(Some(Duration::from_millis(100))).unwrap();
    // Pipelined requests whose answers are never read: the answers fill the socket buffers both ways.
    let requests = get("/hosts").repeat(1000);
    let started = Instant::now();
    let mut closed = false;
    while started.elapsed() < Duration::from_secs(10) {
        match greedy.write(requests.as_bytes()) {
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    let took = started.elapsed();
    assert!(closed, "a client that never reads its answers was kept for {took:?}");
    assert!(took < Duration::from_secs(5), "closed only after {took:?}");
}

#[test]
fn shutdown_closes_idle_connections_and_stops_accepting() {
    let mut server = Server::start(Limits::default());
    let mut idle = server.connect();
    idle.write_all(get("/master").as_bytes()).unwrap();
    assert_eq!(read_responses(&mut idle, 1, false)[0].status, 200);
    let took = server.shutdown();
    assert!(took < Duration::from_secs(2), "shutdown took {took:?}");
    assert!(closed_within(&mut idle, Duration::from_secs(1)));
    assert!(TcpStream::connect(server.addr).is_err(), "still accepting after shutdown");
}

#[test]
fn shutdown_waits_for_a_request_in_progress() {
    let limits = Limits { drain_timeout: Duration::from_secs(3), ..Limits::default() };
    let mut server = Server::start(limits);
    let mut busy = server.connect();
    busy.write_all(b"GET /master HTTP/1.1\r\nHost: test\r\n").unwrap();
    thread::sleep(Duration::from_millis(100));
    let addr = server.addr;
    let finisher = thread::spawn(move || {
        thread::sleep(Duration::from_millis(300));
        busy.write_all(b"\r\n").unwrap();
        let response = read_responses(&mut busy, 1, false).remove(0);
        (response.status, response.body)
    });
    let took = server.shutdown();
    let (status, body) = finisher.join().unwrap();
    assert_eq!((status, body.as_slice()), (200, b"db1".as_slice()));
    assert!(took >= Duration::from_millis(200) && took < Duration::from_secs(3), "shutdown took {took:?}");
    assert!(TcpStream::connect(addr).is_err());
}

#[test]
fn the_host_list_follows_every_new_snapshot() {
    let server = Server::start(Limits::default());
    let mut stream = server.connect();
    // The replay position of db2 in a fresh /hosts answer.
    let mut db2_position = || {
        stream.write_all(get("/hosts").as_bytes()).unwrap();
        let response = read_responses(&mut stream, 1, false).remove(0);
        assert_eq!((response.status, response.header("content-type")), (200, Some("application/json")));
        let hosts: serde_json::Value = serde_json::from_slice(&response.body).expect("a JSON host list");
        hosts[1]["lsn"].as_str().expect("db2 has a position").to_owned()
    };
    assert_eq!(db2_position(), "0/3000060");
    assert_eq!(db2_position(), "0/3000060", "asked again of the same snapshot");
    for replayed in ["0/3000000", "0/3000010", "0/3000060"] {
        server.published.store(snapshot_replayed(replayed));
        assert_eq!(db2_position(), replayed, "/hosts after publishing db2 at {replayed}");
    }
    // Two snapshots published between requests: the first one's memory may be reused by the second, and
    // its document must not be taken for the second's.
    for (between, replayed) in [("0/3000010", "0/3000000"), ("0/3000000", "0/3000010")] {
        server.published.store(snapshot_replayed(between));
        server.published.store(snapshot_replayed(replayed));
        assert_eq!(db2_position(), replayed, "/hosts after publishing db2 at {between}, then at {replayed}");
    }
}

#[test]
fn min_lsn_request_waits_for_a_replica_to_catch_up() {
    let server = Server::start(Limits::default());
    server.published.store(snapshot_replayed("0/3000000"));
    let mut stream = server.connect();
    let request = get("/replica?min_lsn=0/3000060&wait_ms=300");

    // Nobody catches up: after the wait the master answers.
    let started = Instant::now();
    stream.write_all(request.as_bytes()).unwrap();
    assert_eq!(read_responses(&mut stream, 1, false)[0].body, b"db1");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(250) && waited < Duration::from_secs(2), "waited {waited:?}");

    // Without wait_ms the answer comes at once.
    let started = Instant::now();
    stream.write_all(get("/replica?min_lsn=0/3000060").as_bytes()).unwrap();
    assert_eq!(read_responses(&mut stream, 1, false)[0].body, b"db1");
    assert!(started.elapsed() < Duration::from_millis(200));

    // The replica catches up during the wait: it answers as soon as the snapshot shows it.
    let request = get("/replica?min_lsn=0/3000060&wait_ms=1000");
    stream.write_all(request.as_bytes()).unwrap();
    thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    server.published.store(snapshot());
    assert_eq!(read_responses(&mut stream, 1, false)[0].body, b"db2");
    assert!(started.elapsed() < Duration::from_millis(500), "answered after {:?}", started.elapsed());
}

#[test]
fn a_request_sent_while_another_is_held_is_answered_right_after_it() {
    let server = Server::start(Limits::default());
    server.published.store(snapshot_replayed("0/3000000"));
    let mut stream = server.connect();
    // The first request is held; the second arrives on the same connection while it waits, so its bytes must
    // be noticed even though nothing new arrives after them.
    stream.write_all(get("/replica?min_lsn=0/3000060&wait_ms=3000").as_bytes()).unwrap();
    thread::sleep(Duration::from_millis(100));
    stream.write_all(get("/master").as_bytes()).unwrap();
    thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    server.published.store(snapshot());
    let answers = read_responses(&mut stream, 2, false);
    assert_eq!(answers[0].body, b"db2");
    assert_eq!(answers[1].body, b"db1");
    assert!(started.elapsed() < Duration::from_secs(1), "answered after {:?}", started.elapsed());
}

/// A fresh path for a Unix socket in a fresh directory (removed when dropped).
struct SocketDir(PathBuf);

impl SocketDir {
    fn new() -> SocketDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("pg-status-http-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("socket directory");
        SocketDir(dir)
    }

    fn socket(&self) -> PathBuf {
        self.0.join("http.sock")
    }
}

impl Drop for SocketDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn the_unix_socket_serves_the_same_api_as_tcp() {
    let dir = SocketDir::new();
    let server = Server::start_on(Limits::default(), Some(&dir.socket()));
    let mode = std::fs::metadata(dir.socket()).expect("socket file").permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "the socket file's mode");
    let mut stream = server.connect_unix();
    // Keep-alive and pipelining, HEAD, 404 and the JSON answer, on one connection.
    stream.write_all([get("/master"), get("/nope"), get("/replica")].concat().as_bytes()).unwrap();
    let responses = read_responses(&mut stream, 3, false);
    let answers: Vec<(u16, &[u8])> = responses.iter().map(|r| (r.status, r.body.as_slice())).collect();
    assert_eq!(answers[0], (200, b"db1".as_slice()));
    assert_eq!((answers[1].0, answers[2]), (404, (200, b"db2".as_slice())));
    stream.write_all(b"HEAD /master HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    assert_eq!(read_responses(&mut stream, 1, true)[0].status, 200);
    stream.write_all(b"GET /replica HTTP/1.1\r\nHost: test\r\nAccept: application/json\r\n\r\n").unwrap();
    assert_eq!(
        read_responses(&mut stream, 1, false)[0].body,
        br#"{"host": "db2", "dc": null, "geo": null, "port": 5432}"#
    );
    stream.write_all(b"POST /master HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\n\r\n").unwrap();
    let refused = &read_responses(&mut stream, 1, false)[0];
    assert_eq!((refused.status, refused.header("allow")), (405, Some("GET, HEAD")));

    // The header limit holds here too.
    assert_oversized_head_refused(server.connect_unix());

    // TCP answers next to it.
    let mut tcp = server.connect();
    tcp.write_all(get("/master").as_bytes()).unwrap();
    assert_eq!(read_responses(&mut tcp, 1, false)[0].body, b"db1");
}

#[test]
fn unix_and_tcp_clients_share_the_watchdog_and_the_connection_cap() {
    let dir = SocketDir::new();
    let limits = Limits {
        max_connections: 2,
        request_timeout: Duration::from_millis(400),
        idle_timeout: Duration::from_secs(60),
        ..Limits::default()
    };
    let server = Server::start_on(limits, Some(&dir.socket()));
    // A half-sent request over the Unix socket is dropped like one over TCP.
    let mut half = server.connect_unix();
    half.write_all(b"GET /master HTTP/1.1\r\nHost: te").unwrap();
    let started = Instant::now();
    assert!(closed_within(&mut half, Duration::from_secs(3)), "half request kept open");
    assert!(started.elapsed() >= Duration::from_millis(150), "closed too early: {:?}", started.elapsed());
    drop(half);
    thread::sleep(Duration::from_millis(50));

    // One Unix and one TCP connection fill the cap of 2; the Unix one has idled the longest.
    let mut oldest = server.connect_unix();
    oldest.write_all(get("/master").as_bytes()).unwrap();
    assert_eq!(read_responses(&mut oldest, 1, false)[0].status, 200);
    thread::sleep(Duration::from_millis(700));
    let mut recent = server.connect();
    recent.write_all(get("/master").as_bytes()).unwrap();
    assert_eq!(read_responses(&mut recent, 1, false)[0].status, 200);
    // A TCP newcomer makes the Unix connection idle the longest close, and is answered at once.
    let mut newcomer = server.connect();
    newcomer.write_all(get("/master").as_bytes()).unwrap();
    let started = Instant::now();
    assert_eq!(read_responses(&mut newcomer, 1, false)[0].body, b"db1");
    assert!(started.elapsed() < Duration::from_secs(1), "the newcomer waited {:?}", started.elapsed());
    assert!(closed_within(&mut oldest, Duration::from_secs(1)), "the longest-idle connection was closed");
    recent.write_all(get("/live").as_bytes()).unwrap();
    assert_eq!(read_responses(&mut recent, 1, false)[0].status, 200, "a recently used connection stays open");
}

#[test]
fn the_socket_file_is_removed_at_shutdown() {
    let dir = SocketDir::new();
    let mut server = Server::start_on(Limits::default(), Some(&dir.socket()));
    let mut idle = server.connect_unix();
    idle.write_all(get("/live").as_bytes()).unwrap();
    assert_eq!(read_responses(&mut idle, 1, false)[0].status, 200);
    server.shutdown();
    assert!(closed_within(&mut idle, Duration::from_secs(1)));
    assert!(!dir.socket().exists(), "the socket file outlived the server");
    assert!(UnixStream::connect(dir.socket()).is_err());
}

#[test]
fn a_stale_socket_file_is_replaced_and_a_live_one_is_refused() {
    let dir = SocketDir::new();
    let path = dir.socket();
    let config = UnixSocketConfig { path: path.to_str().expect("UTF-8").to_owned(), mode: 0o600 };
    // A live socket: another process listens on it. It is refused and left alone.
    let live = UnixListener::bind(&path).expect("bind");
    let refused = listen::bind_unix(&config).expect_err("someone listens there");
    assert!(matches!(refused, UnixBindError::InUse { .. }), "{refused:?}");
    assert!(refused.to_string().contains(path.to_str().expect("UTF-8")), "{refused}");
    assert!(UnixStream::connect(&path).is_ok(), "the other process's socket still works");
    // Its process is gone (the listener closed, the file stays): the file is replaced.
    drop(live);
    assert!(path.exists());
    let socket = listen::bind_unix(&config).expect("a stale file is replaced");
    assert_eq!(std::fs::metadata(&path).expect("socket").permissions().mode() & 0o777, 0o600);
    assert!(UnixStream::connect(&path).is_ok(), "the new socket listens");
    drop(socket);
    assert!(!path.exists(), "dropping the socket removes its file");
    // Something that is not a socket is never removed.
    std::fs::write(&path, b"not a socket").expect("a regular file");
    let refused = listen::bind_unix(&config).expect_err("not a socket");
    assert!(matches!(refused, UnixBindError::NotASocket { .. }), "{refused:?}");
    assert_eq!(std::fs::read(&path).expect("still there"), b"not a socket");
}
