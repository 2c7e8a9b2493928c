//! The poll driver on the production runtime against tiny fake PostgreSQL servers on loopback: connection
//! reuse and renewal, deadlines, error kinds, independence of hosts, and closing connections at shutdown.
//!
//! The fake servers speak just enough of the wire protocol for tokio-postgres: trust authentication and
//! simple queries answered with one fixed row.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use async_io::Timer;
use pg_status::poller::driver::{Driver, EventLog};
use pg_status::poller::runtime::SmolRuntime;
use pg_status_core::config::Config;
use pg_status_core::monitor::{Event, PollError, PollErrorKind, PollId};
use pg_status_core::observation::{Observation, Role};
use smol::LocalExecutor;

/// How a fake server behaves after a client has logged in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    /// Answers every query with a master's row.
    Master,
    /// Never answers a query.
    Hang,
    /// Answers with a row of the wrong shape.
    Garbage,
}

/// What a fake server saw.
#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    queries: AtomicUsize,
    /// Connections that ended (terminate message, EOF or error).
    closed: AtomicUsize,
}

/// Starts a fake server on 127.0.0.1 and returns its port.
fn fake_server(behaviour: Behaviour) -> (u16, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let port = listener.local_addr().expect("address").port();
    let seen = Arc::new(Seen::default());
    let counters = seen.clone();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            counters.connections.fetch_add(1, Ordering::SeqCst);
            let counters = counters.clone();
            thread::spawn(move || {
                let _ = session(stream, behaviour, &counters);
                counters.closed.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (port, seen)
}

fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn read_exact(stream: &mut TcpStream, n: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    stream.read_exact(&mut buf)?;
    Ok(buf)
}

/// The request code of PostgreSQL's SSLRequest.
const SSL_REQUEST: i32 = 80877103;

/// Serves one client until it terminates or disconnects.
fn session(mut stream: TcpStream, behaviour: Behaviour, seen: &Seen) -> std::io::Result<()> {
    loop {
        let len = i32::from_be_bytes(read_exact(&mut stream, 4)?.try_into().unwrap_or_default());
        let body = read_exact(&mut stream, (len as usize).saturating_sub(4))?;
        // An SSLRequest (sent under the default PGSSLMODE=prefer): decline as a server without TLS does, and
        // read the real start-up message that follows.
        if body.get(..4) == Some(&SSL_REQUEST.to_be_bytes()[..]) {
            stream.write_all(b"N")?;
            continue;
        }
        break;
    }
    let mut hello = message(b'R', &0i32.to_be_bytes());
    hello.extend(message(b'Z', b"I"));
    stream.write_all(&hello)?;
    loop {
        let head = read_exact(&mut stream, 5)?;
        let len = i32::from_be_bytes([head[1], head[2], head[3], head[4]]);
        read_exact(&mut stream, (len as usize).saturating_sub(4))?;
        match head[0] {
            b'X' => return Ok(()),
            b'Q' => {
                seen.queries.fetch_add(1, Ordering::SeqCst);
                let row: Vec<Option<&str>> = match behaviour {
                    Behaviour::Hang => {
                        // Never answer; wait for the client to go away.
                        let mut rest = Vec::new();
                        stream.read_to_end(&mut rest)?;
                        return Ok(());
                    }
                    Behaviour::Master => {
                        let wal_file = Some("000000010000000000000003");
                        vec![Some("f"), Some("0/3000060"), None, None, None, wal_file, None, None, None]
                    }
                    Behaviour::Garbage => vec![Some("maybe")],
                };
                stream.write_all(&answer(&row))?;
            }
            _ => {}
        }
    }
}

/// RowDescription, DataRow, CommandComplete and ReadyForQuery for one text row.
fn answer(row: &[Option<&str>]) -> Vec<u8> {
    let mut description = (row.len() as i16).to_be_bytes().to_vec();
    for i in 0..row.len() {
        description.extend_from_slice(format!("c{i}\0").as_bytes());
        description.extend_from_slice(&0i32.to_be_bytes()); // table
        description.extend_from_slice(&0i16.to_be_bytes()); // column
        description.extend_from_slice(&25i32.to_be_bytes()); // text
        description.extend_from_slice(&(-1i16).to_be_bytes());
        description.extend_from_slice(&(-1i32).to_be_bytes());
        description.extend_from_slice(&0i16.to_be_bytes());
    }
    let mut data = (row.len() as i16).to_be_bytes().to_vec();
    for value in row {
        match value {
            Some(v) => {
                data.extend_from_slice(&(v.len() as i32).to_be_bytes());
                data.extend_from_slice(v.as_bytes());
            }
            None => data.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }
    let mut out = message(b'T', &description);
    out.extend(message(b'D', &data));
    out.extend(message(b'C', b"SELECT 1\0"));
    out.extend(message(b'Z', b"I"));
    out
}

/// One finished iteration as the driver reported it.
#[derive(Debug, Clone)]
struct Poll {
    host: String,
    elapsed: Duration,
    result: Result<Role, PollErrorKind>,
}

/// Everything the driver logged.
#[derive(Default)]
struct Record {
    polls: Vec<Poll>,
    events: Vec<String>,
}

#[derive(Clone, Default)]
struct Recorder(Rc<RefCell<Record>>);

impl EventLog for Recorder {
    fn event(&mut self, event: &Event) {
        self.0.borrow_mut().events.push(event.to_string());
    }

    fn poll_finished(&mut self, host: &str, _id: PollId, elapsed: Duration, result: &Result<Observation, PollError>) {
        let result = result.as_ref().map(|o| o.role).map_err(|e| e.kind);
        self.0.borrow_mut().polls.push(Poll { host: host.to_owned(), elapsed, result });
    }
}

impl Recorder {
    fn polls_of(&self, host: &str) -> Vec<Poll> {
        self.0.borrow().polls.iter().filter(|p| p.host == host).cloned().collect()
    }
}

/// Runs a driver for `run_for` with the given variables, then lets connections close, and returns the log.
fn run_driver(vars: &[(&str, String)], run_for: Duration) -> Recorder {
    let config = Config::from_vars(vars.iter().cloned()).expect("valid configuration");
    let executor = Rc::new(LocalExecutor::new());
    let recorder = Recorder::default();
    let driver = Driver::new(SmolRuntime::new(&executor), &config, recorder.clone());
    async_io::block_on(executor.run(async {
        driver
            .run(async {
                Timer::after(run_for).await;
            })
            .await;
        let until = Instant::now() + Duration::from_secs(2);
        while !executor.is_empty() && Instant::now() < until {
            Timer::after(Duration::from_millis(5)).await;
        }
        assert!(executor.is_empty(), "tasks left after shutdown");
    }));
    recorder
}

fn wait_for(what: &str, limit: Duration, check: impl Fn() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn one_connection_is_reused_and_renewed_after_its_max_age() {
    let (port, seen) = fake_server(Behaviour::Master);
    let host = format!("127.0.0.1:{port}");
    let log = run_driver(
        &[
            ("pg_status__hosts", host.clone()),
            ("pg_status__sleep_ms", "20".into()),
            ("pg_status__conn_max_age_ms", "400".into()),
        ],
        Duration::from_millis(1000),
    );
    let polls = log.polls_of(&host);
    assert!(polls.len() >= 15, "only {} polls", polls.len());
    assert!(polls.iter().all(|p| p.result == Ok(Role::Master)), "{polls:?}");
    let connections = seen.connections.load(Ordering::SeqCst);
    assert!((2..=4).contains(&connections), "{connections} connections in 1 s with a 400 ms maximum age");
    // One query per poll; the server may also have seen the query of a poll still in flight at shutdown.
    let queries = seen.queries.load(Ordering::SeqCst);
    assert!(queries == polls.len() || queries == polls.len() + 1, "{queries} queries for {} polls", polls.len());
    assert!(log.0.borrow().events.contains(&format!("{host}: master")));
    // Every connection was closed at renewal or shutdown.
    wait_for("connections to close", Duration::from_secs(2), || seen.closed.load(Ordering::SeqCst) == connections);
}

#[test]
fn a_hung_host_times_out_at_its_deadline_without_delaying_others() {
    let (good_port, _) = fake_server(Behaviour::Master);
    let (hung_port, hung_seen) = fake_server(Behaviour::Hang);
    let good = format!("127.0.0.1:{good_port}");
    let hung = format!("127.0.0.1:{hung_port}");
    let log = run_driver(
        &[
            ("pg_status__hosts", format!("{good},{hung}")),
            ("pg_status__sleep_ms", "20".into()),
            ("pg_status__query_timeout_ms", "300".into()),
            ("pg_status__max_fails", "2".into()),
        ],
        Duration::from_millis(1100),
    );
    let good_polls = log.polls_of(&good);
    assert!(good_polls.len() >= 20, "the healthy host was polled only {} times", good_polls.len());
    let hung_polls = log.polls_of(&hung);
    assert!((2..=4).contains(&hung_polls.len()), "{hung_polls:?}");
    for poll in &hung_polls {
        assert_eq!(poll.result, Err(PollErrorKind::Timeout));
        assert!(poll.elapsed >= Duration::from_millis(290) && poll.elapsed < Duration::from_millis(600), "{poll:?}");
    }
    let events = log.0.borrow().events.clone();
    assert!(events.contains(&format!("{hung}: possible dead")), "{events:?}");
    assert!(events.contains(&format!("{hung}: dead")), "{events:?}");
    // Each timed-out connection is closed even though the server never answers.
    let connections = hung_seen.connections.load(Ordering::SeqCst);
    // One connection per iteration, plus one for an iteration cut short by the shutdown.
    assert!(connections == hung_polls.len() || connections == hung_polls.len() + 1, "{connections} connections");
    wait_for("hung connections to close", Duration::from_secs(3), || {
        hung_seen.closed.load(Ordering::SeqCst) == hung_seen.connections.load(Ordering::SeqCst)
    });
}

#[test]
fn errors_are_classified() {
    // A loopback address of its own: the other tests' servers listen on 127.0.0.1 and may be given the
    // port this one frees, which would turn "refused" into a server that answers (or hangs).
    let refused = {
        let listener = TcpListener::bind("127.0.66.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        drop(listener);
        format!("127.0.66.1:{port}")
    };
    let (garbage_port, _) = fake_server(Behaviour::Garbage);
    let garbage = format!("127.0.0.1:{garbage_port}");
    let log = run_driver(
        &[("pg_status__hosts", format!("{refused},{garbage}")), ("pg_status__sleep_ms", "50".into())],
        Duration::from_millis(300),
    );
    let refused_polls = log.polls_of(&refused);
    assert!(!refused_polls.is_empty());
    assert!(refused_polls.iter().all(|p| p.result == Err(PollErrorKind::Connect)), "{refused_polls:?}");
    let garbage_polls = log.polls_of(&garbage);
    assert!(!garbage_polls.is_empty());
    assert!(garbage_polls.iter().all(|p| p.result == Err(PollErrorKind::BadReply)), "{garbage_polls:?}");
    let events = log.0.borrow().events.clone();
    assert!(events.iter().any(|e| e.starts_with(&format!("{refused}: poll failed (connect)"))), "{events:?}");
    assert!(events.iter().any(|e| e.starts_with(&format!("{garbage}: poll failed (bad_reply)"))), "{events:?}");
}
