//! The process: configuration errors exit 2 with one stderr line naming variable and value; SIGTERM and
//! SIGINT exit 0 promptly; the password never appears in any output; errors go to stderr; thousands of idle
//! clients, a half-sent request and a 200 KB header do not stop others from being answered; keep-alive,
//! pipelining, IPv6 and the default listen address.

mod common;

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{builder, for_nodes, start_ready, Checks, SLACK, STARTUP};
use pg_status_tests::http::{self, ResponseReader};
use pg_status_tests::net::{free_port, next_loopback, raise_nofile_limit};
use pg_status_tests::{postgres_or_skip, Cluster, ClusterOptions, PgStatus, PgStatusBuilder, Proxy};

/// A builder whose only host refuses connections: no PostgreSQL needed, ready after one failed poll.
fn without_postgres() -> PgStatusBuilder {
    let ip = next_loopback();
    let port = free_port(ip).expect("port");
    builder().hosts(&[(ip.to_string(), port)])
}

#[test]
fn configuration_errors_exit_2_with_one_line_naming_variable_and_value() {
    let mut c = Checks::new();
    let cases: Vec<(&str, Option<&str>)> = vec![
        ("pg_status__hosts", None),
        ("pg_status__hosts", Some("")),
        ("pg_status__hosts", Some("db1,,db2")),
        ("pg_status__hosts", Some("db1,db1")),
        ("pg_status__sleep_ms", Some("abc")),
        ("pg_status__sleep_ms", Some("0")),
        ("pg_status__max_fails", Some("0")),
        ("pg_status__max_fails", Some("-3")),
        ("pg_status__query_timeout_ms", Some("5s")),
        ("pg_status__query_timeout_ms", Some("0")),
        ("pg_status__conn_max_age_ms", Some("x")),
        ("pg_status__connect_timeout", Some("1.5")),
        ("pg_status__sync_max_lag_ms", Some("-1")),
        ("pg_status__sync_max_lag_bytes", Some("1MB")),
        ("pg_status__http_port", Some("99999")),
        ("pg_status__http_port", Some("http")),
        ("pg_status__pg_port", Some("notaport")),
        ("pg_status__pg_port", Some("70000")),
    ];
    for (var, value) in cases {
        let mut b = builder().env("pg_status__hosts", "db1,db2").env("pg_status__pg_password", "Sekr1t-pw");
        b = match value {
            Some(v) => b.env(var, v),
            None => b.without(var),
        };
        let mut p = b.spawn().expect("spawn");
        let case = format!("{var}={value:?}");
        let status = match p.wait_exit(Duration::from_secs(10)) {
            Ok(s) => s,
            Err(e) => {
                c.check(false, || format!("{case}: did not exit: {e}"));
                continue;
            }
        };
        c.eq(&format!("{case}: exit status"), status.code(), Some(2));
        let lines: Vec<String> = p.stderr().texts().into_iter().filter(|l| !l.trim().is_empty()).collect();
        c.eq(&format!("{case}: number of stderr lines ({lines:?})"), lines.len(), 1);
        let line = lines.first().cloned().unwrap_or_default();
        c.check(line.contains(var), || format!("{case}: the stderr line names {var}: {line:?}"));
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            c.check(line.contains(v), || format!("{case}: the stderr line shows the value {v:?}: {line:?}"));
        }
        let all = format!("{:?}{:?}", p.stdout().texts(), p.stderr().texts());
        c.check(!all.contains("Sekr1t-pw"), || format!("{case}: the password appears in the output: {all}"));
    }
    c.finish();
}

fn assert_stops(mut p: PgStatus, signal: i32, name: &str) {
    let mark = p.stdout().len();
    let sent = Instant::now();
    p.signal(signal).expect("signal");
    let status = p.wait_exit(Duration::from_secs(5)).unwrap_or_else(|e| panic!("{name}: no exit: {e}"));
    let took = sent.elapsed();
    assert_eq!(status.code(), Some(0), "{name}: exit status {status}; {}", p.output_dump());
    assert!(took < Duration::from_secs(3), "{name}: exit took {took:?}");
    assert!(p.stdout().len() > mark, "{name}: a shutdown line on stdout; {}", p.output_dump());
    assert!(TcpStream::connect_timeout(&p.addr(), Duration::from_millis(500)).is_err(), "{name}: port still open");
}

