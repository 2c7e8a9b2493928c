//! The external programs of the benchmark: wrk and oha (load generators) and nginx (the reference server),
//! each pinned to a core with `taskset`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Finds `program` on `PATH`.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|p| p.is_file())
}

/// Finds `program` on `PATH` or fails with a hint to run `bench/run.sh`, which installs it.
pub fn require(program: &str) -> Result<PathBuf> {
    which(program).ok_or_else(|| Error::Tool {
        tool: program.to_owned(),
        detail: "not found on PATH (bench/run.sh installs it)".into(),
    })
}

/// A command that runs `program` pinned to `core` (`taskset -c CORE PROGRAM`).
pub fn pinned(core: usize, program: &Path) -> Command {
    let mut cmd = Command::new("taskset");
    cmd.arg("-c").arg(core.to_string()).arg(program);
    cmd
}

/// Runs a command to completion, failing with its output when it exits unsuccessfully. The command must
/// bound its own running time (every load generator here is given a duration).
fn output(tool: &str, mut cmd: Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Tool { tool: tool.to_owned(), detail: format!("cannot start: {e}") })?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(Error::Tool {
            tool: tool.to_owned(),
            detail: format!("{}: {stdout}{}", out.status, String::from_utf8_lossy(&out.stderr)),
        });
    }
    Ok(stdout)
}

/// One measured load point.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadResult {
    /// Completed requests per second.
    pub rps: f64,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// Requests completed.
    pub requests: u64,
    /// Responses other than 2xx and 3xx.
    pub non_2xx: u64,
    /// Connect, read, write and timeout errors together.
    pub errors: u64,
    /// CPU time the server process used during the run, when it was measured.
    pub server_cpu: Option<Duration>,
}

impl LoadResult {
    /// The server's CPU time per completed request, in microseconds, when it was measured.
    pub fn cpu_us_per_request(&self) -> Option<f64> {
        let cpu = self.server_cpu?;
        (self.requests > 0).then(|| cpu.as_secs_f64() * 1e6 / self.requests as f64)
    }
}

/// What wrk is asked to do.
#[derive(Debug, Clone)]
pub struct Wrk {
    /// The wrk program.
    pub program: PathBuf,
    /// The core wrk runs on.
    pub core: usize,
    /// Open connections.
    pub connections: u32,
    /// How long the load lasts.
    pub duration: Duration,
}

impl Wrk {
    /// Runs one thread of wrk against `http://ADDR{path}` with extra headers and an optional Lua script
    /// (with its arguments), and reads its latency distribution.
    pub fn run(
        &self,
        addr: SocketAddr,
        path: &str,
        headers: &[&str],
        script: Option<(&Path, &[String])>,
    ) -> Result<LoadResult> {
        let mut cmd = pinned(self.core, &self.program);
        cmd.args(["-t", "1", "-c", &self.connections.to_string()]);
        cmd.arg("-d").arg(format!("{}s", self.duration.as_secs().max(1)));
        cmd.args(["--timeout", "2s", "--latency"]);
        for header in headers {
            cmd.arg("-H").arg(header);
        }
        if let Some((file, _)) = script {
            cmd.arg("-s").arg(file);
        }
        cmd.arg(format!("http://{addr}{path}"));
        if let Some((_, args)) = script {
            cmd.arg("--").args(args);
        }
        parse_wrk(&output("wrk", cmd)?)
    }
}

/// Parses a wrk duration such as `812.00us`, `1.23ms`, `2.00s` or `1.00m`.
fn parse_wrk_duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().ok()?;
    let seconds = match unit {
        "us" => value / 1e6,
        "ms" => value / 1e3,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(seconds).ok()
}

