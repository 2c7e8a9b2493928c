//! `pg-status healthcheck`, the Docker image's health check, against the real binary: it answers 0 while a
//! pg-status with the same environment serves `/live`, and 1 when nothing (or something else) answers.
//! No PostgreSQL is needed: `/live` answers before any host has been polled.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use pg_status_tests::net::free_port;

/// Runs `pg-status healthcheck` with exactly the variables of `env` that are set.
fn healthcheck(env: &BTreeMap<String, Option<String>>) -> (Output, Duration) {
    let mut cmd = Command::new(common::bin());
    cmd.arg("healthcheck").env_clear().stdin(Stdio::null());
    for (name, value) in env {
        if let Some(value) = value {
            cmd.env(name, value);
        }
    }
    let started = Instant::now();
    let out = cmd.output().expect("run pg-status healthcheck");
    (out, started.elapsed())
}

fn base_env(port: u16) -> BTreeMap<String, Option<String>> {
    let mut env = BTreeMap::new();
    // Port 1 on loopback: no PostgreSQL there, the host simply fails its polls.
    env.insert("pg_status__hosts".to_owned(), Some("127.0.0.1:1".to_owned()));
    env.insert("pg_status__http_port".to_owned(), Some(port.to_string()));
    env
}

#[test]
fn healthcheck_passes_against_a_running_server() {
    let p = common::builder().env("pg_status__hosts", "127.0.0.1:1").spawn().expect("pg-status starts");
    p.wait_listening(common::STARTUP).expect("pg-status listens");
    let (out, took) = healthcheck(p.env());
    assert!(
        out.status.success(),
        "healthcheck exited {} after {took:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        p.output_dump()
    );
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "a passing check prints nothing: {out:?}");

    // The default listen address (every IPv4 address) is checked on 127.0.0.1.
    let mut env = p.env().clone();
    env.remove("pg_status__http_host");
    let (out, _) = healthcheck(&env);
    assert!(out.status.success(), "healthcheck without pg_status__http_host: {out:?}");
}

#[test]
fn healthcheck_fails_when_nothing_listens() {
    let port = free_port(Ipv4Addr::LOCALHOST).expect("free port");
    let (out, took) = healthcheck(&base_env(port));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "one line on stderr: {stderr}");
    assert!(stderr.starts_with("healthcheck failed: GET http://127.0.0.1:"), "{stderr}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

#[test]
fn healthcheck_fails_on_a_non_200_answer() {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().expect("accept");
        let mut request = [0u8; 1024];
        let n = socket.read(&mut request).expect("read the request");
        let _ = socket.write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n");
        String::from_utf8_lossy(&request[..n]).into_owned()
    });
    let (out, _) = healthcheck(&base_env(port));
    let request = server.join().expect("server thread");
    assert!(request.starts_with("GET /live HTTP/1.1\r\n"), "{request:?}");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("503"), "{out:?}");
}

#[test]
fn healthcheck_gives_up_after_two_seconds_on_a_silent_server() {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let port = listener.local_addr().expect("addr").port();
    // Accepts (through the backlog) and never answers.
    let (out, took) = healthcheck(&base_env(port));
    drop(listener);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(took >= Duration::from_millis(1900) && took < Duration::from_secs(4), "took {took:?}");
}

#[test]
fn unknown_arguments_are_refused() {
    let out = Command::new(common::bin()).arg("--help").env_clear().output().expect("run pg-status");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("healthcheck"), "{out:?}");
}
