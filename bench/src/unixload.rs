//! A keep-alive load generator over a Unix socket, since wrk speaks TCP only: one blocking connection per
//! thread, every thread pinned to one core, asking one path again and again for a fixed time.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::tools::LoadResult;

/// What one connection counted.
#[derive(Default)]
struct Counts {
    latencies_us: Vec<u32>,
    non_2xx: u64,
    errors: u64,
}

/// Pins the calling thread to `core`.
fn pin(core: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes inside it and sched_setaffinity reads
    // it for the calling thread (pid 0) only.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Reads one answer from `stream` into `buffer` (which may hold the start of it) and returns its status.
fn read_answer(stream: &mut UnixStream, buffer: &mut Vec<u8>) -> std::io::Result<u16> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
            let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buffer.len() >= end + 4 + length {
                buffer.drain(..end + 4 + length);
                return Ok(status);
            }
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
}

/// One connection's loop until `until`.
fn connection(socket: &Path, request: &[u8], until: Instant, core: usize) -> Counts {
    pin(core);
    let mut counts = Counts::default();
    let Ok(mut stream) = UnixStream::connect(socket) else {
        counts.errors += 1;
        return counts;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buffer = Vec::with_capacity(8192);
    while Instant::now() < until {
        let started = Instant::now();
        let answer = stream.write_all(request).and_then(|()| read_answer(&mut stream, &mut buffer));
        match answer {
            Ok(status) => {
                counts.latencies_us.push(u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX));
                if !(200..400).contains(&status) {
                    counts.non_2xx += 1;
                }
            }
            Err(_) => {
                counts.errors += 1;
                break;
            }
        }
    }
    counts
}

/// Runs `connections` keep-alive connections to the Unix socket `socket` asking `GET path` for `duration`,
/// every thread on `core`.
pub fn run(socket: &Path, path: &str, connections: u32, duration: Duration, core: usize) -> Result<LoadResult> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").into_bytes();
    let started = Instant::now();
    let until = started + duration;
    let all: Vec<Counts> = std::thread::scope(|scope| {
        let threads: Vec<_> =
            (0..connections).map(|_| scope.spawn(|| connection(socket, &request, until, core))).collect();
        threads.into_iter().filter_map(|t| t.join().ok()).collect()
    });
    let elapsed = started.elapsed().as_secs_f64();
    let mut latencies: Vec<u32> = all.iter().flat_map(|c| c.latencies_us.iter().copied()).collect();
    if latencies.is_empty() {
        return Err(Error::Unexpected(format!("no answer over {}", socket.display())));
    }
    latencies.sort_unstable();
    let at = |q: f64| {
        let i = ((latencies.len() as f64 - 1.0) * q) as usize;
        Duration::from_micros(u64::from(latencies[i]))
    };
    Ok(LoadResult {
        rps: latencies.len() as f64 / elapsed,
        p50: at(0.5),
        p99: at(0.99),
        requests: latencies.len() as u64,
        non_2xx: all.iter().map(|c| c.non_2xx).sum(),
        errors: all.iter().map(|c| c.errors).sum(),
        server_cpu: None,
    })
}
