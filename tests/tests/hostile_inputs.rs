//! Inputs an attacker or an unlucky operator gives pg-status: files that are not certificate files, values
//! that would forge log lines, a stdout nobody reads, SIGHUP, and HTTP/1.1 requests without `Host`. None of
//! them may hang, crash or silently misconfigure the sidecar.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{bin, builder, start_ready, Checks};
use pg_status_tests::http;
use pg_status_tests::net::{free_port, next_loopback};
use pg_status_tests::{PgStatus, PgStatusBuilder};

/// A builder whose only host refuses connections: ready after one failed poll, no PostgreSQL needed.
fn without_postgres() -> PgStatusBuilder {
    let ip = next_loopback();
    let port = free_port(ip).expect("port");
    builder().hosts(&[(ip.to_string(), port)])
}

/// Runs `b` and expects exit status 2 within a few seconds with one stderr line containing every needle.
fn refused(c: &mut Checks, case: &str, b: PgStatusBuilder, needles: &[&str]) -> Option<PgStatus> {
    let mut p = b.spawn().expect("spawn");
    let status = match p.wait_exit(Duration::from_secs(10)) {
        Ok(status) => status,
        Err(e) => {
            c.check(false, || format!("{case}: pg-status did not exit within 10 s: {e}"));
            return None;
        }
    };
    c.eq(&format!("{case}: exit status"), status.code(), Some(2));
    let lines: Vec<String> = p.stderr().texts().into_iter().filter(|l| !l.trim().is_empty()).collect();
    c.eq(&format!("{case}: one stderr line ({lines:?})"), lines.len(), 1);
    let line = lines.first().cloned().unwrap_or_default();
    for needle in needles {
        c.check(line.contains(needle), || format!("{case}: the line says {needle:?}: {line:?}"));
    }
    Some(p)
}

#[test]
fn certificate_files_that_are_not_files_are_refused_at_once() {
    let mut c = Checks::new();
    let dir = tempfile_dir("files");
    let fifo = dir.join("roots.fifo");
    let status = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(status.success(), "mkfifo");
    let huge = dir.join("huge.pem");
    std::fs::write(&huge, vec![b'A'; 2 * 1024 * 1024]).expect("write a 2 MiB file");
    let fifo = fifo.to_string_lossy().into_owned();
    let huge = huge.to_string_lossy().into_owned();
    for (var, path, reason) in [
        ("PGSSLROOTCERT", "/dev/zero", "not a regular file"),
        ("PGSSLROOTCERT", fifo.as_str(), "not a regular file"),
        ("PGSSLCRL", huge.as_str(), "more than the 1048576 pg-status reads"),
        ("PGSSLROOTCERT", "/", "not a regular file"),
    ] {
        let started = Instant::now();
        let b = without_postgres().env("PGSSLMODE", "verify-ca").env(var, path);
        refused(&mut c, &format!("{var}={path}"), b, &[var, path, reason]);
        c.check(started.elapsed() < Duration::from_secs(5), || format!("{var}={path}: refused at once"));
    }
    let _ = std::fs::remove_dir_all(&dir);
    c.finish();
}

#[test]
fn values_that_would_forge_log_lines_are_refused() {
    let mut c = Checks::new();
    let forged = "127.0.6.9: master";
    for (var, value, shown) in [
        ("pg_status__hosts", format!("db1\n{forged}"), "U+000A"),
        ("pg_status__hosts", format!("db1\u{2028}{forged}"), "U+2028"),
        ("pg_status__current_dc", "dc1\u{85}x".to_owned(), "U+0085"),
        ("pg_status__pg_user", "app\rroot".to_owned(), "U+000D"),
    ] {
        let case = format!("{var}={value:?}");
        if let Some(p) =
            refused(&mut c, &case, builder().env("pg_status__hosts", "db1").env(var, &value), &[var, shown])
        {
            let all: Vec<String> = p.stdout().texts().into_iter().chain(p.stderr().texts()).collect();
            c.check(all.iter().all(|l| l != forged), || format!("{case}: no forged line: {all:?}"));
        }
    }
    for (var, value, needle) in [
        ("pg_status__pg_user", "", "must not be empty"),
        ("pg_status__http_port", "0", "must be at least 1"),
        ("pg_status__max_wait_ms", "18446744073709551615", "must be at most 60000"),
        ("pg_status__require_auth", "scram-sha-256,cleartext", "is not a method"),
    ] {
        refused(&mut c, &format!("{var}={value:?}"), without_postgres().env(var, value), &[var, needle]);
    }
    c.finish();
}

