//! Self-tests of the harness: the cluster really streams, pauses and promotes, the proxy really switches,
//! freezes and cuts, the runner captures output and signals, and the HTTP client parses what servers send.
//! They do not need the pg-status binary.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use pg_status_tests::pg::{format_lsn, write_rows, HARNESS_APPLICATION_NAME};
use pg_status_tests::proxy::Mode;
use pg_status_tests::{http, postgres_or_skip, Cluster, ClusterOptions, PgStatusBuilder, Proxy};

const T: Duration = Duration::from_secs(30);

#[test]
fn cluster_streams_pauses_resumes_promotes_and_restarts() {
    let Some(bins) = postgres_or_skip("cluster_streams_pauses_resumes_promotes_and_restarts") else { return };
    let cluster = Cluster::start(&bins, ClusterOptions::with_replicas(2)).expect("cluster starts");
    let (primary, r1, r2) = (cluster.node(0), cluster.node(1), cluster.node(2));
    assert_ne!(primary.ip(), r1.ip(), "every node has its own address");
    assert!(!primary.is_in_recovery().expect("primary answers"));
    assert!(r1.is_in_recovery().expect("replica answers"));

    // Streaming: a write on the primary is replayed on both replicas.
    let lsn = write_rows(primary, 100).expect("write");
    cluster.wait_caught_up(T).expect("replicas catch up");
    assert_eq!(r2.value("SELECT count(*) FROM harness_load").expect("count").as_deref(), Some("100"));

    // Paused replay: WAL still arrives but is not applied.
    r1.pause_replay().expect("pause");
    let lsn2 = write_rows(primary, 1000).expect("write while paused");
    assert!(lsn2 > lsn);
    r1.wait_received(lsn2, T).expect("paused replica still receives");
    r2.wait_replayed(lsn2, T).expect("other replica replays");
    std::thread::sleep(Duration::from_millis(200));
    let replayed = r1.replay_lsn().expect("replay lsn").expect("replica has a replay lsn");
    assert!(replayed < lsn2, "paused replica replayed {} >= {}", format_lsn(replayed), format_lsn(lsn2));
    r1.resume_replay().expect("resume");
    r1.wait_replayed(lsn2, T).expect("resumed replica catches up");

    // Wrong password is refused over TCP.
    let mut config = postgres::Config::new();
    config.host(&primary.host()).port(primary.port()).user("postgres").password("wrong").dbname("postgres");
    assert!(config.connect(postgres::NoTls).is_err(), "password authentication is enforced");

    // The harness's sessions are tagged and excluded from foreign_sessions.
    let mut other = primary.connect_as("someone-else").expect("connect");
    let sessions = primary.foreign_sessions().expect("sessions");
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(sessions[0].application_name, "someone-else");
    assert_ne!(sessions[0].application_name, HARNESS_APPLICATION_NAME);
    other.simple_query("SELECT 1").expect("query");
    drop(other);

    // A proxy in front of the primary relays real PostgreSQL traffic.
    let proxy = Proxy::start(primary.addr()).expect("proxy");
    let mut via = postgres::Config::new();
    via.host(&proxy.host()).port(proxy.port()).user("postgres").password("postgres").dbname("postgres");
    let mut client = via.connect(postgres::NoTls).expect("connect through the proxy");
    client.simple_query("SELECT 1").expect("query through the proxy");
    drop(client);

    // Failover: stop the primary, promote a replica.
    primary.stop().expect("stop primary");
    assert!(!primary.is_running());
    r1.promote().expect("promote");
    assert!(!r1.is_in_recovery().expect("promoted answers"));
    write_rows(r1, 10).expect("the promoted replica accepts writes");

    // Restart the old primary: it comes back as a second master.
    primary.start().expect("restart");
    assert!(!primary.is_in_recovery().expect("restarted answers"));
    primary.kill().expect("kill");
    assert!(!primary.is_running());
}

fn echo_server(prefix: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind echo");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                loop {
                    let n = match stream.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(_) => break,
                    };
                    let mut reply = prefix.as_bytes().to_vec();
                    reply.extend_from_slice(&buf[..n]);
                    if stream.write_all(&reply).is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

fn exchange(stream: &mut TcpStream, msg: &str) -> std::io::Result<String> {
    stream.write_all(msg.as_bytes())?;
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other.map(|n| String::from_utf8_lossy(&buf[..n]).into_owned()),
        }
    }
}

fn connect(proxy: &Proxy) -> TcpStream {
    let s = TcpStream::connect(proxy.addr()).expect("connect to proxy");
    s.set_read_timeout(Some(Duration::from_millis(500))).expect("timeout");
    s
}

