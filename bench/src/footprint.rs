//! Memory and threads: pg-status idle with 3 hosts, and with 2,000 idle keep-alive client connections (nginx's
//! worker measured the same way as a reference).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use pg_status_tests::Cluster;

use crate::error::{Error, Result};
use crate::procfs;
use crate::report::{mib, progress, Report};
use crate::tools::{self, Nginx};
use crate::{cluster_hosts, Ctx, Target, SERVER_CORE};

/// Idle client connections held open at once.
pub const IDLE_CONNECTIONS: usize = 2000;

/// Sends one `GET /master` on `stream` and reads the whole keep-alive response.
fn one_request(stream: &mut TcpStream, addr: SocketAddr) -> Result<()> {
    let fail = |e: std::io::Error| Error::io(format!("a keep-alive request to {addr}"), e);
    stream.write_all(format!("GET /master HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes()).map_err(fail)?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                return if head.starts_with("http/1.1 200") {
                    Ok(())
                } else {
                    Err(Error::Unexpected(format!("{addr} answered {head:?}")))
                };
            }
        }
        if Instant::now() > deadline {
            return Err(Error::Unexpected(format!("{addr}: no complete response within 5 s")));
        }
        let n = stream.read(&mut chunk).map_err(fail)?;
        if n == 0 {
            return Err(Error::Unexpected(format!("{addr} closed a keep-alive connection")));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Opens `n` connections to `addr`, each after one request, and leaves them idle.
pub fn open_idle(addr: SocketAddr, n: usize) -> Result<Vec<TcpStream>> {
    let mut streams = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .map_err(|e| Error::io(format!("connecting to {addr}"), e))?;
        s.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| Error::io("setting a read timeout", e))?;
        one_request(&mut s, addr)?;
        streams.push(s);
    }
    Ok(streams)
}

/// Resident memory (KiB) and threads of `pid` before and with [`IDLE_CONNECTIONS`] idle connections.
struct IdleCost {
    rss_before: u64,
    rss_with: u64,
    threads_before: u64,
    threads_with: u64,
}

impl IdleCost {
    fn per_connection_bytes(&self) -> f64 {
        (self.rss_with as f64 - self.rss_before as f64) * 1024.0 / IDLE_CONNECTIONS as f64
    }
}

fn idle_cost(pid: u32, addr: SocketAddr) -> Result<IdleCost> {
    let rss_before = procfs::rss_kib(pid)?;
    let threads_before = procfs::threads(pid)?;
    let streams = open_idle(addr, IDLE_CONNECTIONS)?;
    std::thread::sleep(Duration::from_secs(1));
    let cost =
        IdleCost { rss_before, rss_with: procfs::rss_kib(pid)?, threads_before, threads_with: procfs::threads(pid)? };
    drop(streams);
    std::thread::sleep(Duration::from_millis(500));
    Ok(cost)
}

/// Runs the footprint section; returns its targets.
pub fn run(ctx: &Ctx, cluster: &Cluster, report: &mut Report) -> Result<Vec<Target>> {
    pg_status_tests::net::raise_nofile_limit(4 * IDLE_CONNECTIONS as u64 + 1024)?;
    progress("footprint: pg-status idle with 3 hosts");
    let pg = ctx.start_pg_status(&cluster_hosts(cluster), Duration::from_secs(30))?;
    // A few polls of every host, so the connections and the snapshot are in their steady state.
    std::thread::sleep(Duration::from_millis(3 * crate::SLEEP_MS + 500));
    let pid = pg.pid();
    let idle_rss = procfs::rss_kib(pid)?;
    let idle_threads = procfs::threads(pid)?;
    progress(format!("footprint: {IDLE_CONNECTIONS} idle keep-alive connections to pg-status"));
    let ours = idle_cost(pid, pg.addr())?;
    drop(pg);

    let nginx = Nginx::start(&tools::require("nginx")?, SERVER_CORE)?;
    std::thread::sleep(Duration::from_millis(300));
    let worker = nginx.worker_pid().ok_or_else(|| Error::Unexpected("nginx's worker process was not found".into()))?;
    let nginx_idle = procfs::rss_kib(worker)?;
    progress(format!("footprint: {IDLE_CONNECTIONS} idle keep-alive connections to nginx"));
    let theirs = idle_cost(worker, nginx.addr())?;
    drop(nginx);

    report.line("## Footprint");
    report.line("");
    report.table(
        &["", "pg-status", "nginx worker (reference)"],
        &[
            vec![
                "resident memory, idle (pg-status: 3 hosts polled every second)".into(),
                mib(idle_rss),
                mib(nginx_idle),
            ],
            vec!["threads, idle".into(), idle_threads.to_string(), "1".into()],
            vec![
                format!("resident memory with {IDLE_CONNECTIONS} idle keep-alive connections"),
                mib(ours.rss_with),
                mib(theirs.rss_with),
            ],
            vec![
                "per idle connection".into(),
                format!("{:.1} KiB", ours.per_connection_bytes() / 1024.0),
                format!("{:.1} KiB", theirs.per_connection_bytes() / 1024.0),
            ],
            vec![
                format!("threads with {IDLE_CONNECTIONS} idle connections"),
                format!("{} (before: {})", ours.threads_with, ours.threads_before),
                format!("{}", theirs.threads_with),
            ],
        ],
    );
    let per_conn = ours.per_connection_bytes();
    Ok(vec![
        Target::new("idle resident memory with 3 hosts < 6 MiB", mib(idle_rss), idle_rss < 6 * 1024),
        Target::new(
            format!("{IDLE_CONNECTIONS} idle connections add no threads"),
            format!("{} -> {} threads", ours.threads_before, ours.threads_with),
            ours.threads_with <= ours.threads_before,
        ),
        Target::new(
            format!("{IDLE_CONNECTIONS} idle connections < 16 KiB each"),
            format!("{:.1} KiB each", per_conn / 1024.0),
            per_conn < 16.0 * 1024.0,
        ),
    ])
}