/// Reads wrk's report (`--latency`).
pub fn parse_wrk(text: &str) -> Result<LoadResult> {
    let bad = |detail: &str| Error::Parse { tool: "wrk".into(), detail: format!("{detail} in:\n{text}") };
    let mut result = LoadResult::default();
    let mut seen_rps = false;
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", n] => {
                result.rps = n.parse().map_err(|_| bad("a bad Requests/sec"))?;
                seen_rps = true;
            }
            ["50%", d] => result.p50 = parse_wrk_duration(d).ok_or_else(|| bad("a bad 50% latency"))?,
            ["99%", d] => result.p99 = parse_wrk_duration(d).ok_or_else(|| bad("a bad 99% latency"))?,
            [n, "requests", "in", ..] => result.requests = n.parse().map_err(|_| bad("a bad request count"))?,
            ["Non-2xx", "or", "3xx", "responses:", n] => {
                result.non_2xx = n.parse().map_err(|_| bad("a bad non-2xx count"))?;
            }
            ["Socket", "errors:", rest @ ..] => {
                // "connect 0, read 0, write 0, timeout 0"
                result.errors = rest.iter().filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok()).sum();
            }
            _ => {}
        }
    }
    if !seen_rps {
        return Err(bad("no Requests/sec line"));
    }
    Ok(result)
}

/// What oha is asked to do: a fixed offered rate with latency correction (coordinated omission).
#[derive(Debug, Clone)]
pub struct Oha {
    /// The oha program.
    pub program: PathBuf,
    /// The core oha runs on.
    pub core: usize,
    /// Open connections.
    pub connections: u32,
    /// Offered requests per second.
    pub rate: u32,
    /// How long the load lasts.
    pub duration: Duration,
}

impl Oha {
    /// Offers `rate` requests per second to `http://ADDR{path}` and reads the JSON summary.
    pub fn run(&self, addr: SocketAddr, path: &str) -> Result<LoadResult> {
        let mut cmd = pinned(self.core, &self.program);
        cmd.args(["--no-tui", "--output-format", "json", "--latency-correction"]);
        cmd.args(["-c", &self.connections.to_string(), "-q", &self.rate.to_string()]);
        cmd.arg("-z").arg(format!("{}s", self.duration.as_secs().max(1)));
        cmd.arg(format!("http://{addr}{path}"));
        parse_oha(&output("oha", cmd)?)
    }
}

/// Reads oha's JSON summary.
pub fn parse_oha(text: &str) -> Result<LoadResult> {
    let bad = |detail: String| Error::Parse { tool: "oha".into(), detail };
    let start = text.find('{').ok_or_else(|| bad(format!("no JSON object in {text:?}")))?;
    let json: serde_json::Value = serde_json::from_str(&text[start..]).map_err(|e| bad(format!("{e} in {text:?}")))?;
    let number = |pointer: &str| json.pointer(pointer).and_then(serde_json::Value::as_f64);
    let seconds = |pointer: &str| {
        number(pointer)
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
            .ok_or_else(|| bad(format!("no {pointer} in {json}")))
    };
    let codes = json.pointer("/statusCodeDistribution").and_then(serde_json::Value::as_object);
    let count = |pred: &dyn Fn(u64) -> bool| -> u64 {
        codes
            .map(|m| {
                m.iter()
                    .filter(|(code, _)| code.parse::<u64>().map(pred).unwrap_or(false))
                    .filter_map(|(_, n)| n.as_u64())
                    .sum()
            })
            .unwrap_or(0)
    };
    let errors = json
        .pointer("/errorDistribution")
        .and_then(serde_json::Value::as_object)
        .map(|m| {
            m.iter()
                // Requests still in flight when the run's time is up are cut off by oha, not failed by the server.
                .filter(|(kind, _)| !kind.contains("deadline"))
                .filter_map(|(_, n)| n.as_u64())
                .sum()
        })
        .unwrap_or(0);
    // oha's requestsPerSec counts failed attempts too: count answered requests over the run's length.
    let total =
        number("/summary/total").filter(|t| *t > 0.0).ok_or_else(|| bad(format!("no summary.total in {json}")))?;
    let answered = count(&|_| true);
    if answered == 0 {
        return Err(bad(format!(
            "no request was answered: {errors} errors, {}",
            json.pointer("/errorDistribution").map(ToString::to_string).unwrap_or_default()
        )));
    }
    Ok(LoadResult {
        rps: answered as f64 / total,
        p50: seconds("/latencyPercentiles/p50")?,
        p99: seconds("/latencyPercentiles/p99")?,
        requests: count(&|_| true),
        non_2xx: count(&|c| !(200..400).contains(&c)),
        errors,
        server_cpu: None,
    })
}