#[test]
fn sighup_and_the_user_signals_are_logged_and_change_nothing() {
    let mut p = start_ready(without_postgres());
    for (signal, name) in [(libc::SIGHUP, "SIGHUP"), (libc::SIGUSR1, "SIGUSR1"), (libc::SIGUSR2, "SIGUSR2")] {
        let mark = p.stdout().len();
        p.signal(signal).expect(name);
        let prefix = format!("{name} received and ignored");
        let noted = p.stdout().wait_for(mark, &prefix, Duration::from_secs(5), |l| l.starts_with(&prefix));
        assert!(noted.is_ok(), "a line says {name} was received; {}", p.output_dump());
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(p.try_exit_status().expect("status"), None, "{name} does not end pg-status; {}", p.output_dump());
        assert_eq!(p.get("/live").expect("live").status, 200, "still answering after {name}");
    }
    p.signal(libc::SIGTERM).expect("SIGTERM");
    let status = p.wait_exit(Duration::from_secs(5)).expect("exit after SIGTERM");
    assert_eq!(status.code(), Some(0), "clean exit after SIGTERM; {}", p.output_dump());
    assert!(p.stdout().texts().iter().any(|l| l == "pg-status stopped"), "{}", p.output_dump());
}

#[test]
fn http_1_1_needs_exactly_one_host_header() {
    let p = start_ready(without_postgres());
    let mut c = Checks::new();
    let timeout = Duration::from_secs(5);
    for (request, status) in [
        ("GET /live HTTP/1.1\r\n\r\n", 400),
        ("GET /live HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        ("GET /metrics HTTP/1.1\r\n\r\n", 400),
        ("GET /live HTTP/1.1\r\nHost: pg-status\r\n\r\n", 200),
        ("GET /live HTTP/1.0\r\n\r\n", 200),
    ] {
        match http::raw(p.addr(), request.as_bytes(), false, timeout) {
            Ok(r) => {
                c.eq(&format!("{request:?}: status"), r.status, status);
                if status == 400 {
                    c.check(r.json().is_ok_and(|j| j["error_text"].is_string()), || {
                        format!("{request:?}: JSON error: {r}")
                    });
                }
            }
            Err(e) => c.check(false, || format!("{request:?}: {e}")),
        }
    }
    c.finish();
}

#[test]
fn a_stdout_nobody_reads_does_not_stop_polling() {
    // Debug lines for every poll of four refusing hosts every 10 ms fill a pipe in about a second and the
    // log queue a few seconds later.
    let hosts: Vec<String> = (0..4).map(|_| next_loopback().to_string()).collect();
    let port = free_port(next_loopback()).expect("port");
    let http_port = free_port(std::net::Ipv4Addr::LOCALHOST).expect("http port");
    let mut child = KillOnDrop(
        Command::new(bin())
            .env("pg_status__hosts", hosts.join(","))
            .env("pg_status__pg_port", port.to_string())
            .env("pg_status__http_port", http_port.to_string())
            .env("pg_status__http_host", "127.0.0.1")
            .env("pg_status__sleep_ms", "10")
            .env("pg_status__query_timeout_ms", "500")
            .env("pg_status__log_level", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn"),
    );
    let addr = std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, http_port));
    let count = || {
        let text = http::get(addr, "/metrics", None).map(|r| r.text()).unwrap_or_default();
        text.lines()
            .filter(|l| l.starts_with("pg_status_poll_duration_seconds_count"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let started = Instant::now();
    while count() == 0.0 && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
    }
    // Long enough for the pipe and the queue to be full; then polling must still go on.
    std::thread::sleep(Duration::from_secs(8));
    let before = count();
    std::thread::sleep(Duration::from_secs(3));
    let after = count();
    assert!(after - before > 100.0, "polls went on while stdout was not read: {before} then {after} polls");
    // Reading stdout again lets the queue drain; then stderr says how many lines were dropped.
    let child = &mut child.0;
    let mut stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        let mut sink = [0u8; 65536];
        while matches!(stdout.read(&mut sink), Ok(n) if n > 0) {}
    });
    let stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) if line.contains("log lines were dropped") => return,
            Ok(line) => seen.push(line),
            Err(_) => {}
        }
    }
    panic!("no report of dropped lines on stderr; last lines: {:?}", &seen[seen.len().saturating_sub(5)..]);
}

