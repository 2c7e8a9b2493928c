//! The Unix socket listener with a real client (`curl --unix-socket`): the same API as over TCP against a real
//! primary and replica, TCP turned off with port 0, the socket file's mode, its removal at shutdown, a stale
//! file replaced, and a socket another instance still serves refused.

mod common;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{builder, for_nodes, Checks, STARTUP};
use pg_status_tests::net::{free_port, next_loopback};
use pg_status_tests::{postgres_or_skip, Cluster, ClusterOptions, PgStatus, PgStatusBuilder};

/// `curl --unix-socket socket http://localhost{path}`: the status code and the body, or why curl failed.
fn curl(socket: &Path, path: &str, accept: Option<&str>) -> Result<(u16, String), String> {
    let mut cmd = Command::new("curl");
    cmd.args(["--silent", "--show-error", "--max-time", "5", "--write-out", "\n%{http_code}", "--unix-socket"])
        .arg(socket);
    if let Some(accept) = accept {
        cmd.args(["--header", &format!("Accept: {accept}")]);
    }
    cmd.arg(format!("http://localhost{path}"));
    let out = cmd.output().map_err(|e| format!("running curl (install it: apt-get install curl): {e}"))?;
    if !out.status.success() {
        return Err(format!("curl {path}: {} {}", out.status, String::from_utf8_lossy(&out.stderr).trim()));
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').ok_or_else(|| format!("curl {path}: no status in {text:?}"))?;
    let code = code.parse().map_err(|_| format!("curl {path}: status {code:?}"))?;
    Ok((code, body.to_owned()))
}

/// Asks `path` over the socket until it answers `status` with `body` (a first poll may fail on a loaded
/// machine), or fails after [`STARTUP`].
fn settle(p: &PgStatus, socket: &Path, path: &str, status: u16, body: Option<&str>) {
    let deadline = Instant::now() + STARTUP;
    loop {
        let answer = curl(socket, path, None);
        match &answer {
            Ok((s, b)) if *s == status && body.is_none_or(|want| want == b) => return,
            _ if Instant::now() >= deadline => {
                panic!("{path} over {}: {answer:?}, expected {status} {body:?}\n{}", socket.display(), p.output_dump())
            }
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// A builder whose only host refuses connections: no PostgreSQL needed.
fn without_postgres() -> PgStatusBuilder {
    let ip = next_loopback();
    let port = free_port(ip).expect("port");
    builder().hosts(&[(ip.to_string(), port)])
}

#[test]
fn the_api_over_the_unix_socket_with_tcp_turned_off() {
    let Some(bins) = postgres_or_skip("the_api_over_the_unix_socket_with_tcp_turned_off") else { return };
    let cluster = Cluster::start(&bins, ClusterOptions::with_replicas(1)).expect("cluster");
    cluster.wait_streaming(STARTUP).expect("the replica streams");
    let (primary, replica) = (cluster.node(0), cluster.node(1));
    let dir = tempfile::tempdir().expect("socket directory");
    let socket = dir.path().join("http.sock");
    let b = for_nodes(&[primary, replica])
        .env("pg_status__http_port", 0)
        .env("pg_status__http_unix_socket", socket.display());
    let tcp = b.http_addr();
    let mut p = b.spawn().expect("pg-status starts");
    let mut c = Checks::new();

    let line = p.stdout().wait_for_contains(" listening on ", STARTUP).expect("the start-up line");
    let expected = format!(" listening on unix:{}, monitoring 2 hosts", socket.display());
    c.check(line.text.contains(&expected), || format!("start-up line {:?} lacks {expected:?}", line.text));
    settle(&p, &socket, "/ready", 200, Some("OK"));
    settle(&p, &socket, "/master", 200, Some(&primary.host()));
    settle(&p, &socket, "/replica", 200, Some(&replica.host()));
    let json = curl(&socket, "/master", Some("application/json")).expect("JSON answer");
    let want = format!(r#"{{"host": "{}", "dc": null, "geo": null, "port": {}}}"#, primary.host(), primary.port());
    c.check(json == (200, want), || format!("/master as JSON: {json:?}"));
    let hosts = curl(&socket, "/hosts", None).expect("/hosts");
    c.check(hosts.0 == 200 && hosts.1.contains(&replica.host()), || format!("/hosts: {hosts:?}"));
    let missing = curl(&socket, "/nope", None).expect("/nope");
    c.check(missing.0 == 404, || format!("/nope: {missing:?}"));

    let metadata = std::fs::symlink_metadata(&socket).expect("the socket file");
    c.check(metadata.file_type().is_socket(), || "the file is not a socket".into());
    let mode = metadata.permissions().mode() & 0o777;
    c.check(mode == 0o660, || format!("the socket's mode is {mode:o}, expected the default 660"));
    c.check(std::net::TcpStream::connect(tcp).is_err(), || format!("port 0 turns TCP off, but {tcp} answers"));

    p.terminate().expect("SIGTERM");
    let status = p.wait_exit(Duration::from_secs(10)).expect("pg-status exits");
    c.check(status.code() == Some(0), || format!("exit status {status:?} after SIGTERM"));
    c.check(!socket.exists(), || "the socket file is left behind after SIGTERM".into());
    c.finish();
}

#[test]
fn a_stale_socket_is_replaced_and_one_still_served_is_refused() {
    let dir = tempfile::tempdir().expect("socket directory");
    let socket = dir.path().join("http.sock");
    let on_socket = || {
        without_postgres()
            .env("pg_status__http_unix_socket", socket.display())
            .env("pg_status__http_unix_socket_mode", "0600")
    };
    let mut c = Checks::new();
    let first = on_socket().spawn().expect("the first instance starts");
    settle(&first, &socket, "/live", 200, Some("OK"));
    let mode = std::fs::metadata(&socket).expect("socket").permissions().mode() & 0o777;
    c.check(mode == 0o600, || format!("pg_status__http_unix_socket_mode=0600 gave {mode:o}"));

    // A second instance on the same path: refused, naming it, and the first keeps its socket.
    let mut second = on_socket().spawn().expect("spawn");
    let status = second.wait_exit(Duration::from_secs(10)).expect("the second instance exits");
    let refusal = second.stderr().texts().join("\n");
    c.check(status.code() == Some(1), || format!("second instance: exit {status:?}"));
    c.check(refusal.contains(&format!("unix:{}", socket.display())) && refusal.contains("another process"), || {
        format!("second instance said {refusal:?}")
    });
    c.check(curl(&socket, "/live", None).is_ok_and(|(s, _)| s == 200), || "the first instance lost its socket".into());

    // The first dies without cleaning up (SIGKILL): the file stays, and the next start replaces it.
    first.signal(libc::SIGKILL).expect("SIGKILL");
    let mut first = first;
    let _ = first.wait_exit(Duration::from_secs(10));
    c.check(socket.exists(), || "SIGKILL removed the socket file".into());
    let mut third = on_socket().spawn().expect("the third instance starts");
    settle(&third, &socket, "/live", 200, Some("OK"));
    third.signal(libc::SIGINT).expect("SIGINT");
    let status = third.wait_exit(Duration::from_secs(10)).expect("exits");
    c.check(status.code() == Some(0), || format!("exit {status:?} after SIGINT"));
    c.check(!socket.exists(), || "the socket file is left behind after SIGINT".into());
    c.finish();
}

#[test]
fn unix_socket_settings_are_checked_before_start() {
    let mut c = Checks::new();
    let cases = [
        (vec![("pg_status__http_unix_socket", "/run/x.sock"), ("pg_status__http_unix_socket_mode", "0999")], 2, {
            r#"pg_status__http_unix_socket_mode="0999""#
        }),
        (vec![("pg_status__http_port", "0")], 2, "pg_status__http_unix_socket"),
        (vec![("pg_status__http_unix_socket", "/nonexistent-dir/http.sock")], 1, "unix:/nonexistent-dir/http.sock"),
    ];
    for (vars, code, needle) in cases {
        let mut b = without_postgres();
        for (name, value) in &vars {
            b = b.env(name, value);
        }
        let mut p = b.spawn().expect("spawn");
        let status = p.wait_exit(Duration::from_secs(10)).expect("exits");
        let err = p.stderr().texts().join("\n");
        c.check(status.code() == Some(code) && err.contains(needle), || {
            format!("{vars:?}: exit {status:?}, stderr {err:?}; expected {code} and {needle:?}")
        });
    }
    c.finish();
}