/// nginx answering `return 200 "127.0.0.1"` on one worker, pinned to a core, as the reference for the limit
/// of one core. Dropping it stops nginx.
pub struct Nginx {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// Starts nginx (master and its one worker) pinned to `core` on a free loopback port.
    pub fn start(program: &Path, core: usize) -> Result<Nginx> {
        let dir = tempfile::Builder::new()
            .prefix("pg-status-bench-nginx-")
            .tempdir()
            .map_err(|e| Error::io("creating nginx's directory", e))?;
        let port = pg_status_tests::net::free_port(Ipv4Addr::LOCALHOST)?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let d = dir.path().display();
        // As root, nginx's worker would switch to a user named at build time; name one that exists.
        // SAFETY: geteuid has no preconditions.
        let user = if unsafe { libc::geteuid() } == 0 { "user root root;\n" } else { "" };
        // keepalive_requests is raised from its default of 1,000 so that nginx, like pg-status, keeps a
        // connection for the whole run; the listen backlog is pg-status's (1,024).
        let conf = format!(
            "{user}worker_processes 1;\ndaemon off;\nmaster_process on;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log warn;\nevents {{ worker_connections 8192; }}\n\
             http {{\n  access_log off;\n  keepalive_requests 100000000;\n  keepalive_timeout 65s;\n\
             client_body_temp_path {d}/body;\n\
               server {{\n    listen {addr} backlog=1024;\n    listen unix:{d}/nginx.sock backlog=1024;\n\
                 location / {{ default_type text/plain; return 200 \"127.0.0.1\"; }}\n  }}\n}}\n"
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).map_err(|e| Error::io("writing nginx.conf", e))?;
        let mut cmd = pinned(core, program);
        cmd.arg("-p").arg(dir.path()).arg("-e").arg(dir.path().join("error.log")).arg("-c").arg(&conf_path);
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let child =
            cmd.spawn().map_err(|e| Error::Tool { tool: "nginx".into(), detail: format!("cannot start: {e}") })?;
        let mut nginx = Nginx { child, addr, _dir: dir };
        let started = Instant::now();
        loop {
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(nginx);
            }
            if let Ok(Some(status)) = nginx.child.try_wait() {
                let log = std::fs::read_to_string(nginx._dir.path().join("error.log")).unwrap_or_default();
                return Err(Error::Tool { tool: "nginx".into(), detail: format!("exited ({status}): {log}") });
            }
            if started.elapsed() > Duration::from_secs(10) {
                return Err(Error::Tool {
                    tool: "nginx".into(),
                    detail: format!("not listening on {addr} after 10 s"),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Where nginx listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The Unix socket nginx listens on too.
    pub fn unix_path(&self) -> std::path::PathBuf {
        self._dir.path().join("nginx.sock")
    }

    /// The worker's process id (the one that answers), if it can be found.
    pub fn worker_pid(&self) -> Option<u32> {
        let master = self.child.id();
        let children = std::fs::read_to_string(format!("/proc/{master}/task/{master}/children")).ok()?;
        children.split_whitespace().next()?.parse().ok()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM makes the master stop its worker and exit; SIGKILL only if that takes too long.
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill has no memory-safety preconditions; the pid is our own unreaped child.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_report_is_read() {
        let text = "Running 3s test @ http://127.0.0.1:1/master
  1 threads and 128 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.10ms  200.00us   5.00ms   90.00%
    Req/Sec    90.00k     1.00k   95.00k    80.00%
  Latency Distribution
     50%  812.00us
     75%    1.00ms
     90%    1.20ms
     99%    2.50ms
  270000 requests in 3.00s, 30.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 7
Requests/sec:  90000.50
Transfer/sec:     10.00MB
";
        let r = parse_wrk(text).unwrap();
        assert_eq!(r.rps, 90000.5);
        assert_eq!(r.p50, Duration::from_micros(812));
        assert_eq!(r.p99, Duration::from_micros(2500));
        assert_eq!((r.requests, r.non_2xx, r.errors), (270000, 7, 3));
        assert!(parse_wrk("nothing").is_err());
    }

    #[test]
    fn strace_summary_is_read() {
        let text = "% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 74.74    0.804329          18     44033           writev
 23.00    0.247501           5     44033       120 recvfrom
  2.26    0.024335          54       446           epoll_wait
------ ----------- ----------- --------- --------- ----------------
100.00    1.076165          12     88512       120 total
";
        let s = parse_strace(text).unwrap();
        assert_eq!(s.answers, 44033);
        assert_eq!(s.errors, 120);
        assert!((s.per_answer() - 88512.0 / 44033.0).abs() < 1e-9);
        assert_eq!(s.breakdown(1), "writev 1.00");
    }

    #[test]
    fn oha_summary_is_read() {
        let text = r#"{"summary":{"successRate":1.0,"total":0.5,"requestsPerSec":19999.5},
            "latencyPercentiles":{"p50":0.0001,"p99":0.002},
            "statusCodeDistribution":{"200":100,"404":2},
            "errorDistribution":{"timeout":1,"aborted due to deadline":5}}"#;
        let r = parse_oha(text).unwrap();
        assert_eq!(r.rps, 204.0);
        assert_eq!(r.p99, Duration::from_millis(2));
        assert_eq!((r.requests, r.non_2xx, r.errors), (102, 2, 1));
    }
}

/// System calls a process made per answered request while under load, counted by `strace -c -f`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Syscalls {
    /// Answers sent (calls of `sendto`, `sendmsg`, `writev` and `write`).
    pub answers: u64,
    /// Every system call, `(name, calls)`, most frequent first.
    pub calls: Vec<(String, u64)>,
    /// Calls that failed with `EAGAIN` and the like, across all system calls.
    pub errors: u64,
}

impl Syscalls {
    /// All system calls per answer.
    pub fn per_answer(&self) -> f64 {
        if self.answers == 0 {
            return 0.0;
        }
        self.calls.iter().map(|(_, n)| *n).sum::<u64>() as f64 / self.answers as f64
    }

    /// The most frequent calls per answer, as `name x.xx` items.
    pub fn breakdown(&self, top: usize) -> String {
        let answers = self.answers.max(1) as f64;
        self.calls
            .iter()
            .take(top)
            .map(|(name, n)| format!("{name} {:.2}", *n as f64 / answers))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Counts the system calls of `pid` (all its threads) for `window` with `strace -c -f`. The caller keeps the
/// process under load meanwhile.
pub fn count_syscalls(strace: &Path, pid: u32, window: Duration) -> Result<Syscalls> {
    let out = tempfile::NamedTempFile::new().map_err(|e| Error::io("creating a file for strace", e))?;
    let mut child = Command::new(strace)
        .args(["-c", "-f", "-p", &pid.to_string(), "-o"])
        .arg(out.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| Error::Tool { tool: "strace".into(), detail: format!("cannot start: {e}") })?;
    std::thread::sleep(window);
    // strace prints its summary when interrupted.
    if let Ok(spid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our own unreaped child.
        unsafe { libc::kill(spid, libc::SIGINT) };
    }
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(out.path()).map_err(|e| Error::io("reading strace's summary", e))?;
    parse_strace(&text)
}

/// Reads the summary table of `strace -c`.
pub fn parse_strace(text: &str) -> Result<Syscalls> {
    let mut result = Syscalls::default();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        // "% time  seconds  usecs/call  calls  errors  syscall", errors may be empty.
        let (calls, errors, name) = match words.as_slice() {
            [_, _, _, calls, errors, name] => (calls, Some(errors), name),
            [_, _, _, calls, name] => (calls, None, name),
            _ => continue,
        };
        let (Ok(calls), Some(first)) = (calls.parse::<u64>(), words.first()) else { continue };
        if first.parse::<f64>().is_err() || *name == "total" {
            continue;
        }
        result.errors += errors.and_then(|e| e.parse::<u64>().ok()).unwrap_or(0);
        if ["sendto", "sendmsg", "writev", "write"].contains(name) {
            result.answers += calls;
        }
        result.calls.push(((*name).to_owned(), calls));
    }
    if result.calls.is_empty() {
        return Err(Error::Parse { tool: "strace".into(), detail: format!("no summary table in {text:?}") });
    }
    result.calls.sort_by_key(|c| std::cmp::Reverse(c.1));
    Ok(result)
}
