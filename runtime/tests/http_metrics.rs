//! The front end's side of `/metrics` over loopback: answers are counted by route and status, and a scrape
//! reads what the poller published, at once, whether or not a poller runs.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use pg_status::process::log::Logger;
use pg_status::publish::{Published, RefreshRequests};
use pg_status::server::{self, HttpServer, Limits};
use pg_status_core::config::{Config, LogLevel};
use pg_status_core::metrics::Telemetry;
use pg_status_core::monitor::Monitor;

fn config() -> Config {
    Config::from_vars([("pg_status__hosts", "db1")]).expect("valid configuration")
}

/// Serves on a thread for the rest of the test process; `requests` decides whether a poller could answer.
fn serve() -> (SocketAddr, Arc<Published>, RefreshRequests) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    listener.set_nonblocking(true).expect("non-blocking listener");
    let addr = listener.local_addr().expect("bound address");
    let (published, requests) = Published::new(Monitor::new(&config(), Instant::now()).snapshot());
    let served = published.clone();
    thread::spawn(move || {
        let server =
            HttpServer::new(listener, served, Limits::default(), Logger::new(LogLevel::Fatal)).expect("server");
        server::block_on(server.run(futures_lite::future::pending::<()>())).expect("runtime").expect("served");
    });
    (addr, published, requests)
}

/// One request on its own connection; the status code and the whole answer.
fn get(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("read timeout");
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
        .expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read the answer");
    let status = answer.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, answer)
}

#[test]
fn answers_are_counted_by_route_and_status() {
    let (addr, _published, _requests) = serve();
    assert_eq!(get(addr, "GET", "/live").0, 200);
    assert_eq!(get(addr, "GET", "/live").0, 200);
    // Not ready: no host has been polled.
    assert_eq!(get(addr, "GET", "/master").0, 503);
    assert_eq!(get(addr, "POST", "/master").0, 405);
    assert_eq!(get(addr, "GET", "/nothing-here").0, 404);
    let (status, text) = get(addr, "GET", "/metrics");
    assert_eq!(status, 200, "{text}");
    for line in [
        "pg_status_http_requests_total{route=\"/live\",status=\"200\"} 2",
        "pg_status_http_requests_total{route=\"/master\",status=\"503\"} 1",
        "pg_status_http_requests_total{route=\"/master\",status=\"405\"} 1",
        "pg_status_http_requests_total{route=\"other\",status=\"404\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
}

#[test]
fn a_scrape_without_a_poller_answers_at_once_from_what_was_published() {
    let (addr, published, requests) = serve();
    // Nobody polls: the answer is what the publication holds, given at once.
    drop(requests);
    let mut telemetry = Telemetry::of(&Monitor::new(&config(), Instant::now()));
    telemetry.episodes_total = 7;
    published.store_telemetry(telemetry);
    let started = Instant::now();
    let (status, answer) = get(addr, "GET", "/metrics");
    assert_eq!(status, 200, "{answer}");
    assert!(started.elapsed() < Duration::from_secs(2), "answered after {:?}", started.elapsed());
    assert!(answer.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4\r\n"), "{answer}");
    assert!(answer.lines().any(|l| l == "pg_status_failover_episodes_total 7"), "{answer}");
    assert!(answer.lines().any(|l| l == "pg_status_ready 0"), "{answer}");
    let (status, answer) = get(addr, "DELETE", "/metrics");
    assert_eq!(status, 405, "{answer}");
    assert!(answer.to_ascii_lowercase().contains("allow: get, head"), "{answer}");
    let (_, text) = get(addr, "GET", "/metrics");
    assert!(text.contains("pg_status_http_requests_total{route=\"/metrics\",status=\"200\"} 1"), "{text}");
    assert!(text.contains("pg_status_http_requests_total{route=\"/metrics\",status=\"405\"} 1"), "{text}");
}