/// Kills the child if the test fails before it is done with it.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tempfile_dir(what: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("pg-status-{what}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn names_that_do_not_resolve_fail_their_polls_on_a_bounded_number_of_threads() {
    // 300 names under the reserved .invalid domain (RFC 6761): none of them resolves.
    let names: Vec<String> = (0..300).map(|i| format!("no-such-host-{i}.invalid")).collect();
    let p = builder().env("pg_status__hosts", names.join(",")).spawn().expect("spawn");
    p.wait_listening(common::STARTUP).expect("listening");
    let started = Instant::now();
    let mut peak = 0;
    while started.elapsed() < Duration::from_secs(60) {
        peak = peak.max(pg_status_tests::procfs::threads(p.pid()).expect("threads"));
        if p.get("/ready").is_ok_and(|r| r.status == 200) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(p.get("/ready").expect("ready").status, 200, "every host finished a first poll; {}", p.output_dump());
    for _ in 0..20 {
        peak = peak.max(pg_status_tests::procfs::threads(p.pid()).expect("threads"));
        std::thread::sleep(Duration::from_millis(50));
    }
    // main (HTTP), poller, log writer, and the resolver's threads: four, and up to 64 while look-ups hang (a
    // resolver that takes its time over 300 names at once is such a case).
    assert!(peak <= 4 + 64, "threads stay bounded with 300 names that do not resolve: peak {peak}");
    let failed = p.stderr().wait_for(0, "a failed poll of a name", Duration::from_secs(5), |l| {
        l.starts_with("no-such-host-") && l.contains("poll failed (connect)")
    });
    assert!(failed.is_ok(), "a name that does not resolve fails its poll like a refused connection: {failed:?}");
}

#[test]
fn memory_of_a_connection_burst_is_given_back() {
    use std::io::Write;
    const CONNECTIONS: usize = 5_000;
    let got = pg_status_tests::net::raise_nofile_limit(CONNECTIONS as u64 + 500).expect("open-file limit");
    assert!(got > CONNECTIONS as u64 + 100, "the test needs {CONNECTIONS} sockets; the open-file limit is {got}");
    let p = start_ready(without_postgres());
    let rss = || pg_status_tests::procfs::rss_kib(p.pid()).expect("rss");
    let before = rss();
    let mut clients = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        let mut s = http::connect(p.addr(), Duration::from_secs(10)).expect("connect");
        s.write_all(b"GET /hosts HTTP/1.1\r\nHost: x\r\n\r\n").expect("request");
        clients.push(s);
    }
    let mut reader = http::ResponseReader::new();
    for s in &mut clients {
        let r = reader.read(s, false, Duration::from_secs(10)).expect("answer");
        assert_eq!(r.status, 200);
        reader = http::ResponseReader::new();
    }
    let with = rss();
    drop(clients);
    let closed = Instant::now();
    let mut after = rss();
    while after > 16 * 1024 && closed.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
        after = rss();
    }
    assert!(
        after <= 16 * 1024,
        "resident memory back under 16 MiB within 10 s of {CONNECTIONS} connections closing: {before} KiB before, \
         {with} KiB with them open, {after} KiB {:?} after",
        closed.elapsed()
    );
    assert_eq!(p.get("/live").expect("live").status, 200);
}