#[test]
fn sigterm_and_sigint_exit_0_promptly_with_a_shutdown_line() {
    let p = start_ready(without_postgres());
    assert!(!p.stdout().is_empty(), "a start-up line on stdout");
    assert_stops(p, libc::SIGTERM, "SIGTERM");
    let p = start_ready(without_postgres());
    // An idle keep-alive client must not hold the shutdown up.
    let mut idle = http::connect(p.addr(), Duration::from_secs(5)).expect("connect");
    idle.write_all(b"GET /live HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
    let r = ResponseReader::new().read(&mut idle, false, Duration::from_secs(5)).expect("response");
    assert_eq!(r.status, 200);
    assert_stops(p, libc::SIGINT, "SIGINT with an idle keep-alive client");
    drop(idle);
}

#[test]
fn credentials_are_used_and_the_password_is_never_printed() {
    let Some(bins) = postgres_or_skip("credentials_are_used_and_the_password_is_never_printed") else { return };
    let secret = "Pw-7f3a9c-Secret";
    let options = ClusterOptions { replicas: 0, password: secret.into(), ..ClusterOptions::default() };
    let cluster = Cluster::start(&bins, options).expect("cluster");
    let m = cluster.node(0);
    let mut c = Checks::new();

    // The right password: it works, and never shows.
    let mut good = start_ready(for_nodes(&[m]).env("pg_status__pg_password", secret));
    common::settle(&good, "/master", &m.host());
    // The default password (postgres) is wrong for this cluster: the host fails authentication.
    let bad = start_ready(for_nodes(&[m]));
    let (_, _) = bad
        .stdout()
        .wait_for_line_after(0, &format!("{}: dead", m.host()), SLACK)
        .expect("a host refusing the password is dead after max_fails");
    c.check(bad.stdout().count(&format!("{}: possible dead", m.host())) == 1, || {
        format!("'possible dead' once before 'dead': {:?}", bad.stdout().texts())
    });
    c.check(!bad.stderr().is_empty(), || "the authentication error is reported on stderr".into());
    c.eq("/master with the wrong password", bad.get("/master").expect("master").status, 404);
    // A wrong password given explicitly never shows either.
    let wrong = start_ready(for_nodes(&[m]).env("pg_status__pg_password", "Wr0ng-Secret-42"));
    wrong.stdout().wait_for_line(&format!("{}: dead", m.host()), SLACK).expect("dead");
    good.terminate().expect("sigterm");
    let _ = good.wait_exit(Duration::from_secs(5));
    for (name, p, pw) in [("right", &good, secret), ("default", &bad, secret), ("wrong", &wrong, "Wr0ng-Secret-42")] {
        let all = p.output_dump();
        c.check(!all.contains(pw), || format!("{name} password: the password appears in the output: {all}"));
    }
    drop((bad, wrong));

    // pg_user and pg_database are the ones connected with.
    m.execute("CREATE ROLE watcher LOGIN PASSWORD 'W4tch-pw'").expect("role");
    m.execute("CREATE DATABASE appdb").expect("database");
    let other = start_ready(
        for_nodes(&[m])
            .env("pg_status__pg_user", "watcher")
            .env("pg_status__pg_password", "W4tch-pw")
            .env("pg_status__pg_database", "appdb"),
    );
    common::settle(&other, "/master", &m.host());
    let sessions = m.foreign_sessions().expect("sessions");
    let used: Vec<(String, String)> = sessions.iter().map(|s| (s.user.clone(), s.database.clone())).collect();
    c.eq("the session uses pg_user and pg_database", used, vec![("watcher".to_owned(), "appdb".to_owned())]);
    drop(other);
    // A database that does not exist: the host fails and the reason is on stderr.
    let missing = start_ready(
        for_nodes(&[m])
            .env("pg_status__pg_user", "watcher")
            .env("pg_status__pg_password", "W4tch-pw")
            .env("pg_status__pg_database", "no_such_db"),
    );
    missing.stdout().wait_for_line(&format!("{}: dead", m.host()), SLACK).expect("dead with a missing database");
    c.check(missing.stderr().texts().iter().any(|l| l.contains("no_such_db")), || {
        format!("stderr explains the failure: {:?}", missing.stderr().texts())
    });
    c.check(!missing.output_dump().contains("W4tch-pw"), || "the password stays out of the output".into());
    c.finish();
}

#[test]
fn thousands_of_idle_connections_do_not_block_a_new_request() {
    raise_nofile_limit(8192).expect("raise the open-file limit");
    let p = start_ready(without_postgres());
    let mut idle = Vec::new();
    let start = Instant::now();
    while idle.len() < 2000 && start.elapsed() < Duration::from_secs(30) {
        match TcpStream::connect_timeout(&p.addr(), Duration::from_secs(2)) {
            Ok(s) => idle.push(s),
            Err(e) => panic!("connection {} refused: {e}", idle.len()),
        }
    }
    assert_eq!(idle.len(), 2000, "opened 2000 idle connections in {:?}", start.elapsed());
    let asked = Instant::now();
    let r = http::request(p.addr(), "GET", "/version", &[], Duration::from_secs(5)).expect("a new request is answered");
    assert_eq!(r.status, 200);
    assert!(asked.elapsed() < Duration::from_secs(2), "answered in {:?}", asked.elapsed());
    // And the process is still healthy after they all go away.
    drop(idle);
    let r = p.get("/ready").expect("ready");
    assert_eq!(r.status, 200);
}

#[test]
fn half_sent_request_and_huge_header_do_not_hurt_other_clients() {
    let p = start_ready(without_postgres());
    let addr = p.addr();
    // A client that sends half a request and then goes quiet.
    let mut half = http::connect(addr, Duration::from_secs(5)).expect("connect");
    half.write_all(b"GET /version HTTP/1.1\r\nHost: x\r\nX-Partial: ").expect("write half");

    // A client that sends a 200 KB header line.
    let big = std::thread::spawn(move || {
        let mut s = http::connect(addr, Duration::from_secs(10)).expect("connect");
        let mut req = b"GET /version HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
        req.extend_from_slice(&vec![b'a'; 200 * 1024]);
        req.extend_from_slice(b"\r\n\r\n");
        // The server may answer and close before reading everything: a failed write is fine.
        let _ = s.write_all(&req);
        ResponseReader::new().read(&mut s, false, Duration::from_secs(10))
    });

    // Everyone else is answered promptly meanwhile.
    for _ in 0..20 {
        let asked = Instant::now();
        let r = http::get(addr, "/version", None).expect("other client answered");
        assert_eq!(r.status, 200);
        assert!(asked.elapsed() < Duration::from_secs(1), "answered in {:?}", asked.elapsed());
    }
    let big = big.join().expect("big-header client");
    match big {
        Ok(r) => assert_eq!(r.status, 431, "a 200 KB header is refused with 431: {r}"),
        // Closing the connection without an answer also refuses it.
        Err(e) => eprintln!("the 200 KB header request was closed without an answer: {e}"),
    }
    let r = p.get("/live").expect("live");
    assert_eq!(r.status, 200);
    // The half-sent request is not kept forever: a read timeout closes it (or answers it with an error).
    let waited = Instant::now();
    let closed = http::closed_within(&mut half, Duration::from_secs(35)).expect("read");
    assert!(closed, "a half-sent request is still open after {:?}", waited.elapsed());
}

#[test]
fn keep_alive_and_pipelining() {
    let p = start_ready(without_postgres());
    let mut s = http::connect(p.addr(), Duration::from_secs(5)).expect("connect");
    let mut reader = ResponseReader::new();
    // Two requests one after the other on one connection.
    for path in ["/live", "/version"] {
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).expect("write");
        let r = reader.read(&mut s, false, Duration::from_secs(5)).expect("keep-alive response");
        assert_eq!(r.status, 200, "{path}: {r}");
    }
    // Three pipelined requests in one write: three answers in order.
    s.write_all(
        b"GET /live HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\nHEAD /version HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .expect("write pipelined");
    let a = reader.read(&mut s, false, Duration::from_secs(5)).expect("first");
    let b = reader.read(&mut s, false, Duration::from_secs(5)).expect("second");
    let c = reader.read(&mut s, true, Duration::from_secs(5)).expect("third");
    assert_eq!((a.status, a.text().as_str()), (200, "OK"));
    assert_eq!(b.status, 404);
    assert_eq!(c.status, 200);
}

#[test]
fn listens_on_ipv6_and_by_default_on_every_interface() {
    // IPv6 loopback.
    let port = free_port(Ipv4Addr::LOCALHOST).expect("port");
    let p =
        without_postgres().env("pg_status__http_host", "::1").env("pg_status__http_port", port).spawn().expect("spawn");
    let v6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
    pg_status_tests::wait_until_ok(STARTUP, "pg-status to listen on [::1]", || {
        TcpStream::connect_timeout(&v6, Duration::from_millis(200)).map(|_| ())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", p.output_dump()));
    let r = http::get(v6, "/live", None).expect("GET over IPv6");
    assert_eq!(r.status, 200);
    drop(p);

    // Without pg_status__http_host it binds every interface, so loopback answers too.
    let p = without_postgres().without("pg_status__http_host").spawn().expect("spawn");
    p.wait_listening(STARTUP).expect("listening on 0.0.0.0 answers on 127.0.0.1");
    assert_eq!(p.get("/live").expect("live").status, 200);
}

#[test]
fn connect_timeout_bounds_a_hung_handshake() {
    // A host that accepts TCP connections but never answers the PostgreSQL handshake.
    let hung = Proxy::start(SocketAddr::from((next_loopback(), 9))).expect("proxy");
    hung.freeze();
    let p = builder()
        .hosts(&[(hung.host(), hung.port())])
        .timing(100, 5000, 3)
        .env("pg_status__connect_timeout", 1)
        .spawn()
        .expect("spawn");
    let line = p
        .stdout()
        .wait_for_line(&format!("{}: possible dead", hung.host()), Duration::from_secs(4) + SLACK)
        .expect("the handshake fails");
    let after = line.at.duration_since(p.started());
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_millis(4000),
        "pg_status__connect_timeout=1 ends a hung handshake after about 1 s, before the 5 s deadline: {after:?}"
    );
}