#[test]
fn proxy_forwards_switches_freezes_cuts_and_restores() {
    let a = echo_server("A:");
    let b = echo_server("B:");
    let proxy = Proxy::start(a).expect("proxy");
    assert_eq!(proxy.mode(), Mode::Forward);

    let mut c1 = connect(&proxy);
    assert_eq!(exchange(&mut c1, "hi").expect("forward"), "A:hi");

    // Switch: new connections reach B, the existing one is closed.
    proxy.switch_to(b);
    let mut c2 = connect(&proxy);
    assert_eq!(exchange(&mut c2, "hi").expect("switched"), "B:hi");
    assert!(http::closed_within(&mut c1, Duration::from_secs(2)).expect("read"), "switch closes old connections");

    // Freeze: connections are accepted but nothing moves; restore lets the held bytes through.
    proxy.freeze();
    std::thread::sleep(Duration::from_millis(100));
    let mut c3 = connect(&proxy);
    let frozen = exchange(&mut c3, "x");
    assert!(frozen.is_err(), "a frozen proxy answers nothing, got {frozen:?}");
    let frozen_existing = exchange(&mut c2, "y");
    assert!(frozen_existing.is_err(), "existing connections freeze too, got {frozen_existing:?}");
    proxy.restore();
    c3.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    let mut got = String::new();
    let start = Instant::now();
    while got.len() < 3 && start.elapsed() < Duration::from_secs(3) {
        let mut buf = [0u8; 64];
        match c3.read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Ok(0) | Err(_) => break,
            Ok(n) => got.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    assert_eq!(got, "B:x", "held bytes pass after restore");

    // Cut: existing connections close, new ones are reset or closed at once.
    proxy.cut();
    assert!(http::closed_within(&mut c3, Duration::from_secs(2)).expect("read"), "cut closes connections");
    let start = Instant::now();
    let mut c4 = connect(&proxy);
    let cut_result = exchange(&mut c4, "z");
    assert!(matches!(cut_result.as_deref(), Err(_) | Ok("")), "cut refuses traffic, got {cut_result:?}");
    assert!(start.elapsed() < Duration::from_millis(450), "a cut connection fails fast, not by timeout");

    proxy.restore();
    let mut c5 = connect(&proxy);
    assert_eq!(exchange(&mut c5, "ok").expect("restored"), "B:ok");
    assert!(proxy.accepted() >= 5);
}

#[test]
fn http_client_reads_length_chunked_and_eof_bodies() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let replies: Vec<&'static [u8]> = vec![
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        b"HTTP/1.1 405 Method Not Allowed\r\nAllow: GET, HEAD\r\n\r\nuntil eof",
    ];
    let server = std::thread::spawn(move || {
        for reply in replies {
            let (mut s, _) = listener.accept().expect("accept");
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            s.write_all(reply).expect("write");
        }
    });
    let r = http::get(addr, "/x", None).expect("length");
    assert_eq!((r.status, r.text().as_str(), r.content_type().as_str()), (200, "hello", "text/plain"));
    let r = http::get(addr, "/x", None).expect("chunked");
    assert_eq!((r.status, r.text().as_str()), (404, "abcde"));
    let r = http::request(addr, "POST", "/x", &[], Duration::from_secs(5)).expect("eof");
    assert_eq!((r.status, r.header("allow"), r.text().as_str()), (405, Some("GET, HEAD"), "until eof"));
    server.join().expect("server");
}

#[test]
fn runner_captures_lines_passes_env_and_signals() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("fake-pg-status");
    std::fs::write(
        &script,
        "#!/bin/sh\ntrap 'echo bye; exit 0' TERM\necho \"hosts=$pg_status__hosts\"\necho oops >&2\n\
         while true; do sleep 0.05; done\n",
    )
    .expect("write script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut p = PgStatusBuilder::new(&script).expect("builder").env("pg_status__hosts", "a,b").spawn().expect("spawn");
    p.stdout().wait_for_line("hosts=a,b", Duration::from_secs(5)).expect("stdout line");
    p.stderr().wait_for_line("oops", Duration::from_secs(5)).expect("stderr line");
    assert!(p.try_exit_status().expect("status").is_none());
    p.terminate().expect("sigterm");
    let status = p.wait_exit(Duration::from_secs(5)).expect("exits");
    assert_eq!(status.code(), Some(0));
    assert_eq!(p.stdout().count("bye"), 1, "{}", p.output_dump());
}