/// A server that asks every client for its password in clear text and records what it gets back.
fn cleartext_asker() -> (std::net::SocketAddr, std::sync::mpsc::Receiver<Option<Vec<u8>>>) {
    use std::io::Write;
    let ip = next_loopback();
    let listener = std::net::TcpListener::bind((ip, 0)).expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(20) {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(3)));
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut head = [0u8; 8];
                if stream.read_exact(&mut head).is_err() {
                    return;
                }
                if head[4..8] == [0x04, 0xd2, 0x16, 0x2f] {
                    // Decline TLS, then read the start-up message.
                    if stream.write_all(b"N").is_err() || stream.read_exact(&mut head[..4]).is_err() {
                        return;
                    }
                    let mut rest = vec![
                        0u8;
                        (u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize)
                            .saturating_sub(4)
                    ];
                    if stream.read_exact(&mut rest).is_err() {
                        return;
                    }
                } else {
                    let mut rest = vec![
                        0u8;
                        (u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize)
                            .saturating_sub(8)
                    ];
                    if stream.read_exact(&mut rest).is_err() {
                        return;
                    }
                }
                // AuthenticationCleartextPassword.
                if stream.write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 3]).is_err() {
                    return;
                }
                let mut answer = Vec::new();
                let mut chunk = [0u8; 256];
                while let Ok(n) = stream.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    answer.extend_from_slice(&chunk[..n]);
                    if answer.len() >= 5
                        && answer.len() > u32::from_be_bytes([answer[1], answer[2], answer[3], answer[4]]) as usize
                    {
                        break;
                    }
                }
                let _ = tx.send((!answer.is_empty()).then_some(answer));
            });
        }
    });
    (addr, rx)
}

#[test]
fn require_auth_refuses_a_server_that_asks_for_the_password_in_clear_text() {
    let secret = "Clear-7c1d-Text";
    let mut c = Checks::new();
    for (require, sent) in [(Some("scram-sha-256"), false), (None, true)] {
        let (addr, answers) = cleartext_asker();
        let mut b = builder()
            .hosts(&[(addr.ip().to_string(), addr.port())])
            .env("pg_status__pg_password", secret)
            .env("PGSSLMODE", "disable");
        if let Some(methods) = require {
            b = b.env("pg_status__require_auth", methods);
        }
        let p = start_ready(b);
        let answer = answers.recv_timeout(Duration::from_secs(10)).expect("the server saw a client");
        let got_password = answer
            .as_ref()
            .is_some_and(|a| a.first() == Some(&b'p') && a.windows(secret.len()).any(|w| w == secret.as_bytes()));
        c.eq(&format!("require_auth={require:?}: the password was sent in clear text"), got_password, sent);
        if require.is_some() {
            let errors = p.stderr().texts();
            c.check(
                errors
                    .iter()
                    .any(|l| l.contains("poll failed (auth)") && l.contains("pg_status__require_auth=scram-sha-256")),
                || format!("the failed poll says why: {errors:?}"),
            );
        }
    }
    c.finish();
}

#[test]
fn require_auth_against_a_real_server() {
    let Some(bins) = pg_status_tests::postgres_or_skip("require_auth_against_a_real_server") else { return };
    let cluster =
        pg_status_tests::Cluster::start(&bins, pg_status_tests::ClusterOptions::with_replicas(0)).expect("cluster");
    let m = cluster.node(0);
    // The harness's servers use SCRAM: allowed, the host is the master.
    let p = start_ready(common::for_nodes(&[m]).env("pg_status__require_auth", "scram-sha-256"));
    common::settle(&p, "/master", &m.host());
    // Only MD5 allowed: the SCRAM request is refused before anything is sent, and the poll says why.
    let p = start_ready(common::for_nodes(&[m]).env("pg_status__require_auth", "md5"));
    let errors = p.stderr().wait_for_contains("pg_status__require_auth=md5 does not allow", Duration::from_secs(10));
    assert!(errors.is_ok(), "the refusal names the setting; {}", p.output_dump());
    assert_eq!(p.get("/master").expect("master").status, 404, "no master when its authentication is refused");
}
